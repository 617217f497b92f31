//! Browser sockets: `/api/v1/ws`, `/api/v1/ws/{metrics,logs}/{id}` and the
//! Socket.IO dialect. Authentication (JWT in the first message or in the
//! Socket.IO CONNECT), then requests: log streams, commands, pings.
//!
//! Invariant: nothing but `auth` (or a Socket.IO CONNECT) is acted on before
//! a socket is ready; every bad input gets an `error` and leaves the socket
//! open, except auth failures (1008).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::auth::Role;
use crate::protocol::json::{self, BrowserRequest, Dialect, Event};
use crate::protocol::socketio::{self as sio, EioPacket, OpenParams, SioPacket};
use crate::server::conn::{AuthState, Session};
use crate::stats::Endpoint;
use crate::writer::Priority;
use crate::ws::{self, close_code};

use super::{Hub, Io};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn text_frame(s: &str) -> ws::Frame {
    ws::text_frame(s.as_bytes())
}

impl Hub {
    /// A WebSocket was just accepted on `endpoint` (`target`: the server id in the path).
    pub fn on_open(
        &mut self,
        io: &mut Io<'_>,
        token: usize,
        endpoint: Endpoint,
        target: Option<String>,
    ) {
        let now = io.now;
        let deadline = now + self.config.auth_timeout;
        let (dialect, auth) = match endpoint {
            Endpoint::SocketIo => (Dialect::SocketIo, AuthState::Pending { deadline }),
            Endpoint::Agent => (Dialect::Json, AuthState::Pending { deadline }),
            _ if self.jwt.is_some() => (Dialect::Json, AuthState::Pending { deadline }),
            _ => (Dialect::Json, anonymous()),
        };
        let Some(conn) = io.conns.get_mut(token) else {
            return;
        };
        let mut session = Session::new(dialect, auth, now);
        session.target_server = target;
        conn.session = Some(session);
        if endpoint == Endpoint::SocketIo {
            let open = sio::open_packet(&OpenParams {
                sid: uuid::Uuid::new_v4().simple().to_string(),
                ping_interval_ms: self.config.sio_ping_interval.as_millis() as u64,
                ping_timeout_ms: self.config.sio_ping_timeout.as_millis() as u64,
                max_payload: self.config.max_message_bytes,
            });
            io.send(token, &text_frame(&open), Priority::Essential);
        } else if self.jwt.is_none() && endpoint != Endpoint::Agent {
            self.on_ready(io, token, endpoint);
        }
    }

    /// The socket authenticated (or needs no auth): greet and subscribe it.
    fn on_ready(&mut self, io: &mut Io<'_>, token: usize, endpoint: Endpoint) {
        let local = self.config.server_id.clone();
        match endpoint {
            Endpoint::Browser | Endpoint::SocketIo => {
                let dialect = io.dialect(token);
                io.event(token, &Event::ConnectionEstablished { server_id: &local });
                self.send_initial_state(io, token);
                self.browsers.set(dialect).insert(token);
                if dialect == Dialect::Json {
                    self.watch_metrics(io, token, &local, true);
                }
            }
            Endpoint::ServerMetrics | Endpoint::ServerLogs => {
                let target = io
                    .conns
                    .get(token)
                    .and_then(|c| c.session.as_ref())
                    .and_then(|s| s.target_server.clone())
                    .unwrap_or_default();
                if !self.servers.contains_key(&target) {
                    io.stats.bad_input("unknown_server");
                    let shown: String = target.chars().take(80).collect();
                    io.error_and_close(
                        token,
                        &format!("Unknown server_id: {shown}"),
                        close_code::POLICY_VIOLATION,
                    );
                    return;
                }
                if endpoint == Endpoint::ServerMetrics {
                    self.watch_metrics(io, token, &target, false);
                } else if let Some(s) = self.servers.get_mut(&target) {
                    s.logs.insert(token);
                }
            }
            _ => {}
        }
    }

