//! Reader tests: every RFC 6455 rule the Autobahn suite (cases 1–10) checks, fed whole,
//! byte by byte and in random pieces.

use bytes::BytesMut;

use super::*;

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
const MAX: usize = 64 * 1024;

fn cf(opcode: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
    encode_client_frame(opcode, payload, fin, MASK)
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

/// Feeds all of `bytes` at once and collects messages until the reader needs more.
fn read_all(reader: &mut MessageReader, bytes: &[u8]) -> Result<Vec<Incoming>, WsError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = reader.read(&mut buf)? {
        out.push(m);
    }
    assert!(buf.len() < MAX_UNCONSUMED, "{} bytes left", buf.len());
    Ok(out)
}

/// Feeds `bytes` in pieces of the given sizes (cycling), reading after each piece.
fn read_in_pieces(
    reader: &mut MessageReader,
    bytes: &[u8],
    sizes: &[usize],
) -> Result<Vec<Incoming>, WsError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = sizes[i % sizes.len()].max(1).min(bytes.len() - pos);
        i += 1;
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(m) = reader.read(&mut buf)? {
            out.push(m);
        }
        assert!(buf.len() < MAX_UNCONSUMED, "{} bytes left", buf.len());
    }
    Ok(out)
}

fn one(bytes: &[u8]) -> Result<Vec<Incoming>, WsError> {
    read_all(&mut MessageReader::new(MAX), bytes)
}

fn err(bytes: &[u8]) -> WsError {
    match one(bytes) {
        Err(e) => e,
        Ok(msgs) => panic!("expected an error, got {msgs:?}"),
    }
}

fn text(s: &str) -> Incoming {
    Incoming::Text(s.to_owned())
}

#[test]
fn masked_text_and_binary_round_trip() {
    let bytes = cat(&[
        cf(OpCode::Text, "héllo wörld".as_bytes(), true),
        cf(OpCode::Binary, &[0, 1, 2, 255], true),
        cf(OpCode::Text, b"", true),
        cf(OpCode::Binary, b"", true),
    ]);
    assert_eq!(
        one(&bytes).unwrap(),
        vec![
            text("héllo wörld"),
            Incoming::Binary(vec![0, 1, 2, 255]),
            text(""),
            Incoming::Binary(vec![]),
        ]
    );
}

#[test]
fn need_more_bytes_until_the_frame_is_complete() {
    let frame = cf(OpCode::Text, b"abcdef", true);
    let mut reader = MessageReader::new(MAX);
    let mut buf = BytesMut::new();
    for (i, b) in frame.iter().enumerate() {
        assert_eq!(reader.read(&mut buf).unwrap(), None, "after {i} bytes");
        buf.extend_from_slice(&[*b]);
    }
    assert_eq!(reader.read(&mut buf).unwrap(), Some(text("abcdef")));
    assert!(buf.is_empty());
    assert!(!reader.in_message());
}

#[test]
fn fragmented_message_with_interleaved_control_frames() {
    let bytes = cat(&[
        cf(OpCode::Text, b"frag1 ", false),
        cf(OpCode::Ping, b"p1", true),
        cf(OpCode::Continuation, b"frag2 ", false),
        cf(OpCode::Pong, b"", true),
        cf(OpCode::Continuation, b"", false),
        cf(OpCode::Continuation, b"frag3", true),
        cf(OpCode::Binary, &[9; 3], false),
        cf(OpCode::Continuation, &[8; 2], true),
        cf(OpCode::Close, &[0x03, 0xE8, b'o', b'k'], true),
    ]);
    let want = vec![
        Incoming::Ping(b"p1".to_vec()),
        Incoming::Pong(vec![]),
        text("frag1 frag2 frag3"),
        Incoming::Binary(vec![9, 9, 9, 8, 8]),
        Incoming::Close(Some((1000, "ok".to_owned()))),
    ];
    assert_eq!(one(&bytes).unwrap(), want);
    let bytewise = read_in_pieces(&mut MessageReader::new(MAX), &bytes, &[1]).unwrap();
    assert_eq!(bytewise, want);
    for sizes in [&[2usize, 3][..], &[7], &[13, 1, 5], &[64]] {
        let got = read_in_pieces(&mut MessageReader::new(MAX), &bytes, sizes).unwrap();
        assert_eq!(got, want, "pieces {sizes:?}");
    }
}

