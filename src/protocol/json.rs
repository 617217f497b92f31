//! Messages of the JSON dialect (SPEC section 3.1) and the encoding of every
//! event the daemon sends, in both dialects.
//!
//! Encoding writes JSON straight after reserved frame-header room
//! ([`ws::begin_frame`]), so a frame for many subscribers costs one
//! serialization and one allocation, whatever the subscriber count.

use serde::Serialize;
use serde_json::Value;

use crate::protocol::model::Container;
use crate::ws::{self, Frame, OpCode};

pub use super::dialect::Dialect;
use super::filter::{EventFilter, LogFilterSpec, parse_event_filter, parse_log_filter};

/// A request from a browser, whichever dialect carried it.
#[derive(Debug, Clone, PartialEq)]
pub enum BrowserRequest {
    Auth {
        token: String,
    },
    StartLogStream {
        server_id: Option<String>,
        container_id: String,
        tail: Option<usize>,
        /// Resume (SPEC 7): the `seq` of the last line the client has.
        since_seq: Option<u64>,
        /// Only the lines this selects (SPEC 12).
        filter: Option<LogFilterSpec>,
    },
    StopLogStream {
        server_id: Option<String>,
        container_id: String,
    },
    /// `list_servers` (SPEC 6).
    ListServers,
    SubscribeContainers {
        server_id: String,
    },
    UnsubscribeContainers {
        server_id: String,
    },
    DockerCommand {
        server_id: Option<String>,
        action: String,
        container_id: String,
    },
    Command {
        server_id: String,
        command: String,
    },
    Ping,
    /// Extension: a `/api/v1/ws` client asks for another server's metrics.
    SubscribeMetrics {
        server_id: String,
    },
    UnsubscribeMetrics {
        server_id: String,
    },
    /// `set_event_filter` (SPEC 12): an empty filter clears it.
    SetEventFilter {
        server_id: Option<String>,
        filter: EventFilter,
    },
}

/// Largest string field accepted from a browser (ids, names, commands).
pub const MAX_FIELD: usize = 4096;
/// Largest token accepted in `auth` (JWTs with many claims run past 4 KiB).
pub const MAX_TOKEN: usize = 8192;

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    let max = if name == "token" {
        MAX_TOKEN
    } else {
        MAX_FIELD
    };
    match obj.get(name) {
        Some(Value::String(s)) if s.len() > max => Err(format!(
            "field {name:?} is too long: {} bytes, at most {max}",
            s.len()
        )),
        Some(Value::String(s)) if s.is_empty() => Err(format!("field {name:?} must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("field {name:?} must be a string")),
        None => Err(format!("missing field {name:?}")),
    }
}

/// An optional string field: absent or null is `None`.
fn optional_field(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => field(obj, name).map(|s| Some(s.to_string())),
    }
}

/// `since_seq` (SPEC 7): absent or null is `None`. A peer's number: any
/// non-negative number is taken, saturated to `u64` (a float or a huge
/// value means "beyond anything held", which the hub answers with a gap).
fn since_seq(obj: &serde_json::Map<String, Value>) -> Result<Option<u64>, String> {
    match obj.get("since_seq") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f >= 0.0 => Ok(Some(if f >= u64::MAX as f64 {
                u64::MAX
            } else {
                f as u64
            })),
            _ => Err("field \"since_seq\" must be a non-negative integer".into()),
        },
        Some(_) => Err("field \"since_seq\" must be a non-negative integer".into()),
    }
}

/// The reply to an agent's `auth` sent to a browser endpoint.
pub const WRONG_ENDPOINT_FOR_AGENT: &str = "this is a browser endpoint and the message is an \
     agent's auth (api_key): agents connect to /api/v1/agents/ws";

/// Longest `request_id` a client may send (SPEC 6).
pub const MAX_REQUEST_ID: usize = 64;

