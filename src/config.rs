//! Configuration: the TOML file and command-line flags become one validated
//! [`Config`]. Every default lives in [`defaults`], documented once.
//!
//! Invariant: a `Config` that exists is valid — sizes are non-zero, secrets
//! are loaded, key hashes parse, alert rules parse. `dockwire check-config`
//! is exactly "can a `Config` be built from this file".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::users::{self, User};
use crate::auth::{self, AgentKey};

/// Every default, in one place (README "Configuration" repeats this table).
pub mod defaults {
    use std::time::Duration;
    /// Loopback only: exposing the daemon is an explicit decision.
    pub const LISTEN: &str = "127.0.0.1:7575";
    pub const CONFIG_PATH: &str = "/etc/dockwire/dockwire.toml";
    pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);
    pub const DOCKER_HOST: &str = "unix:///var/run/docker.sock";
    pub const MAX_CONNECTIONS: usize = 100_000;
    /// Per-socket queue past which log lines are dropped (SPEC section 4).
    pub const MAX_QUEUED_BYTES: usize = 4 << 20;
    pub const MAX_MESSAGE_BYTES: usize = 64 << 10;
    /// permessage-deflate is accepted when a client offers it.
    pub const COMPRESSION: bool = true;
    pub const MAX_HEAD_BYTES: usize = 8 << 10;
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
    pub const PING_INTERVAL: Duration = Duration::from_secs(20);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
    pub const SIO_PING_INTERVAL: Duration = Duration::from_secs(25);
    pub const SIO_PING_TIMEOUT: Duration = Duration::from_secs(20);
    pub const SIO_RECOVERY: bool = true;
    /// Lines of history kept per followed container; the largest `tail`.
    pub const LOG_HISTORY_LINES: usize = 1000;
    /// Lifetime of a login session (`[auth] session_ttl`): the cookie's JWT `exp`.
    pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
}

/// Errors building a [`Config`]. All are fatal at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("could not parse config file {0}: {1}")]
    Parse(PathBuf, String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The file as written (all optional; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub server_id: Option<String>,
    pub metrics_interval: Option<String>,
    #[serde(default)]
    pub docker: DockerSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub agents: Vec<AgentSection>,
    #[serde(default)]
    pub users: Vec<UserSection>,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub debug: DebugSection,
    #[serde(default)]
    pub socketio: SocketIoSection,
    #[serde(default)]
    pub commands: CommandsSection,
    #[serde(default)]
    pub alerts: Vec<AlertSection>,
    #[serde(default)]
    pub notifiers: Vec<NotifierSection>,
    #[serde(default)]
    pub http: HttpSection,
    pub tls: Option<TlsSection>,
    pub cluster: Option<ClusterSection>,
}

/// `[cluster]`: many hubs over NATS (SPEC 11).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `nats://host:port` (or `tls://`).
    pub nats_url: String,
    /// This hub's id (default: the host name).
    pub hub_id: Option<String>,
    /// The subject prefix every hub of one cluster shares (default `dockwire`).
    pub subject_prefix: Option<String>,
    pub nats_user: Option<String>,
    /// File holding the NATS password (not the password itself).
    pub nats_password_file: Option<PathBuf>,
    /// File holding a NATS token.
    pub nats_token_file: Option<PathBuf>,
    /// An extra CA certificate (PEM) for a NATS server with TLS.
    pub nats_ca_file: Option<PathBuf>,
}

/// `[tls]`: serve every endpoint of the port over TLS (SPEC 10).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Extra `Host` names (or `name:port`) the daemon answers to (DNS rebinding check).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSection {
    pub host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub jwt_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Allow auth off on a non-loopback listen address (everyone is admin).
    #[serde(default)]
    pub allow_anonymous_admin: bool,
    /// Lifetime of a login session, like `"12h"`.
    pub session_ttl: Option<String>,
}

