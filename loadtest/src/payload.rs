//! Send timestamps carried in payloads, and the cheap scanners that find them.
//!
//! A *stamp line* is `<ns> <seq> <filler>`: `<ns>` is CLOCK_REALTIME in
//! nanoseconds when the line was made (the same host clock for every process
//! on this machine), `<seq>` counts from 1 per publisher (0 or missing means
//! "no sequence"), and the filler pads the line to the requested payload size.
//! Only `<ns>` is required, so a container printing `date +%s%N` output works.
//!
//! The scanners read server JSON without building a DOM: the hot path sees
//! 100,000+ messages a second and must cost far less than the server does.
//! They rely on one JSON property: inside a string every `"` is escaped, so an
//! unescaped `"key":` can only be a real key.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends a stamp line of at least `size` bytes (`ns seq xxxx…`) to `out`.
/// The line is longer than `size` only when the two numbers alone are.
pub fn write_stamp_line(out: &mut Vec<u8>, ns: u64, seq: u64, size: usize) {
    let start = out.len();
    let _ = write!(out, "{ns} {seq} ");
    let used = out.len() - start;
    let fill = size.saturating_sub(used).max(1);
    out.resize(out.len() + fill, b'x');
}

/// A timestamp and sequence number read back from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub ns: u64,
    /// 0 when the payload carried no sequence number.
    pub seq: u64,
}

