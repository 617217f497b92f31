//! The dialect seam: how a browser socket's text frames become requests, and
//! how every message the daemon sends becomes a frame.
//!
//! The hub speaks in [`Event`]s and [`Inbound`]s only; which dialect a socket
//! uses is a value it stores, never a branch it takes. Everything that
//! differs between the JSON dialect and Socket.IO (Engine.IO open packet,
//! CONNECT, heartbeats, acks, payload shapes) is decided here, so adding a
//! third dialect touches this folder only.
//!
//! Invariant: [`Dialect::encode`] is a pure function of the event, so a frame
//! for many subscribers of one dialect is encoded once and shared.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::json::{self, Event};
use super::socketio::{self as sio, EioPacket, OpenParams, SioPacket};
use crate::stats::Endpoint;
use crate::ws::{self, Frame};

/// Which wire dialect a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// One JSON object with a `type` per text frame (`/api/v1/ws`, agents).
    Json,
    /// Engine.IO v4 / Socket.IO v5 packets over WebSocket (`/socket.io/`).
    SocketIo,
    /// The JSON dialect's messages as MessagePack maps in binary frames
    /// (`/api/v1/ws?format=msgpack`, SPEC 12).
    MsgPack,
    /// Socket.IO with `socket.io-msgpack-parser`'s packets: binary frames
    /// holding `{type, nsp, data, id}` maps; Engine.IO's own packets stay
    /// text (`/socket.io/?…&parser=msgpack`, SPEC 12).
    SocketIoMsgPack,
}

/// Per-socket dialect state: only Socket.IO has any.
#[derive(Debug, Default)]
pub struct DialectState {
    /// The client joined the default namespace (Socket.IO CONNECT answered).
    pub connected: bool,
    /// When the last Engine.IO ping went out, and until when its pong may come.
    pub last_ping: Option<Instant>,
    pub pong_due: Option<Instant>,
}

