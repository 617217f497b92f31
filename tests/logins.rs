//! Dashboard logins (SPEC section 8) against the real binary: `dockwire
//! passwd`, `POST /api/v1/login` and its cookie, cookie-authenticated
//! WebSocket upgrades and HTTP requests, the Origin rule for ambient
//! credentials, the failure limiter, logout, and request bodies.
//!
//! Password hashes come from `dockwire passwd` with the password piped on
//! stdin, as a script would do it. Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

/// Runs `dockwire passwd NAME --role ROLE` with `stdin` piped in.
fn passwd(name: &str, role: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(["passwd", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dockwire passwd");
    // A refused role exits before reading its input: the pipe may be closed
    // by the time this writes (EPIPE), which is that outcome, not a failure.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

/// `[[users]]` lines for alice (admin, "alice-pw") and bob (viewer,
/// "bob-pw"), made once by `dockwire passwd`.
fn users_toml() -> &'static str {
    static USERS: OnceLock<String> = OnceLock::new();
    USERS.get_or_init(|| {
        let mut text = String::new();
        for (name, role) in [("alice", "admin"), ("bob", "viewer")] {
            let out = passwd(name, role, &format!("{name}-pw\n"));
            assert!(
                out.status.success(),
                "dockwire passwd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            text.push_str(&String::from_utf8(out.stdout).unwrap());
        }
        text
    })
}

/// A daemon with the two users, no secret file, and agent key 0 (`srv-0`).
fn users_daemon(extra: &str) -> Daemon {
    let key = agent_key();
    Daemon::start(&format!(
        "metrics_interval = \"1h\"\n{extra}\n{}\n[[agents]]\nname = \"agent-0\"\n\
         key_sha256 = \"{}\"\nserver_id = \"srv-0\"\n",
        users_toml(),
        sha256_hex(&key)
    ))
}

fn agent_key() -> String {
    format!("dwk_agent_key_0_{}", "k".repeat(20))
}

/// A raw HTTP exchange: (status, head, body). Reads until EOF or the end
/// of a Content-Length body, within 10 s.
fn exchange(addr: SocketAddr, req: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = header(head, "content-length").and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The value of header `name` in a response head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn post(addr: SocketAddr, path: &str, extra: &str, body: &str) -> (u16, String, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    exchange(addr, req.as_bytes())
}

fn login(addr: SocketAddr, user: &str, password: &str, extra: &str) -> (u16, String, String) {
    let body = json!({"username": user, "password": password}).to_string();
    post(addr, "/api/v1/login", extra, &body)
}

/// Logs in and returns the session cookie's `name=value`.
fn cookie_for(d: &Daemon, user: &str) -> String {
    let (st, head, body) = login(d.addr, user, &format!("{user}-pw"), "");
    assert_eq!(st, 200, "login {user}: {head}\n{body}");
    let set = header(&head, "set-cookie").expect("Set-Cookie");
    set.split(';').next().unwrap().trim().to_string()
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    exchange(addr, req.as_bytes())
}

/// A WebSocket on `path` whose upgrade carries `headers`.
fn ws_with(d: &Daemon, path: &str, headers: &[(&'static str, &str)]) -> Ws {
    let mut req = d.url(path).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, tungstenite::http::HeaderValue::from_str(v).unwrap());
    }
    let (ws, _) = tungstenite::connect(req).unwrap_or_else(|e| panic!("connect {path}: {e}"));
    set_timeout(&ws, Duration::from_millis(200));
    ws
}

fn fake_agent0(d: &Daemon) -> Ws {
    let mut a = connect(&d.url("/api/v1/agents/ws"));
    send_json(&mut a, &json!({"type": "auth", "api_key": agent_key()}));
    wait_type(&mut a, "auth_success", Duration::from_secs(5));
    a
}

#[test]
fn passwd_prints_users_lines_from_a_pipe_and_refuses_bad_input() {
    let out = passwd("carol", "viewer", "correct horse\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[[users]]"), "{text}");
    assert!(text.contains("name = \"carol\""), "{text}");
    assert!(text.contains("role = \"viewer\""), "{text}");
    assert!(text.contains("password_hash = \"$argon2id$v=19$"), "{text}");
    // The printed lines are a valid config.
    let dir = temp_dir("passwd");
    let cfg = dir.join("dockwire.toml");
    std::fs::write(
        &cfg,
        format!("listen = \"127.0.0.1:{}\"\n{text}", free_port()),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for (role, stdin, why) in [
        ("root", "pw\n", "role"),
        ("admin", "", "no password"),
        ("admin", "\n", "empty"),
    ] {
        let out = passwd("carol", role, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} {stdin:?} accepted");
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn config_with_a_bad_password_hash_is_refused_clearly() {
    let dir = temp_dir("badhash");
    let cfg = dir.join("dockwire.toml");
    std::fs::write(
        &cfg,
        "[[users]]\nname = \"alice\"\npassword_hash = \"hunter2\"\nrole = \"admin\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("alice") && err.contains("password_hash") && err.contains("dockwire passwd"),
        "{err}"
    );
}

#[test]
fn login_cookie_opens_an_authenticated_websocket_with_the_users_role() {
    let d = users_daemon("");
    assert!(
        d.log().contains("do not survive a restart"),
        "the generated secret is announced: {}",
        d.log()
    );
    let (st, head, body) = login(d.addr, "bob", "bob-pw", "");
    assert_eq!(st, 200, "{head}\n{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "viewer");
    assert!(
        v["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{v}"
    );
    let set = header(&head, "set-cookie").expect("Set-Cookie");
    assert!(set.starts_with("dockwire_session="), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let bob = set.split(';').next().unwrap().to_string();
    let alice = cookie_for(&d, "alice");
    let mut agent = fake_agent0(&d);

    // The cookie authenticates the upgrade: state arrives without `auth`.
    let mut viewer = ws_with(&d, "/api/v1/ws", &[("Cookie", &bob)]);
    wait_type(
        &mut viewer,
        "connection_established",
        Duration::from_secs(5),
    );
    wait_type(&mut viewer, "initial_state", Duration::from_secs(5));
    let cmd = json!({"type": "command", "server_id": "srv-0", "command": "uptime"});
    send_json(&mut viewer, &cmd);
    let e = wait_type(&mut viewer, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("admin"), "{e}");
    let dc = json!({"type": "docker_command", "action": "restart", "container_id": "x"});
    send_json(&mut viewer, &dc);
    let e = wait_type(&mut viewer, "error", Duration::from_secs(5));
    assert!(e["message"].as_str().unwrap().contains("admin"), "{e}");

    // The admin's command is relayed to the agent.
    let origin = format!("http://{}", d.addr);
    let mut admin = ws_with(&d, "/api/v1/ws", &[("Cookie", &alice), ("Origin", &origin)]);
    wait_type(&mut admin, "initial_state", Duration::from_secs(5));
    send_json(&mut admin, &cmd);
    let relayed = wait_type(&mut agent, "command", Duration::from_secs(5));
    assert_eq!(relayed["command"], "uptime");

    // Without a cookie the socket still waits for the first-message auth.
    let mut anon = connect(&d.url("/api/v1/ws"));
    send_json(&mut anon, &json!({"type": "ping"}));
    let e = wait_type(&mut anon, "error", Duration::from_secs(5));
    assert!(
        e["message"].as_str().unwrap().contains("Authentication"),
        "{e}"
    );
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_401() {
    let d = users_daemon("");
    let (st1, _, wrong) = login(d.addr, "alice", "not-it", "");
    let (st2, _, unknown) = login(d.addr, "mallory", "alice-pw", "");
    assert_eq!((st1, st2), (401, 401));
    assert_eq!(wrong, unknown);
    // Malformed bodies are 400, not 401.
    let (st, _, body) = post(d.addr, "/api/v1/login", "", "{\"username\":1}");
    assert_eq!(st, 400, "{body}");
    let (st, _, _) = get(d.addr, "/api/v1/login", "");
    assert_eq!(st, 405);
}

#[test]
fn sixth_failure_in_a_minute_gets_429_with_retry_after() {
    let d = users_daemon("");
    for i in 0..5 {
        let (st, _, body) = login(d.addr, "alice", &format!("guess-{i}"), "");
        assert_eq!(st, 401, "attempt {i}: {body}");
    }
    let (st, head, _) = login(d.addr, "alice", "alice-pw", "");
    assert_eq!(st, 429, "{head}");
    let retry: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The address is limited too: another name from here waits as well.
    let (st, _, _) = login(d.addr, "bob", "bob-pw", "");
    assert_eq!(st, 429);
}

#[test]
fn ambient_cookie_needs_an_allowed_origin() {
    let d = users_daemon("");
    let bob = cookie_for(&d, "bob");
    let cookie = format!("Cookie: {bob}\r\n");
    let (st, _, body) = get(d.addr, "/api/v1/containers", &cookie);
    assert_eq!(st, 200, "{body}");
    let same = format!("{cookie}Origin: http://{}\r\n", d.addr);
    assert_eq!(get(d.addr, "/api/v1/containers", &same).0, 200);
    let evil = format!("{cookie}Origin: http://evil.example\r\n");
    let (st, _, body) = get(d.addr, "/api/v1/containers", &evil);
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("allowed_origins"), "{body}");
    // A cross-origin upgrade and a cross-origin login POST are refused too.
    let up = upgrade_request(d.addr, "/api/v1/ws", &evil);
    let (st, _, _) = exchange(d.addr, up.as_bytes());
    assert_eq!(st, 403);
    let (st, _, _) = login(d.addr, "bob", "bob-pw", "Origin: http://evil.example\r\n");
    assert_eq!(st, 403);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log().contains("[auth] allowed_origins") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The line names the peer and the Origin (issue 15).
    assert!(
        d.log()
            .contains("from 127.0.0.1 with Origin \"http://evil.example\""),
        "{}",
        d.log()
    );
    // Without any token: 401.
    assert_eq!(get(d.addr, "/api/v1/containers", "").0, 401);
}

#[test]
fn logout_clears_the_cookie() {
    let d = users_daemon("");
    let (st, head, _) = post(d.addr, "/api/v1/logout", "", "");
    assert_eq!(st, 200, "{head}");
    let set = header(&head, "set-cookie").expect("Set-Cookie");
    assert!(set.starts_with("dockwire_session=;"), "{set}");
    assert!(set.contains("Max-Age=0"), "{set}");
}

#[test]
fn bearer_tokens_still_work_next_to_users() {
    let dir = temp_dir("bearer");
    let secret = write_secret(&dir);
    let d = users_daemon(&format!(
        "[auth]\njwt_secret_file = \"{}\"\n",
        secret.display()
    ));
    assert!(!d.log().contains("do not survive a restart"));
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .arg("token")
        .arg("--secret-file")
        .arg(&secret)
        .args(["--sub", "ci", "--role", "viewer", "--ttl", "1h"])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (st, _, body) = get(d.addr, "/api/v1/containers", &bearer);
    assert_eq!(st, 200, "{body}");
    // A Bearer is not ambient: a foreign Origin does not matter for it.
    let foreign = format!("{bearer}Origin: http://elsewhere.example\r\n");
    assert_eq!(get(d.addr, "/api/v1/containers", &foreign).0, 200);
    // The session token (signed with the file's secret) works as a Bearer.
    let bob = cookie_for(&d, "bob");
    let tok = bob.trim_start_matches("dockwire_session=");
    let (st, _, _) = get(
        d.addr,
        "/api/v1/containers",
        &format!("Authorization: Bearer {tok}\r\n"),
    );
    assert_eq!(st, 200);
    // And the first-message auth still works on a WebSocket.
    let mut ws = connect(&d.url("/api/v1/ws"));
    send_json(&mut ws, &json!({"type": "auth", "token": token}));
    wait_type(&mut ws, "auth_success", Duration::from_secs(5));
}

#[test]
fn request_bodies_are_bounded_in_size_form_and_time() {
    let d = users_daemon("[limits]\nhandshake_timeout = \"1s\"\n");
    let big = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Length: 9000\r\n\r\n",
        d.addr
    );
    assert_eq!(exchange(d.addr, big.as_bytes()).0, 413);
    let chunked = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        d.addr
    );
    assert_eq!(exchange(d.addr, chunked.as_bytes()).0, 411);
    let bad = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Length: 12x\r\n\r\n",
        d.addr
    );
    assert_eq!(exchange(d.addr, bad.as_bytes()).0, 400);
    // A body that never finishes meets the handshake deadline.
    let started = Instant::now();
    let slow = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Length: 40\r\n\r\n{{\"user",
        d.addr
    );
    let (st, head, _) = exchange(d.addr, slow.as_bytes());
    assert_eq!(st, 408, "{head}");
    assert!(started.elapsed() < Duration::from_secs(9));
    // A body sent in pieces within the deadline is read whole.
    let body = json!({"username": "bob", "password": "bob-pw"}).to_string();
    let head = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        d.addr,
        body.len()
    );
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&body.as_bytes()[5..]).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn failures_count_even_when_the_client_leaves_before_its_answer() {
    let d = users_daemon("");
    let body = json!({"username": "alice", "password": "wrong"}).to_string();
    let req = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
        d.addr,
        body.len()
    );
    for _ in 0..5 {
        let mut s = TcpStream::connect(d.addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        drop(s); // gone before argon2 has answered
    }
    // Wait until the worker has answered all five, so the 429 below comes
    // from failures recorded after their clients left, not from checks
    // still in flight (which count too).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.metric("dockwire_auth_failures_total{kind=\"bad_login\"}") != Some(5.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "5 bad logins never recorded: {}",
            d.metrics_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, head, _) = login(d.addr, "alice", "alice-pw", "");
    assert_eq!(
        st, 429,
        "the right password after 5 abandoned failures: {head}"
    );
    assert_eq!(d.healthz()["status"], "ok");
}
