//! Container log topics: one follower per container, shared by every
//! subscriber. The follower of a local container is the Docker feed's
//! (`DockerRequest::Follow`); an agent's container is followed by its agent
//! (`subscribe_logs` / `unsubscribe_logs`, answered with `log_batch`).
//!
//! A log topic starts a follower for its first subscriber and stops it when
//! the last one leaves. Its [`LogFollow`] keeps the last lines in a
//! numbered ring ([`LogRing`]: every line has a `seq`, SPEC 7) so a later
//! subscriber gets its own `tail` (or, resuming, the lines after its
//! `since_seq`) from the ring and then joins the live stream in the same
//! loop iteration: no gap, no duplicate. Live lines that arrive together
//! leave together: one `log_update` frame per batch (split only between
//! lines, at `MAX_LOG_FRAME_BYTES`), published once through
//! [`Topics::publish`], carrying the `seq` of its last line.
//! Coalescing adapts to the rate: a line arriving more than
//! [`LOG_COALESCE`] after the topic's previous frame goes out at once; lines
//! arriving faster are held until that much time has passed since the
//! previous frame, so a busy container sends a few large frames instead of
//! one per line, and a quiet one is never delayed.
//!
//! Resume (SPEC 7): a stream outlives its follower. When the local engine
//! goes away (`Down`, or a follower that ended because the engine did) or
//! an agent disconnects, the topic is *suspended*: subscribers stay, the
//! ring stays. When the engine or agent is back, a new follower is started
//! for every suspended stream; its history is joined to the ring
//! ([`LogRing::seam`]) and only what follows is published, so subscribers
//! see each line once, and a `log_gap` only when the seam was not found
//! (lines were lost). A stream whose last subscriber left is kept idle for
//! a while ([`IdleLogs`]) so a client that lost its socket can come back
//! with `since_seq`; its follower is stopped meanwhile and restarted (and
//! joined the same way) when someone subscribes again.
//!
//! [`Topics::publish`]: super::Topics::publish
//! [`LogRing`]: super::logring::LogRing
//! [`LogRing::seam`]: super::logring::LogRing::seam
//! [`IdleLogs`]: super::logring::IdleLogs

use std::time::{Duration, Instant};

use crate::config::defaults::LOG_HISTORY_LINES;
use crate::feed::{DockerRequest, LogLine};
use crate::protocol::json::Event;

use super::logring::{After, LogRing};
use super::session::ConnId;
use super::topics::{Publish, TopicKey};
use super::{Io, State};

/// A `log_update` frame carries at most this many bytes of lines.
const MAX_LOG_FRAME_BYTES: usize = 64 << 10;
/// Minimum spacing of a topic's frames while lines keep coming.
pub const LOG_COALESCE: Duration = Duration::from_millis(2);

/// Where a subscriber's stream starts: its last `tail` lines, or (resuming)
/// the lines after `since_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub tail: usize,
    pub since_seq: Option<u64>,
}

/// The follower behind one container's log topic, and the stream's ring.
#[derive(Debug, Default)]
pub struct LogFollow {
    /// The Docker feed's follower id (local containers); 0 for an agent's
    /// and while no follower runs.
    pub follow_id: u64,
    /// Subscribers waiting for the stream's first history.
    pub waiting: Vec<(ConnId, Start)>,
    /// The ring holds the stream (its first history arrived).
    pub has_history: bool,
    pub ring: LogRing,
    /// The current follower's history while it arrives (`None` once it is
    /// complete, and while no follower runs).
    pub incoming: Option<Vec<LogLine>>,
    /// No follower runs (engine or agent away); restarted when it is back.
    pub suspended: bool,
    /// When the last live frame went out.
    pub last_frame: Option<Instant>,
    /// Lines held back because they came within `LOG_COALESCE` of the last frame.
    pub held: Vec<LogLine>,
}