/// One `[[users]]` entry: a dashboard login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSection {
    pub name: String,
    /// An argon2id PHC string (`dockwire passwd` prints one).
    pub password_hash: String,
    /// `admin` or `viewer`.
    pub role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub name: String,
    pub key_sha256: String,
    /// Optional fixed id; default derived from the key hash (stable).
    pub server_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    pub max_queued_bytes: Option<SizeValue>,
    pub max_message_bytes: Option<SizeValue>,
    pub handshake_timeout: Option<String>,
    pub auth_timeout: Option<String>,
    pub ping_interval: Option<String>,
    pub idle_timeout: Option<String>,
    /// permessage-deflate for clients that offer it (default true).
    pub compression: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugSection {
    #[serde(default)]
    pub echo_endpoint: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketIoSection {
    pub ping_interval: Option<String>,
    pub ping_timeout: Option<String>,
    /// Connection state recovery (pid and offsets, SPEC §7; default true).
    pub recovery: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    pub timeout: Option<String>,
    /// JSON-lines audit log of every command; default: the `audit` log target on stderr.
    pub audit_log: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    pub name: Option<String>,
    /// `"cpu_percent > 90 for 60s"`, `"container_exited != 0"`, ...: see
    /// [`parse_alert_rule`] and `docs/alerts.md`.
    pub rule: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierSection {
    /// `http://` or `https://` URL the alert changes are POSTed to.
    pub url: String,
    /// `json` (default), `slack`, `discord` or `ntfy`.
    pub format: Option<String>,
    /// `firing`, `resolved`; absent: both.
    pub events: Option<Vec<String>>,
    /// Rule names; empty: every rule.
    #[serde(default)]
    pub rules: Vec<String>,
}

/// A size written either as an integer (bytes) or a string like `"4MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Parses `"64KiB"`, `"4MiB"`, `"1GiB"`, `"512"`, `"10KB"` (KB = 1000).
///
/// # Errors
/// A clear message when the text is not a size.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"64KiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    n.checked_mul(mult)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn size(v: &Option<SizeValue>, key: &str, default: usize) -> Result<usize, ConfigError> {
    let n = match v {
        None => default,
        Some(SizeValue::Bytes(b)) => *b as usize,
        Some(SizeValue::Text(t)) => parse_size(t).map_err(|e| invalid(format!("{key}: {e}")))?,
    };
    if n == 0 {
        return Err(invalid(format!("{key} must be greater than zero")));
    }
    Ok(n)
}

/// Parses a duration like `"5s"`, `"250ms"`, `"1h"`.
///
/// # Errors
/// A clear message naming the key.
pub fn parse_duration(text: &str, key: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(format!(
            "{key}: {text:?} is not a duration like \"5s\" ({e})"
        ))
    })?;
    if d.is_zero() {
        return Err(invalid(format!("{key} must be greater than zero")));
    }
    Ok(d)
}

fn duration(v: &Option<String>, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    v.as_deref().map_or(Ok(default), |t| parse_duration(t, key))
}

mod alerts;
mod reload;
pub use alerts::{
    AlertMetric, AlertRule, LogPattern, MAX_NOTIFIERS, MAX_RESTARTS_THRESHOLD, NotifierConfig,
    NotifyFormat, parse_alert_rule,
};
pub use reload::RESTART_ONLY;

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address bound: `listen` as written, or the one its host name
    /// resolved to (see [`pick_listen`]).
    pub listen: SocketAddr,
    /// For a host name: which address it resolved to, for the log.
    pub listen_note: Option<String>,
    /// The local host's id on every endpoint.
    pub server_id: String,
    pub metrics_interval: Duration,
    /// `None`: use `DOCKER_HOST` or the default socket.
    pub docker_host: Option<String>,
    /// HS256 secret; browser auth is on when set (from `[auth]
    /// jwt_secret_file`, or generated at load when only `[[users]]` are set).
    pub jwt_secret: Option<Vec<u8>>,
    /// The secret was generated at load: sessions end with the process.
    pub jwt_secret_generated: bool,
    /// `[[users]]`: dashboard logins (`POST /api/v1/login`).
    pub users: Vec<User>,
    /// `[auth] session_ttl`.
    pub session_ttl: Duration,
    pub allowed_origins: Vec<String>,
    /// `[http] allowed_hosts`, lower-cased.
    pub allowed_hosts: Vec<String>,
    pub allow_anonymous_admin: bool,
    pub agents: Vec<AgentKey>,
    pub max_connections: usize,
    pub max_queued_bytes: usize,
    pub max_message_bytes: usize,
    pub max_head_bytes: usize,
    pub handshake_timeout: Duration,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub echo_endpoint: bool,
    /// `[limits] compression`: accept permessage-deflate offers (new sockets;
    /// live on reload, open sockets keep what they negotiated).
    pub compression: bool,
    pub sio_ping_interval: Duration,
    pub sio_ping_timeout: Duration,
    /// `[socketio] recovery`: connection state recovery for clients that do
    /// not opt out (new connections; live on reload).
    pub sio_recovery: bool,
    pub command_timeout: Duration,
    pub audit_log: Option<PathBuf>,
    /// `[tls]` certificate and key files; read (and checked) by
    /// [`crate::transport::tls::load_server_config`] at start and reload.
    pub tls: Option<TlsFiles>,
    pub alerts: Vec<AlertRule>,
    pub notifiers: Vec<NotifierConfig>,
    /// `[cluster]`: how to reach NATS and this hub's id; `None`: one hub.
    pub cluster: Option<crate::cluster::NatsSettings>,
}

