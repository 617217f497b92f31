//! WebSocket messages on an open connection: frames are read from the
//! input buffer (a capped number per iteration, paused while the queue is
//! over its cap), control frames answered by the loop under the caps, and
//! everything else handed to the hub.

use std::time::Instant;

use crate::hub::Input;
use crate::stats::Endpoint;
use crate::writer::{Offer, Priority};
use crate::ws::{self, Incoming, OpCode, close_code};

use super::conn::Phase;
use super::outbox::mark_dirty;
use super::{LINGER, MAX_MESSAGES_PER_EVENT, Server};

impl Server {
    pub(super) fn on_ws_bytes(&mut self, key: usize, now: Instant) {
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
            let msg = match reader.read_inflating(&mut c.inbuf, Some(&mut self.inflater)) {
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
        let deflate = c.deflate;
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
            // The echo answers compressed when the client negotiated it (Autobahn 12, 13).
            Incoming::Binary(b) if endpoint == Endpoint::Echo => {
                self.echo(deflate, OpCode::Binary, &b)
            }
            Incoming::Text(t) if endpoint == Endpoint::Echo => {
                self.echo(deflate, OpCode::Text, t.as_bytes())
            }
            Incoming::Binary(b) => {
                return self.hub_input(
                    now,
                    Input::Binary {
                        conn: key,
                        data: &b,
                    },
                );
            }
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

    /// The echo endpoint's answer: every message compressed when the client
    /// negotiated permessage-deflate (however small: it is a conformance
    /// target, and a compressed echo is what Autobahn 12 and 13 check).
    fn echo(&mut self, deflate: bool, opcode: OpCode, payload: &[u8]) -> ws::Frame {
        if deflate && let Some(f) = self.deflater.compress(opcode, payload, true) {
            return f;
        }
        ws::encode_frame(opcode, payload)
    }

    /// Queues a frame the loop itself answers with (pong, echo) under the caps.
    pub(super) fn queue_own(&mut self, key: usize, frame: ws::Frame, now: Instant) {
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
}
