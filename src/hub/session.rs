//! A connection as the hub knows it: who it is, which dialect it speaks,
//! what it is subscribed to and what it has missed.
//!
//! The hub owns every session, keyed by the connection id the event loop
//! gave it ([`ConnId`]); the loop owns the socket itself. A session is
//! created by `Input::Opened` and removed by `Input::Closed` or when the hub
//! itself closes the connection.
//!
//! Invariant: `topics` lists every topic the connection is in (or waiting
//! for), so removing a session removes it from every subscriber set.

use std::time::Instant;

use crate::auth::Role;
use crate::protocol::filter::EventFilter;
use crate::protocol::{Dialect, DialectState};
use crate::stats::Endpoint;

use super::recovery::{self, Resume};
use super::topics::{TopicId, TopicKey};

/// The event loop's name for a connection (its slab key). Reused after the
/// connection is gone; `Session::serial` is not.
pub type ConnId = usize;

/// Browser (or agent) authentication state of a WebSocket.
#[derive(Debug, Clone)]
pub enum AuthState {
    /// Waiting for the first message (`auth`, or a Socket.IO CONNECT).
    Pending { deadline: Instant },
    /// Authenticated (or auth is off: `sub` is "anonymous", role admin).
    Ready {
        sub: String,
        role: Role,
        exp: Option<u64>,
    },
}

/// How many refused commands one connection may have audited per window;
/// the rest are counted and summarised in one record.
pub const AUDITED_REFUSALS_PER_WINDOW: u32 = 10;
/// The refusal window.
pub const REFUSAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Per-connection budget of audited refusals.
#[derive(Debug, Default)]
pub struct RefusalBudget {
    pub window_start: Option<Instant>,
    pub audited: u32,
    pub suppressed: u64,
}

/// Per-socket protocol state used by the hub.
#[derive(Debug)]
pub struct Session {
    /// Unique for the daemon's life (connection ids are reused, serials are not).
    pub serial: u64,
    pub endpoint: Endpoint,
    pub dialect: Dialect,
    pub wire: DialectState,
    pub auth: AuthState,
    /// Every topic this socket is subscribed to or waiting on.
    pub topics: Vec<TopicId>,
    /// Lines dropped per topic, not yet reported with `log_dropped`
    /// (changed only through [`Sessions`], which keeps its `behind` bit).
    dropped: Vec<(TopicKey, u64)>,
    /// `/api/v1/ws/{metrics,logs}/{server_id}`: the server it watches.
    pub target_server: Option<String>,
    /// Agent sockets: the server id after `auth_success`.
    pub agent_server: Option<String>,
    /// The peer's address (for the operator's logs), when the loop gave it.
    pub peer: Option<std::net::IpAddr>,
    pub refusals: RefusalBudget,
    /// Socket.IO connection state recovery: set when the CONNECT asked for
    /// it (`recovery.rs`); its events then carry offsets.
    pub resume: Option<Box<Resume>>,
    /// `set_event_filter` (SPEC 12): per server, the containers whose
    /// events this socket hears; a server not listed: all of them.
    pub event_filters: Vec<(String, EventFilter)>,
}

impl Session {
    pub fn new(serial: u64, endpoint: Endpoint, dialect: Dialect, auth: AuthState) -> Self {
        Session {
            serial,
            endpoint,
            dialect,
            wire: DialectState::default(),
            auth,
            topics: Vec::new(),
            dropped: Vec::new(),
            target_server: None,
            agent_server: None,
            peer: None,
            refusals: RefusalBudget::default(),
            resume: None,
            event_filters: Vec::new(),
        }
    }

    /// The socket's event filter for `server_id`, when it set one.
    pub fn event_filter(&self, server_id: &str) -> Option<&EventFilter> {
        self.event_filters
            .iter()
            .find(|(s, _)| s == server_id)
            .map(|(_, f)| f)
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.auth, AuthState::Ready { .. })
    }

    pub fn role(&self) -> Option<Role> {
        match &self.auth {
            AuthState::Ready { role, .. } => Some(*role),
            AuthState::Pending { .. } => None,
        }
    }

    pub fn who(&self) -> &str {
        match &self.auth {
            AuthState::Ready { sub, .. } => sub,
            AuthState::Pending { .. } => "unauthenticated",
        }
    }

    pub fn is_subscribed(&self, id: Option<TopicId>) -> bool {
        id.is_some_and(|id| self.topics.contains(&id))
    }

    /// Counts one refusal. Returns whether to audit it in full, and the
    /// number suppressed in the window that just ended (to summarise).
    pub fn audit_refusal(&mut self, now: Instant) -> (bool, u64) {
        let b = &mut self.refusals;
        let fresh = b
            .window_start
            .is_none_or(|s| now.duration_since(s) >= REFUSAL_WINDOW);
        let mut ended = 0;
        if fresh {
            b.window_start = Some(now);
            b.audited = 0;
            ended = std::mem::take(&mut b.suppressed);
        }
        if b.audited < AUDITED_REFUSALS_PER_WINDOW {
            b.audited += 1;
            (true, ended)
        } else {
            b.suppressed = b.suppressed.saturating_add(1);
            (false, ended)
        }
    }
}

