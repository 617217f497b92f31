//! Topics: everything the hub fans out, and the one path that publishes it.
//!
//! A topic is keyed by what it carries and whose it is ([`TopicKey`], always
//! with the `server_id`): a server's container table, one container's logs,
//! a server's metrics, a server's agent log entries. It holds its
//! subscribers in one set per dialect and a sequence number that counts
//! what it published (lines, for log topics).
//!
//! [`Topics::publish`] is the only fan-out: it encodes the event once per
//! dialect in use, queues that one frame on every subscriber by reference,
//! and, for droppable frames (log lines), keeps each slow subscriber's count
//! of lost lines and tells it (`log_dropped`) before it gets new lines, once
//! it has drained to half its cap.
//!
//! Invariant: a connection is in a topic's set (or its log follower's
//! waiting list) exactly when the topic's id is in its session's `topics`;
//! a topic exists while anyone is in it.

use std::collections::HashMap;

use crate::protocol::Dialect;
use crate::protocol::json::Event;
use crate::writer::{Offer, Priority};

use super::logs::LogFollow;
use super::outbox::Io;
use super::recovery::Stamp;
use super::session::ConnId;

/// What a topic carries, and for which server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    /// A server's containers: `initial_state`, then `container_state_change`.
    Containers(String),
    /// One container's log lines.
    Logs { server: String, container: String },
    /// A server's host metrics (and its alerts), with `server_id`.
    Metrics(String),
    /// The same metrics in the second seed's form, without `server_id`
    /// (`/api/v1/ws/metrics/{id}`), and its alerts.
    SeedMetrics(String),
    /// A server's agent log entries, `/api/v1/ws/logs/{id}` (and its alerts).
    AgentLogs(String),
    /// A server's per-container usage (`container_stats`), sampled only
    /// while this topic has subscribers.
    Stats(String),
    /// Every server's `server_state_change` (every multiplexed browser).
    Servers,
}

impl TopicKey {
    pub fn server(&self) -> &str {
        match self {
            TopicKey::Containers(s)
            | TopicKey::Metrics(s)
            | TopicKey::SeedMetrics(s)
            | TopicKey::AgentLogs(s)
            | TopicKey::Stats(s)
            | TopicKey::Logs { server: s, .. } => s,
            TopicKey::Servers => "",
        }
    }
}

/// A set of subscriber connections: O(1) insert/remove, dense for fan-out.
#[derive(Debug, Default)]
pub struct SubscriberSet {
    list: Vec<ConnId>,
    index: HashMap<ConnId, usize>,
}

impl SubscriberSet {
    pub fn insert(&mut self, conn: ConnId) -> bool {
        if self.index.contains_key(&conn) {
            return false;
        }
        self.index.insert(conn, self.list.len());
        self.list.push(conn);
        true
    }
    pub fn remove(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.index.remove(&conn) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some(&moved) = self.list.get(i) {
            self.index.insert(moved, i);
        }
        true
    }
    pub fn contains(&self, conn: ConnId) -> bool {
        self.index.contains_key(&conn)
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn conns(&self) -> &[ConnId] {
        &self.list
    }
}

/// One subscriber set per dialect, so each frame is encoded once per dialect.
#[derive(Debug, Default)]
pub struct DialectSets {
    sets: [SubscriberSet; Dialect::ALL.len()],
}

impl DialectSets {
    pub fn set(&mut self, d: Dialect) -> &mut SubscriberSet {
        &mut self.sets[d.index()]
    }
    pub fn iter(&self) -> impl Iterator<Item = (Dialect, &SubscriberSet)> {
        Dialect::ALL.into_iter().zip(self.sets.iter())
    }
    pub fn remove(&mut self, conn: ConnId) -> bool {
        self.sets
            .iter_mut()
            .fold(false, |acc, s| s.remove(conn) | acc)
    }
    pub fn contains(&self, conn: ConnId) -> bool {
        self.sets.iter().any(|s| s.contains(conn))
    }
    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(SubscriberSet::is_empty)
    }
    pub fn len(&self) -> usize {
        self.sets.iter().map(SubscriberSet::len).sum()
    }
    pub fn all(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.sets.iter().flat_map(|s| s.conns().iter().copied())
    }
}

/// A topic's number while it exists (interned: a session lists its topics
/// by id, so subscribing costs a few bytes, not a copy of the key).
pub type TopicId = u32;

/// One topic.
#[derive(Debug)]
pub struct Topic {
    pub key: TopicKey,
    pub subs: DialectSets,
    /// What was published so far: lines for log topics, messages otherwise.
    pub seq: u64,
    /// Log topics: the follower feeding it (history ring, held lines).
    pub log: Option<Box<LogFollow>>,
}

