//! Container alert rules through the daemon, against the real engine of
//! `scripts/docker-env.sh` (DOCKER_HOST): a non-zero exit fires
//! `container_exited`, a stop asked through `docker_command` does not, and
//! `log_match` fires on a followed container's live lines; both show on
//! `GET /api/v1/alerts`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

macro_rules! need_docker {
    () => {
        if docker_host().is_none() {
            eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
            return;
        }
    };
}

/// Every message until (and without) the next `pong`: asks with a `ping`,
/// so everything the daemon queued before it is in the answer.
fn drain_until_pong(ws: &mut Ws) -> Vec<Value> {
    send_json(ws, &json!({"type": "ping"}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no pong; saw {seen:?}");
        if let Some(m) = next_json(ws, left) {
            if m["type"] == "pong" {
                return seen;
            }
            seen.push(m);
        }
    }
}

/// Waits for the daemon to announce container `id` as running (it must
/// know a container before a request can name it).
fn wait_running(ws: &mut Ws, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{id} not announced running");
        let m = wait_type(ws, "container_state_change", left);
        if m["container"]["id"] == id && m["container"]["state"] == "running" {
            return;
        }
    }
}

/// The next `alert` about container `name`, skipping other messages.
fn alert_for(ws: &mut Ws, name: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no alert for {name} within {within:?}");
        let m = wait_type(ws, "alert", left);
        if m["data"]["container_name"] == name {
            return m["data"].clone();
        }
    }
}

#[test]
fn exits_and_log_lines_fire_but_a_requested_stop_does_not() {
    need_docker!();
    let crash = unique_name("crash");
    let stopped = unique_name("stopped");
    let chatty = unique_name("chatty");
    let d = Daemon::start(&format!(
        "[[alerts]]\nrule = \"container_exited != 0\"\n\
         [[alerts]]\nname = \"boom\"\nrule = 'log_match \"boom \\d+\" in \"{chatty}\"'\n"
    ));
    // Containers made before the engine's first table are not changes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.healthz()["docker"] != "up" {
        assert!(Instant::now() < deadline, "docker not up:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    let snap = wait_type(&mut ws, "alerts", Duration::from_secs(5));
    assert_eq!(snap["firing"], json!([]));

    // A crash: exit code 3.
    let (_c1, crash_id) = run_container(&crash, &[], "sleep 1; exit 3");
    let a = alert_for(&mut ws, &crash, Duration::from_secs(30));
    assert_eq!(a["state"], "firing");
    assert_eq!(a["metric"], "container_exited");
    assert_eq!(a["value"], 3.0);
    assert_eq!(a["container_id"], crash_id.as_str());

    // A stop through dockwire: the container exits 143, and no alert.
    let (_c2, stopped_id) = run_container(&stopped, &[], "trap 'exit 143' TERM; sleep 300 & wait");
    wait_running(&mut ws, &stopped_id);
    send_json(
        &mut ws,
        &json!({"type": "docker_command", "action": "stop", "container_id": stopped}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{stopped} did not exit");
        let m = wait_type(&mut ws, "container_state_change", left);
        if m["container"]["id"] == stopped_id && m["container"]["state"] == "exited" {
            assert_eq!(m["container"]["exit_code"], 143, "{m}");
            break;
        }
    }
    // An alert would be queued with the state change, before the pong.
    let after = drain_until_pong(&mut ws);
    assert!(
        !after
            .iter()
            .any(|m| m["type"] == "alert" && m["data"]["container_name"] == stopped.as_str()),
        "a stop asked through dockwire fired: {after:?}"
    );

    // log_match on a followed container's live lines.
    let (_c3, chatty_id) = run_container(
        &chatty,
        &[],
        "i=0; while true; do i=$((i+1)); echo boom $i; sleep 1; done",
    );
    wait_running(&mut ws, &chatty_id);
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": chatty, "tail": 0}),
    );
    let a = alert_for(&mut ws, &chatty, Duration::from_secs(30));
    assert_eq!(a["state"], "firing");
    assert_eq!(a["rule"], "boom");
    assert!(a["message"].as_str().unwrap().contains("boom "), "{a}");

    let (status, body) = http_get(d.addr, "/api/v1/alerts");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["firing"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["container_name"].as_str())
        .collect();
    assert!(
        names.contains(&crash.as_str()) && names.contains(&chatty.as_str()),
        "{v}"
    );
    assert!(!names.contains(&stopped.as_str()), "{v}");
}
