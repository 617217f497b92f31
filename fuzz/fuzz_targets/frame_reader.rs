//! Attack guarded against: a hostile client sending arbitrary bytes, split into arbitrary
//! TCP segments, to the WebSocket frame reader. It must never panic, never hold more
//! than the message limit, never leave more than `MAX_UNCONSUMED` bytes unconsumed when it
//! asks for more input, answer every violation with 1002/1007/1009, and never parse a
//! stream differently depending on how it was segmented.
//!
//! Input layout: the first byte chooses the segment sizes, the rest is the byte stream.

#![no_main]

use dockwire::ws::MessageReader;
use libfuzzer_sys::fuzz_target;

#[path = "../common/segmented.rs"]
mod segmented;
use segmented::MAX_MESSAGE;

fn run(data: &[u8], seg: usize) -> (Vec<dockwire::ws::Incoming>, Option<dockwire::ws::WsError>) {
    segmented::run(data, seg, MessageReader::new(MAX_MESSAGE), |r, b| r.read(b))
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let seg = 1 + sel as usize % 64;
    let whole = run(data, data.len().max(1));
    let pieces = run(data, seg);
    // Same messages, same error: UTF-8 fail-fast may stop a segmented read at an earlier
    // byte, but never at a different frame or with a different verdict.
    assert_eq!(whole, pieces);
});