/// How a publish counts.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub prio: Priority,
    /// Lines this message carries (log topics): what a dropped frame costs
    /// the subscriber, and how far `seq` moves. 0 for other messages.
    pub lines: u64,
}

impl Publish {
    pub const ESSENTIAL: Publish = Publish {
        prio: Priority::Essential,
        lines: 0,
    };
    pub fn lines(n: u64) -> Publish {
        Publish {
            prio: Priority::Droppable,
            lines: n,
        }
    }
}

/// Every topic with at least one subscriber (or a follower starting).
#[derive(Debug, Default)]
pub struct Topics {
    ids: HashMap<TopicKey, TopicId>,
    slots: slab::Slab<Topic>,
}

impl Topics {
    pub fn id_of(&self, key: &TopicKey) -> Option<TopicId> {
        self.ids.get(key).copied()
    }

    pub fn key_of(&self, id: TopicId) -> Option<&TopicKey> {
        self.slots.get(id as usize).map(|t| &t.key)
    }

    pub fn get(&self, key: &TopicKey) -> Option<&Topic> {
        self.slots.get(*self.ids.get(key)? as usize)
    }

    pub fn get_mut(&mut self, key: &TopicKey) -> Option<&mut Topic> {
        self.slots.get_mut(*self.ids.get(key)? as usize)
    }

