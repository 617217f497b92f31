//! What this compares, and why:
//!
//! - `encode_100B_text`: building a 100-byte text frame as a fresh shared `Frame` (one exact
//!   allocation, what fan-out uses so every subscriber shares it) vs writing header + payload
//!   into a reused `Vec` (no allocation; what a per-socket serializer could do) vs
//!   `begin_frame`/`finish_frame` (serialize in place, header written in front). Tells us
//!   what the allocation per shared frame costs next to the cheapest possible framing.
//! - `read_masked`: `MessageReader` throughput on masked client frames of 100 B (many small
//!   JSON messages: per-frame overhead dominates) and 64 KiB (the default message limit:
//!   unmasking, copying and UTF-8 validation dominate).
//! - `json_log_update`: the hub's real case, a `log_update` message serialized with
//!   serde_json then framed: into a temporary `Vec` + `text_frame` (two allocations, one
//!   extra copy) vs straight into `begin_frame`'s buffer + `finish_frame` (one of each).
//! - `unmask_64KiB`: the u64-at-a-time `apply_mask` vs a per-byte loop, to justify it.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dockwire::ws::{
    MessageReader, OpCode, apply_mask, begin_frame, encode_client_frame, finish_frame, text_frame,
    write_header,
};

fn encode(c: &mut Criterion) {
    let payload = [b'x'; 100];
    let mut g = c.benchmark_group("encode_100B_text");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_frame_fresh", |b| {
        b.iter(|| text_frame(black_box(&payload)))
    });
    g.bench_function("write_header_reused_vec", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            write_header(&mut out, OpCode::Text, payload.len());
            out.extend_from_slice(black_box(&payload));
            black_box(&out);
        })
    });
    g.bench_function("begin_finish_frame", |b| {
        b.iter(|| {
            let mut buf = begin_frame(payload.len());
            buf.extend_from_slice(black_box(&payload));
            finish_frame(buf, OpCode::Text)
        })
    });
    g.finish();
}

fn json(c: &mut Criterion) {
    let msg = serde_json::json!({
        "type": "log_update",
        "container_id": "3f4e5d6c7b8a",
        "log": "2024-01-01T00:00:00Z GET /api/v1/items 200 12ms\n".repeat(4),
    });
    let mut g = c.benchmark_group("json_log_update");
    g.throughput(Throughput::Elements(1));
    g.bench_function("to_vec_then_text_frame", |b| {
        b.iter(|| {
            let body = serde_json::to_vec(black_box(&msg)).expect("serialize");
            text_frame(&body)
        })
    });
    g.bench_function("begin_frame_in_place", |b| {
        b.iter(|| {
            let mut buf = begin_frame(256);
            serde_json::to_writer(&mut buf, black_box(&msg)).expect("serialize");
            finish_frame(buf, OpCode::Text)
        })
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_masked");
    for (name, opcode, size) in [
        ("text_100B", OpCode::Text, 100usize),
        ("text_64KiB", OpCode::Text, 64 * 1024),
        ("binary_64KiB", OpCode::Binary, 64 * 1024),
    ] {
        // About 1 MiB of input per iteration.
        let count = (1 << 20) / (size + 14);
        let payload: Vec<u8> = (0..size).map(|i| b' ' + (i % 90) as u8).collect();
        let frame = encode_client_frame(opcode, &payload, true, [0x12, 0x34, 0x56, 0x78]);
        let input = frame.repeat(count);
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |mut buf| {
                    let mut reader = MessageReader::new(1 << 20);
                    let mut n = 0;
                    while let Some(m) = reader.read(&mut buf).expect("valid input") {
                        black_box(m);
                        n += 1;
                    }
                    assert_eq!(n, count);
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut data = vec![0xA5u8; 64 * 1024];
    let mut g = c.benchmark_group("unmask_64KiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("apply_mask_u64", |b| {
        b.iter(|| apply_mask(black_box(&mut data), mask, 1))
    });
    g.bench_function("per_byte", |b| {
        b.iter(|| {
            let d = black_box(&mut data);
            for (i, byte) in d.iter_mut().enumerate() {
                *byte ^= mask[(i + 1) & 3];
            }
        })
    });
    g.finish();
}

criterion_group!(benches, encode, json, read, unmask);
criterion_main!(benches);
