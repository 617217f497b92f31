//! Socket.IO connection state recovery (SPEC §7), as socket.io 4.6+ and its
//! official client define it: the CONNECT answer carries a secret `pid`,
//! every EVENT carries an offset as its last argument (a string), and a
//! client that comes back within [`RECOVERY_WINDOW`] sends `{pid, offset}`
//! in its CONNECT auth, gets the same `sid` and `pid` back, then every event
//! after its offset that it missed, once and in order; its `socket.recovered`
//! is then `true`.
//!
//! Opt-in: only sockets whose CONNECT auth has `recover: true` get a `pid`
//! and offsets. Clients that do not expect a trailing argument (python-
//! socketio handlers of one argument, `onAny` handlers that look at their
//! argument count, the first seed's flow) keep the wire they had.
//!
//! How missed events are kept — per session, by reference:
//! - Offsets come from one hub-wide counter. A published frame is stamped
//!   once (one copy of the Socket.IO frame, whatever the number of its
//!   subscribers) and shared like the plain one; a frame for one socket is
//!   stamped as it is queued ([`stamp_direct`]).
//! - Every recoverable socket keeps a [`SentLog`]: the stamped frames it
//!   was sent, by reference (`Bytes`, no copy), at most [`LOG_FRAMES`] of
//!   them and [`LOG_BYTES`] of frames; older ones are forgotten. This covers
//!   what was still in flight (queued, in kernel buffers) when the
//!   connection dropped.
//! - When such a socket drops (not a Socket.IO DISCONNECT or Engine.IO
//!   close of its own, not a close for auth), its session is *parked*: the
//!   identity (`sub`), `sid`, `pid`, topics and log are kept, the topics stay
//!   alive (their log followers keep running), and what is published to them
//!   goes on into the log, under the same caps. At most [`MAX_PARKED`]
//!   sessions are parked; a parked session is dropped after the window.
//! - A reconnecting client authenticates as usual; its pid must name a
//!   parked session of the same `sub`. Recovery fails (the client gets a
//!   fresh session, `recovered === false`) when the offset is older than
//!   what the log still holds or newer than anything sent, rather than
//!   replay with a hole.
//!
//! Why per session and not one hub-wide ring of frames by topic: the log
//! holds exactly what this socket was sent or would have been sent, so no
//! replay has to reconstruct which topics a socket was in at which offset
//! (start/stop of log streams, history sent directly), and the memory is
//! bounded per session: a log entry is 40 bytes and the frames are shared
//! with every other socket that was sent them. Worst case, all frames
//! distinct: `LOG_BYTES` per recoverable socket while it is connected, and
//! `MAX_PARKED * LOG_BYTES` (256 MiB) for parked ones.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::Dialect;
use crate::protocol::json::Event;
use crate::protocol::socketio::RecoveryAuth;
use crate::stats::Endpoint;
use crate::writer::{Offer, Priority};
use crate::ws::Frame;

use super::session::{ConnId, Sessions};
use super::topics::TopicKey;
use super::{Io, State};

/// How long a dropped session can be recovered (socket.io's default
/// `maxDisconnectionDuration`).
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(120);
/// Sessions parked at once; past it a dropped socket is not kept.
pub const MAX_PARKED: usize = 1024;
/// Frames a session's log holds.
pub const LOG_FRAMES: usize = 512;
/// Bytes of frames a session's log holds (shared frames count in full).
pub const LOG_BYTES: usize = 256 << 10;
/// A socket in more topics than this is not parked.
pub const MAX_PARKED_TOPICS: usize = 256;
/// A connection id no session has: [`State::leave_topic`] with it only
/// checks whether the topic is left with nobody (and stops its feed).
const NO_CONN: ConnId = ConnId::MAX;

/// The stamped frames one session was sent, oldest first.
#[derive(Debug, Default)]
pub struct SentLog {
    frames: VecDeque<(u64, Frame)>,
    bytes: usize,
    /// The newest offset forgotten (0: none); a client that has not
    /// processed it cannot be recovered.
    forgotten: u64,
    /// The first and the newest offset sent (0: none yet).
    first: u64,
    last: u64,
}

