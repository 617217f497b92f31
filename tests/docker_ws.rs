//! The Docker feed through the daemon, against the real engine started by
//! `scripts/docker-env.sh` (DOCKER_HOST): container state, shared and
//! coalesced log streams, name resolution, local container actions, and an
//! engine outage (on a second private engine, so other tests are unaffected).

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Skips loudly when no engine is configured (the README's test command always sets one).
macro_rules! need_docker {
    () => {
        if docker_host().is_none() {
            eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
            return;
        }
    };
}

fn state_change(ws: &mut Ws, id: &str, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no state {state:?} for {id} within {within:?}"
        );
        let m = wait_type(ws, "container_state_change", left);
        if m["container"]["id"] == id && m["container"]["state"] == state {
            return m;
        }
    }
}

/// Collects `log_update` lines for `id` until `pred(lines)` or the deadline.
fn collect_lines(
    ws: &mut Ws,
    id: &str,
    within: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    while Instant::now() < deadline && !done(&lines) {
        if let Some(m) = next_json(ws, Duration::from_millis(200)) {
            if m["type"] == "log_update" && m["container_id"] == id {
                let log = m["log"].as_str().unwrap();
                assert!(log.ends_with('\n'), "a frame never splits a line: {log:?}");
                lines.extend(log.lines().map(str::to_string));
            }
            assert_ne!(
                m["type"], "log_dropped",
                "a reading client must not lose lines"
            );
        }
    }
    lines
}

#[test]
fn initial_state_and_state_changes() {
    need_docker!();
    let d = Daemon::start("");
    let running = unique_name("run");
    let exited = unique_name("exit");
    let (_c1, run_id) = run_container(&running, &[], "sleep 300");
    let (_c2, exit_id) = run_container(&exited, &[], "true");
    docker(&["wait", &exited]);
    std::thread::sleep(Duration::from_millis(300));

    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "connection_established", Duration::from_secs(5));
    let init = wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    let list = init["containers"].as_array().unwrap();
    let find = |id: &str| {
        list.iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {init}"))
    };
    let r = find(&run_id);
    assert_eq!(r["state"], "running");
    assert_eq!(r["name"], running.as_str());
    assert!(r["status"].as_str().unwrap().starts_with("Up"));
    assert!(r["created"].as_str().unwrap().contains('T'));
    assert!(r["labels"].is_object());
    assert_eq!(find(&exit_id)["state"], "exited");

    // Each action, with the time from the CLI returning to the client seeing it.
    let mut timings = Vec::new();
    for (args, state) in [
        (vec!["stop", "-t", "1"], "exited"),
        (vec!["start"], "running"),
        (vec!["restart", "-t", "1"], "running"),
        (vec!["kill"], "exited"),
    ] {
        let mut a = args.clone();
        a.push(&running);
        docker(&a);
        let t = Instant::now();
        state_change(&mut ws, &run_id, state, Duration::from_secs(5));
        timings.push((args[0], t.elapsed()));
    }
    docker(&["rm", &running]);
    let t = Instant::now();
    let m = state_change(&mut ws, &run_id, "removed", Duration::from_secs(5));
    timings.push(("rm", t.elapsed()));
    assert_eq!(m["container"], json!({"id": run_id, "state": "removed"}));
    for (what, dt) in &timings {
        eprintln!("docker {what} -> container_state_change: {dt:?}");
    }
    // REST view agrees.
    let (status, body) = http_get(d.addr, "/api/v1/containers");
    assert_eq!(status, 200);
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert!(
        rest.as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == exit_id.as_str())
    );
    assert!(
        !rest
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == run_id.as_str())
    );
}

