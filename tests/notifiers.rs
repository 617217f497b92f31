//! `[[notifiers]]` end to end: the real daemon posts alert changes to a
//! local HTTP receiver in each format, retries a receiver that fails or is
//! not there yet, counts outcomes on `/metrics`, never logs the secret part
//! of a URL; and `GET /api/v1/alerts` and the `alerts` snapshot show the
//! firing alert. The alert is `agent_offline for 0s`: the agent of the
//! test hub is offline from the start, so it fires on the first tick, and
//! resolves when a fake agent connects.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The secret part of every notifier URL here; it must never be logged.
const SECRET: &str = "s3cr3t-T0KEN";

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Posted {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Posted {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A local HTTP receiver: answers 500 to the first `fail_first` requests,
/// then 200, and hands every request it answered 200 to `rx`.
struct Receiver {
    addr: SocketAddr,
    rx: mpsc::Receiver<Posted>,
    seen: Vec<Posted>,
    requests: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap(), fail_first)
    }

    fn on(listener: TcpListener, fail_first: usize) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Arc::new(Mutex::new(tx));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            // Bounded: a test makes a handful of connections.
            for conn in listener.incoming().take(64) {
                let Ok(conn) = conn else { continue };
                let (tx, count) = (tx.clone(), count.clone());
                std::thread::spawn(move || serve(conn, &tx, &count, fail_first));
            }
        });
        Receiver {
            addr,
            rx,
            seen: Vec::new(),
            requests,
        }
    }

    /// Waits (bounded) until `pred` holds for what was received.
    fn wait_for(&mut self, within: Duration, what: &str, pred: impl Fn(&[Posted]) -> bool) {
        let deadline = Instant::now() + within;
        while !pred(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not received within {within:?}; got {:#?}",
                self.seen
            );
            if let Ok(p) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.push(p);
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}/{SECRET}?token={SECRET}", self.addr)
    }
}

/// Answers the requests of one connection (keep-alive) until it closes.
fn serve(
    conn: TcpStream,
    tx: &Mutex<mpsc::Sender<Posted>>,
    requests: &AtomicUsize,
    fail_first: usize,
) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    for _ in 0..100 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let fail = requests.fetch_add(1, Ordering::SeqCst) < fail_first;
        let status = if fail {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let _ = w.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok").as_bytes());
        if !fail {
            let _ = tx.lock().unwrap().send(Posted {
                method,
                path,
                headers,
                body,
            });
        }
    }
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    split_response(&raw)
}

fn notifier(url: &str, format: &str) -> String {
    format!("[[notifiers]]\nurl = \"{url}\"\nformat = \"{format}\"\n")
}

const OFFLINE_RULE: &str = "[[alerts]]\nname = \"gone\"\nrule = \"agent_offline for 0s\"\n";

