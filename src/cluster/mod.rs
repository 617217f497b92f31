//! The cluster link (SPEC 11): one OS thread running an `async-nats` client
//! on its own current-thread tokio runtime. It carries what the hub sends
//! to other hubs ([`ClusterOp`], through [`ClusterLink`]) and hands what
//! arrives to the event loop as [`FeedEvent::Cluster`] plus a wake. The
//! loop never waits on NATS; the hub's cluster logic is `hub/cluster.rs`.
//!
//! Subjects, under the configured prefix `P` (default `dockwire`):
//! - `P.beat`: every hub's presence beats (every hub listens);
//! - `P.to.<hub>`: everything addressed to one hub, with the headers
//!   `Dockwire-From` (the sending hub) and `Dockwire-Kind` (`req`: a request
//!   to the hub that owns a server; `ev`: an event from that owner). A
//!   message that carries a reply subject (a relayed command) is answered at
//!   once with an empty message, so the asker learns "no responders" when
//!   the hub is gone.
//!
//! - `P.hist.<hub>`: requests for the metrics history of a server the hub
//!   owns (`GET /api/v1/servers/{id}/metrics` on another hub), answered
//!   with a 3-digit HTTP status and the body;
//! - `P.log.<server>.<container>` (both ids hex-encoded): the numbered
//!   lines of a log stream, published by the hub that owns the server into
//!   the JetStream stream `<P>_logs` when the NATS server has JetStream
//!   (see [`history`]), so that any hub that later follows the stream goes
//!   on with the same numbering and can answer a `since_seq` resume.
//!
//! Each hub publishes a server's data once per interested hub, never once
//! per browser; NATS's own interest routing does the rest. The client is
//! created with `no_echo`, so a hub never hears itself.
//!
//! Invariants: the op queue is bounded ([`OP_QUEUE`]; past it ops are
//! dropped and counted, never blocking the loop); the thread stops reading
//! NATS while the loop's channel holds more than [`MAX_BACKLOG`] events
//! (NATS then holds or drops them as a slow consumer); every payload is
//! at most [`MAX_PAYLOAD`] bytes (larger ops are dropped and counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use crossbeam_channel::Sender;
use futures_util::StreamExt;

use crate::feed::FeedEvent;

pub mod history;

/// Ops queued from the loop to the NATS thread, at most.
pub const OP_QUEUE: usize = 65_536;
/// The loop's channel depth past which the thread stops reading NATS.
pub const MAX_BACKLOG: usize = 16_384;
/// Largest message a hub sends or takes (NATS's default `max_payload` is 1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// How long a relayed command waits for the owning hub's receipt.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

const FROM: &str = "Dockwire-From";
const KIND: &str = "Dockwire-Kind";

/// What kind of hub-to-hub message this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A request to the hub that owns a server (its browser protocol).
    Req,
    /// An event from the hub that owns a server, for this hub's browsers.
    Ev,
}

impl PeerKind {
    fn as_str(self) -> &'static str {
        match self {
            PeerKind::Req => "req",
            PeerKind::Ev => "ev",
        }
    }
}

/// What the hub asks the NATS thread to do.
#[derive(Debug)]
pub enum ClusterOp {
    /// A presence beat (`P.beat`).
    Beat(Bytes),
    /// A message to one hub.
    Send {
        to: String,
        kind: PeerKind,
        body: Bytes,
    },
    /// A request to one hub that must be received (a relayed command):
    /// [`ClusterEvent::Unanswered`] with `token` when nobody takes it.
    Ask {
        to: String,
        body: Bytes,
        token: String,
    },
    /// Numbered lines of a log stream this hub owns, for its history in
    /// JetStream (dropped when JetStream is not there).
    StoreLog {
        server: String,
        container: String,
        body: Bytes,
    },
    /// The stored history of a log stream: answered with
    /// [`ClusterEvent::LogHistory`], always (empty without JetStream).
    LoadLog { server: String, container: String },
    /// Asks hub `to` for a server's metrics history (`body`: `{"server_id",
    /// "range"}`): answered with [`ClusterEvent::HistoryAnswer`] for
    /// connection `conn` (`serial`), always.
    AskHistory {
        to: String,
        body: Bytes,
        conn: usize,
        serial: u64,
    },
    /// Answers a [`ClusterEvent::HistoryAsk`].
    Reply { subject: String, body: Bytes },
}

