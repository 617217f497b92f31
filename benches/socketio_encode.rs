//! Socket.IO encode cost on the fan-out path. Compares, for a coalesced
//! `log_update` (~4 KiB, 60 lines) and a small `container_state_change`:
//!
//! - `write_event`: the payload JSON serialized once, then only the
//!   `42["name",` ... `]` wrapper appended into a reused buffer (what the
//!   event loop does after a frame header);
//! - `event`: the same but returning a fresh `String` per call;
//! - `serde_per_socket`: the naive way, building `["name", value]` and
//!   serializing the whole thing again for every socket.
//!
//! Why: SPEC §4 requires one serialization shared by all subscribers; this
//! shows what the wrapper costs per socket next to re-serializing.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dockwire::protocol::socketio::{event, event_encoded_len, write_event};
use serde_json::{Value, json};

fn payloads() -> Vec<(&'static str, &'static str, Value)> {
    let log: String = (0..60)
        .map(|i| format!("2024-05-01T12:00:{i:02}.000000000Z worker[{i}] processed job id={i} status=\"ok\" took=12ms\n"))
        .collect();
    vec![
        (
            "log_update",
            "log_update",
            json!({"container_id": "4f1c2b7e9a0d".repeat(5), "log": log}),
        ),
        (
            "state_change",
            "container_state_change",
            json!({"id": "4f1c2b7e9a0d".repeat(5), "name": "web", "image": "busybox",
                   "state": "running", "status": "Up 2 seconds",
                   "created": "2024-05-01T12:00:00Z", "labels": {"app": "web"}}),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for (label, name, value) in payloads() {
        let data = serde_json::to_string(&value).expect("serializable");
        let mut group = c.benchmark_group(format!("socketio_encode/{label}"));
        group.throughput(Throughput::Bytes(event_encoded_len(name, data.len()) as u64));
        let mut buf = Vec::with_capacity(16 * 1024);
        group.bench_function("write_event", |b| {
            b.iter(|| {
                buf.clear();
                write_event(&mut buf, black_box(name), black_box(data.as_bytes()));
                black_box(buf.len())
            })
        });
        group.bench_function("event", |b| {
            b.iter(|| black_box(event(black_box(name), black_box(&data))))
        });
        group.bench_function("serde_per_socket", |b| {
            b.iter(|| {
                let body = serde_json::to_string(&json!([black_box(name), black_box(&value)]))
                    .expect("serializable");
                black_box(format!("42{body}"))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
