//! The hub's only way out: an [`Outbox`] takes frames and closes for
//! connections, and the hub's per-call context [`Io`] wraps it with the
//! hub's bookkeeping (sessions, counters, closes to settle).
//!
//! The event loop implements `Outbox` over its sockets' queues; tests use
//! [`MemoryOutbox`], so the whole hub runs in memory, without TCP.
//!
//! Invariants: every frame goes through [`Io::send`], which obeys the
//! socket's caps and turns an essential frame past the hard cap into a
//! 1013 close (sent ahead of the queue); every close goes through
//! [`Io::close`], and the hub detaches each closed session before its input
//! call returns.

use std::collections::HashMap;
use std::time::Instant;

use crate::protocol::Dialect;
use crate::protocol::json::Event;
use crate::stats::Stats;
use crate::writer::{Offer, Priority};
use crate::ws::{self, Frame, close_code};

use super::session::{ConnId, Session, Sessions};

/// A close the hub asks for.
#[derive(Debug, Clone, Copy)]
pub struct Close<'a> {
    pub code: u16,
    pub reason: &'a str,
    /// Discard what is still queued so the close goes out at once (slow
    /// consumers); otherwise the close follows what was queued before it.
    pub discard_queued: bool,
}

/// Where the hub's frames and closes go.
pub trait Outbox {
    /// Queues a shared frame on `conn` under its caps. A closing or unknown
    /// connection refuses it (`Offer::Dropped`).
    fn send(&mut self, conn: ConnId, frame: &Frame, prio: Priority) -> Offer;
    /// Bytes still queued for `conn` (0 when unknown).
    fn queued_bytes(&self, conn: ConnId) -> usize;
    /// Queues a close frame and starts the connection's close.
    fn close(&mut self, conn: ConnId, close: Close<'_>);
}

/// The hub's context for one input: the outbox, the sessions, the counters.
pub struct Io<'a> {
    out: &'a mut dyn Outbox,
    pub sessions: &'a mut Sessions,
    pub stats: &'a mut Stats,
    pub now: Instant,
    /// The per-socket soft cap (`[limits] max_queued_bytes`).
    pub soft_cap: usize,
    /// Connections the hub closed during this input, detached before it returns.
    pub(super) closed: &'a mut Vec<ConnId>,
    /// Frames for other hubs' sessions (`cluster.rs`): they go to NATS, not
    /// to a socket, once the input is handled.
    pub(super) to_peers: &'a mut Vec<(ConnId, Frame)>,
}

impl<'a> Io<'a> {
    pub(super) fn new(
        out: &'a mut dyn Outbox,
        sessions: &'a mut Sessions,
        stats: &'a mut Stats,
        now: Instant,
        soft_cap: usize,
        closed: &'a mut Vec<ConnId>,
        to_peers: &'a mut Vec<(ConnId, Frame)>,
    ) -> Self {
        Io {
            out,
            sessions,
            stats,
            now,
            soft_cap,
            closed,
            to_peers,
        }
    }

    /// Queues `frame` on `conn`. Droppable frames past the soft cap are
    /// refused; anything past the hard cap closes the socket with 1013.
    /// A Socket.IO event for a recoverable socket gets its offset here.
    pub fn send(&mut self, conn: ConnId, frame: &Frame, prio: Priority) -> Offer {
        match super::recovery::stamp_direct(self.sessions, conn, frame) {
            Some(stamped) => self.offer(conn, &stamped, prio),
            None => self.offer(conn, frame, prio),
        }
    }

