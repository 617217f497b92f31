//! Socket.IO connection state recovery driven in memory (`recovery.rs`):
//! the pid in the CONNECT answer, offsets on events, a recovery replaying
//! exactly what was missed, and every way it falls back to a fresh session.

use super::*;
use crate::protocol::socketio::PID_LEN;

/// One Socket.IO packet as the client reads it: `(event name, args)`;
/// `None` for anything but an EVENT.
fn event(raw: &str) -> Option<(String, Vec<Value>)> {
    let v: Value = serde_json::from_str(raw.strip_prefix("42")?).ok()?;
    let mut a = v.as_array()?.clone();
    let name = a.remove(0).as_str()?.to_string();
    Some((name, a))
}

/// The offset an event carries (its last argument, a string), as the
/// official client reads it.
fn offset_of(raw: &str) -> Option<u64> {
    let (_, args) = event(raw)?;
    args.last()?.as_str()?.parse().ok()
}

/// The CONNECT answer's object.
fn connect_reply(raw: &[String]) -> Value {
    let r = raw
        .iter()
        .find(|t| t.starts_with("40"))
        .expect("a CONNECT answer");
    serde_json::from_str(&r[2..]).unwrap()
}

/// A Socket.IO socket past CONNECT with `auth`; returns it and its packets.
fn sio(h: &mut Harness, auth: &Value) -> (ConnId, Vec<String>) {
    let c = h.open(Endpoint::SocketIo, None);
    h.take_raw(c); // Engine.IO open
    h.send_text(c, &format!("40{auth}"));
    let raw = h.take_raw(c);
    (c, raw)
}

fn changed(h: &mut Harness, id: &str, state: &str) {
    let mut c = container(id, "web");
    c.state = state.into();
    h.docker(DockerEvent::Changed(c));
}

