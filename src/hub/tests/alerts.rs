//! Alert rules driven in memory: each rule fires and resolves, a stop asked
//! through dockwire does not fire, `log_match` fires at most once a minute,
//! and browsers get the `alerts` snapshot right after `initial_state`.

use super::*;
use crate::feed::DockerRequest;
use crate::protocol::model::Container;

/// A hub with a Docker handle whose requests wait in the returned receiver.
fn with_docker(toml_text: &str) -> (Harness, tokio::sync::mpsc::UnboundedReceiver<DockerRequest>) {
    let f: FileConfig = toml::from_str(toml_text).unwrap();
    let config = Config::from_file(f, &Overrides::default()).unwrap();
    let now = Instant::now();
    let soft = config.max_queued_bytes;
    let (handle, rx) = crate::feed::docker::DockerHandle::detached();
    let h = Harness {
        hub: Hub::new(config, Some(handle), now),
        out: MemoryOutbox::new(soft),
        stats: Stats::default(),
        now,
        next_conn: 1,
    };
    (h, rx)
}

fn rule(r: &str) -> String {
    format!("server_id = \"local\"\n[[alerts]]\nrule = '{r}'\n")
}

/// The `data` of every `alert` message among `frames`.
fn alerts(frames: Vec<Value>) -> Vec<Value> {
    frames
        .into_iter()
        .filter(|v| v["type"] == "alert")
        .map(|v| v["data"].clone())
        .collect()
}

fn firing(h: &Harness) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&h.hub.state().alerts_json()).unwrap();
    v["firing"].as_array().unwrap().clone()
}

fn recent(h: &Harness) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&h.hub.state().alerts_json()).unwrap();
    v["recent"].as_array().unwrap().clone()
}

fn disk_sample(used: u64, total: u64) -> crate::protocol::model::Metrics {
    serde_json::from_value(json!({
        "cpu_percent": 1.0, "memory_percent": 1.0, "memory_used": 1, "memory_total": 2,
        "disk_usage": [
            {"mount": "/", "used": 10, "total": 100},
            {"mount": "/data", "used": used, "total": total},
            {"mount": "/empty", "used": 0, "total": 0},
        ],
        "network": [], "load_average": [0.0, 0.0, 0.0], "timestamp": "t",
    }))
    .unwrap()
}

fn state(c: &Container, state: &str, exit_code: Option<i64>) -> Container {
    Container {
        state: state.into(),
        exit_code,
        ..c.clone()
    }
}

/// A browser that has read its greeting.
fn browser(h: &mut Harness) -> ConnId {
    let b = h.open(Endpoint::Browser, None);
    h.take(b);
    b
}

#[test]
fn disk_alert_fires_on_the_fullest_mount_after_its_hold_and_resolves() {
    let mut h = Harness::new(&rule("disk_percent > 90 for 5m"));
    let b = browser(&mut h);
    let metrics = |h: &mut Harness, used| {
        h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(
            disk_sample(used, 200),
        )))
    };
    metrics(&mut h, 190);
    assert!(alerts(h.take(b)).is_empty(), "the hold has not passed");
    h.now += Duration::from_secs(299);
    metrics(&mut h, 190);
    assert!(alerts(h.take(b)).is_empty());
    h.now += Duration::from_secs(1);
    metrics(&mut h, 190);
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "firing");
    assert_eq!(a[0]["metric"], "disk_percent");
    assert_eq!(a[0]["rule"], "disk_percent > 90 for 5m");
    assert_eq!(a[0]["value"], 95.0);
    assert_eq!(a[0]["threshold"], 90.0);
    assert_eq!(a[0]["server_id"], "local");
    assert!(a[0]["message"].as_str().unwrap().contains("/data"), "{a:?}");
    assert!(a[0]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(a[0]["started_at"].is_string());
    assert!(a[0].get("container_id").is_none());
    let id = a[0]["id"].clone();
    // Still above: no second alert.
    metrics(&mut h, 199);
    assert!(alerts(h.take(b)).is_empty());
    assert_eq!(firing(&h).len(), 1);
    assert_eq!(firing(&h)[0]["id"], id);
    metrics(&mut h, 100);
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["state"], "resolved");
    assert_eq!(a[0]["id"], id, "the same alert resolves");
    assert!(firing(&h).is_empty());
    let r = recent(&h);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["state"], "resolved", "recent is newest first");
    assert_eq!(r[1]["state"], "firing");
}

