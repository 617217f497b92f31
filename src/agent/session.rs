//! The agent's connection to the hub: connect, authenticate, serve, and
//! reconnect with backoff, forever until shutdown.
//!
//! Owns the tungstenite socket (one thread, blocking I/O with a short read
//! timeout so reads interleave with sending queued messages), the offline
//! [`Backlog`], and the dispatch of hub commands to their own threads.
//!
//! Invariants:
//! - Only this thread touches the socket. Producers (metrics, log tailer,
//!   command threads) reach it through one bounded crossbeam channel.
//! - The channel is drained in every state: while connected into the
//!   socket, while waiting to reconnect into the bounded backlog.
//! - A refused command is decided on this thread and never reaches a
//!   spawned thread. At most `max_tasks` commands/docker actions run at once;
//!   more are answered "busy".
//! - Heartbeat: a ping every `ping_interval`; any frame from the hub counts
//!   as life; `silence_timeout` without one ends the connection.
//! - After any loss the next attempt waits a jittered exponential backoff;
//!   a refused API key jumps to the maximum delay; a connection that stayed
//!   up `stable_after` resets the backoff.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TryRecvError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{HandshakeError, Message, WebSocket};

use super::backlog::Backlog;
use super::backoff::Backoff;
use super::containers::DockerBridge;
use super::docker::docker_action;
use super::runner::{self, Allowlist, Limits};
use super::tls::HubStream;
use super::wire::{self, CommandResponse, DockerResponse, Incoming, Outgoing};
use super::{HubUrl, Tuning};

/// Largest message accepted from the hub (commands are tiny).
const MAX_INCOMING: usize = 1 << 20;
/// Outgoing items written per loop round before reading again.
const SEND_BATCH: usize = 256;
/// Read timeout while more items wait to be sent.
const BUSY_READ_TICK: Duration = Duration::from_millis(1);
/// Longest command string quoted in a log line.
const MAX_LOGGED_COMMAND: usize = 200;

type Socket = WebSocket<HubStream>;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Shutdown,
    /// The hub refused our API key (its message).
    Refused(String),
    /// Anything else: connect failure, close, I/O error, silence.
    Lost(String),
}

/// Everything a command or docker thread needs.
#[derive(Clone)]
pub struct TaskContext {
    pub allowlist: Arc<Allowlist>,
    pub limits: Limits,
    pub docker_host: Option<String>,
    pub max_tasks: usize,
    pub in_flight: Arc<AtomicUsize>,
}

/// The session: one per agent process.
pub struct Session {
    /// Every `--hub`, tried in order; `current` is the one in use.
    hubs: Vec<HubUrl>,
    current: usize,
    /// Trust for `wss://` hubs (`None` when every hub is `ws://`).
    tls: Option<Arc<rustls::ClientConfig>>,
    api_key: String,
    tuning: Tuning,
    rx: Receiver<Outgoing>,
    tx: Sender<Outgoing>,
    backlog: Backlog,
    tasks: TaskContext,
    shutdown: Arc<AtomicBool>,
    /// Items written to the socket but not yet flushed: put back in the
    /// backlog if the flush fails.
    unflushed: Vec<Outgoing>,
    /// The Docker side, when this agent announces `docker`.
    docker: Option<Arc<DockerBridge>>,
    /// The `hello` message sent after every `auth_success`.
    hello: String,
}

impl Session {
    pub fn new(
        (hubs, tls): (Vec<HubUrl>, Option<Arc<rustls::ClientConfig>>),
        api_key: String,
        tuning: Tuning,
        channel: (Sender<Outgoing>, Receiver<Outgoing>),
        tasks: TaskContext,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let backlog = Backlog::new(tuning.offline_logs, tuning.offline_responses);
        Self {
            hubs,
            current: 0,
            tls,
            api_key,
            tuning,
            tx: channel.0,
            rx: channel.1,
            backlog,
            tasks,
            shutdown,
            unflushed: Vec::new(),
            docker: None,
            hello: wire::encode_hello(&[]),
        }
    }

    /// Announces `capabilities` in `hello`; `docker`: the Docker bridge.
    #[must_use]
    pub fn with_extensions(
        mut self,
        capabilities: &[&str],
        docker: Option<Arc<DockerBridge>>,
    ) -> Self {
        self.hello = wire::encode_hello(capabilities);
        self.docker = docker;
        self
    }

    /// The hub in use.
    fn hub(&self) -> &HubUrl {
        &self.hubs[self.current]
    }

