//! The event loop: one mio `Poll` owns the listener, the waker and every
//! client socket (connections live in a slab keyed by token).
//!
//! Each iteration: poll; accept; read and dispatch what arrived; drain the
//! feed channel when woken; run the timer sweep when due; then flush every
//! socket that got frames this iteration (one `writev` of many shared frames
//! per socket). No async runtime runs here.
//!
//! Invariants: fixed tokens are [`LISTENER`] and [`WAKER`]; a connection's
//! token is its slab key + [`FIRST_CONN`]; a socket is deregistered before
//! it leaves the slab; unknown tokens are ignored. Every drain loop is capped
//! so one busy socket cannot starve the others.

pub mod conn;
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
use crate::http::{self, Parse};
use crate::hub::{Hub, Io};
use crate::stats::{Endpoint, Stats};
use crate::writer::{OutQueue, SocketResult};
use crate::ws::{self, Incoming, MessageReader, OpCode, close_code};
use conn::{Conn, Phase, ReadOutcome};

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Reads per readable event before yielding to other sockets.
const MAX_READS_PER_EVENT: usize = 8;
/// Accepts per listener event before yielding.
const MAX_ACCEPTS_PER_EVENT: usize = 256;
/// Messages handled per socket per iteration.
const MAX_MESSAGES_PER_EVENT: usize = 256;
/// Feed events handled per iteration.
const MAX_FEED_EVENTS: usize = 4096;
/// How often timers (deadlines, pings, commands, alerts) are checked.
const TICK: Duration = Duration::from_millis(250);
/// How long a closing socket may linger for the peer's close/EOF.
const LINGER: Duration = Duration::from_secs(2);
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