/// Where the TLS certificate chain and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `listen` as written: an address, or a host name and port that resolve
/// (`localhost:7575`). A name gives the one address [`pick_listen`] picks and
/// a note naming it among all those the name resolved to.
///
/// # Errors
/// A message for the operator when it is neither.
pub fn resolve_listen(text: &str) -> Result<(SocketAddr, Option<String>), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr, None));
    }
    let bad = |why: String| {
        format!(
            "listen: {text:?} is neither an address like \"127.0.0.1:7575\" nor a host name \
             and port that resolve (like \"localhost:7575\"): {why}"
        )
    };
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| bad(e.to_string()))?
        .collect();
    let addr = pick_listen(&addrs).ok_or_else(|| bad("it resolves to no address".into()))?;
    let all: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let note = if addrs.len() > 1 {
        format!(
            "listen: {text} resolves to {}; listening on {addr} only (write an address to \
             choose another)",
            all.join(", ")
        )
    } else {
        format!("listen: {text} resolves to {addr}")
    };
    Ok((addr, Some(note)))
}

/// The one address of a listen name that is bound: a loopback one when there
/// is one (a name like `localhost` must not open the daemon wider), IPv4
/// before IPv6, else in resolution order.
#[must_use]
pub fn pick_listen(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .min_by_key(|a| (!a.ip().is_loopback(), !a.is_ipv4()))
        .copied()
}

/// Flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
}

