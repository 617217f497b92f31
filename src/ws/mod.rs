//! WebSocket frames (RFC 6455): encoding server frames and reading client messages.
//!
//! This module is pure: it never touches a socket. The event loop reads bytes into a
//! `BytesMut` and hands it to [`MessageReader::read`]; it sends [`Frame`]s through the
//! per-socket queue in [`crate::writer`].
//!
//! Invariants:
//! - Every server frame is unmasked with FIN set and carries header and payload in one
//!   allocation ([`Frame`] = `Bytes`), so one frame can be shared by any number of sockets.
//! - The reader is the server side: client frames must be masked, the only extension is
//!   permessage-deflate ([`deflate`]: RSV1 on the first frame of a data message, only on a
//!   socket that negotiated it; other RSV bits must be zero), and every protocol violation
//!   maps to the close code the RFC asks for ([`WsError::close_code`]).
//! - The reader never allocates from an unchecked length: a data message is refused with
//!   1009 as soon as a frame header says it would exceed the limit, and its payload is
//!   appended only as bytes actually arrive.
//! - Text is validated as it arrives, so invalid UTF-8 fails the connection at the first
//!   bad byte, not at the end of the message.

pub mod deflate;
mod error;
mod frame;
mod mask;
mod reader;

#[cfg(test)]
mod tests;

pub use error::WsError;
pub use frame::{
    HEADROOM, begin_frame, close_frame, encode_client_frame, encode_frame, finish_frame,
    frame_payload, header_len, ping_frame, pong_frame, text_frame, write_header,
};
pub use mask::apply_mask;
pub use reader::{Incoming, MAX_UNCONSUMED, MessageReader};

/// A complete frame ready to go on the wire, shared by reference among many sockets.
pub type Frame = bytes::Bytes;

/// Largest payload of a control frame (close, ping, pong), RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Frame opcodes (RFC 6455 §5.2). Values 3–7 and 0xB–0xF are reserved and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// The 4-bit value on the wire.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Parses the low 4 bits of a frame's first byte; `None` for reserved values.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented, allowed between the
    /// fragments of a data message.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// Close status codes the daemon sends or checks (RFC 6455 §7.4.1, IANA registry).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;

    /// Whether a peer may send `code` in a close frame.
    ///
    /// 1000–1003 and 1007–1011 are the RFC's; 1012–1014 were registered later with IANA
    /// (service restart, try again later, bad gateway) and Autobahn accepts them; 3000–4999
    /// belong to libraries and applications. 1004–1006 and 1015 are reserved and must never
    /// appear on the wire; everything else is unassigned.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}
