//! Client side of RFC 6455, just what a load generator needs.
//!
//! Owns: the upgrade request, the check of the server's `101` answer
//! (including `Sec-WebSocket-Accept`), masked client frames, and an
//! incremental reader of server frames that reassembles fragmented messages.
//! Invariants: the reader never holds more than `max_message` bytes of one
//! message (larger messages are an error, not a reallocation without end),
//! and it never copies a complete unfragmented frame: callers get a slice into
//! the buffer they handed in.
//!
//! permessage-deflate (`--deflate`): the upgrade offers it, and once the
//! server accepted (it answers without context takeover), a message whose
//! first frame has RSV1 set is reported `compressed`; [`Inflate`] (one per
//! worker, reset per message) turns it back into the plain message.

use base64::Engine as _;
use thiserror::Error;

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest HTTP response head we wait for before calling the handshake failed.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Protocol errors; each ends the connection it happened on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WsError {
    #[error("could not upgrade: server answered status {0}")]
    Status(u16),
    #[error("could not upgrade: malformed response head")]
    BadHead,
    #[error("could not upgrade: response head larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error("could not upgrade: Sec-WebSocket-Accept missing or wrong")]
    BadAccept,
    #[error("could not read frame: {0}")]
    Frame(&'static str),
    #[error("could not read frame: message larger than {0} bytes")]
    TooLarge(usize),
}

/// Builds the upgrade request for `path` with a base64 `key` of 16 random bytes;
/// `deflate`: offer permessage-deflate.
pub fn handshake_request(host: &str, path: &str, key: &str, deflate: bool) -> Vec<u8> {
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: dockwire-loadtest\r\n\
         {offer}\r\n"
    )
    .into_bytes()
}

/// Whether a complete response head (from [`parse_response`]) accepted
/// permessage-deflate.
pub fn accepts_deflate(head: &[u8]) -> bool {
    std::str::from_utf8(head).is_ok_and(|h| {
        h.split("\r\n").any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                    && value.trim_start().starts_with("permessage-deflate")
            })
        })
    })
}

/// One inflater per worker: the server compresses every message on its own
/// (`server_no_context_takeover`), so the state is reset per message.
pub struct Inflate {
    d: flate2::Decompress,
    pub out: Vec<u8>,
}

impl Default for Inflate {
    fn default() -> Self {
        Inflate {
            d: flate2::Decompress::new(false),
            out: Vec::new(),
        }
    }
}

impl Inflate {
    /// Inflates one message into `self.out`.
    ///
    /// # Errors
    /// Data that is not deflate, or output over `max` bytes.
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<&[u8], WsError> {
        self.d.reset(false);
        self.out.clear();
        for piece in [data, &[0x00, 0x00, 0xff, 0xff][..]] {
            let mut used = 0;
            loop {
                if self.out.capacity() - self.out.len() < 1024 {
                    self.out.reserve(self.out.capacity().max(4096));
                }
                let before = self.d.total_in();
                let status = self
                    .d
                    .decompress_vec(&piece[used..], &mut self.out, flate2::FlushDecompress::Sync)
                    .map_err(|_| WsError::Frame("bad deflate data"))?;
                used += (self.d.total_in() - before) as usize;
                if self.out.len() > max {
                    return Err(WsError::TooLarge(max));
                }
                if status == flate2::Status::StreamEnd {
                    return Ok(&self.out);
                }
                if used >= piece.len() && self.out.len() < self.out.capacity() {
                    break;
                }
            }
        }
        Ok(&self.out)
    }
}

/// Encodes 16 bytes as the `Sec-WebSocket-Key` value.
pub fn make_key(raw: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The `Sec-WebSocket-Accept` value a server must answer for `key`.
pub fn expected_accept(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

/// Looks for a complete response head in `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, `Ok(Some(n))` with the
/// head length once it is complete and valid (bytes after `n` are frames).
///
/// # Errors
/// A non-101 status, a missing or wrong accept header, or a head too large.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_HEAD {
            Err(WsError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| WsError::BadHead)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(WsError::BadHead)?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().ok_or(WsError::BadHead)?;
    if !version.starts_with("HTTP/1.") {
        return Err(WsError::BadHead);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(WsError::BadHead)?;
    if status != 101 {
        return Err(WsError::Status(status));
    }
    let want = expected_accept(key);
    let accepted = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == want
        })
    });
    if !accepted {
        return Err(WsError::BadAccept);
    }
    Ok(Some(end + 4))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends one masked client frame (FIN set) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the repeating 4-byte `mask` (word at a time).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// A close frame payload: status code then reason.
pub fn close_payload(code: u16) -> [u8; 2] {
    code.to_be_bytes()
}

/// One complete frame header parsed from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