#[test]
fn shared_follower_tail_then_live_without_gap_or_duplicate() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("count");
    // Prints 1, 2, 3, ... every 20 ms.
    let (_c, id) = run_container(
        &name,
        &[],
        "i=0; while true; do i=$((i+1)); echo $i; usleep 20000; done",
    );
    std::thread::sleep(Duration::from_millis(1500));

    let mut a = connect(&d.url("/api/v1/ws"));
    wait_type(&mut a, "initial_state", Duration::from_secs(5));
    send_json(
        &mut a,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 10}),
    );
    let first = collect_lines(&mut a, &id, Duration::from_secs(5), |l| l.len() >= 30);
    let mut b = connect(&d.url("/api/v1/ws"));
    wait_type(&mut b, "initial_state", Duration::from_secs(5));
    send_json(
        &mut b,
        &json!({"type": "start_log_stream", "container_id": &id[..12], "tail": 5}),
    );
    let second = collect_lines(&mut b, &id, Duration::from_secs(5), |l| l.len() >= 30);

    for (who, lines, tail) in [("a", &first, 10), ("b", &second, 5)] {
        let nums: Vec<u64> = lines
            .iter()
            .map(|l| l.parse().unwrap_or_else(|_| panic!("{who}: {l:?}")))
            .collect();
        assert!(nums.len() >= 30, "{who}: {nums:?}");
        for w in nums.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{who}: gap or duplicate in {nums:?}");
        }
        // The history was exactly `tail` lines: the first live line came after it.
        assert!(nums[0] > 1, "{who} got more than its tail: {nums:?}");
        let _ = tail;
    }
    // One follower serves both.
    assert_eq!(d.metric("dockwire_log_followers"), Some(1.0));
    send_json(
        &mut a,
        &json!({"type": "stop_log_stream", "container_id": name}),
    );
    wait_type(&mut a, "log_stream_stopped", Duration::from_secs(5));
    assert_eq!(
        d.metric("dockwire_log_followers"),
        Some(1.0),
        "b still follows"
    );
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.metric("dockwire_log_followers") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "follower not stopped after the last subscriber left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tail_history_is_exact() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("tail");
    let (_c, id) = run_container(&name, &[], "seq 1 500; sleep 300");
    std::thread::sleep(Duration::from_millis(800));
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 7}),
    );
    let lines = collect_lines(&mut ws, &id, Duration::from_secs(3), |l| l.len() >= 7);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lines,
        (494..=500).map(|n| n.to_string()).collect::<Vec<_>>()
    );
    // tail 0: no history at all.
    let mut z = connect(&d.url("/api/v1/ws"));
    wait_type(&mut z, "initial_state", Duration::from_secs(5));
    send_json(
        &mut z,
        &json!({"type": "start_log_stream", "container_id": id, "tail": 0}),
    );
    let none = collect_lines(&mut z, &id, Duration::from_secs(1), |_| false);
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn fifty_thousand_lines_complete_and_in_order() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("flood");
    // Wait for the subscriber, then print as fast as possible.
    let (_c, id) = run_container(&name, &[], "sleep 2; seq 1 50000; sleep 300");
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 0}),
    );
    let started = Instant::now();
    let mut frames = 0u64;
    let mut next = 1u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first_at = None;
    while next <= 50_000 && Instant::now() < deadline {
        let Some(m) = next_json(&mut ws, Duration::from_millis(500)) else {
            continue;
        };
        assert_ne!(m["type"], "log_dropped");
        if m["type"] != "log_update" {
            continue;
        }
        first_at.get_or_insert_with(Instant::now);
        frames += 1;
        for l in m["log"].as_str().unwrap().lines() {
            assert_eq!(l, next.to_string(), "out of order or missing");
            next += 1;
        }
    }
    assert_eq!(next, 50_001, "all 50,000 lines arrived");
    let dt = first_at.unwrap().elapsed();
    eprintln!(
        "50,000 lines in {frames} frames, {:.0} lines/s after the first frame ({:?} since subscribing)",
        50_000.0 / dt.as_secs_f64().max(1e-6),
        started.elapsed()
    );
    assert!(frames < 50_000, "lines were coalesced into fewer frames");
    let _ = id;
}

