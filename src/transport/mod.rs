//! Transports: the bytes of one connection, behind one small trait.
//!
//! The event loop reads and writes a connection only through [`Transport`]
//! and learns what happened from one [`SocketResult`], for reads and writes
//! alike. Plain TCP is [`tcp::TcpTransport`]; TLS ([`tls::TlsTransport`],
//! rustls) is a second implementation of the same trait, and neither the
//! hub nor the protocols see which one a connection uses.
//!
//! Contract of an implementation: non-blocking; `read` returns `Ok(0)` only
//! at end of stream and `WouldBlock` when nothing is buffered; a successful
//! `write_vectored` may take fewer bytes than offered (the caller resumes);
//! [`Transport::source`] is what the loop registers with mio.

pub mod tcp;
pub mod tls;

use std::io;

/// The outcome of socket I/O, shared by reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketResult {
    /// Keep going: a read or write stopped at its per-call cap with more to
    /// do (for a flush: or the queue drained; tell them apart by the queue).
    Continue,
    /// The kernel buffer is full (or empty, for reads): wait for readiness.
    WouldBlock,
    /// The peer went away (EOF, reset, broken pipe). Normal; not logged.
    Closed,
    /// Any other I/O error; the connection is unusable.
    Error,
}

/// Maps an I/O error to a [`SocketResult`]: the peer going away is `Closed`,
/// a full or empty kernel buffer is `WouldBlock`, anything else is `Error`.
pub fn classify_io_error(e: &io::Error) -> SocketResult {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected
        | io::ErrorKind::UnexpectedEof => SocketResult::Closed,
        io::ErrorKind::WouldBlock => SocketResult::WouldBlock,
        _ => SocketResult::Error,
    }
}

/// One connection's byte stream, driven non-blocking by the event loop.
pub trait Transport: io::Read + io::Write + std::fmt::Debug + Send {
    /// The mio source to register for readiness.
    fn source(&mut self) -> &mut dyn mio::event::Source;
    /// Ends our side of the stream once everything queued is written.
    fn shutdown_write(&mut self);
    /// Bytes the transport took but could not put on the wire yet (TLS
    /// records): the loop calls `flush` until this is false, and keeps the
    /// socket registered for writability meanwhile.
    fn has_pending_output(&self) -> bool {
        false
    }
}
