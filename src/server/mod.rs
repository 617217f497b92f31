//! The event loop: one mio `Poll` owns the listener, the waker and every
//! client socket (connections live in a slab keyed by token).
//!
//! Each iteration: poll; accept; read and dispatch what arrived; drain the
//! feed channel when woken; run the timer sweep when due; then flush every
//! socket that got frames this iteration (one gather write of many shared
//! frames per socket). No async runtime runs here.
//!
//! The loop owns sockets and their life; it hands requests to the HTTP
//! router (`requests.rs`) and WebSocket messages to the hub as [`Input`]s
//! (`messages.rs`), and applies what the hub asks through [`LoopOutbox`]
//! (`outbox.rs`). Bytes come and go through a [`Transport`].
//!
//! Invariants: fixed tokens are [`LISTENER`] and [`WAKER`]; a connection's
//! token is its slab key + [`FIRST_CONN`]; a socket is deregistered before
//! it leaves the slab; unknown tokens are ignored. Every drain (accepts,
//! reads, messages, feed events) is capped so one busy source cannot starve
//! the others, and every capped drain comes back on the next iteration
//! without waiting for a new readiness event (edge-triggered events do not
//! repeat). A socket whose queue is over its soft cap is not read until it
//! drains to half of it (backpressure), so a peer cannot make the daemon
//! queue without bound, pongs included.

pub mod conn;
mod logins;
mod messages;
pub mod outbox;
pub mod reload;
mod requests;
pub mod system;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::feed::FeedEvent;
use crate::http;
use crate::hub::{Hub, Input, WarnBudget};
use crate::stats::{Endpoint, Stats};
use crate::transport::tcp::TcpTransport;
use crate::transport::tls::TlsTransport;
use crate::transport::{SocketResult, Transport};
use crate::writer::OutQueue;
use crate::ws::{self, close_code};
use conn::{Conn, Phase};
use outbox::{LoopOutbox, mark_dirty};

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Reads per readable event before yielding to other sockets.
const MAX_READS_PER_EVENT: usize = 8;
/// Accepts per iteration before yielding.
const MAX_ACCEPTS_PER_EVENT: usize = 256;
/// Messages handled per socket per iteration.
const MAX_MESSAGES_PER_EVENT: usize = 256;
/// Pipelined HTTP requests answered per socket per iteration.
const MAX_REQUESTS_PER_EVENT: usize = 16;
/// Largest HTTP request body (`Content-Length`); 413 past it.
const MAX_BODY: usize = 8 << 10;
/// Feed events handled per iteration.
const MAX_FEED_EVENTS: usize = 4096;
/// An iteration this long is logged (rate-limited): every socket waited.
const STALL_WARN: Duration = Duration::from_millis(250);
/// How often timers (deadlines, pings, commands, alerts) are checked.
const TICK: Duration = Duration::from_millis(250);
/// How long a closing socket may linger for the peer's close/EOF.
const LINGER: Duration = Duration::from_secs(2);
/// The same for a slow consumer closed with 1013: its close frame waits
/// behind what the kernel already holds, so give the peer time to read it.
/// It costs a socket and one frame, nothing more.
const SLOW_CONSUMER_LINGER: Duration = Duration::from_secs(15);

/// When a socket closed now stops waiting for its peer.
fn linger_until(now: Instant, slow_consumer: bool) -> Instant {
    now + if slow_consumer {
        SLOW_CONSUMER_LINGER
    } else {
        LINGER
    }
}
/// After SIGTERM, how long to wait for clients to take their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Errors that stop the daemon before it serves.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not bind {0}: {1}")]
    Bind(std::net::SocketAddr, io::Error),
    #[error("could not set up the event loop: {0}")]
    Poll(io::Error),
}

/// Accept queue length: connection storms of thousands must not drop SYNs
/// (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// Binds a non-blocking listener with SO_REUSEADDR and a deep backlog.
fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn conn_token(key: usize) -> Token {
    Token(key + FIRST_CONN)
}