    pub fn contains(&self, key: &TopicKey) -> bool {
        self.ids.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &TopicKey> {
        self.ids.keys()
    }

    /// Every log topic's key and stream.
    pub fn iter_logs(&self) -> impl Iterator<Item = (&TopicKey, &super::logs::LogFollow)> {
        self.ids
            .iter()
            .filter_map(|(k, id)| Some((k, self.slots.get(*id as usize)?.log.as_deref()?)))
    }

    /// The topic's id, the topic created empty when absent.
    fn intern(&mut self, key: &TopicKey) -> TopicId {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.slots.insert(Topic {
            key: key.clone(),
            subs: DialectSets::default(),
            seq: 0,
            log: None,
        }) as TopicId;
        self.ids.insert(key.clone(), id);
        id
    }

    /// The topic, created empty when absent.
    pub fn entry(&mut self, key: &TopicKey) -> &mut Topic {
        let id = self.intern(key);
        &mut self.slots[id as usize]
    }

    /// Records the topic in the session's list (the caller puts the
    /// connection in the topic's set or its follower's waiting list),
    /// creating the topic when absent. False when the connection was
    /// already subscribed or has no session (then nothing is created).
    pub fn note_subscribed(&mut self, io: &mut Io<'_>, key: &TopicKey, conn: ConnId) -> bool {
        let known = self.id_of(key);
        match io.session(conn) {
            Some(s) if known.is_none_or(|id| !s.topics.contains(&id)) => {}
            _ => return false,
        }
        let id = self.intern(key);
        if let Some(s) = io.session_mut(conn) {
            s.topics.push(id);
        }
        true
    }

    /// Adds `conn` to the topic's set for its dialect. False when it was
    /// already subscribed or has no session.
    pub fn subscribe(&mut self, io: &mut Io<'_>, key: &TopicKey, conn: ConnId) -> bool {
        if !self.note_subscribed(io, key, conn) {
            return false;
        }
        let d = io.dialect(conn);
        self.entry(key).subs.set(d).insert(conn);
        true
    }

    /// Removes `conn` from the topic (set and waiting list) and from its
    /// session's list. Returns the topic when that left it with nobody, so
    /// the caller can stop what feeds it; a topic is kept while anyone is
    /// subscribed or waiting.
    pub fn unsubscribe(&mut self, io: &mut Io<'_>, key: &TopicKey, conn: ConnId) -> Option<Topic> {
        let id = self.id_of(key)?;
        if let Some(s) = io.session_mut(conn) {
            s.topics.retain(|t| *t != id);
        }
        io.sessions.forget_dropped(conn, key);
        let topic = &mut self.slots[id as usize];
        topic.subs.remove(conn);
        if let Some(f) = topic.log.as_mut() {
            f.leave(conn);
        }
        let idle = topic.subs.is_empty()
            && topic.log.as_ref().is_none_or(|f| f.is_unwatched())
            && !io.sessions.sio.keeps(key); // a parked Socket.IO session (recovery.rs)
        if idle { self.remove(key) } else { None }
    }

    /// Removes a topic outright (its source ended); returns it so the caller
    /// can tell its subscribers and clean their sessions.
    pub fn remove(&mut self, key: &TopicKey) -> Option<Topic> {
        let id = self.ids.remove(key)?;
        self.slots.try_remove(id as usize)
    }

    /// Publishes `ev` to every subscriber of `key`: one encode per dialect in
    /// use, one shared frame. Returns how many subscribers it was offered to.
    pub fn publish(
        &mut self,
        io: &mut Io<'_>,
        key: &TopicKey,
        ev: &Event<'_>,
        how: Publish,
    ) -> usize {
        self.publish_to(io, key, ev, how, None)
    }

    /// [`Topics::publish`] to the subscribers `only` keeps (a socket's
    /// event filter, SPEC 12); the frame is still encoded once per dialect.
    pub fn publish_where(
        &mut self,
        io: &mut Io<'_>,
        key: &TopicKey,
        ev: &Event<'_>,
        how: Publish,
        only: Only<'_>,
    ) -> usize {
        self.publish_to(io, key, ev, how, Some(only))
    }

    fn publish_to(
        &mut self,
        io: &mut Io<'_>,
        key: &TopicKey,
        ev: &Event<'_>,
        how: Publish,
        only: Option<Only<'_>>,
    ) -> usize {
        let Some(topic) = self.get_mut(key) else {
            return 0;
        };
        topic.seq = topic.seq.saturating_add(how.lines.max(1));
        fan_out_where(io, &topic.key, &topic.subs, ev, how, only)
    }
}

/// Which of a topic's subscribers a publish is for.
pub type Only<'f> = &'f dyn Fn(&Io<'_>, ConnId) -> bool;

/// Sends one event to a set of subscribers under the publish rules.
pub fn fan_out(
    io: &mut Io<'_>,
    key: &TopicKey,
    subs: &DialectSets,
    ev: &Event<'_>,
    how: Publish,
) -> usize {
    fan_out_where(io, key, subs, ev, how, None)
}

/// [`fan_out`] to the subscribers `only` keeps (all when `None`).
pub fn fan_out_where(
    io: &mut Io<'_>,
    key: &TopicKey,
    subs: &DialectSets,
    ev: &Event<'_>,
    how: Publish,
    only: Option<Only<'_>>,
) -> usize {
    // Socket.IO recovery: the frame with an offset, made once (recovery.rs).
    let mut stamp = Stamp::default();
    let mut n = 0;
    for (dialect, set) in subs.iter() {
        if set.is_empty() {
            continue;
        }
        let frame = dialect.encode(ev);
        if matches!(key, TopicKey::Logs { .. }) {
            io.stats.log_frames_encoded += 1;
        }
        for &conn in set.conns() {
            if only.is_some_and(|keep| !keep(io, conn)) {
                continue;
            }
            n += 1;
            if how.prio == Priority::Essential {
                stamp.offer(io, conn, dialect, &frame, how.prio);
                continue;
            }
            // A socket that lost lines hears how many before it gets new
            // ones, and only once it has drained to half its cap.
            if io.sessions.is_behind(conn) && !report_dropped_if_drained(io, conn) {
                note_dropped(io, conn, key, how.lines);
                continue;
            }
            if stamp.offer(io, conn, dialect, &frame, how.prio) == Offer::Dropped {
                note_dropped(io, conn, key, how.lines);
            }
        }
    }
    stamp.to_parked(io, key, ev);
    io.stats.message_out_named(ev.name(), n as u64);
    n
}

/// Half the soft cap: below it a lossy socket is told what it missed.
pub const fn drained_below(soft_cap: usize) -> usize {
    soft_cap / 2
}

fn report_dropped_if_drained(io: &mut Io<'_>, conn: ConnId) -> bool {
    if io.queued_bytes(conn) >= drained_below(io.soft_cap) {
        return false;
    }
    report_dropped(io, conn);
    true
}

fn note_dropped(io: &mut Io<'_>, conn: ConnId, key: &TopicKey, lines: u64) {
    io.stats.log_lines_dropped = io.stats.log_lines_dropped.saturating_add(lines);
    io.sessions.note_dropped(conn, key, lines);
}

/// Tells a socket how many lines it lost per topic (`log_dropped`).
pub fn report_dropped(io: &mut Io<'_>, conn: ConnId) {
    for (key, lines) in io.sessions.take_dropped(conn) {
        let container_id = match &key {
            TopicKey::Logs { container, .. } => Some(container.as_str()),
            _ => None,
        };
        io.event(
            conn,
            &Event::LogDropped {
                server_id: key.server(),
                container_id,
                lines,
            },
        );
    }
}
