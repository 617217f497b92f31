//! `dockwire agent`: the remote side of the agent protocol (SPEC §3.3).
//!
//! The agent connects to a hub's `/api/v1/agents/ws`, authenticates with an
//! API key, then pushes host metrics and log-file lines and answers the
//! hub's `command` / `docker_command` requests, reconnecting with backoff
//! whenever the connection is lost.
//!
//! Threads (no async runtime except inside one Docker call):
//! - the session ([`session`]): owns the WebSocket, sends queued messages,
//!   reads hub requests, keeps the heartbeat, reconnects;
//! - metrics: samples [`crate::feed::metrics::MetricsCollector`] every
//!   `metrics_interval`;
//! - log tailer ([`tail`]): follows every `--log-file` like `tail -F`;
//! - one short-lived thread per running command ([`runner`]) or Docker
//!   action ([`docker`]), at most [`Tuning::max_tasks`] at once.
//!
//! Producers reach the session through one bounded crossbeam channel. While
//! the hub is unreachable the session keeps only the latest metrics sample,
//! the newest [`Tuning::offline_logs`] log lines and a few command answers
//! ([`backlog`]); nothing grows without bound.
//!
//! Security invariants: a command runs only if its string exactly equals an
//! `--allow-command` entry (split on whitespace, no shell; see [`runner`]);
//! the API key is never logged.

pub mod backlog;
pub mod backoff;
pub mod containers;
pub mod docker;
pub mod level;
pub mod runner;
pub mod session;
pub mod tail;
pub mod tls;
pub mod wire;

#[cfg(test)]
mod hub_tests;

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::feed::metrics::MetricsCollector;

use self::runner::{Allowlist, Limits};
use self::session::{Session, TaskContext};
use self::wire::Outgoing;

/// Default time a command may run before it is killed.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on a command's captured output.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Default metrics period (SPEC §3.3: every 5 s).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// Errors of the agent subsystem. All are fatal at start-up (bad options);
/// nothing after start-up is fatal: the session retries forever.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("could not use hub URL {0}")]
    InvalidHubUrl(String),
    #[error(
        "refusing hub URL {0}: ws:// would send the API key in clear to a host that is not this one; use wss:// (or --insecure-plaintext on a network you trust)"
    )]
    Plaintext(String),
    #[error("could not set up TLS: {0}")]
    Tls(String),
    /// The cause is in the message and deliberately not a `source`: error
    /// chains (`{:#}`) would print it twice.
    #[error(
        "could not read the API key file {path}: {error}{}",
        crate::auth::missing_hint(
            error,
            "; write the key that `dockwire keygen` printed \
         (on the hub's host) into it, mode 600"
        )
    )]
    KeyFile { path: PathBuf, error: io::Error },
    #[error("could not use the API key file {0}: it is empty")]
    EmptyKey(PathBuf),
    #[error("could not use --allow-command {0}")]
    InvalidAllowCommand(String),
    #[error("could not use the options: {0}")]
    InvalidOption(String),
    #[error("could not start the {0} thread: {1}")]
    Thread(&'static str, io::Error),
}

/// What `dockwire agent` was asked to do (built by `main.rs` from flags).
#[derive(Clone)]
pub struct AgentOptions {
    /// `ws[s]://host:port/api/v1/agents/ws`, tried in order (each with its
    /// own backoff).
    pub hubs: Vec<String>,
    /// Trust only this PEM file's CA certificates for `wss://` hubs (not
    /// the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Allow `ws://` to a hub that is not on this host.
    pub insecure_plaintext: bool,
    pub api_key: String,
    /// Exact command strings the hub may run; empty: no commands at all.
    pub allow_commands: Vec<String>,
    pub log_files: Vec<PathBuf>,
    pub metrics_interval: Duration,
    /// Docker engine for the containers, logs, stats and `docker_command`;
    /// `None`: `DOCKER_HOST` or the local socket.
    pub docker_host: Option<String>,
    /// No Docker at all (`--no-docker`): the agent announces no `docker`.
    pub no_docker: bool,
    pub command_timeout: Duration,
    pub max_output_bytes: usize,
}