/// The daemon's event loop and everything it owns.
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    hub: Hub,
    stats: Stats,
    feed: Receiver<FeedEvent>,
    shutdown: Arc<AtomicBool>,
    scratch: Vec<u8>,
    dirty: Vec<usize>,
    /// Sockets with input left after their per-iteration share: serviced
    /// again next iteration without waiting for a readiness event.
    backlog: Vec<usize>,
    /// The listener stopped at its per-iteration cap: accept again.
    accept_pending: bool,
    /// The feed channel still holds events after this iteration's share.
    feed_pending: bool,
    next_serial: u64,
    ping_frame: ws::Frame,
    /// Logins: the password-checking worker (when `[[users]]` are set),
    /// the failure limiter, and the rate-limited Origin refusal log.
    logins: logins::Logins,
    /// permessage-deflate: one compressor and one inflater for every socket
    /// (no context takeover either way, so no socket keeps a window).
    pub(super) deflater: ws::deflate::Deflater,
    pub(super) inflater: ws::deflate::Inflater,
    /// `[tls]`: accepted sockets speak TLS with these settings.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// SIGHUP's flag and the config loader (`reload.rs`); `None`: no reloads.
    reload: Option<reload::ReloadSource>,
    /// One warning per 10 s when an iteration runs past [`STALL_WARN`].
    stall_warnings: WarnBudget,
}

impl Server {
    /// Binds the listener and creates the poll and the waker.
    ///
    /// # Errors
    /// Bind and poll failures (fatal).
    pub fn bind(config: &Config) -> Result<(Poll, TcpListener, Arc<Waker>), ServerError> {
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(ServerError::Poll)?);
        let mut listener =
            listen(config.listen).map_err(|e| ServerError::Bind(config.listen, e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServerError::Poll)?;
        Ok((poll, listener, waker))
    }

    pub fn new(
        poll: Poll,
        listener: TcpListener,
        hub: Hub,
        feed: Receiver<FeedEvent>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Server {
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            hub,
            stats: Stats::default(),
            feed,
            shutdown,
            scratch: vec![0; conn::READ_CHUNK],
            dirty: Vec::new(),
            backlog: Vec::new(),
            stall_warnings: WarnBudget::default(),
            accept_pending: false,
            feed_pending: false,
            next_serial: 1,
            ping_frame: ws::ping_frame(b""),
            logins: logins::Logins::default(),
            deflater: ws::deflate::Deflater::default(),
            inflater: ws::deflate::Inflater::default(),
            tls: None,
            reload: None,
        }
    }

    /// Serves TLS with `config` on connections accepted from now on
    /// (`None`: plain TCP). Open connections keep what they started with.
    pub fn set_tls(&mut self, config: Option<Arc<rustls::ServerConfig>>) {
        self.tls = config;
    }

    /// Whether the port speaks TLS (session cookies are then `Secure`).
    pub(super) fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reloads the config (`source.load`) whenever `source.requested` is set
    /// (SIGHUP); the flag's setter wakes the loop.
    pub fn enable_reload(&mut self, source: reload::ReloadSource) {
        self.reload = Some(source);
    }

    /// Gives one input to the hub and applies what it asks.
    pub(super) fn hub_input(&mut self, now: Instant, input: Input<'_>) {
        let mut out = LoopOutbox {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            now,
            deflate: &mut self.deflater,
        };
        self.hub.handle(&mut out, &mut self.stats, now, input);
    }

