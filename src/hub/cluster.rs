//! The other hubs of a cluster (SPEC 11), both ways:
//!
//! - **As the owner** of a server (the local host, or an agent connected
//!   here), this hub serves other hubs as if each were one browser: a hub's
//!   requests (`subscribe_containers`, `start_log_stream`, `subscribe_metrics`,
//!   `command`, ...) run in a session of its own (a *peer session*, ids from
//!   [`PEER_CONN_BASE`](super::session::PEER_CONN_BASE)) with the ordinary browser code, and what that
//!   session is sent goes to that hub over NATS, once per frame. Many
//!   browsers on one hub cost one subscription here.
//! - **As a viewer**, a server another hub owns is *relayed*: it is in this
//!   hub's directory with `relay` set, its container table, metrics, log
//!   streams and stats arrive as that owner's events and are published on
//!   this hub's own topics, to its own browsers. What this hub asks of a
//!   relayed server ([`State::tell_relay`]) becomes a request to its owner.
//!
//! Presence: every hub publishes a beat every [`BEAT_EVERY`] listing the
//! servers it owns, and at once when one of them changes. A relayed server
//! not listed again within [`RELAY_TIMEOUT`] goes offline here (its hub
//! died, or NATS is away); a hub whose session id changed (it restarted or
//! reconnected to NATS) is resynced: its session here is dropped and what
//! this hub asked of it is asked again.
//!
//! Only the owner evaluates alerts and notifies; a viewer shows the owner's
//! alert events to its watchers.
//!
//! Invariants: peer sessions are at most [`MAX_PEERS`]; servers learnt from
//! beats are at most [`MAX_CLUSTER_SERVERS`]; every field of another hub's
//! message is checked like a browser's or an agent's.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::auth::Role;
use crate::cluster::{ClusterEvent, ClusterLink, ClusterOp, PeerKind, valid_hub_id};
use crate::feed::{LogLine, LogStream};
use crate::protocol::Dialect;
use crate::protocol::json::Event;
use crate::stats::Endpoint;

use super::agents::{ServerState, str_field};
use super::servers::DockerStatus;
use super::session::{AuthState, ConnId, Session};
use super::topics::TopicKey;
use super::{Io, State};

/// How often a hub says which servers it owns.
pub const BEAT_EVERY: Duration = Duration::from_secs(2);
/// A relayed server not listed in a beat for this long is offline here.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(7);
/// Most other hubs served at once.
pub const MAX_PEERS: usize = 64;
/// Most servers learnt from other hubs.
pub const MAX_CLUSTER_SERVERS: usize = 50_000;
/// Dropped messages to NATS are logged at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Servers per beat message (a beat of a big hub is sent in parts).
const BEAT_CHUNK: usize = 500;
/// Firing alerts a hub tells the others in each beat, at most (and keeps
/// of each other hub); an alert object is at most [`MAX_ALERT_BYTES`].
pub const MAX_BEAT_ALERTS: usize = 200;
const MAX_ALERT_BYTES: usize = 4096;

/// A relayed server: which hub owns it, until when that is believed.
#[derive(Debug, Clone)]
pub struct Relay {
    pub hub: String,
    pub expires: Instant,
    /// When its agent connected to that hub (unix ms, the hub's word): of
    /// two hubs that both claim a server, the newer connection wins.
    pub since_ms: u64,
}

/// What this hub asks of a relayed server's owner besides its table and
/// log streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Want {
    Metrics,
    AgentLogs,
}

/// The [`Want`]s asked for one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wants {
    metrics: bool,
    agent_logs: bool,
}

impl Wants {
    fn has(self, w: Want) -> bool {
        match w {
            Want::Metrics => self.metrics,
            Want::AgentLogs => self.agent_logs,
        }
    }
    fn set(&mut self, w: Want, on: bool) {
        match w {
            Want::Metrics => self.metrics = on,
            Want::AgentLogs => self.agent_logs = on,
        }
    }
}

/// Another hub, as this one knows it.
#[derive(Debug)]
struct Peer {
    /// Its session id (process start and NATS connection).
    session: String,
    /// Its session here, while it asks things of this hub.
    conn: Option<ConnId>,
    last_heard: Instant,
}

/// This hub's part of a cluster.
#[derive(Debug)]
pub struct Cluster {
    pub link: ClusterLink,
    pub hub_id: String,
    up: bool,
    next_beat: Option<Instant>,
    peers: HashMap<String, Peer>,
    /// What was asked of each relayed server's owner (by server id).
    asked: HashMap<String, Wants>,
    /// Relayed commands waiting for the owner's receipt: command id.
    asking: HashSet<String>,
    /// Hubs watching the agent log entries of a server owned here (they
    /// carry no `server_id` in their seed form, so they go apart).
    agent_log_watchers: HashMap<String, HashSet<String>>,
    /// The alerts firing on each other hub, as its last beat said.
    remote_alerts: HashMap<String, Vec<Value>>,
    refused_servers: u64,
    /// The link's dropped count when last reported, and when.
    dropped_reported: (u64, Option<Instant>),
}