impl SentLog {
    pub fn push(&mut self, offset: u64, frame: Frame) {
        self.bytes += frame.len();
        self.frames.push_back((offset, frame));
        self.last = self.last.max(offset);
        if self.first == 0 {
            self.first = offset;
        }
        while self.frames.len() > LOG_FRAMES || self.bytes > LOG_BYTES {
            let Some((o, f)) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= f.len();
            self.forgotten = self.forgotten.max(o);
        }
    }

    /// The frames after `offset`, in order; `None` when some of them were
    /// forgotten, or `offset` is not within what was sent (older than the
    /// first frame: a client has always processed that one when it has an
    /// offset at all; newer than the last).
    pub fn after(&self, offset: u64) -> Option<Vec<Frame>> {
        if self.first == 0 || offset < self.first.max(self.forgotten) || offset > self.last {
            return None;
        }
        Some(
            self.frames
                .iter()
                .filter(|(o, _)| *o > offset)
                .map(|(_, f)| f.clone())
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A recoverable socket's identity on the wire and what it was sent.
#[derive(Debug, Default)]
pub struct Resume {
    pub sid: String,
    pub pid: String,
    pub log: SentLog,
}

impl Resume {
    fn fresh() -> Self {
        Resume {
            sid: uuid::Uuid::new_v4().simple().to_string(),
            pid: uuid::Uuid::new_v4().simple().to_string(),
            log: SentLog::default(),
        }
    }
}

/// A dropped session waiting for its client.
#[derive(Debug)]
struct Parked {
    resume: Resume,
    /// Who it was: a recovery must authenticate as the same `sub`.
    sub: String,
    keys: Vec<TopicKey>,
    since: Instant,
}

/// The hub-wide part: the offset counter and the parked sessions.
#[derive(Debug, Default)]
pub struct Store {
    next_offset: u64,
    /// By pid (bounded: [`MAX_PARKED`]).
    parked: HashMap<String, Parked>,
    /// The pids of the parked sessions keeping each topic alive.
    by_topic: HashMap<TopicKey, Vec<String>>,
}

impl Store {
    /// The next offset (never 0; saturates rather than wrap).
    pub fn next_offset(&mut self) -> u64 {
        self.next_offset = self.next_offset.saturating_add(1);
        self.next_offset
    }

    /// Whether a parked session keeps `key` alive.
    pub fn keeps(&self, key: &TopicKey) -> bool {
        self.by_topic.contains_key(key)
    }

    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    fn park(&mut self, p: Parked) {
        for key in &p.keys {
            self.by_topic
                .entry(key.clone())
                .or_default()
                .push(p.resume.pid.clone());
        }
        self.parked.insert(p.resume.pid.clone(), p);
    }

    fn unpark(&mut self, pid: &str) -> Option<Parked> {
        let p = self.parked.remove(pid)?;
        for key in &p.keys {
            if let Some(pids) = self.by_topic.get_mut(key) {
                pids.retain(|x| x != pid);
                if pids.is_empty() {
                    self.by_topic.remove(key);
                }
            }
        }
        Some(p)
    }

    /// Appends a published frame to every session parked on `key`;
    /// `ended`: the topic is gone (its last message), they leave it.
    fn append(&mut self, key: &TopicKey, offset: u64, frame: &Frame, ended: bool) {
        if ended {
            for pid in self.by_topic.remove(key).unwrap_or_default() {
                if let Some(p) = self.parked.get_mut(&pid) {
                    p.resume.log.push(offset, frame.clone());
                    p.keys.retain(|k| k != key);
                }
            }
            return;
        }
        let Some(pids) = self.by_topic.get(key) else {
            return;
        };
        for pid in pids {
            if let Some(p) = self.parked.get_mut(pid) {
                p.resume.log.push(offset, frame.clone());
            }
        }
    }

    /// Removes the sessions parked for longer than the window.
    fn take_expired(&mut self, now: Instant) -> Vec<Parked> {
        let old: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= RECOVERY_WINDOW)
            .map(|(pid, _)| pid.clone())
            .collect();
        old.iter().filter_map(|pid| self.unpark(pid)).collect()
    }
}

/// A frame queued for one socket: stamped with the next offset and logged
/// when the socket is recoverable and the frame is a Socket.IO EVENT.
/// `None`: send `frame` as it is.
pub fn stamp_direct(sessions: &mut Sessions, conn: ConnId, frame: &Frame) -> Option<Frame> {
    if sessions.get(conn)?.resume.is_none() || !Dialect::is_stampable(frame) {
        return None;
    }
    let offset = sessions.sio.next_offset();
    let stamped = Dialect::stamp(frame, offset)?;
    let resume = sessions.get_mut(conn)?.resume.as_deref_mut()?;
    resume.log.push(offset, stamped.clone());
    Some(stamped)
}

/// One published event's stamped Socket.IO frame, made at most once per
/// publish and shared by its recoverable subscribers and parked sessions.
#[derive(Default)]
pub struct Stamp {
    plain: Option<Frame>,
    stamped: Option<(u64, Frame)>,
}

impl Stamp {
    fn get(&mut self, io: &mut Io<'_>, plain: &Frame) -> Option<(u64, Frame)> {
        if self.stamped.is_none() {
            let offset = io.sessions.sio.next_offset();
            self.stamped = Dialect::stamp(plain, offset).map(|f| (offset, f));
        }
        self.stamped.clone()
    }

    /// Offers `frame` (encoded for `dialect`) to `conn`, stamped and logged
    /// when `conn` is recoverable.
    pub fn offer(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        dialect: Dialect,
        frame: &Frame,
        prio: Priority,
    ) -> Offer {
        if dialect != Dialect::SocketIo {
            return io.offer(conn, frame, prio);
        }
        if self.plain.is_none() {
            self.plain = Some(frame.clone());
        }
        if io.session(conn).is_none_or(|s| s.resume.is_none()) {
            return io.offer(conn, frame, prio);
        }
        let Some((offset, stamped)) = self.get(io, frame) else {
            return io.offer(conn, frame, prio);
        };
        let offer = io.offer(conn, &stamped, prio);
        // A dropped log frame is not replayed: the socket hears of it as
        // `log_dropped`, like any other.
        if offer != Offer::Dropped
            && let Some(r) = io.session_mut(conn).and_then(|s| s.resume.as_deref_mut())
        {
            r.log.push(offset, stamped);
        }
        offer
    }

    /// Logs the event for every session parked on `key`.
    pub fn to_parked(&mut self, io: &mut Io<'_>, key: &TopicKey, ev: &Event<'_>) {
        if !io.sessions.sio.keeps(key) {
            return;
        }
        let plain = match &self.plain {
            Some(f) => f.clone(),
            None => Dialect::SocketIo.encode(ev),
        };
        let Some((offset, stamped)) = self.get(io, &plain) else {
            return;
        };
        // A log stream's last message: its topic is being removed.
        let ended = matches!(ev, Event::LogStreamStopped { .. });
        io.sessions.sio.append(key, offset, &stamped, ended);
    }
}

impl State {
    /// A recoverable Socket.IO CONNECT that authenticated: recovers the
    /// parked session `recovery.resume` names, or starts a fresh recoverable
    /// one. Returns whether it recovered (then nothing else is sent: no
    /// greeting, the client continues where it was).
    pub(super) fn recoverable_connect(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        recovery: RecoveryAuth,
    ) -> bool {
        if let Some((pid, offset)) = recovery.resume
            && self.recover(io, conn, &pid, offset)
        {
            return true;
        }
        let now = io.now;
        let resume = Resume::fresh();
        let Some(s) = io.session_mut(conn) else {
            return false;
        };
        let reply = s
            .dialect
            .connect_reply_recoverable(&mut s.wire, now, &resume.sid, &resume.pid);
        s.resume = Some(Box::new(resume));
        if let Some(f) = reply {
            io.send(conn, &f, Priority::Essential);
        }
        false
    }

    fn recover(&mut self, io: &mut Io<'_>, conn: ConnId, pid: &str, offset: u64) -> bool {
        let Some(s) = io.session(conn) else {
            return false;
        };
        let sub = s.who().to_string();
        // Someone else's pid (or a guess) touches nothing.
        if io.sessions.sio.parked.get(pid).is_none_or(|p| p.sub != sub) {
            return false;
        }
        let Some(p) = io.sessions.sio.unpark(pid) else {
            return false;
        };
        let missed = (io.now.duration_since(p.since) < RECOVERY_WINDOW)
            .then(|| p.resume.log.after(offset))
            .flatten();
        let Some(missed) = missed else {
            self.release(io, p.keys);
            return false;
        };
        let now = io.now;
        let Some(s) = io.session_mut(conn) else {
            self.release(io, p.keys);
            return false;
        };
        let reply =
            s.dialect
                .connect_reply_recoverable(&mut s.wire, now, &p.resume.sid, &p.resume.pid);
        s.resume = Some(Box::new(p.resume));
        if let Some(f) = reply {
            io.send(conn, &f, Priority::Essential);
        }
        let mut gone = Vec::new();
        for key in p.keys {
            if self.topics.contains(&key) {
                self.topics.subscribe(io, &key, conn);
                if let TopicKey::Stats(server) = &key {
                    self.update_sampling(io, server);
                }
            } else {
                gone.push(key);
            }
        }
        self.release(io, gone);
        // Already stamped and logged: queued as they are.
        for f in &missed {
            io.offer(conn, f, Priority::Essential);
        }
        true
    }

    /// Topics a parked session no longer keeps: stopped when nobody else is in them.
    fn release(&mut self, io: &mut Io<'_>, keys: Vec<TopicKey>) {
        for key in keys {
            if !io.sessions.sio.keeps(&key) {
                self.leave_topic(io, &key, NO_CONN);
            }
        }
    }

    /// A connection is going away: parks its session when it can be
    /// recovered. Returns false when it cannot (the caller detaches it).
    pub(super) fn park(&mut self, io: &mut Io<'_>, conn: ConnId) -> bool {
        let Some(s) = io.session(conn) else {
            return false;
        };
        let parkable = s.resume.is_some()
            && s.is_ready()
            && s.endpoint == Endpoint::SocketIo
            && s.topics.len() <= MAX_PARKED_TOPICS
            && !io.sessions.is_behind(conn)
            && io.sessions.sio.parked_len() < MAX_PARKED;
        if !parkable {
            return false;
        }
        let keys: Vec<TopicKey> = s
            .topics
            .iter()
            .filter_map(|id| self.topics.key_of(*id).cloned())
            .collect();
        // Waiting for a log stream's history: nothing to resume from yet.
        // Filtered streams and event filters (SPEC 12) are not kept either.
        let waiting = keys.iter().any(|k| {
            self.topics
                .get(k)
                .and_then(|t| t.log.as_ref())
                .is_some_and(|f| {
                    f.group_of(conn).is_some() || f.waiting.iter().any(|(c, _)| *c == conn)
                })
        });
        if waiting || !s.event_filters.is_empty() {
            return false;
        }
        for key in &keys {
            if let Some(t) = self.topics.get_mut(key) {
                t.subs.remove(conn);
            }
        }
        let Some(mut s) = io.sessions.remove(conn) else {
            return false;
        };
        self.audit.summarise_refusals(&mut s);
        let Some(resume) = s.resume.take() else {
            return false;
        };
        io.sessions.sio.park(Parked {
            resume: *resume,
            sub: s.who().to_string(),
            keys,
            since: io.now,
        });
        true
    }

    /// Drops the sessions parked for longer than the window (on each tick).
    pub(super) fn expire_parked(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        for p in io.sessions.sio.take_expired(now) {
            self.release(io, p.keys);
        }
    }
}

/// The session gives up recovery: it leaves on purpose (Socket.IO
/// DISCONNECT, Engine.IO close) or is closed for its auth.
pub fn forfeit(sessions: &mut Sessions, conn: ConnId) {
    if let Some(s) = sessions.get_mut(conn) {
        s.resume = None;
    }
}
