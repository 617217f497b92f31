//! The hub driven in memory: inputs in, frames and closes out through a
//! [`MemoryOutbox`]; no sockets, no threads, no clock but the one passed in.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::auth::{Role, hash_api_key, sign_token};
use crate::config::{FileConfig, Overrides};
use crate::feed::{DockerEvent, LogLine, LogStream};
use crate::stats::Endpoint;

pub(super) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
pub(super) const AGENT_KEY: &str = "agent-key-for-tests";

fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "dockwire-hub-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("file");
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A hub, its outbox and a clock.
pub(super) struct Harness {
    pub(super) hub: Hub,
    pub(super) out: MemoryOutbox,
    stats: Stats,
    now: Instant,
    next_conn: ConnId,
}

impl Harness {
    pub(super) fn new(toml_text: &str) -> Self {
        let f: FileConfig = toml::from_str(toml_text).unwrap();
        let config = Config::from_file(f, &Overrides::default()).unwrap();
        let now = Instant::now();
        let soft = config.max_queued_bytes;
        Harness {
            hub: Hub::new(config, None, now),
            out: MemoryOutbox::new(soft),
            stats: Stats::default(),
            now,
            next_conn: 1,
        }
    }

    fn with_auth(extra: &str) -> Self {
        let secret = temp_file("secret", SECRET);
        Self::new(&format!(
            "server_id = \"local\"\n{extra}\n[auth]\njwt_secret_file = {:?}\n",
            secret.display().to_string()
        ))
    }

    pub(super) fn input(&mut self, input: Input<'_>) {
        self.hub
            .handle(&mut self.out, &mut self.stats, self.now, input);
    }