impl Config {
    /// Reads `path` (or the default path when it exists, or nothing) and
    /// applies the flags.
    ///
    /// # Errors
    /// Any unreadable file, bad TOML, unknown key or invalid value.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let default = Path::new(defaults::CONFIG_PATH);
        let path = match path {
            Some(p) => Some(p),
            None if default.exists() => Some(default),
            None => None,
        };
        let file = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.into(), e))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| ConfigError::Parse(p.into(), e.to_string()))?
            }
            None => FileConfig::default(),
        };
        Self::from_file(file, overrides)
    }

    /// Validates a parsed file plus flags.
    ///
    /// # Errors
    /// The first invalid value, named by its key.
    pub fn from_file(f: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        let listen_text = o
            .listen
            .as_deref()
            .or(f.listen.as_deref())
            .unwrap_or(defaults::LISTEN);
        let (listen, listen_note) = resolve_listen(listen_text).map_err(invalid)?;
        let server_id = match f.server_id {
            Some(id) if id.trim().is_empty() => return Err(invalid("server_id must not be empty")),
            Some(id) => id,
            None => default_server_id(),
        };
        let users = users::from_sections(&f.users).map_err(invalid)?;
        let mut jwt_secret_generated = false;
        let jwt_secret = match &f.auth.jwt_secret_file {
            Some(p) => Some(
                auth::load_secret(p).map_err(|e| invalid(format!("auth.jwt_secret_file: {e}")))?,
            ),
            None if !users.is_empty() => {
                jwt_secret_generated = true;
                Some(users::random_secret())
            }
            None => None,
        };
        let mut agents = Vec::with_capacity(f.agents.len());
        for a in &f.agents {
            let hash = auth::parse_key_hash(&a.key_sha256)
                .map_err(|e| invalid(format!("agent {:?}: key_sha256: {e}", a.name)))?;
            let server_id = a
                .server_id
                .clone()
                .unwrap_or_else(|| auth::server_id_for_key_hash(&hash));
            if server_id.trim().is_empty() {
                return Err(invalid(format!("agent {:?}: empty server_id", a.name)));
            }
            agents.push(AgentKey {
                name: a.name.clone(),
                key_sha256: hash,
                server_id,
            });
        }
        let mut keys = std::collections::HashSet::with_capacity(agents.len());
        let mut ids = std::collections::HashSet::with_capacity(agents.len() + 1);
        ids.insert(server_id.as_str());
        for a in &agents {
            if !keys.insert(a.key_sha256) {
                return Err(invalid(format!(
                    "agent {:?}: the same key is configured twice",
                    a.name
                )));
            }
            if !ids.insert(a.server_id.as_str()) {
                return Err(invalid(format!(
                    "agent {:?}: server_id {} is used twice",
                    a.name, a.server_id
                )));
            }
        }
        if jwt_secret.is_none() && !listen.ip().is_loopback() && !f.auth.allow_anonymous_admin {
            return Err(invalid(format!(
                "listen: {listen} is not a loopback address and browser auth is off, so anyone \
                 who reaches it would be an admin; set [auth] jwt_secret_file, or listen on \
                 127.0.0.1, or set [auth] allow_anonymous_admin = true to accept that"
            )));
        }
        let mut allowed_hosts = Vec::with_capacity(f.http.allowed_hosts.len());
        for h in &f.http.allowed_hosts {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if h.is_empty() || h.contains('/') || h.contains(char::is_whitespace) {
                return Err(invalid(format!(
                    "http.allowed_hosts: {h:?} is not a host name like \"dash.example.com\""
                )));
            }
            allowed_hosts.push(h);
        }
        for origin in &f.auth.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(invalid(format!(
                    "auth.allowed_origins: {origin:?} must look like \"https://dash.example.com\""
                )));
            }
        }
        let alerts = f
            .alerts
            .iter()
            .map(|a| parse_alert_rule(a.name.as_deref(), &a.rule))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in alerts.iter().enumerate() {
            if alerts[..i].iter().any(|b| b.name == a.name) {
                return Err(invalid(format!(
                    "alerts: two rules are named {:?}; give one of them a different `name`",
                    a.name
                )));
            }
        }
        if f.notifiers.len() > MAX_NOTIFIERS {
            return Err(invalid(format!(
                "notifiers: {} entries, at most {MAX_NOTIFIERS}",
                f.notifiers.len()
            )));
        }
        let notifiers = f
            .notifiers
            .iter()
            .enumerate()
            .map(|(i, n)| alerts::notifier(i, n, &alerts))
            .collect::<Result<Vec<_>, _>>()?;
        let l = &f.limits;
        let max_connections = l.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(invalid("limits.max_connections must be greater than zero"));
        }
        Ok(Config {
            listen,
            listen_note,
            server_id,
            metrics_interval: duration(
                &f.metrics_interval,
                "metrics_interval",
                defaults::METRICS_INTERVAL,
            )?,
            docker_host: f.docker.host,
            jwt_secret,
            allowed_origins: f
                .auth
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            allowed_hosts,
            allow_anonymous_admin: f.auth.allow_anonymous_admin,
            jwt_secret_generated,
            users,
            session_ttl: duration(
                &f.auth.session_ttl,
                "auth.session_ttl",
                defaults::SESSION_TTL,
            )?,
            agents,
            max_connections,
            max_queued_bytes: size(
                &l.max_queued_bytes,
                "limits.max_queued_bytes",
                defaults::MAX_QUEUED_BYTES,
            )?,
            max_message_bytes: size(
                &l.max_message_bytes,
                "limits.max_message_bytes",
                defaults::MAX_MESSAGE_BYTES,
            )?,
            max_head_bytes: defaults::MAX_HEAD_BYTES,
            handshake_timeout: duration(
                &l.handshake_timeout,
                "limits.handshake_timeout",
                defaults::HANDSHAKE_TIMEOUT,
            )?,
            auth_timeout: duration(
                &l.auth_timeout,
                "limits.auth_timeout",
                defaults::AUTH_TIMEOUT,
            )?,
            ping_interval: duration(
                &l.ping_interval,
                "limits.ping_interval",
                defaults::PING_INTERVAL,
            )?,
            idle_timeout: duration(
                &l.idle_timeout,
                "limits.idle_timeout",
                defaults::IDLE_TIMEOUT,
            )?,
            echo_endpoint: f.debug.echo_endpoint,
            compression: l.compression.unwrap_or(defaults::COMPRESSION),
            sio_ping_interval: duration(
                &f.socketio.ping_interval,
                "socketio.ping_interval",
                defaults::SIO_PING_INTERVAL,
            )?,
            sio_ping_timeout: duration(
                &f.socketio.ping_timeout,
                "socketio.ping_timeout",
                defaults::SIO_PING_TIMEOUT,
            )?,
            sio_recovery: f.socketio.recovery.unwrap_or(defaults::SIO_RECOVERY),
            command_timeout: duration(
                &f.commands.timeout,
                "commands.timeout",
                defaults::COMMAND_TIMEOUT,
            )?,
            audit_log: f.commands.audit_log,
            tls: f.tls.map(|t| TlsFiles {
                cert_file: t.cert_file,
                key_file: t.key_file,
            }),
            alerts,
            notifiers,
            cluster: f.cluster.map(cluster_settings).transpose()?,
        })
    }

    /// Browser auth is on when a JWT secret is configured or generated
    /// (`[auth] jwt_secret_file` or any `[[users]]`).
    pub fn auth_enabled(&self) -> bool {
        self.jwt_secret.is_some()
    }
}

