//! The hub: who is subscribed to what, and fan-out of every event.
//!
//! The hub owns the container table, log topics (one Docker follower per
//! container, shared), the servers (local host plus agents), pending
//! commands and alert states. It never touches a socket directly: it queues
//! shared frames through [`Io`], and the event loop flushes them.
//!
//! Invariant: a frame for many subscribers is encoded once per dialect
//! (`Bytes` clones are reference counts), and every subscription a socket
//! holds is listed in its `Session`, so [`Hub::detach`] removes it from
//! every set when the socket goes.
//!
//! Files: `browser.rs` (browser requests), `logs.rs` (log topics),
//! `docker.rs` (Docker feed events), `agents.rs` (agents, commands, alerts).

mod agents;
mod browser;
mod docker;
mod logs;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use slab::Slab;

use crate::auth::{ApiKeys, JwtVerifier};
use crate::config::Config;
use crate::feed::docker::DockerHandle;
use crate::protocol::json::{self, Dialect};
use crate::protocol::model::Container;
use crate::server::conn::{AuthState, Conn, Phase};
use crate::stats::Stats;
use crate::writer::{Offer, Priority};
use crate::ws::{self, Frame};

pub use agents::{Audit, PendingCommand};
pub use browser::unix_now;
pub use docker::containers_json;
pub use logs::LogTopic;

/// A set of subscriber tokens: O(1) insert/remove, dense for fan-out.
#[derive(Debug, Default)]
pub struct SubscriberSet {
    list: Vec<usize>,
    index: HashMap<usize, usize>,
}

impl SubscriberSet {
    pub fn insert(&mut self, token: usize) -> bool {
        if self.index.contains_key(&token) {
            return false;
        }
        self.index.insert(token, self.list.len());
        self.list.push(token);
        true
    }
    pub fn remove(&mut self, token: usize) -> bool {
        let Some(i) = self.index.remove(&token) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some(&moved) = self.list.get(i) {
            self.index.insert(moved, i);
        }
        true
    }
    pub fn contains(&self, token: usize) -> bool {
        self.index.contains_key(&token)
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn tokens(&self) -> &[usize] {
        &self.list
    }
}

/// One subscriber set per dialect, so each frame is encoded once per dialect.
#[derive(Debug, Default)]
pub struct DialectSets {
    pub json: SubscriberSet,
    pub sio: SubscriberSet,
}

impl DialectSets {
    pub fn set(&mut self, d: Dialect) -> &mut SubscriberSet {
        match d {
            Dialect::Json => &mut self.json,
            Dialect::SocketIo => &mut self.sio,
        }
    }
    pub fn remove(&mut self, token: usize) -> bool {
        self.json.remove(token) | self.sio.remove(token)
    }
    pub fn is_empty(&self) -> bool {
        self.json.is_empty() && self.sio.is_empty()
    }
    pub fn len(&self) -> usize {
        self.json.len() + self.sio.len()
    }
}

/// The loop's sockets as the hub sees them: queue frames, ask for closes.
pub struct Io<'a> {
    pub conns: &'a mut Slab<Conn>,
    pub stats: &'a mut Stats,
    /// Sockets with newly queued frames, flushed at the end of the iteration.
    pub dirty: &'a mut Vec<usize>,
    /// Sockets the hub closed; the loop calls [`Hub::detach`] for them.
    pub closed: &'a mut Vec<usize>,
    pub now: Instant,
    /// Time between a socket's hard cap and its soft cap, see SPEC section 4.
    pub linger: std::time::Duration,
}

impl Io<'_> {
    /// Queues `frame` on `token`. Droppable frames past the soft cap are
    /// refused; anything past the hard cap closes the socket with 1013.
    pub fn send(&mut self, token: usize, frame: &Frame, prio: Priority) -> Offer {
        let Some(c) = self.conns.get_mut(token) else {
            return Offer::Dropped;
        };
        if c.is_closing() {
            return Offer::Dropped;
        }
        let offer = c.out.offer(frame.clone(), prio);
        match offer {
            Offer::Queued => {
                self.stats.messages_sent += 1;
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(token);
                }
            }
            Offer::Dropped => self.stats.frames_dropped_slow += 1,
            Offer::OverHardCap => {
                self.stats.slow_consumers_closed += 1;
                self.close(
                    token,
                    ws::close_code::TRY_AGAIN_LATER,
                    "slow consumer: send queue full",
                );
            }
        }
        offer
    }

    /// Sends to every token of a set.
    pub fn send_all(&mut self, set: &SubscriberSet, frame: &Frame, prio: Priority) {
        for &t in set.tokens() {
            self.send(t, frame, prio);
        }
    }

    /// Sends an event to both dialect sets, encoding once per dialect used.
    pub fn broadcast(&mut self, sets: &DialectSets, ev: &json::Event<'_>, prio: Priority) {
        if !sets.json.is_empty() {
            let f = json::encode(ev, Dialect::Json);
            self.send_all(&sets.json, &f, prio);
        }
        if !sets.sio.is_empty() {
            let f = json::encode(ev, Dialect::SocketIo);
            self.send_all(&sets.sio, &f, prio);
        }
    }

    /// The dialect of a socket (JSON for anything without a session).
    pub fn dialect(&self, token: usize) -> Dialect {
        self.conns
            .get(token)
            .and_then(|c| c.session.as_ref())
            .map_or(Dialect::Json, |s| s.dialect)
    }

    /// Sends one event to one socket in its dialect.
    pub fn event(&mut self, token: usize, ev: &json::Event<'_>) {
        let f = json::encode(ev, self.dialect(token));
        self.send(token, &f, Priority::Essential);
    }

    /// An `error` message; the socket stays open.
    pub fn error(&mut self, token: usize, message: &str) {
        self.event(token, &json::Event::Error { message });
    }

    /// Queues a close frame and moves the socket to its closing phase.
    pub fn close(&mut self, token: usize, code: u16, reason: &str) {
        let Some(c) = self.conns.get_mut(token) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        c.out.push(ws::close_frame(code, reason));
        c.phase = Phase::Closing {
            deadline: self.now + self.linger,
            drop_after_flush: false,
        };
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(token);
        }
        self.closed.push(token);
    }

    /// An `error` message followed by a close (auth failures, 1008).
    pub fn error_and_close(&mut self, token: usize, message: &str, code: u16) {
        self.error(token, message);
        self.close(token, code, message);
    }

    pub fn serial(&self, token: usize) -> Option<u64> {
        self.conns.get(token).map(|c| c.serial)
    }
}

