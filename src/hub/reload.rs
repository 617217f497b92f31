//! Live reload (SIGHUP) as the hub sees it: a new, already merged and
//! validated [`Config`] replaces the running one, and what it revokes is
//! closed at once (SPEC section 10).
//!
//! - Agent keys: an agent connected with a key that is gone (or whose entry
//!   now names another server) is closed with 1008; a server whose id no
//!   longer belongs to any key leaves the directory (and its alert states);
//!   a new key's server appears, offline until its agent connects.
//! - JWT secret: when it changed (or browser auth turned on), every browser
//!   socket authenticated by a session token (signed by the retired secret)
//!   or anonymously is closed with 1008. With one secret, "still valid under
//!   the new secret" is exactly "the secret did not change".
//! - Users: a browser socket whose token's `sub` names a `[[users]]` entry
//!   that was removed or changed (role, password) is closed with 1008.
//! - Alert rules: states of rules that stay (same rule text and name) are
//!   kept under their new index; the others are dropped (and logged).
//! - Notifiers: replaced when they changed (the loop built the new ones).
//!
//! Origins, hosts and the other live settings are read from the config on
//! each request, so swapping the config is all they need.

use crate::auth::JwtVerifier;
use crate::auth::{AgentKey, ApiKeys};
use crate::config::Config;
use crate::notify::Notifier;
use crate::stats::Endpoint;
use crate::ws::close_code;

use super::agents::ServerState;
use super::session::{AuthState, ConnId};
use super::{Io, State};

/// What the loop hands the hub on a reload.
#[derive(Debug)]
pub struct Reload {
    /// The merged config ([`Config::reloaded`]).
    pub config: Config,
    /// The notifier threads for `config.notifiers`, when they changed
    /// (`None` then: there are none any more).
    pub notifier: Option<Notifier>,
    /// Whether `notifier` replaces the running notifiers.
    pub notifiers_changed: bool,
}

/// Why a browser socket is closed by a reload, if it is.
fn revoked(
    old: &Config,
    new: &Config,
    secret_changed: bool,
    auth: &AuthState,
) -> Option<&'static str> {
    let AuthState::Ready { sub, exp, .. } = auth else {
        return None; // it will authenticate against the new config
    };
    if exp.is_none() {
        // Anonymous (auth was off): refused once auth is on.
        return (secret_changed && new.jwt_secret.is_some())
            .then_some("browser authentication is now required");
    }
    if secret_changed {
        return Some("session signed by a retired secret");
    }
    let gone = old
        .users
        .iter()
        .find(|u| u.name == *sub)
        .is_some_and(|u| !new.users.contains(u));
    gone.then_some("user removed or changed")
}

impl State {
    pub(super) fn reload(&mut self, io: &mut Io<'_>, r: Reload) {
        let old = std::mem::replace(&mut self.config, r.config);
        self.reload_agents(io, &old);
        self.reload_browsers(io, &old);
        self.reload_alerts(&old);
        if r.notifiers_changed {
            self.alerts.notifier = r.notifier;
        }
        log::info!(
            "config reloaded: {} agent key(s), {} user(s), browser auth {}, {} alert rule(s), \
             {} notifier(s)",
            self.config.agents.len(),
            self.config.users.len(),
            if self.jwt.is_some() { "on" } else { "off" },
            self.config.alerts.len(),
            self.config.notifiers.len()
        );
    }

    fn reload_agents(&mut self, io: &mut Io<'_>, old: &Config) {
        self.api_keys = ApiKeys::new(self.config.agents.clone());
        let new = self.config.agents.clone();
        let kept = |k: &AgentKey| {
            new.iter()
                .any(|n| n.key_sha256 == k.key_sha256 && n.server_id == k.server_id)
        };
        let mut revoked: Vec<(ConnId, String, String)> = Vec::new();
        for k in old.agents.iter().filter(|k| !kept(k)) {
            if let Some((conn, _)) = self.servers.get(&k.server_id).and_then(|s| s.agent) {
                revoked.push((conn, k.name.clone(), k.server_id.clone()));
            }
        }
        for (conn, name, server_id) in revoked {
            log::warn!("agent {name:?} ({server_id}): its key was removed; closing it (1008)");
            io.error_and_close(conn, "API key revoked", close_code::POLICY_VIOLATION);
            // Leave now (not after the input), while its server still exists.
            self.detach(io, conn);
        }
        let gone: Vec<String> = old
            .agents
            .iter()
            .filter(|k| !new.iter().any(|n| n.server_id == k.server_id))
            .map(|k| k.server_id.clone())
            .collect();
        for sid in gone {
            // Its log streams cannot resume any more.
            self.end_server_logs(io, &sid, "server removed from the configuration");
            self.servers.remove(&sid);
            log::info!("server {sid} left the directory (no key names it any more)");
        }
        for a in &new {
            match self.servers.get_mut(&a.server_id) {
                Some(s) => s.name.clone_from(&a.name),
                None => {
                    self.servers.insert(
                        a.server_id.clone(),
                        ServerState::new(a.name.clone(), false, Some(io.now)),
                    );
                    self.publish_server_state(io, &a.server_id.clone());
                }
            }
        }
    }

    fn reload_browsers(&mut self, io: &mut Io<'_>, old: &Config) {
        let secret_changed = old.jwt_secret != self.config.jwt_secret;
        if secret_changed {
            self.jwt = self.config.jwt_secret.clone().map(JwtVerifier::new);
        }
        let mut closing = Vec::new();
        for (conn, s) in io.sessions.iter_mut() {
            if s.endpoint == Endpoint::Agent {
                continue;
            }
            if let Some(why) = revoked(old, &self.config, secret_changed, &s.auth) {
                closing.push((conn, why, s.who().to_string()));
            }
        }
        for (conn, why, who) in closing {
            log::info!("closing the browser socket of {who:?}: {why} (1008)");
            io.stats.auth_failure("revoked");
            super::recovery::forfeit(io.sessions, conn);
            io.error_and_close(conn, why, close_code::POLICY_VIOLATION);
        }
    }

    fn reload_alerts(&mut self, old: &Config) {
        let map: Vec<Option<usize>> = old
            .alerts
            .iter()
            .map(|r| self.config.alerts.iter().position(|n| n == r))
            .collect();
        let servers = &self.servers;
        let dropped = self.alerts.remap(&map, |sid| servers.contains_key(sid));
        for id in dropped {
            log::info!("alert {id} dropped: its rule or its server is no longer configured");
        }
    }
}
