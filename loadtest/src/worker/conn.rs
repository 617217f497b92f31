//! One client connection inside a worker's event loop.
//!
//! Owns the per-socket state machine — TCP connect, upgrade, dialect setup
//! (JSON auth, Engine.IO open and Socket.IO CONNECT), established, closing —
//! and turning received frames into recorded deliveries.
//! Invariants: a connection never buffers more than `max_message` bytes of
//! unparsed input, and an established idle connection holds no heap buffers
//! (input and output vectors are released when they drain), so tens of
//! thousands of idle sockets cost the client little memory.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::payload::{self, SioPacket, Stamp};
use crate::plan::{Dialect, Extract};
use crate::stats::{Counters, ErrorCounts, Latency};
use crate::tls::Wire;
use crate::wsproto::{self, Event, FrameReader};

/// Most reads per readiness event before the socket yields to others.
const MAX_READS_PER_EVENT: usize = 16;
/// Buffers above this capacity are released once empty.
const KEEP_BUFFER: usize = 16 * 1024;

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscriber / browser / idle connection watching `sids[sid]`.
    Sub { sid: u32 },
    /// The fan-out publisher.
    Publisher,
    /// Agent number `slot` in the worker's agent list.
    Agent { slot: u32 },
    /// Storm connection: set up, then close.
    Storm,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Connecting,
    Upgrading,
    SioOpen,
    SioConnect,
    Authing,
    Established,
    Closing,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// An error; the text becomes an error-count key.
    Error(String),
    /// The close we started (storm) completed.
    Closed,
}

/// Live counters and histograms of one worker.
#[derive(Debug, Default)]
pub struct Live {
    pub counters: Counters,
    pub errors: ErrorCounts,
    pub latency: Latency,
    /// Reset every progress tick.
    pub interval: Latency,
    pub setup: Latency,
}

impl Live {
    pub fn error(&mut self, kind: &str) {
        if let Some(v) = self.errors.get_mut(kind) {
            *v += 1;
        } else if self.errors.len() < 64 {
            self.errors.insert(kind.to_string(), 1);
        } else {
            *self.errors.entry("other errors".to_string()).or_default() += 1;
        }
    }
}

/// Per-event context the loop hands to a connection.
pub struct Ctx<'a> {
    /// `Host` header value for the upgrade request.
    pub host: &'a str,
    pub extract: Extract,
    /// Text sent once established (subscribers only).
    pub subscribe: Option<&'a str>,
    pub token: Option<&'a str>,
    pub max_message: usize,
    pub measuring: bool,
    pub recv_ns: u64,
    pub live: &'a mut Live,
    pub rng: &'a mut Rng,
    /// `--deflate`: the worker's inflater (`None`: no offer made).
    pub inflate: Option<&'a mut wsproto::Inflate>,
}

/// xorshift64*: masks and handshake keys need variety, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
}

/// The parts of a connection that event handling mutates (kept apart from
/// the frame reader so both can be borrowed at once).
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub role: Role,
    pub state: State,
    pub dialect: Dialect,
    pub started: Instant,
    /// `Sec-WebSocket-Key` until the upgrade answer arrives.
    key: Option<Box<str>>,
    /// The upgrade request path, until it is sent.
    path: Option<Box<str>>,
    /// Auth message for JSON publishers/agents (api key), sent after the upgrade.
    pub agent_auth: Option<Box<str>>,
    /// Messages a remote (SPEC 6) agent or publisher sends right after
    /// `auth_success`: `hello` and its container table.
    pub intro: Vec<Box<str>>,
    /// `server_id` from `auth_success` (publishers and agents), or the one a
    /// subscriber watches (replaces `{sid}` in its subscribe message).
    pub server_id: Option<String>,
    /// `Host` header of the hub this connection goes to (when not the plan's).
    pub host: Option<Box<str>>,
    pub out: Vec<u8>,
    out_pos: usize,
    pub last_seq: u64,
    pub dead: Option<Death>,
    /// MessagePack: the size of the message on the wire (counted as the
    /// frame's bytes), while its JSON form is handled.
    wire_len: Option<usize>,
}

