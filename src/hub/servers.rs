//! Servers as first-class (SPEC 6): the directory of servers (the local host
//! and every agent's), `list_servers` and `server_state_change`, each
//! server's container table (`subscribe_containers`), what an agent
//! announcing `docker` pushes (`hello`, `containers`, `container_state_change`,
//! `docker_status`, `container_stats`, `log_batch`, `log_stream_stopped`), and
//! the per-container usage switch ([`State::update_sampling`]): a server's
//! containers are sampled only while someone subscribes to its
//! `container_stats`.
//!
//! Invariants: an agent's table is bounded ([`MAX_REMOTE_CONTAINERS`], each
//! container at most [`MAX_CONTAINER_JSON`] bytes); a table sent in chunks
//! (`"more": true`) replaces the old one only when complete; every agent
//! input that does not fit gets an `error` to the agent and changes nothing.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::feed::metrics::rfc3339_secs;
use crate::feed::{DockerRequest, LogLine, LogStream};
use crate::protocol::json::Event;
use crate::protocol::model::{Container, ContainerStats};
use crate::writer::Priority;

use super::agents::str_field;
use super::session::ConnId;
use super::topics::{Publish, TopicKey};
use super::{Io, State};

/// Most containers kept for one agent's server.
pub const MAX_REMOTE_CONTAINERS: usize = 2_000;
/// Largest container an agent may describe (serialized), in bytes.
pub const MAX_CONTAINER_JSON: usize = 8 << 10;
/// Most capabilities kept from an agent's `hello`, and their length.
const MAX_CAPABILITIES: usize = 16;
const MAX_CAPABILITY_LEN: usize = 32;
/// Most lines taken from one `log_batch`.
const MAX_BATCH_LINES: usize = 10_000;

/// What the hub knows of a server's Docker engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerStatus {
    /// The server never said it has Docker (an agent without `docker`).
    Absent,
    Up,
    /// Unreachable, with the reason to show.
    Down(String),
}

/// An agent's container table and the chunks of one being replaced.
#[derive(Debug, Default)]
pub struct RemoteTable {
    pub containers: HashMap<String, Container>,
    /// A table arriving in chunks (`"more": true`), swapped in when complete.
    incoming: Option<HashMap<String, Container>>,
    /// The table being sent was refused: its remaining chunks are ignored.
    refusing: bool,
}

fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The `capabilities` of an agent's `hello` (or of another hub's beat):
/// at most [`MAX_CAPABILITIES`] non-empty names of at most
/// [`MAX_CAPABILITY_LEN`] bytes; absent or null is none.
pub(super) fn capabilities(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a
            .iter()
            .filter_map(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= MAX_CAPABILITY_LEN)
            .take(MAX_CAPABILITIES)
            .map(str::to_string)
            .collect()),
        Some(_) => Err("field \"capabilities\" must be an array of strings".into()),
    }
}

/// Checks one container from an agent; the reason when it does not fit.
fn valid_container(c: &Container) -> Result<(), String> {
    if c.id.is_empty() || c.id.len() > 128 {
        return Err("container id must be 1 to 128 bytes".into());
    }
    let size = serde_json::to_vec(c).map_or(usize::MAX, |v| v.len());
    if size > MAX_CONTAINER_JSON {
        return Err(format!(
            "container {} is {size} bytes as JSON, at most {MAX_CONTAINER_JSON}",
            shown(&c.id)
        ));
    }
    Ok(())
}