#[test]
fn recent_changes_are_bounded() {
    let mut h = Harness::new(&rule("cpu_percent > 50 for 0s"));
    for i in 0..1100 {
        let mut m = sample("t");
        m.cpu_percent = if i % 2 == 0 { 90.0 } else { 10.0 };
        h.input(Input::Feed(crate::feed::FeedEvent::LocalMetrics(m)));
    }
    assert_eq!(recent(&h).len(), super::super::alerts::MAX_RECENT);
}

#[test]
fn exited_non_zero_fires_but_a_stop_asked_through_dockwire_does_not() {
    let (mut h, mut docker) = with_docker(&rule("container_exited != 0"));
    let web = container(&"a".repeat(64), "web");
    let db = container(&"b".repeat(64), "db");
    h.docker(DockerEvent::Up {
        containers: vec![
            web.clone(),
            db.clone(),
            state(&container(&"c".repeat(64), "old"), "exited", Some(3)),
        ],
    });
    let b = browser(&mut h);
    assert!(
        firing(&h).is_empty(),
        "containers that exited before are not alerted"
    );
    // Exit code 0: nothing.
    h.docker(DockerEvent::Changed(state(&web, "exited", Some(0))));
    assert!(alerts(h.take(b)).is_empty());
    h.docker(DockerEvent::Changed(web.clone()));
    h.docker(DockerEvent::Changed(state(&web, "exited", Some(2))));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "firing");
    assert_eq!(a[0]["container_id"], web.id.as_str());
    assert_eq!(a[0]["container_name"], "web");
    assert_eq!(a[0]["value"], 2.0);
    assert!(
        a[0]["message"].as_str().unwrap().contains("code 2"),
        "{a:?}"
    );
    h.docker(DockerEvent::Changed(web.clone()));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["state"], "resolved");
    // A stop asked through docker_command: the 143 that follows is expected.
    h.send(
        b,
        &json!({"type": "docker_command", "action": "stop", "container_id": "db"}),
    );
    assert!(matches!(
        docker.try_recv(),
        Ok(DockerRequest::Action { .. })
    ));
    h.docker(DockerEvent::Changed(state(&db, "exited", Some(143))));
    assert!(
        alerts(h.take(b)).is_empty(),
        "a requested stop does not fire"
    );
    // Long after the request, a crash fires again.
    h.docker(DockerEvent::Changed(db.clone()));
    h.tick(Duration::from_secs(61));
    h.docker(DockerEvent::Changed(state(&db, "exited", Some(137))));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["container_name"], "db");
    // Removing the container resolves its alert and leaves no state.
    h.docker(DockerEvent::Removed { id: db.id.clone() });
    let a = alerts(h.take(b));
    assert_eq!(a[0]["state"], "resolved");
    assert!(firing(&h).is_empty());
}