pub struct Conn {
    pub stream: Wire,
    reader: FrameReader,
    inbuf: Vec<u8>,
    pub s: Session,
}

/// Opens a non-blocking TCP connection from `src` (when given) to `target`.
///
/// # Errors
/// Socket creation, bind (e.g. address exhaustion) or an immediate connect failure.
pub fn open_socket(target: SocketAddr, src: Option<std::net::Ipv4Addr>) -> io::Result<TcpStream> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        set_bind_no_port(&sock);
        sock.bind(&SockAddr::from(SocketAddrV4::new(ip, 0)))?;
    }
    match sock.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std_stream: std::net::TcpStream = sock.into();
    Ok(TcpStream::from_std(std_stream))
}

/// Defers port choice to connect() so a source address's ports are shared by
/// destination (IP_BIND_ADDRESS_NO_PORT); harmless when unsupported.
fn set_bind_no_port(sock: &Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: valid fd, option value points to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Short, stable error kind for an I/O error.
pub fn io_kind(prefix: &str, e: &io::Error) -> String {
    let text = match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    };
    // Drop the "(os error N)" tail so counts group by cause.
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    format!("{prefix}: {text}")
}

impl Conn {
    pub fn new(
        stream: Wire,
        id: u64,
        role: Role,
        dialect: Dialect,
        path: String,
        key: String,
    ) -> Conn {
        Conn {
            stream,
            reader: FrameReader::default(),
            inbuf: Vec::new(),
            s: Session {
                id,
                role,
                state: State::Connecting,
                dialect,
                started: Instant::now(),
                key: Some(key.into_boxed_str()),
                path: Some(path.into_boxed_str()),
                agent_auth: None,
                intro: Vec::new(),
                server_id: None,
                host: None,
                out: Vec::new(),
                out_pos: 0,
                last_seq: 0,
                dead: None,
                wire_len: None,
            },
        }
    }

