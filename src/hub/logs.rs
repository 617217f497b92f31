//! Container log topics: one follower per container, shared by every
//! subscriber. The follower of a local container is the Docker feed's
//! (`DockerRequest::Follow`); an agent's container is followed by its agent
//! (`subscribe_logs` / `unsubscribe_logs`, answered with `log_batch`).
//!
//! A log topic starts a follower for its first subscriber and stops it when
//! the last one leaves. Its [`LogFollow`] keeps the last `LOG_HISTORY_LINES`
//! lines in a ring so a later subscriber gets its own `tail` from the ring
//! and then joins the live stream in the same loop iteration: no gap, no
//! duplicate. Live lines that arrive together leave together: one
//! `log_update` frame per batch (split only between lines, at
//! `MAX_LOG_FRAME_BYTES`), published once through [`Topics::publish`].
//! Coalescing adapts to the rate: a line arriving more than
//! [`LOG_COALESCE`] after the topic's previous frame goes out at once; lines
//! arriving faster are held until that much time has passed since the
//! previous frame, so a busy container sends a few large frames instead of
//! one per line, and a quiet one is never delayed.
//!
//! [`Topics::publish`]: super::Topics::publish

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::defaults::LOG_HISTORY_LINES;
use crate::feed::{DockerRequest, LogLine};
use crate::protocol::json::Event;

use super::session::ConnId;
use super::topics::{Publish, TopicKey};
use super::{Io, State};

/// A `log_update` frame carries at most this many bytes of lines.
const MAX_LOG_FRAME_BYTES: usize = 64 << 10;
/// Minimum spacing of a topic's frames while lines keep coming.
pub const LOG_COALESCE: Duration = Duration::from_millis(2);

/// The follower behind one container's log topic.
#[derive(Debug, Default)]
pub struct LogFollow {
    /// The Docker feed's follower id (local containers); 0 for an agent's.
    pub follow_id: u64,
    /// Subscribers waiting for the follower's history: (conn, tail).
    pub waiting: Vec<(ConnId, usize)>,
    pub has_history: bool,
    pub ring: VecDeque<String>,
    /// When the last live frame went out.
    pub last_frame: Option<Instant>,
    /// Lines held back because they came within `LOG_COALESCE` of the last frame.
    pub held: Vec<LogLine>,
}

impl LogFollow {
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

impl State {
    /// Leaves any topic; a log topic left empty stops its follower.
    pub(super) fn leave_topic(&mut self, io: &mut Io<'_>, key: &TopicKey, conn: ConnId) {
        let Some(topic) = self.topics.unsubscribe(io, key, conn) else {
            return;
        };
        if let TopicKey::Stats(server) = key {
            self.update_sampling(io, server);
        }
        if let Some(f) = topic.log {
            self.held_logs.remove(key);
            io.stats.log_followers = io.stats.log_followers.saturating_sub(1);
            if f.follow_id != 0 {
                self.follows.remove(&f.follow_id);
                if let Some(d) = &self.docker {
                    d.request(DockerRequest::Unfollow {
                        follow_id: f.follow_id,
                    });
                }
            } else if let TopicKey::Logs { server, container } = key {
                self.tell_agent(io, server, "unsubscribe_logs", container, None);
            }
        }
    }

