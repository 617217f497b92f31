//! The event loop: one mio `Poll` owns the listener, the waker and every
//! client socket (connections live in a slab keyed by token).
//!
//! Each iteration: poll; accept; read and dispatch what arrived; drain the
//! feed channel when woken; run the timer sweep when due; then flush every
//! socket that got frames this iteration (one gather write of many shared
//! frames per socket). No async runtime runs here.
//!
//! The loop owns sockets and their life; it hands requests to the HTTP
//! router and WebSocket messages to the hub as [`Input`]s, and applies what
//! the hub asks through [`LoopOutbox`]. Bytes come and go through a
//! [`Transport`].
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
pub mod outbox;
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
use crate::http::router::{self, HttpApp, Route, RouterConfig};
use crate::http::{self, Parse};
use crate::hub::{Hub, Input};
use crate::stats::{Endpoint, Stats};
use crate::transport::tcp::TcpTransport;
use crate::transport::{SocketResult, Transport};
use crate::writer::{Offer, OutQueue, Priority};
use crate::ws::{self, Incoming, MessageReader, OpCode, close_code};
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
/// Feed events handled per iteration.
const MAX_FEED_EVENTS: usize = 4096;
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

/// The plain endpoints' bodies, from the loop's view of the daemon.
struct AppView<'a> {
    hub: &'a Hub,
    stats: &'a Stats,
    connections: usize,
}

