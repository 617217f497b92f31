//! SPEC 7 in memory: `seq` on every `log_update`, `since_seq` resumes,
//! `log_gap`, and streams that survive a Docker outage or an agent
//! reconnect.

use super::*;

/// Lines stamped like Docker's (one per millisecond from `i`).
fn stamped(range: std::ops::Range<u32>) -> Vec<LogLine> {
    range
        .map(|i| LogLine {
            stream: LogStream::Stdout,
            timestamp: format!(
                "2026-11-30T14:{:02}:{:02}.{:03}000000Z",
                i / 60_000,
                (i / 1000) % 60,
                i % 1000
            ),
            text: format!("line {i}"),
        })
        .collect()
}

fn local_key(id: &str) -> TopicKey {
    TopicKey::Logs {
        server: "local".into(),
        container: id.into(),
    }
}

/// The follow id the hub asked the Docker feed for, for `id`.
fn follow_of(h: &Harness, id: &str) -> Option<u64> {
    let key = local_key(id);
    h.hub
        .state()
        .follows
        .iter()
        .find(|(_, k)| **k == key)
        .map(|(f, _)| *f)
}

/// The lines of every `log_update` in `frames`, each with its seq, checking
/// that each frame's `seq` is its last line's number.
fn numbered(frames: &[Value]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for f in frames.iter().filter(|v| v["type"] == "log_update") {
        let seq = f["seq"].as_u64().expect("seq on every log_update");
        let lines: Vec<&str> = f["log"].as_str().unwrap().lines().collect();
        let first = seq + 1 - lines.len() as u64;
        for (i, l) in lines.iter().enumerate() {
            out.push((first + i as u64, (*l).to_string()));
        }
    }
    out
}

/// A local hub with one running container, "web".
fn local_hub(id: &str) -> Harness {
    let mut h = Harness::new("server_id = \"local\"\n");
    h.docker(DockerEvent::Up {
        containers: vec![container(id, "web")],
    });
    h
}

fn browser(h: &mut Harness) -> ConnId {
    let b = h.open(Endpoint::Browser, None);
    h.take(b);
    b
}

fn start(h: &mut Harness, b: ConnId, extra: Value) {
    let mut v = json!({"type": "start_log_stream", "container_id": "web"});
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    h.send(b, &v);
}

fn live(h: &mut Harness, follow_id: u64, id: &str, lines: Vec<LogLine>) {
    flush(h);
    h.docker(DockerEvent::LogLines {
        follow_id,
        container_id: id.into(),
        lines,
    });
    flush(h);
}

/// Lets lines held for coalescing go out.
fn flush(h: &mut Harness) {
    h.now += Duration::from_millis(10);
    h.input(Input::Timers);
}

#[test]
fn seq_numbers_every_line_including_coalesced_frames() {
    let id = "a".repeat(64);
    let mut h = local_hub(&id);
    let b = browser(&mut h);
    start(&mut h, b, json!({"tail": 3}));
    let f = follow_of(&h, &id).unwrap();
    h.docker(DockerEvent::LogHistory {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(0..10),
    });
    // Back-to-back batches: the second and third are held and coalesced.
    h.docker(DockerEvent::LogLines {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(10..12),
    });
    for r in [12..15, 15..16] {
        h.docker(DockerEvent::LogLines {
            follow_id: f,
            container_id: id.clone(),
            lines: stamped(r),
        });
    }
    h.now += Duration::from_millis(5);
    h.input(Input::Timers);
    let frames = h.take(b);
    assert_eq!(
        frames.len(),
        3,
        "history, one live batch, one coalesced: {frames:?}"
    );
    let got = numbered(&frames);
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    let want: Vec<String> = (7..16).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, want);
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1, "one more per line: {got:?}");
    }
}

