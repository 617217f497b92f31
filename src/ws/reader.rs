//! Reading client messages out of a connection's input buffer (server role).
//!
//! [`MessageReader::read`] consumes bytes from the front of the `BytesMut` the event loop
//! reads into. Data payloads are moved out of that buffer as soon as they arrive (unmasked
//! on the way into the message buffer), so the input buffer never holds more than one
//! incomplete header or one incomplete control frame: after `read` returns `Ok(None)`,
//! fewer than [`MAX_UNCONSUMED`] bytes are left in it.
//!
//! Memory is bounded by `max_message_bytes` per connection: a data frame is refused from its
//! header when the message it belongs to would pass the limit, and the message buffer only
//! grows by bytes actually received.
//!
//! After `read` returns an error or [`Incoming::Close`], the connection is done: the caller
//! answers with a close frame and must not call `read` again.
//!
//! On a socket that negotiated permessage-deflate ([`MessageReader::with_deflate`]), a
//! message whose first frame has RSV1 set is collected compressed (same limit on its
//! compressed size) and inflated whole by the loop's shared [`Inflater`] once its last
//! frame is in, its output capped at the same limit; text is validated after inflating.

use bytes::{Buf, BytesMut};

use super::deflate::{Inflater, RSV1};
use super::mask::apply_mask;
use super::{MAX_CONTROL_PAYLOAD, OpCode, WsError, close_code};

/// Upper bound on the bytes `read` leaves in the buffer when it returns `Ok(None)`:
/// the largest control frame (6-byte header with mask key + 125 bytes) is only consumed
/// once complete, so at most one byte less than it can be waiting.
pub const MAX_UNCONSUMED: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// One complete message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// `None` when the close frame had no payload (no status code).
    Close(Option<(u16, String)>),
}

/// A parsed frame header; the payload has not been looked at yet.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    /// RSV1: the message this frame starts is compressed.
    compressed: bool,
    opcode: OpCode,
    mask: [u8; 4],
    len: u64,
    header_len: usize,
}

/// Progress through the payload of the current data frame.
#[derive(Debug)]
struct FrameProgress {
    remaining: u64,
    mask: [u8; 4],
    mask_pos: usize,
    fin: bool,
}

/// A data message being assembled from one or more frames.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// RSV1 was set on the first frame: `data` is deflate, inflated in `finish`.
    compressed: bool,
    data: Vec<u8>,
    /// `data[..valid_up_to]` is known to be valid UTF-8 (text messages only); what follows
    /// is at most an incomplete sequence of up to 3 bytes waiting for the next piece.
    valid_up_to: usize,
    /// Set while inside a frame's payload; `None` between the fragments of a message.
    frame: Option<FrameProgress>,
}

impl Partial {
    /// Validates the bytes appended since the last check. An incomplete sequence at the end
    /// is kept for later; an impossible byte fails now, which is what lets a connection
    /// sending invalid text be failed at the first bad byte.
    fn check_utf8(&mut self) -> Result<(), WsError> {
        match std::str::from_utf8(&self.data[self.valid_up_to..]) {
            Ok(_) => self.valid_up_to = self.data.len(),
            Err(e) if e.error_len().is_some() => return Err(WsError::InvalidUtf8),
            Err(e) => self.valid_up_to += e.valid_up_to(),
        }
        Ok(())
    }

    fn finish(mut self, inflater: Option<&mut Inflater>, max: usize) -> Result<Incoming, WsError> {
        if self.compressed {
            // `with_deflate` is the only way to get here; without an inflater the
            // RSV1 bit could not have been negotiated.
            let inflater = inflater.ok_or(WsError::ReservedBits(RSV1 >> 4))?;
            self.data = inflater.inflate(&self.data, max)?;
        }
        if self.text {
            // One more full pass: cheap next to the copy we already made, and it keeps the
            // conversion safe. It also catches an incomplete sequence at the very end.
            String::from_utf8(self.data)
                .map(Incoming::Text)
                .map_err(|_| WsError::InvalidUtf8)
        } else {
            Ok(Incoming::Binary(self.data))
        }
    }
}

/// Reads client frames from an input buffer. Server role: client frames MUST be masked.
#[derive(Debug)]
pub struct MessageReader {
    max_message_bytes: usize,
    /// permessage-deflate was negotiated: RSV1 is allowed on a message's first frame.
    deflate: bool,
    message: Option<Partial>,
}

