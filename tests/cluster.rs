//! Many hubs over NATS (SPEC 11), end to end: a real `nats-server`
//! (Debian's, started here on a free loopback port) and three real hubs
//! (`dockwire serve` with `[cluster]`), each with the same agent keys.
//!
//! - `fleet_across_hubs`: an agent on hub A; browsers on B and C see it in
//!   the server list (owned by "a"), its metrics, its containers and their
//!   changes, its log lines (each exactly once, in order, one follower on
//!   the agent for both hubs), its agent log entries and its alerts; a command from C reaches the
//!   agent on A and the answer comes back with C's `request_id`.
//! - `hub_death_and_failover`: a real `dockwire agent --hub A --hub B`;
//!   hub A is killed, browsers on C see the server offline, then online on
//!   hub B once the agent failed over.
//! - `log_resume_on_any_hub`: nats-server with JetStream; a browser on C
//!   follows a container of an agent on A, loses its socket, and resumes on
//!   B with `since_seq` (exactly the lines it missed); the agent moves to
//!   B, which never followed the stream: B goes on with the stored numbers,
//!   and a browser on C resumes across the move with no gap and no repeat.
//! - `nats_outage`: nats-server is stopped: every hub still serves its own
//!   agent and browsers, other hubs' servers go offline; nats-server comes
//!   back on the same port and the fleet view is whole again.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dockwire::auth::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(25);

/// A `nats-server` on a loopback port, killed on drop.
struct Nats {
    child: Option<Child>,
    port: u16,
    /// JetStream's store, when it has one.
    store: Option<std::path::PathBuf>,
}