impl AgentOptions {
    /// Options with every default (no commands, no log files).
    pub fn new(hub: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            hubs: vec![hub.into()],
            ca_file: None,
            insecure_plaintext: false,
            api_key: api_key.into(),
            allow_commands: Vec::new(),
            log_files: Vec::new(),
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            docker_host: None,
            no_docker: false,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// Never prints the API key.
impl fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentOptions")
            .field("hubs", &self.hubs)
            .field("ca_file", &self.ca_file)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .field("api_key", &"<redacted>")
            .field("allow_commands", &self.allow_commands)
            .field("log_files", &self.log_files)
            .field("metrics_interval", &self.metrics_interval)
            .field("docker_host", &self.docker_host)
            .field("no_docker", &self.no_docker)
            .field("command_timeout", &self.command_timeout)
            .field("max_output_bytes", &self.max_output_bytes)
            .finish()
    }
}

/// Internal timings and bounds; [`Tuning::default`] is what `run` uses.
/// Tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Socket read timeout: how often the session looks at its queue.
    pub read_tick: Duration,
    pub ping_interval: Duration,
    /// No frame from the hub for this long: the connection is dead.
    pub silence_timeout: Duration,
    pub connect_timeout: Duration,
    /// Limit for the WebSocket handshake and for the hub's auth answer.
    pub handshake_timeout: Duration,
    /// A write blocked this long fails (and the connection is dropped).
    pub write_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A connection up at least this long resets the backoff.
    pub stable_after: Duration,
    /// Log lines kept while offline.
    pub offline_logs: usize,
    /// Command/docker answers kept while offline.
    pub offline_responses: usize,
    /// Capacity of the producers -> session channel.
    pub channel_cap: usize,
    pub tail_poll: Duration,
    /// Longest log line sent (JSON-escaped bytes); longer lines are cut.
    pub max_line: usize,
    /// Commands and docker actions running at once, at most.
    pub max_tasks: usize,
    /// Largest frame sent (the hub's `max_message_bytes`, default 64 KiB);
    /// raised to `max_output_bytes` when that is larger, in which case the
    /// hub's limit must be raised too.
    pub max_frame: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            read_tick: Duration::from_millis(100),
            ping_interval: Duration::from_secs(20),
            silence_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
            offline_logs: 1000,
            offline_responses: 64,
            channel_cap: 1024,
            tail_poll: Duration::from_millis(250),
            max_line: 16 * 1024,
            max_tasks: 16,
            max_frame: 64 * 1024,
        }
    }
}

/// Where the hub is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `wss://`.
    pub tls: bool,
}

impl HubUrl {
    /// # Errors
    /// Not a `ws[s]://host[:port]/path` URL.
    pub fn parse(s: &str) -> Result<Self, AgentError> {
        let uri: tungstenite::http::Uri = s
            .parse()
            .map_err(|e| AgentError::InvalidHubUrl(format!("{s}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                return Err(AgentError::InvalidHubUrl(format!(
                    "{s}: expected wss://host:port/api/v1/agents/ws (or ws:// to this host)"
                )));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| AgentError::InvalidHubUrl(format!("{s}: no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            url: s.to_owned(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            host,
            tls,
        })
    }