/// Routes a request path to a WebSocket endpoint (and the server id in it).
fn route(path: &str, echo: bool) -> Option<(Endpoint, Option<String>)> {
    match path {
        "/api/v1/ws" => Some((Endpoint::Browser, None)),
        "/api/v1/agents/ws" => Some((Endpoint::Agent, None)),
        "/socket.io" | "/socket.io/" => Some((Endpoint::SocketIo, None)),
        "/debug/echo" if echo => Some((Endpoint::Echo, None)),
        _ => {
            if let Some(id) = path.strip_prefix("/api/v1/ws/metrics/") {
                return (!id.is_empty() && !id.contains('/'))
                    .then(|| (Endpoint::ServerMetrics, Some(id.to_string())));
            }
            if let Some(id) = path.strip_prefix("/api/v1/ws/logs/") {
                return (!id.is_empty() && !id.contains('/'))
                    .then(|| (Endpoint::ServerLogs, Some(id.to_string())));
            }
            None
        }
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
    closed: Vec<usize>,
    /// Sockets whose reads stopped at the per-event cap: serviced next iteration.
    backlog: Vec<usize>,
    /// The feed channel still holds events after this iteration's share.
    feed_pending: bool,
    next_serial: u64,
    ping_frame: ws::Frame,
}

impl Server {
    /// Binds the listener and creates the poll. `waker` must come from
    /// [`Server::make_waker`] on the same poll.
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
            closed: Vec::new(),
            backlog: Vec::new(),
            feed_pending: false,
            next_serial: 1,
            ping_frame: ws::ping_frame(b""),
        }
    }

    fn io(&mut self, now: Instant) -> (&mut Hub, Io<'_>) {
        (
            &mut self.hub,
            Io {
                conns: &mut self.conns,
                stats: &mut self.stats,
                dirty: &mut self.dirty,
                closed: &mut self.closed,
                now,
                linger: LINGER,
            },
        )
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
                .next_log_deadline()
                .map_or(next_tick, |d| d.min(next_tick));
            let timeout = if self.backlog.is_empty() && !self.feed_pending {
                wake_at.saturating_duration_since(now)
            } else {
                Duration::ZERO
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
            let backlog = std::mem::take(&mut self.backlog);
            for key in backlog {
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
            {
                let (hub, mut io) = self.io(started);
                hub.flush_held_logs(&mut io);
            }
            if started >= next_tick {
                self.tick(started);
                next_tick = started + TICK;
            }
            if self.shutdown.load(Ordering::Relaxed) && shutdown_deadline.is_none() {
                shutdown_deadline = Some(self.begin_shutdown(started));
            }
            self.flush_dirty(started);
            self.stats.loop_iteration(started.elapsed());
            if let Some(d) = shutdown_deadline {
                if self.conns.is_empty() || Instant::now() >= d {
                    log::info!("shutdown complete ({} connections left)", self.conns.len());
                    return Ok(());
                }
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
            if self.conns.len() >= self.hub.config.max_connections {
                self.stats.connections_refused_limit += 1;
                let reply = http::error_response(503, "Retry-After: 5\r\n", "too many connections");
                let _ = io::Write::write(&mut stream, &reply);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, conn_token(key), Interest::READABLE)
            {
                log::warn!("could not register a connection: {e}");
                continue;
            }
            let soft = self.hub.config.max_queued_bytes;
            let out = OutQueue::new(soft, soft.saturating_mul(2).max(soft + (1 << 20)));
            let deadline = now + self.hub.config.handshake_timeout;
            entry.insert(Conn::new(stream, self.next_serial, out, now, deadline));
            self.next_serial += 1;
            self.stats.conn_opened(Endpoint::Http);
            // Bytes may already be waiting (edge-triggered): read now.
            self.on_readable(key, now);
        }
    }

    fn on_readable(&mut self, key: usize, now: Instant) {
        let max_msg = self.hub.config.max_message_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let limit = match c.phase {
            Phase::Head { .. } => self.hub.config.max_head_bytes + 1,
            _ => max_msg + 16 + conn::READ_CHUNK,
        };
        let outcome = c.read_some(&mut self.scratch, MAX_READS_PER_EVENT, limit);
        if !c.inbuf.is_empty() {
            c.last_rx = now;
        }
        match c.phase {
            Phase::Head { .. } => self.on_head_bytes(key, now),
            Phase::Open => self.on_ws_bytes(key, now),
            Phase::Closing { .. } => self.on_closing_bytes(key),
        }
        match outcome {
            ReadOutcome::MoreLater => {
                if self.conns.contains(key) && !self.backlog.contains(&key) {
                    self.backlog.push(key);
                }
            }
            ReadOutcome::Closed => {
                if let Some(c) = self.conns.get(key) {
                    // A peer that half-closed may still take what we queued.
                    if c.out.is_empty() || !matches!(c.phase, Phase::Closing { .. }) {
                        self.remove(key);
                    }
                }
            }
            ReadOutcome::Drained => {}
        }
    }

    fn on_closing_bytes(&mut self, key: usize) {
        // Read and discard: we only wait for the peer's close or EOF.
        if let Some(c) = self.conns.get_mut(key) {
            c.inbuf.clear();
            c.release_inbuf();
        }
    }

    /// Queues a plain HTTP reply and closes after it.
    fn reply_and_close(&mut self, key: usize, bytes: Vec<u8>, status: u16, now: Instant) {
        self.stats.http_request(status);
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.inbuf.clear();
        c.out.push(ws::Frame::from(bytes));
        c.phase = Phase::Closing {
            deadline: now + LINGER,
            drop_after_flush: false,
        };
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    fn on_head_bytes(&mut self, key: usize, now: Instant) {
        let max_head = self.hub.config.max_head_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let head = match http::parse_head(&c.inbuf) {
            Parse::Partial if c.inbuf.len() > max_head => {
                let r = http::error_response(431, "", "request head larger than 8 KiB");
                return self.reply_and_close(key, r, 431, now);
            }
            Parse::Partial => return,
            Parse::Invalid(why) => {
                self.stats.bad_input("bad_http");
                let r = http::error_response(400, "", why);
                return self.reply_and_close(key, r, 400, now);
            }
            Parse::Complete(h) if h.head_len > max_head => {
                let r = http::error_response(431, "", "request head larger than 8 KiB");
                return self.reply_and_close(key, r, 431, now);
            }
            Parse::Complete(h) => h,
        };
        let _ = c.inbuf.split_to(head.head_len);
        let Some((endpoint, target)) = route(&head.path, self.hub.config.echo_endpoint) else {
            return self.plain_request(key, &head, now);
        };
        if endpoint == Endpoint::SocketIo {
            if let Err(why) = crate::protocol::socketio::check_query(&head.query) {
                let r = http::error_response(400, "", why);
                return self.reply_and_close(key, r, 400, now);
            }
        }
        let accept = match http::check_upgrade(&head) {
            Ok(a) => a,
            Err(refusal) => {
                self.stats.bad_input("bad_upgrade");
                let r =
                    http::error_response(refusal.status, refusal.extra_headers, &refusal.message);
                return self.reply_and_close(key, r, refusal.status, now);
            }
        };
        let browser = !matches!(endpoint, Endpoint::Agent | Endpoint::Echo);
        if browser && !http::origin_allowed(&head, &self.hub.config.allowed_origins) {
            self.stats.auth_failure("origin");
            let r = http::error_response(403, "", "Origin not allowed");
            return self.reply_and_close(key, r, 403, now);
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.out
            .push(ws::Frame::from(http::switching_protocols(&accept)));
        c.phase = Phase::Open;
        c.endpoint = endpoint;
        c.reader = Some(MessageReader::new(self.hub.config.max_message_bytes));
        c.last_ping = now;
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
        self.stats.conn_moved(Endpoint::Http, endpoint);
        if endpoint != Endpoint::Echo {
            let (hub, mut io) = self.io(now);
            hub.on_open(&mut io, key, endpoint, target);
            self.settle(now);
        }
        // Frames pipelined after the head are already in the buffer.
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_ws_bytes(key, now);
        }
    }

    fn plain_request(&mut self, key: usize, head: &http::RequestHead, now: Instant) {
        let (status, ctype, body): (u16, &str, Vec<u8>) =
            match (head.method.as_str(), head.path.as_str()) {
                ("GET" | "HEAD", "/healthz") => {
                    let body = serde_json::json!({
                        "status": "ok",
                        "docker": if self.hub.docker_up { "up" } else { "down" },
                        "connections": self.conns.len(),
                    });
                    (200, "application/json", body.to_string().into_bytes())
                }
                ("GET" | "HEAD", "/metrics") => (
                    200,
                    "text/plain; version=0.0.4",
                    self.stats.render().into_bytes(),
                ),
                ("GET" | "HEAD", "/api/v1/containers") => (
                    200,
                    "application/json",
                    crate::hub::containers_json(&self.hub),
                ),
                (_, "/healthz" | "/metrics" | "/api/v1/containers") => {
                    let r = http::error_response(405, "Allow: GET\r\n", "method not allowed");
                    return self.reply_and_close(key, r, 405, now);
                }
                _ => {
                    let r = http::error_response(404, "", "not found");
                    return self.reply_and_close(key, r, 404, now);
                }
            };
        let mut reply = http::response(status, ctype, "", &body);
        if head.method == "HEAD" {
            let cut = reply.len() - body.len();
            reply.truncate(cut);
        }
        self.reply_and_close(key, reply, status, now);
    }

    fn on_ws_bytes(&mut self, key: usize, now: Instant) {
        for _ in 0..MAX_MESSAGES_PER_EVENT {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            if !matches!(c.phase, Phase::Open) {
                c.inbuf.clear();
                break;
            }
            let Some(reader) = c.reader.as_mut() else {
                return;
            };
            let msg = match reader.read(&mut c.inbuf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.stats.bad_input("ws_protocol");
                    let code = e.close_code();
                    let reason = e.to_string();
                    self.close_conn(key, code, &reason, now);
                    break;
                }
            };
            self.on_message(key, msg, now);
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.release_inbuf();
        }
    }

    fn on_message(&mut self, key: usize, msg: Incoming, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let endpoint = c.endpoint;
        let reply = match msg {
            Incoming::Ping(p) => Some(ws::pong_frame(&p)),
            Incoming::Pong(_) => None,
            Incoming::Close(code) => {
                // Echo the code (RFC 6455 5.5.1), then close once flushed.
                let code = code.map_or(close_code::NORMAL, |(c, _)| c);
                c.out.push(ws::close_frame(code, ""));
                c.phase = Phase::Closing {
                    deadline: now + LINGER,
                    drop_after_flush: true,
                };
                self.mark_dirty(key);
                self.closed.push(key);
                self.settle(now);
                None
            }
            Incoming::Binary(b) if endpoint == Endpoint::Echo => {
                Some(ws::encode_frame(OpCode::Binary, &b))
            }
            Incoming::Text(t) if endpoint == Endpoint::Echo => Some(ws::text_frame(t.as_bytes())),
            Incoming::Binary(_) => {
                self.stats.bad_input("binary");
                let (_, mut io) = self.io(now);
                io.error(key, "binary messages are not supported; send JSON text");
                None
            }
            Incoming::Text(t) => {
                let (hub, mut io) = self.io(now);
                match endpoint {
                    Endpoint::Agent => hub.on_agent_text(&mut io, key, &t),
                    Endpoint::SocketIo => hub.on_socketio_text(&mut io, key, &t),
                    _ => hub.on_browser_text(&mut io, key, endpoint, &t),
                }
                self.settle(now);
                None
            }
        };
        if let Some(frame) = reply {
            if let Some(c) = self.conns.get_mut(key) {
                c.out.push(frame);
            }
            self.mark_dirty(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts a close handshake we initiate.
    fn close_conn(&mut self, key: usize, code: u16, reason: &str, now: Instant) {
        let (_, mut io) = self.io(now);
        io.close(key, code, reason);
        self.settle(now);
    }

    /// Detaches from the hub every socket closed during the last hub call.
    fn settle(&mut self, now: Instant) {
        while let Some(key) = self.closed.pop() {
            let (hub, mut io) = self.io(now);
            hub.detach(&mut io, key);
        }
    }

    fn on_writable(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        // Flushing may queue more (log_dropped); loop over a snapshot.
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 2 {
            rounds += 1;
            let dirty = std::mem::take(&mut self.dirty);
            for key in dirty {
                self.flush(key, now);
            }
        }
    }

    fn flush(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.dirty = false;
        let (written, result) = c.out.flush(&mut conn::SendMsg(&c.stream));
        self.stats.bytes_sent += written as u64;
        match result {
            SocketResult::Closed | SocketResult::Error => return self.remove(key),
            SocketResult::WouldBlock | SocketResult::Continue => {}
        }
        let empty = c.out.is_empty();
        let want_write = !empty;
        if want_write != c.want_write {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, conn_token(key), interest)
                .is_err()
            {
                return self.remove(key);
            }
            c.want_write = want_write;
        }
        if !empty && matches!(result, SocketResult::Continue) {
            // Hit the per-call syscall cap with more to write: continue next iteration.
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(key);
            }
            return;
        }
        if empty {
            if let Phase::Closing {
                drop_after_flush, ..
            } = c.phase
            {
                if drop_after_flush || c.eof {
                    return self.remove(key);
                }
                let _ = c.stream.shutdown(std::net::Shutdown::Write);
            } else if c.session.as_ref().is_some_and(|s| !s.dropped.is_empty())
                && c.out.queued_bytes() < self.hub.config.max_queued_bytes / 2
            {
                let (_, mut io) = self.io(now);
                crate::hub::Hub::report_dropped(&mut io, key);
            }
        }
    }

    fn remove(&mut self, key: usize) {
        let now = Instant::now();
        if let Some(c) = self.conns.get(key) {
            if c.session.is_some() && !c.is_closing() {
                let (hub, mut io) = self.io(now);
                hub.detach(&mut io, key);
            }
        }
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.stats.conn_closed(c.endpoint);
        self.backlog.retain(|k| *k != key);
        // Frames queued for others during detach stay in `dirty`; this key may be in it too
        // but the slab lookup ignores it.
    }

    fn drain_feed(&mut self, now: Instant) {
        for _ in 0..MAX_FEED_EVENTS {
            let Ok(ev) = self.feed.try_recv() else { return };
            let (hub, mut io) = self.io(now);
            match ev {
                FeedEvent::Docker(d) => hub.on_docker(&mut io, d),
                FeedEvent::LocalMetrics(m) => hub.on_local_metrics(&mut io, &m),
            }
            self.settle(now);
        }
        // More queued than one iteration's share: come back without waiting
        // (the waker is edge-triggered and will not fire again for these).
        self.feed_pending = !self.feed.is_empty();
    }

    fn tick(&mut self, now: Instant) {
        let ping_every = self.hub.config.ping_interval;
        let idle = self.hub.config.idle_timeout;
        let mut to_remove = Vec::new();
        let mut to_close = Vec::new();
        let mut to_ping = Vec::new();
        let mut sio = Vec::new();
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
                    if c.endpoint == Endpoint::SocketIo
                        && c.session.as_ref().is_some_and(|s| s.sio_connected)
                    {
                        sio.push(key);
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
                self.close_conn(key, close_code::GOING_AWAY, "idle timeout", now);
            }
        }
        let ping = self.ping_frame.clone();
        for key in to_ping {
            if let Some(c) = self.conns.get_mut(key) {
                c.out.push(ping.clone());
                self.mark_dirty(key);
            }
        }
        let now_unix = crate::hub::unix_now();
        let (hub, mut io) = self.io(now);
        for key in sio {
            hub.socketio_heartbeat(&mut io, key, now);
        }
        hub.tick(&mut io, now_unix);
        self.settle(now);
    }

    /// Stops accepting and sends 1001 to every WebSocket; HTTP sockets are dropped.
    fn begin_shutdown(&mut self, now: Instant) -> Instant {
        log::info!("shutting down: closing {} connections", self.conns.len());
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key).map(|c| matches!(c.phase, Phase::Open)) {
                Some(true) => {
                    self.close_conn(key, close_code::GOING_AWAY, "server shutting down", now)
                }
                Some(false) => {
                    if self
                        .conns
                        .get(key)
                        .is_some_and(|c| matches!(c.phase, Phase::Head { .. }))
                    {
                        self.remove(key);
                    }
                }
                None => {}
            }
        }
        now + SHUTDOWN_GRACE
    }
}