    pub(super) fn open(&mut self, endpoint: Endpoint, target: Option<&str>) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.out.open(conn);
        self.input(Input::Opened {
            conn,
            serial: conn as u64,
            endpoint,
            target: target.map(str::to_string),
            claims: None,
            peer: None,
            dialect: crate::protocol::Dialect::for_endpoint(endpoint),
        });
        conn
    }

    pub(super) fn send(&mut self, conn: ConnId, v: &Value) {
        let text = v.to_string();
        self.input(Input::Text { conn, text: &text });
    }

    pub(super) fn send_text(&mut self, conn: ConnId, text: &str) {
        self.input(Input::Text { conn, text });
    }

    pub(super) fn docker(&mut self, ev: DockerEvent) {
        self.input(Input::Feed(crate::feed::FeedEvent::Docker(ev)));
    }

    pub(super) fn tick(&mut self, advance: Duration) {
        self.now += advance;
        let unix_now = unix_now() + advance.as_secs();
        self.input(Input::Tick { unix_now });
    }

    /// Everything queued for `conn`, as JSON (close frames skipped).
    pub(super) fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.out
            .take_texts(conn)
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    pub(super) fn take_raw(&mut self, conn: ConnId) -> Vec<String> {
        self.out.take_texts(conn)
    }

    pub(super) fn types(&mut self, conn: ConnId) -> Vec<String> {
        self.take(conn)
            .iter()
            .map(|v| v["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    pub(super) fn token(&self, role: Role, ttl: Duration) -> String {
        sign_token(SECRET, "tester", role, ttl, unix_now()).unwrap()
    }

    /// An authenticated `/api/v1/ws` socket.
    pub(super) fn browser(&mut self, role: Role) -> ConnId {
        let c = self.open(Endpoint::Browser, None);
        let t = self.token(role, Duration::from_secs(3600));
        self.send(c, &json!({"type": "auth", "token": t}));
        let types = self.types(c);
        assert_eq!(types[0], "auth_success", "{types:?}");
        c
    }

    /// An authenticated agent socket.
    pub(super) fn agent(&mut self) -> ConnId {
        let c = self.open(Endpoint::Agent, None);
        self.send(c, &json!({"type": "auth", "api_key": AGENT_KEY}));
        let v = self.take(c);
        assert_eq!(v[0]["type"], "auth_success", "{v:?}");
        c
    }

    pub(super) fn topic_count(&self) -> usize {
        self.hub.state().topics.len()
    }
}

pub(super) fn agent_config() -> String {
    format!(
        "[[agents]]\nname = \"web-1\"\nkey_sha256 = \"{}\"\nserver_id = \"srv-1\"\n",
        hash_api_key(AGENT_KEY)
    )
}

pub(super) fn container(id: &str, name: &str) -> crate::protocol::model::Container {
    crate::protocol::model::Container {
        id: id.into(),
        name: name.into(),
        image: "busybox".into(),
        state: "running".into(),
        status: "Up".into(),
        created: "2026-01-01T00:00:00Z".into(),
        labels: Default::default(),
        started_at: None,
        exit_code: None,
        health: None,
    }
}

/// A host metrics sample whose timestamp is `stamp` (any size).
fn sample(stamp: &str) -> crate::protocol::model::Metrics {
    serde_json::from_value(json!({
        "cpu_percent": 1.0, "memory_percent": 1.0, "memory_used": 1, "memory_total": 2,
        "disk_usage": [], "network": [], "load_average": [0.0, 0.0, 0.0],
        "timestamp": stamp,
    }))
    .unwrap()
}

fn lines(range: std::ops::Range<u32>) -> Vec<LogLine> {
    range
        .map(|i| LogLine {
            stream: LogStream::Stdout,
            timestamp: String::new(),
            text: format!("line {i}"),
        })
        .collect()
}

fn log_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|v| v["type"] == "log_update")
        .map(|v| v["log"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn metrics_subscribe_and_unsubscribe_leave_no_topic_behind() {
    let mut h = Harness::new(&format!("server_id = \"local\"\n{}", agent_config()));
    let b = h.open(Endpoint::Browser, None);
    let types = h.types(b);
    assert_eq!(types, ["connection_established", "initial_state", "alerts"]);
    let a = h.agent();
    // Every browser hears that the agent's server came online.
    let online = h.take(b);
    assert_eq!(online[0]["type"], "server_state_change", "{online:?}");
    assert_eq!(online[0]["server"]["server_id"], "srv-1");
    assert_eq!(online[0]["server"]["online"], true);
    h.send(
        b,
        &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
    );
    h.send(
        a,
        &json!({"type": "metrics", "cpu_percent": 5.0, "memory_percent": 1.0}),
    );
    let got = h.take(b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["server_id"], "srv-1");
    assert_eq!(got[0]["data"]["cpu_percent"], 5.0);
    h.send(
        b,
        &json!({"type": "unsubscribe_metrics", "server_id": "srv-1"}),
    );
    h.send(a, &json!({"type": "metrics", "cpu_percent": 6.0}));
    assert!(h.take(b).is_empty());
    // The browser is still in the local containers, metrics and servers topics.
    assert_eq!(h.topic_count(), 3);
    h.input(Input::Closed { conn: b });
    assert_eq!(h.topic_count(), 0, "a closed socket leaves every topic");
    assert!(h.hub.session(b).is_none());
    // Unknown servers are refused with an error, the socket stays.
    let c = h.open(Endpoint::Browser, None);
    h.take(c);
    h.send(
        c,
        &json!({"type": "subscribe_metrics", "server_id": "nope"}),
    );
    let e = h.take(c);
    assert_eq!(e[0]["type"], "error");
    assert!(h.out.closed(c).is_none());
}

#[test]
fn log_history_then_live_lines_without_gap_or_duplicate() {
    let mut h = Harness::new("server_id = \"local\"\n");
    let id = "a".repeat(64);
    h.docker(DockerEvent::Up {
        containers: vec![container(&id, "web")],
    });
    let first = h.open(Endpoint::Browser, None);
    h.take(first);
    h.send(
        first,
        &json!({"type": "start_log_stream", "container_id": "web", "tail": 3}),
    );
    // The follower's history arrives, then live lines.
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: id.clone(),
        lines: lines(0..10),
    });
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: id.clone(),
        lines: lines(10..12),
    });
    assert_eq!(
        log_text(&h.take(first)),
        "line 7\nline 8\nline 9\nline 10\nline 11\n"
    );
    // A later subscriber: its tail from the ring, then the same live stream.
    let second = h.open(Endpoint::Browser, None);
    h.take(second);
    h.send(
        second,
        &json!({"type": "start_log_stream", "container_id": id, "tail": 2}),
    );
    h.now += Duration::from_millis(10);
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: id.clone(),
        lines: lines(12..13),
    });
    assert_eq!(log_text(&h.take(second)), "line 10\nline 11\nline 12\n");
    assert_eq!(log_text(&h.take(first)), "line 12\n");
    let key = TopicKey::Logs {
        server: "local".into(),
        container: id.clone(),
    };
    assert_eq!(
        h.hub.state().topics.get(&key).unwrap().seq,
        3,
        "one per live line"
    );
    // Leaving: the last subscriber stops the follower and the topic.
    h.send(
        first,
        &json!({"type": "stop_log_stream", "container_id": "web"}),
    );
    assert_eq!(h.types(first), ["log_stream_stopped"]);
    h.input(Input::Closed { conn: second });
    assert!(h.hub.state().topics.get(&key).is_none());
    assert!(h.hub.state().follows.is_empty());
}

