//! Browser sockets: `/api/v1/ws`, `/api/v1/ws/{metrics,logs}/{id}` and the
//! Socket.IO dialect. Authentication (JWT in the first message or in the
//! Socket.IO CONNECT), then requests: log streams, metrics, commands, pings.
//!
//! Dialect details never show here: a frame is decoded by the socket's
//! [`Dialect`] into an [`Inbound`], and every reply is an [`Event`] the
//! dialect encodes.
//!
//! Invariant: nothing but `auth` (or a Socket.IO CONNECT) is acted on before
//! a socket is ready; every bad input gets an `error` and leaves the socket
//! open, except auth failures (1008).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::auth::{Claims, Role};
use crate::protocol::json::{self, BrowserRequest, Event};
use crate::protocol::socketio::{OpenParams, RecoveryAuth};
use crate::protocol::{Dialect, Inbound};
use crate::stats::Endpoint;
use crate::writer::Priority;
use crate::ws::close_code;

use super::session::{AuthState, ConnId, Session};
use super::topics::{Publish, TopicKey};
use super::{Io, State};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn anonymous() -> AuthState {
    AuthState::Ready {
        sub: "anonymous".into(),
        role: Role::Admin,
        exp: None,
    }
}

/// At most 80 characters of a client's string, for an error message.
pub(super) fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