impl Nats {
    fn start() -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            store: None,
        };
        n.restart();
        n
    }

    /// A nats-server with JetStream (its store in a temporary directory).
    fn with_jetstream() -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            store: Some(temp_dir("jetstream")),
        };
        n.restart();
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        let mut cmd = Command::new(bin);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(dir) = &self.store {
            cmd.arg("-js").arg("-sd").arg(dir);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (scripts/test.sh installs Debian's)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A hub of the cluster: agent keys `srv-0..n`, browser auth on.
fn hub(nats: &Nats, id: &str, extra: &str) -> AgentHub {
    agent_hub(
        2,
        &format!(
            "server_id = \"host-{id}\"\n{extra}\n[cluster]\nnats_url = \"{}\"\nhub_id = \"{id}\"\n",
            nats.url()
        ),
    )
}

/// Waits for a message matching `pred`, skipping others.
fn wait_for(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_match(ws, what, WAIT, pred)
}

/// Asks for the server list until `pred` holds for `server_id`'s entry.
fn server_until(ws: &mut Ws, server_id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        send_json(ws, &json!({"type": "list_servers", "request_id": "ls"}));
        let m = wait_for(ws, "servers", |m| m["type"] == "servers");
        let entry = m["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["server_id"] == server_id)
            .cloned()
            .unwrap_or(Value::Null);
        if pred(&entry) {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "server {server_id} never matched: {entry}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn online_on(hub: &'static str) -> impl Fn(&Value) -> bool {
    move |s: &Value| s["online"] == true && s["hub"] == hub
}

/// A fake Docker agent: `hello` with `docker`, a table of one container.
fn docker_agent(h: &AgentHub, i: usize) -> Ws {
    let mut a = fake_agent(h, i);
    send_json(
        &mut a,
        &json!({"type": "hello", "name": "x", "version": "t", "capabilities": ["docker", "commands"]}),
    );
    send_json(
        &mut a,
        &json!({"type": "containers", "containers": [container("c1", "web", "running")]}),
    );
    a
}

fn container(id: &str, name: &str, state: &str) -> Value {
    json!({"id": id, "name": name, "image": "img", "state": state, "status": state,
           "created": "2026-01-01T00:00:00Z", "ports": [], "labels": {}})
}

/// Lines of `log_update`s for `container` until `n` were seen.
fn log_lines(ws: &mut Ws, container: &str, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = wait_for(ws, "log_update", |m| {
            m["type"] == "log_update" && m["container_id"] == container
        });
        got.extend(m["log"].as_str().unwrap().lines().map(str::to_string));
    }
    got
}

#[test]
fn fleet_across_hubs() {
    let nats = Nats::start();
    let alerts = "[[alerts]]\nrule = \"cpu_percent > 50 for 100ms\"\n";
    let a = hub(&nats, "a", alerts);
    let b = hub(&nats, "b", "");
    let c = hub(&nats, "c", "");
    let mut agent = docker_agent(&a, 0);
    let mut on_b = browser(&b, "/api/v1/ws", Role::Admin);
    let mut on_c = browser(&c, "/api/v1/ws", Role::Admin);

    // The server list of every hub shows the agent, owned by hub a.
    let entry = server_until(&mut on_b, "srv-0", online_on("a"));
    assert_eq!(entry["name"], "agent-0");
    assert!(
        entry["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("docker"))
    );
    server_until(&mut on_c, "srv-0", online_on("a"));
    server_until(&mut on_c, "host-a", online_on("a"));
    server_until(&mut on_c, "host-b", online_on("b"));

    // Metrics reach B; an alert raised on A (its owner) reaches B too.
    send_json(
        &mut on_b,
        &json!({"type": "subscribe_metrics", "server_id": "srv-0"}),
    );
    let deadline = Instant::now() + WAIT;
    let sample = |cpu: f64| json!({"type": "metrics", "server_id": "srv-0", "cpu_percent": cpu, "memory_percent": 5.0});
    let m = loop {
        send_json(&mut agent, &sample(90.0));
        if let Some(m) = next_json(&mut on_b, Duration::from_millis(500))
            .filter(|m| m["type"] == "metrics" && m["server_id"] == "srv-0")
        {
            break m;
        }
        assert!(Instant::now() < deadline, "no metrics on hub b");
    };
    assert_eq!(m["data"]["cpu_percent"], 90.0);
    std::thread::sleep(Duration::from_millis(200));
    send_json(&mut agent, &sample(91.0));
    let alert = wait_for(&mut on_b, "alert", |m| m["type"] == "alert");
    assert_eq!(alert["server_id"], "srv-0");
    assert_eq!(alert["data"]["state"], "firing");

    // Its metrics history, asked on C (which never watched it): C asks A.
    let get = |h: &AgentHub, path: &str| {
        let raw = raw_request(
            h.d.addr,
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                h.d.addr,
                token(Role::Viewer)
            )
            .as_bytes(),
        )
        .unwrap();
        let (status, body) = split_response(&raw);
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let (status, hist) = get(&c, "/api/v1/servers/srv-0/metrics?range=1h");
    assert_eq!(status, 200, "{hist}");
    assert_eq!(hist["server_id"], "srv-0");
    assert!(
        hist["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["cpu_percent"] == 91.0 || m["cpu_percent"] == 90.0),
        "{hist}"
    );
    let (status, _) = get(&c, "/api/v1/servers/nope/metrics?range=1h");
    assert_eq!(status, 404);

    // Containers on C: the table, then a change.
    send_json(
        &mut on_c,
        &json!({"type": "subscribe_containers", "server_id": "srv-0"}),
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let m = wait_for(&mut on_c, "initial_state", |m| {
            m["type"] == "initial_state" && m["server_id"] == "srv-0"
        });
        if m["containers"].as_array().unwrap().len() == 1 {
            assert_eq!(m["containers"][0]["name"], "web");
            break;
        }
        assert!(Instant::now() < deadline, "the table never reached hub c");
    }
    send_json(
        &mut agent,
        &json!({"type": "container_state_change", "container": container("c1", "web", "exited")}),
    );
    let ch = wait_for(&mut on_c, "container_state_change", |m| {
        m["type"] == "container_state_change" && m["server_id"] == "srv-0"
    });
    assert_eq!(ch["container"]["state"], "exited");

    // Logs: B and C follow c1; the agent gets one subscribe_logs.
    send_json(
        &mut on_b,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "c1", "tail": 10}),
    );
    let sub = wait_for(&mut agent, "subscribe_logs", |m| {
        m["type"] == "subscribe_logs"
    });
    assert_eq!(sub["container_id"], "c1");
    let history: Vec<Value> = (0..5)
        .map(|i| json!({"stream": "stdout", "timestamp": "2026-01-01T00:00:00Z", "line": format!("old {i}")}))
        .collect();
    send_json(
        &mut agent,
        &json!({"type": "log_batch", "container_id": "c1", "lines": history, "history": true, "last": true}),
    );
    let got = log_lines(&mut on_b, "c1", 5);
    assert_eq!(got, (0..5).map(|i| format!("old {i}")).collect::<Vec<_>>());
    send_json(
        &mut on_c,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "c1", "tail": 2}),
    );
    let got = log_lines(&mut on_c, "c1", 2);
    assert_eq!(got, ["old 3", "old 4"]);
    for k in 0..20 {
        let lines: Vec<Value> = (0..10)
            .map(|i| json!({"stream": "stdout", "timestamp": "2026-01-01T00:00:01Z", "line": format!("new {}", k * 10 + i)}))
            .collect();
        send_json(
            &mut agent,
            &json!({"type": "log_batch", "container_id": "c1", "lines": lines}),
        );
    }
    let want: Vec<String> = (0..200).map(|i| format!("new {i}")).collect();
    assert_eq!(
        log_lines(&mut on_b, "c1", 200),
        want,
        "hub b: every line once, in order"
    );
    assert_eq!(
        log_lines(&mut on_c, "c1", 200),
        want,
        "hub c: every line once, in order"
    );
    // Nothing more: no line was delivered twice.
    std::thread::sleep(Duration::from_millis(500));
    while let Some(m) = next_json(&mut on_b, Duration::from_millis(100)) {
        assert_ne!(m["type"], "log_update", "a duplicate on hub b: {m}");
    }
    // One follower on the agent for both hubs.
    while let Some(m) = next_json(&mut agent, Duration::from_millis(200)) {
        assert_ne!(m["type"], "subscribe_logs", "a second follower: {m}");
    }

    // A command from C runs on the agent held by A.
    send_json(
        &mut on_c,
        &json!({"type": "command", "server_id": "srv-0", "command": "uptime", "request_id": "r-1"}),
    );
    let accepted = wait_for(&mut on_c, "command_accepted", |m| {
        m["type"] == "command_accepted"
    });
    assert_eq!(accepted["request_id"], "r-1");
    let cmd = wait_for(&mut agent, "command", |m| m["type"] == "command");
    assert_eq!(cmd["command"], "uptime");
    send_json(
        &mut agent,
        &json!({"type": "command_response", "command_id": cmd["command_id"],
        "output": "up 3 days", "exit_code": 0, "duration_ms": 4}),
    );
    let resp = wait_for(&mut on_c, "command_response", |m| {
        m["type"] == "command_response"
    });
    assert_eq!(resp["request_id"], "r-1");
    assert_eq!(resp["output"], "up 3 days");
    assert_eq!(resp["server_id"], "srv-0");

    // The agent's own log entries reach the seed endpoint on B.
    let mut entries = browser(&b, "/api/v1/ws/logs/srv-0", Role::Viewer);
    let deadline = Instant::now() + WAIT;
    loop {
        send_json(
            &mut agent,
            &json!({"type": "log", "server_id": "srv-0", "level": "WARN",
            "message": "disk almost full", "timestamp": "2026-01-01T00:00:00Z"}),
        );
        if let Some(m) = next_json(&mut entries, Duration::from_millis(500)) {
            assert_eq!(m["type"], "log");
            assert_eq!(m["data"]["message"], "disk almost full");
            assert_eq!(m["data"]["level"], "WARN");
            break;
        }
        assert!(Instant::now() < deadline, "no agent log entry on hub b");
    }

    // /healthz and /metrics show the cluster.
    let h = c.d.healthz();
    assert_eq!(h["cluster"]["nats"], "up");
    assert_eq!(h["cluster"]["hub_id"], "c");
    assert_eq!(c.d.metric("dockwire_cluster_nats_up"), Some(1.0));
    assert!(c.d.metric("dockwire_cluster_peers").unwrap() >= 2.0);
}

/// Sends numbered lines `from..to` as the agent's `log_batch` of c1.
fn send_lines(agent: &mut Ws, from: u32, to: u32, history: bool) {
    let lines: Vec<Value> = (from..to)
        .map(|i| json!({"stream": "stdout", "timestamp": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60), "line": format!("line {i}")}))
        .collect();
    send_json(
        agent,
        &json!({"type": "log_batch", "container_id": "c1", "lines": lines, "history": history, "last": history}),
    );
}