impl MessageReader {
    /// A reader refusing (1009) any data message larger than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        MessageReader {
            max_message_bytes,
            deflate: false,
            message: None,
        }
    }

    /// A reader for a socket that negotiated permessage-deflate: compressed messages
    /// are inflated by [`MessageReader::read_inflating`], up to the same limit.
    pub fn with_deflate(max_message_bytes: usize) -> Self {
        MessageReader {
            deflate: true,
            ..MessageReader::new(max_message_bytes)
        }
    }

    /// Bytes of the data message being assembled (for memory accounting).
    pub fn pending_message_bytes(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.data.len())
    }

    /// Whether a data message has been started and not finished (fragmented or partial).
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }

    /// Consumes bytes from the front of `buf` and returns the next complete message or
    /// control frame; `Ok(None)` means more bytes are needed. Control frames may arrive
    /// between the fragments of a data message and are returned as soon as complete.
    /// Call it in a loop until `Ok(None)`: one buffer may hold many messages.
    ///
    /// # Errors
    ///
    /// Any [`WsError`] is a protocol violation: close the connection with
    /// [`WsError::close_code`] and stop reading.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, WsError> {
        self.read_inflating(buf, None)
    }

    /// [`MessageReader::read`], inflating compressed messages with `inflater` (the
    /// loop's, shared by every socket: no context is kept between messages).
    ///
    /// # Errors
    ///
    /// As `read`; also 1009 for a message that inflates past the limit and 1007 for
    /// data that is not deflate.
    pub fn read_inflating(
        &mut self,
        buf: &mut BytesMut,
        mut inflater: Option<&mut Inflater>,
    ) -> Result<Option<Incoming>, WsError> {
        loop {
            if let Some(msg) = &mut self.message
                && let Some(frame) = &mut msg.frame
            {
                let n = frame.remaining.min(buf.len() as u64) as usize;
                if n > 0 {
                    let start = msg.data.len();
                    if start + n > msg.data.capacity() {
                        // Grow geometrically but never past the limit (the header check
                        // guarantees `start + n <= max`), so capacity stays within it too.
                        let target = (msg.data.capacity() * 2)
                            .min(self.max_message_bytes)
                            .max(start + n);
                        msg.data.reserve_exact(target - start);
                    }
                    msg.data.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    frame.mask_pos = apply_mask(&mut msg.data[start..], frame.mask, frame.mask_pos);
                    frame.remaining -= n as u64;
                }
                let remaining = frame.remaining;
                let complete = remaining == 0 && frame.fin;
                // A message that arrives whole is validated once, in `finish`; one that
                // arrives in pieces is validated piece by piece to fail fast.
                if msg.text && !msg.compressed && n > 0 && !complete {
                    msg.check_utf8()?;
                }
                if remaining > 0 {
                    return Ok(None);
                }
                msg.frame = None;
                if !complete {
                    continue;
                }
                return match self.message.take() {
                    Some(msg) => msg
                        .finish(inflater.take(), self.max_message_bytes)
                        .map(Some),
                    None => Ok(None),
                };
            }

            let Some(h) = parse_header(buf, self.deflate)? else {
                return Ok(None);
            };

            if h.opcode.is_control() {
                // `parse_header` has checked len <= 125: waiting for it all is bounded.
                let total = h.header_len + h.len as usize;
                if buf.len() < total {
                    return Ok(None);
                }
                buf.advance(h.header_len);
                let mut payload = buf.split_to(h.len as usize).to_vec();
                apply_mask(&mut payload, h.mask, 0);
                return control(h.opcode, payload).map(Some);
            }

            let so_far = match (h.opcode, &self.message) {
                (OpCode::Continuation, None) => return Err(WsError::UnexpectedContinuation),
                (OpCode::Continuation, Some(m)) => m.data.len() as u64,
                (_, Some(_)) => return Err(WsError::ExpectedContinuation),
                (_, None) => 0,
            };
            let size = so_far.saturating_add(h.len);
            if size > self.max_message_bytes as u64 {
                return Err(WsError::MessageTooBig {
                    size,
                    max: self.max_message_bytes,
                });
            }
            buf.advance(h.header_len);
            let progress = FrameProgress {
                remaining: h.len,
                mask: h.mask,
                mask_pos: 0,
                fin: h.fin,
            };
            match &mut self.message {
                Some(msg) => msg.frame = Some(progress),
                None => {
                    self.message = Some(Partial {
                        text: h.opcode == OpCode::Text,
                        compressed: h.compressed,
                        data: Vec::new(),
                        valid_up_to: 0,
                        frame: Some(progress),
                    })
                }
            }
        }
    }
}

