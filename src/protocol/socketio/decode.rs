//! Decoding what clients send: Engine.IO packets, then the Socket.IO packet
//! inside a MESSAGE. Strict where the official parser is strict (payload
//! shapes, reserved event names) and stricter where it is lax (namespaces,
//! trailing data, ack ids that do not fit a u64). Never panics: every slice
//! index below is just after an ASCII byte.

use serde_json::Value;

use super::{DEFAULT_NSP, EioPacket, MAX_NAMESPACE_LEN, SioError, SioPacket};

/// Event names the official parser refuses, because the client library uses
/// them for its own life-cycle events.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Splits one Engine.IO v4 text packet into its type and data.
///
/// # Errors
/// [`SioError::EmptyPacket`], [`SioError::UnknownEioType`],
/// [`SioError::BinaryUnsupported`] for base64 `b` packets, and
/// [`SioError::MalformedEio`] when a packet that carries no data has some.
pub fn parse_eio(text: &str) -> Result<EioPacket<'_>, SioError> {
    let Some(&kind) = text.as_bytes().first() else {
        return Err(SioError::EmptyPacket);
    };
    if !matches!(kind, b'0'..=b'6' | b'b') {
        let c = text.chars().next().unwrap_or('\u{fffd}');
        return Err(SioError::UnknownEioType(c));
    }
    // `kind` is ASCII, so byte 1 is a char boundary.
    let data = &text[1..];
    let no_data = |packet: EioPacket<'static>, what: &'static str| {
        if data.is_empty() {
            Ok(packet)
        } else {
            Err(SioError::MalformedEio(what))
        }
    };
    match kind {
        b'0' => no_data(EioPacket::Open, "OPEN carries no data"),
        b'1' => no_data(EioPacket::Close, "CLOSE carries no data"),
        b'2' => Ok(EioPacket::Ping(data)),
        b'3' => Ok(EioPacket::Pong(data)),
        b'4' => Ok(EioPacket::Message(data)),
        b'5' => no_data(EioPacket::Upgrade, "UPGRADE carries no data"),
        b'6' => no_data(EioPacket::Noop, "NOOP carries no data"),
        _ => Err(SioError::BinaryUnsupported),
    }
}

/// Decodes one Socket.IO packet: `msg` is an Engine.IO MESSAGE's data (what
/// follows the `4`).
///
/// # Errors
/// [`SioError::BinaryUnsupported`] for BINARY_EVENT/BINARY_ACK,
/// [`SioError::ConnectErrorFromClient`] for CONNECT_ERROR,
/// [`SioError::UnknownSioType`], [`SioError::InvalidNamespace`],
/// [`SioError::ReservedEvent`], [`SioError::InvalidJson`] and
/// [`SioError::Malformed`] for every other shape the protocol does not allow.
pub fn parse_sio(msg: &str) -> Result<SioPacket, SioError> {
    let Some(&kind) = msg.as_bytes().first() else {
        return Err(SioError::Malformed("empty packet"));
    };
    match kind {
        b'0'..=b'3' => {}
        b'4' => return Err(SioError::ConnectErrorFromClient),
        b'5' | b'6' => return Err(SioError::BinaryUnsupported),
        _ => {
            let c = msg.chars().next().unwrap_or('\u{fffd}');
            return Err(SioError::UnknownSioType(c));
        }
    }
    let (nsp, rest) = split_namespace(&msg[1..])?;
    let (id, payload) = split_ack_id(rest)?;
    let nsp = nsp.to_owned();
    match kind {
        b'0' => {
            if id.is_some() {
                return Err(SioError::Malformed("CONNECT carries no ack id"));
            }
            if payload.is_empty() {
                return Ok(SioPacket::Connect { nsp, auth: None });
            }
            match serde_json::from_str::<Value>(payload)? {
                auth @ Value::Object(_) => Ok(SioPacket::Connect {
                    nsp,
                    auth: Some(auth),
                }),
                _ => Err(SioError::Malformed("CONNECT payload must be a JSON object")),
            }
        }
        b'1' => {
            if id.is_some() || !payload.is_empty() {
                return Err(SioError::Malformed("DISCONNECT carries no data"));
            }
            Ok(SioPacket::Disconnect { nsp })
        }
        b'2' => {
            let mut args = json_array(payload, "EVENT payload must be a JSON array")?;
            if args.is_empty() {
                return Err(SioError::Malformed(
                    "EVENT payload must start with the event name",
                ));
            }
            let name = match args.remove(0) {
                Value::String(s) => s,
                // The official parser allows numeric event names.
                Value::Number(n) => n.to_string(),
                _ => return Err(SioError::Malformed("event name must be a string")),
            };
            if RESERVED_EVENTS.contains(&name.as_str()) {
                return Err(SioError::ReservedEvent(name));
            }
            Ok(SioPacket::Event {
                nsp,
                id,
                name,
                args,
            })
        }
        _ => {
            let Some(id) = id else {
                return Err(SioError::Malformed("ACK needs an ack id"));
            };
            let args = json_array(payload, "ACK payload must be a JSON array")?;
            Ok(SioPacket::Ack { nsp, id, args })
        }
    }
}

