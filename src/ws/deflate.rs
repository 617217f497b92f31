//! permessage-deflate (RFC 7692) without context takeover in either direction.
//!
//! The server answers an acceptable offer with [`RESPONSE`]: it compresses
//! every message on its own (`server_no_context_takeover`) and asks the client
//! to do the same (`client_no_context_takeover`). No socket then keeps a
//! compression window: the one [`Deflater`] and the one [`Inflater`] live in
//! the event loop and are reset between messages, so a socket that negotiated
//! compression costs one flag, and a frame for many subscribers is compressed
//! once and shared like its plain form.
//!
//! Invariants:
//! - [`Deflater::frame_for`] compresses a given shared frame at most once
//!   while it is being fanned out: it keeps the last plain frames it saw (by
//!   identity: the same allocation, held so it cannot be reused) with their
//!   compressed forms. Control frames, frames under [`MIN_COMPRESS`] bytes and
//!   frames that would not shrink go out plain (RSV1 is per message).
//! - [`Inflater::inflate`] never produces more than the caller's limit plus
//!   one byte: a message that inflates past it is refused (1009) as soon as
//!   it does (zip bombs cost at most the limit).
//! - Negotiation declines (never fails) an offer it cannot honour: unknown,
//!   duplicate or invalid parameters, or `server_max_window_bits` below 15
//!   (we compress with a 15-bit window). The connection then opens without it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{Frame, OpCode, WsError, frame_payload, write_header};

/// The `Sec-WebSocket-Extensions` value of an accepted offer.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Payloads shorter than this go out plain: the deflate block overhead and the
/// CPU are not worth it for a pong or a short status message.
pub const MIN_COMPRESS: usize = 256;

/// The RSV1 bit of a frame's first byte: "this message is compressed".
pub const RSV1: u8 = 0x40;

/// The empty stored block a sync flush ends with; removed on the wire (RFC 7692 §7.2.1)
/// and appended again before inflating (§7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Whether a `Sec-WebSocket-Extensions` header (all its values joined with
/// commas) holds a permessage-deflate offer the server can accept.
pub fn negotiate(header: &str) -> bool {
    split_outside_quotes(header, ',').any(acceptable_offer)
}

/// One offer: `permessage-deflate` followed by `; name[=value]` parameters.
fn acceptable_offer(offer: &str) -> bool {
    let mut parts = split_outside_quotes(offer, ';');
    let Some(name) = parts.next() else {
        return false;
    };
    if !name.trim().eq_ignore_ascii_case("permessage-deflate") {
        return false;
    }
    let mut seen = [false; 4];
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
            None => (param.trim(), None),
        };
        let (slot, ok) = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            // We compress with a 15-bit window; a smaller one cannot be honoured.
            "server_max_window_bits" => (2, value.and_then(window_bits) == Some(15)),
            // We inflate with a 15-bit window, which reads any smaller one.
            "client_max_window_bits" => (3, value.is_none_or(|v| window_bits(v).is_some())),
            _ => return false,
        };
        if !ok || std::mem::replace(&mut seen[slot], true) {
            return false;
        }
    }
    true
}

/// A window size parameter: 8 to 15, digits only (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Splits on `sep` outside double quotes (a quoted parameter value may hold one).
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        for (i, ch) in s.char_indices() {
            match ch {
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeflateStats {
    /// Messages compressed (one per shared frame, however many sockets get it).
    pub compressions: u64,
    /// Compressed frames queued on sockets.
    pub frames_sent: u64,
    /// Bytes those frames saved against their plain form.
    pub bytes_saved: u64,
    /// Client messages inflated.
    pub messages_inflated: u64,
}

/// Plain frames remembered with their compressed forms. Two, so a one-off
/// frame sent in the middle of a fan-out (a `log_dropped`) does not evict the
/// frame being fanned out.
const CACHE_SLOTS: usize = 2;

/// The loop's compressor: one deflate state for every socket.
pub struct Deflater {
    compress: Compress,
    /// Compressed payload under construction (its capacity is reused).
    scratch: Vec<u8>,
    cache: [Option<(Frame, Frame)>; CACHE_SLOTS],
    next_slot: usize,
    pub stats: DeflateStats,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            // Level 1: the loop compresses on its own thread. On frames of
            // log lines it saves as much as the default level 6 (measured in
            // docs/performance.md) at a fraction of the CPU on large ones.
            compress: Compress::new(Compression::fast(), false),
            scratch: Vec::new(),
            cache: Default::default(),
            next_slot: 0,
            stats: DeflateStats::default(),
        }
    }
}