/// Parses the header at the front of `buf` without consuming it. `Ok(None)` until the
/// whole header is there; violations visible in the header fail as early as possible.
fn parse_header(buf: &[u8], deflate: bool) -> Result<Option<Header>, WsError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let allowed = if deflate { RSV1 } else { 0 };
    let rsv = (b0 >> 4) & 0x7;
    if b0 & 0x70 & !allowed != 0 {
        return Err(WsError::ReservedBits(rsv));
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(WsError::UnknownOpcode(b0 & 0x0F))?;
    let compressed = b0 & RSV1 != 0;
    if compressed && (opcode.is_control() || opcode == OpCode::Continuation) {
        return Err(WsError::MisplacedRsv1);
    }
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(WsError::FragmentedControl);
        }
        if len7 as usize > MAX_CONTROL_PAYLOAD {
            // 126/127 announce an extended length, which is > 125 (or non-minimal).
            return Err(WsError::ControlTooLong(len7 as u64));
        }
    }
    let (len, ext) = match len7 {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u16::from_be_bytes([bytes[0], bytes[1]]) as u64, 2)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(WsError::LengthOverflow);
            }
            (len, 8)
        }
        n => (n as u64, 0),
    };
    let header_len = 2 + ext + 4;
    let Some(key) = buf.get(2 + ext..header_len) else {
        return Ok(None);
    };
    let mask = [key[0], key[1], key[2], key[3]];
    Ok(Some(Header {
        fin,
        compressed,
        opcode,
        mask,
        len,
        header_len,
    }))
}