#[test]
fn since_seq_replays_what_was_missed_exactly_once_then_live() {
    let id = "b".repeat(64);
    let mut h = local_hub(&id);
    let keeper = browser(&mut h);
    start(&mut h, keeper, json!({"tail": 0}));
    let f = follow_of(&h, &id).unwrap();
    h.docker(DockerEvent::LogHistory {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(0..5),
    });
    let a = browser(&mut h);
    start(&mut h, a, json!({"tail": 100}));
    live(&mut h, f, &id, stamped(5..8));
    let seen = numbered(&h.take(a));
    let last = seen.last().unwrap().0;
    // `a` loses its socket; the stream goes on for the keeper.
    h.input(Input::Closed { conn: a });
    live(&mut h, f, &id, stamped(8..11));
    let a2 = browser(&mut h);
    start(&mut h, a2, json!({"since_seq": last, "tail": 100}));
    live(&mut h, f, &id, stamped(11..12));
    let resumed = numbered(&h.take(a2));
    let texts: Vec<&str> = seen
        .iter()
        .chain(&resumed)
        .map(|(_, t)| t.as_str())
        .collect();
    let want: Vec<String> = (0..12).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, want, "every line once, in order");
    assert_eq!(resumed[0].0, last + 1);
    // Resuming when up to date: nothing replayed.
    let a3 = browser(&mut h);
    let now_seq = resumed.last().unwrap().0;
    start(&mut h, a3, json!({"since_seq": now_seq}));
    assert!(h.take(a3).is_empty());
}

#[test]
fn since_seq_beyond_the_window_gets_log_gap_with_the_count() {
    let id = "c".repeat(64);
    let mut h = local_hub(&id);
    let b = browser(&mut h);
    start(&mut h, b, json!({"tail": 1}));
    let f = follow_of(&h, &id).unwrap();
    h.docker(DockerEvent::LogHistory {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(0..10),
    });
    let first = numbered(&h.take(b));
    // The seq of "line 0": the stream's first line.
    let zero = first[0].0 - 9;
    live(&mut h, f, &id, stamped(10..1510));
    let c = browser(&mut h);
    start(&mut h, c, json!({"since_seq": zero + 99}));
    let r = h.take(c);
    assert_eq!(r[0]["type"], "log_gap", "{:?}", r[0]);
    assert_eq!(r[0]["server_id"], "local");
    assert_eq!(r[0]["container_id"], id.as_str());
    // Lines 100..510 are gone (the ring holds the last 1,000: 510..1510).
    assert_eq!(r[0]["missed"], 410);
    let got = numbered(&r[1..]);
    assert_eq!(got.len(), 1000);
    assert_eq!(got[0], (zero + 510, "line 510".into()));
    assert_eq!(got.last().unwrap().1, "line 1509");
}

#[test]
fn since_seq_from_another_epoch_or_the_future_gets_an_unknown_gap_and_the_tail() {
    let id = "d".repeat(64);
    let mut h = local_hub(&id);
    let b = browser(&mut h);
    start(&mut h, b, json!({"tail": 0}));
    let f = follow_of(&h, &id).unwrap();
    h.docker(DockerEvent::LogHistory {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(0..10),
    });
    for since in [json!(3), json!(u64::MAX), json!(1e300), json!(0)] {
        let c = browser(&mut h);
        start(&mut h, c, json!({"since_seq": since, "tail": 2}));
        let r = h.take(c);
        assert_eq!(r[0]["type"], "log_gap", "{since}: {r:?}");
        assert_eq!(r[0]["missed"], Value::Null, "{since}");
        assert_eq!(log_text(&r), "line 8\nline 9\n", "{since}");
    }
    let c = browser(&mut h);
    start(&mut h, c, json!({"since_seq": -1}));
    let r = h.take(c);
    assert_eq!(r[0]["type"], "error");
    assert!(r[0]["message"].as_str().unwrap().contains("since_seq"));
}

