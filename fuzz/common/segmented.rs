//! Shared by the frame-reader targets: feeds a byte stream to a
//! `MessageReader` in segments and checks what must hold after every read.

use bytes::BytesMut;
use dockwire::ws::{Incoming, MAX_UNCONSUMED, MessageReader, WsError};

/// The message limit the targets' readers are built with.
pub const MAX_MESSAGE: usize = 4096;

/// Feeds `data` to `reader` in segments of `seg` bytes, reading with `read`
/// until it wants more; returns the messages and the error, if any. Panics
/// when the reader holds more than the limit, leaves more than
/// `MAX_UNCONSUMED` bytes unconsumed, hands out a message over the limit or
/// answers a violation with anything but 1002/1007/1009.
pub fn run(
    data: &[u8],
    seg: usize,
    mut reader: MessageReader,
    mut read: impl FnMut(&mut MessageReader, &mut BytesMut) -> Result<Option<Incoming>, WsError>,
) -> (Vec<Incoming>, Option<WsError>) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(seg) {
        buf.extend_from_slice(piece);
        loop {
            match read(&mut reader, &mut buf) {
                Ok(Some(m)) => {
                    match &m {
                        Incoming::Text(t) => assert!(t.len() <= MAX_MESSAGE),
                        Incoming::Binary(b) => assert!(b.len() <= MAX_MESSAGE),
                        _ => {}
                    }
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
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
                    return (out, Some(e));
                }
            }
            assert!(reader.pending_message_bytes() <= MAX_MESSAGE);
        }
        assert!(reader.pending_message_bytes() <= MAX_MESSAGE);
    }
    (out, None)
}
