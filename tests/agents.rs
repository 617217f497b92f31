//! The agent hub end to end: API keys, browser JWTs, routing of metrics and
//! logs, commands with roles/timeouts/disconnects, and real `dockwire agent`
//! processes (allowlist, log-file rotation, reconnect after a hub restart).

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use dockwire::auth::{Role, sign_token};
use serde_json::{Value, json};

/// Asserts no message of `kind` arrives within `within`.
fn assert_silent(ws: &mut Ws, kind: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(m) = next_json(ws, deadline.saturating_duration_since(Instant::now())) {
            assert_ne!(m["type"], kind, "unexpected {m}");
        }
    }
}

#[test]
fn agent_keys_good_bad_and_replacement() {
    let h = agent_hub(2, "");
    let mut a = fake_agent(&h, 0);

    for bad in [
        json!({"type": "auth", "api_key": "dwk_wrong"}),
        json!({"type": "auth"}),
        json!({"type": "metrics"}),
    ] {
        let mut b = connect(&h.d.url("/api/v1/agents/ws"));
        send_json(&mut b, &bad);
        let e = wait_type(&mut b, "error", Duration::from_secs(5));
        assert_eq!(e["message"], "Invalid or inactive API key");
        assert_eq!(wait_close(&mut b, Duration::from_secs(5)), Some(1008));
    }
    // The operator is told, with the peer's address, once for the burst.
    let log = h.d.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused an agent from"))
        .collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(
        refusals[0].contains("from 127.0.0.1: invalid or inactive API key"),
        "{log}"
    );
    assert!(
        h.d.metric("dockwire_auth_failures_total{kind=\"bad_api_key\"}")
            .unwrap()
            >= 1.0
    );

    // A second connection with the same key replaces the first.
    let mut a2 = fake_agent(&h, 0);
    assert_eq!(wait_close(&mut a, Duration::from_secs(5)), Some(1008));
    assert_eq!(h.d.metric("dockwire_agents_connected"), Some(1.0));
    // The operator is told, with both addresses and what to do; a host
    // flapping between two agents is told once, not at every replacement.
    let warning = "two agents use the key of";
    let log = h.d.log();
    let line = log
        .lines()
        .find(|l| l.contains(warning))
        .unwrap_or_else(|| panic!("no shared-key warning in the log:\n{log}"));
    assert!(
        line.contains("127.0.0.1") && line.contains("dockwire keygen"),
        "{line}"
    );
    let _a3 = fake_agent(&h, 0);
    assert_eq!(wait_close(&mut a2, Duration::from_secs(5)), Some(1008));
    assert_eq!(h.d.log().matches(warning).count(), 1, "{}", h.d.log());
}