/// Splits lines into newline-terminated chunks of at most `MAX_LOG_FRAME_BYTES`
/// (a longer single line travels alone, never split).
fn chunks<'a>(lines: impl IntoIterator<Item = &'a LogLine>) -> Vec<(String, u64)> {
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

/// Sends one subscriber where its stream starts, from the ring: a
/// `log_gap` first when lines it asked for are gone (or its `since_seq` is
/// not of this stream's epoch: then its `tail` follows), then the lines,
/// each frame with the `seq` of its last line.
fn serve(io: &mut Io<'_>, conn: ConnId, server: &str, container: &str, ring: &LogRing, at: Start) {
    let gap = |io: &mut Io<'_>, missed: Option<u64>| {
        io.event(
            conn,
            &Event::LogGap {
                server_id: server,
                container_id: container,
                missed,
            },
        );
    };
    let from = match at.since_seq.map(|n| ring.after(n)) {
        None => ring.tail_index(at.tail),
        Some(After::Held(i)) => i,
        Some(After::Gap(missed)) => {
            gap(io, Some(missed));
            0
        }
        Some(After::Unknown) => {
            gap(io, None);
            ring.tail_index(at.tail)
        }
    };
    let (first, lines) = ring.from_index(from);
    let mut seq = first.saturating_sub(1);
    for (log, n) in chunks(lines) {
        seq = seq.saturating_add(n);
        io.event(
            conn,
            &Event::LogUpdate {
                server_id: server,
                container_id: container,
                log: &log,
                seq,
            },
        );
    }
}