impl State {
    /// The `Server` object of SPEC 6.
    pub fn server_json(&self, server_id: &str) -> Option<Value> {
        let s = self.servers.get(server_id)?;
        let online = s.is_local || s.agent.is_some() || s.relay.is_some();
        let docker = if s.is_local {
            match (&self.docker_error, self.docker_up) {
                (_, true) => DockerStatus::Up,
                (Some(why), false) => DockerStatus::Down(why.clone()),
                (None, false) => DockerStatus::Down("Docker engine unavailable".into()),
            }
        } else {
            s.docker.clone()
        };
        let mut caps: Vec<String> = s.capabilities.clone();
        if s.is_local {
            caps = vec!["docker".into()];
        }
        let last_seen = if s.is_local {
            Some(super::unix_now())
        } else {
            s.last_seen
        };
        let (docker_state, docker_error) = match &docker {
            DockerStatus::Absent => (Value::Null, None),
            DockerStatus::Up => (Value::from("up"), None),
            DockerStatus::Down(why) => (Value::from("down"), Some(why.clone())),
        };
        let mut m = Map::new();
        m.insert("server_id".into(), Value::from(server_id));
        m.insert("name".into(), Value::from(s.name.clone()));
        m.insert("online".into(), Value::from(online));
        m.insert(
            "last_seen".into(),
            last_seen.map_or(Value::Null, |t| Value::from(rfc3339_secs(t))),
        );
        m.insert("capabilities".into(), Value::from(caps));
        let hub = match (&s.relay, &self.cluster) {
            (Some(r), _) => r.hub.clone(),
            (None, Some(c)) => c.hub_id.clone(),
            (None, None) => self.config.server_id.clone(),
        };
        m.insert("hub".into(), Value::from(hub));
        m.insert("local".into(), Value::from(s.is_local));
        m.insert("docker".into(), docker_state);
        if let Some(e) = docker_error {
            m.insert("docker_error".into(), Value::from(e));
        }
        if let Some(v) = &s.version {
            m.insert("version".into(), Value::from(v.clone()));
        }
        Some(Value::Object(m))
    }

    /// Every server, the local host first, then by name.
    pub fn servers_json(&self) -> Vec<Value> {
        let mut ids: Vec<&String> = self.servers.keys().collect();
        ids.sort_by_key(|id| {
            let s = &self.servers[*id];
            (!s.is_local, s.name.clone(), (*id).clone())
        });
        ids.iter().filter_map(|id| self.server_json(id)).collect()
    }

