//! SPEC 12 in memory: `set_event_filter` and filtered log streams.

use super::*;

fn labelled(id: &str, name: &str, labels: &[(&str, &str)]) -> crate::protocol::model::Container {
    let mut c = container(id, name);
    c.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

fn local_hub() -> Harness {
    let mut h = Harness::new("server_id = \"local\"\n");
    h.docker(DockerEvent::Up {
        containers: vec![
            labelled(&"a".repeat(64), "web", &[("app", "shop")]),
            labelled(&"b".repeat(64), "db", &[("app", "shop"), ("tier", "data")]),
            labelled(&"c".repeat(64), "cron", &[]),
        ],
    });
    h
}

fn browser(h: &mut Harness) -> ConnId {
    let b = h.open(Endpoint::Browser, None);
    h.take(b);
    b
}

/// The names in the `container_state_change`s `conn` got.
fn changed(h: &mut Harness, conn: ConnId) -> Vec<String> {
    h.take(conn)
        .iter()
        .filter(|v| v["type"] == "container_state_change")
        .map(|v| {
            let c = &v["container"];
            c["name"].as_str().or(c["id"].as_str()).unwrap().to_string()
        })
        .collect()
}

/// Docker reports a change of every container.
fn touch_all(h: &mut Harness) {
    for (id, name, labels) in [
        ("a", "web", vec![("app", "shop")]),
        ("b", "db", vec![("app", "shop"), ("tier", "data")]),
        ("c", "cron", vec![]),
    ] {
        h.docker(DockerEvent::Changed(labelled(
            &id.repeat(64),
            name,
            &labels,
        )));
    }
}

#[test]
fn event_filter_by_name_id_and_labels_then_cleared() {
    let mut h = local_hub();
    let b = browser(&mut h);
    let other = browser(&mut h);
    h.send(
        b,
        &json!({"type": "set_event_filter", "container_ids": ["web"]}),
    );
    touch_all(&mut h);
    assert_eq!(changed(&mut h, b), ["web"]);
    assert_eq!(
        changed(&mut h, other),
        ["web", "db", "cron"],
        "others unchanged"
    );

    h.send(
        b,
        &json!({"type": "set_event_filter", "container_ids": ["cccccccccccc"]}),
    );
    touch_all(&mut h);
    assert_eq!(changed(&mut h, b), ["cron"], "by id prefix");

    h.send(
        b,
        &json!({"type": "set_event_filter", "labels": {"app": "shop", "tier": "data"}}),
    );
    touch_all(&mut h);
    assert_eq!(changed(&mut h, b), ["db"], "all labels must match");

    h.send(
        b,
        &json!({"type": "set_event_filter", "container_ids": ["cron"], "labels": {"tier": "data"}}),
    );
    touch_all(&mut h);
    assert_eq!(changed(&mut h, b), ["db", "cron"], "ids or labels");

    // Removal of a filtered-out container is not heard; of a matching one is.
    h.docker(DockerEvent::Removed { id: "a".repeat(64) });
    h.docker(DockerEvent::Removed { id: "c".repeat(64) });
    assert_eq!(changed(&mut h, b), ["c".repeat(64)]);

    h.send(b, &json!({"type": "set_event_filter"}));
    h.docker(DockerEvent::Changed(labelled(&"a".repeat(64), "web", &[])));
    h.docker(DockerEvent::Changed(labelled(&"c".repeat(64), "cron", &[])));
    assert_eq!(changed(&mut h, b), ["web", "cron"], "cleared: all again");
    assert!(h.hub.session(b).unwrap().event_filters.is_empty());
}

#[test]
fn event_filter_cuts_container_stats_to_matching_containers() {
    let mut h = local_hub();
    let all = browser(&mut h);
    let some = browser(&mut h);
    for b in [all, some] {
        h.send(
            b,
            &json!({"type": "subscribe_containers", "server_id": "local"}),
        );
    }
    h.send(
        some,
        &json!({"type": "set_event_filter", "labels": {"tier": "data"}}),
    );
    h.take(all);
    h.take(some);
    let stat = |id: &str| crate::protocol::model::ContainerStats {
        id: id.repeat(64),
        cpu_percent: 1.0,
        memory_used: 1,
        memory_limit: 2,
        net_rx_bytes: 0,
        net_tx_bytes: 0,
    };
    h.docker(DockerEvent::Stats(vec![stat("a"), stat("b"), stat("c")]));
    let ids = |v: &[Value]| -> Vec<usize> {
        v.iter()
            .filter(|m| m["type"] == "container_stats")
            .map(|m| m["stats"].as_array().unwrap().len())
            .collect()
    };
    assert_eq!(ids(&h.take(all)), [3]);
    let mine = h.take(some);
    assert_eq!(ids(&mine), [1]);
    let s = mine
        .iter()
        .find(|m| m["type"] == "container_stats")
        .unwrap();
    assert_eq!(s["stats"][0]["id"], "b".repeat(64));
}

#[test]
fn bad_event_filters_get_errors_with_their_request_id() {
    let mut h = local_hub();
    let b = browser(&mut h);
    let many: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    for (bad, says) in [
        (json!({"container_ids": "web"}), "container_ids"),
        (json!({"container_ids": many}), "at most"),
        (json!({"labels": {"a": 1}}), "label"),
        (
            json!({"server_id": "nowhere", "container_ids": ["web"]}),
            "Unknown server_id",
        ),
    ] {
        let mut req = json!({"type": "set_event_filter", "request_id": "r1"});
        req.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        h.send(b, &req);
        let v = h.take(b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0]["type"], "error");
        assert_eq!(v[0]["request_id"], "r1");
        assert!(v[0]["message"].as_str().unwrap().contains(says), "{v:?}");
    }
    // Nothing was set by the refused requests.
    assert!(h.hub.session(b).unwrap().event_filters.is_empty());
}

