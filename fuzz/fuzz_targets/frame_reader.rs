//! Attack guarded against: a hostile client sending arbitrary bytes, split into arbitrary
//! TCP segments, to the WebSocket frame reader. It must never panic, never hold more
//! than the message limit, never leave more than `MAX_UNCONSUMED` bytes unconsumed when it
//! asks for more input, answer every violation with 1002/1007/1009, and never parse a
//! stream differently depending on how it was segmented.
//!
//! Input layout: the first byte chooses the segment sizes, the rest is the byte stream.

#![no_main]

use bytes::BytesMut;
use dockwire::ws::{Incoming, MAX_UNCONSUMED, MessageReader, WsError};
use libfuzzer_sys::fuzz_target;

const MAX_MESSAGE: usize = 4096;

/// Feeds `data` in segments of `seg` bytes; returns the messages and the error, if any.
fn run(data: &[u8], seg: usize) -> (Vec<Incoming>, Option<WsError>) {
    let mut reader = MessageReader::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(seg) {
        buf.extend_from_slice(piece);
        loop {
            match reader.read(&mut buf) {
                Ok(Some(m)) => {
                    let closing = matches!(m, Incoming::Close(_));
                    out.push(m);
                    if closing {
                        return (out, None);
                    }
                }
                Ok(None) => {
                    assert!(buf.len() < MAX_UNCONSUMED);
                    break;
                }
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                    return (out, Some(e));
                }
            }
            assert!(reader.pending_message_bytes() <= MAX_MESSAGE);
        }
        assert!(reader.pending_message_bytes() <= MAX_MESSAGE);
    }
    (out, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let seg = 1 + sel as usize % 64;
    let whole = run(data, data.len().max(1));
    let segmented = run(data, seg);
    // Same messages, same error: UTF-8 fail-fast may stop a segmented read at an earlier
    // byte, but never at a different frame or with a different verdict.
    assert_eq!(whole, segmented);
});
