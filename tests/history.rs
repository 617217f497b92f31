//! Metrics history over HTTP (SPEC section 7) against the real binary:
//! `GET /api/v1/servers/{id}/metrics?range=1h|6h|24h` for the local host,
//! fed by the daemon's own metrics thread at `metrics_interval = "1s"`.
//! Polls with a bounded deadline; no timing is asserted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The local server id, from the `connection_established` message.
fn local_server_id(d: &Daemon) -> String {
    let mut ws = connect(&d.url("/api/v1/ws"));
    let hello = wait_type(&mut ws, "connection_established", Duration::from_secs(5));
    hello["server_id"].as_str().unwrap().to_string()
}

fn history(d: &Daemon, id: &str, range: &str) -> (u16, Value) {
    let (st, body) = http_get(
        d.addr,
        &format!("/api/v1/servers/{id}/metrics?range={range}"),
    );
    (st, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn local_history_fills_at_the_metrics_interval() {
    let d = Daemon::start("metrics_interval = \"1s\"\n");
    let id = local_server_id(&d);
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let (st, v) = history(&d, &id, "1h");
        assert_eq!(st, 200, "{v}");
        if v["samples"].as_array().is_some_and(|s| s.len() >= 2) {
            break v;
        }
        assert!(Instant::now() < deadline, "fewer than 2 samples: {v}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(v["server_id"], id.as_str());
    assert_eq!(v["step_s"], 1);
    let samples = v["samples"].as_array().unwrap();
    for s in samples {
        for field in [
            "cpu_percent",
            "memory_percent",
            "memory_used",
            "memory_total",
        ] {
            assert!(s[field].is_number(), "{field} in {s}");
        }
        assert!(s["disk_usage"].is_array() && s["network"].is_array(), "{s}");
        assert_eq!(s["load_average"].as_array().map(Vec::len), Some(3), "{s}");
        assert!(
            s["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{s}"
        );
    }
    let stamps: Vec<&str> = samples
        .iter()
        .map(|s| s["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "oldest first");

    // Beyond an hour: one-minute averages, the minute in progress included.
    for range in ["6h", "24h"] {
        let (st, v) = history(&d, &id, range);
        assert_eq!(st, 200);
        assert_eq!(v["step_s"], 60, "{v}");
        let n = v["samples"].as_array().map_or(0, Vec::len);
        assert!((1..=2).contains(&n), "{range}: {v}");
    }
    // The default range is the last hour.
    let (st, body) = http_get(d.addr, &format!("/api/v1/servers/{id}/metrics"));
    assert_eq!(st, 200, "{body}");

    let (st, v) = history(&d, &id, "2h");
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1h, 6h, 24h"), "{v}");
    let (st, v) = history(&d, "no-such-server", "1h");
    assert_eq!(st, 404, "{v}");
}

#[test]
fn history_needs_a_token_when_auth_is_on() {
    let h = agent_hub(1, "");
    let (st, _) = history(&h.d, "srv-0", "1h");
    assert_eq!(st, 401);
    // An agent's samples are kept too (the hub's time, its own values).
    let mut agent = fake_agent(&h, 0);
    send_json(
        &mut agent,
        &serde_json::json!({"type": "metrics", "server_id": "srv-0", "cpu_percent": 12.5,
            "memory_percent": 40.0, "memory_used": 4, "memory_total": 10,
            "disk_usage": [{"mount": "/", "used": 1, "total": 2}],
            "network": [{"interface": "eth0", "rx_bytes": 3, "tx_bytes": 4}],
            "load_average": [0.5, 0.25, 0.125], "timestamp": "2026-01-01T00:00:00Z"}),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .arg("token")
        .arg("--secret-file")
        .arg(&h.secret)
        .args(["--sub", "t", "--role", "viewer", "--ttl", "1h"])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let raw = raw_request(
            h.d.addr,
            format!(
                "GET /api/v1/servers/srv-0/metrics?range=1h HTTP/1.1\r\nHost: {}\r\n\
                 Authorization: Bearer {token}\r\nConnection: close\r\n\r\n",
                h.d.addr
            )
            .as_bytes(),
        )
        .unwrap();
        let (st, body) = split_response(&raw);
        assert_eq!(st, 200, "{raw}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if let Some(s) = v["samples"].as_array().and_then(|s| s.first()) {
            assert_eq!(s["cpu_percent"], 12.5);
            assert_eq!(s["disk_usage"][0]["mount"], "/");
            assert_eq!(s["network"][0]["tx_bytes"], 4);
            assert_eq!(s["load_average"][2], 0.125);
            break;
        }
        assert!(Instant::now() < deadline, "no agent sample: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
