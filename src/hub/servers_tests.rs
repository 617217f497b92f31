//! In-memory tests of SPEC 6 (every server on one socket): the server
//! directory, an agent's containers, logs, stats and commands through the hub.

use std::time::Duration;

use serde_json::{Value, json};

use super::tests::{Harness, agent_config};
use super::*;
use crate::stats::Endpoint;

fn hub() -> Harness {
    Harness::new(&format!("server_id = \"local\"\n{}", agent_config()))
}

/// A browser with its greeting taken.
fn browser(h: &mut Harness) -> ConnId {
    let b = h.open(Endpoint::Browser, None);
    h.take(b);
    b
}

/// An agent that announced Docker and sent a table of two containers, in two chunks.
fn docker_agent(h: &mut Harness) -> ConnId {
    let a = h.agent();
    h.send(
        a,
        &json!({"type": "hello", "name": "whatever", "version": "1.2", "capabilities": ["docker", "metrics"]}),
    );
    let web = json!({"id": "aaaa1111", "name": "web", "image": "nginx", "state": "running",
        "status": "Up 1 minute", "created": "2026-01-01T00:00:00Z", "labels": {},
        "started_at": "2026-01-01T00:00:01Z", "exit_code": null, "health": "healthy"});
    h.send(
        a,
        &json!({"type": "containers", "containers": [web], "more": true}),
    );
    let db = json!({"id": "bbbb2222", "name": "db", "state": "exited"});
    h.send(a, &json!({"type": "containers", "containers": [db]}));
    assert!(h.take(a).is_empty(), "no error for a good table");
    a
}

fn of_type<'a>(msgs: &'a [Value], t: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == t).collect()
}

#[test]
fn servers_are_listed_and_their_changes_broadcast() {
    let mut h = hub();
    let b = browser(&mut h);
    h.send(b, &json!({"type": "list_servers", "request_id": "r1"}));
    let r = h.take(b);
    assert_eq!(r[0]["type"], "servers");
    assert_eq!(r[0]["request_id"], "r1");
    let list = r[0]["servers"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["server_id"], "local");
    assert_eq!(list[0]["online"], true);
    assert_eq!(list[1]["server_id"], "srv-1");
    assert_eq!(list[1]["name"], "web-1");
    assert_eq!(list[1]["online"], false);
    assert_eq!(list[1]["last_seen"], Value::Null);

    let a = docker_agent(&mut h);
    let changes = h.take(b);
    let changes = of_type(&changes, "server_state_change");
    // Online, then the hello's capabilities; the configured name wins.
    assert_eq!(changes.len(), 2, "{changes:?}");
    let last = &changes[1]["server"];
    assert_eq!(last["online"], true);
    assert_eq!(last["name"], "web-1");
    assert_eq!(last["capabilities"], json!(["docker", "metrics"]));
    assert_eq!(last["docker"], "up");
    assert_eq!(last["version"], "1.2");
    assert!(last["last_seen"].as_str().unwrap().ends_with('Z'));

    // Docker down on the agent: the server says so.
    h.send(
        a,
        &json!({"type": "docker_status", "up": false, "reason": "permission denied"}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["server"]["docker"], "down");
    assert_eq!(r[0]["server"]["docker_error"], "permission denied");

    // The agent goes away: offline for everyone.
    h.input(Input::Closed { conn: a });
    let r = h.take(b);
    assert_eq!(r[0]["type"], "server_state_change");
    assert_eq!(r[0]["server"]["online"], false);
}

#[test]
fn an_agents_containers_reach_subscribers_with_server_id() {
    let mut h = hub();
    let a = docker_agent(&mut h);
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "subscribe_containers", "server_id": "srv-1", "request_id": "q"}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "initial_state");
    assert_eq!(r[0]["server_id"], "srv-1");
    assert_eq!(r[0]["request_id"], "q");
    let names: Vec<&str> = r[0]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "web"], "both chunks, sorted by name");
    assert_eq!(r[0]["containers"][1]["health"], "healthy");

    let mut c = json!({"id": "aaaa1111", "name": "web", "state": "exited", "exit_code": 137});
    h.send(
        a,
        &json!({"type": "container_state_change", "container": c}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "container_state_change");
    assert_eq!(r[0]["server_id"], "srv-1");
    assert_eq!(r[0]["container"]["exit_code"], 137);
    c["state"] = json!("removed");
    h.send(
        a,
        &json!({"type": "container_state_change", "container": c}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["container"]["state"], "removed");
    assert_eq!(
        h.hub.state().containers_of("srv-1").unwrap().len(),
        1,
        "removed from the table"
    );
    // Another server's table is not this browser's business until it asks.
    h.send(
        b,
        &json!({"type": "unsubscribe_containers", "server_id": "srv-1"}),
    );
    h.send(a, &json!({"type": "container_state_change", "container": {"id": "cccc", "name": "x", "state": "created"}}));
    assert!(h.take(b).is_empty());
    // Unknown servers: an error echoing the request id.
    h.send(
        b,
        &json!({"type": "subscribe_containers", "server_id": "nope", "request_id": "z"}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "error");
    assert_eq!(r[0]["request_id"], "z");
}

#[test]
fn bad_agent_tables_are_refused_and_change_nothing() {
    let mut h = hub();
    let a = docker_agent(&mut h);
    let big = "x".repeat(super::servers::MAX_CONTAINER_JSON);
    h.send(
        a,
        &json!({"type": "containers", "containers": [{"id": "dd", "name": big, "state": "running"}]}),
    );
    let r = h.take(a);
    assert_eq!(r[0]["type"], "error", "{r:?}");
    h.send(a, &json!({"type": "containers", "containers": "no"}));
    h.send(
        a,
        &json!({"type": "containers", "containers": [{"name": "no id"}]}),
    );
    h.send(
        a,
        &json!({"type": "container_stats", "stats": [{"cpu_percent": 1}]}),
    );
    h.send(a, &json!({"type": "docker_status"}));
    assert_eq!(of_type(&h.take(a), "error").len(), 4);
    assert_eq!(h.hub.state().containers_of("srv-1").unwrap().len(), 2);
    // More than the cap in chunks: the whole table is refused.
    let many: Vec<Value> = (0..=MAX_REMOTE_CONTAINERS)
        .map(|i| json!({"id": format!("id{i}"), "name": format!("n{i}"), "state": "running"}))
        .collect();
    for chunk in many.chunks(500) {
        h.send(
            a,
            &json!({"type": "containers", "containers": chunk, "more": true}),
        );
    }
    h.send(a, &json!({"type": "containers", "containers": []}));
    assert_eq!(of_type(&h.take(a), "error").len(), 1);
    assert_eq!(
        h.hub.state().containers_of("srv-1").unwrap().len(),
        2,
        "the refused table left the old one in place"
    );
    // A request id past 64 bytes is an error, not echoed.
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "list_servers", "request_id": "r".repeat(65)}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "error");
    assert!(r[0].get("request_id").is_none());
}

