//! Hubs of a cluster driven in memory: each hub's NATS link is a channel,
//! and [`Net::pump`] carries what one hub sends to the others as NATS would
//! (beats to every hub, messages to the one named, an ask to a hub that is
//! not there comes back unanswered).

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::mpsc::Receiver;

use super::*;
use crate::cluster::{ClusterEvent, ClusterLink, ClusterOp, PeerKind};
use crate::feed::FeedEvent;

impl Harness {
    /// What NATS (or another hub) tells this hub.
    fn cluster(&mut self, ev: ClusterEvent) {
        self.input(Input::Feed(FeedEvent::Cluster(ev)));
    }
}

/// Hubs by id, with the receiving end of each one's link.
struct Net {
    hubs: BTreeMap<String, (Harness, Receiver<ClusterOp>)>,
    /// JetStream's log history, when the net has it: records by stream.
    store: Option<BTreeMap<(String, String), Vec<Bytes>>>,
}

impl Net {
    fn new(ids: &[(&str, &str)]) -> Net {
        Net::build(ids, false)
    }

    /// Hubs on a NATS with JetStream: log history is stored and loaded.
    fn with_history(ids: &[(&str, &str)]) -> Net {
        Net::build(ids, true)
    }

    fn build(ids: &[(&str, &str)], history: bool) -> Net {
        let mut hubs = BTreeMap::new();
        for (id, extra) in ids {
            let secret = temp_file("secret", SECRET);
            let mut h = Harness::new(&format!(
                "server_id = \"host-{id}\"\n{extra}\n[auth]\njwt_secret_file = {:?}\n",
                secret.display().to_string()
            ));
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            let link = ClusterLink::new(tx);
            link.stats
                .up
                .store(true, std::sync::atomic::Ordering::Relaxed);
            link.stats
                .history
                .store(history, std::sync::atomic::Ordering::Relaxed);
            h.hub.set_cluster(link, id.to_string());
            h.cluster(ClusterEvent::Up);
            hubs.insert(id.to_string(), (h, rx));
        }
        Net {
            hubs,
            store: history.then(BTreeMap::new),
        }
    }

    fn hub(&mut self, id: &str) -> &mut Harness {
        &mut self.hubs.get_mut(id).unwrap().0
    }

    fn deliver(&mut self, to: &str, ev: ClusterEvent) {
        if let Some((h, _)) = self.hubs.get_mut(to) {
            h.cluster(ev);
        }
    }

    /// Carries every queued op until none is left.
    fn pump(&mut self) {
        for _ in 0..50 {
            let mut sent = Vec::new();
            for (id, (_, rx)) in self.hubs.iter_mut() {
                while let Ok(op) = rx.try_recv() {
                    sent.push((id.clone(), op));
                }
            }
            if sent.is_empty() {
                // Lines held back for coalescing go out (LOG_COALESCE).
                let mut flushed = false;
                for (h, rx) in self.hubs.values_mut() {
                    if h.hub.next_deadline().is_some() {
                        h.now += Duration::from_millis(5);
                        h.input(Input::Timers);
                        flushed |= !rx.is_empty();
                    }
                }
                if !flushed {
                    return;
                }
                continue;
            }
            for (from, op) in sent {
                if std::env::var_os("NET_DEBUG").is_some() {
                    eprintln!("{from}: {op:?}");
                }
                match op {
                    ClusterOp::Beat(body) => {
                        let others: Vec<String> =
                            self.hubs.keys().filter(|k| **k != from).cloned().collect();
                        for to in others {
                            self.deliver(&to, ClusterEvent::Beat(body.clone()));
                        }
                    }
                    ClusterOp::Send { to, kind, body } => {
                        self.deliver(
                            &to,
                            ClusterEvent::Message {
                                from: from.clone(),
                                kind,
                                body,
                            },
                        );
                    }
                    ClusterOp::Ask { to, body, token } => {
                        if self.hubs.contains_key(&to) {
                            self.deliver(
                                &to,
                                ClusterEvent::Message {
                                    from: from.clone(),
                                    kind: PeerKind::Req,
                                    body,
                                },
                            );
                        } else {
                            self.deliver(&from, ClusterEvent::Unanswered { token });
                        }
                    }
                    ClusterOp::StoreLog {
                        server,
                        container,
                        body,
                    } => {
                        let store = self.store.as_mut().expect("stored without JetStream");
                        let records = store.entry((server, container)).or_default();
                        records.push(body);
                        if records.len() > 1000 {
                            records.remove(0);
                        }
                    }
                    // Metrics history asks go by NATS request, tested on
                    // their own (and end to end in tests/cluster.rs).
                    ClusterOp::AskHistory { .. } | ClusterOp::Reply { .. } => {}
                    ClusterOp::LoadLog { server, container } => {
                        let records = self
                            .store
                            .as_ref()
                            .expect("loaded without JetStream")
                            .get(&(server.clone(), container.clone()))
                            .cloned()
                            .unwrap_or_default();
                        self.deliver(
                            &from,
                            ClusterEvent::LogHistory {
                                server,
                                container,
                                records,
                            },
                        );
                    }
                }
            }
        }
        panic!("the hubs kept talking");
    }

