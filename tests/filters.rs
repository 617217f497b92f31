//! SPEC 12 end to end with the real binary, real containers and real
//! WebSocket clients: filtered log streams (levels read from the line,
//! stdout/stderr, regex; a bad regex; a filter matching nothing; frames
//! shared by the subscribers of one filter) and container events by
//! subscription (by name, by label, cleared again).
//!
//! Containers print a fixed mix of lines (plain levels, bracketed levels,
//! JSON `level`/`severity` fields, both streams) after a go signal
//! (`docker exec … touch /tmp/go`), so every client is subscribed before
//! the lines are live. "Nothing else came" is checked without a clock: the
//! hub answers a socket's `ping` after everything it queued for it before.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

macro_rules! need_docker {
    () => {
        if docker_host().is_none() {
            eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
            return;
        }
    };
}

/// One round of mixed output; `$i` is the round.
const ROUND: &str = r#"echo "INFO request $i ok"; echo "ERROR db timeout $i" >&2; echo "{\"level\":\"warn\",\"msg\":\"slow query $i\"}"; echo "[DEBUG] tick $i"; echo "{\"severity\":\"error\",\"msg\":\"payment refused $i\"}" >&2; echo "plain line $i""#;

/// Prints `ERROR warmup`, waits for /tmp/go, prints `rounds` rounds, then
/// `ERROR done` on stdout and `ERROR done (stderr)` on stderr, and sleeps.
/// (Docker keeps each stream's order, not the order between the two.)
fn mixed_container(tag: &str, rounds: u32) -> (Container, String, String) {
    let name = unique_name(tag);
    let cmd = format!(
        "echo 'ERROR warmup'; while [ ! -e /tmp/go ]; do usleep 50000; done; \
         i=0; while [ $i -lt {rounds} ]; do i=$((i+1)); {ROUND}; done; echo 'ERROR done'; echo 'ERROR done (stderr)' >&2; sleep 300"
    );
    let (c, id) = run_container(&name, &[], &cmd);
    (c, id, name)
}

fn go(name: &str) {
    docker(&["exec", name, "touch", "/tmp/go"]);
}

fn browser(d: &Daemon) -> Ws {
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    ws
}

/// `log_update` frames for `id`: (seq, lines), until every line of `until`
/// arrived.
fn frames_until(ws: &mut Ws, id: &str, until: &[&str]) -> Vec<(u64, Vec<String>)> {
    let deadline = Instant::now() + WAIT;
    let mut out: Vec<(u64, Vec<String>)> = Vec::new();
    while !until
        .iter()
        .all(|u| out.iter().any(|(_, l)| l.iter().any(|l| l == u)))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {until:?} line; got {out:?}");
        let Some(m) = next_json(ws, left.min(Duration::from_millis(500))) else {
            continue;
        };
        assert_ne!(m["type"], "error", "{m}");
        assert_ne!(m["type"], "log_dropped", "{m}");
        if m["type"] == "log_update" && m["container_id"] == id {
            let lines = m["log"]
                .as_str()
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            out.push((m["seq"].as_u64().expect("seq"), lines));
        }
    }
    out
}

fn lines_of(frames: &[(u64, Vec<String>)]) -> Vec<String> {
    frames.iter().flat_map(|(_, l)| l.iter().cloned()).collect()
}

/// The same lines in any order between the streams: sorted.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Each line's own `seq` (frames carry their last line's).
fn numbered(frames: &[(u64, Vec<String>)]) -> Vec<(u64, String)> {
    frames
        .iter()
        .flat_map(|(seq, l)| {
            let first = seq + 1 - l.len() as u64;
            l.iter()
                .enumerate()
                .map(move |(i, t)| (first + i as u64, t.clone()))
        })
        .collect()
}

const DONE: [&str; 2] = ["ERROR done", "ERROR done (stderr)"];

/// Every message until the `pong` of a `ping` sent now.
fn drain(ws: &mut Ws) -> Vec<Value> {
    send_json(ws, &json!({"type": "ping"}));
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no pong");
        if let Some(m) = next_json(ws, left) {
            if m["type"] == "pong" {
                return got;
            }
            got.push(m);
        }
    }
}

fn start(ws: &mut Ws, name: &str, filter: Value) {
    send_json(
        ws,
        &json!({"type": "start_log_stream", "container_id": name, "filter": filter}),
    );
}

