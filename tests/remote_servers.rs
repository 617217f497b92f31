//! Every server on one socket (SPEC 6), end to end: a hub and two real
//! `dockwire agent` processes on this machine, one serving the test Docker
//! engine (`DOCKER_HOST`), one a second private engine this test starts
//! (scripts/docker-env.sh with its own state dir). Real WebSocket and
//! Socket.IO clients check the server list and its changes, remote
//! containers and their changes, a remote log stream complete and in order
//! for two browsers on one follower, a remote stop with `request_id`,
//! container stats, the REST views, and a killed agent going offline.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use dockwire::auth::Role;
use serde_json::{Value, json};
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

/// Removes a container of the engine at `host` when dropped.
struct RemoteContainer(String, String);

impl Drop for RemoteContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.1])
            .env("DOCKER_HOST", &self.0)
            .output();
    }
}

/// Waits for a message matching `pred`, skipping others.
fn wait_for(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_match(ws, what, WAIT, pred)
}

/// Asks for the server list until `pred` holds for it.
fn servers_until(ws: &mut Ws, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        send_json(ws, &json!({"type": "list_servers", "request_id": "ls"}));
        let m = wait_for(ws, "servers", |m| m["type"] == "servers");
        assert_eq!(m["request_id"], "ls");
        let list = m["servers"].as_array().unwrap().clone();
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "servers never matched: {list:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn server<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter().find(|s| s["server_id"] == id).unwrap()
}

