//! Agents and what they push: API-key auth, the server each agent stands
//! for, its metrics and log entries (published on the server's topics).
//!
//! Invariant: one live socket per agent key (a newer one replaces the
//! older); a server is offline exactly when no socket holds it.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::feed::metrics::rfc3339_now;
use crate::protocol::Inbound;
use crate::protocol::json::Event;
use crate::protocol::model::Metrics;
use crate::ws::close_code;

use super::history::History;
use super::servers::{DockerStatus, RemoteTable};
use super::session::{AuthState, ConnId};
use super::topics::{Publish, TopicKey};
use super::{Io, State};

/// A server whose metrics and logs browsers can watch: the local host or an agent's.
#[derive(Debug)]
pub struct ServerState {
    pub name: String,
    pub is_local: bool,
    /// The connected agent's (conn, serial).
    pub agent: Option<(ConnId, u64)>,
    /// Since when the agent is offline (for the `agent_offline` alert).
    pub offline_since: Option<Instant>,
    /// Latest metrics `data` object, as JSON, so new subscribers see it at once.
    pub latest_metrics: Option<String>,
    /// From the agent's `hello` (the local host: `docker`).
    pub capabilities: Vec<String>,
    pub version: Option<String>,
    /// Unix seconds of the agent's last message.
    pub last_seen: Option<u64>,
    /// The agent's Docker engine, as it reports it.
    pub docker: DockerStatus,
    /// The agent's containers (the local host's are `State::containers`).
    pub table: RemoteTable,
    /// Whether its containers are being sampled (`container_stats`).
    pub stats_on: bool,
    /// Metrics samples of the last 24 h (`history.rs`).
    pub history: History,
    /// Another hub of the cluster owns it (`cluster.rs`).
    pub relay: Option<super::cluster::Relay>,
    /// When its agent connected here (unix ms; 0 for the local host).
    pub connected_ms: u64,
    /// Learnt from another hub's beat, not one of this hub's `[[agents]]`.
    pub learnt: bool,
}

impl ServerState {
    /// Held by this hub: its own host, or an agent connected here.
    pub fn owned_here(&self) -> bool {
        self.is_local || self.agent.is_some()
    }

    pub fn new(name: String, is_local: bool, offline_since: Option<Instant>) -> Self {
        ServerState {
            name,
            is_local,
            agent: None,
            offline_since,
            latest_metrics: None,
            capabilities: Vec::new(),
            version: None,
            last_seen: None,
            docker: DockerStatus::Absent,
            table: RemoteTable::default(),
            stats_on: false,
            history: History::default(),
            relay: None,
            connected_ms: 0,
            learnt: false,
        }
    }
}

/// At most one warning of a kind (a refused or shared agent key, a refused
/// Origin) per this period; the rest are counted and the count is given
/// with the next one.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A log line budget: one line per [`WARN_EVERY`], the others counted.
#[derive(Debug, Default)]
pub struct WarnBudget {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnBudget {
    /// `Some(suppressed since the last line)` when a line may be written now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn shown_peer(peer: Option<std::net::IpAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string())
}

pub(super) fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

impl State {
    /// A decoded message on `/api/v1/agents/ws`.
    pub(super) fn on_agent_inbound(&mut self, io: &mut Io<'_>, conn: ConnId, inbound: Inbound) {
        let (kind, mut obj) = match inbound {
            Inbound::Request { kind, obj, .. } => (kind, obj),
            Inbound::Invalid { message, stat } => {
                io.stats.message_in("other");
                io.stats.bad_input(stat);
                io.error(conn, &message);
                return;
            }
            _ => return,
        };
        io.stats.message_in(&kind);
        let server = io.session(conn).and_then(|s| s.agent_server.clone());
        let Some(server_id) = server else {
            self.agent_auth(io, conn, &kind, &obj);
            return;
        };
        if let Some(s) = self.servers.get_mut(&server_id) {
            s.last_seen = Some(super::unix_now());
        }
        if self.on_agent_extension(io, conn, &server_id, &kind, &obj) {
            return;
        }
        match kind.as_str() {
            "metrics" => {
                obj.remove("type");
                obj.remove("server_id");
                self.publish_metrics(io, &server_id, Value::Object(obj));
            }
            "log" => self.agent_log(io, &server_id, &obj),
            "command_response" | "docker_response" => {
                self.agent_response(io, &server_id, &kind, obj)
            }
            "ping" => io.event(conn, &Event::Pong),
            "pong" => {}
            "auth" => io.error(conn, "already authenticated"),
            other => {
                io.stats.bad_input("unknown_type");
                let shown: String = other.chars().take(64).collect();
                io.error(
                    conn,
                    &format!("Invalid message format: unknown message type {shown:?}"),
                );
            }
        }
    }

