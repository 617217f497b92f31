//! What one broadcast costs the loop before any socket sees it, and what a
//! request head costs to parse. Compares:
//!
//! - `log_update` (a 60-line coalesced batch) encoded once into a shared
//!   frame with `protocol::json::encode` (JSON straight after reserved header
//!   room) against the naive `serde_json::to_vec(json!(..))` + frame copy that
//!   a per-subscriber encoder would pay for every socket;
//! - a `metrics` frame built around the stored sample JSON (what the hub does)
//!   against re-serializing the `Metrics` struct into a `json!` envelope;
//! - `http::parse_head` on a browser-sized upgrade request.
//!
//! Why: SPEC section 4 says one serialization per frame, shared; these
//! numbers show the per-frame cost that the fan-out amortizes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dockwire::feed::metrics::MetricsCollector;
use dockwire::protocol::json::{Dialect, Event, encode};
use dockwire::{http, ws};
use serde_json::json;

fn log_update(c: &mut Criterion) {
    let log: String = (0..60)
        .map(|i| format!("2026-11-23T12:00:{i:02}.000000000Z worker[{i}] processed job id={i} status=\"ok\"\n"))
        .collect();
    let id = "4f1c2b7e9a0d".repeat(5);
    let mut g = c.benchmark_group("log_update");
    g.throughput(Throughput::Bytes(log.len() as u64));
    g.bench_function("encode_once_shared_frame", |b| {
        b.iter(|| {
            encode(
                black_box(&Event::LogUpdate {
                    server_id: "7b0c5d1e-0000-4000-8000-000000000001",
                    container_id: &id,
                    log: &log,
                    seq: 1_796_050_800_000_412,
                }),
                Dialect::Json,
            )
        })
    });
    g.bench_function("encode_once_socketio", |b| {
        b.iter(|| {
            encode(
                black_box(&Event::LogUpdate {
                    server_id: "7b0c5d1e-0000-4000-8000-000000000001",
                    container_id: &id,
                    log: &log,
                    seq: 1_796_050_800_000_412,
                }),
                Dialect::SocketIo,
            )
        })
    });
    g.bench_function("naive_json_macro_then_frame", |b| {
        b.iter(|| {
            let body = serde_json::to_vec(
                &json!({"type": "log_update", "container_id": &id, "log": &log}),
            )
            .unwrap();
            ws::text_frame(black_box(&body))
        })
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let sample = MetricsCollector::new().sample();
    let stored = serde_json::to_string(&sample).unwrap();
    let mut g = c.benchmark_group("metrics");
    g.bench_function("frame_around_stored_sample", |b| {
        b.iter(|| {
            let mut buf = ws::begin_frame(stored.len() + 64);
            buf.extend_from_slice(b"{\"type\":\"metrics\",\"data\":");
            buf.extend_from_slice(black_box(stored.as_bytes()));
            buf.push(b'}');
            ws::finish_frame(buf, ws::OpCode::Text)
        })
    });
    g.bench_function("serialize_struct_each_time", |b| {
        b.iter(|| {
            let body = serde_json::to_vec(&json!({"type": "metrics", "data": black_box(&sample)}))
                .unwrap();
            ws::text_frame(&body)
        })
    });
    g.finish();
}

fn head(c: &mut Criterion) {
    let req = b"GET /api/v1/ws/metrics/7b0c2f1e-1d7f-4a59-9f3c-0c1f0e9b8a11 HTTP/1.1\r\n\
Host: dash.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0\r\n\
Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nOrigin: https://dash.example.com\r\nAccept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\nCache-Control: no-cache\r\nPragma: no-cache\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let mut g = c.benchmark_group("http_head");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("parse_and_check_upgrade", |b| {
        b.iter(|| match http::parse_head(black_box(req)) {
            http::Parse::Complete(h) => http::check_upgrade(&h).unwrap(),
            _ => unreachable!(),
        })
    });
    g.bench_function("parse_partial_half", |b| {
        b.iter(|| http::parse_head(black_box(&req[..req.len() / 2])))
    });
    g.finish();
}

criterion_group!(benches, log_update, metrics, head);
criterion_main!(benches);