    /// Checks a browser JWT; on success the socket becomes ready.
    fn authenticate(&mut self, io: &mut Io<'_>, token: usize, jwt: &str) -> Result<(), String> {
        let Some(verifier) = &self.jwt else {
            // Auth is off: an `auth` message is accepted as a no-op.
            return Ok(());
        };
        match verifier.verify(jwt, unix_now()) {
            Ok(claims) => {
                if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
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

    /// A text message on a browser JSON endpoint.
    pub fn on_browser_text(
        &mut self,
        io: &mut Io<'_>,
        token: usize,
        endpoint: Endpoint,
        text: &str,
    ) {
        let ready = io
            .conns
            .get(token)
            .and_then(|c| c.session.as_ref())
            .is_some_and(Session::is_ready);
        let parsed = json::parse_typed(text);
        let (kind, obj) = match parsed {
            Ok(p) => p,
            Err(msg) => {
                io.stats.message_in("other");
                io.stats.bad_input("invalid_json");
                if ready {
                    io.error(token, &msg);
                } else {
                    io.stats.auth_failure("no_auth_message");
                    io.error_and_close(token, &msg, close_code::POLICY_VIOLATION);
                }
                return;
            }
        };
        io.stats.message_in(&kind);
        let req = json::request_from(&kind, &obj);
        if !ready {
            match req {
                Ok(BrowserRequest::Auth { token: jwt }) => match self.authenticate(io, token, &jwt)
                {
                    Ok(()) => {
                        io.event_raw(
                            token,
                            r#"{"type":"auth_success","message":"Authenticated"}"#,
                        );
                        self.on_ready(io, token, endpoint);
                    }
                    Err(msg) => io.error_and_close(token, &msg, close_code::POLICY_VIOLATION),
                },
                _ => {
                    io.stats.auth_failure("no_auth_message");
                    io.error_and_close(
                        token,
                        "Authentication required: send {\"type\":\"auth\",\"token\":...} first",
                        close_code::POLICY_VIOLATION,
                    );
                }
            }
            return;
        }
        match req {
            Ok(r) => self.on_request(io, token, endpoint, r, None),
            Err(msg) => {
                io.stats.bad_input("bad_message");
                io.error(token, &msg);
            }
        }
    }

    /// A parsed request from a ready browser. `ack` (Socket.IO) asks for an ACK.
    fn on_request(
        &mut self,
        io: &mut Io<'_>,
        token: usize,
        endpoint: Endpoint,
        req: BrowserRequest,
        ack: Option<u64>,
    ) {
        let multiplexed = matches!(endpoint, Endpoint::Browser | Endpoint::SocketIo);
        let result: Result<(), String> = match req {
            BrowserRequest::Ping => {
                io.event_raw(token, r#"{"type":"pong"}"#);
                Ok(())
            }
            BrowserRequest::Auth { .. } => Ok(()), // already authenticated: harmless
            _ if !multiplexed => Err("this endpoint only streams; it accepts ping".into()),
            BrowserRequest::StartLogStream { container_id, tail } => {
                match self.resolve_container(&container_id) {
                    Ok(id) => {
                        self.subscribe_logs(io, token, &id, tail.unwrap_or(100));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            BrowserRequest::StopLogStream { container_id } => {
                let id = self
                    .resolve_container(&container_id)
                    .unwrap_or(container_id.clone());
                let streaming = io
                    .conns
                    .get(token)
                    .and_then(|c| c.session.as_ref())
                    .is_some_and(|s| s.log_streams.iter().any(|x| x == &id));
                if streaming {
                    self.unsubscribe_logs(io, token, &id);
                    io.event(
                        token,
                        &Event::LogStreamStopped {
                            container_id: &id,
                            message: "Log stream stopped",
                        },
                    );
                    Ok(())
                } else {
                    Err(format!(
                        "no log stream for {}",
                        container_id.chars().take(80).collect::<String>()
                    ))
                }
            }
            BrowserRequest::SubscribeMetrics { server_id }
            | BrowserRequest::UnsubscribeMetrics { server_id }
                if !self.servers.contains_key(&server_id) =>
            {
                Err(format!(
                    "Unknown server_id: {}",
                    server_id.chars().take(80).collect::<String>()
                ))
            }
            BrowserRequest::SubscribeMetrics { server_id } => {
                self.watch_metrics(io, token, &server_id, true);
                Ok(())
            }
            BrowserRequest::UnsubscribeMetrics { server_id } => {
                if let Some(s) = self.servers.get_mut(&server_id) {
                    s.metrics_mux.remove(token);
                }
                if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
                    s.metrics_servers.retain(|x| x != &server_id);
                }
                Ok(())
            }
            BrowserRequest::DockerCommand { .. } | BrowserRequest::Command { .. } => {
                let role = io
                    .conns
                    .get(token)
                    .and_then(|c| c.session.as_ref())
                    .and_then(Session::role);
                let allowed = self.jwt.is_none() || role == Some(Role::Admin);
                self.browser_command(io, token, req, allowed)
            }
        };
        match (result, ack) {
            (Ok(()), Some(id)) => io.event_raw(token, &sio::ack("/", id, r#"[{"ok":true}]"#)),
            (Ok(()), None) => {}
            (Err(msg), ack) => {
                io.stats.bad_input("bad_request");
                io.error(token, &msg);
                if let Some(id) = ack {
                    let args = serde_json::json!([{ "error": msg }]).to_string();
                    io.event_raw(token, &sio::ack("/", id, &args));
                }
            }
        }
    }

    /// Adds a socket to a server's metrics subscribers and sends the latest sample.
    fn watch_metrics(&mut self, io: &mut Io<'_>, token: usize, server_id: &str, mux: bool) {
        let Some(s) = self.servers.get_mut(server_id) else {
            return;
        };
        let added = if mux {
            s.metrics_mux.insert(token)
        } else {
            s.metrics_plain.insert(token)
        };
        if !added {
            return;
        }
        if let Some(sess) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
            if mux {
                sess.metrics_servers.push(server_id.to_string());
            }
        }
        if let Some(data) = &s.latest_metrics {
            let f = super::agents::metrics_frame(server_id, data, mux);
            io.send(token, &f, Priority::Essential);
        }
    }

    /// One Engine.IO text packet on a Socket.IO socket.
    pub fn on_socketio_text(&mut self, io: &mut Io<'_>, token: usize, text: &str) {
        io.stats.message_in("socketio");
        let packet = match sio::parse_eio(text) {
            Ok(p) => p,
            Err(e) => {
                io.stats.bad_input("socketio_packet");
                io.error(token, &e.to_string());
                return;
            }
        };
        match packet {
            EioPacket::Pong(_) => {
                if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
                    s.sio_pong_due = None;
                }
            }
            EioPacket::Ping(data) => io.event_raw(token, &format!("3{data}")),
            EioPacket::Close => io.close(token, close_code::NORMAL, "Engine.IO close"),
            EioPacket::Noop => {}
            EioPacket::Open | EioPacket::Upgrade => {
                io.stats.bad_input("socketio_packet");
                io.error(
                    token,
                    "unexpected Engine.IO packet on a websocket-only session",
                );
            }
            EioPacket::Message(m) => self.on_socketio_message(io, token, m),
        }
    }

    fn on_socketio_message(&mut self, io: &mut Io<'_>, token: usize, m: &str) {
        let packet = match sio::parse_sio(m) {
            Ok(p) => p,
            Err(e) => {
                io.stats.bad_input("socketio_packet");
                io.error(token, &e.to_string());
                return;
            }
        };
        let connected = io
            .conns
            .get(token)
            .and_then(|c| c.session.as_ref())
            .is_some_and(|s| s.sio_connected);
        if packet.nsp() != "/" {
            io.stats.bad_input("socketio_namespace");
            io.event_raw(
                token,
                &sio::connect_error(packet.nsp(), "Invalid namespace"),
            );
            return;
        }
        match packet {
            SioPacket::Connect { auth, .. } => {
                if connected {
                    return;
                }
                let jwt = auth
                    .as_ref()
                    .and_then(|a| a.get("token"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let result = if self.jwt.is_some() {
                    self.authenticate(io, token, jwt)
                } else {
                    if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
                        s.auth = anonymous();
                    }
                    Ok(())
                };
                match result {
                    Ok(()) => {
                        let sid = uuid::Uuid::new_v4().simple().to_string();
                        io.event_raw(token, &sio::connect_ok(&sid));
                        if let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) {
                            s.sio_connected = true;
                        }
                        self.on_ready(io, token, Endpoint::SocketIo);
                    }
                    Err(msg) => io.event_raw(token, &sio::connect_error("/", &msg)),
                }
            }
            _ if !connected => {
                io.stats.bad_input("socketio_not_connected");
                io.event_raw(
                    token,
                    &sio::connect_error("/", "not connected: send a CONNECT packet first"),
                );
            }
            SioPacket::Disconnect { .. } => {
                io.close(token, close_code::NORMAL, "Socket.IO disconnect")
            }
            SioPacket::Ack { .. } => {}
            SioPacket::Event { id, name, args, .. } => {
                io.stats.message_in(&name);
                let empty = serde_json::Map::new();
                let obj = match args.first() {
                    Some(Value::Object(o)) => o,
                    // The seed emits `{container_id}`; a bare string is accepted too.
                    Some(Value::String(s)) => {
                        let mut o = serde_json::Map::new();
                        o.insert("container_id".into(), Value::String(s.clone()));
                        let req = json::request_from(&name, &o);
                        self.finish_sio_event(io, token, req, id);
                        return;
                    }
                    _ => &empty,
                };
                let req = json::request_from(&name, obj);
                self.finish_sio_event(io, token, req, id);
            }
        }
    }

    fn finish_sio_event(
        &mut self,
        io: &mut Io<'_>,
        token: usize,
        req: Result<BrowserRequest, String>,
        ack: Option<u64>,
    ) {
        match req {
            Ok(r) => self.on_request(io, token, Endpoint::SocketIo, r, ack),
            Err(msg) => {
                io.stats.bad_input("bad_message");
                io.error(token, &msg);
                if let Some(id) = ack {
                    let args = serde_json::json!([{ "error": msg }]).to_string();
                    io.event_raw(token, &sio::ack("/", id, &args));
                }
            }
        }
    }

    /// Engine.IO heartbeat for one socket: ping at the interval, close when
    /// the pong is overdue. Returns false when the socket was closed.
    pub fn socketio_heartbeat(&self, io: &mut Io<'_>, token: usize, now: Instant) {
        let interval = self.config.sio_ping_interval;
        let timeout = self.config.sio_ping_timeout;
        let Some(s) = io.conns.get_mut(token).and_then(|c| c.session.as_mut()) else {
            return;
        };
        if let Some(due) = s.sio_pong_due {
            if now >= due {
                io.close(
                    token,
                    close_code::POLICY_VIOLATION,
                    "Engine.IO ping timeout",
                );
            }
            return;
        }
        if now.duration_since(s.sio_last_ping) >= interval {
            s.sio_last_ping = now;
            s.sio_pong_due = Some(now + timeout);
            io.event_raw(token, sio::PING);
        }
    }
}

fn anonymous() -> AuthState {
    AuthState::Ready {
        sub: "anonymous".into(),
        role: Role::Admin,
        exp: None,
    }
}

impl Io<'_> {
    /// Sends a pre-built text message to one socket.
    pub fn event_raw(&mut self, token: usize, text: &str) {
        self.send(token, &text_frame(text), Priority::Essential);
    }
}
