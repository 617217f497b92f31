//! HTTP/1.1 on the WebSocket port: request heads parsed with httparse, the
//! RFC 6455 upgrade checks, and the few plain replies the daemon gives.
//! Which request gets which answer is decided in [`router`].
//!
//! Invariant: nothing here blocks or allocates per byte; a head is parsed
//! from the connection's input buffer, and bytes after the head stay there
//! for the WebSocket reader (pipelined frames are not lost).

pub mod router;

use base64::Engine as _;
use sha1_smol::Sha1;

/// The WebSocket GUID of RFC 6455 section 1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEADERS: usize = 48;

/// The parts of a request head the daemon uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: String,
    pub host: Option<String>,
    pub origin: Option<String>,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    /// `Sec-WebSocket-Extensions`, every such header joined with `, `.
    pub ws_extensions: Option<String>,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
    /// `Connection: close` was asked for.
    pub connection_close: bool,
    /// The `Cookie` header(s), joined with `; `.
    pub cookie: Option<String>,
    /// `Content-Length`, when sent and valid.
    pub content_length: Option<u64>,
    /// `Content-Length` unparseable, or sent twice with different values.
    pub bad_length: bool,
    /// A `Transfer-Encoding` was sent (not supported: send Content-Length).
    pub transfer_encoding: bool,
    /// The `Accept-Encoding` header, as sent (static files: gzip or not).
    pub accept_encoding: Option<String>,
    /// The `If-None-Match` header, as sent (static files: 304).
    pub if_none_match: Option<String>,
    /// Bytes the head took, to consume from the buffer.
    pub head_len: usize,
    /// The request body (`Content-Length` bytes), filled in once read.
    pub body: Vec<u8>,
}

/// Outcome of parsing the start of a buffer.
// A `Parse` lives for one call and is destructured at once; boxing the head
// would cost an allocation per request to save a move of ~300 bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    Complete(RequestHead),
    /// Need more bytes.
    Partial,
    /// Not HTTP; answer 400 and close.
    Invalid(&'static str),
}

/// Parses a request head from `buf`.
pub fn parse_head(buf: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parse::Invalid("too many headers"),
        Err(_) => return Parse::Invalid("malformed HTTP request"),
    };
    if req.version != Some(1) {
        return Parse::Invalid("HTTP/1.1 required");
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = RequestHead {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        head_len,
        ..RequestHead::default()
    };
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            // Framing headers must not be skipped: the body would be read as a request.
            head.bad_length |= h.name.eq_ignore_ascii_case("content-length");
            head.transfer_encoding |= h.name.eq_ignore_ascii_case("transfer-encoding");
            continue;
        };
        let value = value.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            head.host = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            head.connection_close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("cookie") {
            head.cookie = Some(match head.cookie.take() {
                Some(prev) => format!("{prev}; {value}"),
                None => value.to_string(),
            });
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n)
                    if value.bytes().all(|b| b.is_ascii_digit())
                        && head.content_length.is_none_or(|prev| prev == n) =>
                {
                    head.content_length = Some(n);
                }
                _ => head.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            head.accept_encoding = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            head.ws_extensions = Some(match head.ws_extensions.take() {
                Some(prev) => format!("{prev}, {value}"),
                None => value.to_string(),
            });
        }
    }
    Parse::Complete(head)
}

/// Why an upgrade request is refused, with its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
    pub extra_headers: &'static str,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            extra_headers: "",
        }
    }
}

/// Checks the RFC 6455 upgrade rules; returns the `Sec-WebSocket-Accept` value.
///
/// # Errors
/// The refusal to send: 405 for a method other than GET, 426 for a missing
/// upgrade or a version other than 13, 400 for a missing or bad key.
pub fn check_upgrade(head: &RequestHead) -> Result<String, Refusal> {
    if head.method != "GET" {
        return Err(Refusal {
            status: 405,
            message: "WebSocket upgrades must use GET".into(),
            extra_headers: "Allow: GET\r\n",
        });
    }
    if !head.upgrade_websocket || !head.connection_upgrade {
        return Err(Refusal {
            status: 426,
            message:
                "this endpoint speaks WebSocket: send Upgrade: websocket and Connection: Upgrade"
                    .into(),
            extra_headers: "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        });
    }
    if head.ws_version.as_deref() != Some("13") {
        return Err(Refusal {
            status: 426,
            message: "only WebSocket version 13 is supported".into(),
            extra_headers: "Sec-WebSocket-Version: 13\r\n",
        });
    }
    let key = head
        .ws_key
        .as_deref()
        .ok_or_else(|| Refusal::new(400, "missing Sec-WebSocket-Key"))?;
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => {}
        _ => {
            return Err(Refusal::new(
                400,
                "Sec-WebSocket-Key must be 16 bytes in base64",
            ));
        }
    }
    Ok(accept_key(key))
}

/// `base64(sha1(key + GUID))`, RFC 6455 section 4.2.2.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// Browser endpoints only: the SPEC section 4 Origin rule.
pub fn origin_allowed(head: &RequestHead, allowed: &[String]) -> bool {
    let Some(origin) = head.origin.as_deref() else {
        return true; // non-browser clients send none
    };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    // Same origin: the Origin's authority equals the Host header.
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    head.host
        .as_deref()
        .is_some_and(|h| h.eq_ignore_ascii_case(authority))
}

/// The value of query parameter `name` (the part after `?`; a leading `?`
/// is tolerated): the first one given, `""` for a bare `name`.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .strip_prefix('?')
        .unwrap_or(query)
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The 101 reply; `deflate`: with the permessage-deflate answer
/// ([`crate::ws::deflate::RESPONSE`]).
pub fn switching_protocols(accept: &str, deflate: bool) -> Vec<u8> {
    let extensions = if deflate {
        format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            crate::ws::deflate::RESPONSE
        )
    } else {
        String::new()
    };
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extensions}\r\n"
    )
    .into_bytes()
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        421 => "Misdirected Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A complete response that closes the connection.
pub fn response(status: u16, content_type: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    reply(status, content_type, extra_headers, body, false)
}

