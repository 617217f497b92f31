//! The Socket.IO v4 dialect (SPEC §3.4): a pure codec for Engine.IO v4 and
//! Socket.IO v5-protocol packets, carried one Engine.IO packet per WebSocket
//! text frame. No sockets, no timers, no state: the event loop owns those.
//!
//! What a connection looks like on the wire (captured from the official
//! `socket.io` 4.8 server and `socket.io-client` 4.8, see `tests.rs`):
//!
//! ```text
//! S->C 0{"sid":"..","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
//! C->S 40                      (or 40{"token":".."} when the client passes `auth`)
//! S->C 40{"sid":".."}           (or 44{"message":".."} to refuse; with
//!                               `auth.recover` 40{"sid":"..","pid":".."}
//!                               and every EVENT gets a last "offset" argument)
//! S->C 42["connection_established",{..}]
//! C->S 42["start_log_stream",{"container_id":".."}]
//! S->C 2                        every pingInterval; the client answers 3 and is
//! C->S 3                        dropped when no pong came within pingTimeout
//! C->S 41                       Socket.IO disconnect; Engine.IO close is 1
//! ```
//!
//! Invariants:
//! - Parsers never panic and never allocate more than a constant factor of
//!   their input; every refusal is a [`SioError`] whose message can be shown
//!   to the client as it is.
//! - Binary packets (Engine.IO `b..`, Socket.IO BINARY_EVENT/BINARY_ACK) are
//!   refused with [`SioError::BinaryUnsupported`]: the server only speaks text.
//! - Encoders produce complete Engine.IO text payloads (leading `4` for
//!   messages) whose JSON strings are escaped exactly like `serde_json` does,
//!   so a payload serialized once can be framed for many sockets.
//! - The default namespace is always spelled `/` in [`SioPacket`] and never
//!   written as a prefix on the wire.

mod decode;
mod encode;
mod query;
#[cfg(test)]
mod tests;

pub use decode::{PID_LEN, RecoveryAuth, parse_eio, parse_sio, recovery_auth};
pub use encode::{
    ack, connect_error, connect_ok, connect_ok_recoverable, disconnect, event, event_encoded_len,
    is_event, open_packet, write_event, write_with_offset,
};
pub use query::check_query;

/// Engine.IO PING, sent by the server every `ping_interval_ms`.
pub const PING: &str = "2";
/// Engine.IO PONG; a server answers a client's `2probe`-style ping with it.
pub const PONG_PACKET: &str = "3";
/// Engine.IO CLOSE: the transport is being closed on purpose.
pub const CLOSE: &str = "1";
/// Engine.IO NOOP.
pub const NOOP: &str = "6";
/// The default Socket.IO namespace.
pub const DEFAULT_NSP: &str = "/";
/// Longest namespace accepted, in bytes (the leading `/` included).
pub const MAX_NAMESPACE_LEN: usize = 256;

/// What the server advertises in its Engine.IO OPEN packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenParams {
    /// Engine.IO session id, unique per connection.
    pub sid: String,
    /// How often the server pings.
    pub ping_interval_ms: u64,
    /// How long the server waits for the pong (and the client for the next ping).
    pub ping_timeout_ms: u64,
    /// Largest Engine.IO packet the server accepts, in bytes.
    pub max_payload: usize,
}

/// One Engine.IO v4 packet received in a text frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EioPacket<'a> {
    /// `0`: only servers send it; a client sending it is a protocol error
    /// for the caller to report.
    Open,
    /// `1`: the client closes the session.
    Close,
    /// `2<data>`: a ping (clients only send `2probe` while upgrading).
    Ping(&'a str),
    /// `3<data>`: the answer to the server's ping.
    Pong(&'a str),
    /// `4<data>`: a Socket.IO packet, to be given to [`parse_sio`].
    Message(&'a str),
    /// `5`: transport upgrade (meaningless on a websocket-only session).
    Upgrade,
    /// `6`: no-op.
    Noop,
}

/// One Socket.IO packet received from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `0[/nsp,][{auth}]`: join a namespace, with the client's `auth` object.
    Connect {
        nsp: String,
        auth: Option<serde_json::Value>,
    },
    /// `1[/nsp,]`: leave a namespace.
    Disconnect { nsp: String },
    /// `2[/nsp,][id]["name",args...]`: an event; `id` asks for an ack.
    Event {
        nsp: String,
        id: Option<u64>,
        name: String,
        args: Vec<serde_json::Value>,
    },
    /// `3[/nsp,]id[args...]`: the answer to one of the server's acks.
    Ack {
        nsp: String,
        id: u64,
        args: Vec<serde_json::Value>,
    },
}

impl SioPacket {
    /// The namespace the packet is addressed to (`/` for the default one).
    pub fn nsp(&self) -> &str {
        match self {
            SioPacket::Connect { nsp, .. }
            | SioPacket::Disconnect { nsp }
            | SioPacket::Event { nsp, .. }
            | SioPacket::Ack { nsp, .. } => nsp,
        }
    }
}

/// Why a client's packet was refused. None of these is fatal to the daemon;
/// the caller decides whether the connection survives (SPEC §4: answer with
/// an `error` event and keep the socket open).
#[derive(Debug, thiserror::Error)]
pub enum SioError {
    #[error("empty Engine.IO packet")]
    EmptyPacket,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownEioType(char),
    #[error("malformed Engine.IO packet: {0}")]
    MalformedEio(&'static str),
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownSioType(char),
    #[error("malformed Socket.IO packet: {0}")]
    Malformed(&'static str),
    #[error("malformed Socket.IO packet: invalid JSON payload: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("binary attachments are not supported: send JSON-only events")]
    BinaryUnsupported,
    #[error("invalid namespace: {0}")]
    InvalidNamespace(&'static str),
    #[error("CONNECT_ERROR may only be sent by the server")]
    ConnectErrorFromClient,
    #[error("event name {0:?} is reserved by Socket.IO")]
    ReservedEvent(String),
}