/// What the NATS thread tells the loop.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Connected to NATS (at start and after every reconnect).
    Up,
    /// The connection to NATS is lost; the client keeps reconnecting.
    Down(String),
    /// A presence beat of another hub.
    Beat(Bytes),
    /// A message addressed to this hub.
    Message {
        from: String,
        kind: PeerKind,
        body: Bytes,
    },
    /// An [`ClusterOp::Ask`] that no hub took (the hub is gone).
    Unanswered { token: String },
    /// Another hub asks for the metrics history of a server (answer with
    /// [`ClusterOp::Reply`] on `reply`).
    HistoryAsk { reply: String, body: Bytes },
    /// The answer to a [`ClusterOp::AskHistory`]: an HTTP status and body
    /// for the waiting connection.
    HistoryAnswer {
        conn: usize,
        serial: u64,
        status: u16,
        body: Bytes,
    },
    /// The answer to a [`ClusterOp::LoadLog`]: the stored records, oldest
    /// first (each a body of [`ClusterOp::StoreLog`]).
    LogHistory {
        server: String,
        container: String,
        records: Vec<Bytes>,
    },
}

/// Counters the NATS thread keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct LinkStats {
    pub up: AtomicBool,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    /// JetStream holds log history (its stream exists on the server).
    pub history: AtomicBool,
    /// Log records stored, and stored histories loaded.
    pub stored: AtomicU64,
    pub loaded: AtomicU64,
}

/// The hub's handle on the NATS thread: queues ops without ever waiting.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    ops: tokio::sync::mpsc::Sender<ClusterOp>,
    pub stats: Arc<LinkStats>,
    /// This process's id in the cluster (a new one on every start).
    boot: Arc<str>,
}

impl ClusterLink {
    /// A link whose ops go to `ops` (the NATS thread, or a test).
    pub fn new(ops: tokio::sync::mpsc::Sender<ClusterOp>) -> Self {
        ClusterLink {
            ops,
            stats: Arc::new(LinkStats::default()),
            boot: uuid::Uuid::new_v4().simple().to_string().into(),
        }
    }

    /// This hub's session: its process and its connection to NATS. Another
    /// hub that sees it change knows this one lost what it had asked.
    pub fn session(&self) -> String {
        format!(
            "{}-{}",
            self.boot,
            self.stats.reconnects.load(Ordering::Relaxed)
        )
    }

    /// Queues `op`; a full queue or an oversized payload drops it (counted,
    /// and `false`).
    pub fn push(&self, op: ClusterOp) -> bool {
        let size = match &op {
            ClusterOp::Beat(b) => b.len(),
            ClusterOp::Send { body, .. }
            | ClusterOp::Ask { body, .. }
            | ClusterOp::StoreLog { body, .. }
            | ClusterOp::AskHistory { body, .. }
            | ClusterOp::Reply { body, .. } => body.len(),
            ClusterOp::LoadLog { .. } => 0,
        };
        if size > MAX_PAYLOAD || self.ops.try_send(op).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn is_up(&self) -> bool {
        self.stats.up.load(Ordering::Relaxed)
    }

    /// Whether log history is kept in JetStream now.
    pub fn has_history(&self) -> bool {
        self.is_up() && self.stats.history.load(Ordering::Relaxed)
    }
}

/// How to reach NATS (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    pub url: String,
    pub hub_id: String,
    pub prefix: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Extra CA for a NATS server with TLS (`tls://`).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Where the thread's events go.
#[derive(Clone)]
struct Sink {
    tx: Sender<FeedEvent>,
    waker: Arc<mio::Waker>,
}

impl Sink {
    fn send(&self, ev: ClusterEvent) {
        if self.tx.send(FeedEvent::Cluster(ev)).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// Starts the NATS thread; it connects (and reconnects) by itself.
///
/// # Errors
/// Only when the OS cannot start the thread or its runtime.
pub fn spawn(
    settings: NatsSettings,
    tx: Sender<FeedEvent>,
    waker: Arc<mio::Waker>,
) -> std::io::Result<ClusterLink> {
    let (ops_tx, ops_rx) = tokio::sync::mpsc::channel(OP_QUEUE);
    let link = ClusterLink::new(ops_tx);
    let stats = link.stats.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            log::info!(
                "cluster: hub {} joining {} (subjects {}.*)",
                settings.hub_id,
                settings.url,
                settings.prefix
            );
            rt.block_on(run(settings, Sink { tx, waker }, ops_rx, stats));
            log::debug!("cluster: thread exits");
        })?;
    Ok(link)
}

async fn connect(
    settings: &NatsSettings,
    sink: &Sink,
    stats: &Arc<LinkStats>,
) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new();
    if let (Some(u), Some(p)) = (&settings.user, &settings.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &settings.token {
        opts = opts.token(t.clone());
    }
    if let Some(ca) = &settings.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    let events = sink.clone();
    let ev_stats = stats.clone();
    opts = opts
        .name(format!("dockwire hub {}", settings.hub_id))
        .no_echo()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(3))
        .ping_interval(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            // 100 ms doubling to 2 s: a restarted nats-server is found quickly.
            Duration::from_millis(100u64.saturating_mul(1 << attempts.min(5)))
                .min(Duration::from_secs(2))
        })
        .event_callback(move |event| {
            let events = events.clone();
            let stats = ev_stats.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        log::info!("cluster: connected to NATS");
                        stats.up.store(true, Ordering::Relaxed);
                        stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        events.send(ClusterEvent::Up);
                    }
                    async_nats::Event::Disconnected => {
                        log::warn!("cluster: lost NATS; reconnecting");
                        stats.up.store(false, Ordering::Relaxed);
                        events.send(ClusterEvent::Down("disconnected from NATS".into()));
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        log::warn!("cluster: NATS dropped messages for this hub (slow consumer)");
                    }
                    other => log::debug!("cluster: NATS event: {other}"),
                }
            }
        });
    opts.connect(settings.url.as_str())
        .await
        .map_err(|e| format!("could not connect to {}: {e}", settings.url))
}

