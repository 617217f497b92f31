//! Commands relayed from admin browsers: to an agent (`command`,
//! `docker_command`) or to the local engine (`docker_command`), with
//! timeouts, answer matching and an audit trail.
//!
//! Invariants: a command's answer goes only to the socket that asked, and
//! only while that same socket (same serial) is alive; an answer must be of
//! the kind its request expects (`command_response` for `command`,
//! `docker_response` for `docker_command`). Audit records are written by
//! their own thread, never on the event loop; refusals are audited in full
//! up to a budget per connection and window, the rest summarised.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use serde_json::{Map, Value, json};

use crate::feed::metrics::rfc3339_now;
use crate::feed::{ContainerAction, DockerRequest};
use crate::protocol::json::{BrowserRequest, Event};

use super::agents::str_field;
use super::session::{ConnId, Session};
use super::{Io, State};

/// A command waiting for its answer.
#[derive(Debug)]
pub struct PendingCommand {
    pub requester: ConnId,
    pub requester_serial: u64,
    pub server_id: String,
    pub who: String,
    pub what: String,
    /// `command` or `docker_command`.
    pub kind: &'static str,
    pub deadline: Instant,
    /// The browser's `request_id`, echoed in the answer.
    pub request_id: Option<String>,
}

/// An `error` for the browser that asked, echoing its `request_id`.
fn answer_error(io: &mut Io<'_>, p: &PendingCommand, message: &str) {
    io.event(
        p.requester,
        &Event::Error {
            message,
            request_id: p.request_id.as_deref(),
        },
    );
}

impl PendingCommand {
    /// The answer kind this request expects.
    pub fn answer_kind(&self) -> &'static str {
        if self.kind == "command" {
            "command_response"
        } else {
            "docker_response"
        }
    }
}

/// Audit records waiting for the writer thread, at most.
const AUDIT_QUEUE: usize = 4096;

/// Where audit records go: a JSON-lines file, or the `audit` log target,
/// written by a thread of its own (started with the first record).
pub struct Audit {
    path: Option<std::path::PathBuf>,
    tx: Option<Sender<String>>,
    started: bool,
    /// Records lost because the writer fell behind (queue full).
    pub lost: u64,
}

impl Audit {
    pub fn open(path: Option<&Path>) -> Self {
        Audit {
            path: path.map(Path::to_path_buf),
            tx: None,
            started: false,
            lost: 0,
        }
    }

    /// Opens the file and starts the writer thread.
    fn start(&mut self) {
        self.started = true;
        let file = self.path.as_deref().and_then(|p| {
            match OpenOptions::new().create(true).append(true).open(p) {
                Ok(f) => Some(f),
                Err(e) => {
                    log::error!(
                        "could not open audit log {}: {e}; auditing to stderr",
                        p.display()
                    );
                    None
                }
            }
        });
        let (tx, rx) = crossbeam_channel::bounded::<String>(AUDIT_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("dockwire-audit".into())
            .spawn(move || {
                let mut file = file;
                for line in rx {
                    match &mut file {
                        Some(f) => {
                            if let Err(e) = writeln!(f, "{line}") {
                                log::error!("could not write audit log: {e}");
                            }
                        }
                        None => log::info!(target: "audit", "{line}"),
                    }
                }
            });
        match spawned {
            Ok(_) => self.tx = Some(tx),
            Err(e) => log::error!("could not start the audit writer: {e}; auditing to stderr"),
        }
    }

    fn write(&mut self, line: String) {
        if !self.started {
            self.start();
        }
        let Some(tx) = &self.tx else {
            log::info!(target: "audit", "{line}");
            return;
        };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self.lost == 0 {
                    log::warn!("audit writer is behind: records are being lost");
                }
                self.lost += 1;
            }
        }
    }

    /// One record per command outcome.
    pub fn record(&mut self, cmd: &PendingCommand, command_id: &str, result: &str) {
        let line = json!({
            "time": rfc3339_now(), "who": cmd.who, "server_id": cmd.server_id,
            "kind": cmd.kind, "command": cmd.what, "command_id": command_id, "result": result,
        })
        .to_string();
        self.write(line);
    }

    /// One record for `n` refusals of `who` that were not audited one by one.
    pub fn record_suppressed(&mut self, who: &str, n: u64) {
        if n == 0 {
            return;
        }
        let line = json!({
            "time": rfc3339_now(), "who": who, "kind": "refusals_suppressed",
            "result": format!("{n} more refused commands from this connection were not recorded one by one"),
            "count": n,
        })
        .to_string();
        self.write(line);
    }

    /// Summarises a closing session's refusals not yet recorded.
    pub fn summarise_refusals(&mut self, s: &mut Session) {
        let n = std::mem::take(&mut s.refusals.suppressed);
        let who = s.who().to_string();
        self.record_suppressed(&who, n);
    }
}