#[test]
fn multibyte_char_split_across_fragments_is_valid() {
    let s = "κόσμε€𝄞";
    let b = s.as_bytes();
    // Split inside the 4-byte 𝄞 and inside the 3-byte €.
    let bytes = cat(&[
        cf(OpCode::Text, &b[..b.len() - 2], false),
        cf(OpCode::Continuation, &b[b.len() - 2..b.len() - 1], false),
        cf(OpCode::Continuation, &b[b.len() - 1..], true),
    ]);
    assert_eq!(one(&bytes).unwrap(), vec![text(s)]);
    let got = read_in_pieces(&mut MessageReader::new(MAX), &bytes, &[1]).unwrap();
    assert_eq!(got, vec![text(s)]);
}

#[test]
fn lengths_use_16_and_64_bit_encodings() {
    for len in [125usize, 126, 127, 1000, 65535, 65536, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let bytes = cf(OpCode::Binary, &payload, true);
        let mut reader = MessageReader::new(1 << 20);
        assert_eq!(
            read_all(&mut reader, &bytes).unwrap(),
            vec![Incoming::Binary(payload.clone())],
            "len {len}"
        );
        let got = read_in_pieces(&mut MessageReader::new(1 << 20), &bytes, &[4093]).unwrap();
        assert_eq!(got, vec![Incoming::Binary(payload)], "len {len} in pieces");
    }
}

#[test]
fn non_minimal_length_encoding_is_accepted() {
    // 5 bytes announced with the 16-bit form, then with the 64-bit form.
    let mut a = vec![0x82, 0x80 | 126, 0, 5];
    let mut b = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5];
    for frame in [&mut a, &mut b] {
        frame.extend_from_slice(&MASK);
        let mut payload = b"abcde".to_vec();
        apply_mask(&mut payload, MASK, 0);
        frame.extend_from_slice(&payload);
    }
    assert_eq!(one(&a).unwrap(), vec![Incoming::Binary(b"abcde".to_vec())]);
    assert_eq!(one(&b).unwrap(), vec![Incoming::Binary(b"abcde".to_vec())]);
}

#[test]
fn max_message_size_boundary() {
    let max = 1000;
    let exact = cf(OpCode::Binary, &vec![1; max], true);
    let got = read_all(&mut MessageReader::new(max), &exact).unwrap();
    assert_eq!(got, vec![Incoming::Binary(vec![1; max])]);

    let over = cf(OpCode::Binary, &vec![1; max + 1], true);
    let e = read_all(&mut MessageReader::new(max), &over).unwrap_err();
    assert_eq!(e, WsError::MessageTooBig { size: 1001, max });
    assert_eq!(e.close_code(), 1009);

    // Across fragments: 600 + 400 is fine, 600 + 401 is refused at the second header.
    let ok = cat(&[
        cf(OpCode::Text, &[b'a'; 600], false),
        cf(OpCode::Continuation, &[b'b'; 400], true),
    ]);
    assert_eq!(
        read_all(&mut MessageReader::new(max), &ok).unwrap().len(),
        1
    );
    let bad = cat(&[
        cf(OpCode::Text, &[b'a'; 600], false),
        cf(OpCode::Continuation, &[b'b'; 401], true),
    ]);
    let e = read_all(&mut MessageReader::new(max), &bad).unwrap_err();
    assert_eq!(e.close_code(), 1009);

    // Control frames do not count towards the message size.
    let ctl = cat(&[
        cf(OpCode::Binary, &vec![1; max - 10], false),
        cf(OpCode::Ping, &[0; 125], true),
        cf(OpCode::Continuation, &[2; 10], true),
    ]);
    assert_eq!(
        read_all(&mut MessageReader::new(max), &ctl).unwrap().len(),
        2
    );
}

#[test]
fn oversized_message_fails_from_the_header_alone() {
    // Only the header of a 1 GiB frame: refused without waiting for (or buffering) it.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&MASK);
    let mut reader = MessageReader::new(MAX);
    let e = read_all(&mut reader, &header).unwrap_err();
    assert_eq!(
        e,
        WsError::MessageTooBig {
            size: 1 << 30,
            max: MAX
        }
    );
    assert_eq!(reader.pending_message_bytes(), 0);
}

#[test]
fn length_with_top_bit_set_is_a_protocol_error() {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    header.extend_from_slice(&MASK);
    let e = err(&header);
    assert_eq!(e, WsError::LengthOverflow);
    assert_eq!(e.close_code(), 1002);
}

