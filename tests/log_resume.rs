//! Lossless log resume (SPEC 7), end to end with the real binary, real
//! containers and real WebSocket clients: a browser whose socket drops
//! mid-stream comes back with `since_seq` and gets every line exactly once
//! and in order (whether the stream stayed busy or went idle meanwhile);
//! beyond the held window it first gets `log_gap` with the count; a remote
//! container's stream survives its agent being killed and started again.
//! (The engine outage case is in `docker_ws.rs`, with its own engine.)
//!
//! Containers print a counter, one number per line, so "exactly once, in
//! order" is checkable: numbers go up by one, and `seq - number` is the
//! same for every line of a stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dockwire::auth::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

macro_rules! need_docker {
    () => {
        if docker_host().is_none() {
            eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
            return;
        }
    };
}

/// What a client saw of one container's stream.
#[derive(Default, Debug)]
struct Seen {
    /// (seq, the line's number) per line, in arrival order.
    lines: Vec<(u64, u64)>,
    /// `log_gap` messages, with the index in `lines` they came before.
    gaps: Vec<(usize, Value)>,
}

impl Seen {
    fn last(&self) -> (u64, u64) {
        *self.lines.last().expect("some lines")
    }
}

/// Reads `ws` until `done(&seen)`; panics on `log_stream_stopped`,
/// `log_dropped` or the deadline.
fn read_until(ws: &mut Ws, id: &str, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    read_messages(|within| next_json(ws, within), id, seen, done)
}

/// [`read_until`] for a raw Socket.IO client: each event `42["name",{..}(,
/// offset)]` read as the JSON message `{"type":"name",..}`.
fn read_until_sio(ws: &mut Ws, id: &str, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    read_messages(
        |within| {
            let text = sio_text(ws, within)?;
            let body = text.strip_prefix("42")?;
            let arr: Value = serde_json::from_str(body).ok()?;
            let mut msg = arr.get(1)?.clone();
            msg["type"] = arr[0].clone();
            Some(msg)
        },
        id,
        seen,
        done,
    )
}

fn read_messages(
    mut next: impl FnMut(Duration) -> Option<Value>,
    id: &str,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "stream stalled; saw {} lines, gaps {:?}",
            seen.lines.len(),
            seen.gaps
        );
        let Some(m) = next(left.min(Duration::from_millis(500))) else {
            continue;
        };
        if m["container_id"] != id {
            continue;
        }
        match m["type"].as_str() {
            Some("log_update") => {
                let seq = m["seq"].as_u64().expect("seq on every log_update");
                let log = m["log"].as_str().unwrap();
                let nums: Vec<u64> = log
                    .lines()
                    .map(|l| {
                        l.trim()
                            .parse()
                            .unwrap_or_else(|_| panic!("not a number: {l:?}"))
                    })
                    .collect();
                let first = seq + 1 - nums.len() as u64;
                for (i, n) in nums.into_iter().enumerate() {
                    seen.lines.push((first + i as u64, n));
                }
            }
            Some("log_gap") => seen.gaps.push((seen.lines.len(), m)),
            Some("log_stream_stopped") => panic!("stream stopped: {m}"),
            Some("log_dropped") => panic!("a reading client lost lines: {m}"),
            _ => {}
        }
    }
}

/// Every line exactly once and in order: numbers up by one, seq up by one.
fn assert_exactly_once(lines: &[(u64, u64)], what: &str) {
    for w in lines.windows(2) {
        assert!(
            w[1].1 == w[0].1 + 1 && w[1].0 == w[0].0 + 1,
            "{what}: gap, duplicate or reorder at {:?} -> {:?}",
            w[0],
            w[1]
        );
    }
}

fn browser_ws(d: &Daemon) -> Ws {
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(10));
    ws
}

/// A counter container: one number per line every 20 ms; `touch /tmp/burst`
/// (docker exec) makes it print 2,500 numbers at once.
const COUNTER: &str = "trap 'exit 0' TERM; i=0; while true; do \
    if [ -f /tmp/burst ]; then rm /tmp/burst; j=0; \
    while [ $j -lt 2500 ]; do i=$((i+1)); j=$((j+1)); echo $i; done; fi; \
    i=$((i+1)); echo $i; sleep 0.02; done";