fn mixed() -> Vec<LogLine> {
    [
        (LogStream::Stdout, "INFO starting"),
        (LogStream::Stderr, "ERROR db timeout"),
        (LogStream::Stdout, r#"{"level":"warn","msg":"slow query"}"#),
        (LogStream::Stdout, "[DEBUG] tick"),
        (
            LogStream::Stderr,
            r#"{"severity":"error","msg":"payment refused"}"#,
        ),
        (LogStream::Stdout, "plain line"),
    ]
    .into_iter()
    .map(|(stream, text)| LogLine {
        stream,
        timestamp: String::new(),
        text: text.into(),
    })
    .collect()
}

/// `(seq, line)` of every log_update line `conn` got.
fn got_lines(h: &mut Harness, conn: ConnId) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for f in h.take(conn).iter().filter(|v| v["type"] == "log_update") {
        let lines: Vec<&str> = f["log"].as_str().unwrap().lines().collect();
        out.push((f["seq"].as_u64().unwrap(), lines.join("|")));
    }
    out
}

fn start(h: &mut Harness, b: ConnId, filter: Value) {
    h.send(
        b,
        &json!({"type": "start_log_stream", "container_id": "web", "tail": 10, "filter": filter}),
    );
}

fn web_key() -> TopicKey {
    TopicKey::Logs {
        server: "local".into(),
        container: "a".repeat(64),
    }
}

#[test]
fn filtered_streams_share_frames_per_filter_and_keep_seq() {
    let mut h = local_hub();
    let plain = browser(&mut h);
    let e1 = browser(&mut h);
    let e2 = browser(&mut h);
    let out = browser(&mut h);
    start(&mut h, plain, Value::Null);
    start(&mut h, e1, json!({"levels": ["error"]}));
    start(&mut h, e2, json!({"levels": ["ERR", "fatal"]}));
    start(
        &mut h,
        out,
        json!({"stream": "stdout", "pattern": "slow|tick"}),
    );
    assert_eq!(
        h.hub.state().follows.len(),
        1,
        "one follower whatever the filters"
    );
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: mixed(),
    });
    // History: each gets its own lines, seq of the last line of each frame.
    // Numbering starts at the stream's epoch: `p` is the sixth line's.
    let p = got_lines(&mut h, plain)[0].0;
    let e = got_lines(&mut h, e1);
    assert_eq!(
        e,
        [(
            p - 1,
            r#"ERROR db timeout|{"severity":"error","msg":"payment refused"}"#.to_string()
        )]
    );
    assert_eq!(got_lines(&mut h, e2), e, "aliases make the same filter");
    assert_eq!(
        got_lines(&mut h, out),
        [(
            p - 2,
            r#"{"level":"warn","msg":"slow query"}|[DEBUG] tick"#.to_string()
        )]
    );
    let groups = |h: &Harness| {
        h.hub
            .state()
            .topics
            .get(&web_key())
            .unwrap()
            .log
            .as_ref()
            .unwrap()
            .groups
            .len()
    };
    assert_eq!(groups(&h), 2, "two distinct filters");

    // Live: one encode for the unfiltered, one per distinct filter.
    let before = h.stats.log_frames_encoded;
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: mixed(),
    });
    assert_eq!(h.stats.log_frames_encoded - before, 3);
    assert_eq!(got_lines(&mut h, plain)[0].0, p + 6);
    let e = got_lines(&mut h, e1);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, p + 5, "seq counts every line, filtered or not");
    assert_eq!(got_lines(&mut h, e2), e);
    assert_eq!(got_lines(&mut h, out)[0].0, p + 4);

    // Lines that match no filter: nothing is encoded for the filtered.
    h.now += Duration::from_millis(10);
    let before = h.stats.log_frames_encoded;
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: mixed()
            .into_iter()
            .filter(|l| l.text == "plain line")
            .collect(),
    });
    assert_eq!(h.stats.log_frames_encoded - before, 1);
    assert!(got_lines(&mut h, e1).is_empty());
    assert!(got_lines(&mut h, out).is_empty());
    assert_eq!(got_lines(&mut h, plain)[0].0, p + 7);

    // Resume with a filter: the lines after since_seq that match.
    h.send(
        e1,
        &json!({"type": "stop_log_stream", "container_id": "web"}),
    );
    h.take(e1);
    h.send(
        e1,
        &json!({"type": "start_log_stream", "container_id": "web", "since_seq": p, "filter": {"levels": ["error"]}}),
    );
    assert_eq!(
        got_lines(&mut h, e1),
        [(
            p + 5,
            r#"ERROR db timeout|{"severity":"error","msg":"payment refused"}"#.to_string()
        )]
    );

    // Groups go with their last subscriber; the topic with its last one.
    for b in [e1, e2] {
        h.send(
            b,
            &json!({"type": "stop_log_stream", "container_id": "web"}),
        );
    }
    assert_eq!(groups(&h), 1);
    h.input(Input::Closed { conn: out });
    assert_eq!(groups(&h), 0);
    h.input(Input::Closed { conn: plain });
    assert!(h.hub.state().topics.get(&web_key()).is_none());
}

