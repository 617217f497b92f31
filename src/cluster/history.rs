//! Log history in JetStream (SPEC 11), on the NATS thread: the stream
//! `<P>_logs` (subjects `P.log.>`) holds the numbered lines of every log
//! stream the hubs follow, written by the hub that owns the server, so that
//! a hub that follows a stream after another did (its agent moved, or the
//! hub restarted) goes on with the same numbers, and a client's `since_seq`
//! is understood on any hub.
//!
//! A record is one batch of lines as the owner numbered them (the format is
//! `hub/log_store.rs`'s). Retention is bounded by the stream itself:
//! [`RECORDS_PER_STREAM`] records per log stream (each at least one line:
//! so at least the last 1,000 lines), [`MAX_BYTES`] in all, [`MAX_AGE`];
//! the oldest go first.
//!
//! JetStream is optional: when the server has none (or refuses the stream)
//! nothing is stored, every load answers empty, and the cluster is live
//! only; the stream is looked for again every [`RETRY`]. Nothing used here
//! needs a server newer than 2.9 (stream create/info, ordered pull
//! consumers, plain publishes into the stream's subjects).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::LinkStats;

/// Records kept per log stream.
pub const RECORDS_PER_STREAM: i64 = 1000;
/// Bytes the whole history stream holds at most.
pub const MAX_BYTES: i64 = 1 << 30;
/// How long a record is kept at most.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often the stream is looked for while JetStream is not there (and
/// checked while it is).
pub const RETRY: Duration = Duration::from_secs(5);
const CHECK: Duration = Duration::from_secs(30);
/// How long loading one stream's history may take before what arrived is used.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(3);
/// The most bytes of records one load hands the hub (the newest are kept).
pub const MAX_LOAD_BYTES: usize = 8 << 20;

/// The NATS thread's handle on the history stream.
#[derive(Clone)]
pub struct Store {
    client: async_nats::Client,
    js: jetstream::Context,
    prefix: String,
    name: String,
    stats: Arc<LinkStats>,
}

/// A subject token for any id: its bytes in hex (ids may hold dots).
fn token(id: &str) -> String {
    use std::fmt::Write;
    id.bytes()
        .fold(String::with_capacity(id.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The subject of one log stream's records.
pub fn subject(prefix: &str, server: &str, container: &str) -> String {
    format!("{prefix}.log.{}.{}", token(server), token(container))
}

/// The name of the history stream for subjects under `prefix`.
pub fn stream_name(prefix: &str) -> String {
    format!("{}_logs", prefix.replace('.', "_"))
}

impl Store {
    pub fn new(client: async_nats::Client, prefix: &str, stats: Arc<LinkStats>) -> Self {
        Store {
            js: jetstream::new(client.clone()),
            client,
            prefix: prefix.to_string(),
            name: stream_name(prefix),
            stats,
        }
    }

    fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![format!("{}.log.>", self.prefix)],
            max_messages_per_subject: RECORDS_PER_STREAM,
            max_bytes: MAX_BYTES,
            max_age: MAX_AGE,
            max_message_size: i32::try_from(super::MAX_PAYLOAD).unwrap_or(i32::MAX),
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            num_replicas: 1,
            description: Some("dockwire: numbered log lines, for resume on any hub".into()),
            ..Default::default()
        }
    }

    /// Keeps `history` true while the stream exists: creates it when the
    /// server has JetStream, looks again now and then.
    pub async fn keep_stream(self) {
        let mut said = false;
        loop {
            let wait = if self.client.connection_state() != async_nats::connection::State::Connected
            {
                Duration::from_millis(200)
            } else {
                match self.js.get_or_create_stream(self.config()).await {
                    Ok(_) => {
                        if !self.stats.history.swap(true, Ordering::Relaxed) {
                            log::info!(
                                "cluster: JetStream keeps log history (stream {})",
                                self.name
                            );
                        }
                        said = false;
                        CHECK
                    }
                    Err(e) => {
                        self.stats.history.store(false, Ordering::Relaxed);
                        if !said {
                            log::warn!(
                                "cluster: no JetStream for log history ({e}); \
                                 streams are live only and resume on the hub that serves them"
                            );
                            said = true;
                        }
                        RETRY
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Stores one record of a log stream (nothing without JetStream).
    ///
    /// # Errors
    /// The publish failed (the connection is gone).
    pub async fn put(&self, server: &str, container: &str, body: Bytes) -> Result<(), String> {
        if !self.stats.history.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.client
            .publish(subject(&self.prefix, server, container), body)
            .await
            .map_err(|e| e.to_string())?;
        self.stats.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The stored records of a log stream, oldest first; empty without
    /// JetStream, on any error, and (with what arrived) after [`LOAD_TIMEOUT`].
    pub async fn load(&self, server: &str, container: &str) -> Vec<Bytes> {
        if !self.stats.history.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut out = VecDeque::new();
        let filter = subject(&self.prefix, server, container);
        let read = self.read(filter, &mut out);
        if tokio::time::timeout(LOAD_TIMEOUT, read).await.is_err() {
            log::debug!("cluster: loading a log history timed out; using what arrived");
        }
        self.stats.loaded.fetch_add(1, Ordering::Relaxed);
        out.into()
    }

    async fn read(&self, filter: String, out: &mut VecDeque<Bytes>) {
        let stream = match self.js.get_stream(&self.name).await {
            Ok(s) => s,
            Err(e) => {
                log::debug!("cluster: history stream: {e}");
                return;
            }
        };
        let consumer = match stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
        {
            Ok(c) => c,
            Err(e) => {
                log::debug!("cluster: history consumer: {e}");
                return;
            }
        };
        let pending = consumer.cached_info().num_pending;
        if pending == 0 {
            return;
        }
        let Ok(mut messages) = consumer.messages().await else {
            return;
        };
        let mut bytes = 0usize;
        let mut seen = 0u64;
        while let Some(Ok(m)) = messages.next().await {
            seen += 1;
            let left = m.info().map_or(0, |i| i.pending);
            bytes += m.payload.len();
            out.push_back(m.payload.clone());
            while bytes > MAX_LOAD_BYTES && out.len() > 1 {
                if let Some(old) = out.pop_front() {
                    bytes -= old.len();
                }
            }
            if left == 0 || seen >= pending.max(RECORDS_PER_STREAM as u64) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_hold_any_id_as_one_token() {
        assert_eq!(subject("dockwire", "a.b", "c1"), "dockwire.log.612e62.6331");
        assert_eq!(stream_name("fleet.eu"), "fleet_eu_logs");
        let s = subject("p", "srv *>", "x y");
        assert_eq!(s.split('.').count(), 4);
        assert!(!s.contains([' ', '*', '>']));
    }
}