/// `/nsp,rest` -> (`/nsp`, `rest`); anything not starting with `/` is in the
/// default namespace. Like the official parser, a namespace that runs to
/// the end of the packet needs no comma (`41/admin`).
fn split_namespace(s: &str) -> Result<(&str, &str), SioError> {
    if !s.starts_with('/') {
        return Ok((DEFAULT_NSP, s));
    }
    let (nsp, rest) = match s.find(',') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    validate_namespace(nsp)?;
    Ok((nsp, rest))
}

/// A namespace is `/` plus printable characters that cannot be confused
/// with the packet's own syntax, at most [`MAX_NAMESPACE_LEN`] bytes.
fn validate_namespace(nsp: &str) -> Result<(), SioError> {
    if nsp.len() > MAX_NAMESPACE_LEN {
        return Err(SioError::InvalidNamespace("longer than 256 bytes"));
    }
    let forbidden = |c: char| c.is_control() || c.is_whitespace() || "\"[]{}?#\\".contains(c);
    if nsp.chars().any(forbidden) {
        return Err(SioError::InvalidNamespace(
            "contains whitespace, control or reserved characters",
        ));
    }
    Ok(())
}

/// Leading ASCII digits are the ack id (the JSON payload of every packet
/// type that may follow starts with `[` or `{`).
fn split_ack_id(s: &str) -> Result<(Option<u64>, &str), SioError> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Ok((None, s));
    }
    let (id, rest) = s.split_at(digits);
    let id = id
        .parse::<u64>()
        .map_err(|_| SioError::Malformed("ack id out of range"))?;
    Ok((Some(id), rest))
}

fn json_array(payload: &str, shape: &'static str) -> Result<Vec<Value>, SioError> {
    if payload.is_empty() {
        return Err(SioError::Malformed(shape));
    }
    match serde_json::from_str::<Value>(payload)? {
        Value::Array(items) => Ok(items),
        _ => Err(SioError::Malformed(shape)),
    }
}

/// Length of a session id (`pid`) this server hands out: 32 lowercase hex
/// digits (a random v4 UUID, simple form).
pub const PID_LEN: usize = 32;

/// What a CONNECT's `auth` asks of connection state recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryAuth {
    /// Unless `auth.recover === false`: the client handles offsets on its
    /// events (the official client, 4.6+, and any client that ignores extra
    /// arguments), so it gets a `pid` and offsets. Clients whose handlers
    /// take exactly one argument (python-socketio) send `recover: false`.
    pub recover: bool,
    /// `auth.pid` and `auth.offset`, as the official client sends them when
    /// it reconnects: a well-formed pid and a decimal offset, or nothing.
    pub resume: Option<(String, u64)>,
}

impl RecoveryAuth {
    /// No recovery: no `pid`, no offsets (`recover: false`, or a wire that
    /// does not offer it).
    pub const OFF: RecoveryAuth = RecoveryAuth {
        recover: false,
        resume: None,
    };
}

/// No auth, or an auth without `recover: false`: a fresh recoverable session.
impl Default for RecoveryAuth {
    fn default() -> Self {
        Self {
            recover: true,
            resume: None,
        }
    }
}

/// Reads `recover`, `pid` and `offset` from a CONNECT's auth object. Peer
/// input: anything malformed (a pid of the wrong shape, an offset that is
/// not 1 to 20 decimal digits or does not fit a u64) reads as no resume, so
/// the client simply gets a fresh session.
pub fn recovery_auth(auth: Option<&Value>) -> RecoveryAuth {
    let Some(Value::Object(a)) = auth else {
        return RecoveryAuth::default();
    };
    let recover = a.get("recover") != Some(&Value::Bool(false));
    let pid = match a.get("pid") {
        Some(Value::String(p))
            if p.len() == PID_LEN
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Some(p.clone())
        }
        _ => None,
    };
    let offset = match a.get("offset") {
        Some(Value::String(o))
            if (1..=20).contains(&o.len()) && o.bytes().all(|b| b.is_ascii_digit()) =>
        {
            o.parse::<u64>().ok()
        }
        _ => None,
    };
    RecoveryAuth {
        recover,
        resume: pid.zip(offset),
    }
}