#[test]
fn waiting_filtered_subscribers_get_filtered_history_and_a_stop_notice() {
    let mut h = local_hub();
    let b = browser(&mut h);
    start(&mut h, b, json!({"pattern": "^never matches$"}));
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: mixed(),
    });
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: mixed(),
    });
    assert!(
        got_lines(&mut h, b).is_empty(),
        "a filter matching nothing sends nothing"
    );
    h.docker(DockerEvent::LogEnded {
        follow_id: 1,
        container_id: "a".repeat(64),
        reason: "container stopped".into(),
        engine_lost: false,
    });
    let v = h.take(b);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["type"], "log_stream_stopped");
    assert!(
        h.hub
            .session(b)
            .unwrap()
            .topics
            .iter()
            .all(|t| { h.hub.state().topics.key_of(*t) != Some(&web_key()) })
    );
}

#[test]
fn bad_log_filters_get_errors_and_change_nothing() {
    let mut h = local_hub();
    let b = browser(&mut h);
    for (filter, says) in [
        (json!({"pattern": "(unclosed"}), "invalid filter pattern"),
        (json!({"pattern": r"(a)\1"}), "invalid filter pattern"),
        (json!({"pattern": "x".repeat(1025)}), "too long"),
        (json!({"levels": ["loud"]}), "unknown level"),
        (json!({"stream": "both"}), "stream"),
        (json!("error"), "must be an object"),
    ] {
        h.send(
            b,
            &json!({"type": "start_log_stream", "container_id": "web", "filter": filter, "request_id": "q"}),
        );
        let v = h.take(b);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0]["type"], "error");
        assert_eq!(v[0]["request_id"], "q");
        assert!(v[0]["message"].as_str().unwrap().contains(says), "{v:?}");
    }
    assert!(
        h.hub.state().topics.get(&web_key()).is_none(),
        "no stream was started"
    );
    // Streaming with one filter, asking for another: refused, not switched.
    start(&mut h, b, json!({"levels": ["error"]}));
    start(&mut h, b, json!({"levels": ["error"]}));
    assert!(h.take(b).is_empty(), "the same again is a no-op");
    start(&mut h, b, json!({"levels": ["warn"]}));
    let v = h.take(b);
    assert!(
        v[0]["message"]
            .as_str()
            .unwrap()
            .contains("stop_log_stream first"),
        "{v:?}"
    );
}