    /// Advances every hub's clock and ticks them (beats, expiries).
    fn tick(&mut self, d: Duration) {
        for (h, _) in self.hubs.values_mut() {
            h.tick(d);
        }
        self.pump();
    }
}

/// A Docker agent (`srv-1`, one container `c1` named `web`) on `hub`,
/// announced to the others.
fn docker_agent_on(net: &mut Net, hub: &str) -> ConnId {
    let agent = net.hub(hub).agent();
    let h = net.hub(hub);
    h.send(agent, &json!({"type": "hello", "capabilities": ["docker"]}));
    h.send(
        agent,
        &json!({"type": "containers", "containers": [container("c1", "web")]}),
    );
    net.tick(Duration::from_millis(300));
    agent
}

fn server<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["servers"]
        .as_array()?
        .iter()
        .find(|s| s["server_id"] == id)
}

fn servers_of(h: &mut Harness, conn: ConnId) -> Value {
    h.send(conn, &json!({"type": "list_servers"}));
    h.take(conn)
        .into_iter()
        .find(|m| m["type"] == "servers")
        .unwrap()
}

#[test]
fn a_viewer_sees_the_owners_agent_and_follows_its_logs_through_one_subscription() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", ""), ("c", "")]);
    let agent = docker_agent_on(&mut net, "a");
    for id in ["b", "c"] {
        let h = net.hub(id);
        let br = h.browser(Role::Viewer);
        let list = servers_of(h, br);
        let s = server(&list, "srv-1").expect("srv-1 listed");
        assert_eq!(s["online"], true);
        assert_eq!(s["hub"], "a");
        h.send(
            br,
            &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web"}),
        );
    }
    net.pump();
    // One follower on the agent, whatever the number of hubs.
    let asks: Vec<Value> = net
        .hub("a")
        .take(agent)
        .into_iter()
        .filter(|m| m["type"] == "subscribe_logs")
        .collect();
    assert_eq!(asks.len(), 1, "{asks:?}");
    let a = net.hub("a");
    a.send(
        agent,
        &json!({"type": "log_batch", "container_id": "c1", "history": true, "last": true,
        "lines": [{"stream": "stdout", "line": "one"}, {"stream": "stdout", "line": "two"}]}),
    );
    a.send(
        agent,
        &json!({"type": "log_batch", "container_id": "c1",
        "lines": [{"stream": "stdout", "line": "three"}]}),
    );
    net.pump();
    for id in ["b", "c"] {
        let h = net.hub(id);
        // The browser is the hub's second socket (after none): conn 1.
        let frames = h.take(1);
        assert_eq!(log_text(&frames), "one\ntwo\nthree\n", "hub {id}");
    }
    // The owner published each frame once per hub: two peer sessions.
    assert_eq!(net.hub("a").hub.session_count(), 3, "agent + two hubs");
}

