//! Docker feed: one OS thread running bollard on its own current-thread tokio
//! runtime. It reports container state and log lines to the event loop as
//! [`FeedEvent::Docker`] and takes [`DockerRequest`]s through [`DockerHandle`].
//!
//! Invariants:
//! - tokio stays inside the thread: the public API ([`spawn`],
//!   [`DockerHandle::request`], [`DockerClient`]) is synchronous.
//! - Every send into the feed channel is followed by a wake of the loop.
//! - `Up` is sent on start and after each reconnect, `Down` once per loss;
//!   a follower ends with exactly one `LogEnded` unless it was unfollowed.
//! - Per follower: one `LogHistory`, then `LogLines` in Docker's order with
//!   no gap and no duplicate at the seam (see `follow` for how), then
//!   `LogEnded`. A follower that fails before its history (unknown
//!   container, engine down, log driver that cannot be read) gets only
//!   `LogEnded`. Reasons: "container stopped", "container removed",
//!   "container restarted", "docker is down", "docker went away: ...", or
//!   the engine's error text.
//! - Memory is bounded without help from the loop: before reading more from
//!   Docker, a follower waits while the feed channel (`Sender::len`) holds
//!   more than [`LOG_BACKLOG_MAX_EVENTS`] events; Docker keeps the rest in
//!   its log file. A `LogLines` holds at most [`BATCH_MAX_LINES`] lines or
//!   about [`BATCH_MAX_BYTES`]; lines and histories have byte caps (see
//!   `lines`). Container events and action answers are never held back.
//! - Docker writes one frame per log line; when it is slower than this
//!   thread, batches hold one line (there is no timer to wait for more).
//!
//! Files: `engine` (connect, container table, events), `follow` (log
//! followers), `lines` (record parsing and the history/live seam),
//! `runtime` (the thread's main loop: requests, reconnects, followers),
//! `stats` (per-container usage while someone subscribes).

mod engine;
pub use engine::parse_rfc3339;
mod follow;
pub mod lines;
mod runtime;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use crossbeam_channel::Sender;

use crate::feed::{ContainerAction, DockerEvent, DockerRequest, FeedEvent};
use crate::protocol::model::Container;

/// Where Docker listens when neither `DOCKER_HOST` nor the config says.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// Seconds Docker waits for a container to stop before killing it (stop and
/// restart actions), like `docker stop`'s default.
pub const STOP_TIMEOUT_SECS: i32 = 10;
/// Seconds bollard waits for a response head. Streams are not limited by it.
pub const REQUEST_TIMEOUT_SECS: u64 = 60;
/// First reconnect delay; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Followers pause reading Docker while the feed channel holds more events.
pub const LOG_BACKLOG_MAX_EVENTS: usize = 256;
/// A `LogLines` batch holds at most this many lines...
pub const BATCH_MAX_LINES: usize = 1024;
/// ...or about this many bytes of text.
pub const BATCH_MAX_BYTES: usize = 64 * 1024;
/// The largest history a follower fetches, whatever `tail` asks for.
pub const MAX_TAIL: usize = 100_000;

/// Errors of the Docker subsystem. None is fatal to the daemon: the feed
/// thread retries, and [`DockerClient`] callers report them.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    // Causes are in the messages and not `source`s, so that error chains
    // (`{:#}`) say each once.
    #[error("could not start the docker thread: {0}")]
    Thread(std::io::Error),
    #[error("could not connect to docker at {host}: {error}")]
    Connect {
        host: String,
        error: bollard::errors::Error,
    },
    #[error("could not talk to docker: {0}")]
    Request(#[from] bollard::errors::Error),
}

/// The loop's side of the Docker thread. Cheap to clone; usable from any
/// thread. Dropping every handle stops the thread.
#[derive(Debug, Clone)]
pub struct DockerHandle {
    requests: tokio::sync::mpsc::UnboundedSender<DockerRequest>,
}

impl DockerHandle {
    /// Queues a request; never blocks. Requests after the thread ended are
    /// dropped (the loop already saw the channel close).
    pub fn request(&self, req: DockerRequest) {
        if self.requests.send(req).is_err() {
            log::debug!("docker thread is gone; request dropped");
        }
    }
}

impl DockerHandle {
    /// A handle with no thread behind it: its requests wait in the returned
    /// receiver (hub tests check what the hub asked of Docker).
    #[cfg(test)]
    pub(crate) fn detached() -> (Self, tokio::sync::mpsc::UnboundedReceiver<DockerRequest>) {
        let (requests, rx) = tokio::sync::mpsc::unbounded_channel();
        (DockerHandle { requests }, rx)
    }
}

