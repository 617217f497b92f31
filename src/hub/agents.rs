//! Agents and what flows through them: API-key auth, metrics and log
//! fan-out, commands relayed from admin browsers (with timeouts and an audit
//! trail), and threshold alerts.
//!
//! Invariants: one live socket per agent key (a newer one replaces the
//! older); a command's response goes only to the socket that asked, and
//! only while that same socket (same serial) is alive.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::config::AlertMetric;
use crate::feed::metrics::rfc3339_now;
use crate::feed::{ContainerAction, DockerRequest};
use crate::protocol::json::{self, BrowserRequest};
use crate::protocol::model::Metrics;
use crate::writer::Priority;
use crate::ws::{self, Frame, close_code};

use super::{Hub, Io, ServerState, SubscriberSet};

/// A command waiting for its answer.
#[derive(Debug)]
pub struct PendingCommand {
    pub requester: usize,
    pub requester_serial: u64,
    pub server_id: String,
    pub who: String,
    pub what: String,
    pub kind: &'static str,
    pub deadline: Instant,
}

/// Where audit records go: a JSON-lines file, or the `audit` log target.
pub struct Audit {
    file: Option<File>,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> Self {
        let file = path.and_then(
            |p| match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::error!(
                        "could not open audit log {}: {e}; auditing to stderr",
                        p.display()
                    );
                    None
                }
            },
        );
        Audit { file }
    }

    /// One record per command outcome.
    pub fn record(&mut self, cmd: &PendingCommand, command_id: &str, result: &str) {
        let line = json!({
            "time": rfc3339_now(), "who": cmd.who, "server_id": cmd.server_id,
            "kind": cmd.kind, "command": cmd.what, "command_id": command_id, "result": result,
        })
        .to_string();
        match &mut self.file {
            Some(f) => {
                if let Err(e) = writeln!(f, "{line}") {
                    log::error!("could not write audit log: {e}");
                }
            }
            None => log::info!(target: "audit", "{line}"),
        }
    }
}

/// One alert rule's state on one server.
#[derive(Debug, Default, Clone)]
pub struct AlertState {
    pub since: Option<Instant>,
    pub firing: bool,
}

impl ServerState {
    pub fn new(
        name: String,
        is_local: bool,
        alerts: usize,
        offline_since: Option<Instant>,
    ) -> Self {
        ServerState {
            name,
            is_local,
            agent: None,
            offline_since,
            latest_metrics: None,
            metrics_plain: SubscriberSet::default(),
            metrics_mux: SubscriberSet::default(),
            logs: SubscriberSet::default(),
            alerts: vec![AlertState::default(); alerts],
        }
    }
}

