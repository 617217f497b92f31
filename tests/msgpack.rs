//! The MessagePack wire (SPEC 12) end to end: a `/api/v1/ws?format=msgpack`
//! client runs the first seed's flow against the real binary and a real
//! container: `connection_established`, `initial_state`, a (filtered) log
//! stream, a state change, errors for bad input; every frame it gets is a
//! binary frame holding a MessagePack map, and every request it sends is one.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

fn send(ws: &mut Ws, v: &Value) {
    let bytes = rmp_serde::to_vec(v).unwrap();
    ws.send(Message::binary(bytes)).expect("send");
}

/// The next message, which must be a binary MessagePack map.
fn next(ws: &mut Ws, deadline: Instant) -> Value {
    loop {
        assert!(Instant::now() < deadline, "nothing within {WAIT:?}");
        match ws.read() {
            Ok(Message::Binary(b)) => {
                let v: Value = rmp_serde::from_slice(&b).expect("a MessagePack value");
                assert!(v.is_object(), "{v}");
                return v;
            }
            Ok(Message::Text(t)) => panic!("a text frame on a msgpack socket: {t}"),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn wait_for(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = next(ws, deadline);
        if v["type"] == kind {
            return v;
        }
    }
}

#[test]
fn msgpack_client_runs_the_first_seeds_flow() {
    if docker_host().is_none() {
        eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
        return;
    }
    let d = Daemon::start("");
    let name = unique_name("mpack");
    let (_c, id) = run_container(
        &name,
        &[],
        "echo 'INFO hello'; echo 'ERROR boom' >&2; echo 'INFO bye'; sleep 300",
    );
    let mut ws = connect(&d.url("/api/v1/ws?format=msgpack"));
    let hello = wait_for(&mut ws, "connection_established");
    assert!(hello["server_id"].is_string());
    let init = wait_for(&mut ws, "initial_state");
    assert!(
        init["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str() && c["name"] == name.as_str()),
        "{init}"
    );

    // Logs: a filtered stream, by name.
    send(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": name, "filter": {"levels": ["error"]}}),
    );
    let up = wait_for(&mut ws, "log_update");
    assert_eq!(up["container_id"], id.as_str());
    assert_eq!(up["log"], "ERROR boom\n");
    assert!(up["seq"].as_u64().is_some());

    // Errors: unknown container (with its request id), unknown type, a text frame.
    send(
        &mut ws,
        &json!({"type": "start_log_stream", "container_id": "no-such-container", "request_id": "r9"}),
    );
    let e = wait_for(&mut ws, "error");
    assert_eq!(e["request_id"], "r9");
    assert!(
        e["message"].as_str().unwrap().contains("No such container"),
        "{e}"
    );
    send(&mut ws, &json!({"type": "no_such_type"}));
    let e = wait_for(&mut ws, "error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("unknown message type"),
        "{e}"
    );
    ws.send(Message::text(r#"{"type":"ping"}"#)).unwrap();
    let e = wait_for(&mut ws, "error");
    assert!(
        e["message"].as_str().unwrap().contains("binary frames"),
        "{e}"
    );
    ws.send(Message::binary(vec![0xc1, 0x00])).unwrap();
    let e = wait_for(&mut ws, "error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid message format"),
        "{e}"
    );
    send(&mut ws, &json!({"type": "ping"}));
    wait_for(&mut ws, "pong");

    // State changes.
    docker(&["stop", "-t", "0", &name]);
    let deadline = Instant::now() + WAIT;
    loop {
        let v = next(&mut ws, deadline);
        if v["type"] == "container_state_change"
            && v["container"]["id"] == id.as_str()
            && v["container"]["state"] == "exited"
        {
            break;
        }
    }
}

#[test]
fn unknown_formats_are_refused_at_the_upgrade() {
    let d = Daemon::start("");
    let err = tungstenite::connect(d.url("/api/v1/ws?format=cbor")).unwrap_err();
    match err {
        tungstenite::Error::Http(r) => assert_eq!(r.status().as_u16(), 400),
        other => panic!("{other}"),
    }
}