    /// `start_log_stream` for an already resolved container id of `server_id`
    /// (the local host's or an online agent's).
    pub(super) fn subscribe_logs(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        id: &str,
        tail: usize,
    ) {
        let key = TopicKey::Logs {
            server: server_id.to_string(),
            container: id.to_string(),
        };
        // Already streaming (or no session): starting again is a no-op.
        if !self.topics.note_subscribed(io, &key, conn) {
            return;
        }
        let tail = tail.min(LOG_HISTORY_LINES);
        let local = server_id == self.config.server_id;
        if self.topics.entry(&key).log.is_none() {
            let follow_id = if local {
                let follow_id = self.next_follow_id;
                self.next_follow_id += 1;
                if let Some(d) = &self.docker {
                    d.request(DockerRequest::Follow {
                        follow_id,
                        container_id: id.to_string(),
                        tail: LOG_HISTORY_LINES,
                    });
                }
                self.follows.insert(follow_id, key.clone());
                follow_id
            } else {
                self.tell_agent(io, server_id, "subscribe_logs", id, Some(LOG_HISTORY_LINES));
                0
            };
            io.stats.log_followers += 1;
            self.topics.entry(&key).log = Some(Box::new(LogFollow {
                follow_id,
                ..LogFollow::default()
            }));
        }
        let topic = self.topics.entry(&key);
        let Some(follow) = topic.log.as_mut() else {
            return;
        };
        if follow.has_history {
            let h = follow.history(tail);
            if !h.is_empty() {
                io.event(
                    conn,
                    &Event::LogUpdate {
                        server_id,
                        container_id: id,
                        log: &h,
                    },
                );
            }
            let d = io.dialect(conn);
            topic.subs.set(d).insert(conn);
        } else {
            follow.waiting.push((conn, tail));
        }
    }

    /// History arrived: fill the ring; when it is `complete`, serve the waiting.
    pub(super) fn on_log_history(
        &mut self,
        io: &mut Io<'_>,
        key: &TopicKey,
        lines: Vec<LogLine>,
        complete: bool,
    ) {
        let TopicKey::Logs { server, container } = key else {
            return;
        };
        let Some(topic) = self.topics.get_mut(key) else {
            return;
        };
        let Some(follow) = topic.log.as_mut() else {
            return;
        };
        for l in lines {
            follow.push_ring(l.text);
        }
        if !complete {
            return;
        }
        follow.has_history = true;
        for (conn, tail) in std::mem::take(&mut follow.waiting) {
            let h = follow.history(tail);
            if !h.is_empty() {
                io.event(
                    conn,
                    &Event::LogUpdate {
                        server_id: server,
                        container_id: container,
                        log: &h,
                    },
                );
            }
            let d = io.dialect(conn);
            topic.subs.set(d).insert(conn);
        }
    }

    /// Live lines: sent now, or held briefly when the topic is busy.
    pub(super) fn on_log_lines(&mut self, io: &mut Io<'_>, key: &TopicKey, lines: Vec<LogLine>) {
        let now = io.now;
        if let TopicKey::Logs { server, container } = key {
            let texts = lines.iter().map(|l| l.text.as_str());
            self.alerts_on_log_lines(io, server, container, texts);
        }
        let Some(follow) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) else {
            return;
        };
        let busy = follow
            .last_frame
            .is_some_and(|t| now.duration_since(t) < LOG_COALESCE);
        if busy || !follow.held.is_empty() {
            follow.held.extend(lines);
            self.held_logs.insert(key.clone());
            return;
        }
        follow.last_frame = Some(now);
        self.send_live(io, key, lines);
    }

    /// When the earliest held batch is due (the loop's poll deadline).
    pub(super) fn next_log_deadline(&self) -> Option<Instant> {
        self.held_logs
            .iter()
            .filter_map(|k| self.topics.get(k)?.log.as_ref())
            .filter_map(|f| f.last_frame)
            .min()
            .map(|t| t + LOG_COALESCE)
    }

    /// Sends every held batch whose topic's spacing has passed.
    pub(super) fn flush_held_logs(&mut self, io: &mut Io<'_>) {
        if self.held_logs.is_empty() {
            return;
        }
        let now = io.now;
        let keys: Vec<TopicKey> = self.held_logs.iter().cloned().collect();
        for key in keys {
            let Some(follow) = self.topics.get_mut(&key).and_then(|t| t.log.as_mut()) else {
                self.held_logs.remove(&key);
                continue;
            };
            if follow
                .last_frame
                .is_some_and(|l| now.duration_since(l) < LOG_COALESCE)
            {
                continue;
            }
            self.held_logs.remove(&key);
            let lines = std::mem::take(&mut follow.held);
            follow.last_frame = Some(now);
            self.send_live(io, &key, lines);
        }
    }

