//! Attack guarded against: a browser (JSON, Socket.IO or either over
//! MessagePack, authenticated or not) sending arbitrary text or binary frames. Decoding a frame and parsing the
//! request in it must never panic, every refusal must be a message that can
//! be shown (non-empty, bounded), and a request must never carry a string
//! field longer than the protocol's limits.

#![no_main]

use dockwire::protocol::json::{self, BrowserRequest, MAX_FIELD, MAX_TOKEN};
use dockwire::protocol::{Dialect, DialectState, Inbound};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let connected = DialectState {
        connected: true,
        ..DialectState::default()
    };
    for dialect in Dialect::ALL {
        for state in [&DialectState::default(), &connected] {
            // Text frames, and the same bytes as a binary frame (MessagePack).
            inbound(dialect.decode(&text, state));
            inbound(dialect.decode_binary(data, state));
        }
    }
});

fn inbound(i: Inbound) {
    match i {
        Inbound::Request { kind, obj, .. } => match json::request_from(&kind, &obj) {
            Ok(req) => check(&req),
            Err(msg) => assert!(!msg.is_empty() && msg.len() < 512, "{msg}"),
        },
        Inbound::Invalid { message, .. } => {
            assert!(!message.is_empty() && message.len() < 1024, "{message}")
        }
        _ => {}
    }
}

fn check(req: &BrowserRequest) {
    match req {
        BrowserRequest::Auth { token } => assert!(token.len() <= MAX_TOKEN),
        BrowserRequest::StartLogStream { container_id, .. }
        | BrowserRequest::StopLogStream { container_id, .. } => assert!(container_id.len() <= MAX_FIELD),
        BrowserRequest::Command { server_id, command } => {
            assert!(server_id.len() <= MAX_FIELD && command.len() <= MAX_FIELD)
        }
        _ => {}
    }
}