/// `log_update`s of c1 until `n` lines were seen: the lines and the last
/// `seq`; fails on a `log_gap`.
fn numbered_lines(ws: &mut Ws, n: usize) -> (Vec<String>, u64) {
    let mut got = Vec::new();
    let mut seq = 0;
    while got.len() < n {
        let m = wait_for(ws, "log_update", |m| {
            (m["type"] == "log_update" || m["type"] == "log_gap") && m["container_id"] == "c1"
        });
        assert_eq!(m["type"], "log_update", "{m}");
        let s = m["seq"].as_u64().unwrap();
        assert!(s > seq, "seq {s} after {seq}");
        seq = s;
        got.extend(m["log"].as_str().unwrap().lines().map(str::to_string));
    }
    (got, seq)
}

fn expect_lines(from: u32, to: u32) -> Vec<String> {
    (from..to).map(|i| format!("line {i}")).collect()
}

#[test]
fn log_resume_on_any_hub() {
    let nats = Nats::with_jetstream();
    let a = hub(&nats, "a", "");
    let b = hub(&nats, "b", "");
    let c = hub(&nats, "c", "");
    let d = hub(&nats, "d", "");
    let mut agent = docker_agent(&a, 0);
    let mut on_c = browser(&c, "/api/v1/ws", Role::Viewer);
    server_until(&mut on_c, "srv-0", online_on("a"));
    // JetStream is up on every hub before the stream starts.
    for h in [&a, &b, &c, &d] {
        let deadline = Instant::now() + WAIT;
        while h.d.healthz()["cluster"]["history"] != true {
            assert!(Instant::now() < deadline, "no JetStream history on a hub");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    send_json(
        &mut on_c,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "c1", "tail": 100}),
    );
    wait_for(&mut agent, "subscribe_logs", |m| {
        m["type"] == "subscribe_logs"
    });
    send_lines(&mut agent, 0, 5, true);
    send_lines(&mut agent, 5, 8, false);
    let (got, seq_at_7) = numbered_lines(&mut on_c, 8);
    assert_eq!(got, expect_lines(0, 8));

    // The browser loses its socket (nobody watches: the agent is told to
    // stop) and comes back on hub b while the container wrote 3 more lines.
    drop(on_c);
    wait_for(&mut agent, "unsubscribe_logs", |m| {
        m["type"] == "unsubscribe_logs"
    });
    let mut on_b = browser(&b, "/api/v1/ws", Role::Viewer);
    server_until(&mut on_b, "srv-0", online_on("a"));
    send_json(
        &mut on_b,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "c1", "since_seq": seq_at_7}),
    );
    wait_for(&mut agent, "subscribe_logs", |m| {
        m["type"] == "subscribe_logs"
    });
    send_lines(&mut agent, 0, 11, true);
    let (got, seq_at_10) = numbered_lines(&mut on_b, 3);
    assert_eq!(got, expect_lines(8, 11), "b: exactly the missed lines");
    assert_eq!(seq_at_10, seq_at_7 + 3);
    drop(on_b);
    wait_for(&mut agent, "unsubscribe_logs", |m| {
        m["type"] == "unsubscribe_logs"
    });

    // The agent moves to hub d, which never followed the stream: d goes on
    // from the history a stored in JetStream. A browser on c resumes from
    // line 10 across the move.
    drop(agent);
    let mut moved = docker_agent(&d, 0);
    let mut on_c = browser(&c, "/api/v1/ws", Role::Viewer);
    server_until(&mut on_c, "srv-0", online_on("d"));
    send_json(
        &mut on_c,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "c1", "since_seq": seq_at_10}),
    );
    let sub = wait_for(&mut moved, "subscribe_logs", |m| {
        m["type"] == "subscribe_logs"
    });
    assert_eq!(sub["container_id"], "c1");
    // Its history overlaps what was stored; two lines are new.
    send_lines(&mut moved, 0, 13, true);
    let (got, seq_at_12) = numbered_lines(&mut on_c, 2);
    assert_eq!(got, expect_lines(11, 13), "c: only the new lines");
    assert_eq!(
        seq_at_12,
        seq_at_10 + 2,
        "the numbering goes on across owners"
    );
    // On d itself, from line 8.
    let mut on_d = browser(&d, "/api/v1/ws", Role::Viewer);
    send_json(
        &mut on_d,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "c1", "since_seq": seq_at_7 + 1}),
    );
    let (got, last) = numbered_lines(&mut on_d, 4);
    assert_eq!(got, expect_lines(9, 13));
    assert_eq!(last, seq_at_12);
    // Nothing more: no repeat follows on either.
    for ws in [&mut on_c, &mut on_d] {
        assert!(
            next_json(ws, Duration::from_millis(500))
                .filter(|m| m["type"] == "log_update" || m["type"] == "log_gap")
                .is_none()
        );
    }
    assert!(
        d.d.metrics_text()
            .contains("dockwire_cluster_log_histories_loaded_total 1"),
        "d loaded the stream's history once"
    );
}