/// A server whose metrics and logs browsers can watch: the local host or an agent's.
#[derive(Debug)]
pub struct ServerState {
    pub name: String,
    pub is_local: bool,
    /// The connected agent's (token, serial).
    pub agent: Option<(usize, u64)>,
    /// Since when the agent is offline (for the `agent_offline` alert).
    pub offline_since: Option<Instant>,
    /// Latest metrics `data` object, as JSON, so new subscribers see it at once.
    pub latest_metrics: Option<String>,
    /// `/api/v1/ws/metrics/{id}` sockets (plain form) and `/api/v1/ws` sockets (mux form).
    pub metrics_plain: SubscriberSet,
    pub metrics_mux: SubscriberSet,
    /// `/api/v1/ws/logs/{id}` sockets.
    pub logs: SubscriberSet,
    /// Per alert rule: condition true since, and whether raised.
    pub alerts: Vec<agents::AlertState>,
}

/// All hub state.
pub struct Hub {
    pub config: Config,
    pub jwt: Option<JwtVerifier>,
    pub api_keys: ApiKeys,
    pub docker: Option<DockerHandle>,
    pub docker_up: bool,
    /// Container table by full id.
    pub containers: HashMap<String, Container>,
    /// Sockets that receive container state (ready `/api/v1/ws` and Socket.IO).
    pub browsers: DialectSets,
    /// Log topics by full container id.
    pub topics: HashMap<String, LogTopic>,
    /// follow_id -> container id.
    pub follows: HashMap<u64, String>,
    /// Topics holding lines back for coalescing (see `logs.rs`).
    pub held_topics: HashSet<String>,
    pub next_follow_id: u64,
    pub servers: HashMap<String, ServerState>,
    pub pending: HashMap<String, PendingCommand>,
    /// Local Docker actions: request id -> command id.
    pub local_actions: HashMap<u64, String>,
    pub next_request_id: u64,
    pub audit: Audit,
}

impl Hub {
    pub fn new(config: Config, docker: Option<DockerHandle>, now: Instant) -> Self {
        let jwt = config.jwt_secret.clone().map(JwtVerifier::new);
        let api_keys = ApiKeys::new(config.agents.clone());
        let mut servers = HashMap::new();
        let alert_count = config.alerts.len();
        servers.insert(
            config.server_id.clone(),
            ServerState::new("local".into(), true, alert_count, None),
        );
        for a in &config.agents {
            servers.insert(
                a.server_id.clone(),
                ServerState::new(a.name.clone(), false, alert_count, Some(now)),
            );
        }
        let audit = Audit::open(config.audit_log.as_deref());
        Hub {
            config,
            jwt,
            api_keys,
            docker,
            docker_up: false,
            containers: HashMap::new(),
            browsers: DialectSets::default(),
            topics: HashMap::new(),
            follows: HashMap::new(),
            held_topics: HashSet::new(),
            next_follow_id: 1,
            servers,
            pending: HashMap::new(),
            local_actions: HashMap::new(),
            next_request_id: 1,
            audit,
        }
    }

    /// Removes a socket from every set it is in (it closed or is closing).
    pub fn detach(&mut self, io: &mut Io<'_>, token: usize) {
        let Some(conn) = io.conns.get_mut(token) else {
            return;
        };
        let Some(session) = conn.session.as_mut() else {
            return;
        };
        let streams = std::mem::take(&mut session.log_streams);
        let servers = std::mem::take(&mut session.metrics_servers);
        let target = session.target_server.take();
        let agent = session.agent_server.take();
        self.browsers.remove(token);
        for id in streams {
            self.unsubscribe_logs(io, token, &id);
        }
        for sid in servers.iter().chain(target.iter()) {
            if let Some(s) = self.servers.get_mut(sid) {
                s.metrics_plain.remove(token);
                s.metrics_mux.remove(token);
                s.logs.remove(token);
            }
        }
        if let Some(sid) = agent {
            self.agent_gone(io, token, &sid);
        }
    }

    /// Periodic work: auth deadlines, token expiry, command timeouts, alerts.
    pub fn tick(&mut self, io: &mut Io<'_>, now_unix: u64) {
        let now = io.now;
        let mut expired = Vec::new();
        for (t, c) in io.conns.iter() {
            if let Some(s) = &c.session {
                match &s.auth {
                    AuthState::Pending { deadline } if *deadline <= now => {
                        expired.push((t, "authentication timed out"))
                    }
                    AuthState::Ready { exp: Some(exp), .. }
                        if *exp + crate::auth::DEFAULT_LEEWAY.as_secs() < now_unix =>
                    {
                        expired.push((t, "token expired"))
                    }
                    _ => {}
                }
            }
        }
        for (t, why) in expired {
            io.stats.auth_failure(if why == "token expired" {
                "expired"
            } else {
                "timeout"
            });
            io.error_and_close(t, why, ws::close_code::POLICY_VIOLATION);
        }
        self.expire_commands(io);
        self.check_offline_alerts(io);
    }
}