/// `[cluster]` checked: a valid hub id and prefix, secrets read from their files.
fn cluster_settings(c: ClusterSection) -> Result<crate::cluster::NatsSettings, ConfigError> {
    use crate::cluster::valid_hub_id;
    let url = c.nats_url.trim().to_string();
    if !(url.starts_with("nats://") || url.starts_with("tls://")) {
        return Err(invalid(format!(
            "cluster.nats_url must start with nats:// or tls://, not {url:?}"
        )));
    }
    let hub_id = c.hub_id.unwrap_or_else(crate::cluster::default_hub_id);
    if !valid_hub_id(&hub_id) {
        return Err(invalid(format!(
            "cluster.hub_id {hub_id:?}: 1 to 64 of A-Z a-z 0-9 _ -"
        )));
    }
    let prefix = c.subject_prefix.unwrap_or_else(|| "dockwire".into());
    if !prefix.split('.').all(valid_hub_id) {
        return Err(invalid(format!(
            "cluster.subject_prefix {prefix:?}: dot-separated tokens of A-Z a-z 0-9 _ -"
        )));
    }
    let secret = |path: &Option<PathBuf>, what: &str| -> Result<Option<String>, ConfigError> {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| invalid(format!("cluster.{what} {}: {e}", p.display())))
            })
            .transpose()
    };
    let password = secret(&c.nats_password_file, "nats_password_file")?;
    if c.nats_user.is_some() != password.is_some() {
        return Err(invalid(
            "cluster.nats_user and cluster.nats_password_file go together",
        ));
    }
    Ok(crate::cluster::NatsSettings {
        url,
        hub_id,
        prefix,
        user: c.nats_user,
        password,
        token: secret(&c.nats_token_file, "nats_token_file")?,
        ca_file: c.nats_ca_file,
    })
}