fn parse_header(buf: &[u8], max: usize, deflate: bool) -> Result<Option<Header>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let allowed = if deflate { 0x40 } else { 0 };
    if buf[0] & 0x70 & !allowed != 0 {
        return Err(WsError::Frame("reserved bits set"));
    }
    let rsv1 = buf[0] & 0x40 != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let mut len = (buf[1] & 0x7F) as u64;
    let mut pos = 2;
    if len == 126 {
        if buf.len() < 4 {
            return Ok(None);
        }
        len = u16::from_be_bytes([buf[2], buf[3]]) as u64;
        pos = 4;
    } else if len == 127 {
        if buf.len() < 10 {
            return Ok(None);
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[2..10]);
        len = u64::from_be_bytes(b);
        pos = 10;
    }
    if len > max as u64 {
        return Err(WsError::TooLarge(max));
    }
    if opcode >= 0x8 && (len > 125 || !fin) {
        return Err(WsError::Frame("bad control frame"));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask,
        header_len: pos,
        payload_len: len as usize,
    }))
}

/// What the reader produced from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message (text or binary), reassembled if it was fragmented.
    Message {
        opcode: u8,
        data: &'a [u8],
        /// permessage-deflate: `data` is deflate (see [`Inflate`]).
        compressed: bool,
    },
    Ping(&'a [u8]),
    Pong,
    /// Close frame with its status code, if any.
    Close(Option<u16>),
}

/// Reassembly state for fragmented messages; one per connection.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Opcode of the message being reassembled; `None` when not inside one.
    frag_opcode: Option<u8>,
    frag: Vec<u8>,
    /// The message being reassembled had RSV1 on its first frame.
    frag_compressed: bool,
    /// The server accepted permessage-deflate: RSV1 is allowed.
    pub deflate: bool,
}

