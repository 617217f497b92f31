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
use crate::protocol::filter::{LogFilter, LogFilterSpec, line_level};
use crate::protocol::json::Event;

use super::logring::{After, LogRing};
use super::session::ConnId;
use super::topics::{DialectSets, Publish, Topic, TopicKey};
use super::{Io, State};

/// Most distinct filters one container's stream serves at once (each costs
/// a match of every line; see docs/performance.md).
pub const MAX_FILTERS_PER_CONTAINER: usize = 1024;
/// Most filtered log streams one socket holds.
pub const MAX_FILTERED_STREAMS_PER_SOCKET: usize = 64;

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
    /// The subscriber's filter group ([`LogFollow::groups`]), if filtered.
    pub group: Option<usize>,
}

/// The subscribers of one distinct filter of a stream (SPEC 12): a topic
/// of its own inside the container's, fed by the same follower, its frames
/// encoded once for all of them.
#[derive(Debug)]
pub struct FilterGroup {
    pub filter: LogFilter,
    pub subs: DialectSets,
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
    /// Its stored history (cluster, `log_store.rs`) is being loaded; the
    /// follower starts when it is here (since when: it is given up on
    /// after [`LOAD_GIVE_UP`](super::log_store::LOAD_GIVE_UP)).
    pub loading: Option<Instant>,
    /// A relayed stream whose owner said its numbering may have changed:
    /// the owner's next numbers are taken as they come.
    pub renumber: bool,
    /// Filtered subscribers, one group per distinct filter; the topic's own
    /// `subs` are the unfiltered ones. A group lives while anyone is in it
    /// or waiting for it.
    pub groups: slab::Slab<FilterGroup>,
}

impl LogFollow {
    /// The filter group `conn` is in (or waiting for).
    pub fn group_of(&self, conn: ConnId) -> Option<usize> {
        self.groups
            .iter()
            .find(|(_, g)| g.subs.contains(conn))
            .map(|(i, _)| i)
            .or_else(|| {
                self.waiting
                    .iter()
                    .find(|(c, _)| *c == conn)
                    .and_then(|(_, at)| at.group)
            })
    }

    /// Takes `conn` out of the waiting list and its group; a group left
    /// with nobody goes.
    pub fn leave(&mut self, conn: ConnId) {
        self.waiting.retain(|(c, _)| *c != conn);
        let waited: Vec<usize> = self.waiting.iter().filter_map(|(_, at)| at.group).collect();
        self.groups.retain(|i, g| {
            g.subs.remove(conn);
            !g.subs.is_empty() || waited.contains(&i)
        });
    }

    /// Nobody filtered is in the stream or waiting for it.
    pub fn is_unwatched(&self) -> bool {
        self.waiting.is_empty() && self.groups.is_empty()
    }

    /// Every subscriber set: the unfiltered (`subs`) and each group's.
    pub(super) fn all_sets<'a>(
        &'a self,
        subs: &'a DialectSets,
    ) -> impl Iterator<Item = &'a DialectSets> {
        std::iter::once(subs).chain(self.groups.iter().map(|(_, g)| &g.subs))
    }
}

/// Puts a subscriber whose history was sent into the live stream: its
/// filter group's set, or the topic's own.
fn join(topic: &mut Topic, conn: ConnId, d: crate::protocol::Dialect, group: Option<usize>) {
    let set = match (group, topic.log.as_mut()) {
        (Some(g), Some(f)) if f.groups.contains(g) => &mut f.groups[g].subs,
        _ => &mut topic.subs,
    };
    set.set(d).insert(conn);
}

/// One frame's worth of lines: the text and the `seq` of its last line.
struct Chunk {
    text: String,
    lines: u64,
    last_seq: u64,
}

