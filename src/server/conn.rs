//! One client connection as the event loop keeps it: its transport, input
//! buffer, outgoing queue and the phase it is in. (What the connection is
//! subscribed to lives in the hub's session, keyed by the same id.)
//!
//! Invariants: `inbuf` holds only bytes not yet consumed by the HTTP parser
//! or the frame reader, and is released when empty so idle sockets cost no
//! buffer memory; `out` is the only path to the socket for outgoing bytes;
//! [`Conn::begin_close`] is the only way into the closing phase.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bytes::BytesMut;

use crate::stats::Endpoint;
use crate::transport::{SocketResult, Transport, classify_io_error};
use crate::writer::OutQueue;
use crate::ws::{self, MessageReader};

/// Largest read per syscall.
pub const READ_CHUNK: usize = 64 << 10;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading an HTTP request head until `deadline`.
    Head { deadline: Instant },
    /// A request waits until `deadline` for an answer made off the loop: a
    /// login POST for the login worker's, a remote server's metrics
    /// history for its hub's (input is read and discarded meanwhile, to
    /// notice the peer leaving; the answer closes the connection).
    Waiting { deadline: Instant },
    /// An open WebSocket.
    Open,
    /// A reply or close frame is queued; after it is flushed the write side
    /// is shut and the socket lingers until EOF or `deadline`.
    Closing {
        deadline: Instant,
        drop_after_flush: bool,
    },
}

/// A client socket and everything the loop keeps for it.
#[derive(Debug)]
pub struct Conn {
    pub transport: Box<dyn Transport>,
    /// Unique for the daemon's life; slab keys are reused, serials are not.
    pub serial: u64,
    pub endpoint: Endpoint,
    pub phase: Phase,
    pub inbuf: BytesMut,
    pub out: OutQueue,
    pub reader: Option<MessageReader>,
    pub last_rx: Instant,
    pub last_ping: Instant,
    /// WRITABLE is registered (only while bytes are queued and the socket is full).
    pub want_write: bool,
    /// Queued frames not yet flushed this iteration (in the loop's dirty list).
    pub dirty: bool,
    /// The peer closed its write side.
    pub eof: bool,
    /// The hub holds a session for this connection.
    pub in_hub: bool,
    /// A droppable frame was refused since the last drain (the hub is told
    /// once the queue is below half its cap, to report `log_dropped`).
    pub lossy: bool,
    /// Reading stopped because the queue is over its soft cap (backpressure).
    pub read_paused: bool,
    /// Plain HTTP requests answered on this connection (keep-alive).
    pub requests_served: u32,
    /// In the loop's backlog (serviced again next iteration).
    pub in_backlog: bool,
    /// The peer's address (login failures are counted per address).
    pub peer: IpAddr,
    /// permessage-deflate was negotiated: data frames go out through the
    /// loop's shared [`crate::ws::deflate::Deflater`] (one flag, no window).
    pub deflate: bool,
}

impl Conn {
    pub fn new(
        transport: Box<dyn Transport>,
        serial: u64,
        out: OutQueue,
        now: Instant,
        deadline: Instant,
    ) -> Self {
        Conn {
            transport,
            serial,
            endpoint: Endpoint::Http,
            phase: Phase::Head { deadline },
            inbuf: BytesMut::new(),
            out,
            reader: None,
            last_rx: now,
            last_ping: now,
            want_write: false,
            dirty: false,
            eof: false,
            in_hub: false,
            lossy: false,
            read_paused: false,
            requests_served: 0,
            in_backlog: false,
            peer: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            deflate: false,
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    /// Whether the queue is too full to take more work from this peer.
    pub fn over_soft_cap(&self) -> bool {
        self.out.queued_bytes() > self.out.soft_cap()
    }

    /// Starts a close we initiate: the close frame is queued (after what is
    /// queued, or at once when `discard` drops what was not started yet),
    /// and the socket lingers for the peer's answer until `deadline`.
    pub fn begin_close(&mut self, code: u16, reason: &str, discard: bool, deadline: Instant) {
        if self.is_closing() {
            return;
        }
        if discard {
            self.out.discard_unsent();
        }
        self.out.push(ws::close_frame(code, reason));
        self.phase = Phase::Closing {
            deadline,
            drop_after_flush: false,
        };
    }

    /// Queues a plain HTTP reply and closes after it.
    pub fn reply_and_close(&mut self, bytes: Vec<u8>, deadline: Instant) {
        self.inbuf.clear();
        self.out.push(ws::Frame::from(bytes));
        self.phase = Phase::Closing {
            deadline,
            drop_after_flush: false,
        };
    }

    /// Answers the peer's close: echo it, then drop once flushed.
    pub fn answer_close(&mut self, code: u16, deadline: Instant) {
        if self.is_closing() {
            return;
        }
        self.out.push(ws::close_frame(code, ""));
        self.phase = Phase::Closing {
            deadline,
            drop_after_flush: true,
        };
    }

    /// Reads into `inbuf` until WouldBlock, at most `max_reads` times, or
    /// until `inbuf` holds `limit` bytes. `WouldBlock`: drained;
    /// `Continue`: stopped at a cap with more to read; `Closed`/`Error`: gone.
    pub fn read_some(
        &mut self,
        scratch: &mut [u8],
        max_reads: usize,
        limit: usize,
    ) -> SocketResult {
        for _ in 0..max_reads {
            if self.inbuf.len() >= limit {
                return SocketResult::Continue;
            }
            match self.transport.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    return SocketResult::Closed;
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let r = classify_io_error(&e);
                    if r != SocketResult::WouldBlock {
                        self.eof = true;
                    }
                    return r;
                }
            }
        }
        SocketResult::Continue
    }

    /// Frees the input buffer's memory once everything in it was consumed.
    pub fn release_inbuf(&mut self) {
        if self.inbuf.is_empty() && self.inbuf.capacity() > 0 {
            self.inbuf = BytesMut::new();
        }
    }
}
