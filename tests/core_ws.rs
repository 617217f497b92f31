//! The WebSocket core against the real binary: handshake, control frames,
//! fragmentation, limits, slow consumers, broadcast to many sockets, and
//! the local host's metrics messages.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A raw upgraded socket with the 101 consumed.
fn raw_ws(d: &Daemon, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(upgrade_request(d.addr, path, "").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads server frames until a close frame; returns its code.
fn raw_close_code(s: &mut TcpStream) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).is_err() {
            return None;
        }
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).ok()?;
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).ok()?;
            len = u64::from_be_bytes(l) as usize;
        }
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).ok()?;
        if h[0] & 0x0f == 0x8 {
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
    }
    None
}

#[test]
fn connection_established_ping_pong_and_errors() {
    let d = Daemon::start("");
    let mut ws = connect(&d.url("/api/v1/ws"));
    let hello = wait_type(&mut ws, "connection_established", Duration::from_secs(5));
    assert!(hello["server_id"].as_str().is_some_and(|s| !s.is_empty()));
    let init = wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    assert!(init["containers"].is_array());

    send_json(&mut ws, &json!({"type": "ping"}));
    wait_type(&mut ws, "pong", Duration::from_secs(5));

    // WebSocket-level ping gets a pong with the same payload.
    ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = false;
    while Instant::now() < deadline && !got {
        if let Ok(Message::Pong(p)) = ws.read() {
            got = p.as_ref() == b"hi";
        }
    }
    assert!(got, "no pong");

    for bad in [
        "not json",
        "[]",
        r#"{"type":"teleport"}"#,
        r#"{"type":"start_log_stream"}"#,
        r#"{"no":"type"}"#,
    ] {
        ws.send(Message::text(bad)).unwrap();
        let e = wait_type(&mut ws, "error", Duration::from_secs(5));
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {e}"
        );
    }
    ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    wait_type(&mut ws, "error", Duration::from_secs(5));
    // Still usable after all that.
    send_json(&mut ws, &json!({"type": "ping"}));
    wait_type(&mut ws, "pong", Duration::from_secs(5));
    assert!(
        d.metric("dockwire_bad_input_total{kind=\"invalid_json\"}")
            .unwrap_or(0.0)
            >= 2.0
    );
}

#[test]
fn close_handshake_echoes_code() {
    let d = Daemon::start("");
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "connection_established", Duration::from_secs(5));
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut code = None;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                code = Some(u16::from(f.code));
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    assert_eq!(code, Some(1000));
}

#[test]
fn fragmented_message_is_reassembled() {
    let d = Daemon::start("");
    let mut s = raw_ws(&d, "/api/v1/ws");
    let msg = br#"{"type":"ping"}"#;
    let mut bytes = masked(0x1, false, &msg[..5]);
    bytes.extend(masked(0x9, true, b"mid")); // a ping between fragments
    bytes.extend(masked(0x0, false, &msg[5..9]));
    bytes.extend(masked(0x0, true, &msg[9..]));
    s.write_all(&bytes).unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !seen.contains(r#""type":"pong""#) {
        let n = s.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains(r#""type":"pong""#), "{seen}");
}

#[test]
fn oversized_message_closes_1009() {
    let d = Daemon::start("[limits]\nmax_message_bytes = \"1KiB\"\n");
    let mut s = raw_ws(&d, "/api/v1/ws");
    s.write_all(&masked(0x1, true, &vec![b'a'; 2048])).unwrap();
    assert_eq!(raw_close_code(&mut s), Some(1009));
}

#[test]
fn invalid_utf8_closes_1007() {
    let d = Daemon::start("");
    let mut s = raw_ws(&d, "/api/v1/ws");
    s.write_all(&masked(0x1, true, &[b'{', 0xff, 0xfe, b'}']))
        .unwrap();
    assert_eq!(raw_close_code(&mut s), Some(1007));
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let d = Daemon::start("");
    let mut s = raw_ws(&d, "/api/v1/ws");
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(raw_close_code(&mut s), Some(1002));
}

#[test]
fn pipelined_frame_after_head_is_kept() {
    let d = Daemon::start("[debug]\necho_endpoint = true\n");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = upgrade_request(d.addr, "/debug/echo", "").into_bytes();
    bytes.extend(masked(0x1, true, b"early bird"));
    s.write_all(&bytes).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !seen.windows(10).any(|w| w == b"early bird") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.windows(10).any(|w| w == b"early bird"));
}

#[test]
fn local_metrics_message_shape() {
    let d = Daemon::start("metrics_interval = \"200ms\"\n");
    let mut ws = connect(&d.url("/api/v1/ws"));
    let m = wait_type(&mut ws, "metrics", Duration::from_secs(10));
    let server_id = m["server_id"].as_str().unwrap().to_string();
    let data = &m["data"];
    for k in [
        "cpu_percent",
        "memory_percent",
        "memory_used",
        "memory_total",
    ] {
        assert!(data[k].is_number(), "{k} in {data}");
    }
    assert!(data["disk_usage"].is_array());
    assert!(data["network"].is_array());
    assert_eq!(data["load_average"].as_array().map(Vec::len), Some(3));
    assert!(data["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    let pct = data["memory_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct));

    // The single-server endpoint sends the plain form, latest sample first.
    let mut single = connect(&d.url(&format!("/api/v1/ws/metrics/{server_id}")));
    let m = wait_type(&mut single, "metrics", Duration::from_secs(5));
    assert!(m.get("server_id").is_none());
    assert!(m["data"]["memory_total"].as_u64().unwrap() > 0);

    // An unknown server id gets an error and a close.
    let mut unknown = connect(&d.url("/api/v1/ws/metrics/not-a-server"));
    let e = wait_type(&mut unknown, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("Unknown server_id"));
    assert_eq!(wait_close(&mut unknown, Duration::from_secs(5)), Some(1008));
}

#[test]
fn idle_socket_gets_pinged_and_silent_one_is_closed() {
    let d = Daemon::start("[limits]\nping_interval = \"300ms\"\nidle_timeout = \"1500ms\"\n");
    let mut s = raw_ws(&d, "/api/v1/ws");
    // Never answer: expect pings, then a close (1001) after the idle timeout.
    let mut saw_ping = false;
    let mut code = None;
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).is_err() {
            break;
        }
        let len = (h[1] & 0x7f) as usize;
        let len = if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        } else {
            len
        };
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).unwrap();
        match h[0] & 0x0f {
            0x9 => saw_ping = true,
            0x8 => {
                code = Some(u16::from_be_bytes([p[0], p[1]]));
                break;
            }
            _ => {}
        }
    }
    assert!(saw_ping, "server sent no ping");
    assert_eq!(code, Some(1001));
}