impl Deflater {
    /// The frame to queue, instead of `plain`, on a socket that negotiated
    /// permessage-deflate: its compressed form (RSV1 set), built once per
    /// shared frame, or `plain` itself when compressing is not worth it.
    pub fn frame_for(&mut self, plain: &Frame) -> Frame {
        let opcode = match plain.first() {
            Some(0x81) => OpCode::Text,
            Some(0x82) => OpCode::Binary,
            // Control frames, fragments, anything not a whole data frame.
            _ => return plain.clone(),
        };
        if frame_payload(plain).len() < MIN_COMPRESS {
            return plain.clone();
        }
        let hit = self
            .cache
            .iter()
            .flatten()
            .find(|(p, _)| same_frame(p, plain));
        let sent = match hit {
            Some((_, compressed)) => compressed.clone(),
            None => {
                let compressed = self
                    .compress(opcode, frame_payload(plain), false)
                    .unwrap_or_else(|| plain.clone());
                self.cache[self.next_slot] = Some((plain.clone(), compressed.clone()));
                self.next_slot = (self.next_slot + 1) % CACHE_SLOTS;
                compressed
            }
        };
        if !same_frame(&sent, plain) {
            self.stats.frames_sent += 1;
            let saved = plain.len().saturating_sub(sent.len()) as u64;
            self.stats.bytes_saved = self.stats.bytes_saved.saturating_add(saved);
        }
        sent
    }

    /// Compresses one message into a frame with RSV1 set, exactly sized;
    /// `None` when it would not be smaller than the plain payload, unless
    /// `always` (the echo endpoint answers every message compressed).
    pub fn compress(&mut self, opcode: OpCode, payload: &[u8], always: bool) -> Option<Frame> {
        self.stats.compressions += 1;
        self.compress.reset();
        let out = &mut self.scratch;
        out.clear();
        // Room for the whole flush at once (stored blocks cost 5 bytes per
        // 64 KiB); the loop below only runs again if that ever fell short.
        out.reserve(payload.len() + payload.len() / 1024 + 64);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&payload[consumed..], out, FlushCompress::Sync)
                .ok()?;
            consumed += (self.compress.total_in() - before) as usize;
            if !always && out.len() > payload.len() + SYNC_TAIL.len() {
                return None;
            }
            if consumed >= payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
        if !always && out.len() >= payload.len() {
            return None;
        }
        let mut frame = Vec::with_capacity(super::header_len(out.len()) + out.len());
        write_header(&mut frame, opcode, out.len());
        frame[0] |= RSV1;
        frame.extend_from_slice(out);
        Some(Frame::from(frame))
    }
}

/// The same shared frame: same allocation and view (the cache holds a clone,
/// so the address cannot have been reused by another frame).
fn same_frame(a: &Frame, b: &Frame) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The loop's inflater: one inflate state for every socket, reset per message.
pub struct Inflater {
    decompress: Decompress,
    pub messages: u64,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("messages", &self.messages)
            .finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            decompress: Decompress::new(false),
            messages: 0,
        }
    }
}

impl Inflater {
    /// Inflates one compressed message (its frames' payloads joined, without
    /// the sync tail) on its own: the client was told not to take context over.
    ///
    /// # Errors
    /// [`WsError::MessageTooBig`] as soon as the output passes `max` bytes;
    /// [`WsError::BadDeflate`] when the data is not valid raw deflate.
    pub fn inflate(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
        self.messages += 1;
        self.decompress.reset(false);
        let limit = max.saturating_add(1);
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).max(64).min(limit));
        for piece in [data, &SYNC_TAIL[..]] {
            let mut consumed = 0usize;
            loop {
                if out.len() == out.capacity() {
                    let room = limit.saturating_sub(out.len());
                    if room == 0 {
                        return Err(too_big(out.len(), max));
                    }
                    out.reserve_exact(out.capacity().max(1024).min(room));
                }
                let (in0, out0) = (self.decompress.total_in(), out.len());
                let status = self
                    .decompress
                    .decompress_vec(&piece[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| WsError::BadDeflate)?;
                consumed += (self.decompress.total_in() - in0) as usize;
                if out.len() > max {
                    return Err(too_big(out.len(), max));
                }
                if status == Status::StreamEnd {
                    // A final block (BFINAL) ends the message; nothing after it counts.
                    return Ok(out);
                }
                let spare = out.len() < out.capacity();
                if consumed >= piece.len() && spare {
                    break;
                }
                if spare && out.len() == out0 && self.decompress.total_in() == in0 {
                    // Input left, room left, and no progress: not deflate.
                    return Err(WsError::BadDeflate);
                }
            }
        }
        Ok(out)
    }
}