/// A stable UUID derived from `/etc/machine-id` (random per boot if absent).
pub fn default_server_id() -> String {
    let seed = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if seed.is_empty() {
        return uuid::Uuid::new_v4().to_string();
    }
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("dockwire:{seed}").as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let f: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse("t".into(), e.to_string()))?;
        Config::from_file(f, &Overrides::default())
    }

    #[test]
    fn defaults_apply() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7575");
        assert_eq!(c.max_queued_bytes, 4 << 20);
        assert_eq!(c.max_message_bytes, 64 << 10);
        assert!(!c.auth_enabled());
        assert!(!c.echo_endpoint);
    }

    #[test]
    fn listen_takes_host_names_that_resolve() {
        // Papercut (issue 15): `localhost:7590` was "not an address".
        let c = parse("listen = \"localhost:7590\"").unwrap();
        assert!(c.listen.ip().is_loopback(), "{}", c.listen);
        assert_eq!(c.listen.port(), 7590);
        let note = c.listen_note.unwrap();
        assert!(note.contains(&c.listen.to_string()), "{note}");
        let c = parse("listen = \"[::1]:7591\"").unwrap();
        assert_eq!(c.listen.to_string(), "[::1]:7591");
        assert!(c.listen_note.is_none());
        for bad in ["nope", "localhost", "no-such-host.invalid:7575"] {
            let e = parse(&format!("listen = {bad:?}")).unwrap_err().to_string();
            assert!(e.contains("listen") && e.contains(bad), "{e}");
        }
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Loopback first (IPv4 before IPv6), else resolution order.
        assert_eq!(
            pick_listen(&[a("[::1]:1"), a("10.0.0.1:1"), a("127.0.0.1:1")]),
            Some(a("127.0.0.1:1"))
        );
        assert_eq!(
            pick_listen(&[a("[2001:db8::1]:1"), a("[::1]:1")]),
            Some(a("[::1]:1"))
        );
        assert_eq!(
            pick_listen(&[a("[2001:db8::1]:1"), a("10.0.0.2:1"), a("10.0.0.1:1")]),
            Some(a("10.0.0.2:1"))
        );
        assert_eq!(pick_listen(&[]), None);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("10").unwrap(), 10);
        assert!(parse_size("4 parsecs").is_err());
        let c = parse("metrics_interval = \"250ms\"\n[limits]\nmax_queued_bytes = 1024\n").unwrap();
        assert_eq!(c.metrics_interval, Duration::from_millis(250));
        assert_eq!(c.max_queued_bytes, 1024);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse("listen = \"nope\"").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse("metrics_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics_interval"), "{e}");
        let e = parse("[limits]\nmax_message_bytes = \"0\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_message_bytes"), "{e}");
        let e = parse("[[agents]]\nname = \"a\"\nkey_sha256 = \"xyz\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("key_sha256"), "{e}");
        assert!(parse("bogus = 1").is_err());
    }

    #[test]
    fn alert_rules_parse() {
        let r = parse_alert_rule(None, "cpu_percent > 90 for 60s").unwrap();
        assert_eq!(r.metric, AlertMetric::CpuPercent);
        assert_eq!(r.threshold, 90.0);
        assert_eq!(r.hold, Duration::from_secs(60));
        let r = parse_alert_rule(Some("gone"), "agent_offline for 30s").unwrap();
        assert_eq!(r.metric, AlertMetric::AgentOffline);
        assert_eq!(r.name, "gone");
        assert!(parse_alert_rule(None, "disk > 3").is_err());
        assert!(parse_alert_rule(None, "cpu_percent > 190 for 1s").is_err());
    }

    #[test]
    fn section_9_rules_parse() {
        let r = parse_alert_rule(None, "disk_percent > 90 for 5m").unwrap();
        assert_eq!(r.metric, AlertMetric::DiskPercent);
        assert_eq!((r.threshold, r.hold), (90.0, Duration::from_secs(300)));
        let r = parse_alert_rule(None, "cpu_percent > 0 for 0s").unwrap();
        assert_eq!(r.hold, Duration::ZERO);
        let r = parse_alert_rule(None, "container_exited != 0").unwrap();
        assert_eq!(r.metric, AlertMetric::ContainerExited);
        assert!(r.metric.per_container());
        let r = parse_alert_rule(None, "container_unhealthy for 1m").unwrap();
        assert_eq!(r.metric, AlertMetric::ContainerUnhealthy);
        assert_eq!(r.hold, Duration::from_secs(60));
        let r = parse_alert_rule(None, "container_restarts > 3 in 10m").unwrap();
        assert_eq!(r.metric, AlertMetric::ContainerRestarts);
        assert_eq!((r.threshold, r.window), (3.0, Duration::from_secs(600)));
        let r = parse_alert_rule(None, r#"log_match "ERROR \d+ \"x\"""#).unwrap();
        assert_eq!(r.metric, AlertMetric::LogMatch);
        let p = &r.pattern.as_ref().unwrap().0;
        assert_eq!(p.as_str(), r#"ERROR \d+ "x""#);
        assert!(p.is_match(r#"an ERROR 42 "x" here"#));
        assert_eq!(r.container, None);
        let r = parse_alert_rule(Some("web"), r#"log_match "panic" in "/web app""#).unwrap();
        assert_eq!(r.container.as_deref(), Some("web app"));
        assert_eq!(r.name, "web");
        // The same rule through TOML, as an operator writes it.
        let c = parse(
            "[[alerts]]\nrule = 'log_match \"fatal: .*\" in \"db\"'\n\
             [[alerts]]\nrule = \"log_match \\\"x\\\"\"\n",
        )
        .unwrap();
        assert_eq!(
            c.alerts[0].pattern.as_ref().unwrap().0.as_str(),
            "fatal: .*"
        );
        assert_eq!(c.alerts[1].pattern.as_ref().unwrap().0.as_str(), "x");
    }

    #[test]
    fn bad_rules_are_config_errors_that_say_why() {
        for (rule, says) in [
            ("disk_percent > 101 for 5m", "0 to 100"),
            ("disk_percent > 90 for soon", "not a duration"),
            ("disk_percent > 90 for 2d", "24h"),
            ("disk_percent > 90", "expected one of"),
            ("container_exited != 1", "container_exited != 0"),
            ("container_exited", "container_exited != 0"),
            ("container_unhealthy", "expected one of"),
            ("container_restarts > -1 in 10m", "whole number"),
            ("container_restarts > 3.5 in 10m", "whole number"),
            ("container_restarts > 3 in 0s", "longer than zero"),
            ("container_restarts > 3 for 10m", "expected one of"),
            (r#"log_match "(unclosed""#, "not a valid regex"),
            (r#"log_match "x"#, "not closed"),
            (r#"log_match """#, "empty"),
            ("log_match x", "expected one of"),
            (r#"log_match "x" in web"#, "expected one of"),
            (r#"log_match "x" in """#, "empty"),
            (r#"log_match "x" on "web""#, "expected one of"),
            ("nonsense", "expected one of"),
        ] {
            let e = parse_alert_rule(None, rule).unwrap_err().to_string();
            assert!(e.contains(says), "{rule}: {e}");
            assert!(e.contains("alert rule"), "{rule}: {e}");
        }
        let e = parse("[[alerts]]\nrule = \"container_exited != 0\"\n[[alerts]]\nrule = \"container_exited != 0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("two rules are named"), "{e}");
    }

    #[test]
    fn notifiers_are_validated_and_their_urls_never_shown() {
        let c = parse(
            "[[alerts]]\nname = \"disk\"\nrule = \"disk_percent > 90 for 5m\"\n\
             [[notifiers]]\nurl = \"https://hooks.slack.com/services/SECRET\"\nformat = \"slack\"\n\
             events = [\"firing\"]\nrules = [\"disk\"]\n\
             [[notifiers]]\nurl = \"http://127.0.0.1:9/hook\"\n",
        )
        .unwrap();
        assert_eq!(c.notifiers.len(), 2);
        let n = &c.notifiers[0];
        assert_eq!(n.format, NotifyFormat::Slack);
        assert!(n.on_firing && !n.on_resolved);
        assert_eq!(n.rules, ["disk"]);
        assert_eq!(n.redacted, "https://hooks.slack.com");
        assert!(!format!("{c:?}").contains("SECRET"));
        let m = &c.notifiers[1];
        assert_eq!(m.format, NotifyFormat::Json);
        assert!(m.on_firing && m.on_resolved && m.rules.is_empty());
        for (extra, says) in [
            ("url = \"ftp://h/SECRET\"", "http or https"),
            ("url = \"hooks/SECRET\"", "not a URL"),
            ("url = \"https://h/SECRET\"\nformat = \"teams\"", "format"),
            ("url = \"https://h/SECRET\"\nevents = [\"fired\"]", "event"),
            ("url = \"https://h/SECRET\"\nevents = []", "events is empty"),
            (
                "url = \"https://h/SECRET\"\nrules = [\"nope\"]",
                "no [[alerts]] name",
            ),
        ] {
            let e = parse(&format!("[[notifiers]]\n{extra}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{extra}: {e}");
            assert!(e.contains("notifiers[0]"), "{extra}: {e}");
            assert!(!e.contains("SECRET"), "{extra}: {e}");
        }
    }
}