/// The request's `request_id`, when it has a valid one.
///
/// # Errors
/// A message for the client when it is not a string of at most 64 bytes.
pub fn request_id(obj: &serde_json::Map<String, Value>) -> Result<Option<&str>, String> {
    match obj.get("request_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_REQUEST_ID => Ok(Some(s)),
        Some(_) => Err(format!(
            "field \"request_id\" must be a string of at most {MAX_REQUEST_ID} bytes"
        )),
    }
}

/// Parses the named request from its payload object (shared by both dialects).
///
/// # Errors
/// A message for the client's `error` reply.
pub fn request_from(
    kind: &str,
    obj: &serde_json::Map<String, Value>,
) -> Result<BrowserRequest, String> {
    Ok(match kind {
        // An agent's `auth` (an `api_key`, no `token`) sent to a browser
        // endpoint: say where agents belong instead of "missing field".
        "auth" if !obj.contains_key("token") && obj.contains_key("api_key") => {
            return Err(WRONG_ENDPOINT_FOR_AGENT.to_string());
        }
        "auth" => BrowserRequest::Auth {
            token: field(obj, "token")?.to_string(),
        },
        "start_log_stream" => {
            let tail = match obj.get("tail") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or("field \"tail\" must be a non-negative integer")?,
                ),
            };
            BrowserRequest::StartLogStream {
                server_id: optional_field(obj, "server_id")?,
                container_id: field(obj, "container_id")?.to_string(),
                tail,
                since_seq: since_seq(obj)?,
                filter: parse_log_filter(obj)?,
            }
        }
        "stop_log_stream" => BrowserRequest::StopLogStream {
            server_id: optional_field(obj, "server_id")?,
            container_id: field(obj, "container_id")?.to_string(),
        },
        "list_servers" => BrowserRequest::ListServers,
        "subscribe_containers" => BrowserRequest::SubscribeContainers {
            server_id: field(obj, "server_id")?.to_string(),
        },
        "unsubscribe_containers" => BrowserRequest::UnsubscribeContainers {
            server_id: field(obj, "server_id")?.to_string(),
        },
        "docker_command" => BrowserRequest::DockerCommand {
            server_id: optional_field(obj, "server_id")?,
            action: field(obj, "action")?.to_string(),
            container_id: field(obj, "container_id")?.to_string(),
        },
        "command" => BrowserRequest::Command {
            server_id: field(obj, "server_id")?.to_string(),
            command: field(obj, "command")?.to_string(),
        },
        "ping" => BrowserRequest::Ping,
        "set_event_filter" => BrowserRequest::SetEventFilter {
            server_id: optional_field(obj, "server_id")?,
            filter: parse_event_filter(obj)?,
        },
        "subscribe_metrics" => BrowserRequest::SubscribeMetrics {
            server_id: field(obj, "server_id")?.to_string(),
        },
        "unsubscribe_metrics" => BrowserRequest::UnsubscribeMetrics {
            server_id: field(obj, "server_id")?.to_string(),
        },
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(format!("unknown message type {shown:?}"));
        }
    })
}

/// Parses a JSON-dialect text message: `(type, object)`.
///
/// # Errors
/// "Invalid message format" style messages for the `error` reply.
pub fn parse_typed(text: &str) -> Result<(String, serde_json::Map<String, Value>), String> {
    let v: Value =
        serde_json::from_str(text).map_err(|_| "Invalid message format: not JSON".to_string())?;
    let Value::Object(obj) = v else {
        return Err("Invalid message format: expected a JSON object".into());
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err("Invalid message format: missing \"type\"".into()),
    };
    Ok((kind, obj))
}

/// Parses a browser's JSON-dialect message.
///
/// # Errors
/// A message for the `error` reply.
pub fn parse_browser(text: &str) -> Result<BrowserRequest, String> {
    let (kind, obj) = parse_typed(text)?;
    request_from(&kind, &obj)
}