/// Picks the engine address: `DOCKER_HOST` when set, else the `[docker] host`
/// config value, else [`DEFAULT_HOST`].
pub fn resolve_host(configured: Option<String>) -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ => configured
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string()),
    }
}

/// Starts the Docker thread. `host` is the `[docker] host` config value
/// (`DOCKER_HOST` wins when set). The thread connects in the background: an
/// absent engine is reported as `Down`, not as an error here.
///
/// # Errors
/// Only when the OS cannot start the thread or its runtime.
pub fn spawn(
    host: Option<String>,
    tx: Sender<FeedEvent>,
    waker: Arc<mio::Waker>,
) -> std::io::Result<DockerHandle> {
    spawn_at(resolve_host(host), tx, waker)
}

/// Like [`spawn`] but talks to exactly `host`, ignoring `DOCKER_HOST` (tests
/// use it to reach an engine of their own).
///
/// # Errors
/// Only when the OS cannot start the thread or its runtime.
pub fn spawn_at(
    host: String,
    tx: Sender<FeedEvent>,
    waker: Arc<mio::Waker>,
) -> std::io::Result<DockerHandle> {
    start(
        host,
        Sink {
            tx,
            waker: Some(waker),
        },
    )
}

/// Like [`spawn_at`] for a consumer that is not a mio loop (the agent): it
/// blocks on the channel, so nothing needs waking.
///
/// # Errors
/// Only when the OS cannot start the thread or its runtime.
pub fn spawn_for_channel(host: String, tx: Sender<FeedEvent>) -> std::io::Result<DockerHandle> {
    start(host, Sink { tx, waker: None })
}

fn start(host: String, sink: Sink) -> std::io::Result<DockerHandle> {
    let (req_tx, req_rx) = tokio::sync::mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("docker-feed".into())
        .spawn(move || {
            log::info!("docker feed: using {host}");
            rt.block_on(runtime::run(host, sink, req_rx));
            log::debug!("docker feed: thread exits");
        })?;
    Ok(DockerHandle { requests: req_tx })
}

/// Where every event of the thread goes: the consumer's channel plus, for
/// the event loop, its waker.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: Sender<FeedEvent>,
    waker: Option<Arc<mio::Waker>>,
}

impl Sink {
    /// Sends and wakes the loop. `false` when the loop is gone.
    fn send(&self, ev: DockerEvent) -> bool {
        let ok = self.tx.send(FeedEvent::Docker(ev)).is_ok();
        if let Some(w) = &self.waker
            && let Err(e) = w.wake()
        {
            log::debug!("docker feed: could not wake the loop: {e}");
        }
        ok
    }

    /// Events sent but not yet taken by the loop.
    fn backlog(&self) -> usize {
        self.tx.len()
    }
}

/// Opens a bollard client for `host` (unix://, a bare socket path, tcp:// or
/// http://). No I/O happens until the first request.
fn client_for(host: &str) -> Result<Docker, bollard::errors::Error> {
    let v = bollard::API_DEFAULT_VERSION;
    if host.starts_with("unix://") {
        Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, v)
    } else if host.starts_with('/') {
        Docker::connect_with_unix(&format!("unix://{host}"), REQUEST_TIMEOUT_SECS, v)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, v)
    } else {
        Err(bollard::errors::Error::UnsupportedURISchemeError {
            uri: host.to_string(),
        })
    }
}

/// Connects and settles the API version with the engine (bollard speaks a
/// newer one than many engines accept).
async fn connect(host: &str) -> Result<Docker, bollard::errors::Error> {
    client_for(host)?.negotiate_version().await
}

/// The engine's own words for an error (e.g. "No such container: x").
///
/// Connection failures name what the operator can do about them: a socket
/// the daemon may not open, a socket that is not there, an engine that
/// refuses connections, instead of the HTTP client's "client error (Connect)".
fn error_text(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::SocketNotFoundError(path) => format!(
            "no Docker socket at {path}: is Docker running? (set [docker] host or DOCKER_HOST)"
        ),
        other => match io_cause(other) {
            Some(io) => actionable(io).unwrap_or_else(|| format!("{other}: {io}")),
            None => other.to_string(),
        },
    }
}