/// Parses the leading `<ns> [<seq>]` of a stamp line.
pub fn parse_stamp_line(line: &[u8]) -> Option<Stamp> {
    let line = trim_start(line);
    let (ns, used) = parse_u64(line)?;
    // A plausible wall-clock time in ns has 18-19 digits; anything shorter is
    // probably not a stamp (e.g. a container printing other numbers).
    if used < 16 {
        return None;
    }
    let rest = &line[used..];
    let seq = if rest.first() == Some(&b' ') {
        parse_u64(&rest[1..]).map(|(v, _)| v).unwrap_or(0)
    } else {
        0
    };
    Some(Stamp { ns, seq })
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

/// Leading decimal digits as a u64 and how many bytes they took.
pub fn parse_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// Position just past `"key":` (and any spaces) in `buf`.
fn after_key(buf: &[u8], key: &str) -> Option<usize> {
    let k = key.as_bytes();
    let mut from = 0;
    while from + k.len() + 3 <= buf.len() {
        let rel = memfind(&buf[from..], b'"', k)?;
        let at = from + rel;
        let mut p = at + 1 + k.len();
        if buf.get(p) == Some(&b'"') {
            p += 1;
            while buf.get(p).is_some_and(|c| *c == b' ') {
                p += 1;
            }
            if buf.get(p) == Some(&b':') {
                p += 1;
                while buf.get(p).is_some_and(|c| *c == b' ') {
                    p += 1;
                }
                return Some(p);
            }
        }
        from = at + 1;
    }
    None
}

/// Finds `"` immediately followed by `key`.
fn memfind(hay: &[u8], quote: u8, key: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 + key.len() <= hay.len() {
        if hay[i] == quote && &hay[i + 1..i + 1 + key.len()] == key {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The raw (still escaped) contents of the string value of `"key"`.
pub fn str_field<'a>(buf: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let p = after_key(buf, key)?;
    if buf.get(p) != Some(&b'"') {
        return None;
    }
    let start = p + 1;
    let mut i = start;
    while i < buf.len() {
        match buf[i] {
            b'\\' => i += 2,
            b'"' => return Some(&buf[start..i]),
            _ => i += 1,
        }
    }
    None
}

/// The value of `"key"` as a u64, whether written as a number or a string of digits.
pub fn u64_field(buf: &[u8], key: &str) -> Option<u64> {
    let p = after_key(buf, key)?;
    let rest = &buf[p..];
    let rest = rest.strip_prefix(b"\"").unwrap_or(rest);
    parse_u64(rest).map(|(v, _)| v)
}

/// Calls `f` for each line of an escaped JSON string whose lines are joined
/// by the two characters `\n` (what a serializer writes for a newline).
/// Empty lines (e.g. after a trailing newline) are skipped.
pub fn for_each_escaped_line(content: &[u8], mut f: impl FnMut(&[u8])) {
    let mut start = 0;
    let mut i = 0;
    while i < content.len() {
        if content[i] == b'\\' {
            if content.get(i + 1) == Some(&b'n') {
                if i > start {
                    f(&content[start..i]);
                }
                i += 2;
                start = i;
                continue;
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    if start < content.len() {
        f(&content[start..]);
    }
}

/// The JSON-dialect `type` of a server message, if any.
///
/// Constant time when `type` is the object's first or last member (what
/// servers write: dockwire writes it first, serde_json maps sort it last),
/// so the load generator spends the same per frame whatever the key order
/// of the server it measures; any other place is found by a scan.
pub fn msg_type(buf: &[u8]) -> Option<&[u8]> {
    const FIRST: &[u8] = br#"{"type":""#;
    const LAST: &[u8] = br#","type":""#;
    if let Some(rest) = buf.strip_prefix(FIRST)
        && let Some(end) = rest.iter().position(|b| *b == b'"' || *b == b'\\')
        && rest[end] == b'"'
    {
        return Some(&rest[..end]);
    }
    // `..,"type":"name"}`: the value is a plain name (no quote, no escape).
    if let Some(body) = buf.strip_suffix(b"\"}") {
        let tail = &body[body.len().saturating_sub(64)..];
        if let Some(at) = tail.windows(LAST.len()).rposition(|w| w == LAST)
            && let name = &tail[at + LAST.len()..]
            && !name.iter().any(|b| *b == b'"' || *b == b'\\')
        {
            return Some(name);
        }
    }
    str_field(buf, "type")
}

/// A Socket.IO packet, as far as the load generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum SioPacket<'a> {
    /// Engine.IO open `0{...}` with its ping interval in ms.
    Open {
        ping_interval_ms: u64,
    },
    /// Engine.IO ping `2` (the server's heartbeat; answer `3`).
    Ping,
    /// Socket.IO CONNECT acknowledged (`40{...}`).
    Connected,
    /// Socket.IO CONNECT_ERROR (`44{...}`).
    ConnectError,
    /// An event `42["name",...]`; `body` is the whole array text.
    Event {
        name: &'a [u8],
        body: &'a [u8],
    },
    /// Engine.IO close `1`.
    Close,
    Other,
}

/// Classifies one Engine.IO text message.
pub fn parse_sio(msg: &[u8]) -> SioPacket<'_> {
    match msg.first() {
        Some(b'0') => SioPacket::Open {
            ping_interval_ms: u64_field(msg, "pingInterval").unwrap_or(25_000),
        },
        Some(b'1') => SioPacket::Close,
        Some(b'2') => SioPacket::Ping,
        Some(b'4') => match msg.get(1) {
            Some(b'0') => SioPacket::Connected,
            Some(b'4') => SioPacket::ConnectError,
            Some(b'2') => {
                // 42["name",...] possibly with a namespace `42/ns,` or ack id.
                let Some(open) = msg.iter().position(|c| *c == b'[') else {
                    return SioPacket::Other;
                };
                let body = &msg[open..];
                match body.get(1) {
                    Some(b'"') => {
                        let name_start = 2;
                        let Some(len) = body[name_start..].iter().position(|c| *c == b'"') else {
                            return SioPacket::Other;
                        };
                        SioPacket::Event {
                            name: &body[name_start..name_start + len],
                            body,
                        }
                    }
                    _ => SioPacket::Other,
                }
            }
            _ => SioPacket::Other,
        },
        _ => SioPacket::Other,
    }
}

/// JSON-escapes `s` as the contents of a string (without the quotes).
pub fn json_escape_into(out: &mut Vec<u8>, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_line_roundtrip_and_size() {
        let mut out = Vec::new();
        write_stamp_line(&mut out, 1_754_000_000_123_456_789, 42, 100);
        assert_eq!(out.len(), 100);
        assert!(out.starts_with(b"1754000000123456789 42 xxx"));
        assert_eq!(
            parse_stamp_line(&out),
            Some(Stamp {
                ns: 1_754_000_000_123_456_789,
                seq: 42
            })
        );
        // A tiny requested size still gives the numbers and one filler byte.
        let mut short = Vec::new();
        write_stamp_line(&mut short, 1_754_000_000_123_456_789, 7, 4);
        assert_eq!(short, b"1754000000123456789 7 x");
    }

    #[test]
    fn stamp_line_variants() {
        // `date +%s%N` output alone: no sequence.
        assert_eq!(
            parse_stamp_line(b"1754000000123456789"),
            Some(Stamp {
                ns: 1_754_000_000_123_456_789,
                seq: 0
            })
        );
        assert_eq!(
            parse_stamp_line(b"  1754000000123456789 hello"),
            Some(Stamp {
                ns: 1_754_000_000_123_456_789,
                seq: 0
            })
        );
        assert_eq!(
            parse_stamp_line(b"12 3 xx"),
            None,
            "too short to be a ns clock"
        );
        assert_eq!(parse_stamp_line(b"hello"), None);
        assert_eq!(
            parse_stamp_line(b"99999999999999999999999 1"),
            None,
            "overflow"
        );
    }

    #[test]
    fn now_is_plausible() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 1_600_000_000_000_000_000);
        assert!(b >= a);
    }

    #[test]
    fn string_and_number_fields() {
        let m = br#"{"type":"log","data":{"level":"INFO","message":"1754000000123456789 5 xx","timestamp":"t"}}"#;
        assert_eq!(msg_type(m), Some(&b"log"[..]));
        assert_eq!(
            str_field(m, "message"),
            Some(&b"1754000000123456789 5 xx"[..])
        );
        let spaced =
            br#"{ "type" : "metrics", "data": {"sent_ns": 1754000000123456789, "seq":"9"}}"#;
        assert_eq!(msg_type(spaced), Some(&b"metrics"[..]));
        assert_eq!(
            u64_field(spaced, "sent_ns"),
            Some(1_754_000_000_123_456_789)
        );
        assert_eq!(u64_field(spaced, "seq"), Some(9));
        assert_eq!(u64_field(spaced, "missing"), None);
        // A key name that appears escaped inside a string value is not a key.
        let tricky = br#"{"log":"say \"type\":\"x\" now","type":"log_update"}"#;
        assert_eq!(msg_type(tricky), Some(&b"log_update"[..]));
        // First or last member, either key order of the same message.
        let last = br#"{"data":{"level":"INFO","message":"m"},"type":"log"}"#;
        assert_eq!(msg_type(last), Some(&b"log"[..]));
        let nested_last = br#"{"type":"log","data":{"type":"inner"}}"#;
        assert_eq!(msg_type(nested_last), Some(&b"log"[..]));
        let escaped_tail = br#"{"type":"alert","data":{"x":"a,\"type\":\"no"}}"#;
        assert_eq!(msg_type(escaped_tail), Some(&b"alert"[..]));
        assert_eq!(
            str_field(tricky, "log"),
            Some(&br#"say \"type\":\"x\" now"#[..])
        );
        // Prefix of another key is not a match.
        assert_eq!(
            str_field(br#"{"types":"a","type":"b"}"#, "type"),
            Some(&b"b"[..])
        );
        // Unterminated string.
        assert_eq!(str_field(br#"{"type":"abc"#, "type"), None);
    }

    #[test]
    fn escaped_lines_split() {
        let mut lines = Vec::new();
        for_each_escaped_line(br#"a 1\nb \"q\" 2\n\nc\\n 3\n"#, |l| lines.push(l.to_vec()));
        assert_eq!(
            lines,
            vec![
                b"a 1".to_vec(),
                br#"b \"q\" 2"#.to_vec(),
                br#"c\\n 3"#.to_vec()
            ]
        );
        let mut n = 0;
        for_each_escaped_line(b"", |_| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn socketio_packets() {
        assert_eq!(
            parse_sio(br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#),
            SioPacket::Open {
                ping_interval_ms: 25000
            }
        );
        assert_eq!(parse_sio(b"2"), SioPacket::Ping);
        assert_eq!(parse_sio(br#"40{"sid":"x"}"#), SioPacket::Connected);
        assert_eq!(parse_sio(br#"44{"message":"no"}"#), SioPacket::ConnectError);
        let ev = br#"42["log_update",{"container_id":"c","log":"1754000000123456789 1 x"}]"#;
        match parse_sio(ev) {
            SioPacket::Event { name, body } => {
                assert_eq!(name, b"log_update");
                assert_eq!(
                    str_field(body, "log"),
                    Some(&b"1754000000123456789 1 x"[..])
                );
            }
            other => panic!("not an event: {other:?}"),
        }
        assert!(
            matches!(parse_sio(br#"42/admin,["message",{}]"#), SioPacket::Event { name, .. } if name == b"message")
        );
        assert_eq!(parse_sio(b"3"), SioPacket::Other);
        assert_eq!(parse_sio(b"42"), SioPacket::Other);
    }

    #[test]
    fn escape_for_json() {
        let mut out = Vec::new();
        json_escape_into(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "a\\\"b\\\\c\\nd\\u0001é".as_bytes());
        let v: String = serde_json::from_slice(&[b"\"".as_slice(), &out, b"\""].concat()).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }
}
