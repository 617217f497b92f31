//! Live reload (SPEC section 10) against the real daemon: rewrite its
//! config file, send SIGHUP, and watch what stays and what is closed.
//! Every wait is on an observable outcome (a close code, a log line, an
//! answer) with a deadline; nothing is timed.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dockwire::auth::{Role, sign_token};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

const WAIT: Duration = Duration::from_secs(10);

/// The config of an [`agent_hub`] with the agent keys `keys` (indexes into
/// `h.keys`), the secret file `secret`, and `extra` TOML at the end.
fn hub_config(h: &AgentHub, keys: &[usize], secret: &std::path::Path, extra: &str) -> String {
    let mut cfg = format!(
        "listen = \"{}\"\nmetrics_interval = \"1h\"\n[auth]\njwt_secret_file = \"{}\"\n",
        h.d.addr,
        secret.display()
    );
    for &i in keys {
        let (key, sid) = &h.keys[i];
        cfg.push_str(&format!(
            "[[agents]]\nname = \"agent-{i}\"\nkey_sha256 = \"{}\"\nserver_id = \"{sid}\"\n",
            sha256_hex(key)
        ));
    }
    cfg.push_str(extra);
    cfg
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

/// Writes `config`, sends SIGHUP and waits until the daemon logged the
/// outcome of this reload (`want`: "config reloaded" or "config reload failed").
fn reload(d: &Daemon, config: Option<&str>, want: &str) -> String {
    if let Some(text) = config {
        std::fs::write(&d.config_path, text).unwrap();
    }
    let before = count(&d.log(), want);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + WAIT;
    loop {
        let log = d.log();
        if count(&log, want) > before {
            return log;
        }
        assert!(Instant::now() < deadline, "no {want:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The socket answers a ping (it is still connected and served).
fn alive(ws: &mut Ws) {
    send_json(ws, &json!({"type": "ping"}));
    wait_type(ws, "pong", WAIT);
}

#[test]
fn a_removed_key_closes_its_agent_and_a_new_key_can_connect() {
    let mut h = agent_hub(2, "");
    let mut a0 = fake_agent(&h, 0);
    let mut a1 = fake_agent(&h, 1);
    let mut b = browser(&h, "/api/v1/ws", Role::Viewer);
    wait_agents(&h, 2.0, WAIT);

    reload(
        &h.d,
        Some(&hub_config(&h, &[1], &h.secret, "")),
        "config reloaded",
    );
    assert_eq!(wait_close(&mut a0, WAIT), Some(1008));
    alive(&mut a1);
    alive(&mut b);
    wait_agents(&h, 1.0, WAIT);
    // The removed key is refused from now on.
    let mut again = connect(&h.d.url("/api/v1/agents/ws"));
    send_json(&mut again, &json!({"type": "auth", "api_key": h.keys[0].0}));
    assert_eq!(wait_close(&mut again, WAIT), Some(1008));

    // A key added to the file works after the next SIGHUP.
    h.keys
        .push((format!("dwk_new_key_{}", "n".repeat(30)), "srv-new".into()));
    reload(
        &h.d,
        Some(&hub_config(&h, &[1, 2], &h.secret, "")),
        "config reloaded",
    );
    let mut a2 = fake_agent(&h, 2);
    alive(&mut a2);
    alive(&mut a1);
    alive(&mut b);
}

#[test]
fn a_new_secret_closes_browsers_signed_by_the_old_one() {
    let h = agent_hub(1, "");
    let mut a0 = fake_agent(&h, 0);
    let mut old = browser(&h, "/api/v1/ws", Role::Admin);
    let new_secret = b"a-new-secret-for-the-reload-test-0123456789";
    let path = h.secret.with_file_name("jwt-new.secret");
    std::fs::write(&path, new_secret).unwrap();

    reload(
        &h.d,
        Some(&hub_config(&h, &[0], &path, "")),
        "config reloaded",
    );
    assert_eq!(wait_close(&mut old, WAIT), Some(1008));
    alive(&mut a0);
    // New browsers need tokens of the new secret.
    let t = sign_token(new_secret, "tester", Role::Admin, WAIT, unix_now()).unwrap();
    let mut b = connect(&h.d.url("/api/v1/ws"));
    send_json(&mut b, &json!({"type": "auth", "token": t}));
    wait_type(&mut b, "auth_success", WAIT);
    let mut stale = connect(&h.d.url("/api/v1/ws"));
    send_json(
        &mut stale,
        &json!({"type": "auth", "token": token(Role::Admin)}),
    );
    assert_eq!(wait_close(&mut stale, WAIT), Some(1008));
    alive(&mut b);
}

#[test]
fn a_broken_config_changes_nothing_and_the_log_says_why() {
    let h = agent_hub(1, "");
    let mut a0 = fake_agent(&h, 0);
    let mut b = browser(&h, "/api/v1/ws", Role::Viewer);
    let good = hub_config(&h, &[0], &h.secret, "");
    for (text, why) in [
        (
            Some("listen = [[[ not toml".to_string()),
            "could not parse config file",
        ),
        (
            Some(format!(
                "{good}[[alerts]]\nrule = 'log_match \"(unclosed\"'\n"
            )),
            "not a valid regex",
        ),
        (
            Some(format!(
                "{good}[[agents]]\nname = \"x\"\nkey_sha256 = \"zz\"\n"
            )),
            "key_sha256",
        ),
        (None, "could not read config file"),
    ] {
        match &text {
            Some(_) => {}
            None => std::fs::remove_file(&h.d.config_path).unwrap(),
        }
        let log = reload(&h.d, text.as_deref(), "config reload failed");
        let last = log
            .lines()
            .rfind(|l| l.contains("config reload failed"))
            .unwrap();
        assert!(last.contains(why), "{why}: {last}");
        alive(&mut a0);
        alive(&mut b);
    }
    // The old config still works for new connections.
    wait_agents(&h, 1.0, WAIT);
    drop(a0);
    wait_agents(&h, 0.0, WAIT);
    let mut a0 = fake_agent(&h, 0);
    alive(&mut a0);
    let mut b2 = browser(&h, "/api/v1/ws", Role::Viewer);
    alive(&mut b2);
    assert!(!h.d.log().contains("config reloaded"));
}

/// Runs `dockwire passwd NAME --role ROLE` and returns its `[[users]]` lines.
fn user_lines(name: &str, role: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args(["passwd", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{name}-pw\n").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// `POST /api/v1/login` and the session cookie's `name=value`.
fn login_cookie(d: &Daemon, user: &str) -> String {
    let body = json!({"username": user, "password": format!("{user}-pw")}).to_string();
    let req = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        d.addr,
        body.len()
    );
    let raw = raw_request(d.addr, req.as_bytes()).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "login {user}: {raw}");
    let set = raw
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .expect("Set-Cookie");
    set.split(';').next().unwrap().to_string()
}

/// A browser socket authenticated by its session cookie.
fn cookie_browser(d: &Daemon, cookie: &str) -> Ws {
    let mut req = d.url("/api/v1/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "Cookie",
        tungstenite::http::HeaderValue::from_str(cookie).unwrap(),
    );
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    set_timeout(&ws, Duration::from_millis(200));
    wait_type(&mut ws, "connection_established", WAIT);
    ws
}

#[test]
fn a_removed_user_loses_their_session_sockets() {
    let users = format!(
        "{}{}",
        user_lines("alice", "admin"),
        user_lines("bob", "viewer")
    );
    let secret = write_secret(&temp_dir("users"));
    let cfg = |users: &str| {
        format!(
            "metrics_interval = \"1h\"\n{users}\n[auth]\njwt_secret_file = \"{}\"\n",
            secret.display()
        )
    };
    let d = Daemon::start(&cfg(&users));
    let mut alice = cookie_browser(&d, &login_cookie(&d, "alice"));
    let mut bob = cookie_browser(&d, &login_cookie(&d, "bob"));
    // bob's entry stays as it was (a new `dockwire passwd` line would be a
    // changed entry, with a new salt, and end his sessions too).
    let bob_lines: String = users
        .split("[[users]]")
        .filter(|u| u.contains("\"bob\""))
        .map(|u| format!("[[users]]{u}"))
        .collect();
    let keep_bob = format!("listen = \"{}\"\n{}", d.addr, cfg(&bob_lines));
    reload(&d, Some(&keep_bob), "config reloaded");
    assert_eq!(wait_close(&mut alice, WAIT), Some(1008));
    alive(&mut bob);
    // alice cannot log in any more; bob can.
    let body = json!({"username": "alice", "password": "alice-pw"}).to_string();
    let req = format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        d.addr,
        body.len()
    );
    let raw = raw_request(d.addr, req.as_bytes()).unwrap();
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    login_cookie(&d, "bob");
}

/// Takes one POST, answers 200 and returns its body.
fn take_post(listener: &TcpListener) -> Value {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the notifier closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return serde_json::from_str(body).unwrap();
            }
        }
    }
}

#[test]
fn a_new_alert_rule_and_notifier_are_live_after_sighup() {
    let h = agent_hub(1, "");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let l2 = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = tx.send(take_post(&l2));
    });
    let extra = format!(
        "[[alerts]]\nname = \"gone\"\nrule = \"agent_offline for 0s\"\n\
         [[notifiers]]\nurl = \"http://{}/hook\"\n",
        listener.local_addr().unwrap()
    );
    reload(
        &h.d,
        Some(&hub_config(&h, &[0], &h.secret, &extra)),
        "config reloaded",
    );
    // srv-0 never connected: the new rule fires and the new notifier posts it.
    let posted = rx
        .recv_timeout(WAIT)
        .expect("the new notifier posted the alert");
    assert_eq!(posted["rule"], "gone");
    assert_eq!(posted["server_id"], "srv-0");
    let t = token(Role::Viewer);
    let req = format!(
        "GET /api/v1/alerts HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {t}\r\nConnection: close\r\n\r\n",
        h.d.addr
    );
    let (status, body) = split_response(&raw_request(h.d.addr, req.as_bytes()).unwrap());
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["firing"][0]["rule"], "gone", "{v}");
}

#[test]
fn systemd_hears_reloading_then_ready_and_restart_only_changes_are_logged() {
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let notify = sock_path.display().to_string();
    let d = Daemon::start_with_env("metrics_interval = \"1h\"\n", &[("NOTIFY_SOCKET", &notify)]);
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    let changed = format!("listen = \"{}\"\nmetrics_interval = \"2h\"\n", d.addr);
    let log = reload(&d, Some(&changed), "config reloaded");
    let reloading = next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec > 0);
    assert!(next().starts_with("READY=1"));
    assert!(
        log.lines()
            .any(|l| l.contains("metrics_interval changed, which needs a restart")),
        "{log}"
    );
    // A failed reload also ends with READY=1 (the daemon keeps serving).
    reload(&d, Some("nonsense = ["), "config reload failed");
    assert!(next().starts_with("RELOADING=1"));
    assert!(next().starts_with("READY=1"));
    assert_eq!(d.healthz()["status"], "ok");
}