#[test]
fn stderr_tty_and_stop_ends_stream() {
    need_docker!();
    let d = Daemon::start("");
    let plain = unique_name("stderr");
    let tty = unique_name("tty");
    let (_c1, id1) = run_container(&plain, &[], "echo to-stdout; echo to-stderr >&2; sleep 300");
    let (_c2, id2) = run_container(&tty, &["-t"], "echo tty-line; sleep 300");
    std::thread::sleep(Duration::from_millis(800));
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": plain}),
    );
    let lines = collect_lines(&mut ws, &id1, Duration::from_secs(5), |l| l.len() >= 2);
    let set: HashSet<_> = lines.iter().map(String::as_str).collect();
    assert_eq!(set, HashSet::from(["to-stdout", "to-stderr"]));
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": id2}),
    );
    let lines = collect_lines(&mut ws, &id2, Duration::from_secs(5), |l| !l.is_empty());
    assert_eq!(lines, vec!["tty-line"], "TTY output without a trailing \\r");

    docker(&["stop", "-t", "1", &plain]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = wait_type(&mut ws, "log_stream_stopped", Duration::from_secs(10));
        if m["container_id"] == id1 {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    // Starting it again restarts nothing by itself.
    docker(&["start", &plain]);
    let again = collect_lines(&mut ws, &id1, Duration::from_secs(2), |_| false);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn names_ids_and_unknown_containers() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("resolve");
    let (_c, id) = run_container(&name, &[], "echo hello-resolve; sleep 300");
    std::thread::sleep(Duration::from_millis(800));
    for reference in [
        name.clone(),
        format!("/{name}"),
        id.clone(),
        id[..12].to_string(),
    ] {
        let mut ws = connect(&d.url("/api/v1/ws"));
        wait_type(&mut ws, "initial_state", Duration::from_secs(5));
        send_json(
            &mut ws,
            &json!({"type": "start_log_stream", "container_id": reference}),
        );
        let lines = collect_lines(&mut ws, &id, Duration::from_secs(5), |l| !l.is_empty());
        assert_eq!(lines, vec!["hello-resolve"], "via {reference}");
    }
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": "no-such-container-xyz"}),
    );
    let e = wait_type(&mut ws, "error", Duration::from_secs(5));
    assert!(
        e["message"].as_str().unwrap().contains("No such container"),
        "{e}"
    );
    send_json(&mut ws, &json!({"type": "ping"}));
    wait_type(&mut ws, "pong", Duration::from_secs(5));
}

#[test]
fn local_docker_command_stop_and_start() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("action");
    // Ends on SIGTERM (a bare `sleep` as PID 1 ignores it, and `stop` then
    // waits out Docker's 10 s grace period, which a loaded machine stretches
    // past the deadlines below).
    let (_c, id) = run_container(&name, &[], "trap 'exit 0' TERM; sleep 300 & wait");
    let mut ws = connect(&d.url("/api/v1/ws"));
    let hello = wait_type(&mut ws, "connection_established", Duration::from_secs(5));
    let sid = hello["server_id"].as_str().unwrap().to_string();
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    send_json(
        &mut ws,
        &json!({"type": "docker_command", "server_id": sid, "action": "stop", "container_id": name}),
    );
    // The state change and the response may come in either order.
    let (mut response, mut exited) = (None, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while (response.is_none() || !exited) && Instant::now() < deadline {
        let Some(m) = next_json(&mut ws, Duration::from_millis(200)) else {
            continue;
        };
        if m["type"] == "docker_response" {
            response = Some(m);
        } else if m["type"] == "container_state_change"
            && m["container"]["id"] == id
            && m["container"]["state"] == "exited"
        {
            exited = true;
        }
    }
    let r = response.expect("docker_response");
    assert_eq!(r["success"], true, "{r}");
    assert!(r["command_id"].is_string());
    assert!(exited, "container_state_change to exited");
    send_json(
        &mut ws,
        &json!({"type": "docker_command", "server_id": sid, "action": "start", "container_id": id}),
    );
    let r = wait_type(&mut ws, "docker_response", Duration::from_secs(20));
    assert_eq!(r["success"], true, "{r}");
    send_json(
        &mut ws,
        &json!({"type": "docker_command", "server_id": sid, "action": "explode", "container_id": id}),
    );
    wait_type(&mut ws, "error", Duration::from_secs(5));
}