#[test]
fn distinct_filters_are_bounded_per_container_and_per_socket() {
    let mut h = local_hub();
    let b = browser(&mut h);
    let max = crate::hub::MAX_FILTERS_PER_CONTAINER;
    for i in 0..max {
        let c = browser(&mut h);
        start(&mut h, c, json!({"pattern": format!("n{i}")}));
    }
    start(&mut h, b, json!({"pattern": "one more"}));
    let v = h.take(b);
    assert!(
        v[0]["message"]
            .as_str()
            .unwrap()
            .contains("distinct filters"),
        "{v:?}"
    );
    // An existing filter can still be joined.
    start(&mut h, b, json!({"pattern": "n7"}));
    assert!(h.take(b).iter().all(|v| v["type"] != "error"));

    let per_socket = crate::hub::MAX_FILTERED_STREAMS_PER_SOCKET;
    let ids: Vec<String> = (0..=per_socket).map(|i| format!("{i:064x}")).collect();
    let mut h = Harness::new("server_id = \"local\"\n");
    h.docker(DockerEvent::Up {
        containers: ids
            .iter()
            .map(|id| container(id, &format!("c{id}")))
            .collect(),
    });
    let b = browser(&mut h);
    for (i, id) in ids.iter().enumerate() {
        h.send(
            b,
            &json!({"type": "start_log_stream", "container_id": id, "filter": {"levels": ["error"]}}),
        );
        let errors: Vec<Value> = h
            .take(b)
            .into_iter()
            .filter(|v| v["type"] == "error")
            .collect();
        assert_eq!(errors.is_empty(), i < per_socket, "{i}: {errors:?}");
    }
}

/// Opens a socket of `dialect` on `endpoint` (as the loop does after the
/// upgrade chose it from the query).
fn open_as(h: &mut Harness, endpoint: Endpoint, dialect: crate::protocol::Dialect) -> ConnId {
    let conn = 900 + h.hub.session_count();
    h.out.open(conn);
    h.input(Input::Opened {
        conn,
        serial: conn as u64,
        endpoint,
        dialect,
        target: None,
        claims: None,
        peer: None,
    });
    conn
}

#[test]
fn every_wire_is_encoded_once_per_frame_and_binary_requests_work() {
    use crate::protocol::Dialect;
    let mut h = local_hub();
    let mut socks = Vec::new();
    for (endpoint, dialect) in [
        (Endpoint::Browser, Dialect::Json),
        (Endpoint::SocketIo, Dialect::SocketIo),
        (Endpoint::Browser, Dialect::MsgPack),
        (Endpoint::SocketIo, Dialect::SocketIoMsgPack),
    ] {
        for _ in 0..2 {
            let c = open_as(&mut h, endpoint, dialect);
            let start = json!({"type": "start_log_stream", "container_id": "web", "tail": 0});
            match dialect {
                Dialect::Json => h.send(c, &start),
                Dialect::SocketIo => {
                    h.send_text(c, "40");
                    h.send_text(
                        c,
                        r#"42["start_log_stream",{"container_id":"web","tail":0}]"#,
                    );
                }
                Dialect::MsgPack => {
                    let b = rmp_serde::to_vec(&start).unwrap();
                    h.input(Input::Binary { conn: c, data: &b });
                }
                Dialect::SocketIoMsgPack => {
                    let connect = rmp_serde::to_vec(&json!({"type": 0, "nsp": "/"})).unwrap();
                    h.input(Input::Binary {
                        conn: c,
                        data: &connect,
                    });
                    let ev = rmp_serde::to_vec(&json!({"type": 2, "nsp": "/",
                        "data": ["start_log_stream", {"container_id": "web", "tail": 0}]}))
                    .unwrap();
                    h.input(Input::Binary { conn: c, data: &ev });
                }
            }
            socks.push((c, dialect));
        }
    }
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: vec![],
    });
    for (c, _) in &socks {
        h.out.take_texts(*c);
    }
    let before = h.stats.log_frames_encoded;
    h.docker(DockerEvent::LogLines {
        follow_id: 1,
        container_id: "a".repeat(64),
        lines: mixed(),
    });
    assert_eq!(
        h.stats.log_frames_encoded - before,
        4,
        "one encode per wire"
    );
    for (c, dialect) in socks {
        let frames = std::mem::take(&mut h.out.conns.get_mut(&c).unwrap().frames);
        assert_eq!(frames.len(), 1, "{dialect:?}");
        let f = &frames[0];
        let payload = crate::ws::frame_payload(f);
        let v: Value = match dialect {
            Dialect::Json => serde_json::from_slice(payload).unwrap(),
            Dialect::SocketIo => {
                let t = std::str::from_utf8(payload).unwrap();
                serde_json::from_str::<Value>(t.strip_prefix("42").unwrap()).unwrap()[1].clone()
            }
            Dialect::MsgPack => rmp_serde::from_slice(payload).unwrap(),
            Dialect::SocketIoMsgPack => {
                let p: Value = rmp_serde::from_slice(payload).unwrap();
                assert_eq!(
                    (p["type"].as_u64(), p["data"][0].as_str()),
                    (Some(2), Some("log_update"))
                );
                p["data"][1].clone()
            }
        };
        assert_eq!(
            f[0] == 0x82,
            matches!(dialect, Dialect::MsgPack | Dialect::SocketIoMsgPack)
        );
        assert!(
            v["log"].as_str().unwrap().contains("ERROR db timeout"),
            "{dialect:?}: {v}"
        );
    }
}