/// Polls `/metrics` (bounded) until `series` reaches `at_least`.
fn wait_metric(h: &AgentHub, series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = h.d.metric(series).unwrap_or(0.0);
        if v >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} = {v}, wanted {at_least}\n{}",
            h.d.metrics_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_format_is_posted_on_firing_and_resolved_and_the_api_shows_the_alert() {
    let mut rx = Receiver::start(0);
    let extra = format!(
        "{OFFLINE_RULE}{}{}{}{}",
        notifier(&rx.url("json"), "json"),
        notifier(&rx.url("slack"), "slack"),
        notifier(&rx.url("discord"), "discord"),
        notifier(&rx.url("ntfy"), "ntfy"),
    );
    let h = agent_hub(1, &extra);
    // The post to `/p/...` about `state` (ntfy says it in its Title).
    let by_path = |seen: &[Posted], p: &str, state: &str| -> Option<Posted> {
        seen.iter()
            .find(|x| {
                let title = x.headers.get("title").map_or("", String::as_str);
                let text = format!("{title} {}", String::from_utf8_lossy(&x.body)).to_lowercase();
                x.path.starts_with(&format!("/{p}/")) && text.contains(state)
            })
            .cloned()
    };
    rx.wait_for(Duration::from_secs(10), "four firing posts", |s| {
        ["json", "slack", "discord", "ntfy"]
            .iter()
            .all(|p| by_path(s, p, "firing").is_some())
    });
    let seen = rx.seen.clone();
    let json_post = by_path(&seen, "json", "firing").unwrap();
    assert_eq!(json_post.method, "POST");
    assert_eq!(json_post.path, format!("/json/{SECRET}?token={SECRET}"));
    assert_eq!(json_post.headers["content-type"], "application/json");
    let alert = json_post.json();
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["rule"], "gone");
    assert_eq!(alert["metric"], "agent_offline");
    assert_eq!(alert["server_id"], "srv-0");
    assert!(
        alert["message"].as_str().unwrap().contains("agent-0"),
        "{alert}"
    );
    assert!(
        alert["id"].is_string() && alert["started_at"].is_string(),
        "{alert}"
    );
    let slack = by_path(&seen, "slack", "firing").unwrap().json();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] gone: "),
        "{slack}"
    );
    let discord = by_path(&seen, "discord", "firing").unwrap().json();
    assert!(
        discord["content"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] gone: "),
        "{discord}"
    );
    let ntfy = by_path(&seen, "ntfy", "firing").unwrap();
    assert!(ntfy.headers["content-type"].starts_with("text/plain"));
    assert_eq!(ntfy.headers["title"], "dockwire: gone firing");
    assert_eq!(ntfy.headers["priority"], "high");
    assert_eq!(ntfy.headers["tags"], "rotating_light");
    assert_eq!(
        String::from_utf8_lossy(&ntfy.body),
        alert["message"].as_str().unwrap()
    );

    // The HTTP API: a token is needed, and the alert is firing.
    let (status, _) = get(h.d.addr, "/api/v1/alerts", None);
    assert_eq!(status, 401);
    let token = token(dockwire::auth::Role::Viewer);
    let (status, body) = get(h.d.addr, "/api/v1/alerts", Some(&token));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["firing"][0]["id"], alert["id"], "{v}");
    assert_eq!(v["recent"][0]["id"], alert["id"], "{v}");
    // A browser gets it right after initial_state.
    let mut b = connect(&h.d.url("/api/v1/ws"));
    send_json(&mut b, &json!({"type": "auth", "token": token}));
    wait_type(&mut b, "initial_state", Duration::from_secs(5));
    let snap = next_json(&mut b, Duration::from_secs(5)).expect("a message after initial_state");
    assert_eq!(snap["type"], "alerts", "{snap}");
    assert_eq!(snap["firing"][0]["id"], alert["id"], "{snap}");

    // The agent connects: resolved, in every format.
    let _agent = fake_agent(&h, 0);
    rx.wait_for(Duration::from_secs(10), "four resolved posts", |s| {
        ["json", "slack", "discord", "ntfy"]
            .iter()
            .all(|p| by_path(s, p, "resolved").is_some())
    });
    let resolved = by_path(&rx.seen, "json", "resolved").unwrap().json();
    assert_eq!(resolved["id"], alert["id"]);
    assert_eq!(resolved["started_at"], alert["started_at"]);
    let ntfy = by_path(&rx.seen, "ntfy", "resolved").unwrap();
    assert_eq!(ntfy.headers["priority"], "default");
    let (_, body) = get(h.d.addr, "/api/v1/alerts", Some(&token));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["firing"], json!([]), "{v}");
    assert_eq!(v["recent"][0]["state"], "resolved", "{v}");
    for i in 0..4 {
        wait_metric(
            &h,
            &format!("dockwire_notifications_total{{notifier=\"{i}\",outcome=\"sent\"}}"),
            2.0,
        );
    }
    let log = h.d.log();
    assert!(log.contains(&format!("to http://{}", rx.addr)), "{log}");
    assert!(
        !log.contains(SECRET),
        "a URL secret reached the log:\n{log}"
    );
}

#[test]
fn a_failing_receiver_is_retried_until_it_takes_the_change() {
    let mut rx = Receiver::start(2);
    let h = agent_hub(
        1,
        &format!("{OFFLINE_RULE}{}", notifier(&rx.url("hook"), "json")),
    );
    rx.wait_for(
        Duration::from_secs(20),
        "the firing post after two 500s",
        |s| !s.is_empty(),
    );
    assert_eq!(rx.seen[0].json()["state"], "firing");
    assert_eq!(
        rx.requests.load(Ordering::SeqCst),
        3,
        "two 500s, then the 200"
    );
    wait_metric(
        &h,
        "dockwire_notifications_total{notifier=\"0\",outcome=\"sent\"}",
        1.0,
    );
    assert_eq!(
        h.d.metric("dockwire_notifications_total{notifier=\"0\",outcome=\"retried\"}"),
        Some(2.0)
    );
    let log = h.d.log();
    assert!(log.contains("HTTP 500; retrying"), "{log}");
    assert!(
        !log.contains(SECRET),
        "a URL secret reached the log:\n{log}"
    );
}

#[test]
fn a_receiver_that_is_not_there_yet_gets_the_change_when_it_comes() {
    // Reserve a port, close it: nothing listens there until later.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/late/{SECRET}");
    let h = agent_hub(1, &format!("{OFFLINE_RULE}{}", notifier(&url, "slack")));
    wait_metric(
        &h,
        "dockwire_notifications_total{notifier=\"0\",outcome=\"retried\"}",
        1.0,
    );
    let mut rx = Receiver::on(TcpListener::bind(("127.0.0.1", port)).unwrap(), 0);
    rx.wait_for(Duration::from_secs(20), "the firing post", |s| {
        !s.is_empty()
    });
    assert!(
        rx.seen[0].json()["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] gone")
    );
    assert_eq!(rx.seen[0].path, format!("/late/{SECRET}"));
    wait_metric(
        &h,
        "dockwire_notifications_total{notifier=\"0\",outcome=\"sent\"}",
        1.0,
    );
    assert!(!h.d.log().contains(SECRET));
}

#[test]
fn a_bad_notifier_is_a_config_error_without_the_secret() {
    let dir = temp_dir("notifier-config");
    let path = dir.join("dockwire.toml");
    std::fs::write(
        &path,
        format!("[[notifiers]]\nurl = \"ftp://example.com/{SECRET}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notifiers[0].url") && err.contains("http or https"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
}