#[test]
fn agent_bad_input_gets_error_and_stays() {
    let h = agent_hub(1, "");
    let mut a = fake_agent(&h, 0);
    for bad in ["not json", r#"{"type":"dance"}"#, "[1,2]"] {
        a.send(tungstenite::Message::text(bad)).unwrap();
        let e = wait_type(&mut a, "error", Duration::from_secs(5));
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("Invalid message format"),
            "{e}"
        );
    }
    // Still connected and useful: a response to an unknown command is dropped and counted.
    send_json(
        &mut a,
        &json!({"type": "command_response", "command_id": "nope", "output": "", "exit_code": 0, "duration_ms": 1}),
    );
    send_json(&mut a, &json!({"type": "ping"}));
    wait_type(&mut a, "pong", Duration::from_secs(5));
    assert_eq!(
        h.d.metric("dockwire_unknown_command_responses_total"),
        Some(1.0)
    );
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn every_bad_token_kind_is_refused_with_1008() {
    let h = agent_hub(0, "");
    let payload = json!({"sub": "x", "role": "admin", "exp": unix_now() + 3600});
    let other_secret = sign_token(
        b"another-secret-another-secret-xx",
        "x",
        Role::Admin,
        Duration::from_secs(3600),
        unix_now(),
    )
    .unwrap();
    let expired = sign_token(
        TEST_SECRET,
        "x",
        Role::Admin,
        Duration::from_secs(60),
        unix_now() - 7200,
    )
    .unwrap();
    let good = token(Role::Admin);
    let mut tampered: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(&json!({"sub": "root", "role": "admin", "exp": unix_now() + 3600}));
    tampered[1] = &forged_payload;
    let cases = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&payload)
            ),
        ),
        (
            "HS384",
            format!("{}.{}.c2ln", b64(&json!({"alg": "HS384"})), b64(&payload)),
        ),
        (
            "RS256",
            format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&payload)),
        ),
        ("bad signature", other_secret),
        ("tampered payload", tampered.join(".")),
        ("expired", expired),
        ("malformed", "not-a-jwt".to_string()),
        ("no exp", {
            use hmac::{KeyInit, Mac};
            let head = b64(&json!({"alg": "HS256", "typ": "JWT"}));
            let body = b64(&json!({"sub": "x", "role": "admin"}));
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(TEST_SECRET).unwrap();
            mac.update(format!("{head}.{body}").as_bytes());
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(mac.finalize().into_bytes());
            format!("{head}.{body}.{sig}")
        }),
    ];
    for path in [
        "/api/v1/ws",
        "/api/v1/ws/metrics/srv-x",
        "/api/v1/ws/logs/srv-x",
    ] {
        for (name, tok) in &cases {
            let mut b = connect(&h.d.url(path));
            send_json(&mut b, &json!({"type": "auth", "token": tok}));
            let e = wait_type(&mut b, "error", Duration::from_secs(5));
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("Authentication failed"),
                "{path} {name}: {e}"
            );
            assert_eq!(
                wait_close(&mut b, Duration::from_secs(5)),
                Some(1008),
                "{path} {name}"
            );
        }
    }
    // A first message that is not auth is refused too.
    let mut b = connect(&h.d.url("/api/v1/ws"));
    send_json(&mut b, &json!({"type": "ping"}));
    wait_type(&mut b, "error", Duration::from_secs(5));
    assert_eq!(wait_close(&mut b, Duration::from_secs(5)), Some(1008));
    // A good token works, and the socket gets the usual greeting.
    let mut ok = browser(&h, "/api/v1/ws", Role::Viewer);
    wait_type(&mut ok, "connection_established", Duration::from_secs(5));
    for kind in [
        "expired",
        "bad_signature",
        "bad_alg",
        "malformed",
        "missing_exp",
    ] {
        assert!(
            h.d.metric(&format!("dockwire_auth_failures_total{{kind=\"{kind}\"}}"))
                .unwrap_or(0.0)
                >= 1.0,
            "auth failure kind {kind} counted"
        );
    }
}

#[test]
fn unauthenticated_socket_is_closed_after_auth_timeout() {
    let h = agent_hub(0, "[limits]\nauth_timeout = \"1s\"\n");
    let mut b = connect(&h.d.url("/api/v1/ws"));
    let e = wait_type(&mut b, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("timed out"));
    assert_eq!(wait_close(&mut b, Duration::from_secs(5)), Some(1008));
}

