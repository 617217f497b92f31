//! End-to-end tests of the agent against a tiny fake hub (tungstenite's
//! server `accept` on a std listener): auth, commands, docker answers, logs,
//! metrics, heartbeat, reconnect and backoff. Every wait is bounded.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::test_util::tempdir;
use super::{AgentError, AgentOptions, Tuning, run_with};

const KEY: &str = "test-key-0123";

struct FakeHub {
    listener: TcpListener,
    url: String,
}

impl FakeHub {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("ws://{}/api/v1/agents/ws", listener.local_addr().unwrap());
        Self { listener, url }
    }

    /// The next agent connection, after the WebSocket handshake.
    fn accept(&self, within: Duration) -> WebSocket<TcpStream> {
        let deadline = Instant::now() + within;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let ws = tungstenite::accept(stream).expect("handshake");
                    ws.get_ref()
                        .set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                    return ws;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no agent connection within {within:?}"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// The next message (any kind) within `within`, or `None`.
fn recv(ws: &mut WebSocket<TcpStream>, within: Duration) -> Option<Message> {
    let deadline = Instant::now() + within;
    loop {
        match ws.read() {
            Ok(m) => return Some(m),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("hub read: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// The next JSON text message whose `type` is `kind` (others skipped).
fn recv_type(ws: &mut WebSocket<TcpStream>, kind: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv(ws, left) {
            Some(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("agent sent JSON");
                if v["type"] == kind {
                    return v;
                }
            }
            Some(_) => {}
            None => panic!("no {kind} message within {within:?}"),
        }
    }
}

fn send(ws: &mut WebSocket<TcpStream>, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// Reads the agent's auth message, checks it, and accepts it.
fn authenticate(ws: &mut WebSocket<TcpStream>, server_id: &str) {
    let auth = recv_type(ws, "auth", Duration::from_secs(5));
    assert_eq!(auth, json!({"type": "auth", "api_key": KEY}));
    send(
        ws,
        json!({"type": "auth_success", "server_id": server_id, "message": "Connected successfully"}),
    );
}

/// Closes from the hub side and waits until the agent answered the close.
fn close_from_hub(mut ws: WebSocket<TcpStream>) {
    ws.close(None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("closing: {e}"),
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "agent never answered the close");
    }
}

fn fast_tuning() -> Tuning {
    Tuning {
        read_tick: Duration::from_millis(20),
        handshake_timeout: Duration::from_secs(2),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        tail_poll: Duration::from_millis(30),
        ..Tuning::default()
    }
}

struct Agent {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), AgentError>>>,
}

impl Agent {
    fn start(opts: AgentOptions, tuning: Tuning) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let handle = thread::spawn(move || run_with(opts, s2, tuning));
        Self {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        let result = self.handle.take().unwrap().join().unwrap();
        assert!(result.is_ok(), "{result:?}");
        t.elapsed()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn options(hub: &FakeHub) -> AgentOptions {
    let mut o = AgentOptions::new(hub.url.clone(), KEY);
    o.metrics_interval = Duration::from_secs(3600);
    o
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

const T: Duration = Duration::from_secs(10);

#[test]
fn auth_commands_refusals_and_docker_answers() {
    let hub = FakeHub::new();
    let dir = tempdir();
    let marker = dir.join("marker");
    let touch = format!("touch {}", marker.display());
    let mut opts = options(&hub);
    opts.allow_commands = vec!["echo hello".into(), touch.clone()];
    opts.docker_host = Some("unix:///nonexistent/docker.sock".into());
    let agent = Agent::start(opts, fast_tuning());

    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-test");

    send(
        &mut ws,
        json!({"type":"command","command_id":"c1","command":"echo hello"}),
    );
    let r = recv_type(&mut ws, "command_response", T);
    assert_eq!(r["command_id"], "c1");
    assert_eq!(r["output"], "hello\n");
    assert_eq!(r["exit_code"], 0);
    assert!(r["duration_ms"].is_u64(), "{r}");
    assert!(r.get("server_id").is_none());

    // Not an exact match: refused, never run.
    send(
        &mut ws,
        json!({"type":"command","command_id":"c2","command": format!("{touch} ")}),
    );
    let r = recv_type(&mut ws, "command_response", T);
    assert_eq!(r["command_id"], "c2");
    assert_eq!(r["exit_code"], -1);
    assert!(r["output"].as_str().unwrap().contains("refused"), "{r}");
    send(
        &mut ws,
        json!({"type":"command","command_id":"c3","command":"rm -rf /"}),
    );
    let r = recv_type(&mut ws, "command_response", T);
    assert_eq!(
        (r["command_id"].as_str(), r["exit_code"].as_i64()),
        (Some("c3"), Some(-1))
    );

    // Junk and unknown types are ignored; the connection stays up.
    ws.send(Message::text("not json")).unwrap();
    send(&mut ws, json!({"type":"surprise","x":1}));
    send(&mut ws, json!({"type":"command","command":"echo hello"}));

    // A numeric id comes back unchanged.
    send(
        &mut ws,
        json!({"type":"command","command_id":42,"command":"echo hello"}),
    );
    let r = recv_type(&mut ws, "command_response", T);
    assert_eq!(r["command_id"], 42);
    assert_eq!(r["exit_code"], 0);
    assert!(!marker.exists(), "a refused command ran");

    // The exact entry does run.
    send(
        &mut ws,
        json!({"type":"command","command_id":"c4","command": touch}),
    );
    let r = recv_type(&mut ws, "command_response", T);
    assert_eq!(
        (r["command_id"].as_str(), r["exit_code"].as_i64()),
        (Some("c4"), Some(0))
    );
    assert!(marker.exists());

    send(
        &mut ws,
        json!({"type":"docker_command","command_id":"d1","action":"explode","container_id":"web"}),
    );
    let r = recv_type(&mut ws, "docker_response", T);
    assert_eq!(r["command_id"], "d1");
    assert_eq!(r["success"], false);
    assert!(
        r["message"].as_str().unwrap().contains("unknown action"),
        "{r}"
    );
    send(
        &mut ws,
        json!({"type":"docker_command","command_id":"d2","action":"start","container_id":"web"}),
    );
    let r = recv_type(&mut ws, "docker_response", T);
    assert_eq!(
        (r["command_id"].as_str(), r["success"].as_bool()),
        (Some("d2"), Some(false))
    );
    assert!(
        r["message"].as_str().unwrap().starts_with("could not"),
        "{r}"
    );

    // Shutdown: a 1001 close frame, then the agent returns promptly.
    agent.stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + T;
    let close = loop {
        match recv(&mut ws, Duration::from_millis(100)) {
            Some(Message::Close(frame)) => break frame,
            _ => assert!(Instant::now() < deadline, "no close frame"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let _ = ws.flush();
    drop(ws);
    assert!(agent.stop() < Duration::from_secs(3));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_are_sent_flat_with_server_id() {
    let hub = FakeHub::new();
    let mut opts = options(&hub);
    opts.metrics_interval = Duration::from_millis(300);
    let agent = Agent::start(opts, fast_tuning());
    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-metrics");
    let m1 = recv_type(&mut ws, "metrics", T);
    let m2 = recv_type(&mut ws, "metrics", T);
    for m in [&m1, &m2] {
        assert_eq!(m["server_id"], "srv-metrics");
        assert!(m["cpu_percent"].is_number(), "{m}");
        assert!(m["memory_total"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["load_average"].as_array().unwrap().len(), 3);
        assert!(m["disk_usage"].is_array() && m["network"].is_array());
        assert!(m["timestamp"].as_str().unwrap().contains('T'));
        assert!(m.get("data").is_none());
    }
    drop(ws);
    agent.stop();
}

#[test]
fn logs_flow_and_survive_a_reconnect() {
    let hub = FakeHub::new();
    let dir = tempdir();
    let log = dir.join("app.log");
    append(&log, "old history, not sent\n");
    let mut opts = options(&hub);
    opts.log_files = vec![log.clone()];
    let mut tuning = fast_tuning();
    // Long enough for the offline lines to land in the backlog first.
    tuning.backoff_base = Duration::from_millis(400);
    tuning.backoff_max = Duration::from_millis(800);
    let agent = Agent::start(opts, tuning);

    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-1");
    // The tailer opened the file at its end before we append (it starts
    // with the agent; give it a poll or two).
    thread::sleep(Duration::from_millis(200));
    append(&log, "2024-01-01 ERROR first failure\n");
    let l = recv_type(&mut ws, "log", T);
    assert_eq!(l["server_id"], "srv-1");
    assert_eq!(l["level"], "ERROR");
    assert_eq!(l["message"], "2024-01-01 ERROR first failure");
    assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));

    close_from_hub(ws);
    append(&log, "level=warn offline 1\noffline 2\n");

    let mut ws = hub.accept(T);
    // Re-authenticates with the same key; the new server_id is used.
    authenticate(&mut ws, "srv-2");
    let a = recv_type(&mut ws, "log", T);
    let b = recv_type(&mut ws, "log", T);
    assert_eq!(
        (
            a["message"].as_str(),
            a["level"].as_str(),
            a["server_id"].as_str()
        ),
        (Some("level=warn offline 1"), Some("WARNING"), Some("srv-2"))
    );
    assert_eq!(
        (b["message"].as_str(), b["level"].as_str()),
        (Some("offline 2"), Some("INFO"))
    );
    drop(ws);
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refused_key_backs_off_to_the_max() {
    let hub = FakeHub::new();
    let mut tuning = fast_tuning();
    tuning.backoff_base = Duration::from_millis(20);
    tuning.backoff_max = Duration::from_millis(1500);
    let agent = Agent::start(options(&hub), tuning);

    // First a plain loss: the retry comes fast (base 20 ms).
    let ws = hub.accept(T);
    drop(ws);
    let t0 = Instant::now();
    let mut ws = hub.accept(T);
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );

    // Then a refusal: the next attempt waits at least half the max.
    let auth = recv_type(&mut ws, "auth", T);
    assert_eq!(auth["api_key"], KEY);
    send(
        &mut ws,
        json!({"type":"error","message":"Invalid or inactive API key"}),
    );
    let _ = ws.close(None);
    let _ = ws.flush();
    let t1 = Instant::now();
    drop(ws);
    let ws = hub.accept(T);
    let waited = t1.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "retried after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "retried after {waited:?}");
    drop(ws);
    agent.stop();
}

#[test]
fn silent_hub_is_dropped_after_pings_go_unanswered() {
    let hub = FakeHub::new();
    let mut tuning = fast_tuning();
    tuning.ping_interval = Duration::from_millis(150);
    tuning.silence_timeout = Duration::from_millis(700);
    let agent = Agent::start(options(&hub), tuning);

    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-quiet");
    // The agent pings on its own.
    let deadline = Instant::now() + T;
    loop {
        match recv(&mut ws, Duration::from_millis(100)) {
            Some(Message::Ping(_)) => break,
            _ => assert!(Instant::now() < deadline, "no ping from the agent"),
        }
    }
    // While we keep reading, tungstenite answers its pings: the agent stays.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1200) {
        let _ = recv(&mut ws, Duration::from_millis(50));
    }
    assert!(
        matches!(hub.listener.accept(), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "agent reconnected although the hub answered its pings"
    );

    // Now go silent (no reads, so no pongs): the agent must give up and
    // come back on a new connection.
    let silent_since = Instant::now();
    let mut ws2 = hub.accept(T);
    assert!(silent_since.elapsed() >= Duration::from_millis(500));
    authenticate(&mut ws2, "srv-quiet");
    drop(ws);
    drop(ws2);
    agent.stop();
}

#[test]
fn no_auth_answer_means_retry() {
    let hub = FakeHub::new();
    let mut tuning = fast_tuning();
    tuning.handshake_timeout = Duration::from_millis(400);
    let agent = Agent::start(options(&hub), tuning);
    let mut ws = hub.accept(T);
    let _ = recv_type(&mut ws, "auth", T);
    let t = Instant::now();
    // Say nothing; keep the socket open. The agent gives up and retries.
    let mut ws2 = hub.accept(T);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    authenticate(&mut ws2, "srv-late");
    drop(ws);
    drop(ws2);
    agent.stop();
}

#[test]
fn commands_run_concurrently_with_the_connection() {
    let hub = FakeHub::new();
    let mut opts = options(&hub);
    opts.allow_commands = vec!["sleep 1".into(), "echo quick".into()];
    let agent = Agent::start(opts, fast_tuning());
    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-par");
    let t = Instant::now();
    send(
        &mut ws,
        json!({"type":"command","command_id":"slow","command":"sleep 1"}),
    );
    send(
        &mut ws,
        json!({"type":"command","command_id":"fast","command":"echo quick"}),
    );
    let first = recv_type(&mut ws, "command_response", T);
    assert_eq!(first["command_id"], "fast");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let second = recv_type(&mut ws, "command_response", T);
    assert_eq!(second["command_id"], "slow");
    assert_eq!(second["exit_code"], 0);
    assert!(second["duration_ms"].as_u64().unwrap() >= 1000);
    drop(ws);
    agent.stop();
}

/// Needs the private test engine (scripts/test.sh sets DOCKER_HOST; by hand:
/// `eval "$(scripts/docker-env.sh env)"` after `scripts/docker-env.sh start`).
#[test]
fn docker_commands_drive_the_real_engine() {
    let Ok(host) = std::env::var("DOCKER_HOST") else {
        eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
        return;
    };
    let image = std::env::var("DOCKWIRE_TEST_IMAGE").unwrap_or("dockwire-test:latest".into());
    let name = format!(
        "dw-agent-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker")
            .args(["-H", &host])
            .args(args)
            .output()
            .expect("docker CLI");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    docker(&[
        "create",
        "--network",
        "none",
        "--name",
        &name,
        &image,
        "sleep",
        "600",
    ]);
    let state = || docker(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert_eq!(state(), "created");

    let hub = FakeHub::new();
    let mut opts = options(&hub);
    opts.docker_host = Some(host.clone());
    let agent = Agent::start(opts, fast_tuning());
    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-docker");

    let mut act = |id: &str, action: &str, target: &str| {
        send(
            &mut ws,
            json!({"type":"docker_command","command_id":id,"action":action,"container_id":target}),
        );
        let r = recv_type(&mut ws, "docker_response", Duration::from_secs(40));
        assert_eq!(r["command_id"], id);
        (
            r["success"].as_bool().unwrap(),
            r["message"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(act("1", "start", &name), (true, "Container started".into()));
    assert_eq!(state(), "running");
    assert_eq!(
        act("2", "restart", &name),
        (true, "Container restarted".into())
    );
    assert_eq!(state(), "running");
    assert_eq!(act("3", "stop", &name), (true, "Container stopped".into()));
    assert_eq!(state(), "exited");
    let (ok, msg) = act("4", "start", "dw-agent-no-such-container");
    assert!(!ok);
    assert!(msg.contains("No such container"), "{msg}");

    docker(&["rm", "-f", &name]);
    drop(ws);
    agent.stop();
}

#[test]
fn big_output_fits_one_hub_message() {
    let hub = FakeHub::new();
    let mut opts = options(&hub);
    opts.allow_commands = vec!["seq 1 30000".into()];
    let agent = Agent::start(opts, fast_tuning());
    let mut ws = hub.accept(T);
    authenticate(&mut ws, "srv-big");
    send(
        &mut ws,
        json!({"type":"command","command_id":"big","command":"seq 1 30000"}),
    );
    let deadline = Instant::now() + T;
    let text = loop {
        match recv(&mut ws, Duration::from_millis(100)) {
            Some(Message::Text(t)) if t.as_str().contains("command_response") => break t,
            _ => assert!(Instant::now() < deadline, "no command_response"),
        }
    };
    // The hub's default max_message_bytes is 64 KiB.
    assert!(text.len() <= 64 * 1024, "{} bytes", text.len());
    let r: Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!(r["exit_code"], 0);
    let out = r["output"].as_str().unwrap();
    assert!(out.starts_with("1\n2\n3\n"));
    assert!(
        out.contains("[output truncated"),
        "{}",
        &out[out.len() - 100..]
    );
    drop(ws);
    agent.stop();
}
