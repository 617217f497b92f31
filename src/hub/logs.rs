//! Log topics: one Docker follower per container, shared by every subscriber.
//!
//! A topic starts a follower for its first subscriber and stops it when the
//! last one leaves. It keeps the last `LOG_HISTORY_LINES` lines in a ring so
//! a later subscriber gets its own `tail` from the ring and then joins the
//! live stream in the same loop iteration: no gap, no duplicate.
//! Live lines that arrive together leave together: one `log_update` frame per
//! batch (split only between lines, at `MAX_LOG_FRAME_BYTES`), encoded once
//! per dialect and shared. Coalescing adapts to the rate: a line arriving
//! more than [`LOG_COALESCE`] after the topic's previous frame goes out at
//! once; lines arriving faster are held until that much time has passed
//! since the previous frame, so a busy container sends a few large frames
//! instead of one per line, and a quiet one is never delayed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::defaults::LOG_HISTORY_LINES;
use crate::feed::{DockerRequest, LogLine};
use crate::protocol::json::{Dialect, Event};
use crate::writer::{Offer, Priority};

use super::{DialectSets, Hub, Io};

/// A `log_update` frame carries at most this many bytes of lines.
const MAX_LOG_FRAME_BYTES: usize = 64 << 10;
/// Minimum spacing of a topic's frames while lines keep coming.
pub const LOG_COALESCE: Duration = Duration::from_millis(2);

/// One followed container.
#[derive(Debug)]
pub struct LogTopic {
    pub follow_id: u64,
    pub subs: DialectSets,
    /// Subscribers waiting for the follower's history: (token, tail).
    pub waiting: Vec<(usize, usize)>,
    pub has_history: bool,
    pub ring: VecDeque<String>,
    /// When the last live frame went out.
    pub last_frame: Option<Instant>,
    /// Lines held back because they came within `LOG_COALESCE` of the last frame.
    pub held: Vec<LogLine>,
}

impl LogTopic {
    fn push_ring(&mut self, line: String) {
        if self.ring.len() == LOG_HISTORY_LINES {
            self.ring.pop_front();
        }
        self.ring.push_back(line);
    }