/// The I/O error at the root of a client error, if any.
fn io_cause(e: &bollard::errors::Error) -> Option<&std::io::Error> {
    // Transparent variants: their `source` is the inner error's own source.
    if let bollard::errors::Error::IOError { err } = e {
        return Some(err);
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// What to do about a connection failure, in the operator's terms (the
/// caller names the engine address).
fn actionable(io: &std::io::Error) -> Option<String> {
    use std::io::ErrorKind;
    Some(
        match io.kind() {
            ErrorKind::PermissionDenied => {
                "permission denied on the Docker socket: add the dockwire user to the docker \
                 group (or point [docker] host / DOCKER_HOST at an engine it may use)"
            }
            ErrorKind::NotFound => {
                "no Docker socket there: is Docker running? (set [docker] host or DOCKER_HOST)"
            }
            ErrorKind::ConnectionRefused => "the engine refused the connection: is it running?",
            _ => return None,
        }
        .to_string(),
    )
}

/// Runs a container action; `Ok` holds the message for the user.
async fn run_action(docker: &Docker, action: ContainerAction, id: &str) -> Result<String, String> {
    use bollard::query_parameters::{
        RestartContainerOptions, StartContainerOptions, StopContainerOptions,
    };
    let t = Some(STOP_TIMEOUT_SECS);
    let res = match action {
        ContainerAction::Start => docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map(|()| "Container started"),
        ContainerAction::Stop => docker
            .stop_container(id, Some(StopContainerOptions { t, signal: None }))
            .await
            .map(|()| "Container stopped"),
        ContainerAction::Restart => docker
            .restart_container(id, Some(RestartContainerOptions { t, signal: None }))
            .await
            .map(|()| "Container restarted"),
    };
    res.map(str::to_string).map_err(|e| error_text(&e))
}

/// A blocking Docker client for code outside the feed thread (the agent):
/// it owns a small current-thread runtime and blocks the calling thread.
/// Do not call it from inside a tokio runtime.
pub struct DockerClient {
    rt: tokio::runtime::Runtime,
    docker: Docker,
}

impl DockerClient {
    /// Connects to `host` (resolved like [`spawn`] does) and checks that the
    /// engine answers.
    ///
    /// # Errors
    /// [`DockerError::Thread`] when no runtime can be built,
    /// [`DockerError::Connect`] when the engine does not answer.
    pub fn connect(host: Option<String>) -> Result<Self, DockerError> {
        Self::connect_exact(resolve_host(host))
    }

    /// Like [`DockerClient::connect`] but talks to exactly `host`, whatever
    /// `DOCKER_HOST` says (the agent's `--docker-host`).
    ///
    /// # Errors
    /// When the runtime cannot start or the engine cannot be reached.
    pub fn connect_exact(host: String) -> Result<Self, DockerError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DockerError::Thread)?;
        let docker = rt
            .block_on(connect(&host))
            .map_err(|error| DockerError::Connect { host, error })?;
        Ok(Self { rt, docker })
    }

    /// Starts, stops or restarts a container (id or name). `Ok` holds a
    /// message like "Container started"; `Err` the engine's error text.
    pub fn action(&self, action: ContainerAction, container_id: &str) -> Result<String, String> {
        self.rt
            .block_on(run_action(&self.docker, action, container_id))
    }

    /// Every container, running or not.
    ///
    /// # Errors
    /// [`DockerError::Request`] when the engine fails the request.
    pub fn containers(&self) -> Result<Vec<Container>, DockerError> {
        Ok(self
            .rt
            .block_on(engine::list_containers(&self.docker, None))?)
    }
}

/// One-shot form of [`DockerClient::action`] for callers that act rarely.
///
/// # Errors
/// A message for the user: the connect error or the engine's error text.
/// `host`: exactly that engine; `None`: `DOCKER_HOST` or the default socket.
pub fn run_action_blocking(
    host: Option<String>,
    action: ContainerAction,
    container_id: &str,
) -> Result<String, String> {
    match host {
        Some(h) => DockerClient::connect_exact(h),
        None => DockerClient::connect(None),
    }
    .map_err(|e| e.to_string())?
    .action(action, container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_say_what_to_do() {
        use std::io::{Error, ErrorKind};
        let denied = actionable(&Error::from(ErrorKind::PermissionDenied)).unwrap();
        assert!(
            denied.contains("add the dockwire user to the docker group"),
            "{denied}"
        );
        let missing = actionable(&Error::from(ErrorKind::NotFound)).unwrap();
        assert!(missing.contains("is Docker running"), "{missing}");
        assert!(actionable(&Error::from(ErrorKind::TimedOut)).is_none());
        // The cause is found under the HTTP client's wrapping.
        let wrapped = bollard::errors::Error::IOError {
            err: Error::from(ErrorKind::PermissionDenied),
        };
        assert!(error_text(&wrapped).contains("docker group"));
        let gone = bollard::errors::Error::SocketNotFoundError("/run/x.sock".into());
        assert!(error_text(&gone).contains("no Docker socket at /run/x.sock"));
    }

    #[test]
    fn client_for_rejects_unknown_schemes() {
        assert!(client_for("ftp://x").is_err());
        assert!(client_for("tcp://127.0.0.1:1").is_ok());
        // A unix socket that does not exist fails early.
        assert!(client_for("unix:///nonexistent/docker.sock").is_err());
    }
}