impl State {
    /// Audits a refused command within the connection's budget.
    fn audit_refusal(
        &mut self,
        io: &mut Io<'_>,
        p: &PendingCommand,
        command_id: &str,
        result: &str,
    ) {
        let now = io.now;
        let (full, ended) = io
            .session_mut(p.requester)
            .map_or((true, 0), |s| s.audit_refusal(now));
        self.audit.record_suppressed(&p.who, ended);
        if full {
            self.audit.record(p, command_id, result);
        } else {
            io.stats.command("refusal_not_audited");
        }
    }

    /// `docker_command` / `command` from a browser; `allowed`: its role may
    /// command (admin, or auth off). Refusals are audited too.
    pub(super) fn browser_command(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        req: BrowserRequest,
        allowed: bool,
        request_id: Option<&str>,
    ) -> Result<String, String> {
        let local = self.config.server_id.clone();
        let who = io.session(conn).map_or("?", |s| s.who()).to_string();
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
                let mut msg = Map::new();
                msg.insert("action".into(), Value::from(act.as_str()));
                msg.insert("container_id".into(), Value::from(container_id.clone()));
                (
                    sid,
                    "docker_command",
                    format!("{} {container_id}", act.as_str()),
                    msg,
                )
            }
            BrowserRequest::Command { server_id, command } => {
                let mut msg = Map::new();
                msg.insert("command".into(), Value::from(command.clone()));
                (server_id, "command", command, msg)
            }
            _ => return Err("not a command".into()),
        };
        let command_id = uuid::Uuid::new_v4().to_string();
        let pending = PendingCommand {
            requester: conn,
            requester_serial: io.serial(conn).unwrap_or_default(),
            server_id: server_id.clone(),
            who,
            what,
            kind,
            deadline: io.now + self.config.command_timeout,
            request_id: request_id.map(str::to_string),
        };
        if !allowed {
            io.stats.command("forbidden");
            self.audit_refusal(io, &pending, &command_id, "refused: not an admin");
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
                self.audit_refusal(
                    io,
                    &pending,
                    &command_id,
                    "refused: no shell commands on the local server",
                );
                return Err(
                    "Shell commands are not run on the local server; send them to an agent".into(),
                );
            }
            let container = str_field(&outgoing, "container_id").unwrap_or_default();
            let id = self.resolve_container(container)?;
            let action = ContainerAction::parse(str_field(&outgoing, "action").unwrap_or_default())
                .unwrap_or(ContainerAction::Start);
            if self.docker.is_none() {
                return Err("Docker engine unavailable".into());
            }
            let request_id = self.next_request_id;
            self.next_request_id += 1;
            if action != ContainerAction::Start {
                let now = io.now;
                self.note_requested_action(&server_id, &id, now);
            }
            let Some(docker) = &self.docker else {
                return Err("Docker engine unavailable".into());
            };
            docker.request(DockerRequest::Action {
                request_id,
                action,
                container_id: id,
            });
            self.local_actions.insert(request_id, command_id.clone());
            self.pending.insert(command_id.clone(), pending);
            return Ok(command_id);
        }
        if state.agent.is_none() && state.relay.is_some() {
            // Another hub holds the agent: it runs the command there.
            if kind == "docker_command"
                && str_field(&outgoing, "action").is_some_and(|a| a != "start")
            {
                let reference = str_field(&outgoing, "container_id").unwrap_or_default();
                if let Ok(id) = self.resolve_on(&server_id, reference) {
                    let now = io.now;
                    self.note_requested_action(&server_id, &id, now);
                }
            }
            if self.relay_command(&server_id, kind, outgoing, &command_id) {
                io.stats.command("sent");
                self.pending.insert(command_id.clone(), pending);
                return Ok(command_id);
            }
            return Err(format!("Agent for server {server_id} is offline"));
        }
        let Some((agent, _)) = state.agent else {
            io.stats.command("agent_offline");
            self.audit_refusal(io, &pending, &command_id, "refused: agent offline");
            return Err(format!("Agent for server {server_id} is offline"));
        };
        let mut msg = outgoing;
        msg.insert("command_id".into(), Value::from(command_id.clone()));
        if kind == "docker_command" && str_field(&msg, "action").is_some_and(|a| a != "start") {
            let reference = str_field(&msg, "container_id").unwrap_or_default();
            if let Ok(id) = self.resolve_on(&server_id, reference) {
                let now = io.now;
                self.note_requested_action(&server_id, &id, now);
            }
        }
        io.event(
            agent,
            &Event::Object {
                name: kind,
                fields: &msg,
            },
        );
        io.stats.command("sent");
        self.pending.insert(command_id.clone(), pending);
        Ok(command_id)
    }

    /// An agent's `command_response` / `docker_response`.
    pub(super) fn agent_response(
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
        let alive = io.serial(p.requester) == Some(p.requester_serial);
        if kind != p.answer_kind() {
            io.stats.command("wrong_answer_kind");
            self.audit
                .record(&p, &id, &format!("failed: the agent answered with {kind}"));
            if alive {
                answer_error(
                    io,
                    &p,
                    &format!(
                        "command {id} failed: the agent answered a {} with a {kind}",
                        p.kind
                    ),
                );
            }
            return;
        }
        let ok = match kind {
            "docker_response" => obj.get("success").and_then(Value::as_bool).unwrap_or(false),
            _ => obj.get("exit_code").and_then(Value::as_i64) == Some(0),
        };
        io.stats.command(if ok { "succeeded" } else { "failed" });
        self.audit
            .record(&p, &id, if ok { "succeeded" } else { "failed" });
        obj.remove("type");
        obj.insert("server_id".into(), Value::from(server_id));
        if let Some(r) = &p.request_id {
            obj.insert("request_id".into(), Value::from(r.clone()));
        }
        if alive {
            io.event(
                p.requester,
                &Event::Object {
                    name: p.answer_kind(),
                    fields: &obj,
                },
            );
        }
    }

    /// The local engine finished a browser's container action.
    pub(super) fn on_local_action_done(
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
        let mut reply = Map::new();
        reply.insert("command_id".into(), Value::from(command_id));
        reply.insert("server_id".into(), Value::from(p.server_id.clone()));
        reply.insert("success".into(), Value::from(success));
        reply.insert("message".into(), Value::from(message));
        if let Some(r) = &p.request_id {
            reply.insert("request_id".into(), Value::from(r.clone()));
        }
        if io.serial(p.requester) == Some(p.requester_serial) {
            io.event(
                p.requester,
                &Event::Object {
                    name: "docker_response",
                    fields: &reply,
                },
            );
        }
    }

    /// Commands past their deadline get the requester an `error`.
    pub(super) fn expire_commands(&mut self, io: &mut Io<'_>) {
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
                answer_error(
                    io,
                    &p,
                    &format!("command {id} timed out after {secs}s without an answer"),
                );
            }
        }
    }

    /// The agent of `server_id` went away: its pending commands fail now.
    pub(super) fn fail_commands_of(&mut self, io: &mut Io<'_>, server_id: &str) {
        if self.servers.get(server_id).is_none_or(|s| s.is_local) {
            return;
        }
        let lost: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.server_id == server_id)
            .map(|(k, _)| k.clone())
            .collect();
        for id in lost {
            if let Some(p) = self.pending.remove(&id) {
                io.stats.command("agent_disconnected");
                self.audit.record(&p, &id, "agent disconnected");
                if io.serial(p.requester) == Some(p.requester_serial) {
                    answer_error(
                        io,
                        &p,
                        &format!("command {id} failed: the agent disconnected before answering"),
                    );
                }
            }
        }
    }
}