fn too_big(size: usize, max: usize) -> WsError {
    WsError::MessageTooBig {
        size: size as u64,
        max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_usual_offers() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=\"12\"",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15",
            "Permessage-Deflate ;client_no_context_takeover ; client_max_window_bits",
            "x-webkit-deflate-frame, permessage-deflate",
        ] {
            assert!(negotiate(offer), "{offer}");
        }
    }

    #[test]
    fn declines_offers_it_cannot_honour_and_takes_the_first_it_can() {
        for offer in [
            "",
            "deflate-frame",
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; unknown_param",
            "permessage-deflate; ",
            "permessage-deflate; =",
            "permessage-deflate; client_max_window_bits=\"1,5\"",
        ] {
            assert!(!negotiate(offer), "{offer:?}");
        }
        // Autobahn 13.7: the first offer asks for a 9-bit window, the second is fine.
        assert!(negotiate(
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
             server_no_context_takeover; server_max_window_bits=9, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits; \
             server_no_context_takeover, permessage-deflate"
        ));
    }

    fn payload_of(frame: &Frame) -> Vec<u8> {
        frame_payload(frame).to_vec()
    }

    #[test]
    fn round_trip_through_deflater_and_inflater() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        let text = r#"{"type":"log_update","line":"GET /index.html 200"}"#.repeat(40);
        let f = d
            .compress(OpCode::Text, text.as_bytes(), false)
            .expect("compresses");
        assert_eq!(f[0], 0x80 | RSV1 | 0x1);
        assert!(f.len() < text.len() / 4, "{} bytes", f.len());
        let back = i.inflate(&payload_of(&f), 1 << 20).unwrap();
        assert_eq!(back, text.as_bytes());
        // Each message stands alone: the same state serves the next one.
        let other = vec![7u8; 100_000];
        let f = d.compress(OpCode::Binary, &other, false).unwrap();
        assert_eq!(f[0], 0x80 | RSV1 | 0x2);
        assert_eq!(i.inflate(&payload_of(&f), 1 << 20).unwrap(), other);
        assert_eq!(i.inflate(&[0x00], 10).unwrap(), b"");
        // `always` (the echo): even an empty message goes compressed.
        let f = d.compress(OpCode::Text, b"", true).unwrap();
        assert_eq!(&f[..], &[0x80 | RSV1 | 0x1, 1, 0x00]);
        let f = d.compress(OpCode::Text, b"hi", true).unwrap();
        assert_eq!(i.inflate(&payload_of(&f), 10).unwrap(), b"hi");
        assert_eq!(d.compress(OpCode::Text, b"hi", false), None);
    }

    #[test]
    fn incompressible_and_small_frames_go_out_plain() {
        let mut d = Deflater::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let plain = super::super::encode_frame(OpCode::Binary, &noise);
        assert_eq!(d.frame_for(&plain), plain);
        let small = super::super::text_frame(&[b'a'; MIN_COMPRESS - 1]);
        assert_eq!(d.frame_for(&small), small);
        let ping = super::super::ping_frame(b"x");
        assert_eq!(d.frame_for(&ping), ping);
        assert_eq!(d.stats.frames_sent, 0);
    }

    #[test]
    fn a_shared_frame_is_compressed_once_for_many_sockets() {
        let mut d = Deflater::default();
        let a = super::super::text_frame(&[b'a'; 1000]);
        let b = super::super::text_frame(&[b'b'; 1000]);
        let first = d.frame_for(&a);
        assert_eq!(first[0] & RSV1, RSV1);
        for _ in 0..5 {
            let again = d.frame_for(&a);
            assert_eq!(again.as_ptr(), first.as_ptr(), "shared, not recompressed");
        }
        assert_eq!(d.stats.compressions, 1);
        // A frame in between does not evict the one being fanned out.
        d.frame_for(&b);
        d.frame_for(&a);
        assert_eq!(d.stats.compressions, 2);
        assert_eq!(d.stats.frames_sent, 8);
        // A different frame with the same bytes is a new frame.
        d.frame_for(&super::super::text_frame(&[b'a'; 1000]));
        assert_eq!(d.stats.compressions, 3);
    }

    #[test]
    fn inflating_stops_at_the_limit() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        let bomb = vec![0u8; 10 << 20];
        let f = d.compress(OpCode::Binary, &bomb, false).unwrap();
        // A bomb: over 100 times smaller than what it inflates to.
        assert!(f.len() < bomb.len() / 100, "{}", f.len());
        let err = i.inflate(&payload_of(&f), 64 << 10).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        let exact = vec![1u8; 64 << 10];
        let f = d.compress(OpCode::Binary, &exact, false).unwrap();
        assert_eq!(
            i.inflate(&payload_of(&f), 64 << 10).unwrap().len(),
            64 << 10
        );
        let f = d
            .compress(OpCode::Binary, &[1u8; (64 << 10) + 1], false)
            .unwrap();
        assert!(i.inflate(&payload_of(&f), 64 << 10).is_err());
    }

    #[test]
    fn garbage_is_refused_and_the_state_recovers() {
        let mut i = Inflater::default();
        assert_eq!(i.inflate(&[0xff; 32], 1000), Err(WsError::BadDeflate));
        let mut d = Deflater::default();
        let f = d.compress(OpCode::Text, &[b'z'; 500], false).unwrap();
        assert_eq!(i.inflate(&payload_of(&f), 1000).unwrap(), vec![b'z'; 500]);
    }
}