/// A second private engine (own state dir) so killing it disturbs no other test.
#[test]
fn engine_outage_and_resync() {
    need_docker!();
    let state = temp_dir("engine2");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/docker-env.sh");
    let start = || {
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .env("DOCKWIRE_TESTENV", &state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "engine start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    start();
    let env_out = Command::new("bash")
        .arg(script)
        .arg("env")
        .env("DOCKWIRE_TESTENV", &state)
        .output()
        .unwrap();
    let env_text = String::from_utf8_lossy(&env_out.stdout);
    let host = env_text
        .lines()
        .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
        .unwrap()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string();
    let d = Daemon::start_with_env("", &[("DOCKER_HOST", &host)]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.healthz()["docker"] != "up" {
        assert!(Instant::now() < deadline, "engine never up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let name = unique_name("outage");
    let image = test_image();
    Command::new("docker")
        .args([
            "-H",
            &host,
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            &image,
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done",
        ])
        .output()
        .unwrap();
    let mut ws = connect(&d.url("/api/v1/ws"));
    wait_type(&mut ws, "initial_state", Duration::from_secs(5));
    send_json(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 1000}),
    );
    // (seq, number) per line, and every log_gap; log_stream_stopped fails.
    type Until<'a> = &'a dyn Fn(&Value, &[(u64, u64)]) -> bool;
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut gaps: Vec<Value> = Vec::new();
    // Returns the message that ended it and the last line number seen.
    let mut read = |ws: &mut Ws, until: Until<'_>| -> (Value, u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = next_json(ws, left).expect("the stream goes on");
            assert_ne!(
                m["type"], "log_stream_stopped",
                "SPEC 7: resumed, not stopped: {m}"
            );
            if m["type"] == "log_gap" {
                gaps.push(m.clone());
            }
            if m["type"] == "log_update" {
                let seq = m["seq"].as_u64().expect("seq");
                let log = m["log"].as_str().unwrap();
                let nums: Vec<u64> = log.lines().map(|l| l.parse().unwrap()).collect();
                let first = seq + 1 - nums.len() as u64;
                seen.extend(
                    nums.into_iter()
                        .enumerate()
                        .map(|(i, n)| (first + i as u64, n)),
                );
            }
            if until(&m, &seen) {
                return (m, seen.last().map_or(0, |l| l.1));
            }
        }
    };
    read(&mut ws, &|m, _| m["type"] == "log_update");

    let pid: i32 = std::fs::read_to_string(state.join("dockerd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.healthz()["docker"] != "down" {
        assert!(Instant::now() < deadline, "/healthz never said down");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.metric("dockwire_docker_up"), Some(0.0));
    start();
    let (m, resumed_from) = read(&mut ws, &|m, _| m["type"] == "initial_state");
    assert!(
        m["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == name.as_str()),
        "{m}"
    );
    // The stream goes on by itself (SPEC 7): lines written before, during
    // and after the outage, each once and in order; --live-restore keeps
    // the container running and Docker its log, so no gap either.
    read(&mut ws, &|_, seen| {
        seen.last().is_some_and(|l| l.1 >= resumed_from + 40)
    });
    for w in seen.windows(2) {
        assert!(
            w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1,
            "gap or duplicate across the outage at {:?} -> {:?}",
            w[0],
            w[1]
        );
    }
    assert!(gaps.is_empty(), "no line was lost: {gaps:?}");
    assert_eq!(d.healthz()["docker"], "up");
    let _ = Command::new("docker")
        .args(["-H", &host, "rm", "-f", &name])
        .output();
    let _ = Command::new("bash")
        .arg(script)
        .arg("stop")
        .env("DOCKWIRE_TESTENV", &state)
        .output();
}

/// A busy container (lines held for coalescing) joined by a late subscriber:
/// its history and the held batch that follows must not overlap.
#[test]
fn late_subscriber_to_a_busy_stream_sees_no_duplicates() {
    need_docker!();
    let d = Daemon::start("");
    let name = unique_name("busy");
    let (_c, id) = run_container(
        &name,
        &[],
        "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); echo $i; done; sleep 300",
    );
    let mut first = connect(&d.url("/api/v1/ws"));
    wait_type(&mut first, "initial_state", Duration::from_secs(5));
    send_json(
        &mut first,
        &json!({"type": "start_log_stream", "container_id": name, "tail": 0}),
    );
    collect_lines(&mut first, &id, Duration::from_secs(10), |l| {
        l.len() >= 2000
    });
    for round in 0..5 {
        let mut late = connect(&d.url("/api/v1/ws"));
        wait_type(&mut late, "initial_state", Duration::from_secs(5));
        send_json(
            &mut late,
            &json!({"type": "start_log_stream", "container_id": name, "tail": 50}),
        );
        let lines = collect_lines(&mut late, &id, Duration::from_secs(10), |l| l.len() >= 3000);
        let nums: Vec<u64> = lines.iter().map(|l| l.parse().unwrap()).collect();
        assert!(nums.len() >= 3000, "round {round}: {} lines", nums.len());
        for w in nums.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "round {round}: gap or duplicate around {}",
                w[0]
            );
        }
    }
}