#[test]
fn one_agent_follower_serves_every_browser_in_order() {
    let mut h = hub();
    let a = docker_agent(&mut h);
    let b1 = browser(&mut h);
    let b2 = browser(&mut h);
    h.send(
        b1,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web", "tail": 1}),
    );
    let asked = h.take(a);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["type"], "subscribe_logs");
    assert_eq!(asked[0]["container_id"], "aaaa1111");
    h.send(
        b2,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "aaaa1111", "tail": 5}),
    );
    assert!(h.take(a).is_empty(), "one follower per container");
    let lines = |v: &[&str]| -> Value {
        Value::from(
            v.iter()
                .map(
                    |l| json!({"stream": "stdout", "timestamp": "2026-01-01T00:00:00Z", "line": l}),
                )
                .collect::<Vec<_>>(),
        )
    };
    // History in two chunks; nobody is served before the last.
    h.send(
        a,
        &json!({"type": "log_batch", "container_id": "aaaa1111", "history": true, "lines": lines(&["h1", "h2"])}),
    );
    assert!(h.take(b1).is_empty());
    h.send(
        a,
        &json!({"type": "log_batch", "container_id": "aaaa1111", "history": true, "last": true, "lines": lines(&["h3"])}),
    );
    let r1 = h.take(b1);
    assert_eq!(r1[0]["log"], "h3\n", "tail 1");
    assert_eq!(r1[0]["server_id"], "srv-1");
    assert_eq!(h.take(b2)[0]["log"], "h1\nh2\nh3\n");
    h.send(
        a,
        &json!({"type": "log_batch", "container_id": "aaaa1111", "lines": lines(&["l1", "l2"])}),
    );
    for b in [b1, b2] {
        let r = h.take(b);
        assert_eq!(r[0]["type"], "log_update");
        assert_eq!(r[0]["log"], "l1\nl2\n");
    }
    h.send(
        b1,
        &json!({"type": "stop_log_stream", "server_id": "srv-1", "container_id": "web"}),
    );
    assert_eq!(h.take(b1)[0]["type"], "log_stream_stopped");
    assert!(h.take(a).is_empty(), "b2 still follows");
    h.send(
        b2,
        &json!({"type": "stop_log_stream", "server_id": "srv-1", "container_id": "web"}),
    );
    let r = h.take(a);
    assert_eq!(r[0]["type"], "unsubscribe_logs");
    // The agent's container stops: subscribers are told.
    h.send(
        b1,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web"}),
    );
    h.send(
        a,
        &json!({"type": "log_stream_stopped", "container_id": "aaaa1111", "message": "container stopped"}),
    );
    let r = h.take(b1);
    let stopped = of_type(&r, "log_stream_stopped");
    assert_eq!(stopped[0]["server_id"], "srv-1");
    assert_eq!(stopped[0]["message"], "container stopped");
    // Logs of an offline agent's container: a clear error.
    h.input(Input::Closed { conn: a });
    h.take(b1);
    h.send(
        b1,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web"}),
    );
    let r = h.take(b1);
    assert!(
        r[0]["message"].as_str().unwrap().contains("offline"),
        "{r:?}"
    );
    assert_eq!(
        h.topic_count(),
        3,
        "no log topic is left: containers, metrics, servers"
    );
}

