//! permessage-deflate (RFC 7692, SPEC section 7) on real sockets: what the
//! 101 answers, a shared frame compressed once for every deflate subscriber,
//! compressed client messages inflated, and `[limits] compression = false`.
//! The client is raw TCP, so the test reads the wire itself (RSV1 and all).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use dockwire::ws::deflate::{Deflater, Inflater, RSV1};
use dockwire::ws::{OpCode, frame_payload};
use serde_json::{Value, json};

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// A raw WebSocket client: the 101's head, then whole frames as they come.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    head: String,
}

impl Raw {
    fn open(d: &Daemon, path: &str, extra: &str) -> Raw {
        let mut s = TcpStream::connect(d.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.write_all(upgrade_request(d.addr, path, extra).as_bytes())
            .unwrap();
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            head: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no 101 within 5 s");
            raw.fill();
        };
        raw.head = String::from_utf8_lossy(&raw.buf[..end]).into_owned();
        raw.buf.drain(..end);
        assert!(raw.head.starts_with("HTTP/1.1 101"), "{}", raw.head);
        raw
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16 << 10];
        match self.s.read(&mut chunk) {
            Ok(0) => panic!("the daemon closed the connection"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }

    /// The next whole server frame as (first byte, payload), within `within`.
    fn frame(&mut self, within: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 2 {
                let (len, skip) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(be) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= skip + len {
                    let b0 = self.buf[0];
                    let payload = self.buf[skip..skip + len].to_vec();
                    self.buf.drain(..skip + len);
                    return Some((b0, payload));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.fill();
        }
    }

    /// The next text message as JSON (inflated when RSV1 is set), and whether
    /// it came compressed; pings and other frames are skipped.
    fn json(&mut self, inflater: &mut Inflater, within: Duration) -> Option<(Value, bool)> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (b0, payload) = self.frame(left)?;
            if b0 & 0x0f != 0x1 {
                continue;
            }
            let compressed = b0 & RSV1 != 0;
            let text = if compressed {
                inflater.inflate(&payload, 1 << 20).expect("valid deflate")
            } else {
                payload
            };
            return Some((serde_json::from_slice(&text).expect("JSON"), compressed));
        }
    }

    fn send(&mut self, frame: &[u8]) {
        self.s.write_all(frame).unwrap();
    }
}

fn agent_setup() -> (String, String, String) {
    let key = "dwk_test_key_for_compression_0123456789";
    let hash = dockwire::auth::hash_api_key(key);
    let cfg =
        format!("[[agents]]\nname = \"zip\"\nkey_sha256 = \"{hash}\"\nserver_id = \"srv-zip\"\n");
    (key.to_string(), cfg, "srv-zip".to_string())
}

fn wait_metric(d: &Daemon, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.metric(series) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{series} = {:?}, want {want}",
            d.metric(series)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_101_accepts_an_offer_without_context_takeover_and_declines_what_it_cannot_honour() {
    let d = Daemon::start("");
    let raw = Raw::open(&d, "/api/v1/ws", OFFER);
    assert!(
        raw.head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ),
        "{}",
        raw.head
    );
    // A 9-bit server window cannot be honoured: that offer is declined, the next taken.
    let raw = Raw::open(
        &d,
        "/socket.io/?EIO=4&transport=websocket",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n",
    );
    assert!(
        !raw.head.contains("Sec-WebSocket-Extensions"),
        "{}",
        raw.head
    );
    let raw = Raw::open(
        &d,
        "/api/v1/ws",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; bogus, permessage-deflate\r\n",
    );
    assert!(raw.head.contains("permessage-deflate"), "{}", raw.head);
    // No offer, no extension.
    let raw = Raw::open(&d, "/api/v1/ws", "");
    assert!(
        !raw.head.contains("Sec-WebSocket-Extensions"),
        "{}",
        raw.head
    );

    let off = Daemon::start("[limits]\ncompression = false\n");
    let raw = Raw::open(&off, "/api/v1/ws", OFFER);
    assert!(
        !raw.head.contains("Sec-WebSocket-Extensions"),
        "{}",
        raw.head
    );
}

