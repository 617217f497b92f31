//! The hub's outbox as the event loop applies it: frames onto sockets'
//! queues (under their caps) and closes, and the one place a socket is
//! marked for flushing.

use std::time::Instant;

use slab::Slab;

use crate::hub::{Close, ConnId, Outbox};
use crate::writer::{Offer, Priority};
use crate::ws::Frame;
use crate::ws::deflate::Deflater;

use super::conn::Conn;

/// Puts a socket with newly queued bytes on the iteration's flush list, once.
pub fn mark_dirty(dirty: &mut Vec<usize>, c: &mut Conn, key: usize) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(key);
    }
}

/// The loop's sockets, as the hub's [`Outbox`].
pub struct LoopOutbox<'a> {
    pub conns: &'a mut Slab<Conn>,
    pub dirty: &'a mut Vec<usize>,
    pub now: Instant,
    /// The loop's compressor: a shared frame is compressed once for every
    /// socket that negotiated permessage-deflate.
    pub deflate: &'a mut Deflater,
}

impl Outbox for LoopOutbox<'_> {
    fn send(&mut self, conn: ConnId, frame: &Frame, prio: Priority) -> Offer {
        let Some(c) = self.conns.get_mut(conn) else {
            return Offer::Dropped;
        };
        if c.is_closing() {
            return Offer::Dropped;
        }
        let frame = if c.deflate {
            self.deflate.frame_for(frame)
        } else {
            frame.clone()
        };
        let offer = c.out.offer(frame, prio);
        match offer {
            Offer::Queued => mark_dirty(self.dirty, c, conn),
            Offer::Dropped => c.lossy = true,
            Offer::OverHardCap => {}
        }
        offer
    }

    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.conns.get(conn).map_or(0, |c| c.out.queued_bytes())
    }

    fn close(&mut self, conn: ConnId, close: Close<'_>) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        // The hub forgets the session itself.
        c.in_hub = false;
        c.begin_close(
            close.code,
            close.reason,
            close.discard_queued,
            super::linger_until(self.now, close.discard_queued),
        );
        mark_dirty(self.dirty, c, conn);
    }
}