async fn run(
    settings: NatsSettings,
    sink: Sink,
    mut ops: tokio::sync::mpsc::Receiver<ClusterOp>,
    stats: Arc<LinkStats>,
) {
    let client = loop {
        match connect(&settings, &sink, &stats).await {
            Ok(c) => break c,
            Err(e) => {
                log::warn!("cluster: {e}; retrying in 2 s");
                sink.send(ClusterEvent::Down(e));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    // `retry_on_initial_connect` returns before the first connection: the
    // Connected event says when it is there.
    let beat_subject = format!("{}.beat", settings.prefix);
    let inbox_subject = format!("{}.to.{}", settings.prefix, settings.hub_id);
    let hist_subject = format!("{}.hist.{}", settings.prefix, settings.hub_id);
    let (mut beats, mut inbox, mut hist) = loop {
        let b = client.subscribe(beat_subject.clone()).await;
        let i = client.subscribe(inbox_subject.clone()).await;
        let h = client.subscribe(hist_subject.clone()).await;
        match (b, i, h) {
            (Ok(b), Ok(i), Ok(h)) => break (b, i, h),
            (b, i, h) => {
                log::warn!(
                    "cluster: could not subscribe ({:?} / {:?} / {:?}); retrying",
                    b.err(),
                    i.err(),
                    h.err()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let store = history::Store::new(client.clone(), &settings.prefix, stats.clone());
    tokio::spawn(store.clone().keep_stream());
    loop {
        // Backpressure: the loop has not caught up; NATS holds the rest.
        while sink.tx.len() > MAX_BACKLOG {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                send(&client, &settings, &sink, &stats, &store, op).await;
            }
            Some(msg) = beats.next() => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                if msg.payload.len() <= MAX_PAYLOAD {
                    sink.send(ClusterEvent::Beat(msg.payload));
                }
            }
            Some(msg) = hist.next() => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = msg.reply.filter(|_| msg.payload.len() <= 4096) {
                    sink.send(ClusterEvent::HistoryAsk { reply: reply.to_string(), body: msg.payload });
                }
            }
            Some(msg) = inbox.next() => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = msg.reply.clone() {
                    // A receipt: the asker learns this hub took it.
                    let _ = client.publish(reply, Bytes::new()).await;
                }
                let header = |name: &str| {
                    msg.headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_string())
                };
                let kind = match header(KIND).as_deref() {
                    Some("req") => PeerKind::Req,
                    Some("ev") => PeerKind::Ev,
                    _ => continue,
                };
                let Some(from) = header(FROM).filter(|f| valid_hub_id(f)) else {
                    continue;
                };
                if msg.payload.len() <= MAX_PAYLOAD {
                    sink.send(ClusterEvent::Message { from, kind, body: msg.payload });
                }
            }
        }
    }
}

async fn send(
    client: &async_nats::Client,
    settings: &NatsSettings,
    sink: &Sink,
    stats: &Arc<LinkStats>,
    store: &history::Store,
    op: ClusterOp,
) {
    let headers = |kind: PeerKind| {
        let mut h = HeaderMap::new();
        h.insert(FROM, settings.hub_id.as_str());
        h.insert(KIND, kind.as_str());
        h
    };
    let result = match op {
        ClusterOp::Beat(body) => client
            .publish(format!("{}.beat", settings.prefix), body)
            .await
            .map_err(|e| e.to_string()),
        ClusterOp::Send { to, kind, body } => client
            .publish_with_headers(format!("{}.to.{to}", settings.prefix), headers(kind), body)
            .await
            .map_err(|e| e.to_string()),
        ClusterOp::Ask { to, body, token } => {
            // The receipt is awaited off the op loop, so later ops do not wait.
            let client = client.clone();
            let subject = format!("{}.to.{to}", settings.prefix);
            let h = headers(PeerKind::Req);
            let events = sink.clone();
            tokio::spawn(async move {
                let req = async_nats::Request::new()
                    .payload(body)
                    .headers(h)
                    .timeout(Some(ASK_TIMEOUT));
                if let Err(e) = client.send_request(subject, req).await {
                    log::debug!("cluster: a relayed command was not taken: {e}");
                    events.send(ClusterEvent::Unanswered { token });
                }
            });
            Ok(())
        }
        ClusterOp::StoreLog {
            server,
            container,
            body,
        } => store.put(&server, &container, body).await,
        ClusterOp::Reply { subject, body } => client
            .publish(subject, body)
            .await
            .map_err(|e| e.to_string()),
        ClusterOp::AskHistory {
            to,
            body,
            conn,
            serial,
        } => {
            let client = client.clone();
            let subject = format!("{}.hist.{to}", settings.prefix);
            let events = sink.clone();
            tokio::spawn(async move {
                let req = async_nats::Request::new()
                    .payload(body)
                    .timeout(Some(ASK_TIMEOUT));
                let (status, body) = match client.send_request(subject, req).await {
                    Ok(msg) => split_answer(&msg.payload),
                    Err(e) => {
                        use async_nats::RequestErrorKind as K;
                        let (status, why) = match e.kind() {
                            K::NoResponders => (502, "the server's hub does not answer"),
                            K::TimedOut => (504, "the server's hub did not answer in time"),
                            K::Other => (502, "the cluster is unreachable"),
                        };
                        (
                            status,
                            Bytes::from(serde_json::json!({"error": why}).to_string()),
                        )
                    }
                };
                events.send(ClusterEvent::HistoryAnswer {
                    conn,
                    serial,
                    status,
                    body,
                });
            });
            Ok(())
        }
        ClusterOp::LoadLog { server, container } => {
            let store = store.clone();
            let events = sink.clone();
            tokio::spawn(async move {
                let records = store.load(&server, &container).await;
                events.send(ClusterEvent::LogHistory {
                    server,
                    container,
                    records,
                });
            });
            Ok(())
        }
    };
    match result {
        Ok(()) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            log::debug!("cluster: publish failed: {e}");
        }
    }
}

/// An answer on `P.hist.<hub>`: its 3-digit status and the body after it
/// (502 for anything else).
pub fn split_answer(payload: &[u8]) -> (u16, Bytes) {
    let status = payload
        .get(..3)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s));
    match status {
        Some(s) => (s, Bytes::copy_from_slice(&payload[3..])),
        None => (
            502,
            Bytes::from_static(b"{\"error\":\"a bad answer from the server's hub\"}"),
        ),
    }
}

/// A hub id: 1 to 64 bytes of `A-Z a-z 0-9 _ -` (it is a NATS subject token).
pub fn valid_hub_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The default hub id: the host name, made a valid id.
pub fn default_hub_id() -> String {
    let host = sysinfo::System::host_name().unwrap_or_else(|_| "hub".into());
    let id: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if valid_hub_id(&id) { id } else { "hub".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_subject_tokens() {
        assert!(valid_hub_id("hub-a_1"));
        for bad in ["", "a.b", "a b", "*", ">", &"x".repeat(65)] {
            assert!(!valid_hub_id(bad), "{bad:?}");
        }
        assert!(valid_hub_id(&default_hub_id()));
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let link = ClusterLink::new(tx);
        link.push(ClusterOp::Beat(Bytes::from_static(b"1")));
        link.push(ClusterOp::Beat(Bytes::from_static(b"2")));
        link.push(ClusterOp::Beat(Bytes::from(vec![0u8; MAX_PAYLOAD + 1])));
        assert_eq!(link.stats.dropped.load(Ordering::Relaxed), 2);
        assert!(matches!(rx.try_recv(), Ok(ClusterOp::Beat(b)) if &b[..] == b"1"));
    }
}