    /// [`Io::send`] of a frame as it is: shared frames, already stamped
    /// when they need an offset (`recovery.rs`).
    pub fn offer(&mut self, conn: ConnId, frame: &Frame, prio: Priority) -> Offer {
        if super::session::is_peer(conn) {
            if self.sessions.contains(conn) {
                self.stats.messages_sent += 1;
                self.to_peers.push((conn, frame.clone()));
                return Offer::Queued;
            }
            return Offer::Dropped;
        }
        let offer = self.out.send(conn, frame, prio);
        match offer {
            Offer::Queued => self.stats.messages_sent += 1,
            Offer::Dropped => self.stats.frames_dropped_slow += 1,
            Offer::OverHardCap => {
                self.stats.slow_consumers_closed += 1;
                self.close_with(
                    conn,
                    Close {
                        code: close_code::TRY_AGAIN_LATER,
                        reason: "slow consumer: send queue full",
                        discard_queued: true,
                    },
                );
            }
        }
        offer
    }

    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.out.queued_bytes(conn)
    }

    pub fn session(&self, conn: ConnId) -> Option<&Session> {
        self.sessions.get(conn)
    }

    pub fn session_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.sessions.get_mut(conn)
    }

    /// The dialect of a socket (JSON for anything without a session).
    pub fn dialect(&self, conn: ConnId) -> Dialect {
        self.sessions.get(conn).map_or(Dialect::Json, |s| s.dialect)
    }

    pub fn serial(&self, conn: ConnId) -> Option<u64> {
        self.sessions.get(conn).map(|s| s.serial)
    }

    /// Sends one event to one socket in its dialect.
    pub fn event(&mut self, conn: ConnId, ev: &Event<'_>) {
        let f = self.dialect(conn).encode(ev);
        self.send(conn, &f, Priority::Essential);
    }

    /// An `error` message; the socket stays open.
    pub fn error(&mut self, conn: ConnId, message: &str) {
        self.event(
            conn,
            &Event::Error {
                message,
                request_id: None,
            },
        );
    }

    /// Closes after what is already queued (a reply, an `error`).
    pub fn close(&mut self, conn: ConnId, code: u16, reason: &str) {
        self.close_with(
            conn,
            Close {
                code,
                reason,
                discard_queued: false,
            },
        );
    }

    fn close_with(&mut self, conn: ConnId, close: Close<'_>) {
        if self.closed.contains(&conn) || !self.sessions.contains(conn) {
            return;
        }
        if !super::session::is_peer(conn) {
            self.out.close(conn, close);
        }
        self.closed.push(conn);
    }

    /// An `error` message followed by a close (auth failures, 1008).
    pub fn error_and_close(&mut self, conn: ConnId, message: &str, code: u16) {
        self.error(conn, message);
        self.close(conn, code, message);
    }
}

/// One connection of a [`MemoryOutbox`].
#[derive(Debug, Default)]
pub struct MemoryConn {
    pub frames: Vec<Frame>,
    pub queued: usize,
    /// The close asked for: code, reason, whether the queue was discarded.
    pub closed: Option<(u16, String, bool)>,
}

/// An in-memory [`Outbox`] with the event loop's cap rules, for tests and
/// benchmarks of the hub without sockets.
#[derive(Debug)]
pub struct MemoryOutbox {
    pub conns: HashMap<ConnId, MemoryConn>,
    pub soft_cap: usize,
    pub hard_cap: usize,
}

impl MemoryOutbox {
    pub fn new(soft_cap: usize) -> Self {
        MemoryOutbox {
            conns: HashMap::new(),
            soft_cap,
            hard_cap: soft_cap.saturating_mul(2).max(soft_cap + (1 << 20)),
        }
    }

    /// Registers a connection (as the loop does on accept).
    pub fn open(&mut self, conn: ConnId) {
        self.conns.insert(conn, MemoryConn::default());
    }

    /// Takes the payloads queued for `conn` as text (as if the client read them).
    pub fn take_texts(&mut self, conn: ConnId) -> Vec<String> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        c.queued = 0;
        std::mem::take(&mut c.frames)
            .iter()
            .map(|f| String::from_utf8_lossy(ws::frame_payload(f)).into_owned())
            .collect()
    }

    pub fn closed(&self, conn: ConnId) -> Option<&(u16, String, bool)> {
        self.conns.get(&conn).and_then(|c| c.closed.as_ref())
    }
}

impl Outbox for MemoryOutbox {
    fn send(&mut self, conn: ConnId, frame: &Frame, prio: Priority) -> Offer {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Offer::Dropped;
        };
        if c.closed.is_some() {
            return Offer::Dropped;
        }
        let after = c.queued.saturating_add(frame.len());
        match prio {
            Priority::Droppable if after > self.soft_cap => Offer::Dropped,
            Priority::Essential if after > self.hard_cap => Offer::OverHardCap,
            _ => {
                c.queued = after;
                c.frames.push(frame.clone());
                Offer::Queued
            }
        }
    }

    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queued)
    }

    fn close(&mut self, conn: ConnId, close: Close<'_>) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if close.discard_queued {
                c.frames.clear();
                c.queued = 0;
            }
            c.frames.push(ws::close_frame(close.code, close.reason));
            c.closed = Some((close.code, close.reason.to_string(), close.discard_queued));
        }
    }
}