#[test]
fn metrics_and_logs_reach_the_right_browsers_only() {
    let h = agent_hub(2, "");
    let mut a0 = fake_agent(&h, 0);
    let mut a1 = fake_agent(&h, 1);
    let mut m0 = browser(&h, "/api/v1/ws/metrics/srv-0", Role::Viewer);
    let mut m1 = browser(&h, "/api/v1/ws/metrics/srv-1", Role::Viewer);
    let mut l0 = browser(&h, "/api/v1/ws/logs/srv-0", Role::Viewer);
    let mut mux = browser(&h, "/api/v1/ws", Role::Viewer);
    send_json(
        &mut mux,
        &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
    );
    std::thread::sleep(Duration::from_millis(200));

    send_json(
        &mut a0,
        &json!({"type": "metrics", "server_id": "srv-0", "cpu_percent": 12.5, "memory_percent": 40.0, "disk_usage": [], "network": [], "timestamp": "2026-11-23T00:00:00Z", "sent_ns": 42}),
    );
    send_json(
        &mut a1,
        &json!({"type": "metrics", "server_id": "srv-1", "cpu_percent": 77.0, "memory_percent": 10.0, "disk_usage": [], "network": [], "timestamp": "2026-11-23T00:00:00Z"}),
    );
    send_json(
        &mut a0,
        &json!({"type": "log", "server_id": "srv-0", "level": "ERROR", "message": "disk on fire", "timestamp": "2026-11-23T00:00:01Z", "container_id": "abc"}),
    );

    let m = wait_type(&mut m0, "metrics", Duration::from_secs(5));
    assert_eq!(m["data"]["cpu_percent"], 12.5);
    assert_eq!(m["data"]["sent_ns"], 42, "extra agent fields are forwarded");
    let m = wait_type(&mut m1, "metrics", Duration::from_secs(5));
    assert_eq!(m["data"]["cpu_percent"], 77.0);
    // The mux socket also gets the local host's samples; find srv-1's.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = wait_type(&mut mux, "metrics", Duration::from_secs(5));
        assert_ne!(m["server_id"], "srv-0", "srv-0 was not asked for");
        if m["server_id"] == "srv-1" {
            assert_eq!(m["data"]["cpu_percent"], 77.0);
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let l = wait_type(&mut l0, "log", Duration::from_secs(5));
    assert_eq!(
        l["data"],
        json!({"level": "ERROR", "message": "disk on fire", "timestamp": "2026-11-23T00:00:01Z", "container_id": "abc"})
    );

    assert_silent(&mut m0, "metrics", Duration::from_millis(500)); // srv-1's sample never reaches srv-0's watcher
    assert_silent(&mut m1, "log", Duration::from_millis(300));
    assert_silent(&mut l0, "metrics", Duration::from_millis(300));

    // A new subscriber sees the latest sample at once.
    let mut late = browser(&h, "/api/v1/ws/metrics/srv-0", Role::Viewer);
    let m = wait_type(&mut late, "metrics", Duration::from_secs(5));
    assert_eq!(m["data"]["cpu_percent"], 12.5);
}

#[test]
fn commands_roles_relay_timeout_and_disconnect() {
    let audit = temp_dir("audit").join("audit.jsonl");
    let h = agent_hub(
        1,
        &format!(
            "[commands]\ntimeout = \"1s\"\naudit_log = \"{}\"\n",
            audit.display()
        ),
    );
    let mut agent = fake_agent(&h, 0);
    let mut viewer = browser(&h, "/api/v1/ws", Role::Viewer);
    let mut admin = browser(&h, "/api/v1/ws", Role::Admin);
    let mut other_admin = browser(&h, "/api/v1/ws", Role::Admin);

    // A viewer's command is refused and never reaches the agent.
    send_json(
        &mut viewer,
        &json!({"type": "command", "server_id": "srv-0", "command": "uptime"}),
    );
    let e = wait_type(&mut viewer, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("admin"));
    send_json(
        &mut viewer,
        &json!({"type": "docker_command", "server_id": "srv-0", "action": "stop", "container_id": "web"}),
    );
    wait_type(&mut viewer, "error", Duration::from_secs(5));
    assert_silent(&mut agent, "command", Duration::from_millis(500));

    // An admin's command is relayed; the answer goes to that admin only.
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": "uptime"}),
    );
    let cmd = wait_type(&mut agent, "command", Duration::from_secs(5));
    assert_eq!(cmd["command"], "uptime");
    let id = cmd["command_id"].as_str().unwrap().to_string();
    send_json(
        &mut agent,
        &json!({"type": "command_response", "command_id": id, "output": "up 3 days", "exit_code": 0, "duration_ms": 5}),
    );
    let r = wait_type(&mut admin, "command_response", Duration::from_secs(5));
    assert_eq!(r["output"], "up 3 days");
    assert_eq!(r["command_id"], id.as_str());
    assert_silent(
        &mut other_admin,
        "command_response",
        Duration::from_millis(300),
    );

    // docker_command relays too.
    send_json(
        &mut admin,
        &json!({"type": "docker_command", "server_id": "srv-0", "action": "restart", "container_id": "web"}),
    );
    let cmd = wait_type(&mut agent, "docker_command", Duration::from_secs(5));
    assert_eq!(cmd["action"], "restart");
    send_json(
        &mut agent,
        &json!({"type": "docker_response", "command_id": cmd["command_id"], "success": true, "message": "Container restarted"}),
    );
    let r = wait_type(&mut admin, "docker_response", Duration::from_secs(5));
    assert_eq!(r["success"], true);

    // No answer within the timeout -> error to the requester.
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": "uptime"}),
    );
    wait_type(&mut agent, "command", Duration::from_secs(5));
    let e = wait_type(&mut admin, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("timed out"), "{e}");

    // Unknown server, and the agent gone mid-command.
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-404", "command": "uptime"}),
    );
    let e = wait_type(&mut admin, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("Unknown server_id"));
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": "uptime"}),
    );
    wait_type(&mut agent, "command", Duration::from_secs(5));
    drop(agent);
    let e = wait_type(&mut admin, "error", Duration::from_secs(5));
    assert!(
        e["message"].as_str().unwrap().contains("disconnected"),
        "{e}"
    );
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": "uptime"}),
    );
    let e = wait_type(&mut admin, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("offline"), "{e}");
    for outcome in [
        "forbidden",
        "timeout",
        "agent_disconnected",
        "agent_offline",
        "succeeded",
    ] {
        assert!(
            h.d.metric(&format!("dockwire_commands_total{{outcome=\"{outcome}\"}}"))
                .unwrap_or(0.0)
                >= 1.0,
            "outcome {outcome} counted"
        );
    }
}