#[test]
fn unhealthy_fires_after_its_hold_and_resolves_when_healthy() {
    let mut h = Harness::new(&rule("container_unhealthy for 1m"));
    let web = container(&"a".repeat(64), "web");
    h.docker(DockerEvent::Up {
        containers: vec![web.clone()],
    });
    let b = browser(&mut h);
    let health = |s: &str| Container {
        health: Some(s.into()),
        ..web.clone()
    };
    h.docker(DockerEvent::Changed(health("unhealthy")));
    assert!(alerts(h.take(b)).is_empty());
    h.tick(Duration::from_secs(30));
    assert!(alerts(h.take(b)).is_empty());
    h.tick(Duration::from_secs(30));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "firing");
    assert_eq!(a[0]["metric"], "container_unhealthy");
    assert_eq!(a[0]["container_name"], "web");
    h.tick(Duration::from_secs(60));
    assert!(alerts(h.take(b)).is_empty(), "fires once");
    h.docker(DockerEvent::Changed(health("healthy")));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["state"], "resolved");
    // Unhealthy for less than the hold: nothing.
    h.docker(DockerEvent::Changed(health("unhealthy")));
    h.tick(Duration::from_secs(20));
    h.docker(DockerEvent::Changed(health("healthy")));
    h.tick(Duration::from_secs(60));
    assert!(alerts(h.take(b)).is_empty());
    assert!(firing(&h).is_empty());
}

#[test]
fn restarts_fire_past_the_count_in_the_window_and_resolve_when_it_passes() {
    let mut h = Harness::new(&rule("container_restarts > 3 in 10m"));
    let web = container(&"a".repeat(64), "web");
    h.docker(DockerEvent::Up {
        containers: vec![web.clone()],
    });
    let b = browser(&mut h);
    let restart = |h: &mut Harness, i: u32| {
        h.docker(DockerEvent::Changed(state(&web, "exited", Some(1))));
        h.docker(DockerEvent::Changed(Container {
            started_at: Some(format!("2026-01-01T00:01:{i:02}Z")),
            ..web.clone()
        }));
        h.tick(Duration::from_secs(10));
    };
    for i in 0..3 {
        restart(&mut h, i);
    }
    assert!(
        alerts(h.take(b)).is_empty(),
        "3 restarts are not more than 3"
    );
    restart(&mut h, 3);
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "firing");
    assert_eq!(a[0]["value"], 4.0);
    assert_eq!(a[0]["container_id"], web.id.as_str());
    // A restart Docker did by itself with no exit seen in between (one
    // inspection after several events): a new start time counts too.
    h.docker(DockerEvent::Changed(Container {
        started_at: Some("2026-01-01T00:02:00Z".into()),
        ..web.clone()
    }));
    assert!(alerts(h.take(b)).is_empty(), "firing already");
    // 605 s after the first restart it has left the window: only the
    // restart seen as a new start time keeps the count above 3.
    h.tick(Duration::from_secs(565));
    assert!(alerts(h.take(b)).is_empty(), "still 4 or more within 10m");
    h.tick(Duration::from_secs(60));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "resolved");
}

#[test]
fn log_match_fires_at_most_once_a_minute_per_rule_and_container() {
    let (mut h, _docker) = with_docker(&format!(
        "server_id = \"local\"\n[[alerts]]\nname = \"web errors\"\nrule = '{}'\n",
        r#"log_match "ERROR \d+" in "web""#
    ));
    let web = container(&"a".repeat(64), "web");
    let db = container(&"b".repeat(64), "db");
    h.docker(DockerEvent::Up {
        containers: vec![web.clone(), db.clone()],
    });
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "start_log_stream", "container_id": "web", "tail": 0}),
    );
    h.send(
        b,
        &json!({"type": "start_log_stream", "container_id": "db", "tail": 0}),
    );
    let text = |t: &str| LogLine {
        stream: LogStream::Stdout,
        timestamp: String::new(),
        text: t.into(),
    };
    // History is old news: it does not fire.
    h.docker(DockerEvent::LogHistory {
        follow_id: 1,
        container_id: web.id.clone(),
        lines: vec![text("ERROR 1 from yesterday")],
    });
    h.docker(DockerEvent::LogHistory {
        follow_id: 2,
        container_id: db.id.clone(),
        lines: vec![],
    });
    assert!(alerts(h.take(b)).is_empty());
    let live = |h: &mut Harness, follow_id: u64, id: &str, lines: Vec<LogLine>| {
        h.docker(DockerEvent::LogLines {
            follow_id,
            container_id: id.into(),
            lines,
        })
    };
    live(
        &mut h,
        1,
        &web.id,
        vec![text("ok"), text("ERROR 42 disk"), text("ERROR 43")],
    );
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "firing");
    assert_eq!(a[0]["rule"], "web errors");
    assert_eq!(a[0]["container_name"], "web");
    assert_eq!(a[0]["value"], 2.0);
    assert!(
        a[0]["message"].as_str().unwrap().contains("ERROR 42 disk"),
        "{a:?}"
    );
    // Another container is not watched by this rule.
    live(&mut h, 2, &db.id, vec![text("ERROR 7")]);
    assert!(alerts(h.take(b)).is_empty());
    // More matches within the minute: no more alerts.
    h.tick(Duration::from_secs(30));
    live(&mut h, 1, &web.id, vec![text("ERROR 44")]);
    h.tick(Duration::from_secs(40));
    assert!(alerts(h.take(b)).is_empty(), "rate limited");
    // A quiet minute resolves it; the next match fires again.
    h.tick(Duration::from_secs(20));
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["state"], "resolved");
    live(&mut h, 1, &web.id, vec![text("ERROR 45")]);
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["state"], "firing");
}