    /// `GET /api/v1/servers`.
    pub fn servers_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.servers_json()).unwrap_or_else(|_| b"[]".to_vec())
    }

    /// `GET /api/v1/servers/{id}/containers`: `None` for an unknown server.
    pub fn server_containers_body(&self, server_id: &str) -> Option<Vec<u8>> {
        let list = self.containers_of(server_id)?;
        Some(serde_json::to_vec(&list).unwrap_or_else(|_| b"[]".to_vec()))
    }

    /// A server's container table (the local host's or an agent's);
    /// `None` for an unknown server.
    pub fn table_of(&self, server_id: &str) -> Option<&HashMap<String, Container>> {
        if server_id == self.config.server_id {
            return Some(&self.containers);
        }
        self.servers.get(server_id).map(|s| &s.table.containers)
    }

    /// A server's containers sorted by name; `None` for an unknown server.
    pub fn containers_of(&self, server_id: &str) -> Option<Vec<&Container>> {
        let mut v: Vec<&Container> = self.table_of(server_id)?.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Some(v)
    }

    /// Resolves a container reference on any server (see [`State::resolve_container`]).
    ///
    /// # Errors
    /// A message for the client: unknown server, offline agent, unknown container.
    pub fn resolve_on(&self, server_id: &str, reference: &str) -> Result<String, String> {
        if server_id == self.config.server_id {
            return self.resolve_container(reference);
        }
        let Some(s) = self.servers.get(server_id) else {
            return Err(format!("Unknown server_id: {}", shown(server_id)));
        };
        if s.agent.is_none() && s.relay.is_none() {
            return Err(format!("Agent for server {} is offline", shown(server_id)));
        }
        super::docker::resolve_in(&s.table.containers, reference)?
            .ok_or_else(|| format!("No such container: {}", shown(reference)))
    }

    /// Tells every browser a server's new state.
    pub(super) fn publish_server_state(&mut self, io: &mut Io<'_>, server_id: &str) {
        let Some(server) = self.server_json(server_id) else {
            return;
        };
        let mut fields = Map::new();
        fields.insert("server".into(), server);
        let ev = Event::Object {
            name: "server_state_change",
            fields: &fields,
        };
        self.topics
            .publish(io, &TopicKey::Servers, &ev, Publish::ESSENTIAL);
        if self.owns(server_id) {
            self.announce(server_id, true);
        }
    }

    /// `list_servers`.
    pub(super) fn send_servers(&self, io: &mut Io<'_>, conn: ConnId, request_id: Option<&str>) {
        let mut fields = Map::new();
        fields.insert("servers".into(), Value::from(self.servers_json()));
        if let Some(r) = request_id {
            fields.insert("request_id".into(), Value::from(r));
        }
        io.event(
            conn,
            &Event::Object {
                name: "servers",
                fields: &fields,
            },
        );
    }

    /// `subscribe_containers`: the server's `initial_state`, then its changes
    /// and `container_stats`.
    pub(super) fn subscribe_containers(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        request_id: Option<&str>,
    ) -> Result<(), String> {
        self.watch_table(io, conn, server_id, request_id)?;
        self.topics
            .subscribe(io, &TopicKey::Stats(server_id.to_string()), conn);
        self.update_sampling(io, server_id);
        Ok(())
    }

    /// A server's `initial_state` to `conn`, then its container changes
    /// (without `container_stats`: another hub asks for those apart).
    pub(super) fn watch_table(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        request_id: Option<&str>,
    ) -> Result<(), String> {
        let Some(list) = self.containers_of(server_id) else {
            return Err(format!("Unknown server_id: {}", shown(server_id)));
        };
        let f = io.dialect(conn).encode(&Event::InitialState {
            server_id,
            containers: &list,
            request_id,
        });
        io.send(conn, &f, Priority::Essential);
        self.topics
            .subscribe(io, &TopicKey::Containers(server_id.to_string()), conn);
        Ok(())
    }

    /// `unsubscribe_containers`.
    pub(super) fn unsubscribe_containers(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
    ) -> Result<(), String> {
        if !self.servers.contains_key(server_id) {
            return Err(format!("Unknown server_id: {}", shown(server_id)));
        }
        self.leave_topic(io, &TopicKey::Containers(server_id.to_string()), conn);
        self.leave_topic(io, &TopicKey::Stats(server_id.to_string()), conn);
        Ok(())
    }

    /// Sends a request to a server's agent (when it is online).
    pub(super) fn tell_agent(
        &self,
        io: &mut Io<'_>,
        server_id: &str,
        kind: &str,
        container_id: &str,
        tail: Option<usize>,
    ) {
        if self.tell_relay(server_id, kind, container_id, tail) {
            return;
        }
        let Some((agent, _)) = self.servers.get(server_id).and_then(|s| s.agent) else {
            return;
        };
        let mut fields = Map::new();
        if !container_id.is_empty() {
            fields.insert("container_id".into(), Value::from(container_id));
        }
        if let Some(t) = tail {
            fields.insert("tail".into(), Value::from(t));
        }
        if kind == "subscribe_stats" {
            let ms = self.config.metrics_interval.as_millis() as u64;
            fields.insert("interval_ms".into(), Value::from(ms));
        }
        io.event(
            agent,
            &Event::Object {
                name: kind,
                fields: &fields,
            },
        );
    }

    /// Starts or stops a server's container sampling when what it should
    /// do changed: on when its `Stats` topic has subscribers and the server
    /// can sample (the local host, or an online agent). Called where that
    /// can change: a `Stats` subscription taken or left, an agent online.
    pub(super) fn update_sampling(&mut self, io: &mut Io<'_>, server_id: &str) {
        let Some(s) = self.servers.get(server_id) else {
            return;
        };
        let watched = self
            .topics
            .get(&TopicKey::Stats(server_id.to_string()))
            .is_some_and(|t| !t.subs.is_empty());
        let on = watched && (s.is_local || s.agent.is_some() || s.relay.is_some());
        if on == s.stats_on {
            return;
        }
        if s.is_local {
            if let Some(d) = &self.docker {
                d.request(DockerRequest::Stats {
                    interval: on.then_some(self.config.metrics_interval),
                });
            }
        } else {
            let kind = if on {
                "subscribe_stats"
            } else {
                "unsubscribe_stats"
            };
            self.tell_agent(io, server_id, kind, "", None);
        }
        if let Some(s) = self.servers.get_mut(server_id) {
            s.stats_on = on;
        }
    }

    /// The extension messages of an agent that announced itself (SPEC 6).
    /// `false` when `kind` is not one of them.
    pub(super) fn on_agent_extension(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        kind: &str,
        obj: &Map<String, Value>,
    ) -> bool {
        let Some(result) = self.apply_agent_extension(io, server_id, kind, obj) else {
            return false;
        };
        if let Err(message) = result {
            io.stats.bad_input("agent_message");
            io.error(conn, &format!("{kind}: {message}"));
        }
        true
    }

    /// An extension message of `server_id`'s agent, or the same news
    /// relayed by the hub that owns it (`cluster.rs`).
    pub(super) fn on_agent_extension_kind(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        kind: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        self.apply_agent_extension(io, server_id, kind, obj)
            .unwrap_or(Ok(()))
    }

    /// `None` when `kind` is not an extension message.
    fn apply_agent_extension(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        kind: &str,
        obj: &Map<String, Value>,
    ) -> Option<Result<(), String>> {
        let result = match kind {
            "hello" => self.agent_hello(io, server_id, obj),
            "containers" => self.agent_containers(io, server_id, obj),
            "container_state_change" => self.agent_container_change(io, server_id, obj),
            "docker_status" => self.agent_docker_status(io, server_id, obj),
            "container_stats" => self.agent_stats(io, server_id, obj),
            "log_batch" => self.agent_log_batch(io, server_id, obj),
            "log_stream_stopped" => {
                let id = str_field(obj, "container_id").unwrap_or_default();
                let why = str_field(obj, "message").unwrap_or("Log stream stopped");
                let key = TopicKey::Logs {
                    server: server_id.to_string(),
                    container: id.to_string(),
                };
                let why: String = why.chars().take(200).collect();
                // The agent's engine went away, not the container: resumed later (SPEC 7).
                if obj.get("resumable").and_then(Value::as_bool) == Some(true) {
                    self.suspend_log(io, &key);
                } else {
                    self.on_log_ended(io, &key, &why);
                }
                Ok(())
            }
            _ => return None,
        };
        Some(result)
    }

    fn agent_hello(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        let caps = capabilities(obj.get("capabilities"))?;
        let version = str_field(obj, "version").map(|v| v.chars().take(64).collect());
        let Some(s) = self.servers.get_mut(server_id) else {
            return Ok(());
        };
        if let Some(name) = str_field(obj, "name").filter(|n| *n != s.name) {
            log::info!(
                "agent {:?} ({server_id}) calls itself {:?}; the configured name is used",
                s.name,
                shown(name)
            );
        }
        s.docker = if caps.iter().any(|c| c == "docker") {
            DockerStatus::Up
        } else {
            DockerStatus::Absent
        };
        let docker = s.docker == DockerStatus::Up;
        s.capabilities = caps;
        s.version = version;
        self.publish_server_state(io, server_id);
        if docker {
            // Log streams its last connection had go on where they were.
            self.resume_server_logs(io, server_id);
        }
        Ok(())
    }

    fn agent_containers(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        let list: Vec<Container> = match obj.get("containers") {
            Some(v @ Value::Array(_)) => Vec::<Container>::deserialize(v)
                .map_err(|e| format!("field \"containers\": {e}"))?,
            _ => return Err("field \"containers\" must be an array".into()),
        };
        for c in &list {
            valid_container(c)?;
        }
        let more = obj.get("more").and_then(Value::as_bool).unwrap_or(false);
        let Some(s) = self.servers.get_mut(server_id) else {
            return Ok(());
        };
        if s.table.refusing {
            s.table.refusing = more;
            return Ok(());
        }
        let incoming = s.table.incoming.get_or_insert_with(HashMap::new);
        for c in list {
            if incoming.len() >= MAX_REMOTE_CONTAINERS && !incoming.contains_key(&c.id) {
                s.table.incoming = None;
                s.table.refusing = more;
                return Err(format!(
                    "more than {MAX_REMOTE_CONTAINERS} containers: the table was not taken"
                ));
            }
            incoming.insert(c.id.clone(), c);
        }
        if more {
            return Ok(());
        }
        let before = std::mem::replace(
            &mut s.table.containers,
            s.table.incoming.take().unwrap_or_default(),
        );
        let key = TopicKey::Containers(server_id.to_string());
        let mut list: Vec<&Container> = s.table.containers.values().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let ev = Event::InitialState {
            server_id,
            containers: &list,
            request_id: None,
        };
        self.topics.publish(io, &key, &ev, Publish::ESSENTIAL);
        self.alerts_after_resync(io, server_id, before);
        Ok(())
    }

    fn agent_container_change(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        let Some(v) = obj.get("container") else {
            return Err("missing field \"container\"".into());
        };
        if v.get("state").and_then(Value::as_str) == Some("removed") {
            let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
            let Some(s) = self.servers.get_mut(server_id) else {
                return Ok(());
            };
            if let Some(gone) = s.table.containers.remove(id) {
                let ev = Event::ContainerRemoved { server_id, id };
                self.publish_container_event(io, server_id, &gone, &ev);
                self.alerts_on_container_removed(io, server_id, id);
            }
            return Ok(());
        }
        let c: Container =
            Container::deserialize(v).map_err(|e| format!("field \"container\": {e}"))?;
        valid_container(&c)?;
        let Some(s) = self.servers.get_mut(server_id) else {
            return Ok(());
        };
        if s.table.containers.len() >= MAX_REMOTE_CONTAINERS
            && !s.table.containers.contains_key(&c.id)
        {
            return Err(format!("more than {MAX_REMOTE_CONTAINERS} containers"));
        }
        let ev = Event::ContainerChanged {
            server_id,
            container: &c,
        };
        self.publish_container_event(io, server_id, &c, &ev);
        let Some(s) = self.servers.get_mut(server_id) else {
            return Ok(());
        };
        let previous = s.table.containers.insert(c.id.clone(), c.clone());
        self.alerts_on_container(io, server_id, previous.as_ref(), &c);
        Ok(())
    }

    fn agent_docker_status(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        let Some(up) = obj.get("up").and_then(Value::as_bool) else {
            return Err("field \"up\" must be a boolean".into());
        };
        let status = if up {
            DockerStatus::Up
        } else {
            let why = str_field(obj, "reason").unwrap_or("Docker engine unavailable");
            DockerStatus::Down(why.chars().take(300).collect())
        };
        let Some(s) = self.servers.get_mut(server_id) else {
            return Ok(());
        };
        if s.docker == status {
            return Ok(());
        }
        if let DockerStatus::Down(why) = &status {
            log::warn!("agent {:?} ({server_id}): docker is down: {why}", s.name);
        }
        s.docker = status;
        if up {
            self.resume_server_logs(io, server_id);
        } else {
            // The agent's followers ended with its engine: resumed when it is back.
            self.suspend_server_logs(io, server_id);
        }
        self.publish_server_state(io, server_id);
        Ok(())
    }

    fn agent_stats(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        let stats: Vec<ContainerStats> = match obj.get("stats") {
            Some(v @ Value::Array(a)) if a.len() <= MAX_REMOTE_CONTAINERS => {
                Vec::<ContainerStats>::deserialize(v)
                    .map_err(|e| format!("field \"stats\": {e}"))?
            }
            _ => {
                return Err(format!(
                    "field \"stats\" must be an array of at most {MAX_REMOTE_CONTAINERS}"
                ));
            }
        };
        if stats.iter().any(|s| s.id.is_empty() || s.id.len() > 128) {
            return Err("every stats entry needs an id of 1 to 128 bytes".into());
        }
        self.publish_stats(io, server_id, &stats);
        Ok(())
    }

    /// An agent's log lines for a container the hub follows through it:
    /// history first (`"history": true` chunks, the last with `"last": true`;
    /// a batch without the flag ends the history too), then live lines.
    fn agent_log_batch(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        obj: &Map<String, Value>,
    ) -> Result<(), String> {
        let Some(container) = str_field(obj, "container_id") else {
            return Err("missing field \"container_id\"".into());
        };
        let Some(Value::Array(raw)) = obj.get("lines") else {
            return Err("field \"lines\" must be an array".into());
        };
        let key = TopicKey::Logs {
            server: server_id.to_string(),
            container: container.to_string(),
        };
        let Some(follow) = self.topics.get(&key).and_then(|t| t.log.as_ref()) else {
            // Nobody follows it (any more): lines in flight after unsubscribe_logs.
            return Ok(());
        };
        if follow.suspended {
            // A follower the hub no longer counts on (its stream waits for a new one).
            return Ok(());
        }
        // The current follower's history is still arriving.
        let in_history = follow.incoming.is_some();
        let mut lines = Vec::with_capacity(raw.len().min(MAX_BATCH_LINES));
        for l in raw.iter().take(MAX_BATCH_LINES) {
            let text = l.get("line").and_then(Value::as_str).unwrap_or_default();
            let stream = match l.get("stream").and_then(Value::as_str) {
                Some("stderr") => LogStream::Stderr,
                Some("stdout") => LogStream::Stdout,
                _ => LogStream::Console,
            };
            let timestamp = l
                .get("timestamp")
                .and_then(Value::as_str)
                .unwrap_or_default();
            // One line stays one line.
            lines.push(LogLine {
                stream,
                timestamp: timestamp.chars().take(40).collect(),
                text: text.replace('\n', " "),
            });
        }
        let history = obj.get("history").and_then(Value::as_bool).unwrap_or(false);
        if in_history {
            let last = obj.get("last").and_then(Value::as_bool).unwrap_or(!history);
            self.on_log_history(io, &key, lines, last);
        } else if !lines.is_empty() {
            self.on_log_lines(io, &key, lines);
        }
        Ok(())
    }
}