    /// Connects, serves, and reconnects until `shutdown` is set. After a
    /// lost or refused connection the next hub in the list is tried (the
    /// same one when there is one), after that hub's own backoff.
    pub fn run(mut self) {
        let mut backoffs: Vec<Backoff> = self
            .hubs
            .iter()
            .map(|_| Backoff::new(self.tuning.backoff_base, self.tuning.backoff_max))
            .collect();
        while !self.stopping() {
            let (end, up_for) = self.connect_and_serve();
            let backoff = &mut backoffs[self.current];
            match end {
                End::Shutdown => break,
                End::Refused(msg) => {
                    log::error!("hub {} refused this agent's API key: {msg}", self.hub().url);
                    backoff.saturate();
                }
                End::Lost(reason) => {
                    if up_for >= self.tuning.stable_after {
                        backoff.reset();
                    }
                    log::warn!("hub connection: {reason}");
                }
            }
            if self.stopping() {
                break;
            }
            self.current = (self.current + 1) % self.hubs.len();
            let delay = backoffs[self.current].next_delay();
            log::info!(
                "reconnecting to {} in {}",
                self.hub().url,
                humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
            );
            self.wait_offline(delay);
        }
        log::info!("agent session stopped");
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Sleeps `delay`, keeping the channel drained into the bounded backlog.
    fn wait_offline(&mut self, delay: Duration) {
        let end = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= end || self.stopping() {
                break;
            }
            match self
                .rx
                .recv_timeout((end - now).min(Duration::from_millis(100)))
            {
                Ok(item) => {
                    self.backlog.push(item);
                    // Drain whatever else is waiting without sleeping.
                    while let Ok(item) = self.rx.try_recv() {
                        self.backlog.push(item);
                    }
                }
                Err(_) => continue,
            }
        }
        self.report_drops();
    }

    fn report_drops(&mut self) {
        let d = self.backlog.take_dropped();
        if d.logs > 0 {
            log::warn!(
                "hub unreachable: dropped {} log lines (keeping the newest {})",
                d.logs,
                self.tuning.offline_logs
            );
        }
        if d.responses > 0 {
            log::warn!("hub unreachable: dropped {} command answers", d.responses);
        }
    }

    /// One connection's life. Returns how it ended and how long it was up
    /// after authentication.
    fn connect_and_serve(&mut self) -> (End, Duration) {
        let mut ws = match self.connect() {
            Ok(ws) => ws,
            Err(e) => {
                return (
                    End::Lost(format!("could not connect to {}: {e}", self.hub().url)),
                    Duration::ZERO,
                );
            }
        };
        if let Err(e) = ws.send(Message::text(wire::encode_auth(&self.api_key))) {
            return (
                End::Lost(format!("could not send auth: {e}")),
                Duration::ZERO,
            );
        }
        let server_id = match self.await_auth(&mut ws) {
            Ok(id) => id,
            Err(end) => return (end, Duration::ZERO),
        };
        log::info!("connected to hub {} as server {server_id}", self.hub().url);
        if let Err(e) = self.announce(&mut ws) {
            return (
                End::Lost(format!("could not send hello: {e}")),
                Duration::ZERO,
            );
        }
        let up = Instant::now();
        let end = self.serve(&mut ws, &server_id);
        (end, up.elapsed())
    }