/// Every session, indexed by connection id. Connection ids are the loop's
/// slab keys (small and dense), so a slot vector finds a session with one
/// index; each slot is a pointer until used. A bit per connection says
/// whether it has unreported lost lines, so the fan-out of a log line asks
/// one bit, not the session, for every subscriber.
#[derive(Debug, Default)]
pub struct Sessions {
    slots: Vec<Option<Box<Session>>>,
    /// Other hubs' sessions (`cluster.rs`), from [`PEER_CONN_BASE`] on.
    peers: Vec<Option<Box<Session>>>,
    behind: Vec<u64>,
    len: usize,
    /// Socket.IO recovery: the offset counter and the parked sessions.
    pub sio: recovery::Store,
}

/// Where the connection ids of other hubs' sessions start (`cluster.rs`):
/// far above any socket's, which are slab keys.
pub const PEER_CONN_BASE: ConnId = 1 << 40;

/// Whether `conn` stands for another hub of the cluster, not a socket.
pub fn is_peer(conn: ConnId) -> bool {
    conn >= PEER_CONN_BASE
}

impl Sessions {
    fn slot(&self, conn: ConnId) -> Option<&Option<Box<Session>>> {
        if is_peer(conn) {
            self.peers.get(conn - PEER_CONN_BASE)
        } else {
            self.slots.get(conn)
        }
    }

    fn slot_mut(&mut self, conn: ConnId) -> Option<&mut Option<Box<Session>>> {
        if is_peer(conn) {
            self.peers.get_mut(conn - PEER_CONN_BASE)
        } else {
            self.slots.get_mut(conn)
        }
    }

    pub fn get(&self, conn: ConnId) -> Option<&Session> {
        self.slot(conn)?.as_deref()
    }

    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut Session> {
        self.slot_mut(conn)?.as_deref_mut()
    }

    /// A free connection id for another hub's session.
    pub fn free_peer_conn(&self) -> ConnId {
        let i = self
            .peers
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.peers.len());
        PEER_CONN_BASE + i
    }

    pub fn contains(&self, conn: ConnId) -> bool {
        self.get(conn).is_some()
    }

    /// Adds (or replaces) the session of `conn`.
    pub fn insert(&mut self, conn: ConnId, s: Session) {
        if is_peer(conn) {
            let i = conn - PEER_CONN_BASE;
            if i >= self.peers.len() {
                self.peers.resize_with(i + 1, || None);
            }
            if self.peers[i].replace(Box::new(s)).is_none() {
                self.len += 1;
            }
            return;
        }
        if conn >= self.slots.len() {
            self.slots.resize_with(conn + 1, || None);
            self.behind.resize(conn / 64 + 1, 0);
        }
        self.set_behind(conn, !s.dropped.is_empty());
        if self.slots[conn].replace(Box::new(s)).is_none() {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, conn: ConnId) -> Option<Session> {
        let s = self.slot_mut(conn)?.take()?;
        self.len -= 1;
        self.set_behind(conn, false);
        Some(*s)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut Session)> {
        let peers = self
            .peers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| Some((PEER_CONN_BASE + i, s.as_deref_mut()?)));
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_deref_mut()?)))
            .chain(peers)
    }

    /// The connection lost lines it has not been told about yet.
    pub fn is_behind(&self, conn: ConnId) -> bool {
        self.behind
            .get(conn / 64)
            .is_some_and(|w| w & (1 << (conn % 64)) != 0)
    }

    fn set_behind(&mut self, conn: ConnId, on: bool) {
        if let Some(w) = self.behind.get_mut(conn / 64) {
            if on {
                *w |= 1 << (conn % 64);
            } else {
                *w &= !(1 << (conn % 64));
            }
        }
    }

    /// Counts `lines` lost by `conn` on `key`.
    pub fn note_dropped(&mut self, conn: ConnId, key: &TopicKey, lines: u64) {
        let Some(s) = self.get_mut(conn) else { return };
        match s.dropped.iter_mut().find(|(k, _)| k == key) {
            Some((_, n)) => *n = n.saturating_add(lines),
            None => s.dropped.push((key.clone(), lines)),
        }
        self.set_behind(conn, true);
    }

    /// What `conn` lost, per topic; it is then no longer behind.
    pub fn take_dropped(&mut self, conn: ConnId) -> Vec<(TopicKey, u64)> {
        let taken = self
            .get_mut(conn)
            .map(|s| std::mem::take(&mut s.dropped))
            .unwrap_or_default();
        self.set_behind(conn, false);
        taken
    }

    /// Forgets what `conn` lost on `key` (it left that topic).
    pub fn forget_dropped(&mut self, conn: ConnId, key: &TopicKey) {
        let Some(s) = self.get_mut(conn) else { return };
        s.dropped.retain(|(k, _)| k != key);
        let empty = s.dropped.is_empty();
        if empty {
            self.set_behind(conn, false);
        }
    }
}