/// An event the daemon sends to browsers; same meaning in both dialects.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    ConnectionEstablished {
        server_id: &'a str,
    },
    /// A server's whole container table; `request_id` echoes the
    /// `subscribe_containers` that asked for it.
    InitialState {
        server_id: &'a str,
        containers: &'a [&'a Container],
        request_id: Option<&'a str>,
    },
    ContainerChanged {
        server_id: &'a str,
        container: &'a Container,
    },
    ContainerRemoved {
        server_id: &'a str,
        id: &'a str,
    },
    /// `seq`: the number of the frame's last line in its stream (SPEC 7).
    LogUpdate {
        server_id: &'a str,
        container_id: &'a str,
        log: &'a str,
        seq: u64,
    },
    /// Lines a resuming client cannot get any more (SPEC 7); `missed: None`
    /// when the count is unknown.
    LogGap {
        server_id: &'a str,
        container_id: &'a str,
        missed: Option<u64>,
    },
    LogStreamStopped {
        server_id: &'a str,
        container_id: &'a str,
        message: &'a str,
    },
    /// Lines lost for a slow socket: a container's (`container_id`) or a
    /// server's agent log entries (`container_id` absent).
    LogDropped {
        server_id: &'a str,
        container_id: Option<&'a str>,
        lines: u64,
    },
    /// Host metrics: `data_json` is the serialized `Metrics` object;
    /// `server_id` is left out in the second seed's single-server form.
    Metrics {
        server_id: Option<&'a str>,
        data_json: &'a str,
    },
    /// The answer to a client's `ping` request.
    Pong,
    /// `request_id` echoes the request the error answers, when it had one.
    Error {
        message: &'a str,
        request_id: Option<&'a str>,
    },
    /// Any other message, built as a JSON object: `name` is its `type` (JSON
    /// dialect) or event name (Socket.IO), `fields` its payload.
    Object {
        name: &'a str,
        fields: &'a serde_json::Map<String, Value>,
    },
}

impl<'a> Event<'a> {
    /// The event (and `type`) name.
    pub fn name(&self) -> &'a str {
        match self {
            Event::ConnectionEstablished { .. } => "connection_established",
            Event::InitialState { .. } => "initial_state",
            Event::ContainerChanged { .. } | Event::ContainerRemoved { .. } => {
                "container_state_change"
            }
            Event::LogUpdate { .. } => "log_update",
            Event::LogGap { .. } => "log_gap",
            Event::LogStreamStopped { .. } => "log_stream_stopped",
            Event::LogDropped { .. } => "log_dropped",
            Event::Metrics { .. } => "metrics",
            Event::Pong => "pong",
            Event::Error { .. } => "error",
            Event::Object { name, .. } => name,
        }
    }
}

#[derive(Serialize)]
struct Removed<'a> {
    id: &'a str,
    state: &'static str,
}

