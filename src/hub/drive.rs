//! Drives a hub with an arbitrary byte string as a sequence of inputs from a
//! mix of browsers, Socket.IO clients and agents, checking what must hold
//! whatever they send: no panic, no queue past a socket's hard cap, and no
//! session or topic left once every connection has closed. Used by the
//! `hub_inputs` fuzz target and by a unit test with random bytes.
//!
//! Each operation takes two bytes and a text: byte 0 picks the operation
//! (high bits) and the connection (low 3 bits), byte 1 the length of the
//! text taken from what follows (lossy UTF-8).
//!
//! The hub is part of a cluster (`cluster.rs`) whose NATS link is a
//! channel: operation 7 hands it what other hubs could send (a beat, a
//! request, an owner's event, NATS up or down, an unanswered command) with
//! the text as the body; what it sends is read and discarded.

use std::time::{Duration, Instant};

use crate::config::{Config, FileConfig, Overrides};
use crate::stats::{Endpoint, Stats};

use crate::cluster::{ClusterEvent, PeerKind};
use crate::feed::FeedEvent;

use super::{Hub, Input, MemoryOutbox};

/// What another hub (or NATS) could tell the driven hub: `which` picks it.
fn cluster_event(which: usize, text: &str) -> ClusterEvent {
    let body = bytes::Bytes::copy_from_slice(text.as_bytes());
    let from = format!("hub{}", which % 2);
    match which {
        0 | 1 => ClusterEvent::Beat(body),
        2 | 3 => ClusterEvent::Message {
            from,
            kind: PeerKind::Req,
            body,
        },
        4 | 5 => ClusterEvent::Message {
            from,
            kind: PeerKind::Ev,
            body,
        },
        6 => ClusterEvent::Up,
        // A stored log history: the text is one record (or garbage).
        7 if text.starts_with('{') => ClusterEvent::LogHistory {
            server: "srv".into(),
            container: "c".into(),
            records: vec![body],
        },
        _ => ClusterEvent::Down(text.to_string()),
    }
}

/// The agent key the driven hub accepts (so agent paths are reached).
pub const DRIVE_AGENT_KEY: &str = "drive-agent-key";

const CONNS: usize = 8;

/// Runs `data` through a fresh hub; panics when an invariant breaks.
pub fn drive_hub(data: &[u8]) {
    let toml_text = format!(
        "server_id = \"local\"\n[limits]\nmax_queued_bytes = 4096\n\
         [[agents]]\nname = \"a\"\nkey_sha256 = \"{}\"\nserver_id = \"srv\"\n\
         [[alerts]]\nrule = \"cpu_percent > 50 for 1s\"\n",
        crate::auth::hash_api_key(DRIVE_AGENT_KEY)
    );
    let f: FileConfig = toml::from_str(&toml_text).expect("config parses");
    let config = Config::from_file(f, &Overrides::default()).expect("config is valid");
    let mut now = Instant::now();
    let mut hub = Hub::new(config, None, now);
    let (link_tx, mut link_rx) = tokio::sync::mpsc::channel(1024);
    let link = crate::cluster::ClusterLink::new(link_tx);
    // With JetStream: stores and loads of log history are asked (and never
    // answered unless the input says so).
    link.stats
        .up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    link.stats
        .history
        .store(true, std::sync::atomic::Ordering::Relaxed);
    hub.set_cluster(link, "me".into());
    let mut out = MemoryOutbox::new(4096);
    let mut stats = Stats::default();
    let mut open = [false; CONNS];
    let mut serial = 0u64;
    let mut i = 0;
    while i + 1 < data.len() {
        let op = data[i];
        let len = data[i + 1] as usize;
        let start = (i + 2).min(data.len());
        let end = (i + 2 + len).min(data.len());
        let text = String::from_utf8_lossy(&data[start..end]).into_owned();
        i += 2 + len;
        let conn = (op as usize) % CONNS;
        // A connection the hub closed is closed for the loop too.
        if open[conn] && out.closed(conn).is_some() {
            open[conn] = false;
        }
        let kind = op >> 3;
        let input = match kind {
            0..=3 if !open[conn] => {
                open[conn] = true;
                serial += 1;
                out.open(conn);
                let (endpoint, target) = match kind {
                    0 => (Endpoint::Browser, None),
                    1 => (Endpoint::SocketIo, None),
                    2 => (Endpoint::Agent, None),
                    _ => (Endpoint::ServerLogs, Some("srv".to_string())),
                };
                Input::Opened {
                    conn,
                    serial,
                    endpoint,
                    target,
                    claims: None,
                    peer: None,
                    dialect: crate::protocol::Dialect::for_endpoint(endpoint),
                }
            }
            4 if open[conn] => {
                open[conn] = false;
                Input::Closed { conn }
            }
            5 => {
                now += Duration::from_secs(1);
                Input::Tick {
                    unix_now: 1_800_000_000,
                }
            }
            6 if open[conn] => {
                out.take_texts(conn);
                Input::Drained { conn }
            }
            7 => Input::Feed(FeedEvent::Cluster(cluster_event(conn, &text))),
            _ if open[conn] => Input::Text { conn, text: &text },
            _ => continue,
        };
        hub.handle(&mut out, &mut stats, now, input);
        while link_rx.try_recv().is_ok() {}
        for c in out.conns.values() {
            assert!(c.queued <= out.hard_cap, "a queue went past its hard cap");
        }
    }
    for (conn, is_open) in open.iter().enumerate() {
        if *is_open && out.closed(conn).is_none() {
            hub.handle(&mut out, &mut stats, now, Input::Closed { conn });
        }
    }
    // Socket.IO sessions dropped without a DISCONNECT of their own are
    // parked for recovery (recovery.rs) and keep their topics until the
    // window ends: let it end.
    // Other hubs' sessions end when their hubs fall silent.
    now += super::recovery::RECOVERY_WINDOW.max(super::cluster::RELAY_TIMEOUT)
        + Duration::from_secs(1);
    hub.handle(
        &mut out,
        &mut stats,
        now,
        Input::Tick {
            unix_now: 1_800_000_000,
        },
    );
    assert_eq!(hub.sessions.sio.parked_len(), 0, "parked sessions left");
    assert_eq!(hub.session_count(), 0, "sessions left after every close");
    assert_eq!(hub.state().topics.len(), 0, "topics left after every close");
}