    fn agent_auth(&mut self, io: &mut Io<'_>, conn: ConnId, kind: &str, obj: &Map<String, Value>) {
        let key = if kind == "auth" {
            str_field(obj, "api_key")
        } else {
            None
        };
        let Some(agent) = key.and_then(|k| self.api_keys.check(k)).cloned() else {
            io.stats.auth_failure(if key.is_some() {
                "bad_api_key"
            } else {
                "no_auth_message"
            });
            let peer = shown_peer(io.session(conn).and_then(|s| s.peer));
            if let Some(suppressed) = self.refused_agent_warnings.allow(io.now) {
                log::warn!(
                    "refused an agent from {peer}: {} ({suppressed} similar warnings suppressed \
                     in the last {}s)",
                    if key.is_some() {
                        "invalid or inactive API key"
                    } else {
                        "no auth message"
                    },
                    WARN_EVERY.as_secs()
                );
            }
            io.error_and_close(
                conn,
                "Invalid or inactive API key",
                close_code::POLICY_VIOLATION,
            );
            return;
        };
        let serial = io.serial(conn).unwrap_or_default();
        let Some(state) = self.servers.get_mut(&agent.server_id) else {
            return;
        };
        if let Some((old, _)) = state.agent.replace((conn, serial)) {
            let old_peer = shown_peer(io.session(old).and_then(|s| s.peer));
            let new_peer = shown_peer(io.session(conn).and_then(|s| s.peer));
            if let Some(suppressed) = self.shared_key_warnings.allow(io.now) {
                log::warn!(
                    "two agents use the key of {:?} ({}): {old_peer} was replaced by {new_peer}; \
                     give each host its own key (dockwire keygen) ({suppressed} similar warnings \
                     suppressed)",
                    agent.name,
                    agent.server_id
                );
            }
            if let Some(s) = io.session_mut(old) {
                s.agent_server = None; // its detach must not mark the server offline
            }
            io.close(
                old,
                close_code::POLICY_VIOLATION,
                "replaced by a newer connection with the same key",
            );
            io.stats.agents_connected = io.stats.agents_connected.saturating_sub(1);
            // The older socket's followers are gone with it; the new
            // connection's `hello` resumes its log streams (SPEC 7).
            self.suspend_server_logs(io, &agent.server_id);
        }
        // Relayed from another hub until now: owned here from now on.
        self.relay_taken_over(&agent.server_id);
        let Some(state) = self.servers.get_mut(&agent.server_id) else {
            return;
        };
        state.offline_since = None;
        state.last_seen = Some(super::unix_now());
        state.connected_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Until its `hello` says otherwise, an agent is a second-seed one.
        state.capabilities.clear();
        state.docker = DockerStatus::Absent;
        state.stats_on = false;
        io.stats.agents_connected += 1;
        if let Some(s) = io.session_mut(conn) {
            s.agent_server = Some(agent.server_id.clone());
            s.auth = AuthState::Ready {
                sub: format!("agent:{}", agent.name),
                role: crate::auth::Role::Viewer,
                exp: None,
            };
        }
        let mut fields = Map::new();
        fields.insert("server_id".into(), Value::from(agent.server_id.clone()));
        fields.insert("message".into(), Value::from("Connected successfully"));
        io.event(
            conn,
            &Event::Object {
                name: "auth_success",
                fields: &fields,
            },
        );
        log::info!("agent {:?} connected as {}", agent.name, agent.server_id);
        self.resolve_offline_alert(io, &agent.server_id);
        self.publish_server_state(io, &agent.server_id);
        // Browsers already watching its containers: sample from now on.
        self.update_sampling(io, &agent.server_id);
    }