    /// One shared frame per chunk and dialect to every subscriber.
    /// The lines then join the ring: it holds only lines every subscriber
    /// has been sent, so a newcomer's history never repeats held lines.
    fn send_live(&mut self, io: &mut Io<'_>, key: &TopicKey, lines: Vec<LogLine>) {
        let TopicKey::Logs { server, container } = key else {
            return;
        };
        for (log, n) in chunks(&lines) {
            let ev = Event::LogUpdate {
                server_id: server,
                container_id: container,
                log: &log,
            };
            self.topics.publish(io, key, &ev, Publish::lines(n));
        }
        if let Some(follow) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) {
            for l in lines {
                follow.push_ring(l.text);
            }
        }
    }

    /// The follower ended: tell every subscriber, forget the topic.
    pub(super) fn on_log_ended(&mut self, io: &mut Io<'_>, key: &TopicKey, reason: &str) {
        let key = key.clone();
        // Lines held for coalescing go out before the stop notice.
        self.held_logs.remove(&key);
        let held = self
            .topics
            .get_mut(&key)
            .and_then(|t| t.log.as_mut())
            .map(|f| std::mem::take(&mut f.held));
        if let Some(held) = held.filter(|h| !h.is_empty()) {
            self.send_live(io, &key, held);
        }
        let Some(id) = self.topics.id_of(&key) else {
            return;
        };
        let Some(topic) = self.topics.remove(&key) else {
            return;
        };
        if let Some(f) = topic.log.as_ref().filter(|f| f.follow_id != 0) {
            self.follows.remove(&f.follow_id);
        }
        io.stats.log_followers = io.stats.log_followers.saturating_sub(1);
        let TopicKey::Logs { server, container } = &key else {
            return;
        };
        let ev = Event::LogStreamStopped {
            server_id: server,
            container_id: container,
            message: reason,
        };
        super::topics::fan_out(io, &key, &topic.subs, &ev, Publish::ESSENTIAL);
        let waiting: Vec<ConnId> = topic
            .log
            .as_ref()
            .map(|f| f.waiting.iter().map(|(c, _)| *c).collect())
            .unwrap_or_default();
        for &c in &waiting {
            io.event(c, &ev);
        }
        let everyone: Vec<ConnId> = topic.subs.all().chain(waiting).collect();
        for c in everyone {
            if let Some(s) = io.session_mut(c) {
                s.topics.retain(|t| *t != id);
            }
            io.sessions.forget_dropped(c, &key);
        }
    }

    /// Ends every local log topic (the engine went away).
    pub(super) fn end_all_topics(&mut self, io: &mut Io<'_>, reason: &str) {
        let keys: Vec<TopicKey> = self.follows.values().cloned().collect();
        for key in keys {
            self.on_log_ended(io, &key, reason);
        }
    }

    /// Routes a log event from the Docker feed.
    pub(super) fn on_log_event(&mut self, io: &mut Io<'_>, ev: LogEvent) {
        let f = match &ev {
            LogEvent::History(f, _) | LogEvent::Lines(f, _) | LogEvent::Ended(f, _) => *f,
        };
        let Some(key) = self.follows.get(&f).cloned() else {
            return;
        };
        match ev {
            LogEvent::History(_, lines) => self.on_log_history(io, &key, lines, true),
            LogEvent::Lines(_, lines) => self.on_log_lines(io, &key, lines),
            LogEvent::Ended(_, reason) => self.on_log_ended(io, &key, &reason),
        }
    }
}

/// The log part of a Docker feed event.
pub(super) enum LogEvent {
    History(u64, Vec<LogLine>),
    Lines(u64, Vec<LogLine>),
    Ended(u64, String),
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