#[test]
fn a_published_frame_is_compressed_once_for_every_deflate_subscriber() {
    let (key, cfg, sid) = agent_setup();
    let d = Daemon::start(&cfg);
    let path = format!("/api/v1/ws/logs/{sid}");
    let mut zipped: Vec<Raw> = (0..5).map(|_| Raw::open(&d, &path, OFFER)).collect();
    let mut plain = Raw::open(&d, &path, "");
    wait_metric(&d, "dockwire_connections{endpoint=\"ws_logs\"}", 6.0);
    let mut agent = connect(&d.url("/api/v1/agents/ws"));
    send_json(&mut agent, &json!({"type": "auth", "api_key": key}));
    wait_type(&mut agent, "auth_success", Duration::from_secs(5));

    let before = d.metric("dockwire_ws_deflate_compressions_total").unwrap();
    let sent_before = d.metric("dockwire_ws_deflate_frames_sent_total").unwrap();
    let lines = 10;
    let words = "GET /api/v1/containers 200 in 3 ms from 10.0.0.7 ".repeat(10);
    for i in 0..lines {
        send_json(
            &mut agent,
            &json!({"type": "log", "server_id": sid, "level": "INFO",
                    "message": format!("{i} {words}")}),
        );
    }
    let mut inflater = Inflater::default();
    let mut want = Vec::new();
    while want.len() < lines {
        let (m, compressed) = plain
            .json(&mut inflater, Duration::from_secs(10))
            .expect("the plain subscriber gets every line");
        assert!(!compressed, "nothing compressed without an offer");
        if m["type"] == "log" {
            want.push(m);
        }
    }
    for (n, z) in zipped.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < lines {
            let (m, compressed) = z
                .json(&mut inflater, Duration::from_secs(10))
                .unwrap_or_else(|| panic!("subscriber {n} missed lines"));
            if m["type"] == "log" {
                assert!(
                    compressed,
                    "subscriber {n}: a {}-line log frame came plain",
                    lines
                );
                got.push(m);
            }
        }
        assert_eq!(got, want, "subscriber {n} inflates to the plain frames");
    }
    let compressions = d.metric("dockwire_ws_deflate_compressions_total").unwrap() - before;
    let sent = d.metric("dockwire_ws_deflate_frames_sent_total").unwrap() - sent_before;
    assert_eq!(
        compressions, lines as f64,
        "one compression per publish, not per socket"
    );
    assert_eq!(
        sent,
        5.0 * lines as f64,
        "every deflate subscriber got the shared frame"
    );
    assert!(d.metric("dockwire_ws_deflate_bytes_saved_total").unwrap() > 0.0);
}

#[test]
fn compressed_client_messages_are_inflated_and_bombs_refused() {
    let d = Daemon::start("[limits]\nmax_message_bytes = \"4KiB\"\n");
    let mut raw = Raw::open(&d, "/api/v1/ws", OFFER);
    let mut deflater = Deflater::default();
    let mut inflater = Inflater::default();
    let compressed = |deflater: &mut Deflater, payload: &[u8]| {
        let f = deflater.compress(OpCode::Text, payload, true).unwrap();
        let mut client = masked(0x1, true, frame_payload(&f));
        client[0] |= RSV1;
        client
    };
    // A compressed `ping` (padded past the small-frame size) gets its `pong`.
    let ping = json!({"type": "ping", "pad": "p".repeat(300)}).to_string();
    raw.send(&compressed(&mut deflater, ping.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (m, _) = raw
            .json(
                &mut inflater,
                deadline.saturating_duration_since(Instant::now()),
            )
            .expect("a pong for the compressed ping");
        if m["type"] == "pong" {
            break;
        }
    }
    assert_eq!(
        d.metric("dockwire_ws_deflate_messages_inflated_total"),
        Some(1.0)
    );
    // 1 MiB of zeros compresses to ~1 KiB: under the 4 KiB limit on the wire,
    // far past it once inflated. The daemon stops inflating and closes 1009.
    raw.send(&compressed(&mut deflater, &vec![b' '; 1 << 20]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (b0, payload) = raw
            .frame(deadline.saturating_duration_since(Instant::now()))
            .expect("a close frame");
        if b0 & 0x0f == 0x8 {
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
            break;
        }
    }
    // RSV1 without negotiation is a protocol error.
    let mut plain = Raw::open(&d, "/api/v1/ws", "");
    plain.send(&compressed(&mut deflater, ping.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (b0, payload) = plain
            .frame(deadline.saturating_duration_since(Instant::now()))
            .expect("a close frame");
        if b0 & 0x0f == 0x8 {
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
            break;
        }
    }
}