#[test]
fn two_agents_serve_their_own_docker_through_one_hub() {
    let Some(host1) = docker_host() else {
        eprintln!("DOCKER_HOST not set: skipped (scripts/test.sh sets it)");
        return;
    };
    let eng2 = OwnEngine::start();
    let image = test_image();
    // A counter on each engine: one line every 50 ms.
    // Traps TERM so a stop or restart takes a moment, not the 10 s timeout.
    let counter =
        "trap 'exit 0' TERM; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done";
    let name1 = unique_name("remote1");
    let (_c1, id1) = run_container(&name1, &[], counter);
    let name2 = unique_name("remote2");
    let id2 = docker_at(
        &eng2.host,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name2,
            &image,
            "sh",
            "-c",
            counter,
        ],
    );
    let _c2 = RemoteContainer(eng2.host.clone(), name2.clone());

    let h = agent_hub(2, "");
    let _a0 = spawn_agent(
        &h,
        0,
        &["--metrics-interval", "1s", "--docker-host", &host1],
    );
    let mut a1 = spawn_agent(
        &h,
        1,
        &["--metrics-interval", "1s", "--docker-host", &eng2.host],
    );
    let mut b = browser(&h, "/api/v1/ws", Role::Admin);

    // Both agents online with Docker up; named by their keys' entries.
    let list = servers_until(&mut b, |l| {
        ["srv-0", "srv-1"].iter().all(|id| {
            l.iter()
                .any(|s| s["server_id"] == *id && s["online"] == true && s["docker"] == "up")
        })
    });
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["local"], true);
    assert_eq!(server(&list, "srv-1")["name"], "agent-1");
    let caps = server(&list, "srv-1")["capabilities"]
        .as_array()
        .unwrap()
        .clone();
    assert!(caps.contains(&json!("docker")), "{caps:?}");

    // Each server's containers, with server_id, from its own engine.
    for (sid, name, id) in [("srv-0", &name1, &id1), ("srv-1", &name2, &id2)] {
        send_json(
            &mut b,
            &json!({"type": "subscribe_containers", "server_id": sid, "request_id": sid}),
        );
        let mut init = wait_for(&mut b, "initial_state", |m| {
            m["type"] == "initial_state" && m["server_id"] == sid
        });
        assert_eq!(init["request_id"], sid);
        // The agent's `hello` (docker up) may come before its table: the
        // table then follows as another `initial_state` of the same server.
        let has = |m: &Value| {
            m["containers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|c| c["name"] == name.as_str()))
        };
        if !has(&init) {
            init = wait_for(&mut b, "the agent's table", |m| {
                m["type"] == "initial_state" && m["server_id"] == sid && has(m)
            });
        }
        let c = init["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in {sid}'s table: {init}"));
        assert_eq!(c["id"], id.as_str());
        assert_eq!(c["state"], "running");
        assert!(c["started_at"].as_str().unwrap().starts_with("20"), "{c}");
    }
    // The second engine's container is not on the first server, and vice versa.
    let (_, body) = http_get_auth(&h, "/api/v1/servers/srv-0/containers");
    assert!(body.contains(&name1) && !body.contains(&name2), "{body}");
    let (status, body) = http_get_auth(&h, "/api/v1/servers");
    assert_eq!(status, 200);
    assert!(body.contains("srv-1"), "{body}");
    let (status, _) = http_get_auth(&h, "/api/v1/servers/nope/containers");
    assert_eq!(status, 404);

    // Per-container usage arrives for the subscribed servers.
    let stats = wait_for(&mut b, "container_stats", |m| {
        m["type"] == "container_stats" && m["server_id"] == "srv-1"
    });
    let mine = stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id2.as_str())
        .unwrap_or_else(|| panic!("no stats for {id2}: {stats}"));
    assert!(mine["memory_used"].as_u64().unwrap() > 0, "{mine}");

    // Two browsers on one remote log stream: the same lines, in order, none missing.
    let mut b2 = browser(&h, "/api/v1/ws", Role::Viewer);
    for ws in [&mut b, &mut b2] {
        send_json(
            ws,
            &json!({"type": "start_log_stream", "server_id": "srv-1", "container_id": name2, "tail": 5}),
        );
    }
    let runs: Vec<Vec<u64>> = [&mut b, &mut b2]
        .into_iter()
        .map(|ws| {
            let mut got = Vec::new();
            while got.len() < 40 {
                let m = wait_for(ws, "log_update", |m| m["type"] == "log_update");
                assert_eq!(m["server_id"], "srv-1");
                assert_eq!(m["container_id"], id2.as_str());
                for l in m["log"].as_str().unwrap().lines() {
                    got.push(l.strip_prefix("line ").unwrap().parse::<u64>().unwrap());
                }
            }
            got
        })
        .collect();
    for run in &runs {
        for w in run.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap or reorder in {run:?}");
        }
    }

    // A viewer may not act; an admin's stop is accepted, then done.
    send_json(
        &mut b2,
        &json!({"type": "docker_command", "server_id": "srv-1", "action": "stop", "container_id": name2, "request_id": "v"}),
    );
    let e = wait_for(&mut b2, "error", |m| m["type"] == "error");
    assert_eq!(e["request_id"], "v");
    let stopped = remote_action(&mut b, &name2, &id2, "stop", |c| c["state"] == "exited");
    assert!(stopped["exit_code"].is_i64(), "{stopped}");
    wait_for(&mut b2, "log_stream_stopped", |m| {
        m["type"] == "log_stream_stopped" && m["server_id"] == "srv-1"
    });

    // Start and restart reach the same engine: each is answered, and the
    // container runs again with a new start time.
    let started = remote_action(&mut b, &name2, &id2, "start", |c| c["state"] == "running");
    let first_start = started["started_at"]
        .as_str()
        .expect("started_at")
        .to_owned();
    let restarted = remote_action(&mut b, &name2, &id2, "restart", |c| {
        c["state"] == "running" && c["started_at"] != first_start.as_str()
    });
    assert!(restarted["started_at"].is_string(), "{restarted}");

    // Socket.IO clients see the same, as events.
    let (mut sio, _, _) = sio_handshake_with_token(&h);
    sio.send(Message::text(r#"42["list_servers",{"request_id":"s"}]"#))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let servers = loop {
        let t = sio_text(&mut sio, WAIT).expect("socket.io servers");
        if t.starts_with("42[\"servers\"") {
            break t;
        }
        assert!(Instant::now() < deadline);
    };
    let v: Value = serde_json::from_str(servers.strip_prefix("42").unwrap()).unwrap();
    assert_eq!(v[1]["request_id"], "s");
    assert_eq!(v[1]["servers"].as_array().unwrap().len(), 3);

    // The agent dies: every browser hears its server went offline.
    let _ = a1.0.kill();
    let _ = a1.0.wait();
    let off = wait_for(&mut b2, "server offline", |m| {
        m["type"] == "server_state_change" && m["server"]["server_id"] == "srv-1"
    });
    assert_eq!(off["server"]["online"], false);
}