/// Splits numbered lines (`(seq, line)`) into newline-terminated chunks of
/// at most `MAX_LOG_FRAME_BYTES` (a longer single line travels alone, never
/// split). With a filter the numbers have gaps: each chunk carries the
/// `seq` of its own last line.
fn chunks<'a>(lines: impl IntoIterator<Item = (u64, &'a LogLine)>) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut cur = Chunk {
        text: String::new(),
        lines: 0,
        last_seq: 0,
    };
    for (seq, l) in lines {
        if cur.lines > 0 && cur.text.len() + l.text.len() + 1 > MAX_LOG_FRAME_BYTES {
            out.push(std::mem::replace(
                &mut cur,
                Chunk {
                    text: String::new(),
                    lines: 0,
                    last_seq: 0,
                },
            ));
        }
        cur.text.push_str(&l.text);
        cur.text.push('\n');
        cur.lines += 1;
        cur.last_seq = seq;
    }
    if cur.lines > 0 {
        out.push(cur);
    }
    out
}

/// Lines numbered from `first`.
fn numbered<'a>(
    first: u64,
    lines: impl IntoIterator<Item = &'a LogLine>,
) -> impl Iterator<Item = (u64, &'a LogLine)> {
    lines
        .into_iter()
        .enumerate()
        .map(move |(i, l)| (first.saturating_add(i as u64), l))
}