#[test]
fn a_dropped_socket_resumes_with_since_seq_exactly_once() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("resume");
    let (_c, id) = run_container(&name, &[], COUNTER);

    // Round 1: the only subscriber drops; the stream goes idle meanwhile.
    let mut a = browser_ws(&d);
    send_json(
        &mut a,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 1000}),
    );
    let mut seen = Seen::default();
    read_until(&mut a, &id, &mut seen, |s| s.lines.len() >= 40);
    assert_eq!(seen.lines[0].1, 1, "the whole log from its first line");
    drop(a); // the TCP connection goes away without a close frame
    let (since, n_before) = seen.last();
    // The container keeps writing while nobody follows.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut a = browser_ws(&d);
    send_json(
        &mut a,
        &json!({"type": "start_log_stream", "container_id": name, "since_seq": since}),
    );
    read_until(&mut a, &id, &mut seen, |s| s.last().1 >= n_before + 60);
    assert!(seen.gaps.is_empty(), "nothing was lost: {:?}", seen.gaps);
    assert_exactly_once(&seen.lines, "idle resume");

    // Round 2: another subscriber keeps the stream busy while `a` is away.
    let mut keeper = browser_ws(&d);
    send_json(
        &mut keeper,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 0}),
    );
    let mut kept = Seen::default();
    read_until(&mut keeper, &id, &mut kept, |s| !s.lines.is_empty());
    read_until(&mut a, &id, &mut seen, |s| s.last().1 >= kept.last().1 + 5);
    drop(a);
    let (since, n_before) = seen.last();
    read_until(&mut keeper, &id, &mut kept, |s| s.last().1 >= n_before + 30);
    let mut a = browser_ws(&d);
    send_json(
        &mut a,
        &json!({"type": "start_log_stream", "container_id": name, "since_seq": since}),
    );
    read_until(&mut a, &id, &mut seen, |s| s.last().1 >= n_before + 60);
    assert!(seen.gaps.is_empty(), "nothing was lost: {:?}", seen.gaps);
    assert_exactly_once(&seen.lines, "busy resume");

    // Round 3: more than the hub holds is written while `a` is away: a
    // gap with the count, then the held lines, exactly once.
    drop(a);
    let (since, n_before) = seen.last();
    docker(&["exec", &name, "touch", "/tmp/burst"]);
    read_until(&mut keeper, &id, &mut kept, |s| {
        s.last().1 >= n_before + 2600
    });
    let mut a = browser_ws(&d);
    send_json(
        &mut a,
        &json!({"type": "start_log_stream", "container_id": name, "since_seq": since}),
    );
    let mut after = Seen::default();
    read_until(&mut a, &id, &mut after, |s| {
        !s.lines.is_empty() && s.last().1 >= n_before + 2650
    });
    assert_eq!(after.gaps.len(), 1, "{:?}", after.gaps);
    let (at, gap) = &after.gaps[0];
    assert_eq!(*at, 0, "the gap comes first");
    assert_eq!(gap["type"], "log_gap");
    assert!(gap["server_id"].as_str().is_some_and(|s| !s.is_empty()));
    let missed = gap["missed"].as_u64().expect("a known count");
    assert!(missed > 0);
    let (first_seq, first_n) = after.lines[0];
    assert_eq!(first_seq, since + missed + 1, "the count is what is gone");
    assert_eq!(first_n, n_before + missed + 1);
    assert_exactly_once(&after.lines, "resume past the window");
    // The same numbering throughout, for every client.
    let offset = seen.lines[0].0 - seen.lines[0].1;
    for (seq, n) in seen.lines.iter().chain(&kept.lines).chain(&after.lines) {
        assert_eq!(seq - n, offset, "seq {seq} for line {n}");
    }
}

/// The same `since_seq` contract for a Socket.IO client: `seq` in the
/// `log_update` payload, `since_seq` in `start_log_stream`.
#[test]
fn a_socketio_client_resumes_with_since_seq_exactly_once() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("sio-resume");
    let (_c, id) = run_container(&name, &[], COUNTER);
    let start = |ws: &mut Ws, args: Value| {
        let text = format!(r#"42["start_log_stream",{args}]"#);
        ws.send(tungstenite::Message::text(text)).unwrap();
    };
    let mut a = sio_connect(&d);
    start(&mut a, json!({"container_id": name, "tail": 1000}));
    let mut seen = Seen::default();
    read_until_sio(&mut a, &id, &mut seen, |s| s.lines.len() >= 30);
    assert_eq!(seen.lines[0].1, 1, "the whole log from its first line");
    drop(a);
    let (since, n_before) = seen.last();
    std::thread::sleep(Duration::from_millis(600));
    let mut a = sio_connect(&d);
    start(&mut a, json!({"container_id": name, "since_seq": since}));
    read_until_sio(&mut a, &id, &mut seen, |s| s.last().1 >= n_before + 60);
    assert!(seen.gaps.is_empty(), "nothing was lost: {:?}", seen.gaps);
    assert_exactly_once(&seen.lines, "Socket.IO resume");
}

#[test]
fn a_remote_stream_survives_its_agent_reconnecting() {
    need_docker!();
    let host = docker_host().unwrap();
    let name = unique_name("agentresume");
    let (_c, id) = run_container(&name, &[], COUNTER);
    let h = agent_hub(1, "");
    let agent_args = ["--metrics-interval", "1h", "--docker-host", host.as_str()];
    let agent = spawn_agent(&h, 0, &agent_args);
    wait_agents(&h, 1.0, WAIT);
    let mut b = browser(&h, "/api/v1/ws", Role::Viewer);
    // The agent's table reaches the hub shortly after it connects.
    let deadline = Instant::now() + WAIT;
    loop {
        send_json(
            &mut b,
            &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": name, "tail": 1000, "request_id": "s"}),
        );
        let m = loop {
            let m = next_json(&mut b, WAIT).expect("an answer");
            if m["type"] == "log_update" || m["request_id"] == "s" {
                break m;
            }
        };
        if m["type"] == "log_update" {
            break;
        }
        assert!(Instant::now() < deadline, "never streamed: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut seen = Seen::default();
    read_until(&mut b, &id, &mut seen, |s| s.lines.len() >= 40);
    // The agent dies and a new one connects: the hub resumes by itself.
    drop(agent);
    wait_agents(&h, 0.0, WAIT);
    let n_down = seen.last().1;
    let _agent = spawn_agent(&h, 0, &agent_args);
    read_until(&mut b, &id, &mut seen, |s| s.last().1 >= n_down + 60);
    assert!(seen.gaps.is_empty(), "nothing was lost: {:?}", seen.gaps);
    // The first frame was history from line 1 on (read_until skipped it); the rest is exact.
    assert_exactly_once(&seen.lines, "agent reconnect");
}