    /// Handles write readiness: finishes the TCP connect, then flushes.
    /// `host` is the plan's `Host` header, used unless the session has its own.
    pub fn on_writable(&mut self, host: &str, deflate: bool) {
        if self.s.state == State::Connecting {
            match self.stream.tcp().take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.s.dead = Some(Death::Error(io_kind("connect", &e)));
                    return;
                }
                Ok(None) => {}
            }
            match self.stream.tcp().peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.s.dead = Some(Death::Error(io_kind("connect", &e)));
                    return;
                }
            }
            let path = self.s.path.take().unwrap_or_default();
            let key = self.s.key.as_deref().unwrap_or("");
            let host = self.s.host.as_deref().unwrap_or(host);
            let req = wsproto::handshake_request(host, &path, key, deflate);
            self.s.out.extend_from_slice(&req);
            self.s.state = State::Upgrading;
        }
        self.flush();
    }

    /// Writes queued output until done or the socket would block.
    pub fn flush(&mut self) {
        let s = &mut self.s;
        // TLS records still waiting go first (a no-op on plain TCP).
        match self.stream.flush_records() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                s.dead.get_or_insert(Death::Error(io_kind("write", &e)));
                return;
            }
        }
        while s.out_pos < s.out.len() {
            match self.stream.write(&s.out[s.out_pos..]) {
                Ok(0) => {
                    s.dead.get_or_insert(Death::Error("write: closed".into()));
                    return;
                }
                Ok(n) => s.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    s.dead.get_or_insert(Death::Error(io_kind("write", &e)));
                    return;
                }
            }
        }
        if s.out_pos == s.out.len() {
            s.out.clear();
            s.out_pos = 0;
            if s.out.capacity() > KEEP_BUFFER {
                s.out = Vec::new();
            }
        } else if s.out_pos > KEEP_BUFFER && s.out_pos * 2 > s.out.len() {
            s.out.drain(..s.out_pos);
            s.out_pos = 0;
        }
    }

    /// Bytes queued but not yet written.
    pub fn pending_out(&self) -> usize {
        self.s.out.len() - self.s.out_pos
    }

    /// Reads until the socket would block (or the per-event cap). Returns
    /// true when the cap stopped it and the socket should be revisited.
    pub fn on_readable(&mut self, scratch: &mut [u8], ctx: &mut Ctx) -> bool {
        if self.s.state == State::Connecting {
            // Readable before writable: usually a refused connect.
            self.on_writable(ctx.host, ctx.inflate.is_some());
            if self.s.state == State::Connecting || self.s.dead.is_some() {
                return false;
            }
        }
        for _ in 0..MAX_READS_PER_EVENT {
            match self.stream.read(scratch) {
                Ok(0) => {
                    let why = if self.s.state == State::Closing {
                        Death::Closed
                    } else {
                        Death::Error("closed by server: eof".into())
                    };
                    self.s.dead.get_or_insert(why);
                    return false;
                }
                Ok(n) => {
                    self.ingest(&mut scratch[..n], ctx);
                    if self.s.dead.is_some() {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = match (self.s.state, e.kind()) {
                        (State::Closing, _) => Death::Closed,
                        (_, io::ErrorKind::ConnectionReset) => {
                            Death::Error("closed by server: reset".into())
                        }
                        // TLS: TCP ended without close_notify.
                        (_, io::ErrorKind::UnexpectedEof) => {
                            Death::Error("closed by server: eof".into())
                        }
                        // TLS: a failed handshake or a bad record (rustls's reason).
                        (_, io::ErrorKind::InvalidData) if e.raw_os_error().is_none() => {
                            Death::Error(short(&format!("tls: {e}")))
                        }
                        _ => Death::Error(io_kind("read", &e)),
                    };
                    self.s.dead.get_or_insert(why);
                    return false;
                }
            }
        }
        true
    }

    fn ingest(&mut self, data: &mut [u8], ctx: &mut Ctx) {
        if self.inbuf.is_empty() {
            let used = self.consume(data, ctx);
            if used < data.len() && self.s.dead.is_none() {
                self.inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            self.inbuf.extend_from_slice(data);
            let mut buf = std::mem::take(&mut self.inbuf);
            let used = self.consume(&mut buf, ctx);
            buf.drain(..used);
            if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                buf = Vec::new();
            }
            self.inbuf = buf;
        }
        // Header bytes plus one message is the most a valid peer makes us hold.
        if self.inbuf.len() > ctx.max_message + wsproto::MAX_RESPONSE_HEAD {
            self.s
                .dead
                .get_or_insert(Death::Error("read: input over limit".into()));
        }
        self.reader.shrink();
        self.flush();
    }

    /// Parses as much of `buf` as is complete; returns bytes used.
    fn consume(&mut self, buf: &mut [u8], ctx: &mut Ctx) -> usize {
        let mut pos = 0;
        if self.s.state == State::Upgrading {
            let key = self.s.key.as_deref().unwrap_or("");
            match wsproto::parse_response(buf, key) {
                Ok(None) => return 0,
                Ok(Some(n)) => {
                    pos = n;
                    self.reader.deflate =
                        ctx.inflate.is_some() && wsproto::accepts_deflate(&buf[..n]);
                    self.s.key = None;
                    self.s.upgraded(ctx);
                }
                Err(e) => {
                    self.s.dead = Some(Death::Error(short(&e.to_string())));
                    return buf.len();
                }
            }
        }
        while pos < buf.len() && self.s.dead.is_none() {
            let (used, ev) = match self.reader.next(&mut buf[pos..], ctx.max_message) {
                Ok(r) => r,
                Err(e) => {
                    self.s.dead = Some(Death::Error(short(&e.to_string())));
                    return buf.len();
                }
            };
            if used == 0 {
                break;
            }
            pos += used;
            match ev {
                Some(Event::Message {
                    data,
                    compressed: true,
                    ..
                }) => {
                    let Some(inflate) = ctx.inflate.take() else {
                        self.s.dead = Some(Death::Error("compressed without an offer".into()));
                        return buf.len();
                    };
                    match inflate.inflate(data, ctx.max_message) {
                        Ok(plain) => self.s.on_message(plain, ctx),
                        Err(e) => self.s.dead = Some(Death::Error(short(&e.to_string()))),
                    }
                    ctx.inflate = Some(inflate);
                }
                Some(Event::Message { data, .. }) => self.s.on_message(data, ctx),
                Some(Event::Ping(p)) => {
                    let p = p.to_vec();
                    let mask = ctx.rng.mask();
                    wsproto::encode_frame(&mut self.s.out, wsproto::OP_PONG, &p, mask);
                }
                Some(Event::Pong) | None => {}
                Some(Event::Close(code)) => {
                    self.s.dead = Some(if self.s.state == State::Closing {
                        Death::Closed
                    } else {
                        Death::Error(format!("closed by server: code {}", code.unwrap_or(1005)))
                    });
                }
            }
        }
        pos
    }

    /// Starts a clean close (storm): close frame 1000, then wait for the server.
    pub fn start_close(&mut self, rng: &mut Rng) {
        let mask = rng.mask();
        wsproto::encode_frame(
            &mut self.s.out,
            wsproto::OP_CLOSE,
            &wsproto::close_payload(1000),
            mask,
        );
        self.s.state = State::Closing;
        self.flush();
    }

    /// Queues one text message.
    pub fn send_text(&mut self, text: &[u8], rng: &mut Rng) {
        self.s.send_text(text, rng);
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Session {
    /// Sends one message (a JSON text; a MessagePack map in a binary frame
    /// for the MsgPack dialect).
    pub fn send_text(&mut self, text: &[u8], rng: &mut Rng) {
        let mask = rng.mask();
        if self.dialect == Dialect::MsgPack {
            let v: serde_json::Value = serde_json::from_slice(text).unwrap_or_default();
            let bin = rmp_serde::to_vec(&v).unwrap_or_default();
            wsproto::encode_frame(&mut self.out, wsproto::OP_BINARY, &bin, mask);
            return;
        }
        wsproto::encode_frame(&mut self.out, wsproto::OP_TEXT, text, mask);
    }

    /// The upgrade succeeded: start the dialect's setup.
    fn upgraded(&mut self, ctx: &mut Ctx) {
        match self.dialect {
            Dialect::SocketIo => self.state = State::SioOpen,
            Dialect::Raw => self.established(ctx),
            Dialect::Json | Dialect::MsgPack => {
                if let Some(auth) = self.agent_auth.take() {
                    self.send_text(auth.as_bytes(), ctx.rng);
                    self.state = State::Authing;
                } else if let (Role::Sub { .. } | Role::Storm, Some(token)) = (self.role, ctx.token)
                {
                    let mut msg = br#"{"type":"auth","token":""#.to_vec();
                    payload::json_escape_into(&mut msg, token);
                    msg.extend_from_slice(br#""}"#);
                    self.send_text(&msg, ctx.rng);
                    self.state = State::Authing;
                } else {
                    self.established(ctx);
                }
            }
        }
    }

    fn established(&mut self, ctx: &mut Ctx) {
        self.state = State::Established;
        if let (Role::Sub { .. }, Some(sub)) = (self.role, ctx.subscribe) {
            let mut text = std::borrow::Cow::Borrowed(sub);
            if let (Some(sid), true) = (&self.server_id, sub.contains("{sid}")) {
                let mut esc = Vec::new();
                payload::json_escape_into(&mut esc, sid);
                text = text.replace("{sid}", &String::from_utf8_lossy(&esc)).into();
            }
            // `--filter` with `{i}`: a filter of each subscriber's own.
            if text.contains("{i}") {
                text = text.replace("{i}", &self.id.to_string()).into();
            }
            self.send_text(text.as_bytes(), ctx.rng);
        }
        for m in std::mem::take(&mut self.intro) {
            self.send_text(m.as_bytes(), ctx.rng);
        }
    }

    fn on_message(&mut self, data: &[u8], ctx: &mut Ctx) {
        match self.dialect {
            Dialect::SocketIo => self.on_sio(data, ctx),
            Dialect::Json => self.on_json(data, ctx),
            Dialect::MsgPack => {
                // Handled in its JSON form; counted at its wire size.
                let json = rmp_serde::from_slice::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| serde_json::to_vec(&v).ok())
                    .unwrap_or_default();
                self.wire_len = Some(data.len());
                self.on_json(&json, ctx);
                self.wire_len = None;
            }
            Dialect::Raw => {
                if self.state == State::Established && self.role_is_sub() {
                    self.count_frame(data, ctx);
                    if ctx.extract == Extract::WsRelay {
                        self.relay_item(data, ctx);
                    }
                }
            }
        }
    }

    fn role_is_sub(&self) -> bool {
        matches!(self.role, Role::Sub { .. })
    }

    fn count_frame(&self, data: &[u8], ctx: &mut Ctx) {
        if ctx.measuring {
            ctx.live.counters.frames += 1;
            ctx.live.counters.bytes += self.wire_len.unwrap_or(data.len()) as u64;
        }
    }

    fn on_json(&mut self, data: &[u8], ctx: &mut Ctx) {
        let ty = payload::msg_type(data).unwrap_or(b"");
        match self.state {
            State::Authing => match ty {
                b"auth_success" => {
                    if let Some(sid) = payload::str_field(data, "server_id") {
                        self.server_id = Some(String::from_utf8_lossy(sid).into_owned());
                    }
                    self.established(ctx);
                }
                b"error" => {
                    let msg = payload::str_field(data, "message").unwrap_or(b"");
                    self.dead = Some(Death::Error(format!(
                        "auth refused: {}",
                        short(&String::from_utf8_lossy(msg))
                    )));
                }
                _ => {}
            },
            State::Established if self.role_is_sub() => match (ty, ctx.extract) {
                (b"log", Extract::LogMessage) => {
                    self.count_frame(data, ctx);
                    if let Some(stamp) =
                        payload::str_field(data, "message").and_then(payload::parse_stamp_line)
                    {
                        self.record(stamp, ctx);
                    }
                }
                (b"log_update", Extract::LogUpdate) => {
                    self.count_frame(data, ctx);
                    self.log_lines(data, ctx);
                }
                (b"container_state_change", Extract::ContainerChange) => {
                    self.count_frame(data, ctx);
                    if let Some(ns) = payload::u64_field(data, "dw_sent_ns") {
                        let seq = payload::u64_field(data, "dw_seq").unwrap_or(0);
                        self.record(Stamp { ns, seq }, ctx);
                    }
                }
                (b"metrics", Extract::Metrics) => {
                    self.count_frame(data, ctx);
                    if let Some(ns) = payload::u64_field(data, "sent_ns") {
                        let seq = payload::u64_field(data, "seq").unwrap_or(0);
                        self.record(Stamp { ns, seq }, ctx);
                    }
                }
                (b"log_dropped", _) => {
                    if ctx.measuring {
                        ctx.live.counters.server_dropped +=
                            payload::u64_field(data, "lines").unwrap_or(0);
                    }
                }
                (b"error", _) => {
                    let msg = payload::str_field(data, "message").unwrap_or(b"");
                    ctx.live.error(&format!(
                        "server error: {}",
                        short(&String::from_utf8_lossy(msg))
                    ));
                }
                (b"log_stream_stopped", _) => ctx.live.error("server: log_stream_stopped"),
                _ => self.count_frame(data, ctx),
            },
            // A remote agent has no history: it answers the hub's
            // `subscribe_logs` with an empty one, so the live lines that
            // follow are not taken for the history (and cut to `tail`).
            State::Established if ty == b"subscribe_logs" && !self.role_is_sub() => {
                let id = payload::str_field(data, "container_id").unwrap_or(b"");
                let mut msg = br#"{"type":"log_batch","container_id":""#.to_vec();
                msg.extend_from_slice(id);
                msg.extend_from_slice(br#"","lines":[],"history":true,"last":true}"#);
                self.send_text(&msg, ctx.rng);
            }
            _ => {}
        }
    }

    fn on_sio(&mut self, data: &[u8], ctx: &mut Ctx) {
        match payload::parse_sio(data) {
            SioPacket::Ping => self.send_text(b"3", ctx.rng),
            SioPacket::Close => {
                self.dead = Some(Death::Error("closed by server: engine.io close".into()))
            }
            SioPacket::Open { .. } if self.state == State::SioOpen => {
                let mut msg = b"40".to_vec();
                if let (Role::Sub { .. } | Role::Storm, Some(token)) = (self.role, ctx.token) {
                    msg.extend_from_slice(br#"{"token":""#);
                    payload::json_escape_into(&mut msg, token);
                    msg.extend_from_slice(br#""}"#);
                }
                self.send_text(&msg, ctx.rng);
                self.state = State::SioConnect;
            }
            SioPacket::Connected if self.state == State::SioConnect => self.established(ctx),
            SioPacket::ConnectError => {
                self.dead = Some(Death::Error("socket.io connect refused".into()));
            }
            SioPacket::Event { name, body }
                if self.state == State::Established && self.role_is_sub() =>
            {
                self.count_frame(data, ctx);
                match (name, ctx.extract) {
                    (b"log_update", Extract::SioLogUpdate) => self.log_lines(body, ctx),
                    (b"message", Extract::SioRelay) => self.relay_item(body, ctx),
                    (b"error", _) => ctx.live.error("server error (socket.io)"),
                    (b"log_stream_stopped", _) => ctx.live.error("server: log_stream_stopped"),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn relay_item(&mut self, body: &[u8], ctx: &mut Ctx) {
        if let Some(ns) = payload::u64_field(body, "ts") {
            let seq = payload::u64_field(body, "seq").unwrap_or(0);
            self.record(Stamp { ns, seq }, ctx);
        }
    }

    fn log_lines(&mut self, body: &[u8], ctx: &mut Ctx) {
        if let Some(log) = payload::str_field(body, "log") {
            payload::for_each_escaped_line(log, |line| {
                if let Some(stamp) = payload::parse_stamp_line(line) {
                    self.record(stamp, ctx);
                }
            });
        }
    }

    /// Records one delivered item: latency, and sequence gaps per connection.
    fn record(&mut self, stamp: Stamp, ctx: &mut Ctx) {
        let last = self.last_seq;
        if stamp.seq != 0 && stamp.seq > last {
            self.last_seq = stamp.seq;
        }
        if !ctx.measuring {
            return;
        }
        let c = &mut ctx.live.counters;
        c.delivered += 1;
        if stamp.seq != 0 && last != 0 {
            if stamp.seq > last + 1 {
                c.gaps += stamp.seq - last - 1;
            } else if stamp.seq <= last {
                c.reordered += 1;
            }
        }
        let lat = if ctx.recv_ns >= stamp.ns {
            ctx.recv_ns - stamp.ns
        } else {
            c.negative_latency += 1;
            0
        };
        ctx.live.latency.record(lat);
        ctx.live.interval.record(lat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(live: &'a mut Live, rng: &'a mut Rng, extract: Extract) -> Ctx<'a> {
        Ctx {
            host: "127.0.0.1:1",
            extract,
            subscribe: None,
            token: None,
            max_message: 1 << 20,
            measuring: true,
            recv_ns: 2_000_000_000_000_000_000,
            live,
            rng,
            inflate: None,
        }
    }

    fn sub_session(dialect: Dialect) -> Session {
        Session {
            id: 0,
            role: Role::Sub { sid: 0 },
            state: State::Established,
            dialect,
            started: Instant::now(),
            key: None,
            path: None,
            agent_auth: None,
            intro: Vec::new(),
            server_id: None,
            host: None,
            out: Vec::new(),
            out_pos: 0,
            last_seq: 0,
            dead: None,
            wire_len: None,
        }
    }

    #[test]
    fn log_update_lines_are_items_with_gaps() {
        let mut live = Live::default();
        let mut rng = Rng::new(1);
        let mut s = sub_session(Dialect::Json);
        let base = 2_000_000_000_000_000_000u64 - 1_000_000; // 1 ms before recv
        let msg = format!(
            r#"{{"type":"log_update","container_id":"c","log":"{base} 1 xx\n{base} 2 xx\n{base} 5 xx\n"}}"#
        );
        s.on_message(
            msg.as_bytes(),
            &mut ctx(&mut live, &mut rng, Extract::LogUpdate),
        );
        assert_eq!(live.counters.delivered, 3);
        assert_eq!(live.counters.frames, 1);
        assert_eq!(live.counters.gaps, 2);
        let p50 = live.latency.summary().p50_us;
        assert!((p50 - 1000.0).abs() < 2.0, "p50 {p50}");
    }

    #[test]
    fn socketio_setup_and_ping() {
        let mut live = Live::default();
        let mut rng = Rng::new(7);
        let mut s = sub_session(Dialect::SocketIo);
        s.state = State::SioOpen;
        let mut c = ctx(&mut live, &mut rng, Extract::SioRelay);
        c.token = Some("tok\"en");
        c.subscribe = Some(r#"42["start_log_stream",{"container_id":"x"}]"#);
        s.on_message(br#"0{"sid":"s","pingInterval":25000}"#, &mut c);
        assert_eq!(s.state, State::SioConnect);
        s.on_message(br#"40{"sid":"abc"}"#, &mut c);
        assert_eq!(s.state, State::Established);
        s.on_message(b"2", &mut c);
        s.on_message(
            br#"42["message",{"ts":"1999999999999000000","seq":3,"payload":"x"}]"#,
            &mut c,
        );
        assert_eq!(c.live.counters.delivered, 1);
        // Unmask what we sent: CONNECT with the escaped token, the subscribe, the pong.
        let mut frames = Vec::new();
        let mut buf = s.out.clone();
        let mut pos = 0;
        let mut reader = FrameReader::default();
        while pos < buf.len() {
            let (used, ev) = reader.next(&mut buf[pos..], 1 << 20).unwrap();
            if let Some(Event::Message { data, .. }) = ev {
                frames.push(String::from_utf8(data.to_vec()).unwrap());
            }
            pos += used;
        }
        assert_eq!(
            frames,
            vec![
                r#"40{"token":"tok\"en"}"#.to_string(),
                r#"42["start_log_stream",{"container_id":"x"}]"#.to_string(),
                "3".to_string()
            ]
        );
    }

    #[test]
    fn json_auth_gets_server_id_or_dies() {
        let mut live = Live::default();
        let mut rng = Rng::new(3);
        let mut s = sub_session(Dialect::Json);
        s.role = Role::Publisher;
        s.state = State::Authing;
        s.on_message(
            br#"{"type":"auth_success","server_id":"sid-1","message":"Connected successfully"}"#,
            &mut ctx(&mut live, &mut rng, Extract::Nothing),
        );
        assert_eq!(s.state, State::Established);
        assert_eq!(s.server_id.as_deref(), Some("sid-1"));
        let mut s2 = sub_session(Dialect::Json);
        s2.state = State::Authing;
        s2.on_message(
            br#"{"type":"error","message":"Invalid or inactive API key"}"#,
            &mut ctx(&mut live, &mut rng, Extract::Nothing),
        );
        assert_eq!(
            s2.dead,
            Some(Death::Error(
                "auth refused: Invalid or inactive API key".into()
            ))
        );
    }

    #[test]
    fn not_measuring_tracks_seq_but_records_nothing() {
        let mut live = Live::default();
        let mut rng = Rng::new(3);
        let mut s = sub_session(Dialect::Json);
        let mut c = ctx(&mut live, &mut rng, Extract::Metrics);
        c.measuring = false;
        s.on_message(
            br#"{"type":"metrics","data":{"sent_ns":1999999999999000000,"seq":4}}"#,
            &mut c,
        );
        assert_eq!(c.live.counters.delivered, 0);
        assert_eq!(s.last_seq, 4);
        c.measuring = true;
        s.on_message(
            br#"{"type":"metrics","data":{"sent_ns":1999999999999000000,"seq":6}}"#,
            &mut c,
        );
        assert_eq!(c.live.counters.delivered, 1);
        assert_eq!(c.live.counters.gaps, 1);
    }
}