#[test]
fn a_silent_hub_ends_its_session_on_the_owner_and_its_streams_there() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let b = net.hub("b");
    let br = b.browser(Role::Viewer);
    b.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
    );
    net.pump();
    assert!(net.hub("a").topic_count() > 0);
    net.hub("a").take(agent);
    // Hub b disappears: hub a ticks alone past the timeout.
    let (b_harness, _) = net.hubs.remove("b").unwrap();
    drop(b_harness);
    for _ in 0..4 {
        net.tick(crate::hub::cluster::RELAY_TIMEOUT / 3);
    }
    let a = net.hub("a");
    assert_eq!(a.hub.session_count(), 1, "only the agent is left");
    let types: Vec<String> = a.types(agent);
    assert!(types.contains(&"unsubscribe_logs".to_string()), "{types:?}");
}

#[test]
fn a_dead_owner_takes_its_servers_offline_and_fails_their_commands() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", "")]);
    let _agent = net.hub("a").agent();
    net.tick(Duration::from_millis(300));
    let b = net.hub("b");
    let br = b.browser(Role::Admin);
    b.take(br);
    net.hubs.remove("a");
    // The command goes out before hub b noticed: nobody takes it.
    let b = net.hub("b");
    b.send(
        br,
        &json!({"type": "command", "server_id": "srv-1", "command": "uptime", "request_id": "r"}),
    );
    net.pump();
    let frames = net.hub("b").take(br);
    assert!(
        frames.iter().any(|m| m["type"] == "command_accepted"),
        "{frames:?}"
    );
    let err = frames
        .iter()
        .find(|m| m["type"] == "error")
        .expect("an error");
    assert_eq!(err["request_id"], "r");
    assert!(
        err["message"].as_str().unwrap().contains("does not answer"),
        "{err}"
    );
    for _ in 0..4 {
        net.tick(crate::hub::cluster::RELAY_TIMEOUT / 3);
    }
    let b = net.hub("b");
    let frames = b.take(br);
    let offline = frames
        .iter()
        .find(|m| m["type"] == "server_state_change" && m["server"]["server_id"] == "srv-1")
        .expect("srv-1 went offline");
    assert_eq!(offline["server"]["online"], false);
    b.send(
        br,
        &json!({"type": "command", "server_id": "srv-1", "command": "x"}),
    );
    let frames = b.take(br);
    let e = frames
        .iter()
        .find(|m| m["type"] == "error")
        .expect("an error");
    assert!(e["message"].as_str().unwrap().contains("offline"), "{e}");
}

#[test]
fn bad_input_from_other_hubs_changes_nothing() {
    let mut net = Net::new(&[("b", "")]);
    let b = net.hub("b");
    let before = b.hub.state().servers.len();
    for body in [
        &b"not json"[..],
        br#"{"hub": "x.y", "session": "1", "servers": []}"#,
        br#"{"hub": "x", "servers": []}"#,
        br#"{"hub": "x", "session": 5, "servers": [{"server_id": "s"}]}"#,
        br#"{"hub": "x", "session": "1", "servers": [{"server_id": "", "online": true}, 7, null]}"#,
    ] {
        b.cluster(ClusterEvent::Beat(Bytes::from(body.to_vec())));
    }
    assert_eq!(b.hub.state().servers.len(), before);
    // A request from a hub never heard in a beat opens nothing.
    b.cluster(ClusterEvent::Message {
        from: "stranger".into(),
        kind: PeerKind::Req,
        body: Bytes::from_static(br#"{"type":"list_servers"}"#),
    });
    assert_eq!(b.hub.session_count(), 0);
    // An owner's event for a server it does not own here is ignored.
    b.cluster(ClusterEvent::Message {
        from: "stranger".into(),
        kind: PeerKind::Ev,
        body: Bytes::from_static(
            br#"{"type":"initial_state","server_id":"host-b","containers":[]}"#,
        ),
    });
    // At most MAX_PEERS other hubs are kept.
    for i in 0..crate::hub::cluster::MAX_PEERS + 10 {
        let beat = json!({"hub": format!("h{i}"), "session": "1",
            "servers": [{"server_id": format!("s{i}"), "name": "n", "online": true}]});
        b.cluster(ClusterEvent::Beat(Bytes::from(beat.to_string())));
    }
    let health = b.hub.state().cluster_health().unwrap();
    assert_eq!(
        health["peers"].as_array().unwrap().len(),
        crate::hub::cluster::MAX_PEERS
    );
    // A known hub's bad request gets an error back, like a browser's.
    let (_, rx) = net.hubs.get_mut("b").unwrap();
    while rx.try_recv().is_ok() {}
    let b = net.hub("b");
    b.cluster(ClusterEvent::Message {
        from: "h1".into(),
        kind: PeerKind::Req,
        body: Bytes::from_static(
            br#"{"type":"start_log_stream","server_id":"nope","container_id":"x"}"#,
        ),
    });
    let (_, rx) = net.hubs.get_mut("b").unwrap();
    let Ok(ClusterOp::Send { to, kind, body }) = rx.try_recv() else {
        panic!("no answer to hub h1");
    };
    assert_eq!((to.as_str(), kind), ("h1", PeerKind::Ev));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "error", "{v}");
}