#[test]
fn a_stream_nobody_follows_is_kept_and_resumed_at_its_seam() {
    let id = "e".repeat(64);
    let mut h = local_hub(&id);
    let b = browser(&mut h);
    start(&mut h, b, json!({"tail": 5}));
    let f = follow_of(&h, &id).unwrap();
    h.docker(DockerEvent::LogHistory {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(0..5),
    });
    live(&mut h, f, &id, stamped(5..7));
    let seen = numbered(&h.take(b));
    let last = seen.last().unwrap().0;
    // The only subscriber drops: the follower stops, the stream is kept.
    h.input(Input::Closed { conn: b });
    assert!(h.hub.state().follows.is_empty());
    assert_eq!(h.topic_count(), 0);
    assert_eq!(h.hub.state().idle_logs.len(), 1);
    let b2 = browser(&mut h);
    start(&mut h, b2, json!({"since_seq": last}));
    assert!(
        h.take(b2).is_empty(),
        "up to date until the new follower reports"
    );
    // The new follower's history overlaps the ring: only lines after it are sent.
    let f2 = follow_of(&h, &id).unwrap();
    assert_ne!(f, f2);
    h.docker(DockerEvent::LogHistory {
        follow_id: f2,
        container_id: id.clone(),
        lines: stamped(0..9),
    });
    let got = numbered(&h.take(b2));
    assert_eq!(
        got,
        vec![
            (last + 1, "line 7".to_string()),
            (last + 2, "line 8".to_string())
        ]
    );
    // Kept streams expire.
    h.input(Input::Closed { conn: b2 });
    assert_eq!(h.hub.state().idle_logs.len(), 1);
    h.tick(Duration::from_secs(6 * 60));
    assert!(h.hub.state().idle_logs.is_empty());
}

#[test]
fn docker_outage_suspends_and_resumes_streams_with_a_gap_only_when_lines_were_lost() {
    let id = "f".repeat(64);
    let mut h = local_hub(&id);
    let b = browser(&mut h);
    start(&mut h, b, json!({"tail": 2}));
    let f = follow_of(&h, &id).unwrap();
    h.docker(DockerEvent::LogHistory {
        follow_id: f,
        container_id: id.clone(),
        lines: stamped(0..5),
    });
    live(&mut h, f, &id, stamped(5..6));
    let mut all = numbered(&h.take(b));
    // The engine goes away: the feed reports Down, then the follower's end.
    h.docker(DockerEvent::Down {
        reason: "gone".into(),
    });
    h.docker(DockerEvent::LogEnded {
        follow_id: f,
        container_id: id.clone(),
        reason: "docker went away: gone".into(),
        engine_lost: true,
    });
    assert_eq!(
        of_type(&h.take(b), "log_stream_stopped"),
        0,
        "the stream waits for the engine"
    );
    assert!(h.hub.state().follows.is_empty());
    // Back: a new follower, joined to what was sent.
    h.docker(DockerEvent::Up {
        containers: vec![container(&id, "web")],
    });
    let f2 = follow_of(&h, &id).expect("resumed by the hub itself");
    h.docker(DockerEvent::LogHistory {
        follow_id: f2,
        container_id: id.clone(),
        lines: stamped(0..8),
    });
    live(&mut h, f2, &id, stamped(8..9));
    let r = h.take(b);
    assert_eq!(of_type(&r, "log_gap"), 0, "nothing was lost");
    all.extend(numbered(&r));
    let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    let want: Vec<String> = (3..9).map(|i| format!("line {i}")).collect();
    assert_eq!(texts, want);
    for w in all.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
    }
    // A follower that saw the engine fail first: suspended, retried on a tick.
    h.docker(DockerEvent::LogEnded {
        follow_id: f2,
        container_id: id.clone(),
        reason: "log stream failed: connection reset".into(),
        engine_lost: true,
    });
    assert!(follow_of(&h, &id).is_none());
    h.tick(Duration::from_secs(1));
    let f3 = follow_of(&h, &id).expect("retried while the engine is up");
    // More than the history holds was written meanwhile: a gap of unknown size.
    h.docker(DockerEvent::LogHistory {
        follow_id: f3,
        container_id: id.clone(),
        lines: stamped(2000..2003),
    });
    flush(&mut h);
    let r = h.take(b);
    assert_eq!(r[0]["type"], "log_gap");
    assert_eq!(r[0]["missed"], Value::Null);
    assert_eq!(log_text(&r), "line 2000\nline 2001\nline 2002\n");
    let seq_before = all.last().unwrap().0;
    assert_eq!(numbered(&r)[0].0, seq_before + 1, "numbering goes on");
    // The container really stops: the stream ends as before.
    h.docker(DockerEvent::LogEnded {
        follow_id: f3,
        container_id: id.clone(),
        reason: "container stopped".into(),
        engine_lost: false,
    });
    let r = h.take(b);
    assert_eq!(r[0]["type"], "log_stream_stopped");
    assert_eq!(r[0]["message"], "container stopped");
}