    /// TCP connect with a timeout, then the WebSocket handshake.
    fn connect(&self) -> Result<Socket, String> {
        let hub = self.hub();
        let addrs = (hub.host.as_str(), hub.port)
            .to_socket_addrs()
            .map_err(|e| format!("could not resolve {}: {e}", hub.host))?;
        let mut last_err: Option<io::Error> = None;
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.tuning.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let stream = match (stream, last_err) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(e.to_string()),
            (None, None) => return Err(format!("{} has no address", hub.host)),
        };
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.tuning.handshake_timeout))?;
            s.set_write_timeout(Some(self.tuning.write_timeout))
        };
        setup(&stream).map_err(|e| format!("could not set up the socket: {e}"))?;
        let stream = match (&self.tls, hub.tls) {
            (Some(config), true) => HubStream::tls(stream, &hub.host, Arc::clone(config))?,
            (None, true) => return Err("no TLS settings for a wss:// hub".into()),
            (_, false) => HubStream::Plain(stream),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let ws =
            match tungstenite::client::client_with_config(hub.url.as_str(), stream, Some(config)) {
                Ok((ws, _response)) => ws,
                Err(HandshakeError::Interrupted(_)) => {
                    return Err(format!(
                        "no handshake answer within {}",
                        humantime::format_duration(self.tuning.handshake_timeout)
                    ));
                }
                Err(HandshakeError::Failure(e)) => return Err(format!("handshake failed: {e}")),
            };
        ws.get_ref()
            .tcp()
            .set_read_timeout(Some(self.tuning.read_tick))
            .map_err(|e| format!("could not set up the socket: {e}"))?;
        Ok(ws)
    }

    /// Waits for `auth_success` (its `server_id`) or the hub's refusal.
    fn await_auth(&mut self, ws: &mut Socket) -> Result<String, End> {
        let deadline = Instant::now() + self.tuning.handshake_timeout;
        loop {
            if self.stopping() {
                return Err(End::Shutdown);
            }
            match ws.read() {
                Ok(Message::Text(text)) => match wire::decode(text.as_str()) {
                    Ok(Incoming::AuthSuccess { server_id }) => return Ok(server_id),
                    Ok(Incoming::Error { message }) => return Err(End::Refused(message)),
                    Ok(other) => log::debug!("before auth, ignoring {other:?}"),
                    Err(reason) => log::warn!("before auth, ignoring a bad message: {reason}"),
                },
                Ok(Message::Close(frame)) => {
                    let _ = ws.flush();
                    return Err(End::Lost(format!(
                        "hub closed the connection before auth{}",
                        describe_close(frame.as_ref())
                    )));
                }
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(End::Lost(format!("during auth: {e}"))),
            }
            if Instant::now() >= deadline {
                return Err(End::Lost(format!(
                    "no auth answer within {}",
                    humantime::format_duration(self.tuning.handshake_timeout)
                )));
            }
        }
    }

    /// The connected loop.
    fn serve(&mut self, ws: &mut Socket, server_id: &str) -> End {
        self.report_drops();
        let mut last_heard = Instant::now();
        let mut last_ping = Instant::now();
        // Whether the socket's read timeout is the short one (work queued).
        let mut fast = false;
        loop {
            if self.stopping() {
                let _ = self.send_pending(ws, server_id);
                close_gracefully(ws);
                return End::Shutdown;
            }
            if let Err(reason) = self.send_pending(ws, server_id) {
                return End::Lost(reason);
            }
            // With more queued than one batch, look at the hub only briefly
            // before sending on: a full read tick per batch would cap a busy
            // container's log at SEND_BATCH items per tick.
            let busy = !self.rx.is_empty() || !self.backlog.is_empty();
            if busy != fast {
                let tick = if busy {
                    BUSY_READ_TICK
                } else {
                    self.tuning.read_tick
                };
                if let Err(e) = ws.get_ref().tcp().set_read_timeout(Some(tick)) {
                    return End::Lost(format!("could not set up the socket: {e}"));
                }
                fast = busy;
            }
            match ws.read() {
                Ok(msg) => {
                    last_heard = Instant::now();
                    match msg {
                        Message::Text(text) => self.handle(text.as_str()),
                        Message::Close(frame) => {
                            let _ = ws.flush();
                            return End::Lost(format!(
                                "hub closed the connection{}",
                                describe_close(frame.as_ref())
                            ));
                        }
                        Message::Binary(b) => {
                            log::debug!("ignoring a {}-byte binary frame from the hub", b.len());
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Err(e) if is_transient(&e) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return End::Lost("hub closed the connection".to_owned());
                }
                Err(e) => return End::Lost(format!("could not read from the hub: {e}")),
            }
            let now = Instant::now();
            if now.duration_since(last_heard) >= self.tuning.silence_timeout {
                return End::Lost(format!(
                    "hub silent for {}",
                    humantime::format_duration(self.tuning.silence_timeout)
                ));
            }
            if now.duration_since(last_ping) >= self.tuning.ping_interval {
                last_ping = now;
                if let Err(e) = ws.send(Message::Ping(tungstenite::Bytes::new()))
                    && !is_transient(&e)
                {
                    return End::Lost(format!("could not ping the hub: {e}"));
                }
            }
        }
    }

    /// Writes the backlog, then whatever producers queued, up to one batch.
    ///
    /// # Errors
    /// A reason when the socket failed; unsent items are back in the backlog.
    fn send_pending(&mut self, ws: &mut Socket, server_id: &str) -> Result<(), String> {
        let mut written = 0;
        while written < SEND_BATCH {
            let item = match self.backlog.pop() {
                Some(item) => item,
                None => match self.rx.try_recv() {
                    Ok(item) => item,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            let Some(text) = wire::encode_bounded(&item, server_id, self.tuning.max_frame) else {
                log::warn!(
                    "dropping a message larger than the hub accepts ({} bytes)",
                    self.tuning.max_frame
                );
                continue;
            };
            if text.is_empty() {
                continue;
            }
            if let Err(e) = ws.write(Message::text(text)) {
                self.backlog.unpop(item);
                self.requeue_unflushed();
                return Err(format!("could not send to the hub: {e}"));
            }
            self.unflushed.push(item);
            written += 1;
        }
        if written > 0 {
            if let Err(e) = ws.flush() {
                self.requeue_unflushed();
                return Err(format!("could not send to the hub: {e}"));
            }
            self.unflushed.clear();
        }
        Ok(())
    }

    fn requeue_unflushed(&mut self) {
        while let Some(item) = self.unflushed.pop() {
            self.backlog.unpop(item);
        }
    }

    /// After `auth_success`: `hello`, then (with Docker) the engine state and
    /// the whole container table. Docker messages queued for the previous
    /// connection are dropped first: the table supersedes them.
    fn announce(&mut self, ws: &mut Socket) -> Result<(), tungstenite::Error> {
        while let Ok(item) = self.rx.try_recv() {
            self.backlog.push(item);
        }
        ws.write(Message::text(self.hello.clone()))?;
        if let Some(d) = &self.docker {
            for text in d.on_connected() {
                ws.write(Message::text(text))?;
            }
        }
        ws.flush()
    }

    /// Handles one text frame from the hub.
    fn handle(&mut self, text: &str) {
        match wire::decode(text) {
            Err(reason) => log::warn!("ignoring a bad message from the hub: {reason}"),
            Ok(Incoming::AuthSuccess { .. }) => log::debug!("ignoring a repeated auth_success"),
            Ok(Incoming::Error { message }) => log::warn!("hub reported an error: {message}"),
            Ok(Incoming::Command {
                command_id,
                command,
            }) => self.start_command(command_id, command),
            Ok(Incoming::DockerCommand {
                command_id,
                action,
                container_id,
            }) => self.start_docker(command_id, action, container_id),
            Ok(Incoming::SubscribeLogs { container_id, tail }) => match &self.docker {
                Some(d) if super::docker::valid_container_ref(&container_id) => {
                    d.subscribe_logs(&container_id, tail);
                }
                Some(_) => log::warn!("ignoring subscribe_logs for an invalid container id"),
                None => log::debug!("ignoring subscribe_logs: this agent has no Docker"),
            },
            Ok(Incoming::UnsubscribeLogs { container_id }) => {
                if let Some(d) = &self.docker {
                    d.unsubscribe_logs(&container_id);
                }
            }
            Ok(Incoming::SampleStats { interval_ms }) => {
                if let Some(d) = &self.docker {
                    // At least 1 s between rounds, whatever the hub asks.
                    let every = interval_ms.map(|ms| Duration::from_millis(ms.max(1000)));
                    d.sample_stats(every);
                }
            }
            Ok(Incoming::Malformed { kind, reason }) => {
                log::warn!("ignoring a {kind} message from the hub: {reason}");
            }
            Ok(Incoming::Unknown { kind }) => {
                log::debug!("ignoring a hub message of unknown type {kind:?}");
            }
        }
    }

    fn start_command(&mut self, command_id: serde_json::Value, command: Option<String>) {
        let answer_now = |output: String| {
            Outgoing::Command(CommandResponse {
                command_id: command_id.clone(),
                output,
                exit_code: -1,
                duration_ms: 0,
            })
        };
        let Some(command) = command else {
            self.backlog
                .push(answer_now("command refused: no command string".to_owned()));
            return;
        };
        let Some(argv) = self
            .tasks
            .allowlist
            .lookup(&command)
            .map(<[String]>::to_vec)
        else {
            log::warn!(
                "refused command {:?} (id {command_id}): not allowed",
                shorten(&command)
            );
            let refusal = runner::refused(&self.tasks.allowlist);
            self.backlog.push(answer_now(refusal.output));
            return;
        };
        let Some(slot) = TaskSlot::acquire(&self.tasks) else {
            self.backlog.push(answer_now(format!(
                "command refused: agent busy ({} tasks already running)",
                self.tasks.max_tasks
            )));
            return;
        };
        log::info!("running command {:?} (id {command_id})", shorten(&command));
        let tx = self.tx.clone();
        let shutdown = Arc::clone(&self.shutdown);
        let limits = self.tasks.limits;
        let id = command_id.clone();
        let spawned = thread::Builder::new()
            .name("agent-command".into())
            .spawn(move || {
                let _slot = slot;
                let outcome = runner::run_argv(&argv, limits, &shutdown);
                log::info!(
                    "command (id {id}) finished: exit code {} in {} ms",
                    outcome.exit_code,
                    outcome.duration.as_millis()
                );
                let response = Outgoing::Command(CommandResponse {
                    command_id: id,
                    output: outcome.output,
                    exit_code: outcome.exit_code,
                    duration_ms: u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
                });
                send_from_task(&tx, &shutdown, response);
            });
        if let Err(e) = spawned {
            self.backlog
                .push(answer_now(format!("could not start a command thread: {e}")));
        }
    }

    fn start_docker(
        &mut self,
        command_id: serde_json::Value,
        action: Option<String>,
        container_id: Option<String>,
    ) {
        let answer_now = |message: String| {
            Outgoing::Docker(DockerResponse {
                command_id: command_id.clone(),
                success: false,
                message,
            })
        };
        let Some(slot) = TaskSlot::acquire(&self.tasks) else {
            self.backlog.push(answer_now(format!(
                "agent busy ({} tasks already running)",
                self.tasks.max_tasks
            )));
            return;
        };
        log::info!(
            "docker {} {} (id {command_id})",
            action.as_deref().unwrap_or("?"),
            container_id.as_deref().map(shorten).unwrap_or("?")
        );
        let tx = self.tx.clone();
        let shutdown = Arc::clone(&self.shutdown);
        let host = self.tasks.docker_host.clone();
        let id = command_id.clone();
        let spawned = thread::Builder::new()
            .name("agent-docker".into())
            .spawn(move || {
                let _slot = slot;
                let (success, message) =
                    docker_action(host.as_deref(), action.as_deref(), container_id.as_deref());
                let response = Outgoing::Docker(DockerResponse {
                    command_id: id,
                    success,
                    message,
                });
                send_from_task(&tx, &shutdown, response);
            });
        if let Err(e) = spawned {
            self.backlog
                .push(answer_now(format!("could not start a docker thread: {e}")));
        }
    }
}

/// One of the `max_tasks` slots; released on drop.
struct TaskSlot(Arc<AtomicUsize>);

impl TaskSlot {
    fn acquire(tasks: &TaskContext) -> Option<Self> {
        let counter = &tasks.in_flight;
        let mut cur = counter.load(Ordering::Acquire);
        loop {
            if cur >= tasks.max_tasks {
                return None;
            }
            match counter.compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Self(Arc::clone(counter))),
                Err(actual) => cur = actual,
            }
        }
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Hands a task's answer to the session, waiting while the channel is full
/// (re-checking `shutdown`), so an answer is not lost to a brief burst.
fn send_from_task(tx: &Sender<Outgoing>, shutdown: &AtomicBool, mut item: Outgoing) {
    loop {
        match tx.send_timeout(item, Duration::from_millis(250)) {
            Ok(()) => return,
            Err(SendTimeoutError::Disconnected(_)) => return,
            Err(SendTimeoutError::Timeout(back)) => {
                if shutdown.load(Ordering::Relaxed) {
                    return;
                }
                item = back;
            }
        }
    }
}

/// Sends a close frame (1001) and waits briefly for the hub to finish the
/// close handshake.
fn close_gracefully(ws: &mut Socket) {
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "agent shutting down".into(),
    };
    if ws.close(Some(frame)).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => {}
            Err(e) if is_transient(&e) => {}
            Err(_) => return,
        }
    }
}

/// A read timeout, or a signal (SIGTERM arriving mid-read gives EINTR even
/// with SA_RESTART, because the socket has a timeout): try again.
fn is_transient(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(
        io.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ))
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => format!(" ({})", u16::from(f.code)),
        Some(f) => format!(" ({} {})", u16::from(f.code), shorten(f.reason.as_str())),
        None => String::new(),
    }
}

/// At most `MAX_LOGGED_COMMAND` bytes of `s`, cut at a char boundary.
fn shorten(s: &str) -> &str {
    if s.len() <= MAX_LOGGED_COMMAND {
        return s;
    }
    let mut end = MAX_LOGGED_COMMAND;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