impl State {
    /// Leaves any topic; a log topic left empty stops its follower, and its
    /// stream is kept idle for a resume.
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
            } else if let (TopicKey::Logs { server, container }, false) = (key, f.suspended) {
                self.tell_agent(io, server, "unsubscribe_logs", container, None);
            }
            self.keep_idle(io, key, f);
        }
    }

    /// Keeps a stream nobody follows (its follower stopped) for a resume.
    fn keep_idle(&mut self, io: &mut Io<'_>, key: &TopicKey, mut f: Box<LogFollow>) {
        if !f.has_history {
            return;
        }
        // Held lines were never sent: the next follower's history brings
        // them again, after the seam.
        f.held.clear();
        f.waiting.clear();
        f.incoming = None;
        f.follow_id = 0;
        f.suspended = true;
        f.last_frame = None;
        self.idle_logs.keep(key.clone(), f, io.now);
    }

    /// `start_log_stream` for an already resolved container id of `server_id`
    /// (the local host's or an online agent's).
    pub(super) fn subscribe_logs(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        id: &str,
        at: Start,
    ) {
        let key = TopicKey::Logs {
            server: server_id.to_string(),
            container: id.to_string(),
        };
        // Already streaming (or no session): starting again is a no-op.
        if !self.topics.note_subscribed(io, &key, conn) {
            return;
        }
        let at = Start {
            tail: at.tail.min(LOG_HISTORY_LINES),
            ..at
        };
        if self.topics.entry(&key).log.is_none() {
            // A stream kept idle resumes where it was; else a new one.
            let follow = self.idle_logs.take(&key).unwrap_or_default();
            io.stats.log_followers += 1;
            self.topics.entry(&key).log = Some(follow);
            self.start_follower(io, &key);
        }
        let topic = self.topics.entry(&key);
        let Some(follow) = topic.log.as_mut() else {
            return;
        };
        if follow.has_history {
            serve(io, conn, server_id, id, &follow.ring, at);
            let d = io.dialect(conn);
            topic.subs.set(d).insert(conn);
        } else {
            follow.waiting.push((conn, at));
        }
    }

    /// Starts the follower of a log topic: the Docker feed's for a local
    /// container, the agent's otherwise. Its history is joined to the ring.
    pub(super) fn start_follower(&mut self, io: &mut Io<'_>, key: &TopicKey) {
        let TopicKey::Logs { server, container } = key else {
            return;
        };
        let local = *server == self.config.server_id;
        let follow_id = if local {
            let follow_id = self.next_follow_id;
            self.next_follow_id += 1;
            if let Some(d) = &self.docker {
                d.request(DockerRequest::Follow {
                    follow_id,
                    container_id: container.clone(),
                    tail: LOG_HISTORY_LINES,
                });
            }
            self.follows.insert(follow_id, key.clone());
            follow_id
        } else {
            self.tell_agent(
                io,
                server,
                "subscribe_logs",
                container,
                Some(LOG_HISTORY_LINES),
            );
            0
        };
        if let Some(f) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) {
            f.follow_id = follow_id;
            f.suspended = false;
            f.incoming = Some(Vec::new());
        }
    }

    /// History arrived: collect it; when it is `complete`, fill a new
    /// stream's ring and serve the waiting, or join a resumed stream's ring
    /// and publish what is new.
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
        let incoming = follow.incoming.get_or_insert_with(Vec::new);
        incoming.extend(lines);
        if incoming.len() > LOG_HISTORY_LINES {
            let extra = incoming.len() - LOG_HISTORY_LINES;
            incoming.drain(..extra);
        }
        if !complete {
            return;
        }
        let history = follow.incoming.take().unwrap_or_default();
        if follow.has_history {
            let seam = follow.ring.seam(&history);
            if seam.gap {
                let ev = Event::LogGap {
                    server_id: server,
                    container_id: container,
                    missed: None,
                };
                super::topics::fan_out(io, key, &topic.subs, &ev, Publish::ESSENTIAL);
            }
            let new: Vec<LogLine> = history.into_iter().skip(seam.new_from).collect();
            if !new.is_empty() {
                self.on_log_lines(io, key, new);
            }
            return;
        }
        for l in history {
            follow.ring.push(l);
        }
        follow.has_history = true;
        for (conn, at) in std::mem::take(&mut follow.waiting) {
            serve(io, conn, server, container, &follow.ring, at);
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

    /// One shared frame per chunk and dialect to every subscriber, each
    /// with the `seq` of its last line. The lines then join the ring: it
    /// holds only lines every subscriber has been sent, so a newcomer's
    /// history never repeats held lines.
    pub(super) fn send_live(&mut self, io: &mut Io<'_>, key: &TopicKey, lines: Vec<LogLine>) {
        let TopicKey::Logs { server, container } = key else {
            return;
        };
        let Some(mut seq) = self
            .topics
            .get(key)
            .and_then(|t| t.log.as_ref())
            .map(|f| f.ring.last_seq())
        else {
            return;
        };
        for (log, n) in chunks(&lines) {
            seq = seq.saturating_add(n);
            let ev = Event::LogUpdate {
                server_id: server,
                container_id: container,
                log: &log,
                seq,
            };
            self.topics.publish(io, key, &ev, Publish::lines(n));
        }
        if let Some(follow) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) {
            for l in lines {
                follow.ring.push(l);
            }
        }
    }

    /// The follower ended: tell every subscriber, end the topic. Its stream
    /// is kept idle (unless the container is gone): a container started
    /// again and followed again goes on with the same numbering, so a
    /// client resuming with `since_seq` gets just the new lines.
    pub(super) fn on_log_ended(&mut self, io: &mut Io<'_>, key: &TopicKey, reason: &str) {
        let key = key.clone();
        // Lines held for coalescing go out before the stop notice.
        self.flush_held_of(io, &key);
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
        if let Some(f) = topic.log.filter(|_| reason != "container removed") {
            self.keep_idle(io, &key, f);
        }
    }

    /// Sends the lines a topic holds for coalescing now.
    pub(super) fn flush_held_of(&mut self, io: &mut Io<'_>, key: &TopicKey) {
        self.held_logs.remove(key);
        let held = self
            .topics
            .get_mut(key)
            .and_then(|t| t.log.as_mut())
            .map(|f| std::mem::take(&mut f.held));
        if let Some(held) = held.filter(|h| !h.is_empty()) {
            self.send_live(io, key, held);
        }
    }

    /// Routes a log event from the Docker feed.
    pub(super) fn on_log_event(&mut self, io: &mut Io<'_>, ev: LogEvent) {
        let f = match &ev {
            LogEvent::History(f, _) | LogEvent::Lines(f, _) | LogEvent::Ended(f, ..) => *f,
        };
        let Some(key) = self.follows.get(&f).cloned() else {
            return;
        };
        match ev {
            LogEvent::History(_, lines) => self.on_log_history(io, &key, lines, true),
            LogEvent::Lines(_, lines) => self.on_log_lines(io, &key, lines),
            // The engine went away under the follower: resumed when it is back.
            LogEvent::Ended(_, _, true) => self.suspend_log(io, &key),
            LogEvent::Ended(_, reason, false) => self.on_log_ended(io, &key, &reason),
        }
    }
}

/// The log part of a Docker feed event.
pub(super) enum LogEvent {
    History(u64, Vec<LogLine>),
    Lines(u64, Vec<LogLine>),
    /// Follow id, reason, and whether the engine went away (not the container).
    Ended(u64, String, bool),
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