#[test]
fn each_filter_kind_on_real_output() {
    need_docker!();
    let d = Daemon::start("");
    let (_c, id, name) = mixed_container("fkinds", 2);
    let cases: Vec<(Value, Vec<String>)> = vec![
        (
            json!({"levels": ["warn"]}),
            (1..=2)
                .map(|i| format!(r#"{{"level":"warn","msg":"slow query {i}"}}"#))
                .collect(),
        ),
        (
            json!({"levels": ["debug"]}),
            (1..=2).map(|i| format!("[DEBUG] tick {i}")).collect(),
        ),
        (
            json!({"levels": ["error"], "stream": "stderr"}),
            (1..=2)
                .flat_map(|i| {
                    [
                        format!("ERROR db timeout {i}"),
                        format!(r#"{{"severity":"error","msg":"payment refused {i}"}}"#),
                    ]
                })
                .chain([DONE[1].to_string()])
                .collect(),
        ),
        (
            json!({"stream": "stdout", "pattern": "^(INFO|plain)"}),
            (1..=2)
                .flat_map(|i| [format!("INFO request {i} ok"), format!("plain line {i}")])
                .collect(),
        ),
    ];
    let mut clients: Vec<Ws> = cases
        .iter()
        .map(|(f, _)| {
            let mut ws = browser(&d);
            start(&mut ws, &name, f.clone());
            ws
        })
        .collect();
    // The unfiltered one reads up to the warm-up line: the follower runs.
    let mut all = browser(&d);
    start(&mut all, &name, Value::Null);
    let mut nothing = browser(&d);
    start(
        &mut nothing,
        &name,
        json!({"pattern": "^no line looks like this$"}),
    );
    let mut every = frames_until(&mut all, &id, &["ERROR warmup"]);
    go(&name);
    every.extend(frames_until(&mut all, &id, &DONE));
    assert_eq!(
        lines_of(&every).len(),
        1 + 12 + 2,
        "warm-up, 2 rounds, done"
    );
    let every = numbered(&every);

    for (ws, (filter, want)) in clients.iter_mut().zip(&cases) {
        let msgs = drain(ws);
        let frames: Vec<(u64, Vec<String>)> = msgs
            .into_iter()
            .filter(|m| m["type"] == "log_update")
            .map(|m| {
                let l = m["log"]
                    .as_str()
                    .unwrap()
                    .lines()
                    .map(String::from)
                    .collect();
                (m["seq"].as_u64().unwrap(), l)
            })
            .collect();
        assert_eq!(
            sorted(lines_of(&frames)),
            sorted(want.clone()),
            "filter {filter}"
        );
        // `seq` still numbers the whole stream: each frame's seq is its
        // last line's number among every line.
        for (seq, lines) in &frames {
            let last = lines.last().unwrap();
            let at = every.iter().find(|(_, l)| l == last).unwrap().0;
            assert_eq!(*seq, at, "filter {filter}: {frames:?}");
        }
    }
    let got = drain(&mut nothing);
    assert!(
        got.iter().all(|m| m["type"] != "log_update"),
        "a filter matching nothing sends nothing: {got:?}"
    );
    // A bad regex: an error naming it, with the request id; nothing starts.
    send_json(
        &mut nothing,
        &json!({"type": "start_log_stream", "container_id": name, "request_id": "bad-1",
                "filter": {"pattern": "(unclosed"}}),
    );
    let e = wait_type(&mut nothing, "error", Duration::from_secs(5));
    assert_eq!(e["request_id"], "bad-1");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid filter pattern"),
        "{e}"
    );
}

#[test]
fn same_filter_shares_frames_another_gets_only_its_lines() {
    need_docker!();
    let d = Daemon::start("");
    let (_c, id, name) = mixed_container("fshare", 50);
    let errors = json!({"levels": ["error"]});
    let stdout_slow = json!({"stream": "stdout", "pattern": "slow|tick|warmup|done"});
    let mut a = browser(&d);
    let mut b = browser(&d);
    let mut c = browser(&d);
    start(&mut a, &name, errors.clone());
    start(&mut b, &name, errors);
    start(&mut c, &name, stdout_slow);
    for ws in [&mut a, &mut b, &mut c] {
        frames_until(ws, &id, &["ERROR warmup"]);
    }
    assert_eq!(d.metric("dockwire_log_followers"), Some(1.0));
    let encoded0 = d.metric("dockwire_log_frames_encoded_total").unwrap_or(0.0);
    let sent_series = "dockwire_messages_sent_by_type_total{type=\"log_update\"}";
    let sent0 = d.metric(sent_series).unwrap_or(0.0);
    go(&name);
    let fa = frames_until(&mut a, &id, &DONE);
    let fb = frames_until(&mut b, &id, &DONE);
    let fc = frames_until(&mut c, &id, &DONE[..1]);

    let want_errors: Vec<String> = (1..=50)
        .flat_map(|i| {
            [
                format!("ERROR db timeout {i}"),
                format!(r#"{{"severity":"error","msg":"payment refused {i}"}}"#),
            ]
        })
        .chain(DONE.map(String::from))
        .collect();
    let want_c: Vec<String> = (1..=50)
        .flat_map(|i| {
            [
                format!(r#"{{"level":"warn","msg":"slow query {i}"}}"#),
                format!("[DEBUG] tick {i}"),
            ]
        })
        .chain(["ERROR done".to_string()])
        .collect();
    assert_eq!(sorted(lines_of(&fa)), sorted(want_errors));
    assert_eq!(fa, fb, "one filter, the same frames");
    assert_eq!(
        lines_of(&fc),
        want_c,
        "the other filter gets only its lines"
    );
    // Every frame was encoded once per filter and sent to its subscribers.
    let encoded = d.metric("dockwire_log_frames_encoded_total").unwrap() - encoded0;
    let sent = d.metric(sent_series).unwrap() - sent0;
    assert_eq!(
        encoded,
        (fa.len() + fc.len()) as f64,
        "one encode per filter frame"
    );
    assert_eq!(sent, (fa.len() * 2 + fc.len()) as f64);
}

fn changes(ws: &mut Ws) -> Vec<(String, String)> {
    drain(ws)
        .into_iter()
        .filter(|m| m["type"] == "container_state_change")
        .map(|m| {
            let c = &m["container"];
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every state change (name, state) on `ws` up to `name`'s change to `state`.
fn wait_state(ws: &mut Ws, name: &str, state: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = wait_type(ws, "container_state_change", left);
        let c = &m["container"];
        seen.push((
            c["name"].as_str().unwrap_or_default().to_string(),
            c["state"].as_str().unwrap_or_default().to_string(),
        ));
        if c["name"] == name && c["state"] == state {
            return seen;
        }
    }
}

#[test]
fn event_filter_by_name_and_label_then_cleared() {
    need_docker!();
    let d = Daemon::start("");
    let web = unique_name("fweb");
    let other = unique_name("fother");
    let (_w, _) = run_container(&web, &["--label", "dwtest=web"], "sleep 300");
    let (_o, _) = run_container(&other, &[], "sleep 300");
    let mut f = browser(&d);
    let mut all = browser(&d);

    // By name: only web's changes (other stops first, web last).
    send_json(
        &mut f,
        &json!({"type": "set_event_filter", "container_ids": [web]}),
    );
    drain(&mut f);
    docker(&["stop", "-t", "0", &other]);
    docker(&["stop", "-t", "0", &web]);
    let everyone = wait_state(&mut all, &web, "exited");
    assert!(everyone.iter().any(|(n, _)| *n == other), "{everyone:?}");
    let mut heard = wait_state(&mut f, &web, "exited");
    heard.extend(changes(&mut f));
    assert!(heard.iter().all(|(n, _)| *n == web), "{heard:?}");

    // By label: the same, through the label.
    send_json(
        &mut f,
        &json!({"type": "set_event_filter", "labels": {"dwtest": "web"}, "request_id": "l"}),
    );
    drain(&mut f);
    docker(&["start", &other]);
    docker(&["start", &web]);
    let everyone = wait_state(&mut all, &web, "running");
    assert!(everyone.iter().any(|(n, _)| *n == other), "{everyone:?}");
    let mut heard = wait_state(&mut f, &web, "running");
    heard.extend(changes(&mut f));
    assert!(heard.iter().all(|(n, _)| *n == web), "{heard:?}");

    // Cleared: every container again.
    send_json(&mut f, &json!({"type": "set_event_filter"}));
    drain(&mut f);
    docker(&["stop", "-t", "0", &other]);
    let heard = wait_state(&mut f, &other, "exited");
    assert_eq!(heard.last().unwrap().0, other);

    // A bad filter: an error with its request id.
    send_json(
        &mut f,
        &json!({"type": "set_event_filter", "container_ids": "web", "request_id": "bad"}),
    );
    let e = wait_type(&mut f, "error", Duration::from_secs(5));
    assert_eq!(e["request_id"], "bad");
    assert!(
        e["message"].as_str().unwrap().contains("container_ids"),
        "{e}"
    );
}