/// Sends one subscriber where its stream starts, from the ring: a
/// `log_gap` first when lines it asked for are gone (or its `since_seq` is
/// not of this stream's epoch: then its `tail` follows), then the lines,
/// each frame with the `seq` of its last line.
fn serve(
    io: &mut Io<'_>,
    conn: ConnId,
    server: &str,
    container: &str,
    follow: &LogFollow,
    at: Start,
) {
    let ring = &follow.ring;
    let filter = at
        .group
        .and_then(|g| follow.groups.get(g))
        .map(|g| &g.filter);
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
    let lines = numbered(first, lines).filter(|(_, l)| filter.is_none_or(|f| f.matches(l)));
    for c in chunks(lines) {
        io.event(
            conn,
            &Event::LogUpdate {
                server_id: server,
                container_id: container,
                log: &c.text,
                seq: c.last_seq,
            },
        );
    }
    // Another hub (`cluster.rs`) must know where its history ends, even
    // an empty one: what follows is live.
    if super::session::is_peer(conn) {
        let mut fields = serde_json::Map::new();
        fields.insert("server_id".into(), server.into());
        fields.insert("container_id".into(), container.into());
        io.event(
            conn,
            &Event::Object {
                name: "log_history_end",
                fields: &fields,
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
        f.groups.clear();
        f.incoming = None;
        f.follow_id = 0;
        f.suspended = true;
        f.last_frame = None;
        self.idle_logs.keep(key.clone(), f, io.now);
    }

    /// `start_log_stream` for an already resolved container id of `server_id`
    /// (the local host's or an online agent's), with the lines `filter`
    /// selects (SPEC 12).
    ///
    /// # Errors
    /// The filter's pattern is refused, the stream serves too many
    /// distinct filters, the socket holds too many filtered streams, or it
    /// already streams this container with another filter.
    pub(super) fn subscribe_logs(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        id: &str,
        at: Start,
        filter: Option<LogFilterSpec>,
    ) -> Result<(), String> {
        let key = TopicKey::Logs {
            server: server_id.to_string(),
            container: id.to_string(),
        };
        let follow = self.topics.get(&key).and_then(|t| t.log.as_ref());
        // The group already serving this filter (its index stays valid
        // below: nothing in between removes a group).
        let existing = filter.as_ref().and_then(|spec| {
            follow.and_then(|f| f.groups.iter().find(|(_, g)| g.filter.spec == *spec))
        });
        let existing = existing.map(|(i, _)| i);
        // A bad filter is refused first, before anything is recorded.
        let mut compiled = None;
        if let Some(spec) = filter.as_ref().filter(|_| existing.is_none()) {
            if follow.is_some_and(|f| f.groups.len() >= MAX_FILTERS_PER_CONTAINER) {
                return Err(format!(
                    "this container's stream already serves {MAX_FILTERS_PER_CONTAINER} distinct filters"
                ));
            }
            compiled = Some(LogFilter::compile(spec.clone())?);
        }
        if io
            .session(conn)
            .is_some_and(|s| s.is_subscribed(self.topics.id_of(&key)))
        {
            // Already streaming: starting again is a no-op, unless it asks
            // for another filter.
            let current = follow
                .and_then(|f| f.group_of(conn).and_then(|g| f.groups.get(g)))
                .map(|g| &g.filter.spec);
            if current != filter.as_ref() {
                return Err(format!(
                    "already streaming {id}: send stop_log_stream first to change its filter"
                ));
            }
            return Ok(());
        }
        if filter.is_some() && self.filtered_streams_of(io, conn) >= MAX_FILTERED_STREAMS_PER_SOCKET
        {
            return Err(format!(
                "at most {MAX_FILTERED_STREAMS_PER_SOCKET} filtered log streams per socket"
            ));
        }
        if !self.topics.note_subscribed(io, &key, conn) {
            return Ok(());
        }
        if self.topics.entry(&key).log.is_none() {
            // A stream kept idle resumes where it was; else a new one.
            // A new one of a server owned here may go on from its history
            // in the cluster (`log_store.rs`).
            let idle = self.idle_logs.take(&key);
            let resumed = idle.is_some();
            io.stats.log_followers += 1;
            self.topics.entry(&key).log = Some(idle.unwrap_or_default());
            if resumed || !self.load_stored_log(io, &key) {
                self.start_follower(io, &key);
            }
        }
        let topic = self.topics.entry(&key);
        let Some(follow) = topic.log.as_mut() else {
            return Ok(());
        };
        let group = compiled
            .map(|new| {
                follow.groups.insert(FilterGroup {
                    filter: new,
                    subs: DialectSets::default(),
                })
            })
            .or(existing);
        let at = Start {
            tail: at.tail.min(LOG_HISTORY_LINES),
            group,
            ..at
        };
        // A resume past the ring's newest line while a follower's history
        // is arriving (a stream resumed from idle, a relay catching up with
        // its owner) waits for it: the line may be in it.
        let catching_up =
            follow.incoming.is_some() && at.since_seq.is_some_and(|n| n > follow.ring.last_seq());
        if follow.has_history && !catching_up {
            serve(io, conn, server_id, id, follow, at);
            let d = io.dialect(conn);
            join(topic, conn, d, group);
        } else {
            follow.waiting.push((conn, at));
        }
        Ok(())
    }

    /// How many filtered log streams `conn` holds.
    fn filtered_streams_of(&self, io: &Io<'_>, conn: ConnId) -> usize {
        let Some(s) = io.session(conn) else { return 0 };
        s.topics
            .iter()
            .filter_map(|id| self.topics.get(self.topics.key_of(*id)?)?.log.as_ref())
            .filter(|f| f.group_of(conn).is_some())
            .count()
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
                self.gap_to_all(io, key, None);
            }
            let new: Vec<LogLine> = history.into_iter().skip(seam.new_from).collect();
            if !new.is_empty() {
                self.on_log_lines(io, key, new);
            }
            // Resumes that waited for this history.
            self.history_ready(io, key);
            return;
        }
        let first = follow.ring.last_seq() + 1;
        self.store_log_lines(key, first, &history);
        if let Some(follow) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) {
            for l in history {
                follow.ring.push(l);
            }
        }
        self.history_ready(io, key);
    }

    /// Tells every subscriber of a log topic (each filter group too) that
    /// lines were lost: `missed` of them, or an unknown number.
    pub(super) fn gap_to_all(&self, io: &mut Io<'_>, key: &TopicKey, missed: Option<u64>) {
        let (TopicKey::Logs { server, container }, Some(topic)) = (key, self.topics.get(key))
        else {
            return;
        };
        let Some(follow) = topic.log.as_ref() else {
            return;
        };
        let ev = Event::LogGap {
            server_id: server,
            container_id: container,
            missed,
        };
        for set in follow.all_sets(&topic.subs) {
            super::topics::fan_out(io, key, set, &ev, Publish::ESSENTIAL);
        }
    }

    /// The ring holds the stream now: the waiting are served from it and join.
    pub(super) fn history_ready(&mut self, io: &mut Io<'_>, key: &TopicKey) {
        let TopicKey::Logs { server, container } = key else {
            return;
        };
        let Some(topic) = self.topics.get_mut(key) else {
            return;
        };
        let Some(follow) = topic.log.as_mut() else {
            return;
        };
        follow.has_history = true;
        for (conn, at) in std::mem::take(&mut follow.waiting) {
            if let Some(f) = topic.log.as_ref() {
                serve(io, conn, server, container, f, at);
            }
            let d = io.dialect(conn);
            join(topic, conn, d, at.group);
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
        let Some(topic) = self.topics.get_mut(key) else {
            return;
        };
        let Some(first) = topic.log.as_ref().map(|f| f.ring.last_seq() + 1) else {
            return;
        };
        // Nobody unfiltered (and no parked session) wants the whole stream:
        // no frame is built for it.
        if topic.subs.is_empty() && !io.sessions.sio.keeps(key) {
            topic.seq = topic.seq.saturating_add(lines.len() as u64);
        } else {
            for c in chunks(numbered(first, &lines)) {
                let ev = Event::LogUpdate {
                    server_id: server,
                    container_id: container,
                    log: &c.text,
                    seq: c.last_seq,
                };
                self.topics.publish(io, key, &ev, Publish::lines(c.lines));
            }
        }
        // Each distinct filter: its own lines, its own frames, shared by
        // its subscribers.
        if let Some(follow) = self.topics.get(key).and_then(|t| t.log.as_ref()) {
            // Each line's level, read once for every group that asks.
            let levels: Vec<std::cell::OnceCell<u8>> = if follow.groups.is_empty() {
                Vec::new()
            } else {
                lines.iter().map(|_| std::cell::OnceCell::new()).collect()
            };
            for (_, g) in &follow.groups {
                let mine = numbered(first, &lines)
                    .zip(&levels)
                    .filter(|((_, l), lv)| {
                        g.filter
                            .matches_with_level(l, || *lv.get_or_init(|| line_level(&l.text)))
                    })
                    .map(|(numbered, _)| numbered);
                for c in chunks(mine) {
                    let ev = Event::LogUpdate {
                        server_id: server,
                        container_id: container,
                        log: &c.text,
                        seq: c.last_seq,
                    };
                    super::topics::fan_out(io, key, &g.subs, &ev, Publish::lines(c.lines));
                }
            }
        }
        self.store_log_lines(key, first, &lines);
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
        let groups = topic
            .log
            .iter()
            .flat_map(|f| f.groups.iter().map(|(_, g)| &g.subs));
        let sets: Vec<&DialectSets> = std::iter::once(&topic.subs).chain(groups).collect();
        for set in &sets {
            super::topics::fan_out(io, &key, set, &ev, Publish::ESSENTIAL);
        }
        let waiting: Vec<ConnId> = topic
            .log
            .as_ref()
            .map(|f| f.waiting.iter().map(|(c, _)| *c).collect())
            .unwrap_or_default();
        for &c in &waiting {
            io.event(c, &ev);
        }
        let everyone: Vec<ConnId> = sets.iter().flat_map(|s| s.all()).chain(waiting).collect();
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
        let c = chunks(numbered(7, &lines));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].lines + c[1].lines, 4);
        assert_eq!((c[0].last_seq, c[1].last_seq), (8, 10));
        let joined: String = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(joined, format!("a\n{big}\n{big}\nb\n"));
        assert!(c.iter().all(|c| c.text.ends_with('\n')));
    }
}
