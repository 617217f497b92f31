//! What this compares, and why:
//!
//! Flushing 1,000 queued 150-byte shared frames (a burst of log lines fanned out to one
//! socket) with `OutQueue::flush` — one `writev` per 64 frames, so 16 syscalls — against one
//! `write()` per frame, 1,000 syscalls. This is the case the batching writer exists for.
//! Two sinks:
//! - `/dev/null`: the kernel does no copying, so this isolates per-syscall overhead;
//! - a `UnixStream` pair drained by a thread: the bytes are really copied into a socket
//!   buffer and woken on the other side, close to what a TCP socket costs.
//!
//! Queue setup (1,000 refcount bumps) is outside the timed part in both variants.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dockwire::writer::OutQueue;
use dockwire::ws::{Frame, text_frame};

const FRAMES: usize = 1000;
const PAYLOAD: usize = 146; // + 4-byte header (16-bit length) = 150-byte frames

fn shared_frame() -> Frame {
    let f = text_frame(&[b'l'; PAYLOAD]);
    assert_eq!(f.len(), 150);
    f
}

fn full_queue(frame: &Frame) -> OutQueue {
    let mut q = OutQueue::new(usize::MAX, usize::MAX);
    for _ in 0..FRAMES {
        q.push(frame.clone());
    }
    q
}

fn frame_list(frame: &Frame) -> VecDeque<Frame> {
    (0..FRAMES).map(|_| frame.clone()).collect()
}

fn bench_sink<W: Write>(c: &mut Criterion, group: &str, sink: &mut W) {
    let frame = shared_frame();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes((FRAMES * frame.len()) as u64));
    g.bench_function("outqueue_writev", |b| {
        b.iter_batched(
            || full_queue(&frame),
            |mut q| {
                while !q.is_empty() {
                    black_box(q.flush(sink));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("write_per_frame", |b| {
        b.iter_batched(
            || frame_list(&frame),
            |frames| {
                for f in &frames {
                    sink.write_all(f).expect("sink write");
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn dev_null(c: &mut Criterion) {
    let mut sink: File = OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    bench_sink(c, "flush_1000x150B_dev_null", &mut sink);
}

fn unix_stream(c: &mut Criterion) {
    let (mut tx, mut rx) = UnixStream::pair().expect("socket pair");
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match rx.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n as u64,
            }
        }
    });
    bench_sink(c, "flush_1000x150B_unix_stream", &mut tx);
    drop(tx);
    let _ = drain.join();
}

criterion_group!(benches, dev_null, unix_stream);
criterion_main!(benches);