/// Agent fan-out drives a broadcast: one agent's log reaches many sockets.
fn agent_config() -> (String, String, String) {
    let key = "dwk_test_key_for_core_tests_0123456789";
    let hash = dockwire::auth::hash_api_key(key);
    let cfg =
        format!("[[agents]]\nname = \"core\"\nkey_sha256 = \"{hash}\"\nserver_id = \"srv-core\"\n");
    (key.to_string(), cfg, "srv-core".to_string())
}

fn agent_connect(d: &Daemon, key: &str) -> Ws {
    let mut a = connect(&d.url("/api/v1/agents/ws"));
    send_json(&mut a, &json!({"type": "auth", "api_key": key}));
    let ok = wait_type(&mut a, "auth_success", Duration::from_secs(5));
    assert_eq!(ok["message"], "Connected successfully");
    a
}

#[test]
fn thousand_sockets_all_receive_a_broadcast() {
    let (key, cfg, sid) = agent_config();
    let d = Daemon::start(&cfg);
    let mut subs: Vec<Ws> = (0..1000)
        .map(|_| connect(&d.url(&format!("/api/v1/ws/logs/{sid}"))))
        .collect();
    // Subscriptions are registered once the daemon processed each upgrade.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.metric("dockwire_connections{endpoint=\"ws_logs\"}") != Some(1000.0) {
        assert!(Instant::now() < deadline, "subscribers not all registered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut agent = agent_connect(&d, &key);
    send_json(
        &mut agent,
        &json!({"type": "log", "server_id": sid, "level": "WARN", "message": "hello all", "timestamp": "2026-11-23T00:00:00Z"}),
    );
    for (i, s) in subs.iter_mut().enumerate() {
        let m = wait_type(s, "log", Duration::from_secs(10));
        assert_eq!(m["data"]["message"], "hello all", "subscriber {i}");
        assert_eq!(m["data"]["level"], "WARN");
    }
}

#[test]
fn never_reading_client_is_capped_and_others_keep_receiving() {
    let (key, mut cfg, sid) = agent_config();
    cfg.push_str("[limits]\nmax_queued_bytes = \"256KiB\"\n");
    let d = Daemon::start(&cfg);
    // The slow client: a raw socket with a tiny receive buffer that never reads.
    let slow = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&d.addr.into()).unwrap();
        let mut s: TcpStream = s.into();
        s.write_all(upgrade_request(d.addr, &format!("/api/v1/ws/logs/{sid}"), "").as_bytes())
            .unwrap();
        s
    };
    let mut good = connect(&d.url(&format!("/api/v1/ws/logs/{sid}")));
    let mut agent = agent_connect(&d, &key);
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = d.rss_kib();
    let line = "x".repeat(1000);
    let total = 8000; // ~8 MB offered to the slow socket, 32x its cap
    // The good client reads on its own thread; the sender stays at most
    // 200 lines ahead of it, so only the never-reading socket falls behind.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = progress.clone();
    let reader = std::thread::spawn(move || {
        let mut received = 0;
        let mut in_order = true;
        let deadline = Instant::now() + Duration::from_secs(60);
        while received < total && Instant::now() < deadline {
            if let Some(m) = next_json(&mut good, Duration::from_millis(200))
                && m["type"] == "log"
            {
                let n: usize = m["data"]["message"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                in_order &= n == received;
                received += 1;
                seen.store(received, std::sync::atomic::Ordering::Relaxed);
            }
        }
        (received, in_order)
    });
    for i in 0..total {
        send_json(
            &mut agent,
            &json!({"type": "log", "server_id": sid, "level": "INFO", "message": format!("{i} {line}")}),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while i > progress.load(std::sync::atomic::Ordering::Relaxed) + 200
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (received, in_order) = reader.join().unwrap();
    assert!(in_order, "lines arrived in order");
    assert_eq!(received, total, "the reading client got every line");
    let dropped = d.metric("dockwire_frames_dropped_total").unwrap();
    assert!(dropped > 0.0, "the slow client's frames were dropped");
    let rss_after = d.rss_kib();
    // Offered 8 MB to the slow socket; its queue is capped at 256 KiB.
    assert!(
        rss_after < rss_before + 3 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(slow);
}