#[test]
fn the_fuzz_seed_of_cluster_inputs_holds_the_invariants() {
    crate::hub::drive_hub(include_bytes!("../../../fuzz/corpus/hub_inputs/cluster01"));
    // A stream of an agent's container with its stored history (and a
    // second, bad one).
    crate::hub::drive_hub(include_bytes!("../../../fuzz/corpus/hub_inputs/cluster02"));
}

#[test]
fn beats_that_change_nothing_tell_browsers_nothing() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", "")]);
    let _agent = net.hub("a").agent();
    net.tick(Duration::from_millis(300));
    let b = net.hub("b");
    let br = b.browser(Role::Viewer);
    b.take(br);
    for _ in 0..5 {
        net.tick(crate::hub::cluster::BEAT_EVERY);
    }
    let changes: Vec<Value> = net
        .hub("b")
        .take(br)
        .into_iter()
        .filter(|m| m["type"] == "server_state_change")
        .collect();
    assert!(changes.is_empty(), "{changes:?}");
    let list = servers_of(net.hub("b"), br);
    assert_eq!(server(&list, "srv-1").unwrap()["online"], true);
}

#[test]
fn a_resync_mid_stream_neither_repeats_nor_loses_a_line() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let b = net.hub("b");
    let br = b.browser(Role::Viewer);
    b.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
    );
    net.pump();
    let batch = |from: u32, to: u32, history: bool| {
        let lines: Vec<Value> = (from..to)
            .map(|i| json!({"stream": "stdout", "timestamp": format!("2026-01-01T00:00:{i:02}Z"), "line": format!("line {i}")}))
            .collect();
        json!({"type": "log_batch", "container_id": "c1", "lines": lines, "history": history, "last": history})
    };
    net.hub("a").send(agent, &batch(0, 5, true));
    net.hub("a").send(agent, &batch(5, 8, false));
    net.pump();
    net.hub("a").take(agent);
    assert_eq!(
        log_text(&net.hub("b").take(br)),
        (0..8).map(|i| format!("line {i}\n")).collect::<String>()
    );
    // Hub b lost NATS and is back: it asks again for what it watches.
    let b = net.hub("b");
    b.cluster(ClusterEvent::Down("test".into()));
    b.cluster(ClusterEvent::Up);
    net.pump();
    // Hub b's asks started afresh on the owner; its only watcher gone and
    // back, the owner restarted the follower: the agent sends its history
    // again (the owner joins it to its ring), then new lines.
    let asks: Vec<String> = net.hub("a").types(agent);
    assert_eq!(
        asks.last().map(String::as_str),
        Some("subscribe_logs"),
        "{asks:?}"
    );
    net.hub("a").send(agent, &batch(0, 8, true));
    net.hub("a").send(agent, &batch(8, 10, false));
    net.pump();
    let frames = net.hub("b").take(br);
    assert_eq!(log_text(&frames), "line 8\nline 9\n", "{frames:?}");
    assert!(!frames.iter().any(|m| m["type"] == "log_gap"), "{frames:?}");
}

