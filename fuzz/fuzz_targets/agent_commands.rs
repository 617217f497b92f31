//! Attack guarded against: a hostile or compromised hub (or anything between
//! the agent and a hub reached without TLS) sending the agent arbitrary text
//! frames. The agent's decoder must never panic, every refusal must be a
//! short message it can log, and what it accepts no longer than the frame it
//! came in (no amplification). Numbers are taken as sent and clamped where
//! they are used: a `subscribe_logs` tail to `MAX_TAIL` (agent/containers.rs),
//! a `subscribe_stats` interval to at least 1 s (agent/session.rs).

#![no_main]

use dockwire::agent::wire::{Incoming, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match decode(&text) {
        Err(reason) => assert!(!reason.is_empty() && reason.len() < 512, "{reason}"),
        Ok(msg) => check(&msg, text.len()),
    }
});

fn check(msg: &Incoming, frame_len: usize) {
    match msg {
        Incoming::AuthSuccess { server_id } => {
            assert!(!server_id.is_empty() && server_id.len() <= frame_len)
        }
        Incoming::Error { message } => assert!(message.len() <= frame_len),
        Incoming::Command { command, .. } => {
            assert!(command.as_ref().is_none_or(|c| c.len() <= frame_len))
        }
        Incoming::DockerCommand {
            action,
            container_id,
            ..
        } => {
            assert!(action.as_ref().is_none_or(|a| a.len() <= frame_len));
            assert!(container_id.as_ref().is_none_or(|c| c.len() <= frame_len));
        }
        Incoming::SubscribeLogs { container_id, .. } => {
            assert!(!container_id.is_empty() && container_id.len() <= frame_len)
        }
        Incoming::UnsubscribeLogs { container_id } => assert!(container_id.len() <= frame_len),
        Incoming::SampleStats { .. } => {}
        Incoming::Malformed { kind, reason } => {
            assert!(kind.len() <= frame_len && !reason.is_empty())
        }
        Incoming::Unknown { kind } => assert!(kind.len() <= frame_len),
    }
}
