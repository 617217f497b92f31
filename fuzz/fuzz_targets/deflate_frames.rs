//! Attack guarded against: a client that negotiated permessage-deflate sending
//! arbitrary frames, RSV1 set or not, split into arbitrary TCP segments: a
//! deflate bomb that inflates past the message limit, data that is not
//! deflate, RSV1 on a continuation or control frame. The reader with the
//! loop's shared inflater must never panic, never hold more than the message
//! limit (compressed, or inflated), answer every violation with
//! 1002/1007/1009, parse a stream the same however it is segmented, and
//! leave the shared inflater usable for the next socket. Also: the hostile
//! `Sec-WebSocket-Extensions` offer (`negotiate`), and the loop's compressor
//! round-tripping any payload through the inflater.
//!
//! Input layout: the first byte chooses the segment sizes, the rest is the byte stream.

#![no_main]

use dockwire::ws::deflate::{Deflater, Inflater, negotiate};
use dockwire::ws::{Incoming, MessageReader, OpCode, WsError, frame_payload};
use libfuzzer_sys::fuzz_target;

#[path = "../common/segmented.rs"]
mod segmented;
use segmented::MAX_MESSAGE;

/// Feeds `data` in segments of `seg` bytes through a deflate reader sharing `inflater`.
fn run(data: &[u8], seg: usize, inflater: &mut Inflater) -> (Vec<Incoming>, Option<WsError>) {
    let reader = MessageReader::with_deflate(MAX_MESSAGE);
    segmented::run(data, seg, reader, |r, b| r.read_inflating(b, Some(&mut *inflater)))
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    // The offer parser sees the same bytes as a header value.
    let _ = negotiate(&String::from_utf8_lossy(data));

    // One inflater for both runs, as the loop shares one for every socket:
    // whatever the first run left in it must not change the second.
    let mut inflater = Inflater::default();
    let seg = 1 + sel as usize % 64;
    let whole = run(data, data.len().max(1), &mut inflater);
    let pieces = run(data, seg, &mut inflater);
    assert_eq!(whole, pieces);

    // The compressor: any payload comes back whole through the inflater.
    let mut deflater = Deflater::default();
    if let Some(frame) = deflater.compress(OpCode::Binary, data, true) {
        let back = inflater
            .inflate(frame_payload(&frame), data.len())
            .expect("our own deflate inflates");
        assert_eq!(back, data);
    }
});