#[test]
fn of_two_hubs_claiming_a_server_the_newer_connection_wins_without_flapping() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", &agent_config()), ("c", "")]);
    let _old = net.hub("a").agent();
    net.tick(Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(5));
    // The agent reconnected to b; a has not noticed its socket is dead.
    let _new = net.hub("b").agent();
    net.tick(Duration::from_millis(300));
    let c = net.hub("c");
    let br = c.browser(Role::Viewer);
    c.take(br);
    for _ in 0..4 {
        net.tick(crate::hub::cluster::BEAT_EVERY);
    }
    let c = net.hub("c");
    let flaps: Vec<Value> = c
        .take(br)
        .into_iter()
        .filter(|m| m["type"] == "server_state_change")
        .collect();
    assert!(flaps.is_empty(), "{flaps:?}");
    let list = servers_of(c, br);
    assert_eq!(server(&list, "srv-1").unwrap()["hub"], "b");
}

#[test]
fn the_first_live_lines_after_an_empty_history_reach_other_hubs() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let b = net.hub("b");
    let br = b.browser(Role::Viewer);
    b.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1", "tail": 0}),
    );
    net.pump();
    let a = net.hub("a");
    a.send(agent, &json!({"type": "log_batch", "container_id": "c1", "history": true, "last": true, "lines": []}));
    net.pump();
    net.hub("a").send(
        agent,
        &json!({"type": "log_batch", "container_id": "c1",
        "lines": [{"stream": "stdout", "line": "first"}, {"stream": "stdout", "line": "second"}]}),
    );
    net.pump();
    assert_eq!(log_text(&net.hub("b").take(br)), "first\nsecond\n");
}

/// The `seq` of every `log_update` in `frames`.
fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|v| v["type"] == "log_update")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

fn lines_batch(from: u32, to: u32, history: bool) -> Value {
    let lines: Vec<Value> = (from..to)
        .map(|i| json!({"stream": "stdout", "timestamp": format!("2026-01-01T00:00:{i:02}Z"), "line": format!("line {i}")}))
        .collect();
    json!({"type": "log_batch", "container_id": "c1", "lines": lines, "history": history, "last": history})
}

#[test]
fn every_hub_numbers_a_stream_as_its_owner_so_a_resume_works_on_any_hub() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", ""), ("c", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let mut browsers = BTreeMap::new();
    for id in ["a", "b"] {
        let h = net.hub(id);
        let br = h.browser(Role::Viewer);
        h.send(
            br,
            &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
        );
        browsers.insert(id, br);
    }
    net.pump();
    net.hub("a").send(agent, &lines_batch(0, 3, true));
    net.hub("a").send(agent, &lines_batch(3, 5, false));
    net.pump();
    let on_a = net.hub("a").take(browsers["a"]);
    let on_b = net.hub("b").take(browsers["b"]);
    assert_eq!(log_text(&on_b), log_text(&on_a));
    let last = *seqs(&on_a).last().unwrap();
    assert_eq!(seqs(&on_b).last(), Some(&last), "b numbers as a does");
    // The browser on b lost its socket after line 2; it comes back on c.
    let c = net.hub("c");
    let br = c.browser(Role::Viewer);
    c.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1",
                "since_seq": last - 2}),
    );
    net.pump();
    let frames = net.hub("c").take(br);
    assert_eq!(log_text(&frames), "line 3\nline 4\n", "{frames:?}");
    assert_eq!(seqs(&frames).last(), Some(&last));
    assert!(!frames.iter().any(|m| m["type"] == "log_gap"), "{frames:?}");
    // A line before what anyone holds: a gap of the owner's count.
    let br2 = net.hub("c").browser(Role::Viewer);
    net.hub("c").send(
        br2,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1",
                "since_seq": last - 5}),
    );
    net.pump();
    let frames = net.hub("c").take(br2);
    assert_eq!(
        frames
            .iter()
            .find(|m| m["type"] == "log_gap")
            .map(|m| m["missed"].clone()),
        None,
        "the owner's first line is last - 4: nothing was missed: {frames:?}"
    );
    assert_eq!(
        log_text(&frames),
        "line 0\nline 1\nline 2\nline 3\nline 4\n"
    );
}

