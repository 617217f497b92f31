//! One client connection: its socket, input buffer, outgoing queue and the
//! protocol phase it is in.
//!
//! Invariants: `inbuf` holds only bytes not yet consumed by the HTTP parser
//! or the frame reader, and is released when empty so idle sockets cost no
//! buffer memory; `out` is the only path to the socket for outgoing bytes.

use std::io::{self, Read};
use std::time::Instant;

use bytes::BytesMut;
use mio::net::TcpStream;

use crate::auth::Role;
use crate::protocol::json::Dialect;
use crate::stats::Endpoint;
use crate::writer::OutQueue;
use crate::ws::MessageReader;

/// Largest read per syscall.
pub const READ_CHUNK: usize = 64 << 10;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head until `deadline`.
    Head { deadline: Instant },
    /// An open WebSocket.
    Open,
    /// A reply or close frame is queued; after it is flushed the write side
    /// is shut and the socket lingers until EOF or `deadline`.
    Closing {
        deadline: Instant,
        drop_after_flush: bool,
    },
}

/// Browser authentication state of a WebSocket.
#[derive(Debug, Clone)]
pub enum AuthState {
    /// Waiting for the first message (`auth`, or a Socket.IO CONNECT).
    Pending { deadline: Instant },
    /// Authenticated (or auth is off: `sub` is "anonymous", role admin).
    Ready {
        sub: String,
        role: Role,
        exp: Option<u64>,
    },
}

/// Per-socket protocol state used by the hub.
#[derive(Debug)]
pub struct Session {
    pub dialect: Dialect,
    pub auth: AuthState,
    /// Full ids of containers whose logs this socket follows.
    pub log_streams: Vec<String>,
    /// Log lines dropped per container, not yet reported with `log_dropped`.
    pub dropped: Vec<(String, u64)>,
    /// Servers whose metrics this socket receives (mux or single-server endpoints).
    pub metrics_servers: Vec<String>,
    /// `/api/v1/ws/{metrics,logs}/{server_id}`: the server it watches.
    pub target_server: Option<String>,
    /// Agent sockets: the server id after `auth_success`.
    pub agent_server: Option<String>,
    /// Socket.IO: namespace joined, last ping sent, pong outstanding since.
    pub sio_connected: bool,
    pub sio_last_ping: Instant,
    pub sio_pong_due: Option<Instant>,
}

impl Session {
    pub fn new(dialect: Dialect, auth: AuthState, now: Instant) -> Self {
        Session {
            dialect,
            auth,
            log_streams: Vec::new(),
            dropped: Vec::new(),
            metrics_servers: Vec::new(),
            target_server: None,
            agent_server: None,
            sio_connected: false,
            sio_last_ping: now,
            sio_pong_due: None,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.auth, AuthState::Ready { .. })
    }

    pub fn role(&self) -> Option<Role> {
        match &self.auth {
            AuthState::Ready { role, .. } => Some(*role),
            AuthState::Pending { .. } => None,
        }
    }

    pub fn who(&self) -> &str {
        match &self.auth {
            AuthState::Ready { sub, .. } => sub,
            AuthState::Pending { .. } => "unauthenticated",
        }
    }
}

/// A client socket and everything the loop keeps for it.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    /// Unique for the daemon's life; slab keys are reused, serials are not.
    pub serial: u64,
    pub endpoint: Endpoint,
    pub phase: Phase,
    pub inbuf: BytesMut,
    pub out: OutQueue,
    pub reader: Option<MessageReader>,
    pub session: Option<Session>,
    pub last_rx: Instant,
    pub last_ping: Instant,
    /// WRITABLE is registered (only while bytes are queued and the socket is full).
    pub want_write: bool,
    /// Queued frames not yet flushed this iteration (in the loop's dirty list).
    pub dirty: bool,
    /// The peer closed its write side.
    pub eof: bool,
}

/// Writes through `sendmsg(2)` instead of `writev(2)`: same gather semantics,
/// but the socket path skips the VFS layer (file-position lock, iterator
/// checks) that `writev` pays on every call, and `MSG_NOSIGNAL` turns a
/// reset peer into `EPIPE` rather than a signal.
pub struct SendMsg<'a>(pub &'a TcpStream);

impl io::Write for SendMsg<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix;
        // the header points at `bufs`, which outlives the call, and sendmsg
        // only reads from it.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len() as _;
            libc::sendmsg(
                self.0.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Outcome of draining a socket's readable bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read until WouldBlock.
    Drained,
    /// Stopped at the per-event cap; more may be waiting.
    MoreLater,
    /// EOF or reset.
    Closed,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        serial: u64,
        out: OutQueue,
        now: Instant,
        deadline: Instant,
    ) -> Self {
        Conn {
            stream,
            serial,
            endpoint: Endpoint::Http,
            phase: Phase::Head { deadline },
            inbuf: BytesMut::new(),
            out,
            reader: None,
            session: None,
            last_rx: now,
            last_ping: now,
            want_write: false,
            dirty: false,
            eof: false,
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// Reads into `inbuf` until WouldBlock, at most `max_reads` times, or
    /// until `inbuf` holds `limit` bytes (the caller consumes and calls again).
    pub fn read_some(&mut self, scratch: &mut [u8], max_reads: usize, limit: usize) -> ReadOutcome {
        for _ in 0..max_reads {
            if self.inbuf.len() >= limit {
                return ReadOutcome::MoreLater;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    return ReadOutcome::Closed;
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.eof = true;
                    return ReadOutcome::Closed;
                }
            }
        }
        ReadOutcome::MoreLater
    }

    /// Frees the input buffer's memory once everything in it was consumed.
    pub fn release_inbuf(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = BytesMut::new();
        }
    }
}