/// An admin's `docker_command` for a container of srv-1: accepted, then
/// answered with success, and (in either order: the engine's event can come
/// first) a state change of that container for which `done` holds, which is
/// returned.
fn remote_action(
    b: &mut Ws,
    name: &str,
    id: &str,
    action: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let request_id = format!("{action}-1");
    send_json(
        b,
        &json!({"type": "docker_command", "server_id": "srv-1", "action": action, "container_id": name, "request_id": request_id}),
    );
    let acc = wait_for(b, "command_accepted", |m| m["type"] == "command_accepted");
    assert_eq!(acc["request_id"], request_id.as_str());
    let (mut answer, mut change) = (None, None);
    while answer.is_none() || change.is_none() {
        let m = wait_for(b, "docker_response and the state change", |m| {
            m["type"] == "docker_response"
                || (m["type"] == "container_state_change"
                    && m["server_id"] == "srv-1"
                    && m["container"]["id"] == id
                    && done(&m["container"]))
        });
        if m["type"] == "docker_response" {
            assert_eq!(m["request_id"], request_id.as_str(), "{m}");
            assert_eq!(m["success"], true, "{m}");
            answer = Some(m);
        } else {
            change = Some(m);
        }
    }
    change.unwrap()["container"].clone()
}

/// GET with the admin token as a Bearer header: (status, body).
fn http_get_auth(h: &AgentHub, path: &str) -> (u16, String) {
    let addr = h.d.addr;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token(Role::Admin)
    );
    let raw = raw_request(addr, req.as_bytes()).unwrap();
    split_response(&raw)
}

/// A Socket.IO client that connects with the admin token.
fn sio_handshake_with_token(h: &AgentHub) -> (Ws, String, String) {
    let mut ws = connect(&h.d.url("/socket.io/?EIO=4&transport=websocket"));
    let open = sio_text(&mut ws, WAIT).expect("open packet");
    ws.send(Message::text(format!(
        "40{}",
        json!({"token": token(Role::Admin)})
    )))
    .unwrap();
    let ack = sio_text(&mut ws, WAIT).expect("connect ack");
    assert!(ack.starts_with("40"), "{ack}");
    (ws, open, ack)
}

#[test]
fn an_agent_whose_docker_is_unreachable_says_so_and_one_without_docker_has_none() {
    let h = agent_hub(2, "");
    let dir = temp_dir("nodocker");
    let missing = format!("unix://{}/docker.sock", dir.display());
    let _a0 = spawn_agent(&h, 0, &["--docker-host", &missing]);
    let _a1 = spawn_agent(&h, 1, &["--no-docker"]);
    let mut b = browser(&h, "/api/v1/ws", Role::Viewer);
    let list = servers_until(&mut b, |l| {
        server(l, "srv-0")["docker"] == "down" && server(l, "srv-1")["online"] == true
    });
    let why = server(&list, "srv-0")["docker_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("no Docker socket at"), "{why}");
    assert!(why.contains("is Docker running"), "{why}");
    let plain = server(&list, "srv-1");
    assert_eq!(plain["docker"], Value::Null, "{plain}");
    assert!(
        !plain["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("docker"))
    );
    // Its (empty) table is not mistaken for "no containers": the server says why.
    send_json(
        &mut b,
        &json!({"type": "start_log_stream", "server_id": "srv-0", "container_id": "web"}),
    );
    let e = wait_for(&mut b, "error", |m| m["type"] == "error");
    assert!(
        e["message"].as_str().unwrap().contains("No such container"),
        "{e}"
    );
}