impl FrameReader {
    /// Parses the next frame from `buf`. Returns the number of bytes used
    /// and the event, if one completed. `(0, None)` means more bytes are needed.
    /// A fragment that does not finish a message consumes its bytes and
    /// returns `(n, None)`.
    ///
    /// Unmasking happens in place, which is why `buf` is mutable.
    ///
    /// # Errors
    /// Malformed frames and messages over `max_message` bytes.
    pub fn next<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        max_message: usize,
    ) -> Result<(usize, Option<Event<'a>>), WsError> {
        let Some(h) = parse_header(buf, max_message, self.deflate)? else {
            return Ok((0, None));
        };
        let total = h.header_len + h.payload_len;
        if buf.len() < total {
            return Ok((0, None));
        }
        let payload = &mut buf[h.header_len..total];
        if let Some(m) = h.mask {
            apply_mask(payload, m);
        }
        let payload: &'a [u8] = payload;
        if h.rsv1 && (h.opcode == OP_CONT || h.opcode >= 0x8) {
            return Err(WsError::Frame("RSV1 on a continuation or control frame"));
        }
        let ev = match h.opcode {
            OP_PING => Some(Event::Ping(payload)),
            OP_PONG => Some(Event::Pong),
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                Some(Event::Close(code))
            }
            OP_TEXT | OP_BINARY => {
                if self.frag_opcode.is_some() {
                    return Err(WsError::Frame("new message inside a fragmented one"));
                }
                if h.fin {
                    Some(Event::Message {
                        opcode: h.opcode,
                        data: payload,
                        compressed: h.rsv1,
                    })
                } else {
                    self.frag_opcode = Some(h.opcode);
                    self.frag_compressed = h.rsv1;
                    self.frag.clear();
                    self.frag.extend_from_slice(payload);
                    None
                }
            }
            OP_CONT => {
                let Some(op) = self.frag_opcode else {
                    return Err(WsError::Frame("continuation without a start"));
                };
                if self.frag.len() + payload.len() > max_message {
                    return Err(WsError::TooLarge(max_message));
                }
                self.frag.extend_from_slice(payload);
                if h.fin {
                    self.frag_opcode = None;
                    Some(Event::Message {
                        opcode: op,
                        data: &self.frag,
                        compressed: self.frag_compressed,
                    })
                } else {
                    None
                }
            }
            _ => return Err(WsError::Frame("unknown opcode")),
        };
        Ok((total, ev))
    }

    /// Releases the reassembly buffer once it grew large, so a single big
    /// message does not pin memory on an otherwise idle connection.
    pub fn shrink(&mut self) {
        if self.frag_opcode.is_none() && self.frag.capacity() > 64 * 1024 {
            self.frag = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(len as u8);
        } else if len <= 65535 {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn accept_matches_rfc_example() {
        assert_eq!(
            expected_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn response_head_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        assert_eq!(parse_response(ok, key), Ok(Some(ok.len() - 4)));
        assert_eq!(parse_response(&ok[..20], key), Ok(None));
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(parse_response(wrong, key), Err(WsError::BadAccept));
        let denied = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(denied, key), Err(WsError::Status(403)));
        let huge = vec![b'a'; MAX_RESPONSE_HEAD + 1];
        assert_eq!(parse_response(&huge, key), Err(WsError::HeadTooLarge));
    }

    #[test]
    fn client_frames_are_masked_and_sized() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            let mask = [0x11, 0x22, 0x33, 0x44];
            encode_frame(&mut out, OP_TEXT, &payload, mask);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0, "client frames must be masked");
            // A server-side read of our frame gives the payload back.
            let mut r = FrameReader::default();
            let (used, ev) = r.next(&mut out, 1 << 20).unwrap();
            assert_eq!(used, out_len(len));
            assert_eq!(
                ev,
                Some(Event::Message {
                    opcode: OP_TEXT,
                    data: &payload[..],
                    compressed: false,
                })
            );
        }
    }

    fn out_len(len: usize) -> usize {
        let ext = if len < 126 {
            0
        } else if len <= 65535 {
            2
        } else {
            8
        };
        2 + ext + 4 + len
    }

    #[test]
    fn mask_roundtrip_odd_lengths() {
        let mut data: Vec<u8> = (0..13).collect();
        let orig = data.clone();
        apply_mask(&mut data, [1, 2, 3, 4]);
        assert_eq!(data[0], 1);
        assert_eq!(data[4], 4 ^ 1);
        apply_mask(&mut data, [1, 2, 3, 4]);
        assert_eq!(data, orig);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let f = server_frame(true, OP_TEXT, &[b'x'; 300]);
        let mut r = FrameReader::default();
        for cut in [0, 1, 3, 100, 303] {
            let mut part = f[..cut].to_vec();
            assert_eq!(r.next(&mut part, 1024).unwrap(), (0, None), "cut {cut}");
        }
        let mut whole = f.clone();
        let (used, ev) = r.next(&mut whole, 1024).unwrap();
        assert_eq!(used, f.len());
        assert!(matches!(ev, Some(Event::Message { data, .. }) if data.len() == 300));
    }

    #[test]
    fn fragmented_message_with_interleaved_ping() {
        let mut stream = server_frame(false, OP_TEXT, b"hello ");
        stream.extend(server_frame(true, OP_PING, b"p"));
        stream.extend(server_frame(false, OP_CONT, b"big "));
        stream.extend(server_frame(true, OP_CONT, b"world"));
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let (used, ev) = r.next(&mut stream[pos..], 1024).unwrap();
            assert!(used > 0);
            match ev {
                Some(Event::Message { data, .. }) => {
                    got.push(String::from_utf8(data.to_vec()).unwrap())
                }
                Some(Event::Ping(p)) => got.push(format!("ping:{}", String::from_utf8_lossy(p))),
                _ => {}
            }
            pos += used;
        }
        assert_eq!(
            got,
            vec!["ping:p".to_string(), "hello big world".to_string()]
        );
    }

    #[test]
    fn limits_and_bad_frames() {
        let mut r = FrameReader::default();
        let mut big = server_frame(true, OP_TEXT, &[0u8; 2000]);
        assert_eq!(r.next(&mut big, 1000), Err(WsError::TooLarge(1000)));
        // Fragments that add up past the limit are refused too.
        let mut r = FrameReader::default();
        let mut a = server_frame(false, OP_TEXT, &[0u8; 600]);
        r.next(&mut a, 1000).unwrap();
        let mut b = server_frame(true, OP_CONT, &[0u8; 600]);
        assert_eq!(r.next(&mut b, 1000), Err(WsError::TooLarge(1000)));
        let mut r = FrameReader::default();
        let mut cont = server_frame(true, OP_CONT, b"x");
        assert!(r.next(&mut cont, 1000).is_err());
        let mut rsv = vec![0xC1, 0x00];
        assert!(r.next(&mut rsv, 1000).is_err());
        let mut close = server_frame(true, OP_CLOSE, &1001u16.to_be_bytes());
        assert_eq!(
            r.next(&mut close, 1000).unwrap().1,
            Some(Event::Close(Some(1001)))
        );
    }

    #[test]
    fn compressed_messages_are_flagged_and_inflate() {
        let text = b"{\"type\":\"log_update\"} ".repeat(50);
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut z = Vec::with_capacity(text.len() + 64);
        c.compress_vec(&text, &mut z, flate2::FlushCompress::Sync)
            .unwrap();
        z.truncate(z.len() - 4);
        let mut frame = server_frame(true, OP_TEXT, &z);
        frame[0] |= 0x40;
        // Not negotiated: RSV1 is an error.
        let mut r = FrameReader::default();
        assert!(r.next(&mut frame.clone(), 1 << 20).is_err());
        let mut r = FrameReader {
            deflate: true,
            ..FrameReader::default()
        };
        let (_, ev) = r.next(&mut frame, 1 << 20).unwrap();
        let Some(Event::Message {
            data,
            compressed: true,
            ..
        }) = ev
        else {
            panic!("{ev:?}")
        };
        let mut inflate = Inflate::default();
        assert_eq!(inflate.inflate(data, 1 << 20).unwrap(), &text[..]);
        assert!(inflate.inflate(data, 100).is_err());
        assert!(accepts_deflate(
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate; \
              server_no_context_takeover\r\n\r\n"
        ));
        assert!(!accepts_deflate(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
        ));
    }
}