fn states(raw: &[String]) -> Vec<String> {
    raw.iter()
        .filter_map(|t| event(t))
        .filter(|(n, _)| n == "container_state_change")
        .map(|(_, a)| a[0]["state"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn up(h: &mut Harness, id: &str) {
    h.docker(DockerEvent::Up {
        containers: vec![container(id, "web")],
    });
}

#[test]
fn sockets_get_a_pid_and_offsets_unless_they_or_the_config_opt_out() {
    let mut h = Harness::new("server_id = \"local\"\n");
    // The official client sends no `recover`: recoverable by default.
    let (c, raw) = sio(&mut h, &json!({}));
    let reply = connect_reply(&raw);
    let pid = reply["pid"].as_str().unwrap();
    assert_eq!(pid.len(), PID_LEN);
    assert_ne!(reply["sid"], reply["pid"]);
    let offsets: Vec<u64> = raw.iter().filter_map(|t| offset_of(t)).collect();
    let events = raw.iter().filter(|t| t.starts_with("42")).count();
    assert!(events >= 2, "{raw:?}");
    assert_eq!(offsets.len(), events, "every event has an offset: {raw:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    // The payload is still the first argument.
    let (name, args) = event(&raw[1]).unwrap();
    assert_eq!(name, "connection_established");
    assert!(args[0].is_object());
    // Replies to requests and published events carry one too.
    h.send_text(c, r#"42["ping"]"#);
    let pong = h.take_raw(c);
    assert!(offset_of(&pong[0]).unwrap() > *offsets.last().unwrap());

    // With `recover: false` (python-socketio's one-argument handlers): no
    // pid, no offset.
    let (plain, raw) = sio(&mut h, &json!({"recover": false}));
    assert!(connect_reply(&raw).get("pid").is_none(), "{raw:?}");
    let id = "a".repeat(64);
    up(&mut h, &id);
    changed(&mut h, &id, "exited");
    let p = h.take_raw(plain);
    let last = p.last().unwrap();
    assert!(last.ends_with("}]"), "{last}");
    assert!(offset_of(last).is_none());
    let r = h.take_raw(c);
    assert!(offset_of(r.last().unwrap()).is_some(), "{r:?}");
    // The published frame was stamped once, not per socket.
    let (c2, _) = sio(&mut h, &json!({"recover": true}));
    changed(&mut h, &id, "running");
    let a = h.take_raw(c).pop().unwrap();
    let b = h.take_raw(c2).pop().unwrap();
    assert_eq!(a, b, "one stamped frame shared by both");
}

#[test]
fn the_config_can_turn_recovery_off() {
    let mut h = Harness::new("server_id = \"local\"\n[socketio]\nrecovery = false\n");
    for auth in [json!({}), json!({"recover": true})] {
        let (c, raw) = sio(&mut h, &auth);
        assert!(connect_reply(&raw).get("pid").is_none(), "{raw:?}");
        assert!(raw.iter().all(|t| offset_of(t).is_none()), "{raw:?}");
        let id = "b".repeat(64);
        up(&mut h, &id);
        changed(&mut h, &id, "exited");
        let r = h.take_raw(c);
        assert!(r.iter().all(|t| offset_of(t).is_none()), "{r:?}");
    }
}

#[test]
fn a_recovered_session_gets_exactly_what_it_missed_once_in_order() {
    let mut h = Harness::new("server_id = \"local\"\n");
    let id = "b".repeat(64);
    up(&mut h, &id);
    let (c, raw) = sio(&mut h, &json!({"recover": true}));
    let first = connect_reply(&raw);
    let processed = raw.iter().filter_map(|t| offset_of(t)).max().unwrap();
    // Sent but never read by the client (still in flight when it dropped).
    changed(&mut h, &id, "paused");
    let topics_before = h.topic_count();
    h.input(Input::Closed { conn: c });
    assert!(h.hub.session(c).is_none());
    assert_eq!(
        h.topic_count(),
        topics_before,
        "a parked session keeps its topics"
    );
    // Published while it was away.
    changed(&mut h, &id, "running");
    changed(&mut h, &id, "exited");
    h.tick(Duration::from_secs(30));

    let auth = json!({"recover": true, "pid": first["pid"], "offset": processed.to_string()});
    let (c2, raw) = sio(&mut h, &auth);
    let reply = connect_reply(&raw);
    assert_eq!(reply["sid"], first["sid"], "the same socket id");
    assert_eq!(reply["pid"], first["pid"], "the same pid: socket.recovered");
    assert!(raw[0].starts_with("40"), "CONNECT answer first: {raw:?}");
    let names: Vec<String> = raw.iter().filter_map(|t| event(t)).map(|e| e.0).collect();
    assert_eq!(
        names, ["container_state_change"; 3],
        "no new greeting: {raw:?}"
    );
    assert_eq!(states(&raw), ["paused", "running", "exited"]);
    let offs: Vec<u64> = raw.iter().filter_map(|t| offset_of(t)).collect();
    assert!(offs[0] > processed && offs.windows(2).all(|w| w[0] < w[1]));
    // Then live, in the same topics.
    changed(&mut h, &id, "running");
    let live = h.take_raw(c2);
    assert_eq!(states(&live), ["running"]);
    assert!(offset_of(&live[0]).unwrap() > *offs.last().unwrap());
    // A second drop recovers again, from where the client got to.
    let last = offset_of(&live[0]).unwrap();
    h.input(Input::Closed { conn: c2 });
    changed(&mut h, &id, "paused");
    let auth = json!({"recover": true, "pid": first["pid"], "offset": last.to_string()});
    let (_, raw) = sio(&mut h, &auth);
    assert_eq!(connect_reply(&raw)["pid"], first["pid"]);
    assert_eq!(states(&raw), ["paused"]);
    // The pid was used: a second use of it gets a fresh session.
    let (_, raw) = sio(&mut h, &auth);
    assert_ne!(connect_reply(&raw)["pid"], first["pid"]);
}

#[test]
fn log_streams_survive_the_gap_and_stop_when_the_window_ends() {
    let mut h = Harness::new("server_id = \"local\"\n");
    let id = "c".repeat(64);
    up(&mut h, &id);
    let (c, raw) = sio(&mut h, &json!({"recover": true}));
    let pid = connect_reply(&raw)["pid"].clone();
    h.send_text(
        c,
        r#"42["start_log_stream",{"container_id":"web","tail":0}]"#,
    );
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: id.clone(),
        lines: lines(0..3),
    });
    let got = h.take_raw(c);
    let processed = raw
        .iter()
        .chain(&got)
        .filter_map(|t| offset_of(t))
        .max()
        .unwrap();
    h.input(Input::Closed { conn: c });
    assert_eq!(h.hub.state().follows.len(), 1, "the follower keeps running");
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: id.clone(),
        lines: lines(3..6),
    });
    let auth = json!({"recover": true, "pid": pid, "offset": processed.to_string()});
    let (c2, raw) = sio(&mut h, &auth);
    let logs: String = raw
        .iter()
        .filter_map(|t| event(t))
        .filter(|(n, _)| n == "log_update")
        .map(|(_, a)| a[0]["log"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(logs, "line 3\nline 4\nline 5\n");
    h.now += Duration::from_millis(10);
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: id.clone(),
        lines: lines(6..7),
    });
    assert!(h.take_raw(c2)[0].contains("line 6"));

    // Away for longer than the window: the follower stops, the pid is gone.
    h.input(Input::Closed { conn: c2 });
    h.tick(Duration::from_secs(119));
    assert_eq!(h.hub.state().follows.len(), 1);
    h.tick(Duration::from_secs(2));
    assert!(h.hub.state().follows.is_empty(), "stopped after the window");
    assert_eq!(h.topic_count(), 0);
    let auth = json!({"recover": true, "pid": pid, "offset": "1"});
    let (_, raw) = sio(&mut h, &auth);
    assert_ne!(connect_reply(&raw)["pid"], pid);
    let names: Vec<String> = raw.iter().filter_map(|t| event(t)).map(|e| e.0).collect();
    assert_eq!(
        names[0], "connection_established",
        "a fresh session: {raw:?}"
    );
}

#[test]
fn unknown_forged_or_stale_resumes_get_a_fresh_session() {
    let mut h = Harness::new("server_id = \"local\"\n");
    let id = "d".repeat(64);
    up(&mut h, &id);
    let (c, raw) = sio(&mut h, &json!({"recover": true}));
    let pid = connect_reply(&raw)["pid"].as_str().unwrap().to_string();
    let processed = raw.iter().filter_map(|t| offset_of(t)).max().unwrap();
    h.input(Input::Closed { conn: c });
    let fresh = |h: &mut Harness, auth: Value| {
        let (_, raw) = sio(h, &auth);
        let r = connect_reply(&raw);
        assert_ne!(r["pid"], pid.as_str(), "{auth}");
        assert!(r["pid"].is_string(), "{auth}");
        let names: Vec<String> = raw.iter().filter_map(|t| event(t)).map(|e| e.0).collect();
        assert_eq!(names[0], "connection_established", "{auth}: {raw:?}");
    };
    let off = processed.to_string();
    let other = "0".repeat(PID_LEN);
    fresh(
        &mut h,
        json!({"recover": true, "pid": other, "offset": off}),
    );
    for bad in [
        json!({"recover": true, "pid": pid.to_uppercase(), "offset": off}),
        json!({"recover": true, "pid": format!("{pid}0"), "offset": off}),
        json!({"recover": true, "pid": 7, "offset": off}),
        json!({"recover": true, "pid": pid, "offset": processed}),
        json!({"recover": true, "pid": pid, "offset": "-1"}),
        json!({"recover": true, "pid": pid, "offset": "99999999999999999999"}),
        json!({"recover": true, "pid": pid, "offset": "1".repeat(21)}),
        json!({"recover": true, "pid": pid, "offset": " 1"}),
        json!({"recover": true, "pid": pid}),
    ] {
        fresh(&mut h, bad);
    }
    // None of those touched the parked session; an offset newer than
    // anything sent fails it (and frees it), as the pid can then not be
    // trusted to have read what it claims.
    fresh(
        &mut h,
        json!({"recover": true, "pid": pid, "offset": (processed + 1000).to_string()}),
    );
    fresh(&mut h, json!({"recover": true, "pid": pid, "offset": off}));
    // A client with `recover: false` sending a pid is not recovered either.
    let (c, raw) = sio(&mut h, &json!({"recover": true}));
    let pid2 = connect_reply(&raw)["pid"].clone();
    let off2 = raw.iter().filter_map(|t| offset_of(t)).max().unwrap();
    h.input(Input::Closed { conn: c });
    let (_, raw) = sio(
        &mut h,
        &json!({"recover": false, "pid": pid2, "offset": off2.to_string()}),
    );
    assert!(connect_reply(&raw).get("pid").is_none());
    assert!(
        raw.iter()
            .all(|t| !t.starts_with("42") || t.ends_with("}]"))
    );
}

#[test]
fn leaving_on_purpose_or_for_auth_is_not_recoverable() {
    let mut h = Harness::with_auth("");
    let tok = h.token(Role::Viewer, Duration::from_secs(3600));
    let (c, raw) = sio(&mut h, &json!({"recover": true, "token": tok}));
    let pid = connect_reply(&raw)["pid"].clone();
    let off = raw.iter().filter_map(|t| offset_of(t)).max().unwrap();
    h.send_text(c, "41");
    assert!(h.out.closed(c).is_some());
    assert_eq!(h.topic_count(), 0, "a Socket.IO DISCONNECT is final");
    let auth = json!({"recover": true, "token": tok, "pid": pid, "offset": off.to_string()});
    let (_, raw) = sio(&mut h, &auth);
    assert_ne!(connect_reply(&raw)["pid"], pid);

    // Recovery needs the same identity, authenticated as usual.
    let (c, raw) = sio(&mut h, &json!({"recover": true, "token": tok}));
    let pid = connect_reply(&raw)["pid"].clone();
    let off = raw
        .iter()
        .filter_map(|t| offset_of(t))
        .max()
        .unwrap()
        .to_string();
    h.input(Input::Closed { conn: c });
    let (bad, raw) = sio(&mut h, &json!({"recover": true, "pid": pid, "offset": off}));
    assert!(raw[0].starts_with("44"), "no token, no recovery: {raw:?}");
    assert!(h.hub.session(bad).is_none_or(|s| !s.is_ready()));
    let someone = sign_token(
        SECRET,
        "someone-else",
        Role::Admin,
        Duration::from_secs(60),
        unix_now(),
    )
    .unwrap();
    let auth = json!({"recover": true, "token": someone, "pid": pid, "offset": off});
    let (_, raw) = sio(&mut h, &auth);
    assert_ne!(connect_reply(&raw)["pid"], pid, "another user's pid");
    let auth = json!({"recover": true, "token": tok, "pid": pid, "offset": off});
    let (_, raw) = sio(&mut h, &auth);
    assert_eq!(connect_reply(&raw)["pid"], pid, "the owner still can");
}

#[test]
fn parked_sessions_and_their_logs_are_capped() {
    use super::super::recovery::{LOG_BYTES, LOG_FRAMES, MAX_PARKED, SentLog};
    let mut log = SentLog::default();
    let f = crate::ws::text_frame(b"42[\"x\",{}]");
    for o in 1..=(LOG_FRAMES as u64 + 10) {
        log.push(o, f.clone());
    }
    assert_eq!(log.len(), LOG_FRAMES);
    assert!(log.after(5).is_none(), "forgotten: no replay with a hole");
    assert_eq!(log.after(10).unwrap().len(), LOG_FRAMES);
    assert!(
        log.after(LOG_FRAMES as u64 + 11).is_none(),
        "newer than sent"
    );
    let big = crate::ws::text_frame(&vec![b'x'; LOG_BYTES / 2 + 1]);
    log.push(10_000, big.clone());
    log.push(10_001, big);
    assert!(log.bytes() <= LOG_BYTES);
    assert!(log.after(10_000).is_some());
    assert!(log.after(9_999).is_none());

    let mut h = Harness::new("server_id = \"local\"\n");
    let mut pids = Vec::new();
    for _ in 0..=MAX_PARKED {
        let (c, raw) = sio(&mut h, &json!({"recover": true}));
        let off = raw.iter().filter_map(|t| offset_of(t)).max().unwrap();
        pids.push((connect_reply(&raw)["pid"].clone(), off));
        h.input(Input::Closed { conn: c });
    }
    assert_eq!(h.hub.sessions.sio.parked_len(), MAX_PARKED);
    let (pid, off) = pids.pop().unwrap();
    let (_, raw) = sio(
        &mut h,
        &json!({"recover": true, "pid": pid, "offset": off.to_string()}),
    );
    assert_ne!(connect_reply(&raw)["pid"], pid, "past the cap: not kept");
    let (pid, off) = pids.pop().unwrap();
    let (_, raw) = sio(
        &mut h,
        &json!({"recover": true, "pid": pid, "offset": off.to_string()}),
    );
    assert_eq!(connect_reply(&raw)["pid"], pid);
}
