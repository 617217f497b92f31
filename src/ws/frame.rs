//! Encoding frames: server→client (unmasked, FIN set) and client→server (masked, for
//! tests and the load generator).
//!
//! Server frames are built with their header and payload in one exactly-sized allocation,
//! so a [`Frame`] can be cloned into thousands of socket queues by bumping a refcount.
//! [`begin_frame`]/[`finish_frame`] let a caller serialize a payload (JSON) straight into
//! the frame's buffer, then put the header in front of it without moving the payload.

use bytes::Buf;

use super::mask::apply_mask;
use super::{Frame, MAX_CONTROL_PAYLOAD, OpCode};

/// Bytes reserved in front of the payload by [`begin_frame`]: the longest server header
/// (2 bytes + 8-byte extended length; server frames carry no mask key).
pub const HEADROOM: usize = 10;

/// Header length of an unmasked frame with a `len`-byte payload: 2, 4 or 10.
pub fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= 0xFFFF {
        4
    } else {
        10
    }
}

/// Builds the unmasked header (FIN set) in a stack buffer; returns it and its length.
fn header_bytes(opcode: OpCode, len: usize) -> ([u8; HEADROOM], usize) {
    let mut h = [0u8; HEADROOM];
    h[0] = 0x80 | opcode.as_u8();
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= 0xFFFF {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Writes the header of a server frame (FIN set, unmasked) carrying `len` payload bytes.
/// Lets a caller that knows the length append the payload right after it, no second copy.
pub fn write_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let (h, n) = header_bytes(opcode, len);
    out.extend_from_slice(&h[..n]);
}

/// Server→client frame (never masked, FIN set): header + payload in one allocation.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Frame {
    let mut out = Vec::with_capacity(header_len(payload.len()) + payload.len());
    write_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    Frame::from(out)
}

/// A text frame; `payload` must already be UTF-8 (it is what the caller serialized).
pub fn text_frame(payload: &[u8]) -> Frame {
    encode_frame(OpCode::Text, payload)
}

/// A close frame with `code` and `reason`; the reason is cut to 123 bytes on a char
/// boundary so the payload fits the 125-byte limit of control frames.
pub fn close_frame(code: u16, reason: &str) -> Frame {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OpCode::Close, &payload[..2 + end])
}

/// A ping frame; the payload is cut to 125 bytes.
pub fn ping_frame(payload: &[u8]) -> Frame {
    encode_frame(
        OpCode::Ping,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

/// A pong frame echoing `payload` (a ping's payload, at most 125 bytes; longer is cut).
pub fn pong_frame(payload: &[u8]) -> Frame {
    encode_frame(
        OpCode::Pong,
        &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)],
    )
}

/// Starts a frame buffer: [`HEADROOM`] placeholder bytes, then room for `payload_hint`
/// bytes. Append the payload (e.g. `serde_json::to_writer(&mut buf, ..)`), then call
/// [`finish_frame`].
pub fn begin_frame(payload_hint: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADROOM + payload_hint);
    buf.resize(HEADROOM, 0);
    buf
}

/// Turns a buffer from [`begin_frame`] into a frame: writes the header into the end of
/// the headroom and returns a view starting at the header. The payload is not moved.
/// A buffer shorter than [`HEADROOM`] (not from `begin_frame`) yields an empty frame.
pub fn finish_frame(mut buf: Vec<u8>, opcode: OpCode) -> Frame {
    debug_assert!(
        buf.len() >= HEADROOM,
        "finish_frame needs a begin_frame buffer"
    );
    if buf.len() < HEADROOM {
        return encode_frame(opcode, &[]);
    }
    let len = buf.len() - HEADROOM;
    let (h, n) = header_bytes(opcode, len);
    let start = HEADROOM - n;
    buf[start..HEADROOM].copy_from_slice(&h[..n]);
    let mut frame = Frame::from(buf);
    // `advance` only moves the view; `slice` would promote the buffer to a shared one.
    frame.advance(start);
    frame
}

