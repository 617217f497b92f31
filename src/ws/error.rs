//! Protocol violations found while reading client frames.
//!
//! Every variant is fatal for the connection that produced it: the caller sends a close
//! frame with [`WsError::close_code`] and stops reading from that socket. None of them is
//! fatal for the daemon.

use super::close_code;

/// A client broke RFC 6455; the connection must be failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("could not read frame: reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBits(u8),
    #[error("could not read frame: reserved opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("could not read frame: client frames must be masked")]
    Unmasked,
    #[error("could not read frame: 64-bit payload length has its most significant bit set")]
    LengthOverflow,
    #[error("could not read control frame: payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    #[error("could not read control frame: control frames must not be fragmented")]
    FragmentedControl,
    #[error("could not read frame: continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("could not read frame: new data frame while a fragmented message is still open")]
    ExpectedContinuation,
    #[error("could not read message: {size} bytes exceed the limit of {max}")]
    MessageTooBig { size: u64, max: usize },
    #[error("could not read text message: invalid UTF-8")]
    InvalidUtf8,
    #[error("could not read close frame: a 1-byte payload cannot hold a status code")]
    CloseTooShort,
    #[error("could not read close frame: status code {0} is not allowed on the wire")]
    InvalidCloseCode(u16),
    #[error("could not read close frame: reason is not valid UTF-8")]
    InvalidCloseReason,
    #[error(
        "could not read frame: RSV1 (compressed) is only allowed on the first frame of a data message"
    )]
    MisplacedRsv1,
    #[error("could not inflate message: not valid deflate data")]
    BadDeflate,
}

impl WsError {
    /// The status code to put in the close frame that answers this violation:
    /// 1009 for an oversized message (also once inflated), 1007 for invalid UTF-8 (text or
    /// close reason) or invalid deflate data,
    /// 1002 for everything else.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::MessageTooBig { .. } => close_code::MESSAGE_TOO_BIG,
            WsError::InvalidUtf8 | WsError::InvalidCloseReason | WsError::BadDeflate => {
                close_code::INVALID_PAYLOAD
            }
            WsError::ReservedBits(_)
            | WsError::UnknownOpcode(_)
            | WsError::Unmasked
            | WsError::LengthOverflow
            | WsError::ControlTooLong(_)
            | WsError::FragmentedControl
            | WsError::UnexpectedContinuation
            | WsError::ExpectedContinuation
            | WsError::CloseTooShort
            | WsError::InvalidCloseCode(_)
            | WsError::MisplacedRsv1 => close_code::PROTOCOL_ERROR,
        }
    }
}