#[test]
fn alerts_fire_and_resolve() {
    let h = agent_hub(
        1,
        "[[alerts]]\nrule = \"cpu_percent > 90 for 300ms\"\n[[alerts]]\nrule = \"agent_offline for 500ms\"\n",
    );
    let mut agent = fake_agent(&h, 0);
    let mut watcher = browser(&h, "/api/v1/ws/metrics/srv-0", Role::Viewer);
    let sample = |cpu: f64| json!({"type": "metrics", "server_id": "srv-0", "cpu_percent": cpu, "memory_percent": 5.0});
    send_json(&mut agent, &sample(95.0));
    std::thread::sleep(Duration::from_millis(400));
    send_json(&mut agent, &sample(96.0));
    let a = wait_type(&mut watcher, "alert", Duration::from_secs(5));
    assert_eq!(a["server_id"], "srv-0");
    assert_eq!(a["data"]["state"], "firing");
    assert_eq!(a["data"]["metric"], "cpu_percent");
    send_json(&mut agent, &sample(20.0));
    let a = wait_type(&mut watcher, "alert", Duration::from_secs(5));
    assert_eq!(a["data"]["state"], "resolved");
    drop(agent);
    let a = wait_type(&mut watcher, "alert", Duration::from_secs(5));
    assert_eq!(a["data"]["metric"], "agent_offline");
    assert_eq!(a["data"]["state"], "firing");
    let _agent = fake_agent(&h, 0);
    let a = wait_type(&mut watcher, "alert", Duration::from_secs(5));
    assert_eq!(a["data"]["metric"], "agent_offline");
    assert_eq!(a["data"]["state"], "resolved");
}

#[test]
fn thousand_agents_with_metrics_flowing() {
    let n = 1000;
    let h = agent_hub(n, "");
    let mut watchers: Vec<Ws> = (0..10)
        .map(|i| {
            browser(
                &h,
                &format!("/api/v1/ws/metrics/srv-{}", i * 100),
                Role::Viewer,
            )
        })
        .collect();
    let mut agents: Vec<Ws> = (0..n).map(|i| fake_agent(&h, i)).collect();
    assert_eq!(h.d.metric("dockwire_agents_connected"), Some(n as f64));
    for (i, a) in agents.iter_mut().enumerate() {
        send_json(
            a,
            &json!({"type": "metrics", "server_id": format!("srv-{i}"), "cpu_percent": i as f64 / 10.0, "memory_percent": 1.0}),
        );
    }
    for (w, watcher) in watchers.iter_mut().enumerate() {
        let m = wait_type(watcher, "metrics", Duration::from_secs(10));
        assert_eq!(m["data"]["cpu_percent"], (w * 100) as f64 / 10.0);
    }
}

// ---- real `dockwire agent` processes ----