#[test]
fn reserved_bits_are_a_protocol_error() {
    for bit in [0x40u8, 0x20, 0x10, 0x70] {
        let mut f = cf(OpCode::Text, b"x", true);
        f[0] |= bit;
        let e = err(&f);
        assert_eq!(e, WsError::ReservedBits(bit >> 4));
        assert_eq!(e.close_code(), 1002);
        // Fails from the first two bytes, before the rest of the frame.
        let e = read_all(&mut MessageReader::new(MAX), &f[..2]).unwrap_err();
        assert_eq!(e.close_code(), 1002);
    }
}

#[test]
fn reserved_opcodes_are_a_protocol_error() {
    for op in (3u8..=7).chain(0xB..=0xF) {
        let mut f = cf(OpCode::Binary, b"x", true);
        f[0] = 0x80 | op;
        let e = err(&f);
        assert_eq!(e, WsError::UnknownOpcode(op));
        assert_eq!(e.close_code(), 1002);
    }
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let e = err(&[0x81, 0x02, b'h', b'i']);
    assert_eq!(e, WsError::Unmasked);
    assert_eq!(e.close_code(), 1002);
}

#[test]
fn control_frame_rules() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let e = err(&cf(op, &[0; 126], true));
        assert_eq!(e, WsError::ControlTooLong(126), "{op:?}");
        assert_eq!(e.close_code(), 1002);
        let e = err(&cf(op, &[0x03, 0xE8], false));
        assert_eq!(e, WsError::FragmentedControl, "{op:?}");
        assert_eq!(e.close_code(), 1002);
    }
    // 125 bytes is the largest allowed control payload.
    assert_eq!(
        one(&cf(OpCode::Ping, &[7; 125], true)).unwrap(),
        vec![Incoming::Ping(vec![7; 125])]
    );
    // A non-FIN ping inside a fragmented message is still refused.
    let bytes = cat(&[cf(OpCode::Text, b"a", false), cf(OpCode::Ping, b"", false)]);
    assert_eq!(err(&bytes), WsError::FragmentedControl);
}

#[test]
fn continuation_rules() {
    let e = err(&cf(OpCode::Continuation, b"x", true));
    assert_eq!(e, WsError::UnexpectedContinuation);
    assert_eq!(e.close_code(), 1002);

    // After a complete message, a continuation is again unexpected.
    let bytes = cat(&[
        cf(OpCode::Text, b"a", true),
        cf(OpCode::Continuation, b"b", true),
    ]);
    assert_eq!(err(&bytes), WsError::UnexpectedContinuation);

    for op in [OpCode::Text, OpCode::Binary] {
        let bytes = cat(&[cf(OpCode::Text, b"a", false), cf(op, b"b", true)]);
        let e = err(&bytes);
        assert_eq!(e, WsError::ExpectedContinuation);
        assert_eq!(e.close_code(), 1002);
    }
}

