//! The HTTP side of the port: plain endpoints, upgrade refusals, limits,
//! config checking and signals — against the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn healthz_metrics_and_not_found() {
    // No engine at this address: the daemon must serve anyway and say so.
    let d = Daemon::start_with_env("", &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let h = d.healthz();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["docker"], "down", "no engine configured for this test");
    assert!(h["connections"].as_u64().is_some());

    let text = d.metrics_text();
    for series in [
        "dockwire_connections{endpoint=\"ws\"}",
        "dockwire_messages_sent_total",
        "dockwire_bytes_sent_total",
        "dockwire_frames_dropped_total",
        "dockwire_docker_up 0",
        "dockwire_agents_connected",
        "dockwire_loop_iteration_seconds_count",
    ] {
        assert!(
            text.contains(series),
            "missing {series} in /metrics:\n{text}"
        );
    }

    let (status, body) = http_get(d.addr, "/nope");
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].is_string());

    let (status, body) = http_get(d.addr, "/api/v1/containers");
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .is_array()
    );
}

#[test]
fn malformed_request_gets_400_and_close() {
    let d = Daemon::start("");
    let raw = raw_request(d.addr, b"\x16\x03\x01 this is not http\r\n\r\n").unwrap();
    assert_eq!(split_response(&raw).0, 400, "{raw}");
}

#[test]
fn upgrade_refusals() {
    let d = Daemon::start("");
    let a = d.addr;
    // Bad version -> 426 with the supported version.
    let req = upgrade_request(a, "/api/v1/ws", "").replace("Version: 13", "Version: 8");
    let raw = raw_request(a, req.as_bytes()).unwrap();
    assert_eq!(split_response(&raw).0, 426, "{raw}");
    assert!(raw.contains("Sec-WebSocket-Version: 13"));
    // Missing key -> 400.
    let req = upgrade_request(a, "/api/v1/ws", "")
        .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(
        split_response(&raw_request(a, req.as_bytes()).unwrap()).0,
        400
    );
    // Not GET -> 405.
    let req = upgrade_request(a, "/api/v1/ws", "").replacen("GET", "POST", 1);
    assert_eq!(
        split_response(&raw_request(a, req.as_bytes()).unwrap()).0,
        405
    );
    // Head larger than 8 KiB -> 431.
    let big = format!("X-Pad: {}\r\n", "a".repeat(9000));
    let raw = raw_request(a, upgrade_request(a, "/api/v1/ws", &big).as_bytes()).unwrap();
    assert_eq!(split_response(&raw).0, 431, "{raw}");
    // Cross-origin without an allowlist -> 403.
    let req = upgrade_request(a, "/api/v1/ws", "Origin: https://evil.example\r\n");
    assert_eq!(
        split_response(&raw_request(a, req.as_bytes()).unwrap()).0,
        403
    );
    // Same-origin is fine.
    let req = upgrade_request(a, "/api/v1/ws", &format!("Origin: http://{a}\r\n"));
    let raw = raw_request_first_bytes(a, req.as_bytes());
    assert!(raw.starts_with("HTTP/1.1 101"), "{raw}");
    // Echo endpoint is off by default.
    let raw = raw_request(a, upgrade_request(a, "/debug/echo", "").as_bytes()).unwrap();
    assert_eq!(split_response(&raw).0, 404);
}