/// Interprets a complete, unmasked control frame payload.
fn control(opcode: OpCode, payload: Vec<u8>) -> Result<Incoming, WsError> {
    match opcode {
        OpCode::Ping => Ok(Incoming::Ping(payload)),
        OpCode::Pong => Ok(Incoming::Pong(payload)),
        _ => match *payload.as_slice() {
            [] => Ok(Incoming::Close(None)),
            [_] => Err(WsError::CloseTooShort),
            [hi, lo, ref reason @ ..] => {
                let code = u16::from_be_bytes([hi, lo]);
                if !close_code::is_valid(code) {
                    return Err(WsError::InvalidCloseCode(code));
                }
                let reason =
                    std::str::from_utf8(reason).map_err(|_| WsError::InvalidCloseReason)?;
                Ok(Incoming::Close(Some((code, reason.to_owned()))))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::ws::encode_client_frame;

    #[test]
    fn message_buffer_capacity_never_exceeds_the_limit() {
        let max = 1000;
        let mut reader = MessageReader::new(max);
        let mut buf =
            BytesMut::from(&encode_client_frame(OpCode::Binary, &[1; 3], false, [9; 4])[..]);
        assert_eq!(reader.read(&mut buf).unwrap(), None);
        let mut total = 3;
        while total < max {
            let n = (max - total).min(7);
            let fin = total + n == max;
            let frame = encode_client_frame(OpCode::Continuation, &vec![2; n], fin, [9; 4]);
            // Feed each frame in two pieces to exercise growth inside a frame too.
            let (a, b) = frame.split_at(frame.len() / 2 + 1);
            buf.extend_from_slice(a);
            assert_eq!(reader.read(&mut buf).unwrap(), None);
            let cap = reader.message.as_ref().map_or(0, |m| m.data.capacity());
            assert!(cap <= max, "capacity {cap}");
            buf.extend_from_slice(b);
            total += n;
            let got = reader.read(&mut buf).unwrap();
            if fin {
                let Some(Incoming::Binary(data)) = got else {
                    panic!("expected the message, got {got:?}");
                };
                assert_eq!(data.len(), max);
                assert!(data.capacity() <= max);
            } else {
                assert_eq!(got, None);
                let cap = reader.message.as_ref().map_or(0, |m| m.data.capacity());
                assert!(cap <= max, "capacity {cap}");
            }
        }
    }

    /// A client frame with RSV1 set (a compressed message's first frame).
    fn rsv1(mut frame: Vec<u8>) -> Vec<u8> {
        frame[0] |= RSV1;
        frame
    }

    fn deflated(payload: &[u8]) -> Vec<u8> {
        let mut d = crate::ws::deflate::Deflater::default();
        let f = d
            .compress(OpCode::Text, payload, false)
            .expect("compressible");
        crate::ws::frame_payload(&f).to_vec()
    }

    #[test]
    fn compressed_messages_are_inflated_whole_even_when_fragmented() {
        let text = "hello deflate ".repeat(100);
        let z = deflated(text.as_bytes());
        let mut inflater = Inflater::default();
        let mut reader = MessageReader::with_deflate(1 << 16);
        let (a, b) = z.split_at(z.len() / 2);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&rsv1(encode_client_frame(OpCode::Text, a, false, [1; 4])));
        buf.extend_from_slice(&encode_client_frame(OpCode::Ping, b"p", true, [2; 4]));
        buf.extend_from_slice(&encode_client_frame(OpCode::Continuation, b, true, [3; 4]));
        buf.extend_from_slice(&encode_client_frame(OpCode::Text, b"plain", true, [4; 4]));
        let mut got = Vec::new();
        while let Some(m) = reader
            .read_inflating(&mut buf, Some(&mut inflater))
            .unwrap()
        {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![
                Incoming::Ping(b"p".to_vec()),
                Incoming::Text(text),
                Incoming::Text("plain".into())
            ]
        );
    }

    #[test]
    fn rsv1_rules() {
        let z = deflated(&[b'x'; 400]);
        let read = |deflate: bool, bytes: Vec<u8>| {
            let mut reader = if deflate {
                MessageReader::with_deflate(1000)
            } else {
                MessageReader::new(1000)
            };
            let mut inflater = Inflater::default();
            let mut buf = BytesMut::from(&bytes[..]);
            reader.read_inflating(&mut buf, Some(&mut inflater))
        };
        // Not negotiated: RSV1 is a protocol error.
        let e = read(
            false,
            rsv1(encode_client_frame(OpCode::Text, &z, true, [1; 4])),
        );
        assert_eq!(e.unwrap_err().close_code(), close_code::PROTOCOL_ERROR);
        // RSV2/RSV3 stay errors on a deflate socket.
        let mut f = encode_client_frame(OpCode::Text, b"a", true, [1; 4]);
        f[0] |= 0x20;
        assert_eq!(read(true, f).unwrap_err(), WsError::ReservedBits(2));
        // RSV1 on a control frame or a continuation.
        let e = read(
            true,
            rsv1(encode_client_frame(OpCode::Ping, b"", true, [1; 4])),
        );
        assert_eq!(e.unwrap_err(), WsError::MisplacedRsv1);
        let mut two = rsv1(encode_client_frame(OpCode::Text, &z[..3], false, [1; 4]));
        two.extend(rsv1(encode_client_frame(
            OpCode::Continuation,
            &z[3..],
            true,
            [1; 4],
        )));
        assert_eq!(read(true, two).unwrap_err(), WsError::MisplacedRsv1);
        // A zip bomb stops at the limit with 1009; bad data is 1007.
        let bomb = deflated(&[b'x'; 100_000]);
        assert!(bomb.len() < 1000);
        let e = read(
            true,
            rsv1(encode_client_frame(OpCode::Text, &bomb, true, [1; 4])),
        );
        assert_eq!(e.unwrap_err().close_code(), close_code::MESSAGE_TOO_BIG);
        let e = read(
            true,
            rsv1(encode_client_frame(
                OpCode::Binary,
                &[0xff; 9],
                true,
                [1; 4],
            )),
        );
        assert_eq!(e.unwrap_err().close_code(), close_code::INVALID_PAYLOAD);
        // Compressed invalid UTF-8 is found after inflating.
        let bad = {
            let mut d = crate::ws::deflate::Deflater::default();
            let f = d.compress(OpCode::Text, &[0xC3; 300], false).unwrap();
            crate::ws::frame_payload(&f).to_vec()
        };
        let e = read(
            true,
            rsv1(encode_client_frame(OpCode::Text, &bad, true, [1; 4])),
        );
        assert_eq!(e.unwrap_err().close_code(), close_code::INVALID_PAYLOAD);
    }
}