#[test]
fn close_payload_rules() {
    assert_eq!(
        one(&cf(OpCode::Close, b"", true)).unwrap(),
        vec![Incoming::Close(None)]
    );
    assert_eq!(
        one(&cf(OpCode::Close, &[0x03, 0xE8], true)).unwrap(),
        vec![Incoming::Close(Some((1000, String::new())))]
    );
    let e = err(&cf(OpCode::Close, &[0x03], true));
    assert_eq!(e, WsError::CloseTooShort);
    assert_eq!(e.close_code(), 1002);

    let mut bad_reason = vec![0x03, 0xE8];
    bad_reason.extend_from_slice(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80");
    let e = err(&cf(OpCode::Close, &bad_reason, true));
    assert_eq!(e, WsError::InvalidCloseReason);
    assert_eq!(e.close_code(), 1007);

    let mut long_reason = vec![0x0F, 0xA0]; // 4000
    long_reason.extend_from_slice("é".repeat(61).as_bytes());
    assert_eq!(
        one(&cf(OpCode::Close, &long_reason, true)).unwrap(),
        vec![Incoming::Close(Some((4000, "é".repeat(61))))]
    );
}

#[test]
fn close_codes_follow_autobahn_7_7_and_7_9() {
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    for code in valid {
        let got = one(&cf(OpCode::Close, &u16::to_be_bytes(code), true)).unwrap();
        assert_eq!(got, vec![Incoming::Close(Some((code, String::new())))]);
    }
    let invalid = [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in invalid {
        let e = err(&cf(OpCode::Close, &u16::to_be_bytes(code), true));
        assert_eq!(e, WsError::InvalidCloseCode(code));
        assert_eq!(e.close_code(), 1002);
    }
}

#[test]
fn invalid_utf8_text_is_1007() {
    for bad in [
        &b"\xff"[..],
        b"abc\xc0\xafdef",   // overlong
        b"\xed\xa0\x80",     // surrogate
        b"\xf4\x90\x80\x80", // above U+10FFFF
        b"ok\xe2\x82",       // incomplete at the end of the message
        b"\xce\xba\xe1\xbd", // 3-byte char cut short by the end
    ] {
        let e = err(&cf(OpCode::Text, bad, true));
        assert_eq!(e, WsError::InvalidUtf8, "{bad:?}");
        assert_eq!(e.close_code(), 1007);
        let got = read_in_pieces(
            &mut MessageReader::new(MAX),
            &cf(OpCode::Text, bad, true),
            &[1],
        );
        assert_eq!(got.unwrap_err(), WsError::InvalidUtf8, "{bad:?} bytewise");
    }
    // Incomplete at the end of the last fragment.
    let bytes = cat(&[
        cf(OpCode::Text, b"ok", false),
        cf(OpCode::Continuation, b"\xe2\x82", true),
    ]);
    assert_eq!(err(&bytes), WsError::InvalidUtf8);
    // Invalid bytes in a binary message are fine.
    assert_eq!(
        one(&cf(OpCode::Binary, b"\xff\xfe", true)).unwrap(),
        vec![Incoming::Binary(vec![0xff, 0xfe])]
    );
}

#[test]
fn invalid_utf8_in_first_fragment_fails_before_the_rest_arrives() {
    // Autobahn 6.4.1: valid part, then a fragment holding an impossible code point.
    let first = cf(
        OpCode::Text,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        false,
    );
    let second = cf(OpCode::Continuation, b"\xf4\x90\x80\x80", false);
    let mut reader = MessageReader::new(MAX);
    assert_eq!(read_all(&mut reader, &first).unwrap(), vec![]);
    assert_eq!(
        read_all(&mut reader, &second).unwrap_err(),
        WsError::InvalidUtf8
    );

    // Invalid bytes in the very first, non-final fragment.
    let first = cf(OpCode::Text, b"ab\xff", false);
    assert_eq!(err(&first), WsError::InvalidUtf8);

    // Autobahn 6.4.2: the invalid sequence is split so that \x90 alone makes it invalid.
    let mut reader = MessageReader::new(MAX);
    let part1 = cf(
        OpCode::Text,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
        false,
    );
    assert_eq!(read_all(&mut reader, &part1).unwrap(), vec![]);
    let part2 = cf(OpCode::Continuation, b"\x90", false);
    assert_eq!(
        read_all(&mut reader, &part2).unwrap_err(),
        WsError::InvalidUtf8
    );
}

#[test]
fn invalid_utf8_fails_fast_inside_a_single_frame_sent_in_chops() {
    // Autobahn 6.4.3: one frame, delivered in TCP chunks; fail on the chunk with the bad
    // bytes, not when the frame is complete.
    let mut payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5".to_vec();
    let bad_at = payload.len();
    payload.extend_from_slice(b"\xf4\x90\x80\x80");
    payload.extend_from_slice(b"edited");
    let frame = cf(OpCode::Text, &payload, true);
    let header = frame.len() - payload.len();
    let mut reader = MessageReader::new(MAX);
    let mut buf = BytesMut::from(&frame[..header + bad_at]);
    assert_eq!(reader.read(&mut buf).unwrap(), None);
    buf.extend_from_slice(&frame[header + bad_at..header + bad_at + 2]);
    assert_eq!(reader.read(&mut buf).unwrap_err(), WsError::InvalidUtf8);
}

#[test]
fn byte_at_a_time_equals_whole_buffer_for_a_mixed_stream() {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 256) as u8).collect();
    let long_text = "añ€𝄞".repeat(5000);
    let bytes = cat(&[
        cf(OpCode::Binary, &big, true),
        cf(OpCode::Text, long_text.as_bytes(), true),
        cf(OpCode::Ping, b"hello", true),
        cf(OpCode::Text, &long_text.as_bytes()[..7], false),
        cf(OpCode::Continuation, &long_text.as_bytes()[7..], true),
        cf(OpCode::Close, &[0x03, 0xE9], true),
    ]);
    let whole = read_all(&mut MessageReader::new(1 << 20), &bytes).unwrap();
    assert_eq!(whole.len(), 5);
    assert_eq!(whole[0], Incoming::Binary(big));
    assert_eq!(whole[1], Incoming::Text(long_text.clone()));
    assert_eq!(whole[3], Incoming::Text(long_text));
    let bytewise = read_in_pieces(&mut MessageReader::new(1 << 20), &bytes, &[1]).unwrap();
    assert_eq!(bytewise, whole);
}

