//! Attack guarded against: any sequence of messages from any mix of
//! browsers, Socket.IO clients and agents (authenticated or not) driving the
//! hub. The hub must never panic, never queue past a socket's hard cap, and
//! once every connection has closed it must hold no session and no topic
//! (`dockwire::hub::drive_hub` checks all three).
//! `cargo +nightly fuzz run hub_inputs`; the same property runs as a unit
//! test with random inputs (`hub::tests::random_inputs_keep_the_invariants`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dockwire::hub::drive_hub(data));