impl State {
    /// A WebSocket was just accepted on `endpoint` (`target`: the server id in the path).
    // The fields of `Input::Opened`, as the loop gives them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_open(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        serial: u64,
        endpoint: Endpoint,
        dialect: Dialect,
        target: Option<String>,
        claims: Option<Claims>,
    ) {
        let deadline = io.now + self.config.auth_timeout;
        // A session token on the upgrade (checked by the router) stands for
        // the first-message `auth`; agents always authenticate with their key.
        let claims = claims.filter(|_| endpoint != Endpoint::Agent);
        let needs_auth = endpoint == Endpoint::Agent
            || dialect.needs_connect()
            || (self.jwt.is_some() && claims.is_none());
        let auth = match claims {
            Some(c) if self.jwt.is_some() => AuthState::Ready {
                sub: c.sub,
                role: c.role,
                exp: Some(c.exp),
            },
            _ if needs_auth => AuthState::Pending { deadline },
            _ => anonymous(),
        };
        let mut session = Session::new(serial, endpoint, dialect, auth);
        session.target_server = target;
        io.sessions.insert(conn, session);
        let greeting = dialect.greeting(&OpenParams {
            sid: uuid::Uuid::new_v4().simple().to_string(),
            ping_interval_ms: self.config.sio_ping_interval.as_millis() as u64,
            ping_timeout_ms: self.config.sio_ping_timeout.as_millis() as u64,
            max_payload: self.config.max_message_bytes,
        });
        if let Some(f) = greeting {
            io.send(conn, &f, Priority::Essential);
        } else if !needs_auth {
            self.on_ready(io, conn);
        }
    }

    /// The socket authenticated (or needs no auth): greet and subscribe it.
    fn on_ready(&mut self, io: &mut Io<'_>, conn: ConnId) {
        let local = self.config.server_id.clone();
        let Some(s) = io.session(conn) else { return };
        let endpoint = s.endpoint;
        let dialect = s.dialect;
        match endpoint {
            Endpoint::Browser | Endpoint::SocketIo => {
                io.event(conn, &Event::ConnectionEstablished { server_id: &local });
                self.send_initial_state(io, conn);
                self.send_alerts_snapshot(io, conn);
                self.topics
                    .subscribe(io, &TopicKey::Containers(local.clone()), conn);
                self.topics.subscribe(io, &TopicKey::Servers, conn);
                if !dialect.is_socketio() {
                    self.watch_metrics(io, conn, &local, false);
                }
            }
            Endpoint::ServerMetrics | Endpoint::ServerLogs => {
                let target = s.target_server.clone().unwrap_or_default();
                if !self.servers.contains_key(&target) {
                    io.stats.bad_input("unknown_server");
                    io.error_and_close(
                        conn,
                        &format!("Unknown server_id: {}", shown(&target)),
                        close_code::POLICY_VIOLATION,
                    );
                    return;
                }
                if endpoint == Endpoint::ServerMetrics {
                    self.watch_metrics(io, conn, &target, true);
                } else {
                    self.topics
                        .subscribe(io, &TopicKey::AgentLogs(target), conn);
                }
            }
            _ => {}
        }
    }

    /// Checks a browser JWT; on success the socket becomes ready.
    fn authenticate(&mut self, io: &mut Io<'_>, conn: ConnId, jwt: &str) -> Result<(), String> {
        let Some(verifier) = &self.jwt else {
            if let Some(s) = io.session_mut(conn) {
                s.auth = anonymous();
            }
            return Ok(());
        };
        match verifier.verify(jwt, unix_now()) {
            Ok(claims) => {
                if let Some(s) = io.session_mut(conn) {
                    s.auth = AuthState::Ready {
                        sub: claims.sub,
                        role: claims.role,
                        exp: Some(claims.exp),
                    };
                }
                Ok(())
            }
            Err(e) => {
                io.stats.auth_failure(e.kind());
                Err(format!("Authentication failed: {e}"))
            }
        }
    }

    /// One text message from any WebSocket the hub serves.
    pub(super) fn on_text(&mut self, io: &mut Io<'_>, conn: ConnId, text: &str) {
        let Some(s) = io.session(conn) else { return };
        let inbound = s.dialect.decode(text, &s.wire);
        self.on_inbound(io, conn, inbound);
    }

    /// One binary message (a MessagePack socket's requests).
    pub(super) fn on_binary(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        let Some(s) = io.session(conn) else { return };
        let inbound = s.dialect.decode_binary(data, &s.wire);
        self.on_inbound(io, conn, inbound);
    }

    /// A decoded message, whichever its frame.
    fn on_inbound(&mut self, io: &mut Io<'_>, conn: ConnId, inbound: Inbound) {
        let Some(s) = io.session(conn) else { return };
        let (endpoint, dialect, ready) = (s.endpoint, s.dialect, s.is_ready());
        if endpoint == Endpoint::Agent {
            return self.on_agent_inbound(io, conn, inbound);
        }
        match inbound {
            Inbound::Request { kind, obj, ack } => {
                self.on_browser_request(io, conn, ready, &kind, &obj, ack)
            }
            Inbound::Connect { token, recovery } => {
                self.on_connect(io, conn, token.as_deref(), recovery)
            }
            Inbound::Reply(f) => {
                io.send(conn, &f, Priority::Essential);
            }
            Inbound::Refuse { frame, stat } => {
                io.stats.bad_input(stat);
                io.send(conn, &frame, Priority::Essential);
            }
            Inbound::HeartbeatAnswered => {
                if let Some(s) = io.session_mut(conn) {
                    Dialect::heartbeat_answered(&mut s.wire);
                }
            }
            Inbound::Leave(why) => {
                super::recovery::forfeit(io.sessions, conn);
                io.close(conn, close_code::NORMAL, why)
            }
            Inbound::Nothing => {}
            Inbound::Invalid { message, stat } => {
                io.stats.message_in("other");
                io.stats.bad_input(stat);
                if ready || dialect.needs_connect() {
                    io.error(conn, &message);
                } else {
                    io.stats.auth_failure("no_auth_message");
                    io.error_and_close(conn, &message, close_code::POLICY_VIOLATION);
                }
            }
        }
    }

    /// A Socket.IO CONNECT: authenticate with its token, then serve.
    fn on_connect(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        token: Option<&str>,
        recovery: RecoveryAuth,
    ) {
        // Opened with a session cookie: the CONNECT needs no token.
        let preauth = token.is_none() && io.session(conn).is_some_and(Session::is_ready);
        let result = if preauth {
            Ok(())
        } else {
            self.authenticate(io, conn, token.unwrap_or(""))
        };
        // Connection state recovery (recovery.rs): answered with a pid, and a
        // recovered session continues without a new greeting.
        if result.is_ok() && recovery.recover && self.config.sio_recovery {
            if !self.recoverable_connect(io, conn, recovery) {
                self.on_ready(io, conn);
            }
            return;
        }
        let now = io.now;
        let Some(s) = io.session_mut(conn) else {
            return;
        };
        let dialect = s.dialect;
        let outcome = result.as_ref().map(|_| ()).map_err(String::as_str);
        let reply = dialect.connect_reply(&mut s.wire, now, outcome);
        if let Some(f) = reply {
            io.send(conn, &f, Priority::Essential);
        }
        if result.is_ok() {
            self.on_ready(io, conn);
        }
    }

    /// A typed request from a browser, in either dialect.
    fn on_browser_request(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        ready: bool,
        kind: &str,
        obj: &Map<String, Value>,
        ack: Option<u64>,
    ) {
        io.stats.message_in(kind);
        let req = json::request_from(kind, obj);
        if !ready {
            let failure = match req {
                Ok(BrowserRequest::Auth { token }) => match self.authenticate(io, conn, &token) {
                    Ok(()) => {
                        let mut fields = Map::new();
                        fields.insert("message".into(), Value::from("Authenticated"));
                        io.event(
                            conn,
                            &Event::Object {
                                name: "auth_success",
                                fields: &fields,
                            },
                        );
                        self.on_ready(io, conn);
                        return;
                    }
                    Err(msg) => msg,
                },
                // An `auth` whose token is refused before it is checked
                // (too long, not a string) is still an authentication failure.
                Err(msg) if kind == "auth" => {
                    io.stats.auth_failure("bad_token");
                    format!("Authentication failed: {msg}")
                }
                _ => {
                    io.stats.auth_failure("no_auth_message");
                    "Authentication required: send {\"type\":\"auth\",\"token\":...} first".into()
                }
            };
            io.error_and_close(conn, &failure, close_code::POLICY_VIOLATION);
            return;
        }
        let (request_id, req) = match json::request_id(obj) {
            Ok(r) => (r, req),
            Err(msg) => (None, Err(msg)),
        };
        let result = match req {
            Ok(r) => self.on_request(io, conn, r, request_id),
            Err(msg) => Err(msg),
        };
        let dialect = io.dialect(conn);
        if let Err(msg) = &result {
            io.stats.bad_input("bad_request");
            io.event(
                conn,
                &Event::Error {
                    message: msg,
                    request_id,
                },
            );
        }
        if let Some(f) = dialect.ack(ack, result.as_ref().map(|_| ()).map_err(String::as_str)) {
            io.send(conn, &f, Priority::Essential);
        }
    }

    /// A parsed request from a ready browser.
    fn on_request(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        req: BrowserRequest,
        request_id: Option<&str>,
    ) -> Result<(), String> {
        let endpoint = io.session(conn).map_or(Endpoint::Browser, |s| s.endpoint);
        let multiplexed = matches!(endpoint, Endpoint::Browser | Endpoint::SocketIo);
        match req {
            BrowserRequest::Ping => {
                io.event(conn, &Event::Pong);
                Ok(())
            }
            BrowserRequest::Auth { .. } => Ok(()), // already authenticated: harmless
            _ if !multiplexed => Err("this endpoint only streams; it accepts ping".into()),
            BrowserRequest::StartLogStream {
                server_id,
                container_id,
                tail,
                since_seq,
                filter,
            } => {
                let sid = server_id.unwrap_or_else(|| self.config.server_id.clone());
                let id = self.resolve_on(&sid, &container_id)?;
                let from = super::logs::Start {
                    tail: tail.unwrap_or(100),
                    since_seq,
                    group: None,
                };
                self.subscribe_logs(io, conn, &sid, &id, from, filter)
            }
            BrowserRequest::StopLogStream {
                server_id,
                container_id,
            } => {
                let sid = server_id.unwrap_or_else(|| self.config.server_id.clone());
                let id = self
                    .resolve_on(&sid, &container_id)
                    .unwrap_or(container_id.clone());
                let key = TopicKey::Logs {
                    server: sid.clone(),
                    container: id.clone(),
                };
                let topic_id = self.topics.id_of(&key);
                if !io.session(conn).is_some_and(|s| s.is_subscribed(topic_id)) {
                    return Err(format!("no log stream for {}", shown(&container_id)));
                }
                self.leave_topic(io, &key, conn);
                io.event(
                    conn,
                    &Event::LogStreamStopped {
                        server_id: &sid,
                        container_id: &id,
                        message: "Log stream stopped",
                    },
                );
                Ok(())
            }
            BrowserRequest::SetEventFilter { server_id, filter } => {
                self.set_event_filter(io, conn, server_id, filter)
            }
            BrowserRequest::ListServers => {
                self.send_servers(io, conn, request_id);
                Ok(())
            }
            BrowserRequest::SubscribeContainers { server_id } => {
                self.subscribe_containers(io, conn, &server_id, request_id)
            }
            BrowserRequest::UnsubscribeContainers { server_id } => {
                self.unsubscribe_containers(io, conn, &server_id)
            }
            BrowserRequest::SubscribeMetrics { server_id }
            | BrowserRequest::UnsubscribeMetrics { server_id }
                if !self.servers.contains_key(&server_id) =>
            {
                Err(format!("Unknown server_id: {}", shown(&server_id)))
            }
            BrowserRequest::SubscribeMetrics { server_id } => {
                self.watch_metrics(io, conn, &server_id, false);
                Ok(())
            }
            BrowserRequest::UnsubscribeMetrics { server_id } => {
                self.leave_topic(io, &TopicKey::Metrics(server_id), conn);
                Ok(())
            }
            BrowserRequest::DockerCommand { .. } | BrowserRequest::Command { .. } => {
                let role = io.session(conn).and_then(Session::role);
                let allowed = self.jwt.is_none() || role == Some(Role::Admin);
                let command_id = self.browser_command(io, conn, req, allowed, request_id)?;
                let mut fields = Map::new();
                if let Some(r) = request_id {
                    fields.insert("request_id".into(), Value::from(r));
                }
                fields.insert("command_id".into(), Value::from(command_id));
                io.event(
                    conn,
                    &Event::Object {
                        name: "command_accepted",
                        fields: &fields,
                    },
                );
                Ok(())
            }
        }
    }

    /// Adds a socket to a server's metrics topic (`seed_form`: the
    /// single-server endpoint's) and sends it the latest sample.
    pub(super) fn watch_metrics(
        &mut self,
        io: &mut Io<'_>,
        conn: ConnId,
        server_id: &str,
        seed_form: bool,
    ) {
        let key = if seed_form {
            TopicKey::SeedMetrics(server_id.to_string())
        } else {
            TopicKey::Metrics(server_id.to_string())
        };
        if !self.topics.subscribe(io, &key, conn) {
            return;
        }
        if let Some(data) = self
            .servers
            .get(server_id)
            .and_then(|s| s.latest_metrics.as_ref())
        {
            io.event(
                conn,
                &Event::Metrics {
                    server_id: (!seed_form).then_some(server_id),
                    data_json: data,
                },
            );
        }
    }

    /// Publishes to a server's metrics and agent-log watchers (alerts).
    pub(super) fn publish_to_watchers(&mut self, io: &mut Io<'_>, server_id: &str, ev: &Event<'_>) {
        for key in [
            TopicKey::Metrics(server_id.to_string()),
            TopicKey::SeedMetrics(server_id.to_string()),
            TopicKey::AgentLogs(server_id.to_string()),
        ] {
            self.topics.publish(io, &key, ev, Publish::ESSENTIAL);
        }
    }
}