/// A complete response; `keep_alive`: the connection takes another request.
pub fn reply(
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: {connection}\r\nCache-Control: no-store\r\n{extra_headers}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error reply: `{"error":"..."}`.
pub fn error_response(status: u16, extra_headers: &str, message: &str) -> Vec<u8> {
    error_reply(status, extra_headers, message, false)
}

/// [`error_response`] that may keep the connection open.
pub fn error_reply(status: u16, extra_headers: &str, message: &str, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    reply(
        status,
        "application/json",
        extra_headers,
        body.as_bytes(),
        keep_alive,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /api/v1/ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1:7575\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc6455_sample_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_upgrade_and_keeps_pipelined_bytes() {
        let mut buf = UPGRADE.to_vec();
        buf.extend_from_slice(b"\x81\x85extra");
        let Parse::Complete(h) = parse_head(&buf) else {
            panic!("not complete")
        };
        assert_eq!(h.path, "/api/v1/ws");
        assert_eq!(h.query, "x=1");
        assert_eq!(h.head_len, UPGRADE.len());
        assert_eq!(check_upgrade(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(&buf[h.head_len..], b"\x81\x85extra");
    }

    #[test]
    fn partial_and_invalid_heads() {
        assert_eq!(parse_head(&UPGRADE[..30]), Parse::Partial);
        assert!(matches!(
            parse_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Parse::Invalid(_)
        ));
    }

    #[test]
    fn refusals() {
        let Parse::Complete(mut h) = parse_head(UPGRADE) else {
            panic!()
        };
        h.ws_version = Some("8".into());
        assert_eq!(check_upgrade(&h).unwrap_err().status, 426);
        h.ws_version = Some("13".into());
        h.ws_key = None;
        assert_eq!(check_upgrade(&h).unwrap_err().status, 400);
        h.ws_key = Some("short".into());
        assert_eq!(check_upgrade(&h).unwrap_err().status, 400);
        h.method = "POST".into();
        assert_eq!(check_upgrade(&h).unwrap_err().status, 405);
    }

    #[test]
    fn origin_rules() {
        let Parse::Complete(mut h) = parse_head(UPGRADE) else {
            panic!()
        };
        assert!(origin_allowed(&h, &[]));
        h.origin = Some("http://127.0.0.1:7575".into());
        assert!(origin_allowed(&h, &[]));
        h.origin = Some("https://evil.example".into());
        assert!(!origin_allowed(&h, &[]));
        assert!(origin_allowed(&h, &["https://evil.example".into()]));
    }

    /// The property `fuzz/fuzz_targets/http_head.rs` checks, over mutations
    /// of a real upgrade request (a cheap stand-in for the fuzzer in CI).
    #[test]
    fn mutated_heads_never_panic_and_prefixes_agree() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut data = UPGRADE.to_vec();
            for _ in 0..(next() % 6) {
                let i = (next() as usize) % data.len();
                data[i] = next() as u8;
            }
            let cut = (next() as usize) % (data.len() + 1);
            let whole = parse_head(&data);
            if let Parse::Complete(h) = &whole {
                assert!(h.head_len <= data.len());
                let _ = check_upgrade(h);
                let _ = origin_allowed(h, &["https://dash.example.com".to_string()]);
                assert_eq!(parse_head(&data[..h.head_len]), whole);
            }
            if let Parse::Complete(h) = parse_head(&data[..cut]) {
                assert!(matches!(&whole, Parse::Complete(w) if *w == h));
            }
        }
    }
}