/// What one incoming text frame asks for.
#[derive(Debug)]
pub enum Inbound {
    /// A request: its `type` (or event name) and payload object; `ack` when
    /// the client asked to be acknowledged (Socket.IO).
    Request {
        kind: String,
        obj: Map<String, Value>,
        ack: Option<u64>,
    },
    /// Socket.IO CONNECT with the `auth.token` it carried (if any) and what
    /// it asks of connection state recovery.
    Connect {
        token: Option<String>,
        recovery: sio::RecoveryAuth,
    },
    /// A reply the dialect answers by itself (Engine.IO pong).
    Reply(Frame),
    /// A refusal the dialect words by itself (Socket.IO CONNECT_ERROR).
    Refuse { frame: Frame, stat: &'static str },
    /// The client's answer to our heartbeat.
    HeartbeatAnswered,
    /// The client leaves on purpose.
    Leave(&'static str),
    /// Nothing to do (no-op packets, acks of our own).
    Nothing,
    /// Unparseable input: `message` for the `error` reply, `stat` for `/metrics`.
    Invalid { message: String, stat: &'static str },
}

/// What the heartbeat timer wants for one socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Heartbeat {
    Idle,
    Send(Frame),
    TimedOut,
}

fn text(s: &str) -> Frame {
    ws::text_frame(s.as_bytes())
}

impl Dialect {
    /// Every dialect, in [`Dialect::index`] order.
    pub const ALL: [Dialect; 4] = [
        Dialect::Json,
        Dialect::SocketIo,
        Dialect::MsgPack,
        Dialect::SocketIoMsgPack,
    ];

    /// Socket.IO, in either packet encoding.
    pub fn is_socketio(self) -> bool {
        matches!(self, Dialect::SocketIo | Dialect::SocketIoMsgPack)
    }

    /// A Socket.IO frame of ours in this dialect's packet encoding.
    fn sio_frame(self, frame: Frame) -> Frame {
        match self {
            Dialect::SocketIoMsgPack => super::msgpack::socketio::binary(frame),
            _ => frame,
        }
    }

    /// A dense index (for per-dialect arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The dialect a WebSocket endpoint speaks.
    pub fn for_endpoint(endpoint: Endpoint) -> Dialect {
        match endpoint {
            Endpoint::SocketIo => Dialect::SocketIo,
            _ => Dialect::Json,
        }
    }

    /// The dialect an upgrade asks for with its `format` and `parser` query
    /// parameters: its endpoint's, or MessagePack on `/api/v1/ws?format=msgpack`
    /// and `/socket.io/?…&parser=msgpack`.
    ///
    /// # Errors
    /// A `format` (or Socket.IO `parser`) this daemon does not speak.
    pub fn for_request(
        endpoint: Endpoint,
        format: Option<&str>,
        parser: Option<&str>,
    ) -> Result<Dialect, &'static str> {
        match (endpoint, format, parser) {
            (Endpoint::Browser, None | Some("json"), _) => Ok(Dialect::Json),
            (Endpoint::Browser, Some("msgpack"), _) => Ok(Dialect::MsgPack),
            (Endpoint::Browser, Some(_), _) => {
                Err("unknown format: use format=json (the default) or format=msgpack")
            }
            (Endpoint::SocketIo, _, Some("msgpack")) => Ok(Dialect::SocketIoMsgPack),
            (Endpoint::SocketIo, _, Some(_)) => {
                Err("unknown parser: use parser=msgpack or none (JSON packets)")
            }
            _ => Ok(Dialect::for_endpoint(endpoint)),
        }
    }

    /// One message in this dialect, as a complete WebSocket frame.
    pub fn encode(self, ev: &Event<'_>) -> Frame {
        match self {
            Dialect::MsgPack => super::msgpack::encode(ev),
            Dialect::SocketIoMsgPack => {
                super::msgpack::socketio::binary(json::encode(ev, Dialect::SocketIo))
            }
            _ => json::encode(ev, self),
        }
    }

    /// What the server says first, before any request (Engine.IO OPEN).
    pub fn greeting(self, params: &OpenParams) -> Option<Frame> {
        match self {
            Dialect::Json | Dialect::MsgPack => None,
            Dialect::SocketIo | Dialect::SocketIoMsgPack => Some(text(&sio::open_packet(params))),
        }
    }

    /// Whether the socket must join (Socket.IO CONNECT) before it is served.
    pub fn needs_connect(self) -> bool {
        self.is_socketio()
    }

    /// Decodes one binary message (only MessagePack sockets take them).
    pub fn decode_binary(self, bytes: &[u8], state: &DialectState) -> Inbound {
        if self == Dialect::SocketIoMsgPack {
            return super::msgpack::socketio::decode(bytes, state);
        }
        if self != Dialect::MsgPack {
            return Inbound::Invalid {
                message: "binary messages are not supported; send JSON text".into(),
                stat: "binary",
            };
        }
        request(super::msgpack::decode(bytes), "invalid_msgpack")
    }

    /// Decodes one text frame.
    pub fn decode(self, frame: &str, state: &DialectState) -> Inbound {
        match self {
            Dialect::MsgPack => Inbound::Invalid {
                message: "this socket speaks MessagePack (format=msgpack): send binary frames"
                    .into(),
                stat: "text_on_msgpack",
            },
            Dialect::Json => request(json::parse_typed(frame), "invalid_json"),
            // Engine.IO's own packets (ping, pong, close) are text either way.
            Dialect::SocketIo | Dialect::SocketIoMsgPack => decode_socketio(frame, state),
        }
    }

    /// The acknowledgement of a request that asked for one.
    pub fn ack(self, id: Option<u64>, result: Result<(), &str>) -> Option<Frame> {
        let id = id?;
        match self {
            Dialect::Json | Dialect::MsgPack => None,
            Dialect::SocketIo | Dialect::SocketIoMsgPack => {
                let args = match result {
                    Ok(()) => r#"[{"ok":true}]"#.to_string(),
                    Err(msg) => serde_json::json!([{ "error": msg }]).to_string(),
                };
                Some(self.sio_frame(text(&sio::ack("/", id, &args))))
            }
        }
    }

    /// The answer to a CONNECT at `now`: joined (`Ok`) or refused with a message.
    pub fn connect_reply(
        self,
        state: &mut DialectState,
        now: Instant,
        result: Result<(), &str>,
    ) -> Option<Frame> {
        match (self, result) {
            (Dialect::Json | Dialect::MsgPack, _) => None,
            (_, Ok(())) => {
                state.connected = true;
                state.last_ping = Some(now);
                let sid = uuid::Uuid::new_v4().simple().to_string();
                Some(self.sio_frame(text(&sio::connect_ok(&sid))))
            }
            (_, Err(msg)) => Some(self.sio_frame(text(&sio::connect_error("/", msg)))),
        }
    }

    /// The CONNECT answer of a recoverable Socket.IO session (`sid` and
    /// `pid` kept across a recovery); `None` for the JSON dialect.
    pub fn connect_reply_recoverable(
        self,
        state: &mut DialectState,
        now: Instant,
        sid: &str,
        pid: &str,
    ) -> Option<Frame> {
        if self != Dialect::SocketIo {
            return None;
        }
        state.connected = true;
        state.last_ping = Some(now);
        Some(text(&sio::connect_ok_recoverable(sid, pid)))
    }

    /// `frame` (a Socket.IO EVENT built by [`Dialect::encode`]) with `offset`
    /// as its last argument; `None` for any other frame. One copy, made once
    /// per published frame however many sockets share it.
    pub fn stamp(frame: &Frame, offset: u64) -> Option<Frame> {
        let payload = ws::frame_payload(frame);
        let mut buf = ws::begin_frame(payload.len() + 24);
        if !sio::write_with_offset(&mut buf, payload, offset) {
            return None;
        }
        Some(ws::finish_frame(buf, ws::OpCode::Text))
    }

    /// Whether `frame` is a Socket.IO EVENT that [`Dialect::stamp`] would stamp.
    pub fn is_stampable(frame: &Frame) -> bool {
        frame.first() == Some(&0x81) && sio::is_event(ws::frame_payload(frame))
    }

    /// Engine.IO heartbeat: ping every `interval`, give up `timeout` after an
    /// unanswered ping. The JSON dialect relies on WebSocket pings instead.
    pub fn heartbeat(
        self,
        state: &mut DialectState,
        now: Instant,
        interval: Duration,
        timeout: Duration,
    ) -> Heartbeat {
        if !self.is_socketio() || !state.connected {
            return Heartbeat::Idle;
        }
        if let Some(due) = state.pong_due {
            return if now >= due {
                Heartbeat::TimedOut
            } else {
                Heartbeat::Idle
            };
        }
        let last = *state.last_ping.get_or_insert(now);
        if now.duration_since(last) >= interval {
            state.last_ping = Some(now);
            state.pong_due = Some(now + timeout);
            return Heartbeat::Send(text(sio::PING));
        }
        Heartbeat::Idle
    }

    /// Records the client's heartbeat answer.
    pub fn heartbeat_answered(state: &mut DialectState) {
        state.pong_due = None;
    }
}

/// A typed request of the JSON dialect (text or MessagePack), or why not.
fn request(parsed: Result<(String, Map<String, Value>), String>, stat: &'static str) -> Inbound {
    match parsed {
        Ok((kind, obj)) => Inbound::Request {
            kind,
            obj,
            ack: None,
        },
        Err(message) => Inbound::Invalid { message, stat },
    }
}

fn decode_socketio(frame: &str, state: &DialectState) -> Inbound {
    let packet = match sio::parse_eio(frame) {
        Ok(p) => p,
        Err(e) => {
            return Inbound::Invalid {
                message: e.to_string(),
                stat: "socketio_packet",
            };
        }
    };
    let message = match packet {
        EioPacket::Pong(_) => return Inbound::HeartbeatAnswered,
        EioPacket::Ping(data) => return Inbound::Reply(text(&format!("3{data}"))),
        EioPacket::Close => return Inbound::Leave("Engine.IO close"),
        EioPacket::Noop => return Inbound::Nothing,
        EioPacket::Open | EioPacket::Upgrade => {
            return Inbound::Invalid {
                message: "unexpected Engine.IO packet on a websocket-only session".into(),
                stat: "socketio_packet",
            };
        }
        EioPacket::Message(m) => m,
    };
    match sio::parse_sio(message) {
        Ok(p) => sio_inbound(p, state),
        Err(e) => Inbound::Invalid {
            message: e.to_string(),
            stat: "socketio_packet",
        },
    }
}

/// What one Socket.IO packet asks for, whichever its encoding (JSON text
/// or `socket.io-msgpack-parser`'s binary maps).
pub(super) fn sio_inbound(packet: SioPacket, state: &DialectState) -> Inbound {
    if packet.nsp() != "/" {
        return Inbound::Refuse {
            frame: text(&sio::connect_error(packet.nsp(), "Invalid namespace")),
            stat: "socketio_namespace",
        };
    }
    match packet {
        SioPacket::Connect { .. } if state.connected => Inbound::Nothing,
        SioPacket::Connect { auth, .. } => Inbound::Connect {
            token: auth
                .as_ref()
                .and_then(|a| a.get("token"))
                .and_then(Value::as_str)
                .map(str::to_string),
            recovery: sio::recovery_auth(auth.as_ref()),
        },
        _ if !state.connected => Inbound::Refuse {
            frame: text(&sio::connect_error(
                "/",
                "not connected: send a CONNECT packet first",
            )),
            stat: "socketio_not_connected",
        },
        SioPacket::Disconnect { .. } => Inbound::Leave("Socket.IO disconnect"),
        SioPacket::Ack { .. } => Inbound::Nothing,
        SioPacket::Event { id, name, args, .. } => {
            let obj = match args.into_iter().next() {
                Some(Value::Object(o)) => o,
                // The seed emits `{container_id}`; a bare string is accepted too.
                Some(Value::String(s)) => {
                    let mut o = Map::new();
                    o.insert("container_id".into(), Value::String(s));
                    o
                }
                _ => Map::new(),
            };
            Inbound::Request {
                kind: name,
                obj,
                ack: id,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(f: &Frame) -> String {
        String::from_utf8(ws::frame_payload(f).to_vec()).unwrap()
    }

    #[test]
    fn every_event_is_a_well_formed_socketio_packet() {
        let fields: Map<String, Value> =
            serde_json::from_str(r#"{"command_id":"c1","exit_code":0}"#).unwrap();
        let events = [
            Event::Pong,
            Event::Metrics {
                server_id: Some("s"),
                data_json: r#"{"cpu_percent":1.0}"#,
            },
            Event::Object {
                name: "command_response",
                fields: &fields,
            },
            Event::LogDropped {
                server_id: "s",
                container_id: None,
                lines: 3,
            },
        ];
        for ev in &events {
            let s = payload(&Dialect::SocketIo.encode(ev));
            let body = s.strip_prefix("42").expect("an Engine.IO message event");
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v[0], ev.name(), "{s}");
            assert!(v[1].is_object(), "{s}");
            let j: Value = serde_json::from_str(&payload(&Dialect::Json.encode(ev))).unwrap();
            assert_eq!(j["type"], ev.name());
        }
        assert_eq!(
            payload(&Dialect::Json.encode(&Event::Pong)),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            payload(&Dialect::SocketIo.encode(&Event::Pong)),
            r#"42["pong",{}]"#
        );
    }

    #[test]
    fn socketio_requests_need_connect_first() {
        let mut st = DialectState::default();
        assert!(matches!(
            Dialect::SocketIo.decode(r#"42["ping"]"#, &st),
            Inbound::Refuse { .. }
        ));
        match Dialect::SocketIo.decode(r#"40{"token":"t"}"#, &st) {
            Inbound::Connect { token, recovery } => {
                assert_eq!(token.as_deref(), Some("t"));
                assert_eq!(recovery, sio::RecoveryAuth::default());
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Dialect::SocketIo
                .connect_reply(&mut st, Instant::now(), Ok(()))
                .is_some()
        );
        match Dialect::SocketIo.decode(r#"421["ping"]"#, &st) {
            Inbound::Request { kind, ack, .. } => {
                assert_eq!(kind, "ping");
                assert_eq!(ack, Some(1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heartbeat_pings_then_times_out() {
        let mut st = DialectState {
            connected: true,
            ..Default::default()
        };
        let t0 = Instant::now();
        let i = Duration::from_secs(25);
        let to = Duration::from_secs(20);
        assert_eq!(
            Dialect::SocketIo.heartbeat(&mut st, t0, i, to),
            Heartbeat::Idle
        );
        assert!(matches!(
            Dialect::SocketIo.heartbeat(&mut st, t0 + i, i, to),
            Heartbeat::Send(_)
        ));
        assert_eq!(
            Dialect::SocketIo.heartbeat(&mut st, t0 + i + to, i, to),
            Heartbeat::TimedOut
        );
        Dialect::heartbeat_answered(&mut st);
        assert_eq!(
            Dialect::SocketIo.heartbeat(&mut st, t0 + i + to, i, to),
            Heartbeat::Idle
        );
        assert_eq!(
            Dialect::Json.heartbeat(&mut st, t0 + i * 9, i, to),
            Heartbeat::Idle
        );
    }
}