    /// The agent socket of `server_id` went away.
    pub(super) fn agent_gone(&mut self, io: &mut Io<'_>, conn: ConnId, server_id: &str) {
        let Some(state) = self.servers.get_mut(server_id) else {
            return;
        };
        if state.agent.is_some_and(|(c, _)| c == conn) {
            state.agent = None;
            state.offline_since = Some(io.now);
            state.stats_on = false;
            io.stats.agents_connected = io.stats.agents_connected.saturating_sub(1);
            log::info!("agent {:?} ({server_id}) disconnected", state.name);
            // Its log streams wait for it (SPEC 7); subscribers stay.
            self.suspend_server_logs(io, server_id);
            self.publish_server_state(io, server_id);
            self.announce(server_id, false);
        }
        self.fail_commands_of(io, server_id);
    }

    /// Fans a metrics sample out to the server's watchers and keeps it as the latest.
    pub(super) fn publish_metrics(&mut self, io: &mut Io<'_>, server_id: &str, data: Value) {
        let data_json = data.to_string();
        if !self.servers.contains_key(server_id) {
            return;
        }
        for (key, id) in [
            (TopicKey::Metrics(server_id.to_string()), Some(server_id)),
            (TopicKey::SeedMetrics(server_id.to_string()), None),
        ] {
            let ev = Event::Metrics {
                server_id: id,
                data_json: &data_json,
            };
            self.topics.publish(io, &key, &ev, Publish::ESSENTIAL);
        }
        if let Some(state) = self.servers.get_mut(server_id) {
            state.history.record(&data, super::unix_now());
            state.latest_metrics = Some(data_json);
        }
        // Another hub's server: its owner evaluates the alerts.
        if self.owns(server_id) {
            self.evaluate_alerts(io, server_id, &data);
        }
    }

    /// The local host's sample from the sysinfo thread.
    pub(super) fn on_local_metrics(&mut self, io: &mut Io<'_>, m: &Metrics) {
        let sid = self.config.server_id.clone();
        let data = serde_json::to_value(m).unwrap_or(Value::Null);
        self.publish_metrics(io, &sid, data);
    }

    /// An agent's `log` entry, to the server's `/api/v1/ws/logs/{id}` watchers.
    fn agent_log(&mut self, io: &mut Io<'_>, server_id: &str, obj: &Map<String, Value>) {
        let key = TopicKey::AgentLogs(server_id.to_string());
        let elsewhere = self.agent_logs_watched_elsewhere(server_id);
        if !elsewhere && self.topics.get(&key).is_none_or(|t| t.subs.is_empty()) {
            return; // nobody watches: nothing to build
        }
        let mut data = Map::new();
        data.insert(
            "level".into(),
            Value::from(str_field(obj, "level").unwrap_or("INFO")),
        );
        data.insert(
            "message".into(),
            obj.get("message").cloned().unwrap_or(Value::from("")),
        );
        data.insert(
            "timestamp".into(),
            obj.get("timestamp")
                .cloned()
                .unwrap_or_else(|| Value::from(rfc3339_now())),
        );
        if let Some(c) = obj.get("container_id") {
            data.insert("container_id".into(), c.clone());
        }
        let data = Value::Object(data);
        if elsewhere {
            self.relay_agent_log(server_id, &data);
        }
        let mut fields = Map::new();
        fields.insert("data".into(), data);
        let ev = Event::Object {
            name: "log",
            fields: &fields,
        };
        self.topics.publish(io, &key, &ev, Publish::lines(1));
    }
}