#[test]
fn a_new_owner_goes_on_with_the_stored_numbers() {
    let mut net = Net::with_history(&[("a", &agent_config()), ("b", &agent_config()), ("c", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let c = net.hub("c");
    let br = c.browser(Role::Viewer);
    c.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
    );
    net.pump();
    net.hub("a").send(agent, &lines_batch(0, 3, true));
    net.hub("a").send(agent, &lines_batch(3, 5, false));
    net.pump();
    let frames = net.hub("c").take(br);
    assert_eq!(
        log_text(&frames),
        (0..5).map(|i| format!("line {i}\n")).collect::<String>()
    );
    let last = *seqs(&frames).last().unwrap();
    // The agent leaves hub a and connects to hub b, which never followed
    // the stream: b loads its history from the store, then follows.
    net.hub("a").input(Input::Closed { conn: agent });
    net.tick(Duration::from_millis(100));
    let moved = docker_agent_on(&mut net, "b");
    net.tick(Duration::from_millis(100));
    let asks = net.hub("b").types(moved);
    assert!(asks.iter().any(|t| t == "subscribe_logs"), "{asks:?}");
    // The agent's history overlaps what was stored; two lines are new.
    net.hub("b").send(moved, &lines_batch(0, 7, true));
    net.pump();
    let frames = net.hub("c").take(br);
    assert_eq!(log_text(&frames), "line 5\nline 6\n", "{frames:?}");
    assert_eq!(seqs(&frames).last(), Some(&(last + 2)));
    assert!(!frames.iter().any(|m| m["type"] == "log_gap"), "{frames:?}");
    // A browser resuming on hub b itself (the new owner) from line 3.
    let b = net.hub("b");
    let on_b = b.browser(Role::Viewer);
    b.send(
        on_b,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1",
                "since_seq": last - 1}),
    );
    let frames = b.take(on_b);
    assert_eq!(log_text(&frames), "line 4\nline 5\nline 6\n", "{frames:?}");
}

#[test]
fn without_history_a_new_owner_numbers_afresh_and_says_so() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", &agent_config()), ("c", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let c = net.hub("c");
    let br = c.browser(Role::Viewer);
    c.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
    );
    net.pump();
    net.hub("a").send(agent, &lines_batch(0, 3, true));
    net.pump();
    net.hub("c").take(br);
    net.hub("a").input(Input::Closed { conn: agent });
    net.tick(Duration::from_millis(100));
    let moved = docker_agent_on(&mut net, "b");
    net.tick(Duration::from_millis(100));
    net.hub("b").take(moved);
    net.hub("b").send(moved, &lines_batch(0, 4, true));
    net.hub("b").send(moved, &lines_batch(4, 5, false));
    net.pump();
    let frames = net.hub("c").take(br);
    let gaps: Vec<&Value> = frames.iter().filter(|m| m["type"] == "log_gap").collect();
    assert_eq!(gaps.len(), 1, "{frames:?}");
    assert!(gaps[0]["missed"].is_null());
    // Nothing repeated: only what came after the gap notice is live.
    assert_eq!(log_text(&frames), "line 4\n", "{frames:?}");
}

#[test]
fn a_stored_history_that_never_comes_is_given_up_on() {
    let mut net = Net::with_history(&[("a", &agent_config())]);
    let agent = docker_agent_on(&mut net, "a");
    let (h, rx) = net.hubs.get_mut("a").unwrap();
    let br = h.browser(Role::Viewer);
    h.take(agent);
    h.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
    );
    // The load was asked; its answer is lost.
    let mut asked = false;
    while let Ok(op) = rx.try_recv() {
        asked |= matches!(op, ClusterOp::LoadLog { .. });
    }
    assert!(asked);
    assert!(!h.types(agent).iter().any(|t| t == "subscribe_logs"));
    h.tick(crate::hub::log_store::LOAD_GIVE_UP + Duration::from_secs(1));
    assert!(
        h.types(agent).iter().any(|t| t == "subscribe_logs"),
        "the follower starts without it"
    );
}