/// Small deterministic PRNG (xorshift64*) so the random tests need no seed plumbing.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_chunking_gives_the_same_messages() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut frames = Vec::new();
    for i in 0..200 {
        let len = [0, 1, 125, 126, 300, 70_000][rng.below(6)];
        let payload: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        let op = [OpCode::Text, OpCode::Binary][rng.below(2)];
        if rng.below(3) == 0 && len > 1 {
            frames.push(cf(op, &payload[..len / 2], false));
            frames.push(cf(OpCode::Ping, &payload[..len.min(125) / 2], true));
            frames.push(cf(OpCode::Continuation, &payload[len / 2..], true));
        } else {
            frames.push(cf(op, &payload, true));
        }
    }
    let bytes = cat(&frames);
    let whole = read_all(&mut MessageReader::new(1 << 20), &bytes).unwrap();
    for round in 0..5 {
        let sizes: Vec<usize> = (0..50).map(|_| 1 + rng.below(5000)).collect();
        let got = read_in_pieces(&mut MessageReader::new(1 << 20), &bytes, &sizes).unwrap();
        assert_eq!(got, whole, "round {round}");
    }
}

/// Feeds `bytes` in `seg`-byte segments until a close, an error or the end, checking the
/// bounds the event loop relies on after every call.
fn run_stream(bytes: &[u8], seg: usize, max: usize) -> (Vec<Incoming>, Option<WsError>) {
    let mut reader = MessageReader::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(seg.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match reader.read(&mut buf) {
                Ok(Some(m)) => {
                    let closing = matches!(m, Incoming::Close(_));
                    out.push(m);
                    if closing {
                        return (out, None);
                    }
                }
                Ok(None) => {
                    assert!(buf.len() < MAX_UNCONSUMED);
                    break;
                }
                Err(e) => {
                    assert!([1002, 1007, 1009].contains(&e.close_code()));
                    return (out, Some(e));
                }
            }
        }
        assert!(reader.pending_message_bytes() <= max);
    }
    (out, None)
}

#[test]
fn random_garbage_never_panics_stays_bounded_and_ignores_segmentation() {
    let mut rng = Rng(12345);
    let mut errors = 0;
    let mut messages = 0;
    for _ in 0..3000 {
        let len = rng.below(400);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make most frames plausible (FIN/opcode ok, no RSV, masked, short length) so the
        // inputs get past the first header checks and exercise payload handling.
        let mut pos = 0;
        while pos + 2 <= bytes.len() && rng.below(4) != 0 {
            bytes[pos] &= 0x8F;
            bytes[pos] = (bytes[pos] & 0xF0) | [0, 1, 2, 8, 9, 10][rng.below(6)];
            bytes[pos + 1] = 0x80 | (bytes[pos + 1] % 40);
            pos += 6 + (bytes[pos + 1] & 0x7F) as usize;
        }
        let whole = run_stream(&bytes, bytes.len(), 1024);
        let segmented = run_stream(&bytes, 1 + rng.below(7), 1024);
        assert_eq!(whole, segmented, "input {bytes:?}");
        errors += whole.1.is_some() as usize;
        messages += whole.0.len();
    }
    // The generator must reach both outcomes, or the test proves little.
    assert!(errors > 100, "{errors} errors");
    assert!(messages > 100, "{messages} messages");
}

#[test]
fn error_messages_follow_the_house_style() {
    let e = WsError::MessageTooBig { size: 10, max: 5 };
    assert_eq!(
        e.to_string(),
        "could not read message: 10 bytes exceed the limit of 5"
    );
    assert!(
        WsError::ReservedBits(4)
            .to_string()
            .starts_with("could not")
    );
}
