//! `dockwire init` and `dockwire keygen`: the operator's first commands.
//!
//! Owns what they write and print: a working, secure first config (a random
//! JWT secret in its own mode-600 file, one admin user with a generated
//! password shown once, loopback listen, every other key as a commented
//! default), and for a new agent the hub's `[[agents]]` lines plus the exact
//! commands and systemd unit for the remote host.
//!
//! Invariants: nothing existing is overwritten (init refuses); secrets are
//! created with their final mode (never world-readable, not even briefly;
//! group-readable only in a directory that belongs to another group, the
//! package's `root:dockwire` one);
//! every text that goes into TOML is quoted by the TOML serializer.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth;

/// Where `init` writes when no `--config` is given.
pub const DEFAULT_CONFIG: &str = "/etc/dockwire/dockwire.toml";
/// The first admin's login name.
pub const ADMIN_NAME: &str = "admin";
/// Longest agent name `keygen --name` takes.
pub const MAX_AGENT_NAME: usize = 64;

/// What `init` wrote and what the operator needs to hear once.
#[derive(Debug)]
pub struct Written {
    pub config: PathBuf,
    pub secret: PathBuf,
    pub admin_password: String,
    pub listen: String,
}

/// A TOML string literal for `s`.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Random URL-safe text from `bytes` random bytes.
fn random_text(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::fill(&mut raw[..]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Creates `path` with `mode` and `text`; fails if it exists.
fn create_new(path: &Path, mode: u32, text: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("could not create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| anyhow::anyhow!("could not write {}: {e}", path.display()))
}

/// Writes a first config at `config` and its JWT secret beside it
/// (`jwt.secret`), with one admin user whose password is returned.
///
/// # Errors
/// Either file exists already, or the directory cannot be made or written.
pub fn write_initial_config(config: &Path) -> anyhow::Result<Written> {
    let config = std::path::absolute(config)?;
    let dir = config
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no directory", config.display()))?;
    let secret = dir.join("jwt.secret");
    for existing in [&config, &secret] {
        if existing.exists() {
            anyhow::bail!(
                "{} exists already; init writes only a new config (move it away, or edit it)",
                existing.display()
            );
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("could not create {}: {e}", dir.display()))?;
    // A directory of another group (the package's root:dockwire 0750):
    // the files get that group and are readable by it, so the service's
    // user reads what root wrote; otherwise the secret is the owner's alone.
    let dir_gid = std::fs::metadata(dir)?.gid();
    // SAFETY: getegid(2) has no preconditions and cannot fail.
    let shared_group = (dir_gid != unsafe { libc::getegid() }).then_some(dir_gid);
    let admin_password = random_text(15);
    let hash = auth::users::hash_password(admin_password.as_bytes()).map_err(anyhow::Error::msg)?;
    let listen = crate::config::defaults::LISTEN.to_owned();
    let text = config_text(&listen, &secret, &hash);
    let secret_mode = if shared_group.is_some() { 0o640 } else { 0o600 };
    let written = create_new(&secret, secret_mode, &format!("{}\n", random_text(48)))
        .and_then(|()| create_new(&config, 0o640, &text))
        .and_then(|()| match shared_group {
            Some(gid) => [&secret, &config].iter().try_for_each(|p| {
                std::os::unix::fs::chown(p, None, Some(gid)).map_err(|e| {
                    anyhow::anyhow!("could not give {} to group {gid}: {e}", p.display())
                })
            }),
            None => Ok(()),
        });
    if let Err(e) = written {
        // Only what this run created goes (both were checked absent above).
        let _ = std::fs::remove_file(&secret);
        let _ = std::fs::remove_file(&config);
        return Err(e);
    }
    Ok(Written {
        config,
        secret,
        admin_password,
        listen,
    })
}

/// The config `init` writes: the working keys, then every other key as a
/// commented default.
fn config_text(listen: &str, secret: &Path, admin_hash: &str) -> String {
    format!(
        r#"# dockwire configuration, written by `dockwire init`.
# Reload after editing: systemctl reload dockwire (or kill -HUP the daemon).
# Every key and its default: README "Configuration".

listen = {listen}
# server_id = "..."              # default: derived from /etc/machine-id
# metrics_interval = "5s"

[auth]
jwt_secret_file = {secret}
# session_ttl = "12h"
# allowed_origins = []            # other origins allowed to open sockets
# allow_anonymous_admin = false

# Dashboard logins; add more with: dockwire passwd NAME --role admin|viewer
[[users]]
name = {admin}
password_hash = {hash}
role = "admin"

# Remote hosts: dockwire keygen --name NAME --hub wss://THIS-HOST:7575/api/v1/agents/ws
# prints the lines to add here and the command to run there.

# TLS for every endpoint of the port (then https:// and wss://):
# [tls]
# cert_file = "/etc/dockwire/tls/fullchain.pem"
# key_file = "/etc/dockwire/tls/privkey.pem"

# [docker]
# host = "unix:///var/run/docker.sock"   # default: DOCKER_HOST, else this

# [http]
# allowed_hosts = []              # Host names answered besides loopback and listen

# [limits]
# max_connections = 100000
# max_queued_bytes = "4MiB"
# max_message_bytes = "64KiB"
# handshake_timeout = "10s"
# auth_timeout = "10s"
# ping_interval = "20s"
# idle_timeout = "60s"
# compression = true            # permessage-deflate when a client offers it

# [socketio]
# ping_interval = "25s"
# ping_timeout = "20s"
# recovery = true               # connection state recovery (pid, offsets on events)

# [commands]
# timeout = "30s"
# audit_log = "/var/log/dockwire/audit.jsonl"

# Alerts and where they go (docs/alerts.md):
# [[alerts]]
# rule = "disk_percent > 90 for 5m"
# [[notifiers]]
# url = "https://ntfy.sh/your-topic"
# format = "ntfy"
"#,
        listen = toml_str(listen),
        secret = toml_str(&secret.display().to_string()),
        admin = toml_str(ADMIN_NAME),
        hash = toml_str(admin_hash),
    )
}

/// What `init` prints after writing: the password once, and what to do next.
pub fn next_steps(w: &Written) -> String {
    let config = w.config.display();
    format!(
        "Wrote {config} and {secret} (readable by no one else).\n\
         \n\
         Dashboard login (shown only now; change it with `dockwire passwd {ADMIN_NAME} --role admin`):\n\
         \x20 user:     {ADMIN_NAME}\n\
         \x20 password: {password}\n\
         \n\
         Next:\n\
         \x20 1. run it:       dockwire serve --config {config}   (or: systemctl restart dockwire)\n\
         \x20 2. open:         http://{listen}/\n\
         \x20 3. add a host:   dockwire keygen --name NAME --hub wss://THIS-HOST:7575/api/v1/agents/ws\n\
         \x20 4. turn on TLS:  uncomment [tls] in {config} with your certificate, then restart\n\
         \x20    (and set listen to a public address; browsers then use https://)\n",
        secret = w.secret.display(),
        password = w.admin_password,
        listen = w.listen,
    )
}

/// Checks an agent name for `keygen --name`.
///
/// # Errors
/// Empty, too long, or with control characters.
pub fn check_agent_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_AGENT_NAME || name.chars().any(char::is_control) {
        return Err(format!(
            "the agent name must be 1 to {MAX_AGENT_NAME} bytes without control characters"
        ));
    }
    Ok(())
}

/// What `dockwire keygen --name NAME [--hub URL]` prints for `key`: the
/// hub's `[[agents]]` lines, then the commands and systemd unit for the
/// remote host.
pub fn keygen_text(key: &str, name: &str, hub: Option<&str>) -> String {
    let lines = auth::agent_lines(key, name);
    let hub_url = hub.unwrap_or("wss://HUB:7575/api/v1/agents/ws");
    format!(
        "# 1. On the hub: add these lines to its config, then `systemctl reload dockwire`.\n\
         {lines}\n\
         # 2. On the new host: store the key (shown only now) and run the agent.\n\
         install -d -m 755 /etc/dockwire\n\
         install -m 600 /dev/stdin /etc/dockwire/agent.key <<< '{key}'\n\
         dockwire agent --hub {hub_url} --api-key-file /etc/dockwire/agent.key\n\
         \n\
         # 3. Or as a service on the new host: this unit in\n\
         #    /etc/systemd/system/dockwire-agent.service, then\n\
         #    systemctl daemon-reload && systemctl enable --now dockwire-agent\n\
         [Unit]\n\
         Description=dockwire agent ({name_comment})\n\
         After=network-online.target docker.service\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         LoadCredential=agent.key:/etc/dockwire/agent.key\n\
         ExecStart=/usr/bin/dockwire agent --hub {hub_url} --api-key-file ${{CREDENTIALS_DIRECTORY}}/agent.key\n\
         Restart=always\n\
         DynamicUser=yes\n\
         SupplementaryGroups=docker\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        name_comment = name.replace(['\n', '\r'], " "),
    )
}