impl Cluster {
    pub fn new(link: ClusterLink, hub_id: String) -> Self {
        Cluster {
            link,
            hub_id,
            up: false,
            next_beat: None,
            peers: HashMap::new(),
            asked: HashMap::new(),
            asking: HashSet::new(),
            agent_log_watchers: HashMap::new(),
            remote_alerts: HashMap::new(),
            refused_servers: 0,
            dropped_reported: (0, None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Other hubs heard from.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    fn send(&self, to: &str, kind: PeerKind, body: Vec<u8>) {
        self.link.push(ClusterOp::Send {
            to: to.to_string(),
            kind,
            body: Bytes::from(body),
        });
    }

    fn request(&self, to: &str, msg: &Value) {
        self.send(to, PeerKind::Req, msg.to_string().into_bytes());
    }
}

/// One server of a beat.
fn beat_entry(json: Value, online: bool, since_ms: u64) -> Value {
    let mut v = json;
    if let Value::Object(m) = &mut v {
        m.insert("online".into(), Value::from(online));
        m.insert("since_ms".into(), Value::from(since_ms));
    }
    v
}

impl State {
    /// The hub that owns `server_id`, when another hub does.
    pub fn relay_hub(&self, server_id: &str) -> Option<&str> {
        self.servers
            .get(server_id)
            .and_then(|s| s.relay.as_ref())
            .map(|r| r.hub.as_str())
    }

    /// Whether this hub raises `agent_offline` alerts. In a cluster one hub
    /// does, for the whole fleet: the one with the lowest id among the hubs
    /// heard from (an offline server has no owner to raise it, and every
    /// hub knows it). A hub that hears no other (NATS away) raises its own.
    pub(super) fn raises_offline_alerts(&self) -> bool {
        self.cluster
            .as_ref()
            .is_none_or(|c| c.peers.keys().all(|h| h.as_str() > c.hub_id.as_str()))
    }

    /// Whether this hub owns `server_id` (its host, or an agent connected here).
    pub fn owns(&self, server_id: &str) -> bool {
        self.servers
            .get(server_id)
            .is_some_and(ServerState::owned_here)
    }

    /// The servers this hub owns, as beat entries.
    fn owned_entries(&self) -> Vec<Value> {
        self.servers
            .iter()
            .filter(|(_, s)| s.owned_here())
            .filter_map(|(id, s)| Some(beat_entry(self.server_json(id)?, true, s.connected_ms)))
            .collect()
    }

    /// Beats `entries`; the periodic beat's first message also carries the
    /// alerts firing here (`alerts`), for the other hubs' snapshots.
    fn beat(&self, entries: Vec<Value>, alerts: Option<Vec<Value>>) {
        let Some(c) = &self.cluster else { return };
        if !c.up {
            return;
        }
        let session = c.link.session();
        let mut alerts = alerts;
        let mut chunks: Vec<&[Value]> = entries.chunks(BEAT_CHUNK).collect();
        if chunks.is_empty() && alerts.is_some() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let mut body = json!({"hub": c.hub_id, "session": session, "servers": chunk});
            if let Some(a) = alerts.take() {
                body["alerts"] = Value::Array(a);
            }
            c.link.push(ClusterOp::Beat(Bytes::from(body.to_string())));
        }
    }

    /// The alerts firing on every other hub (for the `alerts` snapshot).
    pub(super) fn remote_alerts(&self) -> impl Iterator<Item = &Value> {
        self.cluster
            .iter()
            .flat_map(|c| c.remote_alerts.values().flatten())
    }

    /// Tells the cluster at once that an owned server changed (or that an
    /// agent left this hub: `online` false).
    pub(super) fn announce(&self, server_id: &str, online: bool) {
        if self.cluster.is_none() {
            return;
        }
        let since = self.servers.get(server_id).map_or(0, |s| s.connected_ms);
        if let Some(j) = self.server_json(server_id) {
            self.beat(vec![beat_entry(j, online, since)], None);
        }
    }

    /// Once a tick: beats, expiries, and what is asked of owners.
    pub(super) fn cluster_tick(&mut self, io: &mut Io<'_>) {
        let Some(c) = &mut self.cluster else { return };
        let now = io.now;
        // Messages the link could not queue (NATS slower than this hub, or
        // too large): said at most every 10 s, with how many.
        let dropped = c
            .link
            .stats
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed);
        let (before, at) = c.dropped_reported;
        if dropped > before
            && at.is_none_or(|t| now.saturating_duration_since(t) >= DROP_REPORT_EVERY)
        {
            log::warn!(
                "cluster: {} message(s) to NATS dropped since the last report (queue of {} full, \
                 or over {} bytes): other hubs miss what they carried (their log streams see a log_gap)",
                dropped - before,
                crate::cluster::OP_QUEUE,
                crate::cluster::MAX_PAYLOAD
            );
            c.dropped_reported = (dropped, Some(now));
        }
        if c.up && c.next_beat.is_none_or(|t| t <= now) {
            c.next_beat = Some(now + BEAT_EVERY);
            let entries = self.owned_entries();
            let alerts: Vec<Value> = self
                .alerts
                .firing()
                .into_iter()
                .take(MAX_BEAT_ALERTS)
                .cloned()
                .collect();
            self.beat(entries, Some(alerts));
        }
        let Some(c) = &mut self.cluster else { return };
        let gone: Vec<String> = c
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_heard) > RELAY_TIMEOUT)
            .map(|(h, _)| h.clone())
            .collect();
        for hub in gone {
            log::info!("cluster: hub {hub} is gone (no beat for {RELAY_TIMEOUT:?})");
            self.drop_peer(io, &hub);
        }
        let expired: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, s)| s.relay.as_ref().is_some_and(|r| r.expires <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for sid in expired {
            self.relay_lost(io, &sid, "its hub stopped listing it");
        }
        self.sync_wants(io);
    }

    /// Asks owners for what this hub's browsers watch now (metrics, agent
    /// log entries), and stops asking for what nobody here watches any more.
    /// Costs the topics this hub has plus what it asked, not its directory
    /// (tens of thousands of servers in a big cluster).
    fn sync_wants(&mut self, _io: &mut Io<'_>) {
        let Some(c) = &self.cluster else { return };
        let mut desired: HashMap<&str, Wants> = HashMap::new();
        for key in self.topics.keys() {
            let (sid, want) = match key {
                TopicKey::Metrics(s) | TopicKey::SeedMetrics(s) => (s.as_str(), Want::Metrics),
                TopicKey::AgentLogs(s) => (s.as_str(), Want::AgentLogs),
                _ => continue,
            };
            let relayed = self.servers.get(sid).is_some_and(|s| s.relay.is_some());
            if relayed && self.topics.get(key).is_some_and(|t| !t.subs.is_empty()) {
                desired.entry(sid).or_default().set(want, true);
            }
        }
        let mut changes: Vec<(String, Want, bool)> = Vec::new();
        for (sid, want) in &desired {
            let asked = c.asked.get(*sid).copied().unwrap_or_default();
            for w in [Want::Metrics, Want::AgentLogs] {
                if want.has(w) != asked.has(w) {
                    changes.push((sid.to_string(), w, want.has(w)));
                }
            }
        }
        for (sid, asked) in &c.asked {
            if !desired.contains_key(sid.as_str()) {
                for w in [Want::Metrics, Want::AgentLogs] {
                    if asked.has(w) {
                        changes.push((sid.clone(), w, false));
                    }
                }
            }
        }
        drop(desired);
        for (sid, want, on) in changes {
            let Some(hub) = self.relay_hub(&sid).map(str::to_string) else {
                if let Some(c) = &mut self.cluster {
                    c.asked.remove(&sid);
                }
                continue;
            };
            let Some(c) = &mut self.cluster else { return };
            let kind = match (want, on) {
                (Want::Metrics, true) => "subscribe_metrics",
                (Want::Metrics, false) => "unsubscribe_metrics",
                (Want::AgentLogs, true) => "subscribe_agent_logs",
                (Want::AgentLogs, false) => "unsubscribe_agent_logs",
            };
            c.request(&hub, &json!({"type": kind, "server_id": sid}));
            let entry = c.asked.entry(sid.clone()).or_default();
            entry.set(want, on);
            if *entry == Wants::default() {
                c.asked.remove(&sid);
            }
        }
    }

    /// Whether another hub watches `server_id`'s agent log entries.
    pub(super) fn agent_logs_watched_elsewhere(&self, server_id: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.agent_log_watchers.contains_key(server_id))
    }

    /// An agent log entry (its `data`) to the hubs that watch its server.
    pub(super) fn relay_agent_log(&self, server_id: &str, data: &Value) {
        let Some(c) = &self.cluster else { return };
        let Some(hubs) = c.agent_log_watchers.get(server_id) else {
            return;
        };
        let body = json!({"type": "agent_log", "server_id": server_id, "data": data}).to_string();
        for hub in hubs {
            c.send(hub, PeerKind::Ev, body.clone().into_bytes());
        }
    }

    /// What the NATS thread reports.
    pub(super) fn on_cluster(&mut self, io: &mut Io<'_>, ev: ClusterEvent) {
        let Some(c) = &mut self.cluster else { return };
        match ev {
            ClusterEvent::Up => {
                let was_down_once = c.next_beat.is_some();
                c.up = true;
                c.next_beat = None;
                // Nothing could be heard while away: every hub and server
                // gets a full timeout from now to beat again.
                let now = io.now;
                for p in c.peers.values_mut() {
                    p.last_heard = now;
                }
                for s in self.servers.values_mut() {
                    if let Some(r) = &mut s.relay {
                        r.expires = r.expires.max(now + RELAY_TIMEOUT);
                    }
                }
                // The beat (a new session id) goes before the asks, so the
                // owners drop this hub's old sessions before the new asks.
                self.cluster_tick(io);
                if was_down_once {
                    // Messages may have been lost while away: ask again.
                    for sid in self.relayed_by(None) {
                        self.relay_resync(io, &sid);
                    }
                }
            }
            ClusterEvent::Down(why) => {
                c.up = false;
                log::warn!("cluster: {why}; serving this hub's own clients meanwhile");
            }
            ClusterEvent::Beat(body) => self.on_beat(io, &body),
            ClusterEvent::Message { from, kind, body } => {
                let Ok(text) = std::str::from_utf8(&body) else {
                    io.stats.bad_input("cluster_message");
                    return;
                };
                match kind {
                    PeerKind::Req => self.on_peer_request(io, &from, text),
                    PeerKind::Ev => self.on_owner_event(io, &from, text),
                }
            }
            ClusterEvent::LogHistory {
                server,
                container,
                records,
            } => self.on_stored_log(io, server, container, &records),
            ClusterEvent::HistoryAsk { reply, body } => {
                self.on_history_ask(reply, &body, super::unix_now());
            }
            // For an HTTP connection: the server loop takes these first.
            ClusterEvent::HistoryAnswer { .. } => {}
            ClusterEvent::Unanswered { token } => {
                c.asking.remove(&token);
                self.fail_command(
                    io,
                    &token,
                    "the agent's hub does not answer (it is gone or NATS is away)",
                );
            }
        }
    }

    /// Notes a message from `hub` in `session`; a new session means the hub
    /// restarted or reconnected: its session here goes, and this hub asks
    /// again for what it watches on that hub's servers.
    fn heard(&mut self, io: &mut Io<'_>, hub: &str, session: &str) -> bool {
        let Some(c) = &mut self.cluster else {
            return false;
        };
        if hub == c.hub_id {
            return false;
        }
        let now = io.now;
        let known = c.peers.len();
        match c.peers.get_mut(hub) {
            Some(p) if p.session == session => {
                p.last_heard = now;
                true
            }
            Some(_) => {
                log::info!("cluster: hub {hub} restarted or reconnected: resyncing");
                let old = c.peers.get_mut(hub).and_then(|p| p.conn.take());
                if let Some(p) = c.peers.get_mut(hub) {
                    p.session = session.to_string();
                    p.last_heard = now;
                }
                if let Some(conn) = old {
                    self.detach(io, conn);
                }
                self.forget_watcher(hub);
                for sid in self.relayed_by(Some(hub)) {
                    self.relay_resync(io, &sid);
                }
                true
            }
            None if known >= MAX_PEERS => false,
            None => {
                log::info!("cluster: hub {hub} joined");
                c.peers.insert(
                    hub.to_string(),
                    Peer {
                        session: session.to_string(),
                        conn: None,
                        last_heard: now,
                    },
                );
                true
            }
        }
    }

    /// The servers relayed from `hub` (from any hub: `None`).
    fn relayed_by(&self, hub: Option<&str>) -> Vec<String> {
        self.servers
            .iter()
            .filter(|(_, s)| {
                s.relay
                    .as_ref()
                    .is_some_and(|r| hub.is_none_or(|h| r.hub == h))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Another hub is gone: its session here ends, its servers go offline.
    fn drop_peer(&mut self, io: &mut Io<'_>, hub: &str) {
        let Some(c) = &mut self.cluster else { return };
        let Some(p) = c.peers.remove(hub) else { return };
        if let Some(conn) = p.conn {
            self.detach(io, conn);
        }
        self.forget_watcher(hub);
        if let Some(c) = &mut self.cluster {
            c.remote_alerts.remove(hub);
        }
        for sid in self.relayed_by(Some(hub)) {
            self.relay_lost(io, &sid, "its hub is gone");
        }
    }

    /// `hub` watches no agent log entries here any more.
    fn forget_watcher(&mut self, hub: &str) {
        if let Some(c) = &mut self.cluster {
            c.agent_log_watchers.retain(|_, hubs| {
                hubs.remove(hub);
                !hubs.is_empty()
            });
        }
    }

    /// A beat: which servers another hub owns.
    fn on_beat(&mut self, io: &mut Io<'_>, body: &[u8]) {
        let Ok(Value::Object(beat)) = serde_json::from_slice::<Value>(body) else {
            io.stats.bad_input("cluster_beat");
            return;
        };
        let (Some(hub), Some(session)) = (str_field(&beat, "hub"), str_field(&beat, "session"))
        else {
            io.stats.bad_input("cluster_beat");
            return;
        };
        if !valid_hub_id(hub) || session.len() > 128 || !self.heard(io, hub, session) {
            return;
        }
        let hub = hub.to_string();
        if let (Some(Value::Array(alerts)), Some(c)) = (beat.get("alerts"), &mut self.cluster) {
            let kept: Vec<Value> = alerts
                .iter()
                .filter(|a| {
                    a.get("id").is_some_and(Value::is_string)
                        && a.get("server_id").is_some_and(Value::is_string)
                        && a.to_string().len() <= MAX_ALERT_BYTES
                })
                .take(MAX_BEAT_ALERTS)
                .cloned()
                .collect();
            if kept.is_empty() {
                c.remote_alerts.remove(&hub);
            } else if c.peers.contains_key(&hub) {
                c.remote_alerts.insert(hub.clone(), kept);
            }
        }
        let Some(Value::Array(entries)) = beat.get("servers") else {
            return;
        };
        for e in entries.iter().take(BEAT_CHUNK) {
            if let Value::Object(e) = e {
                self.on_beat_entry(io, &hub, e);
            }
        }
    }

    fn on_beat_entry(&mut self, io: &mut Io<'_>, hub: &str, e: &Map<String, Value>) {
        let Some(sid) = str_field(e, "server_id").filter(|s| !s.is_empty() && s.len() <= 128)
        else {
            return;
        };
        if sid == self.config.server_id {
            return;
        }
        let online = e.get("online").and_then(Value::as_bool).unwrap_or(false);
        let since_ms = e.get("since_ms").and_then(Value::as_u64).unwrap_or(0);
        let now = io.now;
        if let Some(s) = self.servers.get(sid) {
            if s.agent.is_some() {
                return; // its agent is here now: this hub owns it
            }
        }
        if !online {
            if self.relay_hub(sid) == Some(hub) {
                self.relay_lost(io, sid, "its agent left its hub");
            }
            return;
        }
        // Two hubs claim it (the old one has not noticed its agent left
        // yet): the newer connection wins, so views do not flap.
        let older = self
            .servers
            .get(sid)
            .and_then(|s| s.relay.as_ref())
            .is_some_and(|r| r.hub != hub && r.expires > now && r.since_ms > since_ms);
        if older {
            return;
        }
        if !self.servers.contains_key(sid) {
            if self.servers.len() >= MAX_CLUSTER_SERVERS {
                if let Some(c) = &mut self.cluster {
                    c.refused_servers = c.refused_servers.saturating_add(1);
                }
                return;
            }
            let mut learnt = ServerState::new(String::new(), false, None);
            learnt.learnt = true;
            self.servers.insert(sid.to_string(), learnt);
        }
        let Some(s) = self.servers.get_mut(sid) else {
            return;
        };
        let text = |k: &str, max: usize| -> Option<String> {
            str_field(e, k).map(|v| v.chars().take(max).collect())
        };
        let before = (
            s.name.clone(),
            s.capabilities.clone(),
            s.version.clone(),
            s.docker.clone(),
        );
        // A server of this hub's own `[[agents]]` keeps the name given here.
        if s.learnt {
            if let Some(name) = text("name", 128) {
                s.name = name;
            }
        }
        s.capabilities = super::servers::capabilities(e.get("capabilities")).unwrap_or_default();
        s.version = text("version", 64);
        s.docker = match str_field(e, "docker") {
            Some("up") => DockerStatus::Up,
            Some("down") => DockerStatus::Down(
                text("docker_error", 300).unwrap_or_else(|| "Docker engine unavailable".into()),
            ),
            _ => DockerStatus::Absent,
        };
        s.last_seen = Some(super::unix_now());
        let expires = now + RELAY_TIMEOUT;
        let same_hub = s.relay.as_ref().is_some_and(|r| r.hub == hub);
        if same_hub {
            if let Some(r) = &mut s.relay {
                r.expires = expires;
                r.since_ms = since_ms;
            }
            let changed = before
                != (
                    s.name.clone(),
                    s.capabilities.clone(),
                    s.version.clone(),
                    s.docker.clone(),
                );
            if changed {
                self.publish_server_state(io, sid);
            }
            return;
        }
        let moved = s.relay.is_some();
        if moved {
            // Its agent failed over: it was out of reach in between.
            self.relay_lost(io, sid, "its agent moved to another hub");
        }
        let Some(s) = self.servers.get_mut(sid) else {
            return;
        };
        s.relay = Some(Relay {
            hub: hub.to_string(),
            expires,
            since_ms,
        });
        s.offline_since = None;
        log::debug!(
            "cluster: server {sid} is on hub {hub}{}",
            if moved { " (moved)" } else { "" }
        );
        self.relay_found(io, sid);
    }

    /// A server is now reached through its owner: browsers see it online,
    /// and the owner is asked for its containers and this hub's streams.
    fn relay_found(&mut self, io: &mut Io<'_>, sid: &str) {
        self.resolve_offline_alert(io, sid);
        self.publish_server_state(io, sid);
        self.relay_resync(io, sid);
    }

    /// Asks the owner again for everything this hub watches on `sid`.
    fn relay_resync(&mut self, io: &mut Io<'_>, sid: &str) {
        let Some(hub) = self.relay_hub(sid).map(str::to_string) else {
            return;
        };
        if let Some(c) = &mut self.cluster {
            c.asked.remove(sid);
            // The owner may still hold this hub's old asks (a short
            // partition): they go first, so every ask below starts afresh
            // (a log stream's history is sent again and joined here).
            c.request(&hub, &json!({"type": "forget_server", "server_id": sid}));
            c.request(
                &hub,
                &json!({"type": "subscribe_containers", "server_id": sid}),
            );
        }
        if let Some(s) = self.servers.get_mut(sid) {
            s.stats_on = false;
        }
        self.suspend_server_logs(io, sid);
        self.resume_server_logs(io, sid);
        self.update_sampling(io, sid);
        // Metrics and agent log entries are asked again on the next tick
        // (sync_wants), once for every server learnt in between.
    }

    /// A relayed server is out of reach: offline here, its streams wait,
    /// its commands fail.
    pub(super) fn relay_lost(&mut self, io: &mut Io<'_>, sid: &str, why: &str) {
        let Some(s) = self.servers.get_mut(sid) else {
            return;
        };
        let Some(r) = s.relay.take() else { return };
        log::debug!(
            "cluster: server {sid} (hub {}) is offline here: {why}",
            r.hub
        );
        s.offline_since = Some(io.now);
        s.stats_on = false;
        if let Some(c) = &mut self.cluster {
            c.asked.remove(sid);
        }
        self.suspend_server_logs(io, sid);
        self.fail_commands_of(io, sid);
        self.publish_server_state(io, sid);
    }

    /// An agent of a server relayed here connected to this hub: it is owned
    /// here from now on (the old owner is told to forget this hub's asks).
    pub(super) fn relay_taken_over(&mut self, sid: &str) {
        let Some(s) = self.servers.get_mut(sid) else {
            return;
        };
        let Some(r) = s.relay.take() else { return };
        if let Some(c) = &mut self.cluster {
            c.asked.remove(sid);
            c.request(&r.hub, &json!({"type": "forget_server", "server_id": sid}));
        }
    }

    /// What this hub asks of a relayed server (the agent-protocol asks of
    /// `tell_agent`), as a request to its owner. `false`: not relayed.
    pub(super) fn tell_relay(
        &self,
        server_id: &str,
        kind: &str,
        container_id: &str,
        tail: Option<usize>,
    ) -> bool {
        let (Some(hub), Some(c)) = (self.relay_hub(server_id), &self.cluster) else {
            return false;
        };
        let msg = match kind {
            "subscribe_logs" => {
                let mut m = json!({
                    "type": "start_log_stream",
                    "server_id": server_id,
                    "container_id": container_id,
                    "tail": tail.unwrap_or(100),
                });
                // A stream that holds lines in the owner's numbering goes
                // on from its last one (`log_store.rs`).
                let key = TopicKey::Logs {
                    server: server_id.to_string(),
                    container: container_id.to_string(),
                };
                let last = self
                    .topics
                    .get(&key)
                    .and_then(|t| t.log.as_ref())
                    .filter(|f| f.has_history && !f.ring.is_empty())
                    .map(|f| f.ring.last_seq());
                if let Some(last) = last {
                    m["since_seq"] = Value::from(last);
                    m["tail"] = Value::from(0);
                }
                m
            }
            "unsubscribe_logs" => json!({
                "type": "stop_log_stream",
                "server_id": server_id,
                "container_id": container_id,
            }),
            "subscribe_stats" | "unsubscribe_stats" => {
                json!({"type": kind, "server_id": server_id})
            }
            _ => return true,
        };
        c.request(hub, &msg);
        true
    }

    /// A browser's command for a relayed server: to its owner, which must
    /// take it ([`ClusterEvent::Unanswered`] otherwise).
    pub(super) fn relay_command(
        &mut self,
        server_id: &str,
        kind: &str,
        mut msg: Map<String, Value>,
        command_id: &str,
    ) -> bool {
        let (Some(hub), Some(c)) = (
            self.relay_hub(server_id).map(str::to_string),
            &mut self.cluster,
        ) else {
            return false;
        };
        msg.insert("type".into(), Value::from(kind));
        msg.insert("server_id".into(), Value::from(server_id));
        msg.insert("request_id".into(), Value::from(command_id));
        c.asking.insert(command_id.to_string());
        if c.asking.len() > 10_000 {
            c.asking.clear(); // receipts are only awaited a few seconds
        }
        c.link.push(ClusterOp::Ask {
            to: hub,
            body: Bytes::from(Value::Object(msg).to_string()),
            token: command_id.to_string(),
        });
        true
    }

    /// A request from another hub: run in its session here, as a browser's.
    fn on_peer_request(&mut self, io: &mut Io<'_>, from: &str, text: &str) {
        let Some(c) = &mut self.cluster else { return };
        let Some(peer) = c.peers.get_mut(from) else {
            // Not heard in a beat yet (or over MAX_PEERS): its next beat
            // makes it known, and it asks again on resync.
            return;
        };
        let conn = match peer.conn {
            Some(conn) if io.sessions.contains(conn) => conn,
            _ => {
                let conn = io.sessions.free_peer_conn();
                let session = Session::new(
                    0,
                    Endpoint::Browser,
                    Dialect::Json,
                    AuthState::Ready {
                        sub: format!("hub:{from}"),
                        role: Role::Admin,
                        exp: None,
                    },
                );
                io.sessions.insert(conn, session);
                peer.conn = Some(conn);
                conn
            }
        };
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            io.stats.bad_input("cluster_message");
            return;
        };
        let kind = str_field(&obj, "type").unwrap_or_default();
        let server = str_field(&obj, "server_id").unwrap_or_default().to_string();
        match kind {
            // A hub watches a table without its usage: asked for apart.
            "subscribe_containers" => {
                // An unknown server: nothing to watch (the asker learns it
                // from the beats).
                let _ = self.watch_table(io, conn, &server, None);
            }
            "subscribe_stats" if self.servers.contains_key(&server) => {
                self.topics
                    .subscribe(io, &TopicKey::Stats(server.clone()), conn);
                self.update_sampling(io, &server);
            }
            "unsubscribe_stats" => {
                self.leave_topic(io, &TopicKey::Stats(server.clone()), conn);
                self.update_sampling(io, &server);
            }
            "subscribe_agent_logs" if self.owns(&server) => {
                if let Some(c) = &mut self.cluster {
                    c.agent_log_watchers
                        .entry(server)
                        .or_default()
                        .insert(from.to_string());
                }
            }
            "unsubscribe_agent_logs" => {
                if let Some(c) = &mut self.cluster {
                    if let Some(hubs) = c.agent_log_watchers.get_mut(&server) {
                        hubs.remove(from);
                        if hubs.is_empty() {
                            c.agent_log_watchers.remove(&server);
                        }
                    }
                }
            }
            "forget_server" => {
                if let Some(c) = &mut self.cluster {
                    if let Some(hubs) = c.agent_log_watchers.get_mut(&server) {
                        hubs.remove(from);
                    }
                }
                let keys: Vec<TopicKey> = io
                    .session(conn)
                    .map(|s| {
                        s.topics
                            .iter()
                            .filter_map(|id| self.topics.key_of(*id))
                            .filter(|k| k.server() == server)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for k in keys {
                    self.leave_topic(io, &k, conn);
                }
                self.update_sampling(io, &server);
            }
            _ => self.on_text(io, conn, text),
        }
    }

    /// An event from the hub that owns a server this hub relays.
    fn on_owner_event(&mut self, io: &mut Io<'_>, from: &str, text: &str) {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
            io.stats.bad_input("cluster_message");
            return;
        };
        let kind = str_field(&obj, "type").unwrap_or_default().to_string();
        let Some(sid) = str_field(&obj, "server_id").map(str::to_string) else {
            return;
        };
        if self.relay_hub(&sid) != Some(from) {
            return; // late news of a server that moved or went offline
        }
        let result = match kind.as_str() {
            "initial_state" => self.relayed_table(io, &sid, &obj),
            "container_state_change" => self.on_agent_extension_kind(io, &sid, &kind, &obj),
            "container_stats" => self.on_agent_extension_kind(io, &sid, &kind, &obj),
            "metrics" => {
                if let Some(data) = obj.get("data") {
                    self.publish_metrics(io, &sid, data.clone());
                }
                Ok(())
            }
            "log_update" => {
                self.relayed_log(io, &sid, &obj);
                Ok(())
            }
            "log_gap" if obj.get("missed").is_some_and(Value::is_null) => {
                let container = str_field(&obj, "container_id").unwrap_or_default();
                let key = TopicKey::Logs {
                    server: sid.clone(),
                    container: container.to_string(),
                };
                self.relayed_gap(io, &key);
                Ok(())
            }
            "log_history_end" => {
                let container = str_field(&obj, "container_id").unwrap_or_default();
                let key = TopicKey::Logs {
                    server: sid.clone(),
                    container: container.to_string(),
                };
                let in_history = self
                    .topics
                    .get(&key)
                    .and_then(|t| t.log.as_ref())
                    .is_some_and(|f| !f.suspended && f.incoming.is_some());
                if in_history {
                    self.on_log_history(io, &key, Vec::new(), true);
                }
                Ok(())
            }
            "log_stream_stopped" => {
                let container = str_field(&obj, "container_id").unwrap_or_default();
                let why: String = str_field(&obj, "message")
                    .unwrap_or("Log stream stopped")
                    .chars()
                    .take(200)
                    .collect();
                let key = TopicKey::Logs {
                    server: sid.clone(),
                    container: container.to_string(),
                };
                self.on_log_ended(io, &key, &why);
                Ok(())
            }
            "command_response" | "docker_response" => {
                let mut obj = obj;
                if let Some(id) = obj.get("request_id").cloned() {
                    obj.insert("command_id".into(), id);
                }
                self.agent_response(io, &sid, &kind, obj);
                Ok(())
            }
            "error" => {
                if let Some(id) = str_field(&obj, "request_id") {
                    let why = str_field(&obj, "message").unwrap_or("failed");
                    let id = id.to_string();
                    let why = why.chars().take(300).collect::<String>();
                    self.fail_command(io, &id, &why);
                }
                Ok(())
            }
            "agent_log" => {
                let mut fields = Map::new();
                fields.insert(
                    "data".into(),
                    obj.get("data").cloned().unwrap_or(Value::Null),
                );
                let ev = Event::Object {
                    name: "log",
                    fields: &fields,
                };
                let key = TopicKey::AgentLogs(sid.clone());
                self.topics
                    .publish(io, &key, &ev, super::topics::Publish::lines(1));
                Ok(())
            }
            "alert" => {
                let mut fields = obj.clone();
                fields.remove("type");
                let ev = Event::Object {
                    name: "alert",
                    fields: &fields,
                };
                self.publish_to_watchers(io, &sid, &ev);
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            io.stats.bad_input("cluster_message");
            log::debug!("cluster: {kind} from hub {from}: {e}");
        }
    }

    /// The owner's whole table of a relayed server.
    fn relayed_table(
        &mut self,
        io: &mut Io<'_>,
        sid: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        // The agent path checks and swaps it in; a table is never chunked here.
        let mut m = Map::new();
        m.insert(
            "containers".into(),
            obj.get("containers").cloned().unwrap_or(Value::Null),
        );
        self.on_agent_extension_kind(io, sid, "containers", &m)
    }

    /// Lines of a relayed log stream, in its owner's numbering (`seq` is
    /// the number of the chunk's last line). A new stream's history comes
    /// first (until the owner's `log_history_end`, which may come with no
    /// line at all) and sets the ring's numbering; after that, and for a
    /// stream resumed with `since_seq`, lines go through
    /// [`State::relayed_lines`].
    fn relayed_log(&mut self, io: &mut Io<'_>, sid: &str, obj: &Map<String, Value>) {
        let (Some(container), Some(log), Some(seq)) = (
            str_field(obj, "container_id"),
            str_field(obj, "log"),
            obj.get("seq").and_then(Value::as_u64),
        ) else {
            return;
        };
        let key = TopicKey::Logs {
            server: sid.to_string(),
            container: container.to_string(),
        };
        let Some(follow) = self.topics.get_mut(&key).and_then(|t| t.log.as_mut()) else {
            return;
        };
        if follow.suspended {
            return;
        }
        // Newline-terminated lines (one `log_update` chunk).
        let lines: Vec<LogLine> = log
            .strip_suffix('\n')
            .unwrap_or(log)
            .split('\n')
            .take(10_000)
            .map(|l| LogLine {
                stream: LogStream::Stdout,
                timestamp: String::new(),
                text: l.to_string(),
            })
            .collect();
        let Some(first) = seq
            .checked_add(1)
            .and_then(|s| s.checked_sub(lines.len() as u64))
            .filter(|f| *f > 0)
        else {
            io.stats.bad_input("cluster_message");
            return;
        };
        if !follow.has_history && follow.incoming.is_some() {
            // A new stream's history: it numbers the ring as the owner does.
            let fresh =
                follow.ring.is_empty() && follow.incoming.as_ref().is_some_and(Vec::is_empty);
            if fresh || follow.renumber {
                follow.ring = super::logring::LogRing::with_base(first - 1);
                follow.renumber = false;
            }
            self.on_log_history(io, &key, lines, false);
        } else {
            self.relayed_lines(io, &key, first, lines);
        }
    }

    /// Fails a pending command with `why` (its hub refused or is gone).
    fn fail_command(&mut self, io: &mut Io<'_>, command_id: &str, why: &str) {
        let Some(p) = self.pending.remove(command_id) else {
            return;
        };
        io.stats.command("failed");
        self.audit.record(&p, command_id, &format!("failed: {why}"));
        if io.serial(p.requester) == Some(p.requester_serial) {
            io.event(
                p.requester,
                &Event::Error {
                    message: &format!("command {command_id} failed: {why}"),
                    request_id: p.request_id.as_deref(),
                },
            );
        }
    }

    /// Frames the hub queued for other hubs' sessions go to their hubs.
    pub(super) fn send_to_peers(&mut self, io: &mut Io<'_>) {
        if io.to_peers.is_empty() {
            return;
        }
        let Some(c) = &self.cluster else {
            io.to_peers.clear();
            return;
        };
        let by_conn: HashMap<ConnId, &str> = c
            .peers
            .iter()
            .filter_map(|(h, p)| Some((p.conn?, h.as_str())))
            .collect();
        for (conn, frame) in io.to_peers.drain(..) {
            if let Some(hub) = by_conn.get(&conn) {
                let payload = crate::ws::frame_payload(&frame);
                c.send(hub, PeerKind::Ev, payload.to_vec());
            }
        }
    }

    /// The cluster's lines of `/metrics`.
    pub fn render_cluster_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let Some(c) = &self.cluster else { return };
        let st = &c.link.stats;
        let relayed = self.servers.values().filter(|s| s.relay.is_some()).count();
        for (name, kind, help, v) in [
            (
                "dockwire_cluster_nats_up",
                "gauge",
                "1 while this hub is connected to NATS.",
                u64::from(c.up),
            ),
            (
                "dockwire_cluster_peers",
                "gauge",
                "Other hubs heard from.",
                c.peers.len() as u64,
            ),
            (
                "dockwire_cluster_relayed_servers",
                "gauge",
                "Servers owned by other hubs, online here.",
                relayed as u64,
            ),
            (
                "dockwire_cluster_messages_sent_total",
                "counter",
                "Messages published to NATS.",
                st.sent.load(Relaxed),
            ),
            (
                "dockwire_cluster_messages_received_total",
                "counter",
                "Messages received from NATS.",
                st.received.load(Relaxed),
            ),
            (
                "dockwire_cluster_messages_dropped_total",
                "counter",
                "Messages not sent (queue full, too large, or NATS refused).",
                st.dropped.load(Relaxed),
            ),
            (
                "dockwire_cluster_connects_total",
                "counter",
                "Connections made to NATS (the first and every reconnect).",
                st.reconnects.load(Relaxed),
            ),
            (
                "dockwire_cluster_log_history",
                "gauge",
                "1 while JetStream keeps log history for this hub.",
                u64::from(c.link.has_history()),
            ),
            (
                "dockwire_cluster_log_records_stored_total",
                "counter",
                "Batches of log lines stored in JetStream.",
                st.stored.load(Relaxed),
            ),
            (
                "dockwire_cluster_log_histories_loaded_total",
                "counter",
                "Log histories loaded from JetStream (a stream started afresh here).",
                st.loaded.load(Relaxed),
            ),
            (
                "dockwire_cluster_servers_refused_total",
                "counter",
                "Servers of other hubs not taken (over the limit).",
                c.refused_servers,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }

    /// `/healthz`'s `cluster` object.
    pub fn cluster_health(&self) -> Option<Value> {
        let c = self.cluster.as_ref()?;
        let relayed = self.servers.values().filter(|s| s.relay.is_some()).count();
        Some(json!({
            "hub_id": c.hub_id,
            "nats": if c.up { "up" } else { "down" },
            "peers": c.peers.keys().collect::<Vec<_>>(),
            "relayed_servers": relayed,
            "history": c.link.has_history(),
        }))
    }
}