#[test]
fn slow_consumer_loses_log_lines_is_told_and_is_closed_past_the_hard_cap() {
    let mut h = Harness::new("server_id = \"local\"\n[limits]\nmax_queued_bytes = 2048\n");
    let id = "b".repeat(64);
    h.docker(DockerEvent::Up {
        containers: vec![container(&id, "busy")],
    });
    let slow = h.open(Endpoint::Browser, None);
    h.take(slow);
    h.send(
        slow,
        &json!({"type": "start_log_stream", "container_id": "busy", "tail": 0}),
    );
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: id.clone(),
        lines: vec![],
    });
    for i in 0..40u32 {
        h.now += Duration::from_millis(10);
        h.docker(DockerEvent::LogLines {
            follow_id: 1,
            container_id: id.clone(),
            lines: lines(i * 10..i * 10 + 10),
        });
    }
    let queued = h.out.queued_bytes(slow);
    assert!(queued <= 2048, "log lines obey the soft cap: {queued}");
    assert!(h.stats.log_lines_dropped > 0);
    // The reader catches up: the hub reports what was lost before new lines.
    let seen = log_text(&h.take(slow)).lines().count() as u64;
    h.input(Input::Drained { conn: slow });
    let report = h.take(slow);
    assert_eq!(report[0]["type"], "log_dropped", "{report:?}");
    assert_eq!(report[0]["container_id"], id.as_str());
    assert_eq!(report[0]["server_id"], "local");
    assert_eq!(report[0]["lines"].as_u64().unwrap() + seen, 400);
    // Essential frames past the hard cap close with 1013, queue discarded.
    let sid = "local".to_string();
    let big = "x".repeat(600 << 10);
    for _ in 0..4 {
        h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(sample(
            &big,
        ))));
    }
    let closed = h.out.closed(slow).cloned().expect("closed");
    assert_eq!(closed.0, 1013);
    assert!(closed.2, "the close goes ahead of the queue");
    assert!(h.hub.session(slow).is_none(), "and the session is gone");
    assert_eq!(h.topic_count(), 0, "{sid}: no topic keeps a closed socket");
}