#[test]
fn one_hub_of_the_cluster_raises_agent_offline() {
    let rules = format!(
        "{}[[alerts]]\nname = \"gone\"\nrule = \"agent_offline for 1s\"\n",
        agent_config()
    );
    let mut net = Net::new(&[("a", &rules), ("b", &rules), ("c", &rules)]);
    let agent = docker_agent_on(&mut net, "b");
    let mut watchers = BTreeMap::new();
    for id in ["a", "b", "c"] {
        let h = net.hub(id);
        let br = h.browser(Role::Admin);
        h.send(
            br,
            &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
        );
        h.take(br);
        watchers.insert(id, br);
    }
    net.hub("b").input(Input::Closed { conn: agent });
    net.pump();
    net.tick(Duration::from_secs(2));
    net.tick(Duration::from_secs(2));
    let firing = |net: &mut Net, id: &str| -> usize {
        let br = watchers[id];
        net.hub(id)
            .take(br)
            .iter()
            .filter(|m| m["type"] == "alert" && m["data"]["state"] == "firing")
            .count()
    };
    assert_eq!(firing(&mut net, "a"), 1, "the lowest hub id raises it");
    assert_eq!(firing(&mut net, "b"), 0, "not the hub it left");
    assert_eq!(firing(&mut net, "c"), 0);
    // Hub a is gone (no beats): b is now the lowest and raises it.
    net.hubs.remove("a");
    for _ in 0..5 {
        net.tick(Duration::from_secs(2));
    }
    assert_eq!(firing(&mut net, "b"), 1);
    assert_eq!(firing(&mut net, "c"), 0);
}

#[test]
fn every_hubs_alerts_snapshot_shows_the_fleets_firing_alerts() {
    let mut net = Net::new(&[
        ("a", "[[alerts]]\nrule = 'cpu_percent > 50 for 0s'\n"),
        ("b", ""),
    ]);
    let mut m = sample("t");
    m.cpu_percent = 90.0;
    net.hub("a")
        .input(Input::Feed(FeedEvent::LocalMetrics(m.clone())));
    net.tick(Duration::from_secs(3));
    let snapshot = |net: &mut Net| -> Vec<Value> {
        let h = net.hub("b");
        let br = h.open(Endpoint::Browser, None);
        let t = h.token(Role::Viewer, Duration::from_secs(3600));
        h.send(br, &json!({"type": "auth", "token": t}));
        let frames = h.take(br);
        let alerts = frames
            .iter()
            .find(|f| f["type"] == "alerts")
            .expect("alerts on connect");
        let http: Value = serde_json::from_slice(&h.hub.state().alerts_json()).unwrap();
        assert_eq!(http["firing"], alerts["firing"]);
        alerts["firing"].as_array().unwrap().clone()
    };
    let firing = snapshot(&mut net);
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["server_id"], "host-a");
    assert_eq!(firing[0]["state"], "firing");
    // Resolved on a: gone from b's snapshot after a's next beat.
    m.cpu_percent = 10.0;
    net.hub("a").input(Input::Feed(FeedEvent::LocalMetrics(m)));
    net.tick(Duration::from_secs(3));
    assert!(snapshot(&mut net).is_empty());
    // Bad alerts in a beat are not taken.
    let bad = json!({"hub": "z", "session": "1", "servers": [],
        "alerts": [{"id": 5}, {"server_id": "x"}, {"id": "i", "server_id": "s", "pad": "x".repeat(5000)}]});
    net.deliver("b", ClusterEvent::Beat(Bytes::from(bad.to_string())));
    assert!(snapshot(&mut net).is_empty());
}