#[test]
fn an_agent_reconnect_resumes_its_log_streams() {
    let mut h = Harness::new(&format!("server_id = \"local\"\n{}", agent_config()));
    let hello = json!({"type": "hello", "name": "x", "capabilities": ["docker"]});
    let table = json!({"type": "containers", "containers": [{"id": "aaaa1111", "name": "web", "state": "running"}]});
    let a = h.agent();
    h.send(a, &hello);
    h.send(a, &table);
    h.take(a);
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web", "tail": 10}),
    );
    let r = h.take(a);
    assert_eq!(r[0]["type"], "subscribe_logs");
    let batch = |ls: &[u32], history: bool| {
        let lines: Vec<Value> = ls
            .iter()
            .map(|i| json!({"stream": "stdout", "timestamp": format!("2026-11-30T14:00:00.{i:09}Z"), "line": format!("line {i}")}))
            .collect();
        let mut v = json!({"type": "log_batch", "container_id": "aaaa1111", "lines": lines});
        if history {
            v["history"] = true.into();
            v["last"] = true.into();
        }
        v
    };
    h.send(a, &batch(&[0, 1, 2], true));
    h.send(a, &batch(&[3], false));
    flush(&mut h);
    let mut all = numbered(&h.take(b));
    // The agent's socket drops; the browser's stream waits.
    h.input(Input::Closed { conn: a });
    assert_eq!(of_type(&h.take(b), "log_stream_stopped"), 0);
    // It reconnects: its hello brings the stream back.
    let a2 = h.agent();
    h.send(a2, &hello);
    let r = h.take(a2);
    let sub: Vec<&Value> = r.iter().filter(|m| m["type"] == "subscribe_logs").collect();
    assert_eq!(sub.len(), 1, "{r:?}");
    assert_eq!(sub[0]["container_id"], "aaaa1111");
    h.send(a2, &batch(&[1, 2, 3, 4, 5], true));
    flush(&mut h);
    let r = h.take(b);
    assert_eq!(of_type(&r, "log_gap"), 0);
    all.extend(numbered(&r));
    let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        ["line 0", "line 1", "line 2", "line 3", "line 4", "line 5"]
    );
    for w in all.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
    }
    // Its engine goes away and comes back: the same.
    h.send(
        a2,
        &json!({"type": "docker_status", "up": false, "reason": "x"}),
    );
    h.send(
        a2,
        &json!({"type": "log_stream_stopped", "container_id": "aaaa1111", "message": "docker went away", "resumable": true}),
    );
    assert_eq!(of_type(&h.take(b), "log_stream_stopped"), 0);
    h.take(a2);
    h.send(a2, &json!({"type": "docker_status", "up": true}));
    let r = h.take(a2);
    assert_eq!(r[0]["type"], "subscribe_logs", "{r:?}");
}

fn of_type(msgs: &[Value], t: &str) -> usize {
    msgs.iter().filter(|m| m["type"] == t).count()
}