    /// The last `tail` lines of the ring, newline-terminated.
    fn history(&self, tail: usize) -> String {
        let skip = self.ring.len().saturating_sub(tail);
        let mut s = String::new();
        for l in self.ring.iter().skip(skip) {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// Splits lines into newline-terminated chunks of at most `MAX_LOG_FRAME_BYTES`
/// (a longer single line travels alone, never split).
fn chunks(lines: &[LogLine]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut n = 0u64;
    for l in lines {
        if !cur.is_empty() && cur.len() + l.text.len() + 1 > MAX_LOG_FRAME_BYTES {
            out.push((std::mem::take(&mut cur), n));
            n = 0;
        }
        cur.push_str(&l.text);
        cur.push('\n');
        n += 1;
    }
    if !cur.is_empty() {
        out.push((cur, n));
    }
    out
}

impl Hub {
    /// `start_log_stream` for an already resolved container id.
    pub fn subscribe_logs(&mut self, io: &mut Io<'_>, token: usize, id: &str, tail: usize) {
        let dialect = io.dialect(token);
        let Some(session) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) else {
            return;
        };
        if session.log_streams.iter().any(|s| s == id) {
            return; // already streaming: starting again is a no-op
        }
        session.log_streams.push(id.to_string());
        let tail = tail.min(LOG_HISTORY_LINES);
        let topic = match self.topics.get_mut(id) {
            Some(t) => t,
            None => {
                let follow_id = self.next_follow_id;
                self.next_follow_id += 1;
                if let Some(d) = &self.docker {
                    d.request(DockerRequest::Follow {
                        follow_id,
                        container_id: id.to_string(),
                        tail: LOG_HISTORY_LINES,
                    });
                }
                io.stats.log_followers += 1;
                self.follows.insert(follow_id, id.to_string());
                self.topics.entry(id.to_string()).or_insert(LogTopic {
                    follow_id,
                    subs: DialectSets::default(),
                    waiting: Vec::new(),
                    has_history: false,
                    ring: VecDeque::new(),
                    last_frame: None,
                    held: Vec::new(),
                })
            }
        };
        if topic.has_history {
            let h = topic.history(tail);
            if !h.is_empty() {
                io.event(
                    token,
                    &Event::LogUpdate {
                        container_id: id,
                        log: &h,
                    },
                );
            }
            topic.subs.set(dialect).insert(token);
        } else {
            topic.waiting.push((token, tail));
        }
    }

    /// Removes one subscriber; stops the follower when it was the last.
    pub fn unsubscribe_logs(&mut self, io: &mut Io<'_>, token: usize, id: &str) {
        if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
            s.log_streams.retain(|x| x != id);
            s.dropped.retain(|(x, _)| x != id);
        }
        let Some(topic) = self.topics.get_mut(id) else {
            return;
        };
        topic.subs.remove(token);
        topic.waiting.retain(|(t, _)| *t != token);
        if topic.subs.is_empty() && topic.waiting.is_empty() {
            let follow_id = topic.follow_id;
            self.topics.remove(id);
            self.follows.remove(&follow_id);
            io.stats.log_followers = io.stats.log_followers.saturating_sub(1);
            if let Some(d) = &self.docker {
                d.request(DockerRequest::Unfollow { follow_id });
            }
        }
    }

    /// The follower's history arrived: fill the ring, serve the waiting.
    pub fn on_log_history(&mut self, io: &mut Io<'_>, follow_id: u64, lines: Vec<LogLine>) {
        let Some(id) = self.follows.get(&follow_id).cloned() else {
            return;
        };
        let Some(topic) = self.topics.get_mut(&id) else {
            return;
        };
        for l in lines {
            topic.push_ring(l.text);
        }
        topic.has_history = true;
        for (token, tail) in std::mem::take(&mut topic.waiting) {
            let h = topic.history(tail);
            if !h.is_empty() {
                io.event(
                    token,
                    &Event::LogUpdate {
                        container_id: &id,
                        log: &h,
                    },
                );
            }
            let d = io.dialect(token);
            topic.subs.set(d).insert(token);
        }
    }

    /// Live lines: sent now, or held briefly when the topic is busy.
    pub fn on_log_lines(&mut self, io: &mut Io<'_>, follow_id: u64, lines: Vec<LogLine>) {
        let now = io.now;
        let Some(id) = self.follows.get(&follow_id) else {
            return;
        };
        let Some(topic) = self.topics.get_mut(id) else {
            return;
        };
        let busy = topic
            .last_frame
            .is_some_and(|t| now.duration_since(t) < LOG_COALESCE);
        if busy || !topic.held.is_empty() {
            if topic.held.is_empty() {
                topic.held = lines;
            } else {
                topic.held.extend(lines);
            }
            self.held_topics.insert(id.clone());
            return;
        }
        topic.last_frame = Some(now);
        let id = id.clone();
        self.send_live(io, &id, lines);
    }

    /// When the earliest held batch is due (the loop's poll deadline).
    pub fn next_log_deadline(&self) -> Option<Instant> {
        self.held_topics
            .iter()
            .filter_map(|id| self.topics.get(id)?.last_frame)
            .min()
            .map(|t| t + LOG_COALESCE)
    }

    /// Sends every held batch whose topic's spacing has passed.
    pub fn flush_held_logs(&mut self, io: &mut Io<'_>) {
        if self.held_topics.is_empty() {
            return;
        }
        let now = io.now;
        let due: Vec<String> = self
            .held_topics
            .iter()
            .filter(|id| {
                self.topics.get(*id).is_none_or(|t| {
                    t.last_frame
                        .is_none_or(|l| now.duration_since(l) >= LOG_COALESCE)
                })
            })
            .cloned()
            .collect();
        for id in due {
            self.held_topics.remove(&id);
            let Some(topic) = self.topics.get_mut(&id) else {
                continue;
            };
            let lines = std::mem::take(&mut topic.held);
            topic.last_frame = Some(now);
            self.send_live(io, &id, lines);
        }
    }

    /// One shared frame per chunk and dialect to every subscriber.
    /// The lines then join the ring: it holds only lines every subscriber
    /// has been sent, so a newcomer's history never repeats held lines.
    fn send_live(&mut self, io: &mut Io<'_>, id: &str, lines: Vec<LogLine>) {
        let resume_below = self.config.max_queued_bytes / 2;
        let Some(topic) = self.topics.get(id) else {
            return;
        };
        for (log, n) in chunks(&lines) {
            let ev = Event::LogUpdate {
                container_id: id,
                log: &log,
            };
            for (dialect, set) in [
                (Dialect::Json, &topic.subs.json),
                (Dialect::SocketIo, &topic.subs.sio),
            ] {
                if set.is_empty() {
                    continue;
                }
                let frame = crate::protocol::json::encode(&ev, dialect);
                io.stats.log_frames_encoded += 1;
                for &t in set.tokens() {
                    // A socket that lost lines hears how many before it gets
                    // new ones, and only once it has drained to half its cap.
                    if has_dropped(io, t) && !report_dropped_if_drained(io, t, resume_below) {
                        io.stats.log_lines_dropped += n;
                        note_dropped(io, t, id, n);
                        continue;
                    }
                    if io.send(t, &frame, Priority::Droppable) == Offer::Dropped {
                        io.stats.log_lines_dropped += n;
                        note_dropped(io, t, id, n);
                    }
                }
            }
            io.stats.message_out("log_update", topic.subs.len() as u64);
        }
        if let Some(topic) = self.topics.get_mut(id) {
            for l in lines {
                topic.push_ring(l.text);
            }
        }
    }

    /// The follower ended: tell every subscriber, forget the topic.
    pub fn on_log_ended(&mut self, io: &mut Io<'_>, follow_id: u64, reason: &str) {
        let Some(id) = self.follows.get(&follow_id).cloned() else {
            return;
        };
        // Lines held for coalescing go out before the stop notice.
        self.held_topics.remove(&id);
        let held = self
            .topics
            .get_mut(&id)
            .map(|t| std::mem::take(&mut t.held));
        if let Some(held) = held.filter(|h| !h.is_empty()) {
            self.send_live(io, &id, held);
        }
        self.follows.remove(&follow_id);
        let Some(topic) = self.topics.remove(&id) else {
            return;
        };
        io.stats.log_followers = io.stats.log_followers.saturating_sub(1);
        let ev = Event::LogStreamStopped {
            container_id: &id,
            message: reason,
        };
        io.broadcast(&topic.subs, &ev, Priority::Essential);
        let waiting: Vec<usize> = topic.waiting.iter().map(|(t, _)| *t).collect();
        for &t in &waiting {
            io.event(t, &ev);
        }
        for t in topic
            .subs
            .json
            .tokens()
            .iter()
            .chain(topic.subs.sio.tokens())
            .chain(waiting.iter())
        {
            if let Some(s) = io.conns.get_mut(*t).and_then(|c| c.session.as_mut()) {
                s.log_streams.retain(|x| x != &id);
            }
        }
    }

    /// Ends every topic (the engine went away).
    pub fn end_all_topics(&mut self, io: &mut Io<'_>, reason: &str) {
        let ids: Vec<u64> = self.follows.keys().copied().collect();
        for f in ids {
            self.on_log_ended(io, f, reason);
        }
    }

    /// After a flush drained a socket below half its soft cap, report the
    /// lines it missed with `log_dropped`.
    pub fn report_dropped(io: &mut Io<'_>, token: usize) {
        let Some(c) = io.conns.get_mut(token) else {
            return;
        };
        let Some(s) = c.session.as_mut() else { return };
        if s.dropped.is_empty() {
            return;
        }
        let dropped = std::mem::take(&mut s.dropped);
        for (id, lines) in dropped {
            io.event(
                token,
                &Event::LogDropped {
                    container_id: &id,
                    lines,
                },
            );
        }
    }
}

fn has_dropped(io: &Io<'_>, token: usize) -> bool {
    io.conns
        .get(token)
        .and_then(|c| c.session.as_ref())
        .is_some_and(|s| !s.dropped.is_empty())
}

/// Sends the pending `log_dropped` notices when the queue is below `below`.
fn report_dropped_if_drained(io: &mut Io<'_>, token: usize, below: usize) -> bool {
    let queued = io
        .conns
        .get(token)
        .map_or(usize::MAX, |c| c.out.queued_bytes());
    if queued >= below {
        return false;
    }
    Hub::report_dropped(io, token);
    true
}

fn note_dropped(io: &mut Io<'_>, token: usize, id: &str, n: u64) {
    if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
        match s.dropped.iter_mut().find(|(x, _)| x == id) {
            Some((_, c)) => *c += n,
            None => s.dropped.push((id.to_string(), n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::LogStream;

    fn line(t: &str) -> LogLine {
        LogLine {
            stream: LogStream::Stdout,
            timestamp: String::new(),
            text: t.into(),
        }
    }

    #[test]
    fn chunks_never_split_lines_and_keep_order() {
        let big = "x".repeat(40 << 10);
        let lines = vec![line("a"), line(&big), line(&big), line("b")];
        let c = chunks(&lines);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].1 + c[1].1, 4);
        let joined: String = c.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(joined, format!("a\n{big}\n{big}\nb\n"));
        assert!(c.iter().all(|(s, _)| s.ends_with('\n')));
    }
}
