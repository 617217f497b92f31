//! The agent's side of the agent protocol (SPEC §3.3): what producers hand
//! to the session thread, how it is encoded, and how hub messages decode.
//!
//! Invariants: encoding never fails for our own types; decoding never
//! panics and keeps `command_id` as the exact JSON value the hub sent, so the
//! answer carries it back unchanged (string or number alike).

use serde::Serialize;
use serde_json::Value;

use crate::protocol::model::Metrics;

/// One log entry read from a `--log-file`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub level: &'static str,
    pub message: String,
    /// RFC 3339 time the agent read the line.
    pub timestamp: String,
}

/// The answer to a hub `command`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandResponse {
    pub command_id: Value,
    pub output: String,
    pub exit_code: i32,
    pub duration_ms: u64,
}

/// The answer to a hub `docker_command`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DockerResponse {
    pub command_id: Value,
    pub success: bool,
    pub message: String,
}

/// Everything the metrics, log and command threads hand to the session.
/// The session adds the `server_id` it got at auth when it encodes.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Metrics(Metrics),
    Log(LogEntry),
    Command(CommandResponse),
    Docker(DockerResponse),
    /// A message already encoded by the Docker bridge ([`super::containers`]):
    /// sent as it is while connected, never kept while offline (the table
    /// is sent whole on reconnect, followers restart on the hub's request).
    Raw(String),
}

#[derive(Serialize)]
struct Typed<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_id: Option<&'a str>,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct LogBody<'a> {
    level: &'a str,
    message: &'a str,
    timestamp: &'a str,
}

fn typed<T: Serialize>(kind: &'static str, server_id: Option<&str>, body: &T) -> String {
    let msg = Typed {
        kind,
        server_id,
        body,
    };
    // Serializing plain structs of strings and numbers cannot fail; an
    // `f64` NaN in metrics becomes `null`, which serde_json allows.
    serde_json::to_string(&msg).unwrap_or_else(|e| {
        log::error!("could not encode a {kind} message: {e}");
        String::new()
    })
}

/// The `auth` message, the first thing the agent sends.
pub fn encode_auth(api_key: &str) -> String {
    serde_json::json!({"type": "auth", "api_key": api_key}).to_string()
}

/// The `hello` message (SPEC 6) sent after every `auth_success`.
pub fn encode_hello(capabilities: &[&str]) -> String {
    serde_json::json!({
        "type": "hello",
        "name": hostname(),
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": capabilities,
    })
    .to_string()
}

/// This host's name (informational: the hub names an agent by its key).
fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_default()
}

/// Encodes one outgoing item as the JSON text frame the hub expects.
pub fn encode(item: &Outgoing, server_id: &str) -> String {
    match item {
        Outgoing::Metrics(m) => typed("metrics", Some(server_id), m),
        Outgoing::Log(e) => typed(
            "log",
            Some(server_id),
            &LogBody {
                level: e.level,
                message: &e.message,
                timestamp: &e.timestamp,
            },
        ),
        Outgoing::Command(r) => typed("command_response", None, r),
        Outgoing::Docker(r) => typed("docker_response", None, r),
        Outgoing::Raw(text) => text.clone(),
    }
}

/// A message from the hub, as far as the agent cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    AuthSuccess {
        server_id: String,
    },
    Error {
        message: String,
    },
    /// `command` is `None` when the hub sent no string there.
    Command {
        command_id: Value,
        command: Option<String>,
    },
    DockerCommand {
        command_id: Value,
        action: Option<String>,
        container_id: Option<String>,
    },
    /// Follow a container's logs (SPEC 6): history of `tail` lines, then live.
    SubscribeLogs {
        container_id: String,
        tail: usize,
    },
    UnsubscribeLogs {
        container_id: String,
    },
    /// Sample container usage every `interval_ms` (`None`: stop).
    SampleStats {
        interval_ms: Option<u64>,
    },
    /// A known type whose required fields are missing (nothing to answer).
    Malformed {
        kind: String,
        reason: &'static str,
    },
    /// Any other `type`: ignored by the agent.
    Unknown {
        kind: String,
    },
}