impl HttpApp for AppView<'_> {
    fn healthz(&self) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "docker": if self.hub.state().docker_up { "up" } else { "down" },
            "connections": self.connections,
        })
    }
    fn metrics(&self) -> String {
        self.stats.render()
    }
    fn containers(&self) -> Vec<u8> {
        self.hub.state().containers_json()
    }
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
            accept_pending: false,
            feed_pending: false,
            next_serial: 1,
            ping_frame: ws::ping_frame(b""),
        }
    }

    /// Gives one input to the hub and applies what it asks.
    fn hub_input(&mut self, now: Instant, input: Input<'_>) {
        let mut out = LoopOutbox {
            conns: &mut self.conns,
            dirty: &mut self.dirty,
            now,
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
                self.on_readable(key, started);
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(started),
                    WAKER => self.drain_feed(started),
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
            if started >= next_tick {
                self.tick(started);
                next_tick = started + TICK;
            }
            if self.shutdown.load(Ordering::Relaxed) && shutdown_deadline.is_none() {
                shutdown_deadline = Some(self.begin_shutdown(started));
            }
            self.flush_dirty(started);
            self.stats.loop_iteration(started.elapsed());
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
            let (mut stream, _addr) = match listener.accept() {
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
            let mut transport = Box::new(TcpTransport::new(stream));
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
            entry.insert(Conn::new(transport, self.next_serial, out, now, deadline));
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
            Phase::Head { .. } => max_head + 1,
            _ => max_msg + 16 + conn::READ_CHUNK,
        };
        let outcome = c.read_some(&mut self.scratch, MAX_READS_PER_EVENT, limit);
        if !c.inbuf.is_empty() {
            c.last_rx = now;
        }
        match c.phase {
            Phase::Head { .. } => self.on_head_bytes(key, now),
            Phase::Open => self.on_ws_bytes(key, now),
            Phase::Closing { .. } => {
                // Read and discard: we only wait for the peer's close or EOF.
                c.inbuf.clear();
                c.release_inbuf();
            }
        }
        match outcome {
            SocketResult::Continue => self.come_back(key),
            SocketResult::Closed | SocketResult::Error => {
                if let Some(c) = self.conns.get(key) {
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
    fn come_back(&mut self, key: usize) {
        if self.conns.contains(key) && !self.backlog.contains(&key) {
            self.backlog.push(key);
        }
    }

    /// Queues a plain HTTP reply and closes after it.
    fn reply_and_close(&mut self, key: usize, bytes: Vec<u8>, status: u16, now: Instant) {
        self.stats.http_request(status);
        if let Some(c) = self.conns.get_mut(key) {
            c.reply_and_close(bytes, now + LINGER);
            mark_dirty(&mut self.dirty, c, key);
        }
    }

    fn on_head_bytes(&mut self, key: usize, now: Instant) {
        for _ in 0..MAX_REQUESTS_PER_EVENT {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if !matches!(c.phase, Phase::Head { .. }) {
                return;
            }
            if c.over_soft_cap() {
                c.read_paused = true;
                return;
            }
            if c.inbuf.is_empty() {
                c.release_inbuf();
                return;
            }
            if !self.on_one_head(key, now) {
                return;
            }
        }
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.come_back(key);
        }
    }

    /// Handles one request head if complete; true when the connection can
    /// take another request (keep-alive) right away.
    fn on_one_head(&mut self, key: usize, now: Instant) -> bool {
        let max_head = self.hub.config().max_head_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        let too_big = || http::error_response(431, "", "request head larger than 8 KiB");
        let head = match http::parse_head(&c.inbuf) {
            Parse::Partial if c.inbuf.len() > max_head => {
                self.reply_and_close(key, too_big(), 431, now);
                return false;
            }
            Parse::Partial => return false,
            Parse::Invalid(why) => {
                self.stats.bad_input("bad_http");
                self.reply_and_close(key, http::error_response(400, "", why), 400, now);
                return false;
            }
            Parse::Complete(h) if h.head_len > max_head => {
                self.reply_and_close(key, too_big(), 431, now);
                return false;
            }
            Parse::Complete(h) => h,
        };
        let _ = c.inbuf.split_to(head.head_len);
        let route = {
            let app = AppView {
                hub: &self.hub,
                stats: &self.stats,
                connections: self.conns.len(),
            };
            let rc = RouterConfig {
                config: self.hub.config(),
                jwt: self.hub.state().jwt.as_ref(),
                now_unix: crate::hub::unix_now(),
            };
            router::route(&head, &rc, &app)
        };
        match route {
            Route::Reply {
                status,
                bytes,
                keep_alive,
                refusal,
            } => {
                match refusal {
                    Some(why @ ("origin" | "no_token" | "bad_token")) => {
                        self.stats.auth_failure(why)
                    }
                    Some("host") => self.stats.bad_input("bad_host"),
                    Some("bad_upgrade") => self.stats.bad_input("bad_upgrade"),
                    _ => {}
                }
                if !keep_alive {
                    self.reply_and_close(key, bytes, status, now);
                    return false;
                }
                self.stats.http_request(status);
                let deadline = now + self.hub.config().handshake_timeout;
                let Some(c) = self.conns.get_mut(key) else {
                    return false;
                };
                c.out.push(ws::Frame::from(bytes));
                c.phase = Phase::Head { deadline };
                mark_dirty(&mut self.dirty, c, key);
                true
            }
            Route::Upgrade {
                endpoint,
                target,
                accept,
            } => {
                self.upgrade(key, endpoint, target, &accept, now);
                false
            }
        }
    }

    /// Completes the WebSocket handshake and hands the socket to the hub.
    fn upgrade(
        &mut self,
        key: usize,
        endpoint: Endpoint,
        target: Option<String>,
        accept: &str,
        now: Instant,
    ) {
        let max_msg = self.hub.config().max_message_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.out
            .push(ws::Frame::from(http::switching_protocols(accept)));
        c.phase = Phase::Open;
        c.endpoint = endpoint;
        c.reader = Some(MessageReader::new(max_msg));
        c.last_ping = now;
        c.in_hub = endpoint != Endpoint::Echo;
        let serial = c.serial;
        mark_dirty(&mut self.dirty, c, key);
        self.stats.conn_moved(Endpoint::Http, endpoint);
        if endpoint != Endpoint::Echo {
            self.hub_input(
                now,
                Input::Opened {
                    conn: key,
                    serial,
                    endpoint,
                    target,
                },
            );
        }
        // Frames pipelined after the head are already in the buffer.
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_ws_bytes(key, now);
        }
    }

    fn on_ws_bytes(&mut self, key: usize, now: Instant) {
        for _ in 0..MAX_MESSAGES_PER_EVENT {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if !matches!(c.phase, Phase::Open) {
                c.inbuf.clear();
                c.release_inbuf();
                return;
            }
            if c.over_soft_cap() {
                // Backpressure: the rest waits in `inbuf` until the queue drains.
                c.read_paused = true;
                return;
            }
            let Some(reader) = c.reader.as_mut() else {
                return;
            };
            let msg = match reader.read(&mut c.inbuf) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    c.release_inbuf();
                    return;
                }
                Err(e) => {
                    self.stats.bad_input("ws_protocol");
                    let reason = e.to_string();
                    self.close_conn(key, e.close_code(), &reason, false, now);
                    return;
                }
            };
            self.on_message(key, msg, now);
        }
        // More complete messages may be waiting with no new bytes to come.
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.come_back(key);
        }
    }

    fn on_message(&mut self, key: usize, msg: Incoming, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let endpoint = c.endpoint;
        let reply = match msg {
            Incoming::Ping(p) => ws::pong_frame(&p),
            Incoming::Pong(_) => return,
            Incoming::Close(code) => {
                // Echo the code (RFC 6455 5.5.1), then close once flushed.
                let code = code.map_or(close_code::NORMAL, |(c, _)| c);
                c.answer_close(code, now + LINGER);
                mark_dirty(&mut self.dirty, c, key);
                self.leave_hub(key, now);
                return;
            }
            Incoming::Binary(b) if endpoint == Endpoint::Echo => {
                ws::encode_frame(OpCode::Binary, &b)
            }
            Incoming::Text(t) if endpoint == Endpoint::Echo => ws::text_frame(t.as_bytes()),
            Incoming::Binary(_) => return self.hub_input(now, Input::Binary { conn: key }),
            Incoming::Text(t) => {
                return self.hub_input(
                    now,
                    Input::Text {
                        conn: key,
                        text: &t,
                    },
                );
            }
        };
        self.queue_own(key, reply, now);
    }

    /// Queues a frame the loop itself answers with (pong, echo) under the caps.
    fn queue_own(&mut self, key: usize, frame: ws::Frame, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        match c.out.offer(frame, Priority::Essential) {
            Offer::Queued => mark_dirty(&mut self.dirty, c, key),
            Offer::Dropped | Offer::OverHardCap => {
                self.stats.slow_consumers_closed += 1;
                self.close_conn(
                    key,
                    close_code::TRY_AGAIN_LATER,
                    "slow consumer: send queue full",
                    true,
                    now,
                );
            }
        }
    }

    /// Tells the hub a connection it holds is going (once).
    fn leave_hub(&mut self, key: usize, now: Instant) {
        if let Some(c) = self.conns.get_mut(key)
            && std::mem::take(&mut c.in_hub)
        {
            self.hub_input(now, Input::Closed { conn: key });
        }
    }

    /// Starts a close the loop initiates (protocol error, idle, shutdown).
    fn close_conn(&mut self, key: usize, code: u16, reason: &str, discard: bool, now: Instant) {
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
        let (written, result) = c.out.flush(&mut *c.transport);
        self.stats.bytes_sent += written as u64;
        match result {
            SocketResult::Closed | SocketResult::Error => return self.remove(key),
            SocketResult::WouldBlock | SocketResult::Continue => {}
        }
        let empty = c.out.is_empty();
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
        self.backlog.retain(|k| *k != key);
        // This key may still be in `dirty`; the slab lookup ignores it.
    }

    fn drain_feed(&mut self, now: Instant) {
        for _ in 0..MAX_FEED_EVENTS {
            let Ok(ev) = self.feed.try_recv() else { return };
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
                Phase::Head { deadline } if now >= deadline => to_close.push((key, true)),
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
                Some(Phase::Head { .. }) => self.remove(key),
                _ => {}
            }
        }
        now + SHUTDOWN_GRACE
    }
}