#[test]
fn browsers_get_the_firing_alerts_right_after_initial_state() {
    let mut h = Harness::new(&rule("container_exited != 0"));
    let web = container(&"a".repeat(64), "web");
    h.docker(DockerEvent::Up {
        containers: vec![web.clone()],
    });
    let b = h.open(Endpoint::Browser, None);
    let greeting = h.take(b);
    assert_eq!(greeting[1]["type"], "initial_state");
    assert_eq!(greeting[2], json!({"type": "alerts", "firing": []}));
    h.docker(DockerEvent::Changed(state(&web, "exited", Some(1))));
    let later = h.open(Endpoint::Browser, None);
    let types: Vec<String> = h
        .take(later)
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        types[..3],
        ["connection_established", "initial_state", "alerts"]
    );
    let later = h.open(Endpoint::Browser, None);
    let snap = h.take(later)[2].clone();
    assert_eq!(snap["firing"].as_array().unwrap().len(), 1);
    let alert = &snap["firing"][0];
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["container_name"], "web");
    assert_eq!(alert["id"], firing(&h)[0]["id"]);
    // Socket.IO: an `alerts` event with the same payload, after initial_state.
    let s = h.open(Endpoint::SocketIo, None);
    h.take_raw(s);
    h.send_text(s, "40");
    let frames = h.take_raw(s);
    let at = |name: &str| {
        frames
            .iter()
            .position(|f| f.starts_with(&format!("42[\"{name}\"")))
    };
    let (init, snap) = (at("initial_state").unwrap(), at("alerts").unwrap());
    assert_eq!(snap, init + 1, "{frames:?}");
    let v: Value = serde_json::from_str(&frames[snap][2..]).unwrap();
    assert_eq!(v[1]["firing"][0]["id"], alert["id"]);
    assert!(v[1].get("type").is_none());
}

#[test]
fn alert_ids_are_stable_and_distinct() {
    let a = alert_id("r", "s", Some("c"));
    assert_eq!(a, alert_id("r", "s", Some("c")));
    assert_ne!(a, alert_id("r", "s", Some("d")));
    assert_ne!(a, alert_id("r", "s", None));
    assert_ne!(alert_id("r", "s1", None), alert_id("r", "s2", None));
}