#[test]
fn stats_are_sampled_only_while_someone_subscribes() {
    let mut h = hub();
    let a = docker_agent(&mut h);
    let b = browser(&mut h);
    h.tick(Duration::from_millis(250));
    assert!(h.take(a).is_empty(), "nobody subscribed: no sampling");
    h.send(
        b,
        &json!({"type": "subscribe_containers", "server_id": "srv-1"}),
    );
    h.take(b);
    h.tick(Duration::from_millis(250));
    let r = h.take(a);
    assert_eq!(r[0]["type"], "subscribe_stats");
    assert!(r[0]["interval_ms"].as_u64().unwrap() > 0);
    h.send(
        a,
        &json!({"type": "container_stats", "stats": [{"id": "aaaa1111", "cpu_percent": 12.5, "memory_used": 10, "memory_limit": 100, "net_rx_bytes": 1, "net_tx_bytes": 2}]}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "container_stats");
    assert_eq!(r[0]["server_id"], "srv-1");
    assert_eq!(r[0]["stats"][0]["cpu_percent"], 12.5);
    h.input(Input::Closed { conn: b });
    h.tick(Duration::from_millis(250));
    assert_eq!(h.take(a)[0]["type"], "unsubscribe_stats");
}

#[test]
fn remote_docker_commands_are_accepted_then_answered_with_the_request_id() {
    let mut h = hub();
    let a = docker_agent(&mut h);
    let b = browser(&mut h);
    h.send(
        b,
        &json!({"type": "docker_command", "server_id": "srv-1", "action": "restart", "container_id": "web", "request_id": "k"}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "command_accepted");
    assert_eq!(r[0]["request_id"], "k");
    let sent = h.take(a);
    assert_eq!(sent[0]["type"], "docker_command");
    assert_eq!(sent[0]["action"], "restart");
    assert_eq!(sent[0]["command_id"], r[0]["command_id"]);
    h.send(
        a,
        &json!({"type": "docker_response", "command_id": sent[0]["command_id"], "success": true, "message": "Container restarted"}),
    );
    let r = h.take(b);
    assert_eq!(r[0]["type"], "docker_response");
    assert_eq!(r[0]["request_id"], "k");
    assert_eq!(r[0]["server_id"], "srv-1");
}

#[test]
fn agent_warnings_are_rate_limited_and_counted() {
    let mut w = WarnBudget::default();
    let t0 = std::time::Instant::now();
    assert_eq!(w.allow(t0), Some(0));
    assert_eq!(w.allow(t0 + Duration::from_secs(1)), None);
    assert_eq!(w.allow(t0 + Duration::from_secs(2)), None);
    assert_eq!(
        w.allow(t0 + super::agents::WARN_EVERY + Duration::from_secs(1)),
        Some(2),
        "the next line says how many were left out"
    );
}

#[test]
fn the_fuzz_seed_for_remote_servers_keeps_the_invariants() {
    // fuzz/corpus/hub_inputs/seed04: an agent with Docker, its table in
    // chunks, browsers of both dialects on its containers, logs and stats,
    // a remote command, the engine going down and the agent leaving.
    super::drive_hub(include_bytes!("../../fuzz/corpus/hub_inputs/seed04"));
}

#[test]
fn remote_containers_are_filtered_in_the_hub() {
    let mut h = hub();
    let a = docker_agent(&mut h);
    let errors = browser(&mut h);
    let all = browser(&mut h);
    h.send(
        errors,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web", "tail": 0,
                "filter": {"levels": ["error"], "stream": "stderr"}}),
    );
    h.send(
        all,
        &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": "web", "tail": 0}),
    );
    let asked = h.take(a);
    assert_eq!(
        of_type(&asked, "subscribe_logs").len(),
        1,
        "one follower on the agent"
    );
    assert!(
        asked[0].get("filter").is_none(),
        "the agent is not asked to filter"
    );
    h.send(
        a,
        &json!({"type": "log_batch", "container_id": "aaaa1111", "history": true, "last": true, "lines": []}),
    );
    let line = |stream: &str, l: &str| json!({"stream": stream, "timestamp": "2026-01-01T00:00:00Z", "line": l});
    h.send(
        a,
        &json!({"type": "log_batch", "container_id": "aaaa1111", "lines": [
            line("stdout", "INFO ok"), line("stderr", "ERROR disk full"),
            line("stdout", "ERROR on stdout"), line("stderr", "WARN slow")]}),
    );
    let e = h.take(errors);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["log"], "ERROR disk full\n");
    assert_eq!(e[0]["server_id"], "srv-1");
    let every = h.take(all);
    assert_eq!(
        every[0]["log"],
        "INFO ok\nERROR disk full\nERROR on stdout\nWARN slow\n"
    );
    assert_eq!(
        e[0]["seq"].as_u64().unwrap() + 2,
        every[0]["seq"].as_u64().unwrap(),
        "seq counts the lines the filter dropped"
    );
}