#[test]
fn real_agent_metrics_allowlist_and_kill_mid_command() {
    let h = agent_hub(1, "");
    let _agent = spawn_agent(
        &h,
        0,
        &[
            "--metrics-interval",
            "300ms",
            "--allow-command",
            "echo hello world",
            "--allow-command",
            "sleep 5",
        ],
    );
    wait_agents(&h, 1.0, Duration::from_secs(10));
    let mut m = browser(&h, "/api/v1/ws/metrics/srv-0", Role::Viewer);
    let s = wait_type(&mut m, "metrics", Duration::from_secs(10));
    assert!(s["data"]["memory_total"].as_u64().unwrap() > 0);

    let mut admin = browser(&h, "/api/v1/ws", Role::Admin);
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": "echo hello world"}),
    );
    let r = wait_type(&mut admin, "command_response", Duration::from_secs(10));
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["output"].as_str().unwrap().trim(), "hello world");
    assert!(r["duration_ms"].is_number());

    // Not on the allowlist: refused in the response, never run.
    let marker = temp_dir("marker").join("ran");
    let cmd = format!("touch {}", marker.display());
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": cmd}),
    );
    let r = wait_type(&mut admin, "command_response", Duration::from_secs(10));
    assert_ne!(r["exit_code"], 0);
    assert!(!marker.exists(), "a refused command must never run");
}

#[test]
fn real_agent_killed_mid_command() {
    let h = agent_hub(1, "");
    let mut agent = spawn_agent(&h, 0, &["--allow-command", "sleep 5"]);
    wait_agents(&h, 1.0, Duration::from_secs(10));
    let mut admin = browser(&h, "/api/v1/ws", Role::Admin);
    send_json(
        &mut admin,
        &json!({"type": "command", "server_id": "srv-0", "command": "sleep 5"}),
    );
    std::thread::sleep(Duration::from_millis(500));
    agent.0.kill().unwrap();
    let e = wait_type(&mut admin, "error", Duration::from_secs(5));
    assert!(
        e["message"].as_str().unwrap().contains("disconnected"),
        "{e}"
    );
}

#[test]
fn real_agent_follows_rotated_log_file() {
    let h = agent_hub(1, "");
    let dir = temp_dir("logs");
    let log = dir.join("app.log");
    std::fs::write(&log, "old line before start\n").unwrap();
    let _agent = spawn_agent(&h, 0, &["--log-file", log.to_str().unwrap()]);
    wait_agents(&h, 1.0, Duration::from_secs(10));
    let mut l = browser(&h, "/api/v1/ws/logs/srv-0", Role::Viewer);
    std::thread::sleep(Duration::from_millis(600));
    let append = |text: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        writeln!(f, "{text}").unwrap();
    };
    append("2026-11-23 ERROR first failure");
    let m = wait_type(&mut l, "log", Duration::from_secs(10));
    assert_eq!(m["data"]["message"], "2026-11-23 ERROR first failure");
    assert_eq!(m["data"]["level"], "ERROR");
    // Rotate: rename, then a new file at the same path.
    std::fs::rename(&log, dir.join("app.log.1")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append("[WARN] after rotation");
    let m = wait_type(&mut l, "log", Duration::from_secs(10));
    assert_eq!(m["data"]["message"], "[WARN] after rotation");
    assert!(
        m["data"]["level"].as_str().unwrap().starts_with("WARN"),
        "{m}"
    );
    // Truncate in place.
    std::fs::write(&log, "").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    append("info after truncation");
    let m = wait_type(&mut l, "log", Duration::from_secs(10));
    assert_eq!(m["data"]["message"], "info after truncation");
}

#[test]
fn real_agent_reconnects_after_hub_restart() {
    let mut h = agent_hub(1, "");
    let _agent = spawn_agent(&h, 0, &["--metrics-interval", "300ms"]);
    wait_agents(&h, 1.0, Duration::from_secs(10));
    // Restart the hub on the same port with the same config.
    let port = h.d.addr.port();
    let cfg = h.d.config_path.clone();
    let dir = h.d.dir.clone();
    assert!(
        h.d.terminate(Duration::from_secs(5))
            .is_some_and(|s| s.success())
    );
    let restarted = Instant::now();
    h.d = Daemon::start_at(cfg, port, dir, &[]);
    // Backoff starts at 1 s (doubling, with jitter): back well within 10 s.
    wait_agents(&h, 1.0, Duration::from_secs(15));
    let mut m = browser(&h, "/api/v1/ws/metrics/srv-0", Role::Viewer);
    wait_type(&mut m, "metrics", Duration::from_secs(5));
    eprintln!(
        "agent back and streaming {:?} after the hub restart",
        restarted.elapsed()
    );
}
