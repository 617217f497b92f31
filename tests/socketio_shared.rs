//! The Socket.IO dialect beside the JSON dialect on one log stream: each
//! batch is serialized once per dialect and shared by all subscribers of that
//! dialect (SPEC section 4), and both dialects get the same lines in order.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

/// A raw Socket.IO v4 client (`sio_handshake`), checking the open packet's
/// parameters and the CONNECT ack's sid too.
fn sio_client(d: &Daemon) -> Ws {
    let (ws, open, ack) = sio_handshake(d);
    let params: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(params["upgrades"], json!([]));
    assert!(params["pingInterval"].as_u64().is_some());
    assert!(ack.starts_with("40{\"sid\""), "{ack}");
    ws
}

/// Log lines from a Socket.IO `42["log_update",{...}]` event.
fn sio_lines(ws: &mut Ws, id: &str, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < want && Instant::now() < deadline {
        let Some(t) = sio_text(ws, Duration::from_millis(200)) else {
            continue;
        };
        let Some(body) = t.strip_prefix("42") else {
            continue;
        };
        let v: Value = serde_json::from_str(body).unwrap();
        if v[0] == "log_update" && v[1]["container_id"] == id {
            lines.extend(v[1]["log"].as_str().unwrap().lines().map(str::to_string));
        }
    }
    lines
}

fn json_lines(ws: &mut Ws, id: &str, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < want && Instant::now() < deadline {
        if let Some(m) = next_json(ws, Duration::from_millis(200))
            && m["type"] == "log_update"
            && m["container_id"] == id
        {
            lines.extend(m["log"].as_str().unwrap().lines().map(str::to_string));
        }
    }
    lines
}

#[test]
fn each_batch_is_encoded_once_per_dialect() {
    if docker_host().is_none() {
        eprintln!("SKIPPED: DOCKER_HOST is not set; run through scripts/test.sh");
        return;
    }
    let d = Daemon::start("");
    let name = unique_name("shared");
    let (_rm, id) = run_container(&name, &[], "sleep 2; seq 1 3000; sleep 300");

    let mut json_clients: Vec<Ws> = (0..5)
        .map(|_| {
            let mut ws = connect(&d.url("/api/v1/ws"));
            wait_type(&mut ws, "initial_state", Duration::from_secs(5));
            send_json(
                &mut ws,
                &json!({"type": "start_log_stream", "container_id": name, "tail": 0}),
            );
            ws
        })
        .collect();
    let mut sio_clients: Vec<Ws> = (0..5)
        .map(|_| {
            let mut ws = sio_client(&d);
            ws.send(Message::text(format!(
                r#"42["start_log_stream",{{"container_id":"{name}"}}]"#
            )))
            .unwrap();
            ws
        })
        .collect();
    let expected: Vec<String> = (1..=3000).map(|n| n.to_string()).collect();
    // Read them all concurrently so nobody falls behind.
    let handles: Vec<_> = json_clients
        .drain(..)
        .map(|mut ws| {
            let id = id.clone();
            std::thread::spawn(move || json_lines(&mut ws, &id, 3000))
        })
        .chain(sio_clients.drain(..).map(|mut ws| {
            let id = id.clone();
            std::thread::spawn(move || sio_lines(&mut ws, &id, 3000))
        }))
        .collect();
    for h in handles {
        assert_eq!(
            h.join().unwrap(),
            expected,
            "every client got every line, in order"
        );
    }
    let encoded = d.metric("dockwire_log_frames_encoded_total").unwrap();
    let sent = d
        .metric("dockwire_messages_sent_by_type_total{type=\"log_update\"}")
        .unwrap();
    assert!(encoded > 0.0);
    // Each encode served the five subscribers of its dialect.
    assert_eq!(
        sent,
        encoded * 5.0,
        "sent {sent} log_update frames from {encoded} encodes"
    );
}