/// The payload of an unmasked (server) frame built here: the bytes after its
/// header. Empty for anything shorter than its header says.
pub fn frame_payload(frame: &[u8]) -> &[u8] {
    if frame.len() < 2 {
        return &[];
    }
    let skip = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(skip..).unwrap_or(&[])
}

/// Client→server frame (masked with `mask`), used by tests and the load generator.
/// `fin = false` produces a fragment; follow it with [`OpCode::Continuation`] frames.
pub fn encode_client_frame(opcode: OpCode, payload: &[u8], fin: bool, mask: [u8; 4]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(header_len(len) + 4 + len);
    out.push(if fin { 0x80 } else { 0 } | opcode.as_u8());
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_uses_7_16_and_64_bit_lengths_at_the_rfc_boundaries() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x81, 0]),
            (125, &[0x81, 125]),
            (126, &[0x81, 126, 0, 126]),
            (65535, &[0x81, 126, 0xff, 0xff]),
            (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ];
        for (len, want) in cases {
            let mut out = Vec::new();
            write_header(&mut out, OpCode::Text, *len);
            assert_eq!(&out[..], *want, "len {len}");
            assert_eq!(header_len(*len), want.len());
        }
    }

    #[test]
    fn encode_frame_puts_fin_opcode_length_and_payload_in_one_buffer() {
        let f = encode_frame(OpCode::Binary, b"abc");
        assert_eq!(&f[..], &[0x82, 3, b'a', b'b', b'c']);
        assert_eq!(&text_frame(b"hi")[..], &[0x81, 2, b'h', b'i']);
        assert_eq!(&pong_frame(b"p")[..], &[0x8A, 1, b'p']);
        assert_eq!(&ping_frame(b"")[..], &[0x89, 0]);
        let big = vec![7u8; 70_000];
        let f = encode_frame(OpCode::Binary, &big);
        assert_eq!(f.len(), 10 + 70_000);
        assert_eq!(&f[10..], &big[..]);
    }

    #[test]
    fn close_frame_truncates_reason_on_a_char_boundary() {
        let f = close_frame(1001, "bye");
        assert_eq!(&f[..], &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);

        // 61 two-byte chars = 122 bytes, then a 3-byte char that would end at 125 > 123.
        let reason = format!("{}€", "é".repeat(61));
        let f = close_frame(1000, &reason);
        assert_eq!(f[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert!(f.len() - 2 <= MAX_CONTROL_PAYLOAD);

        let long = "x".repeat(500);
        let f = close_frame(1000, &long);
        assert_eq!(f[1] as usize, 125);
    }

    #[test]
    fn finish_frame_matches_encode_frame_without_moving_the_payload() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut buf = begin_frame(len);
            buf.extend_from_slice(&payload);
            let payload_ptr = buf[HEADROOM..].as_ptr();
            let f = finish_frame(buf, OpCode::Text);
            assert_eq!(f, encode_frame(OpCode::Text, &payload), "len {len}");
            assert_eq!(f[header_len(len)..].as_ptr(), payload_ptr, "payload moved");
        }
    }

    #[test]
    fn client_frame_is_masked_and_fin_is_optional() {
        let mask = [1, 2, 3, 4];
        let f = encode_client_frame(OpCode::Text, b"Hello", true, mask);
        assert_eq!(&f[..6], &[0x81, 0x85, 1, 2, 3, 4]);
        let mut payload = f[6..].to_vec();
        apply_mask(&mut payload, mask, 0);
        assert_eq!(payload, b"Hello");
        let f = encode_client_frame(OpCode::Binary, &[0; 300], false, mask);
        assert_eq!(&f[..4], &[0x02, 0x80 | 126, 1, 44]);
        let f = encode_client_frame(OpCode::Binary, &[0; 70_000], true, mask);
        assert_eq!(f[1], 0x80 | 127);
        assert_eq!(f.len(), 2 + 8 + 4 + 70_000);
    }
}