#[test]
fn changes_while_docker_was_away_are_alerted_when_it_is_back() {
    let mut h = Harness::new(&rule("container_exited != 0"));
    let web = container(&"a".repeat(64), "web");
    let db = container(&"b".repeat(64), "db");
    h.docker(DockerEvent::Up {
        containers: vec![web.clone(), db.clone()],
    });
    let b = browser(&mut h);
    h.docker(DockerEvent::Changed(state(&db, "exited", Some(1))));
    assert_eq!(alerts(h.take(b)).len(), 1);
    h.docker(DockerEvent::Down {
        reason: "gone".into(),
    });
    // Back: web crashed meanwhile, db was removed.
    h.docker(DockerEvent::Up {
        containers: vec![state(&web, "exited", Some(139))],
    });
    let a = alerts(h.take(b));
    assert_eq!(a.len(), 2, "{a:?}");
    let of = |name: &str| {
        a.iter()
            .find(|x| x["container_name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(of("web")["state"], "firing");
    assert_eq!(of("web")["value"], 139.0);
    assert_eq!(of("db")["state"], "resolved");
    assert_eq!(firing(&h).len(), 1);
}

#[test]
fn an_agents_containers_fire_too_and_its_requested_stops_do_not() {
    let mut h = Harness::new(&format!(
        "server_id = \"local\"\n{}\n[[alerts]]\nrule = \"container_exited != 0\"\n",
        agent_config()
    ));
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
    );
    let a = h.agent();
    h.send(
        a,
        &json!({"type": "hello", "name": "x", "version": "1", "capabilities": ["docker"]}),
    );
    let web = json!({"id": "aaaa1111", "name": "web", "image": "nginx", "state": "running",
        "status": "Up", "created": "2026-01-01T00:00:00Z", "labels": {}});
    let db = json!({"id": "bbbb2222", "name": "db", "image": "pg", "state": "running",
        "status": "Up", "created": "2026-01-01T00:00:00Z", "labels": {}});
    h.send(a, &json!({"type": "containers", "containers": [web, db]}));
    h.take(a);
    h.take(b);
    let change = |h: &mut Harness, mut c: Value, state: &str, code: i64| {
        c["state"] = json!(state);
        c["exit_code"] = json!(code);
        h.send(
            a,
            &json!({"type": "container_state_change", "container": c}),
        );
    };
    change(&mut h, web.clone(), "exited", 1);
    let got = alerts(h.take(b));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["server_id"], "srv-1");
    assert_eq!(got[0]["container_name"], "web");
    // A stop relayed to the agent: its exit does not fire.
    h.send(
        b,
        &json!({"type": "docker_command", "server_id": "srv-1", "action": "stop", "container_id": "db"}),
    );
    h.take(a);
    change(&mut h, db.clone(), "exited", 143);
    assert!(alerts(h.take(b)).is_empty());
    // Removal resolves the firing one.
    h.send(
        a,
        &json!({"type": "container_state_change", "container": {"id": "aaaa1111", "state": "removed"}}),
    );
    let got = alerts(h.take(b));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["state"], "resolved");
}

#[test]
fn an_agents_new_table_alerts_what_changed_while_it_was_away() {
    let mut h = Harness::new(&format!(
        "server_id = \"local\"\n{}\n[[alerts]]\nrule = \"container_exited != 0\"\n",
        agent_config()
    ));
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "subscribe_metrics", "server_id": "srv-1"}),
    );
    let a = h.agent();
    h.send(
        a,
        &json!({"type": "hello", "name": "x", "version": "1", "capabilities": ["docker"]}),
    );
    let web = json!({"id": "aaaa1111", "name": "web", "image": "nginx", "state": "running",
        "status": "Up", "created": "2026-01-01T00:00:00Z", "labels": {}});
    h.send(
        a,
        &json!({"type": "containers", "containers": [web.clone()]}),
    );
    h.take(b);
    assert!(firing(&h).is_empty(), "a first table alerts on nothing");
    let mut crashed = web.clone();
    crashed["state"] = json!("exited");
    crashed["exit_code"] = json!(5);
    h.send(a, &json!({"type": "containers", "containers": [crashed]}));
    let got = alerts(h.take(b));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["state"].as_str(), got[0]["value"].as_f64()),
        (Some("firing"), Some(5.0))
    );
    h.send(a, &json!({"type": "containers", "containers": []}));
    let got = alerts(h.take(b));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["state"], "resolved");
    assert!(firing(&h).is_empty());
    assert!(h.take(a).is_empty(), "no error for the agent");
}