#[test]
fn auth_roles_and_command_relay_with_timeout_and_answer_kinds() {
    let mut h = Harness::with_auth(&agent_config());
    let viewer = h.browser(Role::Viewer);
    let admin = h.browser(Role::Admin);
    let agent = h.agent();
    h.take(viewer);
    h.take(admin);
    // A viewer may not command.
    h.send(
        viewer,
        &json!({"type": "command", "server_id": "srv-1", "command": "uptime"}),
    );
    let e = h.take(viewer);
    assert!(e[0]["message"].as_str().unwrap().contains("admin"), "{e:?}");
    assert!(h.take(agent).is_empty());
    // An admin's command reaches the agent; the answer comes back to it only.
    h.send(
        admin,
        &json!({"type": "command", "server_id": "srv-1", "command": "uptime"}),
    );
    let cmd = h.take(agent);
    assert_eq!(cmd[0]["type"], "command");
    let id = cmd[0]["command_id"].as_str().unwrap().to_string();
    h.send(
        agent,
        &json!({"type": "command_response", "command_id": id, "output": "up", "exit_code": 0}),
    );
    let r = h.take(admin);
    assert_eq!(r[0]["type"], "command_accepted");
    assert_eq!(r[0]["command_id"], id.as_str());
    assert_eq!(r[1]["type"], "command_response");
    assert_eq!(r[1]["server_id"], "srv-1");
    assert!(h.take(viewer).is_empty());
    // The wrong kind of answer is refused, not relayed as a success (hole 10).
    h.send(
        admin,
        &json!({"type": "command", "server_id": "srv-1", "command": "uptime"}),
    );
    let id = h.take(agent)[0]["command_id"].as_str().unwrap().to_string();
    h.send(
        agent,
        &json!({"type": "docker_response", "command_id": id, "success": true, "message": "ok"}),
    );
    let r = h.take(admin);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["type"], "command_accepted");
    assert_eq!(r[1]["type"], "error");
    assert!(
        r[1]["message"]
            .as_str()
            .unwrap()
            .contains("docker_response")
    );
    // Unanswered: an error after the timeout, and nothing more.
    h.send(
        admin,
        &json!({"type": "command", "server_id": "srv-1", "command": "uptime"}),
    );
    h.take(agent);
    assert_eq!(h.take(admin)[0]["type"], "command_accepted");
    h.tick(Duration::from_secs(31));
    let r = h.take(admin);
    assert!(
        r[0]["message"].as_str().unwrap().contains("timed out"),
        "{r:?}"
    );
    assert!(h.hub.state().pending.is_empty());
}

#[test]
fn a_token_expiring_near_the_end_of_time_does_not_overflow() {
    // Hole 4: exp + leeway overflowed in the sweep (a panic in debug builds).
    let mut h = Harness::with_auth("");
    let c = h.open(Endpoint::Browser, None);
    let t = h.token(Role::Admin, Duration::from_secs(u64::MAX));
    h.send(c, &json!({"type": "auth", "token": t}));
    assert_eq!(h.types(c)[0], "auth_success");
    h.tick(Duration::from_secs(1));
    assert!(h.out.closed(c).is_none());
    // An expired token is closed by the sweep.
    let d = h.open(Endpoint::Browser, None);
    let short = h.token(Role::Admin, Duration::from_secs(1));
    h.send(d, &json!({"type": "auth", "token": short}));
    h.tick(Duration::from_secs(40));
    assert_eq!(h.out.closed(d).map(|c| c.0), Some(1008));
}

#[test]
fn long_tokens_get_an_authentication_error_not_send_auth_first() {
    // Hole 11.
    let mut h = Harness::with_auth("");
    let c = h.open(Endpoint::Browser, None);
    h.send(c, &json!({"type": "auth", "token": "x".repeat(6 << 10)}));
    let e = h.take(c);
    let msg = e[0]["message"].as_str().unwrap();
    assert!(msg.starts_with("Authentication failed"), "{msg}");
    assert!(!msg.contains("first"), "{msg}");
    let d = h.open(Endpoint::Browser, None);
    h.send(d, &json!({"type": "auth", "token": "x".repeat(10 << 10)}));
    let e = h.take(d);
    let msg = e[0]["message"].as_str().unwrap();
    assert!(msg.contains("token") && msg.contains("too long"), "{msg}");
    assert_eq!(h.out.closed(d).map(|c| c.0), Some(1008));
}

#[test]
fn an_agent_at_a_browser_endpoint_is_sent_to_the_agents_endpoint() {
    // Papercut (issue 15): it was told `missing field "token"`.
    let agent_auth = json!({"type": "auth", "api_key": AGENT_KEY});
    for auth_on in [true, false] {
        let mut h = if auth_on {
            Harness::with_auth(&agent_config())
        } else {
            Harness::new(&agent_config())
        };
        let c = h.open(Endpoint::Browser, None);
        h.send(c, &agent_auth);
        // Without auth the socket was greeted first.
        let e = h.take(c);
        let e = e.iter().find(|v| v["type"] == "error").expect("an error");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("browser endpoint"), "{msg}");
        assert!(msg.contains("/api/v1/agents/ws"), "{msg}");
        assert!(!msg.contains("missing field"), "{msg}");
        if auth_on {
            assert_eq!(h.out.closed(c).map(|c| c.0), Some(1008));
        }
    }
    // A browser's `auth` without a token is still told what is missing.
    let mut h = Harness::with_auth("");
    let c = h.open(Endpoint::Browser, None);
    h.send(c, &json!({"type": "auth"}));
    let msg = h.take(c)[0]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("missing field \"token\""), "{msg}");
}