#[test]
fn the_owner_answers_a_history_ask_with_a_status_and_the_body() {
    let mut net = Net::new(&[("a", ""), ("b", "")]);
    net.hub("a")
        .input(Input::Feed(FeedEvent::LocalMetrics(sample("t"))));
    let mut ask = |net: &mut Net, body: &str| -> (u16, Value) {
        net.deliver(
            "a",
            ClusterEvent::HistoryAsk {
                reply: "_INBOX.1".into(),
                body: Bytes::from(body.to_string()),
            },
        );
        let rx = &mut net.hubs.get_mut("a").unwrap().1;
        let mut answer = None;
        while let Ok(op) = rx.try_recv() {
            if let ClusterOp::Reply { subject, body } = op {
                assert_eq!(subject, "_INBOX.1");
                answer = Some(crate::cluster::split_answer(&body));
            }
        }
        let (status, body) = answer.expect("an answer");
        (status, serde_json::from_slice(&body).unwrap())
    };
    let (status, v) = ask(&mut net, r#"{"server_id": "host-a", "range": "1h"}"#);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["server_id"], "host-a");
    assert_eq!(v["samples"].as_array().map(Vec::len), Some(1));
    let (status, _) = ask(&mut net, r#"{"server_id": "host-b", "range": "1h"}"#);
    assert_eq!(status, 404, "not a server a owns");
    for bad in [r#"{"server_id": "host-a", "range": "2h"}"#, "{", "[]"] {
        assert_eq!(ask(&mut net, bad).0, 400, "{bad}");
    }
    // b asks a: one request for a's server, none for its own or an unknown one.
    net.tick(Duration::from_secs(3));
    let b = &net.hubs.get_mut("b").unwrap().0;
    let state = b.hub.state();
    assert_eq!(state.metrics_owner("host-a"), Some("a"));
    assert!(state.ask_history("host-a", crate::hub::HistoryRange::Hour, 7, 1));
    assert!(!state.ask_history("host-b", crate::hub::HistoryRange::Hour, 7, 1));
    assert!(!state.ask_history("nope", crate::hub::HistoryRange::Hour, 7, 1));
}

#[test]
fn an_owners_bad_numbers_change_nothing() {
    let mut net = Net::new(&[("a", &agent_config()), ("b", "")]);
    let agent = docker_agent_on(&mut net, "a");
    let b = net.hub("b");
    let br = b.browser(Role::Viewer);
    b.send(
        br,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "c1"}),
    );
    net.pump();
    net.hub("a").send(agent, &lines_batch(0, 3, true));
    net.pump();
    let frames = net.hub("b").take(br);
    let last = *seqs(&frames).last().unwrap();
    for (seq, log) in [
        (json!(u64::MAX), "x\ny\n"),
        (json!(u64::MAX - 1), "x\ny\n"),
        (json!(0), "x\n"),
        (json!(1), "x\ny\nz\n"),
        (json!(-1), "x\n"),
        (json!("5"), "x\n"),
    ] {
        let ev = json!({"type": "log_update", "server_id": "srv-1", "container_id": "c1",
                        "log": log, "seq": seq});
        net.deliver(
            "b",
            ClusterEvent::Message {
                from: "a".into(),
                kind: PeerKind::Ev,
                body: Bytes::from(ev.to_string()),
            },
        );
    }
    net.pump();
    // Refused (bad_input) or taken as the owner's numbers (a jump of the
    // number space: the browser is told of a gap); an owner is trusted
    // like an admin, so only the hub's own safety is asked here.
    let frames = net.hub("b").take(br);
    assert!(
        frames
            .iter()
            .all(|m| m["type"] == "log_gap" || m["type"] == "log_update"),
        "{frames:?}"
    );
    assert!(
        frames.iter().any(|m| m["type"] == "log_gap"),
        "the jump to u64::MAX - 1 is a gap: {frames:?}"
    );
    assert!(last < u64::MAX - 2);
    // u64::MAX (its next number overflows), 0 with a line, 1 with three:
    // refused and counted (-1 and "5" are not numbers: ignored).
    assert_eq!(
        net.hub("b").stats.bad_input.get("cluster_message"),
        Some(&3),
        "the three that cannot number their lines"
    );
}