    /// Whether the hub is this host (`localhost` or a loopback address),
    /// where plaintext crosses no network.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Every `--hub`, parsed; `ws://` to another host only with
/// `--insecure-plaintext`.
///
/// # Errors
/// No hub, a bad URL, or plaintext to another host.
fn hub_urls(opts: &AgentOptions) -> Result<Vec<HubUrl>, AgentError> {
    if opts.hubs.is_empty() {
        return Err(AgentError::InvalidOption("no --hub given".into()));
    }
    let mut hubs = Vec::with_capacity(opts.hubs.len());
    for text in &opts.hubs {
        let hub = HubUrl::parse(text)?;
        if !hub.tls && !hub.is_loopback() {
            if !opts.insecure_plaintext {
                return Err(AgentError::Plaintext(text.clone()));
            }
            log::warn!("--insecure-plaintext: the API key crosses the network to {text} in clear");
        }
        hubs.push(hub);
    }
    Ok(hubs)
}

/// Runs the agent until `shutdown` is set.
///
/// # Errors
/// Only for bad options or when a thread cannot start; connection problems
/// are retried forever and only logged.
pub fn run(opts: AgentOptions, shutdown: Arc<AtomicBool>) -> anyhow::Result<()> {
    run_with(opts, shutdown, Tuning::default()).map_err(anyhow::Error::from)
}

/// [`run`] with explicit [`Tuning`].
///
/// # Errors
/// See [`run`].
pub fn run_with(
    opts: AgentOptions,
    shutdown: Arc<AtomicBool>,
    tuning: Tuning,
) -> Result<(), AgentError> {
    let hubs = hub_urls(&opts)?;
    let tls = if hubs.iter().any(|h| h.tls) {
        Some(tls::client_config(opts.ca_file.as_deref()).map_err(AgentError::Tls)?)
    } else {
        None
    };
    if opts.api_key.trim().is_empty() {
        return Err(AgentError::InvalidOption("the API key is empty".into()));
    }
    if opts.metrics_interval < Duration::from_millis(100) {
        return Err(AgentError::InvalidOption(
            "metrics interval must be at least 100ms".into(),
        ));
    }
    if opts.command_timeout.is_zero() {
        return Err(AgentError::InvalidOption(
            "command timeout must be above zero".into(),
        ));
    }
    if opts.max_output_bytes == 0 {
        return Err(AgentError::InvalidOption(
            "max output bytes must be above zero".into(),
        ));
    }
    let allowlist = Allowlist::new(&opts.allow_commands)?;
    if allowlist.is_empty() {
        log::info!("no --allow-command given: every shell command from the hub will be refused");
    } else {
        log::info!(
            "the hub may run {} allowed command(s), exact match only",
            opts.allow_commands.len()
        );
    }

    let mut tuning = tuning;
    tuning.max_frame = tuning.max_frame.max(opts.max_output_bytes);
    let (tx, rx) = crossbeam_channel::bounded(tuning.channel_cap.max(1));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let started = (|| {
        threads.push(
            spawn_metrics(opts.metrics_interval, tx.clone(), Arc::clone(&shutdown))
                .map_err(|e| AgentError::Thread("metrics", e))?,
        );
        if !opts.log_files.is_empty() {
            let config = tail::TailConfig {
                paths: opts.log_files.clone(),
                poll_interval: tuning.tail_poll,
                max_line: tuning.max_line,
            };
            threads.push(
                tail::spawn(config, tx.clone(), Arc::clone(&shutdown))
                    .map_err(|e| AgentError::Thread("log tailer", e))?,
            );
        }
        Ok(())
    })();
    if let Err(e) = started {
        shutdown.store(true, Ordering::Relaxed);
        join_all(threads);
        return Err(e);
    }

    let docker_host = docker_engine(&opts);
    let mut capabilities = vec!["metrics"];
    if !opts.log_files.is_empty() {
        capabilities.push("log_files");
    }
    if !allowlist.is_empty() {
        capabilities.push("commands");
    }
    let mut bridge = None;
    if let Some(host) = docker_host.clone() {
        match containers::DockerBridge::start(
            host.clone(),
            tx.clone(),
            Arc::clone(&shutdown),
            tuning.max_frame,
            tuning.max_line,
        ) {
            Ok((b, thread)) => {
                log::info!("docker: containers, logs and stats from {host}");
                capabilities.push("docker");
                threads.push(thread);
                bridge = Some(Arc::new(b));
            }
            Err(e) => {
                shutdown.store(true, Ordering::Relaxed);
                join_all(threads);
                return Err(AgentError::Thread("docker", e));
            }
        }
    }
    let tasks = TaskContext {
        allowlist: Arc::new(allowlist),
        limits: Limits {
            timeout: opts.command_timeout,
            max_output_bytes: opts.max_output_bytes,
        },
        docker_host: docker_host.or_else(|| opts.docker_host.clone()),
        max_tasks: tuning.max_tasks.max(1),
        in_flight: Arc::new(AtomicUsize::new(0)),
    };
    log::info!(
        "agent starting; hub {}",
        hubs.iter()
            .map(|h| h.url.as_str())
            .collect::<Vec<_>>()
            .join(", then ")
    );
    let session = Session::new(
        (hubs, tls),
        opts.api_key,
        tuning,
        (tx, rx),
        tasks,
        Arc::clone(&shutdown),
    )
    .with_extensions(&capabilities, bridge);
    session.run();
    join_all(threads);
    Ok(())
}

/// The Docker engine the agent serves, if any: `--docker-host`, else
/// `DOCKER_HOST`, else the local socket when it exists. `--no-docker`, or
/// no engine named and no socket, means none (logged once).
fn docker_engine(opts: &AgentOptions) -> Option<String> {
    if opts.no_docker {
        log::info!("--no-docker: this agent reports no containers");
        return None;
    }
    let named = opts.docker_host.is_some()
        || std::env::var("DOCKER_HOST").is_ok_and(|h| !h.trim().is_empty());
    // The flag wins over DOCKER_HOST (unlike `[docker] host` for `serve`).
    let host = match &opts.docker_host {
        Some(h) => h.trim().to_string(),
        None => crate::feed::docker::resolve_host(None),
    };
    let socket = host.strip_prefix("unix://").unwrap_or(&host);
    if !named && !Path::new(socket).exists() {
        log::info!(
            "no Docker socket at {socket}: this agent reports no containers \
             (use --docker-host or DOCKER_HOST to name an engine)"
        );
        return None;
    }
    Some(host)
}

fn join_all(threads: Vec<JoinHandle<()>>) {
    for t in threads {
        if t.join().is_err() {
            log::error!("an agent thread panicked");
        }
    }
}

/// Samples host metrics every `interval` (the first after at most 1 s, so
/// the CPU figure has a baseline) and hands them to the session. A sample
/// the session has no room for is dropped: the next one supersedes it.
fn spawn_metrics(
    interval: Duration,
    tx: Sender<Outgoing>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("agent-metrics".into())
        .spawn(move || {
            let mut collector = MetricsCollector::new();
            let mut next = Instant::now() + interval.min(Duration::from_secs(1));
            loop {
                tail::sleep_unless(&shutdown, next.saturating_duration_since(Instant::now()));
                if shutdown.load(Ordering::Relaxed) {
                    break;
                }
                let sample = collector.sample();
                match tx.try_send(Outgoing::Metrics(sample)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => log::debug!("metrics sample dropped: queue full"),
                    Err(TrySendError::Disconnected(_)) => break,
                }
                next += interval;
                let now = Instant::now();
                if next < now {
                    next = now + interval;
                }
            }
            log::debug!("metrics thread stopped");
        })
}

/// Reads an agent API key from `path`: trims surrounding whitespace, refuses
/// an empty key, and warns when the file is readable by group or others.
///
/// # Errors
/// The file cannot be read, or holds only whitespace.
pub fn read_api_key_file(path: &Path) -> anyhow::Result<String> {
    read_key(path).map_err(anyhow::Error::from)
}

fn read_key(path: &Path) -> Result<String, AgentError> {
    let key_error = |error| AgentError::KeyFile {
        path: path.to_owned(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(key_error)?;
    let text = std::fs::read_to_string(path).map_err(key_error)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(AgentError::EmptyKey(path.to_owned()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o044 != 0 {
        log::warn!(
            "API key file {} is readable by group or others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(key.to_owned())
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir.
    pub fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "dockwire-agent-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hub_urls_parse() {
        assert_eq!(
            HubUrl::parse("ws://hub.example:7575/api/v1/agents/ws").unwrap(),
            HubUrl {
                url: "ws://hub.example:7575/api/v1/agents/ws".into(),
                host: "hub.example".into(),
                port: 7575,
                tls: false,
            }
        );
        let v6 = HubUrl::parse("ws://[::1]/api/v1/agents/ws").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
        let tls = HubUrl::parse("wss://hub/api/v1/agents/ws").unwrap();
        assert!(tls.tls && tls.port == 443 && !tls.is_loopback());
        assert!(v6.is_loopback());
        assert!(HubUrl::parse("ws://LocalHost:1/x").unwrap().is_loopback());
        assert!(HubUrl::parse("ws://127.0.0.2:1/x").unwrap().is_loopback());
        assert!(matches!(
            HubUrl::parse("http://hub/api/v1/agents/ws"),
            Err(AgentError::InvalidHubUrl(_))
        ));
        assert!(HubUrl::parse("hub:7575").is_err());
        assert!(HubUrl::parse("").is_err());
    }

    #[test]
    fn key_file_is_trimmed_and_must_not_be_empty() {
        let dir = test_util::tempdir();
        let p = dir.join("key");
        std::fs::write(&p, "  dw_secret123\n\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_api_key_file(&p).unwrap(), "dw_secret123");
        // Group/world readable still works (only a warning).
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_api_key_file(&p).unwrap(), "dw_secret123");

        std::fs::write(&p, " \n\t").unwrap();
        let err = read_api_key_file(&p).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err = read_api_key_file(&dir.join("absent"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("could not read the API key file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let o = AgentOptions::new("ws://h/api/v1/agents/ws", "super-secret-key");
        let s = format!("{o:?}");
        assert!(!s.contains("super-secret-key"));
        assert!(s.contains("redacted"));
    }

    #[test]
    fn bad_options_fail_fast() {
        let stop = Arc::new(AtomicBool::new(false));
        let base = AgentOptions::new("ws://127.0.0.1:1/api/v1/agents/ws", "k");
        let mut o = base.clone();
        o.hubs = vec!["ftp://x/api".into()];
        assert!(run_with(o, Arc::clone(&stop), Tuning::default()).is_err());
        // Plaintext to another host: refused, unless asked for.
        let mut o = base.clone();
        o.hubs.push("ws://hub.example:7575/api/v1/agents/ws".into());
        assert!(matches!(hub_urls(&o), Err(AgentError::Plaintext(_))));
        o.insecure_plaintext = true;
        assert_eq!(hub_urls(&o).unwrap().len(), 2);
        let mut o = base.clone();
        o.hubs.clear();
        assert!(hub_urls(&o).is_err());
        // A CA file without a certificate is refused at start.
        let mut o = base.clone();
        o.hubs = vec!["wss://hub.example/api/v1/agents/ws".into()];
        o.ca_file = Some("/dev/null".into());
        assert!(matches!(
            run_with(o, Arc::clone(&stop), Tuning::default()),
            Err(AgentError::Tls(_))
        ));
        let mut o = base.clone();
        o.allow_commands = vec!["uptime".into(), "   ".into()];
        assert!(matches!(
            run_with(o, Arc::clone(&stop), Tuning::default()),
            Err(AgentError::InvalidAllowCommand(_))
        ));
        let mut o = base.clone();
        o.metrics_interval = Duration::ZERO;
        assert!(run_with(o, Arc::clone(&stop), Tuning::default()).is_err());
        let mut o = base.clone();
        o.api_key = " ".into();
        assert!(run_with(o, Arc::clone(&stop), Tuning::default()).is_err());
        let mut o = base;
        o.max_output_bytes = 0;
        assert!(run_with(o, stop, Tuning::default()).is_err());
    }
}
