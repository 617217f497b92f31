//! Encoding what the server sends: complete Engine.IO text payloads, ready
//! to be framed as one WebSocket text frame each.
//!
//! Event names and other strings are escaped by [`escape_into`], which
//! produces byte-for-byte what `serde_json` produces for a `&str` (tested),
//! so hand-built packets and serde-built payloads never disagree. Payload
//! JSON handed in by the caller (`data_json`, `args_json`) is trusted to be
//! valid JSON already: it is serialized once and shared by many sockets.

use std::fmt::Write as _;

use super::{DEFAULT_NSP, OpenParams};

/// The Engine.IO OPEN packet:
/// `0{"sid":"..","upgrades":[],"pingInterval":..,"pingTimeout":..,"maxPayload":..}`.
/// `upgrades` is always empty: there is nothing to upgrade to from websocket.
pub fn open_packet(p: &OpenParams) -> String {
    let mut s = String::with_capacity(96 + p.sid.len());
    s.push_str("0{\"sid\":");
    escape_into_string(&mut s, &p.sid);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        ",\"upgrades\":[],\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
        p.ping_interval_ms, p.ping_timeout_ms, p.max_payload
    );
    s
}

/// Socket.IO CONNECT answer on the default namespace: `40{"sid":".."}`.
pub fn connect_ok(sid: &str) -> String {
    let mut s = String::with_capacity(12 + sid.len());
    s.push_str("40{\"sid\":");
    escape_into_string(&mut s, sid);
    s.push('}');
    s
}

/// Socket.IO CONNECT answer of a session that can be recovered (connection
/// state recovery, socket.io 4.6+): `40{"sid":"..","pid":".."}`. The client
/// keeps `pid` and sends it back, with the last offset it processed, in the
/// CONNECT of its next connection.
pub fn connect_ok_recoverable(sid: &str, pid: &str) -> String {
    let mut s = String::with_capacity(22 + sid.len() + pid.len());
    s.push_str("40{\"sid\":");
    escape_into_string(&mut s, sid);
    s.push_str(",\"pid\":");
    escape_into_string(&mut s, pid);
    s.push('}');
    s
}

/// Whether an Engine.IO payload is a Socket.IO EVENT on the default
/// namespace without an ack id (`42[...]`): what carries an offset.
pub fn is_event(payload: &[u8]) -> bool {
    payload.starts_with(b"42[") && payload.ends_with(b"]")
}

/// Appends the EVENT `payload` (see [`is_event`]) to `out` with `offset` as
/// its last argument, as a string: `42["name",{..}]` -> `42["name",{..},"17"]`.
/// This is where socket.io 4.6+ puts it, and where its client looks for it
/// (the last argument, when it is a string). False (and nothing appended)
/// for anything else.
pub fn write_with_offset(out: &mut Vec<u8>, payload: &[u8], offset: u64) -> bool {
    if !is_event(payload) {
        return false;
    }
    out.reserve(payload.len() + 24);
    out.extend_from_slice(&payload[..payload.len() - 1]);
    out.extend_from_slice(b",\"");
    out.extend_from_slice(offset.to_string().as_bytes());
    out.extend_from_slice(b"\"]");
    true
}

/// Socket.IO CONNECT_ERROR: `44{"message":".."}` on the default namespace,
/// `44/nsp,{"message":".."}` on another. `nsp` should come from
/// [`super::parse_sio`], which guarantees it holds no `,`.
pub fn connect_error(nsp: &str, message: &str) -> String {
    let mut s = String::with_capacity(20 + nsp.len() + message.len());
    s.push_str("44");
    push_nsp(&mut s, nsp);
    s.push_str("{\"message\":");
    escape_into_string(&mut s, message);
    s.push('}');
    s
}

/// Socket.IO DISCONNECT from the server: `41` or `41/nsp,`. The official
/// client does not reconnect after it ("io server disconnect").
pub fn disconnect(nsp: &str) -> String {
    let mut s = String::with_capacity(3 + nsp.len());
    s.push_str("41");
    push_nsp(&mut s, nsp);
    s
}

/// Socket.IO EVENT on the default namespace with one argument:
/// `42["name",<data_json>]`. `data_json` is already-serialized JSON.
pub fn event(name: &str, data_json: &str) -> String {
    let mut out = Vec::with_capacity(event_encoded_len(name, data_json.len()));
    write_event(&mut out, name, data_json.as_bytes());
    // Only valid UTF-8 went in: the escaped name and the caller's str.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends what [`event`] returns to `out` (typically right after a
/// WebSocket frame header sized with [`event_encoded_len`]).
pub fn write_event(out: &mut Vec<u8>, name: &str, data_json: &[u8]) {
    out.reserve(event_encoded_len(name, data_json.len()));
    out.extend_from_slice(b"42[");
    escape_into(out, name);
    out.push(b',');
    out.extend_from_slice(data_json);
    out.push(b']');
}

/// Exact byte length of [`write_event`]'s output, so a frame header can be
/// written before the payload.
pub fn event_encoded_len(name: &str, data_json_len: usize) -> usize {
    // `42[` + name + `,` + data + `]`
    3 + escaped_len(name) + 1 + data_json_len + 1
}

/// Socket.IO ACK answering a client's event id: `43<id><args_json>` (with a
/// `/nsp,` prefix off the default namespace). `args_json` is the serialized
/// JSON array of the ack's arguments, e.g. `[]` or `[{"ok":true}]`.
pub fn ack(nsp: &str, id: u64, args_json: &str) -> String {
    let mut s = String::with_capacity(24 + nsp.len() + args_json.len());
    s.push_str("43");
    push_nsp(&mut s, nsp);
    let _ = write!(s, "{id}");
    s.push_str(args_json);
    s
}

fn push_nsp(s: &mut String, nsp: &str) {
    if !nsp.is_empty() && nsp != DEFAULT_NSP {
        s.push_str(nsp);
        s.push(',');
    }
}

/// How a byte is written inside a JSON string, as serde_json does it:
/// `"` and `\` and the named controls get a short escape, other controls
/// `\u00XX`, everything else (non-ASCII included) goes through as is.
#[inline]
fn escape_of(b: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const U: [[u8; 6]; 32] = {
        let mut table = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            table[i] = [b'\\', b'u', b'0', b'0', HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        table
    };
    match b {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        b'\t' => Some(b"\\t"),
        0x08 => Some(b"\\b"),
        0x0c => Some(b"\\f"),
        0..=0x1f => Some(&U[b as usize]),
        _ => None,
    }
}

/// Writes `s` as a quoted JSON string.
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(esc) = escape_of(b) {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(esc);
            start = i + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn escape_into_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if let Some(esc) = escape_of(b) {
            // Escaped bytes are ASCII, so `start..i` lies on char boundaries.
            out.push_str(&s[start..i]);
            out.extend(esc.iter().map(|&c| c as char));
            start = i + 1;
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Length of `s` once quoted and escaped.
pub(crate) fn escaped_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| escape_of(b).map_or(1, <[u8]>::len))
        .sum::<usize>()
}