    /// Runs until SIGTERM/SIGINT, then closes every client with 1001.
    ///
    /// # Errors
    /// Only a failing `poll` (fatal).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wake_at = self
                .hub
                .next_deadline()
                .map_or(next_tick, |d| d.min(next_tick));
            let more_now = !self.backlog.is_empty() || self.feed_pending || self.accept_pending;
            let timeout = if more_now {
                Duration::ZERO
            } else {
                wake_at.saturating_duration_since(now)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let started = Instant::now();
            if std::mem::take(&mut self.feed_pending) {
                self.drain_feed(started);
            }
            if std::mem::take(&mut self.accept_pending) {
                self.accept(started);
            }
            for key in std::mem::take(&mut self.backlog) {
                if let Some(c) = self.conns.get_mut(key) {
                    c.in_backlog = false;
                    self.on_readable(key, started);
                }
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(started),
                    WAKER => {
                        self.drain_feed(started);
                        self.drain_logins(started);
                    }
                    Token(t) if t >= FIRST_CONN => {
                        let key = t - FIRST_CONN;
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key, started);
                        }
                    }
                    _ => {}
                }
            }
            self.hub_input(started, Input::Timers);
            if shutdown_deadline.is_none() {
                self.reload_if_asked(started);
            }
            if started >= next_tick {
                self.tick(started);
                next_tick = started + TICK;
            }
            if self.shutdown.load(Ordering::Relaxed) && shutdown_deadline.is_none() {
                shutdown_deadline = Some(self.begin_shutdown(started));
            }
            self.flush_dirty(started);
            let took = started.elapsed();
            self.stats.loop_iteration(took);
            if took >= STALL_WARN
                && let Some(suppressed) = self.stall_warnings.allow(started)
            {
                log::warn!(
                    "event loop: one iteration took {} ms ({} readiness events, {} connections{}); \
                     every socket waited that long (CPU starved, or a bug: please report)",
                    took.as_millis(),
                    events.iter().count(),
                    self.conns.len(),
                    if suppressed > 0 {
                        format!("; {suppressed} more such iterations in the last 10 s")
                    } else {
                        String::new()
                    }
                );
            }
            if let Some(d) = shutdown_deadline
                && (self.conns.is_empty() || Instant::now() >= d)
            {
                log::info!("shutdown complete ({} connections left)", self.conns.len());
                return Ok(());
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_EVENT {
            let Some(listener) = &self.listener else {
                return;
            };
            let (mut stream, addr) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log once per burst and yield.
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            self.stats.connections_accepted += 1;
            if self.conns.len() >= self.hub.config().max_connections {
                self.stats.connections_refused_limit += 1;
                let reply = http::error_response(503, "Retry-After: 5\r\n", "too many connections");
                let _ = io::Write::write(&mut stream, &reply);
                continue;
            }
            let mut transport: Box<dyn Transport> = match &self.tls {
                None => Box::new(TcpTransport::new(stream)),
                Some(config) => match TlsTransport::new(stream, config.clone()) {
                    Ok(t) => Box::new(t),
                    Err(e) => {
                        log::warn!("could not start a TLS session: {e}");
                        continue;
                    }
                },
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                transport.source(),
                conn_token(key),
                Interest::READABLE,
            ) {
                log::warn!("could not register a connection: {e}");
                continue;
            }
            let soft = self.hub.config().max_queued_bytes;
            let out = OutQueue::new(soft, soft.saturating_mul(2).max(soft + (1 << 20)));
            let deadline = now + self.hub.config().handshake_timeout;
            let mut conn = Conn::new(transport, self.next_serial, out, now, deadline);
            conn.peer = addr.ip();
            entry.insert(conn);
            self.next_serial += 1;
            self.stats.conn_opened(Endpoint::Http);
            // Bytes may already be waiting (edge-triggered): read now.
            self.on_readable(key, now);
        }
        // Stopped at the cap with connections possibly still queued in the
        // kernel: the listener's edge will not fire again for them.
        self.accept_pending = true;
    }

    fn on_readable(&mut self, key: usize, now: Instant) {
        let max_msg = self.hub.config().max_message_bytes;
        let max_head = self.hub.config().max_head_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.is_closing() && c.over_soft_cap() {
            // Backpressure: the peer waits until its queue drains.
            c.read_paused = true;
            return;
        }
        let limit = match c.phase {
            Phase::Head { .. } | Phase::Waiting { .. } => max_head + MAX_BODY + 1,
            _ => max_msg + 16 + conn::READ_CHUNK,
        };
        let outcome = c.read_some(&mut self.scratch, MAX_READS_PER_EVENT, limit);
        if !c.inbuf.is_empty() {
            c.last_rx = now;
        }
        if c.transport.has_pending_output() {
            // TLS handshake records (or queued plaintext it unblocked) go out.
            mark_dirty(&mut self.dirty, c, key);
        }
        match c.phase {
            Phase::Head { .. } => self.on_head_bytes(key, now),
            Phase::Open => self.on_ws_bytes(key, now),
            Phase::Closing { .. } | Phase::Waiting { .. } => {
                // Read and discard: we only wait for the peer's close or EOF.
                c.inbuf.clear();
                c.release_inbuf();
            }
        }
        match outcome {
            SocketResult::Continue => self.come_back(key),
            SocketResult::Closed | SocketResult::Error => {
                if let Some(c) = self.conns.get(key) {
                    if matches!(c.phase, Phase::Open) && !c.inbuf.is_empty() {
                        // Messages it sent before its EOF are still handled
                        // (the backlog brings it back); then it goes.
                        return self.come_back(key);
                    }
                    // A peer that half-closed may still take what we queued.
                    if c.out.is_empty() || !c.is_closing() {
                        self.remove(key);
                    }
                }
            }
            SocketResult::WouldBlock => {}
        }
    }

    /// Services `key` again next iteration (it stopped at a cap).
    pub(super) fn come_back(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key)
            && !std::mem::replace(&mut c.in_backlog, true)
        {
            self.backlog.push(key);
        }
    }

    /// Tells the hub a connection it holds is going (once).
    pub(super) fn leave_hub(&mut self, key: usize, now: Instant) {
        if let Some(c) = self.conns.get_mut(key)
            && std::mem::take(&mut c.in_hub)
        {
            self.hub_input(now, Input::Closed { conn: key });
        }
    }

    /// Starts a close the loop initiates (protocol error, idle, shutdown).
    pub(super) fn close_conn(
        &mut self,
        key: usize,
        code: u16,
        reason: &str,
        discard: bool,
        now: Instant,
    ) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.begin_close(code, reason, discard, linger_until(now, discard));
        mark_dirty(&mut self.dirty, c, key);
        self.leave_hub(key, now);
    }

    fn on_writable(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            mark_dirty(&mut self.dirty, c, key);
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        // Flushing may queue more (log_dropped); loop over a snapshot.
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 2 {
            rounds += 1;
            for key in std::mem::take(&mut self.dirty) {
                self.flush(key, now);
            }
        }
    }

    fn flush(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let (written, mut result) = c.out.flush(&mut *c.transport);
        self.stats.bytes_sent += written as u64;
        if c.out.is_empty() && c.transport.has_pending_output() {
            // The queue is through; records the transport holds must be too.
            if let Err(e) = io::Write::flush(&mut *c.transport) {
                result = crate::transport::classify_io_error(&e);
            }
        }
        match result {
            SocketResult::Closed | SocketResult::Error => return self.remove(key),
            SocketResult::WouldBlock | SocketResult::Continue => {}
        }
        let empty = c.out.is_empty() && !c.transport.has_pending_output();
        if empty == c.want_write {
            let interest = if empty {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            if self
                .poll
                .registry()
                .reregister(c.transport.source(), conn_token(key), interest)
                .is_err()
            {
                return self.remove(key);
            }
            c.want_write = !empty;
        }
        if !empty && result == SocketResult::Continue {
            // Hit the per-call syscall cap with more to write: continue next iteration.
            mark_dirty(&mut self.dirty, c, key);
            return;
        }
        if empty
            && let Phase::Closing {
                drop_after_flush, ..
            } = c.phase
        {
            if drop_after_flush || c.eof {
                return self.remove(key);
            }
            c.transport.shutdown_write();
            return;
        }
        let drained = c.out.queued_bytes() <= crate::hub::drained_below(c.out.soft_cap());
        if drained && std::mem::take(&mut c.read_paused) {
            // Backpressure released: what waits in the kernel or `inbuf` is read now.
            self.come_back(key);
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if drained && c.in_hub && std::mem::take(&mut c.lossy) {
            self.hub_input(now, Input::Drained { conn: key });
        }
    }

    fn remove(&mut self, key: usize) {
        self.leave_hub(key, Instant::now());
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(c.transport.source());
        self.stats.conn_closed(c.endpoint);
        // This key may still be in `dirty` or `backlog`; the slab lookup
        // ignores it, or a new connection with the key gets one spare read.
    }

    fn drain_feed(&mut self, now: Instant) {
        for _ in 0..MAX_FEED_EVENTS {
            let Ok(ev) = self.feed.try_recv() else { return };
            // Another hub's answer for a waiting HTTP request: the
            // connection's, not the hub's.
            if let crate::feed::FeedEvent::Cluster(crate::cluster::ClusterEvent::HistoryAnswer {
                conn,
                serial,
                status,
                body,
            }) = ev
            {
                self.finish_remote_metrics(conn, serial, status, &body, now);
                continue;
            }
            self.hub_input(now, Input::Feed(ev));
        }
        // More queued than one iteration's share: come back without waiting
        // (the waker is edge-triggered and will not fire again for these).
        self.feed_pending = !self.feed.is_empty();
    }

    fn tick(&mut self, now: Instant) {
        let ping_every = self.hub.config().ping_interval;
        let idle = self.hub.config().idle_timeout;
        let mut to_remove = Vec::new();
        let mut to_close = Vec::new();
        let mut to_ping = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            match c.phase {
                // An idle keep-alive connection just ends; a half-sent head gets 408.
                Phase::Head { deadline }
                    if now >= deadline && c.requests_served > 0 && c.inbuf.is_empty() =>
                {
                    to_remove.push(key)
                }
                Phase::Head { deadline } | Phase::Waiting { deadline } if now >= deadline => {
                    to_close.push((key, true))
                }
                Phase::Closing { deadline, .. } if now >= deadline => to_remove.push(key),
                Phase::Open => {
                    if now.duration_since(c.last_rx) >= idle {
                        to_close.push((key, false));
                    } else if now.duration_since(c.last_ping) >= ping_every {
                        c.last_ping = now;
                        to_ping.push(key);
                    }
                }
                _ => {}
            }
        }
        for key in to_remove {
            self.remove(key);
        }
        for (key, is_head) in to_close {
            if is_head {
                let r = http::error_response(408, "", "handshake not completed in time");
                self.reply_and_close(key, r, 408, now);
            } else {
                self.close_conn(key, close_code::GOING_AWAY, "idle timeout", false, now);
            }
        }
        for key in to_ping {
            let ping = self.ping_frame.clone();
            self.queue_own(key, ping, now);
        }
        // Accepts that failed (EMFILE) are retried once a tick.
        self.accept(now);
        self.hub_input(
            now,
            Input::Tick {
                unix_now: crate::hub::unix_now(),
            },
        );
    }

    /// Stops accepting and sends 1001 to every WebSocket; HTTP sockets are dropped.
    fn begin_shutdown(&mut self, now: Instant) -> Instant {
        log::info!("shutting down: closing {} connections", self.conns.len());
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_pending = false;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key).map(|c| &c.phase) {
                Some(Phase::Open) => self.close_conn(
                    key,
                    close_code::GOING_AWAY,
                    "server shutting down",
                    false,
                    now,
                ),
                Some(Phase::Head { .. } | Phase::Waiting { .. }) => self.remove(key),
                _ => {}
            }
        }
        now + SHUTDOWN_GRACE
    }
}