/// Writes the event's fields (without `type`) as the body of an object,
/// i.e. `"a":1,"b":2` — shared by both dialects.
fn write_fields(out: &mut Vec<u8>, ev: &Event<'_>, dialect: Dialect) {
    fn kv(out: &mut Vec<u8>, first: bool, key: &str, v: &impl Serialize) {
        if !first {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }
    match *ev {
        Event::ConnectionEstablished { server_id } => {
            kv(out, true, "message", &"Connected to dockwire");
            kv(out, false, "server_id", &server_id);
        }
        Event::InitialState {
            server_id,
            containers,
            request_id,
        } => {
            kv(out, true, "server_id", &server_id);
            kv(out, false, "containers", &containers);
            if let Some(r) = request_id {
                kv(out, false, "request_id", &r);
            }
        }
        Event::ContainerChanged {
            server_id,
            container,
        } => {
            kv(out, true, "server_id", &server_id);
            kv(out, false, "container", container);
        }
        Event::ContainerRemoved { server_id, id } => {
            kv(out, true, "server_id", &server_id);
            kv(
                out,
                false,
                "container",
                &Removed {
                    id,
                    state: "removed",
                },
            );
        }
        Event::LogUpdate {
            server_id,
            container_id,
            log,
            seq,
        } => {
            kv(out, true, "server_id", &server_id);
            kv(out, false, "container_id", &container_id);
            kv(out, false, "log", &log);
            kv(out, false, "seq", &seq);
        }
        Event::LogGap {
            server_id,
            container_id,
            missed,
        } => {
            kv(out, true, "server_id", &server_id);
            kv(out, false, "container_id", &container_id);
            kv(out, false, "missed", &missed);
        }
        Event::LogStreamStopped {
            server_id,
            container_id,
            message,
        } => {
            kv(out, true, "server_id", &server_id);
            kv(out, false, "container_id", &container_id);
            kv(out, false, "message", &message);
        }
        Event::LogDropped {
            server_id,
            container_id,
            lines,
        } => {
            kv(out, true, "server_id", &server_id);
            if let Some(id) = container_id {
                kv(out, false, "container_id", &id);
            }
            kv(out, false, "lines", &lines);
        }
        Event::Metrics {
            server_id,
            data_json,
        } => {
            if let Some(id) = server_id {
                kv(out, true, "server_id", &id);
                out.push(b',');
            }
            // Serialized once by the publisher; written as it is.
            out.extend_from_slice(b"\"data\":");
            out.extend_from_slice(data_json.as_bytes());
        }
        Event::Pong => {}
        Event::Object { fields, .. } => {
            let mut first = true;
            for (k, v) in fields {
                if k == "type" {
                    continue;
                }
                kv(out, first, k, v);
                first = false;
            }
        }
        Event::Error {
            message,
            request_id,
        } => {
            let key = if dialect == Dialect::SocketIo {
                "error"
            } else {
                "message"
            };
            kv(out, true, key, &message);
            if let Some(r) = request_id {
                kv(out, false, "request_id", &r);
            }
        }
    }
}

/// Encodes one event as a complete WebSocket text frame in `dialect`.
pub fn encode(ev: &Event<'_>, dialect: Dialect) -> Frame {
    let hint = match ev {
        Event::LogUpdate { log, .. } => log.len() + 128,
        Event::Metrics { data_json, .. } => data_json.len() + 96,
        Event::InitialState { containers, .. } => containers.len() * 512 + 96,
        _ => 160,
    };
    let mut buf = ws::begin_frame(hint);
    match dialect {
        // MessagePack is built from the JSON form (msgpack/mod.rs).
        Dialect::Json | Dialect::MsgPack => {
            buf.extend_from_slice(b"{\"type\":");
            let _ = serde_json::to_writer(&mut buf, ev.name());
            let mark = buf.len();
            buf.push(b',');
            write_fields(&mut buf, ev, dialect);
            if buf.len() == mark + 1 {
                buf.truncate(mark); // no fields: no comma
            }
            buf.push(b'}');
        }
        // Socket.IO over msgpack is built from this form (msgpack/socketio.rs).
        Dialect::SocketIo | Dialect::SocketIoMsgPack => {
            // Engine.IO message (4) + Socket.IO EVENT (2): 42["name",{...}]
            buf.extend_from_slice(b"42[");
            let _ = serde_json::to_writer(&mut buf, ev.name());
            buf.push(b',');
            match ev {
                // The seed's container_state_change payload is the container
                // itself; `server_id` joins its fields.
                Event::ContainerChanged {
                    server_id,
                    container,
                } => {
                    let _ = serde_json::to_writer(&mut buf, container);
                    if buf.last() == Some(&b'}') {
                        buf.pop();
                        kv_into(&mut buf, "server_id", server_id);
                        buf.push(b'}');
                    }
                }
                Event::ContainerRemoved { server_id, id } => {
                    let _ = serde_json::to_writer(
                        &mut buf,
                        &serde_json::json!({
                            "container_id": id, "id": id, "state": "removed", "server_id": server_id,
                        }),
                    );
                }
                _ => {
                    buf.push(b'{');
                    write_fields(&mut buf, ev, dialect);
                    buf.push(b'}');
                }
            }
            buf.push(b']');
        }
    }
    ws::finish_frame(buf, OpCode::Text)
}

/// Appends `,"key":"value"` to an object being written.
fn kv_into(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Encodes any serializable value as a JSON text frame.
pub fn encode_value(v: &impl Serialize) -> Frame {
    let mut buf = ws::begin_frame(256);
    let _ = serde_json::to_writer(&mut buf, v);
    ws::finish_frame(buf, OpCode::Text)
}

/// `{"type":"error","message":...}` (or the Socket.IO `error` event).
pub fn error_frame(message: &str, dialect: Dialect) -> Frame {
    encode(
        &Event::Error {
            message,
            request_id: None,
        },
        dialect,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(f: &Frame) -> String {
        String::from_utf8(ws::frame_payload(f).to_vec()).unwrap()
    }

    #[test]
    fn log_update_in_both_dialects() {
        let ev = Event::LogUpdate {
            server_id: "s1",
            container_id: "abc",
            log: "a\n\"b\"\n",
            seq: 7,
        };
        let j: Value = serde_json::from_str(&payload(&encode(&ev, Dialect::Json))).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"type":"log_update","server_id":"s1","container_id":"abc","log":"a\n\"b\"\n","seq":7})
        );
        let s = payload(&encode(&ev, Dialect::SocketIo));
        let arr: Value = serde_json::from_str(s.strip_prefix("42").unwrap()).unwrap();
        assert_eq!(
            arr,
            serde_json::json!(["log_update", {"server_id":"s1","container_id":"abc","log":"a\n\"b\"\n","seq":7}])
        );
        // SPEC 7's gap notice; an unknown count is null.
        for (missed, want) in [(Some(3), serde_json::json!(3)), (None, Value::Null)] {
            let ev = Event::LogGap {
                server_id: "s1",
                container_id: "abc",
                missed,
            };
            let j: Value = serde_json::from_str(&payload(&encode(&ev, Dialect::Json))).unwrap();
            assert_eq!(
                j,
                serde_json::json!({"type":"log_gap","server_id":"s1","container_id":"abc","missed":want})
            );
        }
    }

    #[test]
    fn error_fields_follow_each_seed() {
        let j = payload(&error_frame("nope", Dialect::Json));
        assert_eq!(j, r#"{"type":"error","message":"nope"}"#);
        let s = payload(&error_frame("nope", Dialect::SocketIo));
        assert_eq!(s, r#"42["error",{"error":"nope"}]"#);
    }

    #[test]
    fn requests_parse_with_clear_errors() {
        assert_eq!(
            parse_browser(r#"{"type":"ping"}"#).unwrap(),
            BrowserRequest::Ping
        );
        assert_eq!(
            parse_browser(r#"{"type":"start_log_stream","container_id":"web","tail":5}"#).unwrap(),
            BrowserRequest::StartLogStream {
                server_id: None,
                container_id: "web".into(),
                tail: Some(5),
                since_seq: None,
                filter: None,
            }
        );
        // `since_seq`: a peer's number, saturated; negative or not a number is refused.
        for (raw, want) in [
            ("41", Some(41)),
            ("null", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("1e300", Some(u64::MAX)),
            ("2.5", Some(2)),
        ] {
            let text =
                format!(r#"{{"type":"start_log_stream","container_id":"w","since_seq":{raw}}}"#);
            match parse_browser(&text).unwrap() {
                BrowserRequest::StartLogStream { since_seq, .. } => {
                    assert_eq!(since_seq, want, "{raw}")
                }
                other => panic!("{other:?}"),
            }
        }
        for raw in ["-1", "\"5\"", "[]"] {
            let text =
                format!(r#"{{"type":"start_log_stream","container_id":"w","since_seq":{raw}}}"#);
            assert!(
                parse_browser(&text).unwrap_err().contains("since_seq"),
                "{raw}"
            );
        }
        assert!(parse_browser("not json").unwrap_err().contains("not JSON"));
        assert!(parse_browser("[1]").unwrap_err().contains("object"));
        assert!(
            parse_browser(r#"{"type":"warp"}"#)
                .unwrap_err()
                .contains("unknown message type")
        );
        assert!(
            parse_browser(r#"{"type":"start_log_stream"}"#)
                .unwrap_err()
                .contains("container_id")
        );
        assert!(
            parse_browser(r#"{"type":"start_log_stream","container_id":"x","tail":-1}"#).is_err()
        );
    }
}
