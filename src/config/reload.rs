//! Live reload (SIGHUP): a config loaded and validated from the file again
//! is merged into the running one.
//!
//! Settings that take effect live are taken from the new config; the others
//! (those a thread, a bound socket or a connected client already holds) keep
//! their running value, and each one that differs is reported so the
//! operator is told it needs a restart, never ignored silently.
//!
//! Invariant: the merged config passes the same cross-field checks as a
//! loaded one (auth off on a non-loopback address needs
//! `allow_anonymous_admin`), judged with the *running* listen address.

use super::{Config, ConfigError, invalid};

/// The settings that only a restart changes, as the operator writes them.
pub const RESTART_ONLY: &[&str] = &[
    "listen",
    "server_id",
    "metrics_interval",
    "[docker] host",
    "[limits] max_queued_bytes",
    "[limits] max_message_bytes",
    "[socketio] ping_interval",
    "[socketio] ping_timeout",
    "[commands] audit_log",
    "[cluster]",
];

impl Config {
    /// The config to run with after reloading to `new`: live settings from
    /// `new`, the [`RESTART_ONLY`] ones kept from `self`. Also returns the
    /// restart-only settings whose value differs in `new` (to be logged).
    ///
    /// A secret generated at load (users but no `jwt_secret_file`, both
    /// before and after) is kept, so a reload does not end every session.
    ///
    /// # Errors
    /// When the merged config would run with browser auth off on the
    /// running non-loopback address without `allow_anonymous_admin`.
    pub fn reloaded(&self, new: Config) -> Result<(Config, Vec<&'static str>), ConfigError> {
        let mut merged = new;
        let mut restart = Vec::new();
        macro_rules! keep {
            ($($field:ident => $name:literal),* $(,)?) => {$(
                if merged.$field != self.$field {
                    restart.push($name);
                    merged.$field = self.$field.clone();
                }
            )*};
        }
        keep!(
            listen => "listen",
            server_id => "server_id",
            metrics_interval => "metrics_interval",
            docker_host => "[docker] host",
            max_queued_bytes => "[limits] max_queued_bytes",
            max_message_bytes => "[limits] max_message_bytes",
            sio_ping_interval => "[socketio] ping_interval",
            sio_ping_timeout => "[socketio] ping_timeout",
            audit_log => "[commands] audit_log",
            cluster => "[cluster]",
        );
        // The running address's note goes with it.
        merged.listen_note.clone_from(&self.listen_note);
        if merged.tls.is_some() != self.tls.is_some() {
            // Turning TLS on or off changes what every client must speak.
            restart.push("[tls] (on or off)");
            merged.tls = self.tls.clone();
        }
        if self.jwt_secret_generated && merged.jwt_secret_generated {
            merged.jwt_secret = self.jwt_secret.clone();
        }
        if merged.jwt_secret.is_none()
            && !merged.listen.ip().is_loopback()
            && !merged.allow_anonymous_admin
        {
            return Err(invalid(format!(
                "the daemon listens on {}, not a loopback address, and the new config turns \
                 browser auth off, so anyone who reaches it would be an admin; keep [auth] \
                 jwt_secret_file or [[users]], or set [auth] allow_anonymous_admin = true",
                merged.listen
            )));
        }
        Ok((merged, restart))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};

    fn parse(text: &str) -> Config {
        let f: FileConfig = toml::from_str(text).unwrap();
        Config::from_file(f, &Overrides::default()).unwrap()
    }

    #[test]
    fn live_settings_apply_and_restart_only_ones_are_named() {
        let old = parse("server_id = \"a\"\n[http]\nallowed_hosts = [\"x.example\"]\n");
        let new = parse(
            "server_id = \"b\"\nlisten = \"127.0.0.1:9\"\nmetrics_interval = \"1s\"\n\
             [http]\nallowed_hosts = [\"y.example\"]\n[limits]\nidle_timeout = \"5s\"\n",
        );
        let (m, restart) = old.reloaded(new).unwrap();
        assert_eq!(restart, ["listen", "server_id", "metrics_interval"]);
        assert_eq!(m.listen, old.listen);
        assert_eq!(m.server_id, "a");
        assert_eq!(m.metrics_interval, old.metrics_interval);
        assert_eq!(m.allowed_hosts, ["y.example"]);
        assert_eq!(m.idle_timeout, std::time::Duration::from_secs(5));
        for name in restart {
            assert!(RESTART_ONLY.contains(&name), "{name}");
        }
    }

    #[test]
    fn nothing_changed_needs_no_restart() {
        let old = parse("server_id = \"a\"\n");
        let (_, restart) = old.reloaded(old.clone()).unwrap();
        assert!(restart.is_empty(), "{restart:?}");
    }

    #[test]
    fn generated_secret_is_kept() {
        let users = "server_id = \"a\"\n[[users]]\nname = \"alice\"\nrole = \"admin\"\n\
                     password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                     7oS0TrtQI1GFpDrzU87XYgEP7Hzk8HDM5Dn7kdWrkio\"\n";
        let old = parse(users);
        let new = parse(users);
        assert!(old.jwt_secret_generated && old.jwt_secret != new.jwt_secret);
        let (m, _) = old.reloaded(new).unwrap();
        assert_eq!(m.jwt_secret, old.jwt_secret);
    }

    #[test]
    fn auth_off_on_a_public_address_is_refused() {
        let old = parse(
            "server_id = \"a\"\nlisten = \"0.0.0.0:7575\"\n[auth]\nallow_anonymous_admin = true\n",
        );
        // The new file listens on loopback, but the running address is kept.
        let new = parse("server_id = \"a\"\n");
        let e = old.reloaded(new).unwrap_err().to_string();
        assert!(e.contains("allow_anonymous_admin"), "{e}");
    }
}