/// Decodes one text frame from the hub.
///
/// # Errors
/// A human-readable reason when the frame is not a JSON object with a string
/// `type`.
pub fn decode(text: &str) -> Result<Incoming, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("not a JSON object".to_owned());
    };
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err("no string \"type\" field".to_owned()),
    };
    fn take_str(obj: &mut serde_json::Map<String, Value>, key: &str) -> Option<String> {
        match obj.remove(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
    let msg = match kind.as_str() {
        "auth_success" => match take_str(&mut obj, "server_id") {
            Some(server_id) if !server_id.is_empty() => Incoming::AuthSuccess { server_id },
            _ => Incoming::Malformed {
                kind,
                reason: "missing server_id",
            },
        },
        "error" => Incoming::Error {
            message: take_str(&mut obj, "message").unwrap_or_default(),
        },
        "command" | "docker_command" => {
            let command_id = match obj.remove("command_id") {
                Some(v @ (Value::String(_) | Value::Number(_))) => v,
                _ => {
                    return Ok(Incoming::Malformed {
                        kind,
                        reason: "missing command_id",
                    });
                }
            };
            if kind == "command" {
                Incoming::Command {
                    command_id,
                    command: take_str(&mut obj, "command"),
                }
            } else {
                Incoming::DockerCommand {
                    command_id,
                    action: take_str(&mut obj, "action"),
                    container_id: take_str(&mut obj, "container_id"),
                }
            }
        }
        "subscribe_logs" | "unsubscribe_logs" => match take_str(&mut obj, "container_id") {
            Some(container_id) if !container_id.is_empty() => {
                if kind == "subscribe_logs" {
                    let tail = obj.get("tail").and_then(Value::as_u64).unwrap_or(100);
                    Incoming::SubscribeLogs {
                        container_id,
                        tail: usize::try_from(tail).unwrap_or(usize::MAX),
                    }
                } else {
                    Incoming::UnsubscribeLogs { container_id }
                }
            }
            _ => Incoming::Malformed {
                kind,
                reason: "missing container_id",
            },
        },
        "subscribe_stats" => Incoming::SampleStats {
            interval_ms: Some(
                obj.get("interval_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(5000),
            ),
        },
        "unsubscribe_stats" => Incoming::SampleStats { interval_ms: None },
        _ => Incoming::Unknown { kind },
    };
    Ok(msg)
}

/// Shortens `s` so its JSON-escaped form is at most `max` bytes, cutting at
/// a char boundary. Returns whether anything was cut.
///
/// Capping the escaped size (not the raw one) bounds the frame the hub
/// receives: a line of control bytes grows six-fold when escaped.
pub fn cap_json_len(s: &mut String, max: usize) -> bool {
    let mut total = 0usize;
    for (idx, ch) in s.char_indices() {
        let w = json_width(ch);
        if total + w > max {
            s.truncate(idx);
            return true;
        }
        total += w;
    }
    false
}

/// Bytes `s` takes inside a JSON string literal (serde_json's escaping).
pub fn json_len(s: &str) -> usize {
    s.chars().map(json_width).sum()
}

fn json_width(ch: char) -> usize {
    match ch {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Appended to command output cut to fit one frame.
const FIT_NOTE: &str = "\n[output truncated to fit one message]";

/// Encodes `item` so the frame is at most `max_frame` bytes, the largest
/// message the hub accepts (its `max_message_bytes`, 64 KiB by default; a
/// bigger frame would make it close the connection with 1009, and a resend
/// after reconnecting would do the same again). Command output is cut to
/// fit; any other item that does not fit gives `None` (it cannot happen
/// with the agent's own limits: log lines are capped at 16 KiB).
pub fn encode_bounded(item: &Outgoing, server_id: &str, max_frame: usize) -> Option<String> {
    let text = encode(item, server_id);
    if text.len() <= max_frame {
        return Some(text);
    }
    let Outgoing::Command(r) = item else {
        return None;
    };
    let excess = text.len() - max_frame;
    let budget = json_len(&r.output).checked_sub(excess + json_len(FIT_NOTE))?;
    let mut output = r.output.clone();
    cap_json_len(&mut output, budget);
    output.push_str(FIT_NOTE);
    let fitted = encode(
        &Outgoing::Command(CommandResponse {
            output,
            ..r.clone()
        }),
        server_id,
    );
    (fitted.len() <= max_frame).then_some(fitted)
}

/// The current time as RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::model::{DiskUsage, NetworkUsage};
    use serde_json::json;

    fn sample_metrics() -> Metrics {
        Metrics {
            cpu_percent: 12.5,
            memory_percent: 40.0,
            memory_used: 400,
            memory_total: 1000,
            disk_usage: vec![DiskUsage {
                mount: "/".into(),
                used: 1,
                total: 2,
            }],
            network: vec![NetworkUsage {
                interface: "eth0".into(),
                rx_bytes: 3,
                tx_bytes: 4,
            }],
            load_average: [0.1, 0.2, 0.3],
            timestamp: "2024-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn metrics_are_flattened_with_server_id() {
        let text = encode(&Outgoing::Metrics(sample_metrics()), "srv-1");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "metrics");
        assert_eq!(v["server_id"], "srv-1");
        assert_eq!(v["cpu_percent"], 12.5);
        assert_eq!(v["memory_total"], 1000);
        assert_eq!(v["disk_usage"][0]["mount"], "/");
        assert_eq!(v["network"][0]["interface"], "eth0");
        assert_eq!(v["load_average"], json!([0.1, 0.2, 0.3]));
        assert_eq!(v["timestamp"], "2024-01-01T00:00:00Z");
        assert!(v.get("data").is_none());
    }

    #[test]
    fn log_and_responses_encode() {
        let log = Outgoing::Log(LogEntry {
            level: "ERROR",
            message: "boom \"x\"".into(),
            timestamp: "t".into(),
        });
        let v: Value = serde_json::from_str(&encode(&log, "s")).unwrap();
        assert_eq!(
            v,
            json!({"type":"log","server_id":"s","level":"ERROR","message":"boom \"x\"","timestamp":"t"})
        );
        let cmd = Outgoing::Command(CommandResponse {
            command_id: json!("c1"),
            output: "hi\n".into(),
            exit_code: 0,
            duration_ms: 5,
        });
        let v: Value = serde_json::from_str(&encode(&cmd, "s")).unwrap();
        assert_eq!(
            v,
            json!({"type":"command_response","command_id":"c1","output":"hi\n","exit_code":0,"duration_ms":5})
        );
        let dock = Outgoing::Docker(DockerResponse {
            command_id: json!(7),
            success: false,
            message: "no".into(),
        });
        let v: Value = serde_json::from_str(&encode(&dock, "s")).unwrap();
        assert_eq!(
            v,
            json!({"type":"docker_response","command_id":7,"success":false,"message":"no"})
        );
    }

    #[test]
    fn auth_message() {
        let v: Value = serde_json::from_str(&encode_auth("k\"ey")).unwrap();
        assert_eq!(v, json!({"type":"auth","api_key":"k\"ey"}));
    }

    #[test]
    fn decodes_hub_messages() {
        assert_eq!(
            decode(
                r#"{"type":"auth_success","server_id":"u1","message":"Connected successfully"}"#
            ),
            Ok(Incoming::AuthSuccess {
                server_id: "u1".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"error","message":"Invalid or inactive API key"}"#),
            Ok(Incoming::Error {
                message: "Invalid or inactive API key".into()
            })
        );
        assert_eq!(
            decode(r#"{"type":"command","command_id":"c","command":"uptime"}"#),
            Ok(Incoming::Command {
                command_id: json!("c"),
                command: Some("uptime".into())
            })
        );
        assert_eq!(
            decode(r#"{"type":"command","command_id":3,"command":["ls"]}"#),
            Ok(Incoming::Command {
                command_id: json!(3),
                command: None
            })
        );
        assert_eq!(
            decode(
                r#"{"type":"docker_command","command_id":"d","action":"stop","container_id":"web"}"#
            ),
            Ok(Incoming::DockerCommand {
                command_id: json!("d"),
                action: Some("stop".into()),
                container_id: Some("web".into())
            })
        );
        assert_eq!(
            decode(r#"{"type":"command","command":"uptime"}"#),
            Ok(Incoming::Malformed {
                kind: "command".into(),
                reason: "missing command_id"
            })
        );
        assert_eq!(
            decode(r#"{"type":"auth_success"}"#),
            Ok(Incoming::Malformed {
                kind: "auth_success".into(),
                reason: "missing server_id"
            })
        );
        assert_eq!(
            decode(r#"{"type":"surprise","x":1}"#),
            Ok(Incoming::Unknown {
                kind: "surprise".into()
            })
        );
        assert!(decode("not json").is_err());
        assert!(decode("[1,2]").is_err());
        assert!(decode(r#"{"type":5}"#).is_err());
    }

    #[test]
    fn frames_are_bounded() {
        let big = |output: String| {
            Outgoing::Command(CommandResponse {
                command_id: json!("id-1"),
                output,
                exit_code: 0,
                duration_ms: 1,
            })
        };
        // Fits: unchanged.
        let small = big("hello\n".into());
        assert_eq!(
            encode_bounded(&small, "s", 1000).unwrap(),
            encode(&small, "s")
        );
        // 64 KiB of newlines (128 KiB escaped) into a 64 KiB frame.
        let item = big("\n".repeat(65536));
        let text = encode_bounded(&item, "s", 65536).unwrap();
        assert!(text.len() <= 65536 && text.len() > 65000, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["command_id"], "id-1");
        assert!(v["output"].as_str().unwrap().ends_with(FIT_NOTE));
        // A frame too small for even the envelope: nothing to send.
        assert!(encode_bounded(&item, "s", 50).is_none());
        // Non-command items are never cut.
        let log = Outgoing::Log(LogEntry {
            level: "INFO",
            message: "x".repeat(100),
            timestamp: String::new(),
        });
        assert!(encode_bounded(&log, "s", 50).is_none());
        assert!(encode_bounded(&log, "s", 500).is_some());
    }

    #[test]
    fn json_cap_counts_escapes() {
        let mut s = "abcdef".to_owned();
        assert!(!cap_json_len(&mut s, 6));
        assert_eq!(s, "abcdef");
        assert!(cap_json_len(&mut s, 4));
        assert_eq!(s, "abcd");

        let mut s = "\u{1}\u{1}\u{1}".to_owned();
        assert!(cap_json_len(&mut s, 13));
        assert_eq!(s, "\u{1}\u{1}");

        let mut s = "éé".to_owned(); // 2 bytes each
        assert!(cap_json_len(&mut s, 3));
        assert_eq!(s, "é");

        // The bound holds for what serde_json really produces.
        let mut s: String = (0u8..128).map(char::from).cycle().take(5000).collect();
        cap_json_len(&mut s, 1000);
        let encoded = serde_json::to_string(&s).unwrap();
        assert!(encoded.len() - 2 <= 1000, "{}", encoded.len());
        assert!(encoded.len() - 2 > 990);
        assert_eq!(json_len(&s), encoded.len() - 2);
    }
}