/// `{"type":"metrics","data":...}` or, for `/api/v1/ws`, with `server_id`.
pub fn metrics_frame(server_id: &str, data_json: &str, mux: bool) -> Frame {
    let mut buf = ws::begin_frame(data_json.len() + 96);
    buf.extend_from_slice(b"{\"type\":\"metrics\",");
    if mux {
        buf.extend_from_slice(b"\"server_id\":");
        let _ = serde_json::to_writer(&mut buf, server_id);
        buf.push(b',');
    }
    buf.extend_from_slice(b"\"data\":");
    buf.extend_from_slice(data_json.as_bytes());
    buf.push(b'}');
    ws::finish_frame(buf, ws::OpCode::Text)
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

impl Hub {
    /// A text message on `/api/v1/agents/ws`.
    pub fn on_agent_text(&mut self, io: &mut Io<'_>, token: usize, text: &str) {
        let (kind, mut obj) = match json::parse_typed(text) {
            Ok(p) => p,
            Err(msg) => {
                io.stats.message_in("other");
                io.stats.bad_input("invalid_json");
                io.error(token, &msg);
                return;
            }
        };
        io.stats.message_in(&kind);
        let server = io
            .conns
            .get(token)
            .and_then(|c| c.session.as_ref())
            .and_then(|s| s.agent_server.clone());
        let Some(server_id) = server else {
            self.agent_auth(io, token, &kind, &obj);
            return;
        };
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
            "ping" => io.event_raw(token, r#"{"type":"pong"}"#),
            "pong" => {}
            "auth" => io.error(token, "already authenticated"),
            other => {
                io.stats.bad_input("unknown_type");
                let shown: String = other.chars().take(64).collect();
                io.error(
                    token,
                    &format!("Invalid message format: unknown message type {shown:?}"),
                );
            }
        }
    }

    fn agent_auth(&mut self, io: &mut Io<'_>, token: usize, kind: &str, obj: &Map<String, Value>) {
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
            io.error_and_close(
                token,
                "Invalid or inactive API key",
                close_code::POLICY_VIOLATION,
            );
            return;
        };
        let serial = io.serial(token).unwrap_or_default();
        let Some(state) = self.servers.get_mut(&agent.server_id) else {
            return;
        };
        if let Some((old, _)) = state.agent.replace((token, serial)) {
            if let Some(s) = io.conns.get_mut(old).and_then(|c| c.session.as_mut()) {
                s.agent_server = None; // its detach must not mark the server offline
            }
            io.close(
                old,
                close_code::POLICY_VIOLATION,
                "replaced by a newer connection with the same key",
            );
            io.stats.agents_connected = io.stats.agents_connected.saturating_sub(1);
        }
        state.offline_since = None;
        io.stats.agents_connected += 1;
        if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
            s.agent_server = Some(agent.server_id.clone());
            s.auth = crate::server::conn::AuthState::Ready {
                sub: format!("agent:{}", agent.name),
                role: crate::auth::Role::Viewer,
                exp: None,
            };
        }
        let reply = json!({"type": "auth_success", "server_id": agent.server_id, "message": "Connected successfully"});
        io.event_raw(token, &reply.to_string());
        log::info!("agent {:?} connected as {}", agent.name, agent.server_id);
        self.resolve_offline_alert(io, &agent.server_id);
    }

    /// The agent socket of `server_id` went away.
    pub fn agent_gone(&mut self, io: &mut Io<'_>, token: usize, server_id: &str) {
        let Some(state) = self.servers.get_mut(server_id) else {
            return;
        };
        if state.agent.is_some_and(|(t, _)| t == token) {
            state.agent = None;
            state.offline_since = Some(io.now);
            io.stats.agents_connected = io.stats.agents_connected.saturating_sub(1);
            log::info!("agent {:?} ({server_id}) disconnected", state.name);
        }
        let lost: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.server_id == server_id && !self.servers[server_id].is_local)
            .map(|(k, _)| k.clone())
            .collect();
        for id in lost {
            if let Some(p) = self.pending.remove(&id) {
                io.stats.command("agent_disconnected");
                self.audit.record(&p, &id, "agent disconnected");
                if io.serial(p.requester) == Some(p.requester_serial) {
                    io.error(
                        p.requester,
                        &format!("command {id} failed: the agent disconnected before answering"),
                    );
                }
            }
        }
    }

    /// Fans a metrics sample out to the server's watchers and keeps it as the latest.
    pub fn publish_metrics(&mut self, io: &mut Io<'_>, server_id: &str, data: Value) {
        let cpu = data.get("cpu_percent").and_then(Value::as_f64);
        let mem = data.get("memory_percent").and_then(Value::as_f64);
        let data_json = data.to_string();
        let Some(state) = self.servers.get_mut(server_id) else {
            return;
        };
        if !state.metrics_plain.is_empty() {
            let f = metrics_frame(server_id, &data_json, false);
            io.send_all(&state.metrics_plain, &f, Priority::Essential);
        }
        if !state.metrics_mux.is_empty() {
            let f = metrics_frame(server_id, &data_json, true);
            io.send_all(&state.metrics_mux, &f, Priority::Essential);
        }
        io.stats.message_out(
            "metrics",
            (state.metrics_plain.len() + state.metrics_mux.len()) as u64,
        );
        state.latest_metrics = Some(data_json);
        self.evaluate_alerts(io, server_id, cpu, mem);
    }

    /// The local host's sample from the sysinfo thread.
    pub fn on_local_metrics(&mut self, io: &mut Io<'_>, m: &Metrics) {
        let sid = self.config.server_id.clone();
        let data = serde_json::to_value(m).unwrap_or(Value::Null);
        self.publish_metrics(io, &sid, data);
    }

    fn agent_log(&mut self, io: &mut Io<'_>, server_id: &str, obj: &Map<String, Value>) {
        let Some(state) = self.servers.get(server_id) else {
            return;
        };
        if state.logs.is_empty() {
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
        let f = json::encode_value(&json!({"type": "log", "data": data}));
        io.send_all(&state.logs, &f, Priority::Droppable);
        io.stats.message_out("log", state.logs.len() as u64);
    }

    /// `docker_command` / `command` from a browser; `allowed`: its role may
    /// command (admin, or auth off). Refusals are audited too.
    pub fn browser_command(
        &mut self,
        io: &mut Io<'_>,
        token: usize,
        req: BrowserRequest,
        allowed: bool,
    ) -> Result<(), String> {
        let local = self.config.server_id.clone();
        let who = io
            .conns
            .get(token)
            .and_then(|c| c.session.as_ref())
            .map_or("?", |s| s.who())
            .to_string();
        let (server_id, kind, what, outgoing) = match req {
            BrowserRequest::DockerCommand {
                server_id,
                action,
                container_id,
            } => {
                let sid = server_id.unwrap_or_else(|| local.clone());
                let act = ContainerAction::parse(&action).ok_or_else(|| {
                    format!(
                        "unknown action {:?}: use start, stop or restart",
                        action.chars().take(32).collect::<String>()
                    )
                })?;
                let msg = json!({"type": "docker_command", "action": act.as_str(), "container_id": container_id});
                (
                    sid,
                    "docker_command",
                    format!("{} {container_id}", act.as_str()),
                    msg,
                )
            }
            BrowserRequest::Command { server_id, command } => {
                let msg = json!({"type": "command", "command": command});
                (server_id, "command", command, msg)
            }
            _ => return Ok(()),
        };
        let command_id = uuid::Uuid::new_v4().to_string();
        let pending = PendingCommand {
            requester: token,
            requester_serial: io.serial(token).unwrap_or_default(),
            server_id: server_id.clone(),
            who,
            what,
            kind,
            deadline: io.now + self.config.command_timeout,
        };
        if !allowed {
            io.stats.command("forbidden");
            self.audit
                .record(&pending, &command_id, "refused: not an admin");
            return Err("Not allowed: commands need the admin role".into());
        }
        let Some(state) = self.servers.get(&server_id) else {
            io.stats.command("unknown_server");
            return Err(format!(
                "Unknown server_id: {}",
                server_id.chars().take(80).collect::<String>()
            ));
        };
        if state.is_local {
            if kind == "command" {
                io.stats.command("refused");
                self.audit.record(
                    &pending,
                    &command_id,
                    "refused: no shell commands on the local server",
                );
                return Err(
                    "Shell commands are not run on the local server; send them to an agent".into(),
                );
            }
            let container = outgoing["container_id"].as_str().unwrap_or_default();
            let id = self.resolve_container(container)?;
            let action = ContainerAction::parse(outgoing["action"].as_str().unwrap_or_default())
                .unwrap_or(ContainerAction::Start);
            let Some(docker) = &self.docker else {
                return Err("Docker engine unavailable".into());
            };
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            docker.request(DockerRequest::Action {
                request_id,
                action,
                container_id: id,
            });
            self.local_actions.insert(request_id, command_id.clone());
            self.pending.insert(command_id, pending);
            return Ok(());
        }
        let Some((agent, _)) = state.agent else {
            io.stats.command("agent_offline");
            self.audit
                .record(&pending, &command_id, "refused: agent offline");
            return Err(format!("Agent for server {server_id} is offline"));
        };
        let mut msg = outgoing;
        msg["command_id"] = Value::from(command_id.clone());
        io.event_raw(agent, &msg.to_string());
        io.stats.command("sent");
        self.pending.insert(command_id, pending);
        Ok(())
    }

    fn agent_response(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        kind: &str,
        mut obj: Map<String, Value>,
    ) {
        let id = str_field(&obj, "command_id")
            .unwrap_or_default()
            .to_string();
        let matches = self
            .pending
            .get(&id)
            .is_some_and(|p| p.server_id == server_id);
        if !matches {
            io.stats.unknown_command_responses += 1;
            log::debug!("dropped {kind} with unknown command_id from {server_id}");
            return;
        }
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let ok = match kind {
            "docker_response" => obj.get("success").and_then(Value::as_bool).unwrap_or(false),
            _ => obj.get("exit_code").and_then(Value::as_i64) == Some(0),
        };
        io.stats.command(if ok { "succeeded" } else { "failed" });
        self.audit
            .record(&p, &id, if ok { "succeeded" } else { "failed" });
        obj.insert("type".into(), Value::from(kind));
        obj.insert("server_id".into(), Value::from(server_id));
        if io.serial(p.requester) == Some(p.requester_serial) {
            io.event_raw(p.requester, &Value::Object(obj).to_string());
        }
    }

    /// The local engine finished a browser's container action.
    pub fn on_local_action_done(
        &mut self,
        io: &mut Io<'_>,
        request_id: u64,
        success: bool,
        message: &str,
    ) {
        let Some(command_id) = self.local_actions.remove(&request_id) else {
            return;
        };
        let Some(p) = self.pending.remove(&command_id) else {
            return;
        };
        io.stats
            .command(if success { "succeeded" } else { "failed" });
        self.audit
            .record(&p, &command_id, if success { "succeeded" } else { message });
        let reply = json!({
            "type": "docker_response", "command_id": command_id, "server_id": p.server_id,
            "success": success, "message": message,
        });
        if io.serial(p.requester) == Some(p.requester_serial) {
            io.event_raw(p.requester, &reply.to_string());
        }
    }

    /// Commands past their deadline get the requester an `error`.
    pub fn expire_commands(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for id in late {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            self.local_actions.retain(|_, c| c != &id);
            io.stats.command("timeout");
            self.audit.record(&p, &id, "timeout");
            if io.serial(p.requester) == Some(p.requester_serial) {
                let secs = self.config.command_timeout.as_secs_f64();
                io.error(
                    p.requester,
                    &format!("command {id} timed out after {secs}s without an answer"),
                );
            }
        }
    }

    fn alert_frame(
        server_id: &str,
        rule: &crate::config::AlertRule,
        state: &str,
        value: Option<f64>,
    ) -> Frame {
        json::encode_value(&json!({
            "type": "alert", "server_id": server_id,
            "data": {
                "rule": rule.name, "metric": rule.metric.as_str(), "threshold": rule.threshold,
                "hold_seconds": rule.hold.as_secs_f64(), "value": value, "state": state,
                "timestamp": rfc3339_now(),
            }
        }))
    }

    fn send_alert(&self, io: &mut Io<'_>, server_id: &str, frame: &Frame) {
        if let Some(s) = self.servers.get(server_id) {
            io.send_all(&s.metrics_plain, frame, Priority::Essential);
            io.send_all(&s.metrics_mux, frame, Priority::Essential);
            io.send_all(&s.logs, frame, Priority::Essential);
        }
    }

    fn evaluate_alerts(
        &mut self,
        io: &mut Io<'_>,
        server_id: &str,
        cpu: Option<f64>,
        mem: Option<f64>,
    ) {
        let now = io.now;
        let mut out = Vec::new();
        let Some(state) = self.servers.get_mut(server_id) else {
            return;
        };
        for (i, rule) in self.config.alerts.iter().enumerate() {
            let value = match rule.metric {
                AlertMetric::CpuPercent => cpu,
                AlertMetric::MemoryPercent => mem,
                AlertMetric::AgentOffline => continue,
            };
            let Some(v) = value else { continue };
            let a = &mut state.alerts[i];
            if v > rule.threshold {
                let since = *a.since.get_or_insert(now);
                if !a.firing && now.duration_since(since) >= rule.hold {
                    a.firing = true;
                    out.push(Self::alert_frame(server_id, rule, "firing", Some(v)));
                }
            } else {
                a.since = None;
                if a.firing {
                    a.firing = false;
                    out.push(Self::alert_frame(server_id, rule, "resolved", Some(v)));
                }
            }
        }
        for f in out {
            self.send_alert(io, server_id, &f);
        }
    }

    /// `agent_offline` rules, checked on every tick.
    pub fn check_offline_alerts(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        let mut out = Vec::new();
        for (sid, state) in &mut self.servers {
            let Some(since) = state.offline_since else {
                continue;
            };
            for (i, rule) in self.config.alerts.iter().enumerate() {
                if rule.metric == AlertMetric::AgentOffline
                    && !state.alerts[i].firing
                    && now.duration_since(since) >= rule.hold
                {
                    state.alerts[i].firing = true;
                    out.push((sid.clone(), Self::alert_frame(sid, rule, "firing", None)));
                }
            }
        }
        for (sid, f) in out {
            self.send_alert(io, &sid, &f);
        }
    }

    fn resolve_offline_alert(&mut self, io: &mut Io<'_>, server_id: &str) {
        let mut out = Vec::new();
        if let Some(state) = self.servers.get_mut(server_id) {
            for (i, rule) in self.config.alerts.iter().enumerate() {
                if rule.metric == AlertMetric::AgentOffline && state.alerts[i].firing {
                    state.alerts[i].firing = false;
                    out.push(Self::alert_frame(server_id, rule, "resolved", None));
                }
            }
        }
        for f in out {
            self.send_alert(io, server_id, &f);
        }
    }
}