#[test]
fn hub_death_and_failover() {
    let nats = Nats::start();
    let mut a = hub(&nats, "a", "");
    let b = hub(&nats, "b", "");
    let c = hub(&nats, "c", "");
    let _agent = spawn_agent(
        &a,
        1,
        &[
            "--hub",
            &b.d.url("/api/v1/agents/ws"),
            "--metrics-interval",
            "1s",
        ],
    );
    wait_agents(&a, 1.0, WAIT);
    let mut on_c = browser(&c, "/api/v1/ws", Role::Viewer);
    server_until(&mut on_c, "srv-1", online_on("a"));
    // SIGKILL: the hub says nothing; its beats stop.
    let started = Instant::now();
    let _ = a.d.child.kill();
    let _ = a.d.child.wait();
    // Offline on C, then online again through B.
    wait_for(&mut on_c, "offline", |m| {
        m["type"] == "server_state_change"
            && m["server"]["server_id"] == "srv-1"
            && m["server"]["online"] == false
    });
    wait_for(&mut on_c, "online on b", |m| {
        m["type"] == "server_state_change"
            && m["server"]["server_id"] == "srv-1"
            && m["server"]["online"] == true
            && m["server"]["hub"] == "b"
    });
    eprintln!(
        "failover seen on hub c {:?} after the kill",
        started.elapsed()
    );
    // Its metrics flow through B.
    send_json(
        &mut on_c,
        &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
    );
    wait_for(&mut on_c, "metrics", |m| {
        m["type"] == "metrics" && m["server_id"] == "srv-1"
    });
}

#[test]
fn nats_outage() {
    let mut nats = Nats::start();
    let a = hub(&nats, "a", "");
    let b = hub(&nats, "b", "");
    let _agent_a = fake_agent(&a, 0);
    let _agent_b = fake_agent(&b, 1);
    let mut on_a = browser(&a, "/api/v1/ws", Role::Viewer);
    server_until(&mut on_a, "srv-1", online_on("b"));
    nats.stop();
    // A keeps its own agent; B's goes offline here.
    server_until(&mut on_a, "srv-1", |s| s["online"] == false);
    server_until(&mut on_a, "srv-0", online_on("a"));
    let h = a.d.healthz();
    assert_eq!(h["cluster"]["nats"], "down");
    // A new browser on A is served meanwhile.
    let mut late = browser(&a, "/api/v1/ws", Role::Viewer);
    server_until(&mut late, "srv-0", online_on("a"));
    nats.restart();
    server_until(&mut on_a, "srv-1", online_on("b"));
    let mut on_b = browser(&b, "/api/v1/ws", Role::Viewer);
    server_until(&mut on_b, "srv-0", online_on("a"));
}