/// Reads only the response head (the socket stays open after a 101).
fn raw_request_first_bytes(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn slow_head_times_out_with_408() {
    let d = Daemon::start("[limits]\nhandshake_timeout = \"1s\"\n");
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let raw = String::from_utf8_lossy(&out);
    assert_eq!(split_response(&raw).0, 408, "{raw}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed by the deadline, not the client timeout"
    );
}

#[test]
fn max_connections_answers_503() {
    let d = Daemon::start("[limits]\nmax_connections = 3\n");
    let held: Vec<_> = (0..3).map(|_| connect(&d.url("/api/v1/ws"))).collect();
    let raw = raw_request(d.addr, upgrade_request(d.addr, "/api/v1/ws", "").as_bytes()).unwrap();
    assert_eq!(split_response(&raw).0, 503, "{raw}");
    drop(held);
}

#[test]
fn check_config_good_and_bad() {
    let dir = temp_dir("checkcfg");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:7999\"\nmetrics_interval = \"2s\"\n[limits]\nmax_queued_bytes = \"4MiB\"\n\
         [[agents]]\nname = \"web-1\"\nkey_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));

    for (name, text, needle) in [
        ("badlisten.toml", "listen = \"here\"\n", "listen"),
        (
            "badsize.toml",
            "[limits]\nmax_message_bytes = \"lots\"\n",
            "max_message_bytes",
        ),
        ("unknown.toml", "colour = \"blue\"\n", "colour"),
        (
            "badkey.toml",
            "[[agents]]\nname = \"a\"\nkey_sha256 = \"zz\"\n",
            "key_sha256",
        ),
        (
            "badsecret.toml",
            "[auth]\njwt_secret_file = \"/nonexistent/secret\"\n",
            "jwt_secret_file",
        ),
        ("badtoml.toml", "listen = \n", "parse"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
            .args(["check-config", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "{name}: error should mention {needle:?}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(["check-config", "--config", "/nonexistent/dockwire.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let mut d = Daemon::start("");
    let mut a = connect(&d.url("/api/v1/ws"));
    let mut b = connect(&d.url("/api/v1/ws"));
    wait_type(&mut a, "connection_established", Duration::from_secs(5));
    wait_type(&mut b, "connection_established", Duration::from_secs(5));
    let started = Instant::now();
    let status = d
        .terminate(Duration::from_secs(5))
        .expect("exited within 5 s");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(wait_close(&mut a, Duration::from_secs(2)), Some(1001));
    assert_eq!(wait_close(&mut b, Duration::from_secs(2)), Some(1001));
}

#[test]
fn keep_alive_serves_pipelined_requests_on_one_connection() {
    let d = Daemon::start("");
    let mut s = std::net::TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let host = d.addr;
    // Two requests in one write (pipelined), the second asks to close.
    let reqs = format!(
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n\
         GET /nope HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    std::io::Write::write_all(&mut s, reqs.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    let text = String::from_utf8_lossy(&out);
    // A body has no newline of its own: the next status line follows it.
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| text[i..].lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"],
        "{text}"
    );
    assert!(text.contains("Connection: keep-alive"));
    assert!(text.contains("Connection: close"));
}

/// Papercut (issue 15): `--listen localhost:PORT` was refused as "not an
/// address". It binds the loopback address the name resolves to, says so,
/// and serves.
#[test]
fn serve_listens_on_a_host_name() {
    let port = free_port();
    let dir = temp_dir("listen-name");
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("localhost:{port}")])
        .env("RUST_LOG", "info")
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-docker.sock", dir.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        dir,
        config_path: config,
    };
    d.wait_ready();
    assert_eq!(d.healthz()["status"], "ok", "{}", d.log());
    let log = d.log();
    assert!(
        log.contains(&format!("listen: localhost:{port} resolves to"))
            && log.contains(&format!("127.0.0.1:{port}")),
        "{log}"
    );
    d.terminate(Duration::from_secs(10));
}

/// Runs the binary; (success, stdout, stderr).
fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Papercut (issue 15): a missing file was reported as "No such file or
/// directory (os error 2): No such file or directory (os error 2)". The
/// path is named once, the cause said once, with what to do.
#[test]
fn missing_files_are_named_once_with_what_to_do() {
    let dir = temp_dir("missing-files");
    let missing = dir.join("absent-file");
    let path = missing.to_str().unwrap();
    let secret_toml = dir.join("secret.toml");
    std::fs::write(
        &secret_toml,
        format!("[auth]\njwt_secret_file = {path:?}\n"),
    )
    .unwrap();
    for (args, hint) in [
        (
            vec!["token", "--secret-file", path, "--sub", "alice"],
            "/dev/urandom",
        ),
        (
            vec![
                "agent",
                "--hub",
                "ws://127.0.0.1:9/api/v1/agents/ws",
                "--api-key-file",
                path,
            ],
            "dockwire keygen",
        ),
        (
            vec!["check-config", "--config", secret_toml.to_str().unwrap()],
            "/dev/urandom",
        ),
    ] {
        let (ok, out, err) = run_cli(&args);
        assert!(!ok, "{args:?} should fail");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.matches(path).count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("os error 2").count(), 1, "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?} should say {hint:?}: {err}");
    }
}

/// Papercut (issue 15): `token --ttl 0s` printed a token already expired.
#[test]
fn token_refuses_a_ttl_under_a_second() {
    let dir = temp_dir("token-ttl");
    let secret = write_secret(&dir);
    let secret = secret.to_str().unwrap();
    for ttl in ["0s", "500ms"] {
        let (ok, out, err) = run_cli(&[
            "token",
            "--secret-file",
            secret,
            "--sub",
            "alice",
            "--ttl",
            ttl,
        ]);
        assert!(!ok, "--ttl {ttl} should fail");
        assert!(out.is_empty(), "--ttl {ttl} printed {out}");
        assert!(
            err.contains("already expired") && err.contains("at least 1s"),
            "{err}"
        );
    }
    let (ok, out, err) = run_cli(&[
        "token",
        "--secret-file",
        secret,
        "--sub",
        "alice",
        "--ttl",
        "1s",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().split('.').count(), 3, "{out}");
}