#[test]
fn refused_commands_are_audited_within_a_budget_and_summarised() {
    // Hole 6: a viewer flooding refused commands.
    let audit = temp_file("audit", b"");
    let mut h = Harness::with_auth(&format!(
        "{}\n[commands]\naudit_log = {:?}\n",
        agent_config(),
        audit.display().to_string()
    ));
    let viewer = h.browser(Role::Viewer);
    for _ in 0..100 {
        h.send(
            viewer,
            &json!({"type": "command", "server_id": "srv-1", "command": "id"}),
        );
    }
    assert_eq!(h.take(viewer).len(), 100, "each refusal is answered");
    assert_eq!(h.stats.commands.get("forbidden"), Some(&100));
    assert_eq!(h.stats.commands.get("refusal_not_audited"), Some(&90));
    h.input(Input::Closed { conn: viewer });
    // The writer thread appends 10 records and one summary of the other 90.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&audit).unwrap();
        if text.lines().count() >= 11 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 11, "{text}");
    assert_eq!(records[10]["kind"], "refusals_suppressed");
    assert_eq!(records[10]["count"], 90);
}

#[test]
fn socketio_gets_every_reply_as_socketio_packets() {
    // Hole 7: pong, metrics and errors in the dialect of the socket.
    let mut h = Harness::new("server_id = \"local\"\n");
    let c = h.open(Endpoint::SocketIo, None);
    assert!(h.take_raw(c)[0].starts_with("0{\"sid\""));
    // Without recovery's offsets, so the packets compare whole.
    h.send_text(c, r#"40{"recover":false}"#);
    let hello = h.take_raw(c);
    assert!(hello[0].starts_with("40{\"sid\""), "{hello:?}");
    h.send_text(c, r#"42["ping"]"#);
    assert_eq!(h.take_raw(c), [r#"42["pong",{}]"#]);
    h.send_text(c, r#"421["subscribe_metrics",{"server_id":"local"}]"#);
    assert_eq!(h.take_raw(c), [r#"431[{"ok":true}]"#]);
    h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(sample(
        "now",
    ))));
    let m = h.take_raw(c);
    assert!(
        m[0].starts_with(r#"42["metrics",{"server_id":"local","data":"#),
        "{m:?}"
    );
    h.send_text(c, r#"42["command",{"server_id":"local","command":"id"}]"#);
    let e = h.take_raw(c);
    assert!(e[0].starts_with(r#"42["error",{"error":"#), "{e:?}");
    // Heartbeat: ping, then a close when the pong does not come.
    h.tick(Duration::from_secs(26));
    assert_eq!(h.take_raw(c), ["2"]);
    h.tick(Duration::from_secs(21));
    assert!(h.out.closed(c).is_some());
}

#[test]
fn agent_log_entries_dropped_for_a_slow_watcher_are_reported() {
    // Hole 9.
    let mut h = Harness::new(&format!(
        "server_id = \"local\"\n{}\n[limits]\nmax_queued_bytes = 4096\n",
        agent_config()
    ));
    let watcher = h.open(Endpoint::ServerLogs, Some("srv-1"));
    let agent = h.agent();
    for i in 0..200 {
        h.send(
            agent,
            &json!({"type": "log", "level": "INFO", "message": format!("entry {i}")}),
        );
    }
    let got = h.take(watcher);
    let entries = got.iter().filter(|v| v["type"] == "log").count() as u64;
    assert!(entries < 200);
    h.input(Input::Drained { conn: watcher });
    let r = h.take(watcher);
    assert_eq!(r[0]["type"], "log_dropped", "{r:?}");
    assert_eq!(r[0]["server_id"], "srv-1");
    assert!(r[0].get("container_id").is_none());
    assert_eq!(r[0]["lines"].as_u64().unwrap() + entries, 200);
}

#[test]
fn one_encode_per_dialect_for_any_number_of_subscribers() {
    let mut h = Harness::new("server_id = \"local\"\n");
    let id = "c".repeat(64);
    h.docker(DockerEvent::Up {
        containers: vec![container(&id, "web")],
    });
    let mut socks = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 {
            h.open(Endpoint::Browser, None)
        } else {
            let c = h.open(Endpoint::SocketIo, None);
            h.send_text(c, "40");
            c
        };
        h.send_text(
            c,
            &if i % 2 == 0 {
                json!({"type": "start_log_stream", "container_id": "web", "tail": 0}).to_string()
            } else {
                r#"42["start_log_stream",{"container_id":"web","tail":0}]"#.to_string()
            },
        );
        socks.push(c);
    }
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: id.clone(),
        lines: vec![],
    });
    let before = h.stats.log_frames_encoded;
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: id,
        lines: lines(0..5),
    });
    assert_eq!(
        h.stats.log_frames_encoded - before,
        2,
        "one JSON and one Socket.IO encode"
    );
    for c in socks {
        assert!(h.take_raw(c).iter().any(|t| t.contains("line 4")));
    }
}

#[test]
fn cpu_alert_fires_after_its_hold_and_resolves() {
    let mut h = Harness::new(&format!(
        "server_id = \"local\"\n{}\n[[alerts]]\nrule = \"cpu_percent > 80 for 10s\"\n",
        agent_config()
    ));
    let b = h.open(Endpoint::Browser, None);
    let a = h.agent();
    h.send(
        b,
        &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
    );
    h.take(b);
    h.send(a, &json!({"type": "metrics", "cpu_percent": 95.0}));
    h.now += Duration::from_secs(11);
    h.send(a, &json!({"type": "metrics", "cpu_percent": 96.0}));
    let alerts: Vec<Value> = h
        .take(b)
        .into_iter()
        .filter(|v| v["type"] == "alert")
        .collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["data"]["state"], "firing");
    h.send(a, &json!({"type": "metrics", "cpu_percent": 5.0}));
    let alerts: Vec<Value> = h
        .take(b)
        .into_iter()
        .filter(|v| v["type"] == "alert")
        .collect();
    assert_eq!(alerts[0]["data"]["state"], "resolved");
}

#[test]
fn a_newer_agent_connection_replaces_the_older() {
    let mut h = Harness::new(&format!("server_id = \"local\"\n{}", agent_config()));
    let first = h.agent();
    let second = h.agent();
    assert_eq!(h.out.closed(first).map(|c| c.0), Some(1008));
    assert!(h.out.closed(second).is_none());
    assert!(h.hub.session(first).is_none());
    assert_eq!(
        h.hub.state().servers["srv-1"].agent.map(|a| a.0),
        Some(second)
    );
    // A wrong key is refused and closed.
    let bad = h.open(Endpoint::Agent, None);
    h.send(bad, &json!({"type": "auth", "api_key": "nope"}));
    assert_eq!(h.out.closed(bad).map(|c| c.0), Some(1008));
}

#[test]
fn random_inputs_keep_the_invariants() {
    use rand::{RngExt, SeedableRng};
    // Messages a fuzzer would take long to find, mixed with random bytes.
    let seeds: [&str; 12] = [
        r#"{"type":"auth","api_key":"drive-agent-key"}"#,
        r#"{"type":"metrics","cpu_percent":90}"#,
        r#"{"type":"log","message":"x"}"#,
        r#"{"type":"subscribe_metrics","server_id":"srv"}"#,
        r#"{"type":"unsubscribe_metrics","server_id":"local"}"#,
        r#"{"type":"start_log_stream","container_id":"web"}"#,
        r#"{"type":"command","server_id":"srv","command":"id"}"#,
        r#"{"type":"command_response","command_id":"x","exit_code":0}"#,
        r#"{"type":"ping"}"#,
        "40",
        r#"42["subscribe_metrics",{"server_id":"srv"}]"#,
        "3",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    for _ in 0..300 {
        let mut data = Vec::new();
        for _ in 0..rng.random_range(1..80) {
            data.push(rng.random::<u8>());
            if rng.random_bool(0.7) {
                let s = seeds[rng.random_range(0..seeds.len())].as_bytes();
                data.push(s.len() as u8);
                data.extend_from_slice(s);
            } else {
                let n: u8 = rng.random_range(0..40);
                data.push(n);
                data.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
        drive_hub(&data);
    }
}

#[test]
fn a_socket_opened_with_a_verified_session_starts_authenticated() {
    let mut h = Harness::with_auth(&agent_config());
    let claims = |role| crate::auth::Claims {
        sub: "cookie-user".into(),
        role,
        exp: unix_now() + 3600,
        nbf: None,
        iat: None,
    };
    let open = |h: &mut Harness, endpoint, role| {
        let conn = h.next_conn;
        h.next_conn += 1;
        h.out.open(conn);
        h.input(Input::Opened {
            conn,
            serial: conn as u64,
            endpoint,
            target: None,
            claims: Some(claims(role)),
            peer: None,
            dialect: crate::protocol::Dialect::for_endpoint(endpoint),
        });
        conn
    };
    let viewer = open(&mut h, Endpoint::Browser, Role::Viewer);
    let types = h.types(viewer);
    assert_eq!(
        types[..2],
        ["connection_established", "initial_state"],
        "{types:?}"
    );
    assert_eq!(h.hub.session(viewer).unwrap().who(), "cookie-user");
    h.send(
        viewer,
        &json!({"type": "command", "server_id": "srv-1", "command": "uptime"}),
    );
    let e = h.take(viewer);
    assert!(e[0]["message"].as_str().unwrap().contains("admin"), "{e:?}");
    let admin = open(&mut h, Endpoint::Browser, Role::Admin);
    assert_eq!(h.hub.session(admin).unwrap().role(), Some(Role::Admin));
    // The token's expiry still closes the socket.
    h.tick(Duration::from_secs(3600 + 31));
    assert!(h.out.closed(admin).is_some());
    // Claims never stand for an agent's key.
    let agent = open(&mut h, Endpoint::Agent, Role::Admin);
    assert!(!h.hub.session(agent).unwrap().is_ready());
    // Socket.IO: the CONNECT needs no token then.
    let sio = open(&mut h, Endpoint::SocketIo, Role::Viewer);
    h.take_raw(sio);
    h.send_text(sio, "40");
    let frames = h.take_raw(sio);
    assert!(frames[0].starts_with("40{\"sid\""), "{frames:?}");
}

#[test]
fn metrics_history_is_kept_for_the_local_host_and_agents() {
    let mut h = Harness::new(&format!("server_id = \"local\"\n{}", agent_config()));
    let a = h.agent();
    h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(sample(
        "2026-01-01T00:00:00Z",
    ))));
    h.send(
        a,
        &json!({"type": "metrics", "server_id": "srv-1", "cpu_percent": 42.0,
                "disk_usage": [{"mount": "/data", "used": 7, "total": 9}]}),
    );
    let state = h.hub.state();
    let now = unix_now() + 1;
    for (id, cpu) in [("local", 1.0), ("srv-1", 42.0)] {
        let body = state
            .metrics_history_json(id, HistoryRange::Hour, now)
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["server_id"], id);
        assert_eq!(v["samples"][0]["cpu_percent"], cpu, "{v}");
        let day = state
            .metrics_history_json(id, HistoryRange::Day, now)
            .unwrap();
        let v: Value = serde_json::from_slice(&day).unwrap();
        assert_eq!(v["step_s"], 60);
        assert_eq!(v["samples"].as_array().unwrap().len(), 1, "{v}");
    }
    let v: Value = serde_json::from_slice(
        &state
            .metrics_history_json("local", HistoryRange::Hour, now)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["step_s"], 5, "the local interval");
    assert!(
        state
            .metrics_history_json("nope", HistoryRange::Hour, now)
            .is_none()
    );
}

/// Alert rules, states and the snapshot, driven the same way.
mod alerts;
mod cluster;
mod filters;
mod recovery;
mod reload;
mod resume;
