//! One numbering of a log stream for the whole cluster (SPEC 7 + 11).
//!
//! - **Owner's numbers everywhere.** A hub that relays another hub's stream
//!   keeps the owner's `seq` in its ring ([`State::relayed_lines`]): a
//!   client that resumes on any hub names a line of the same numbering,
//!   and a viewer that lost its relay resumes it with `since_seq` (exact,
//!   or a `log_gap` of the owner's count) instead of a text match.
//! - **History in JetStream.** The owner stores every numbered batch it
//!   sends (`cluster::history`); a hub that starts a stream afresh while it
//!   owns the server (the agent moved here, or this hub restarted) first
//!   loads what is stored ([`State::on_stored_log`]), so its ring goes on
//!   with the previous owner's numbers and its new follower's history is
//!   joined to those lines like any resumed stream's.
//!
//! A record is JSON: `{"seq": <seq of its first line>, "lines":
//! [[stream, timestamp, text], ...]}`, at most [`RECORD_BYTES`] of text.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::cluster::ClusterOp;
use crate::feed::{LogLine, LogStream};

use super::logring::LogRing;
use super::topics::TopicKey;
use super::{Io, State};

/// A stored history that has not come by then is given up on: the
/// stream starts without it (the NATS thread answers within its own
/// `LOAD_TIMEOUT`; this is for an answer lost on the way).
pub const LOAD_GIVE_UP: std::time::Duration = std::time::Duration::from_secs(10);

/// Text bytes per stored record at most (a longer line goes alone).
const RECORD_BYTES: usize = 256 << 10;
/// Records decoded from one load at most, and lines per record.
const MAX_RECORDS: usize = 2_000;
const MAX_RECORD_LINES: usize = 10_000;

fn stream_code(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "o",
        LogStream::Stderr => "e",
        LogStream::Console => "c",
    }
}

/// Records for `lines`, the first numbered `first`.
pub fn encode_records(first: u64, lines: &[LogLine]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let mut end = start;
        let mut size = 0;
        while end < lines.len() && (end == start || size + lines[end].text.len() <= RECORD_BYTES) {
            size += lines[end].text.len();
            end += 1;
        }
        let body: Vec<Value> = lines[start..end]
            .iter()
            .map(|l| json!([stream_code(l.stream), l.timestamp, l.text]))
            .collect();
        let rec = json!({"seq": first.saturating_add(start as u64), "lines": body});
        out.push(Bytes::from(rec.to_string()));
        start = end;
    }
    out
}

/// A stored record: the seq of its first line, and its lines. `None` for
/// anything that is not one.
pub fn decode_record(body: &[u8]) -> Option<(u64, Vec<LogLine>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let seq = v.get("seq")?.as_u64().filter(|s| *s > 0)?;
    let lines = v.get("lines")?.as_array()?;
    if lines.len() > MAX_RECORD_LINES {
        return None;
    }
    let mut out = Vec::with_capacity(lines.len());
    for l in lines {
        let [s, ts, text] = l.as_array()?.as_slice() else {
            return None;
        };
        let stream = match s.as_str()? {
            "o" => LogStream::Stdout,
            "e" => LogStream::Stderr,
            "c" => LogStream::Console,
            _ => return None,
        };
        out.push(LogLine {
            stream,
            timestamp: ts.as_str()?.to_string(),
            text: text.as_str()?.to_string(),
        });
    }
    Some((seq, out))
}

/// A ring of stored records, in their numbering (a hole between two
/// records starts the ring again after it, as a known gap).
pub fn ring_of_records(records: &[Bytes]) -> Option<LogRing> {
    let mut ring: Option<LogRing> = None;
    for (first, mut lines) in records
        .iter()
        .take(MAX_RECORDS)
        .filter_map(|r| decode_record(r))
    {
        let r = ring.get_or_insert_with(|| LogRing::with_base(first - 1));
        let expected = r.last_seq().saturating_add(1);
        if first > expected {
            r.restart(first - 1, false);
        } else if first < expected {
            let dup = usize::try_from(expected - first).unwrap_or(usize::MAX);
            if dup >= lines.len() {
                continue;
            }
            lines.drain(..dup);
        }
        for l in lines {
            r.push(l);
        }
    }
    ring.filter(|r| !r.is_empty())
}

impl State {
    /// Stores lines of a stream this hub owns, numbered from `first`, in
    /// JetStream (when the cluster has it).
    pub(super) fn store_log_lines(&self, key: &TopicKey, first: u64, lines: &[LogLine]) {
        let (Some(c), TopicKey::Logs { server, container }) = (&self.cluster, key) else {
            return;
        };
        if lines.is_empty() || !c.link.has_history() || !self.owns(server) {
            return;
        }
        for body in encode_records(first, lines) {
            c.link.push(ClusterOp::StoreLog {
                server: server.clone(),
                container: container.clone(),
                body,
            });
        }
    }

    /// A new stream of a server owned here: its stored history is asked
    /// for first, its follower starts when it arrives. `false`: nothing to
    /// ask (no JetStream, not owned here): start the follower now.
    pub(super) fn load_stored_log(&mut self, io: &Io<'_>, key: &TopicKey) -> bool {
        let TopicKey::Logs { server, container } = key else {
            return false;
        };
        let Some(c) = &self.cluster else { return false };
        if !c.link.has_history() || !self.owns(server) {
            return false;
        }
        let asked = c.link.push(ClusterOp::LoadLog {
            server: server.clone(),
            container: container.clone(),
        });
        if !asked {
            return false;
        }
        match self.topics.get_mut(key).and_then(|t| t.log.as_mut()) {
            Some(f) => {
                f.loading = Some(io.now);
                true
            }
            None => false,
        }
    }

    /// The stored history of a stream arrived: the ring starts from it
    /// (the waiting are served), then the follower starts and its history
    /// is joined to those lines.
    pub(super) fn on_stored_log(
        &mut self,
        io: &mut Io<'_>,
        server: String,
        container: String,
        records: &[Bytes],
    ) {
        let key = TopicKey::Logs { server, container };
        let Some(f) = self.topics.get_mut(&key).and_then(|t| t.log.as_mut()) else {
            return;
        };
        if f.loading.take().is_none() {
            return;
        }
        if let Some(ring) = ring_of_records(records).filter(|_| !f.has_history) {
            log::debug!(
                "log stream {key:?} goes on from its stored history (seq {})",
                ring.last_seq()
            );
            f.ring = ring;
            self.history_ready(io, &key);
        }
        let suspended = self
            .topics
            .get(&key)
            .and_then(|t| t.log.as_ref())
            .is_some_and(|f| f.suspended);
        if !suspended {
            self.start_follower(io, &key);
        }
    }

    /// Once a tick: streams whose stored history never came start without it.
    pub(super) fn stored_logs_tick(&mut self, io: &mut Io<'_>) {
        let now = io.now;
        let late: Vec<TopicKey> = self
            .topics
            .iter_logs()
            .filter(|(_, f)| {
                f.loading
                    .is_some_and(|t| now.saturating_duration_since(t) >= LOAD_GIVE_UP)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in late {
            log::warn!("log stream {key:?}: its stored history did not come; starting without it");
            if let TopicKey::Logs { server, container } = &key {
                self.on_stored_log(io, server.clone(), container.clone(), &[]);
            }
        }
    }

    /// Lines of a relayed stream, numbered by its owner from `first`: kept
    /// in the owner's numbering. Lines already here are dropped; lines
    /// skipped by the owner's numbering are a gap of that count; after the
    /// owner said its numbering changed (`renumber`), its numbers are taken
    /// as they come.
    pub(super) fn relayed_lines(
        &mut self,
        io: &mut Io<'_>,
        key: &TopicKey,
        first: u64,
        mut lines: Vec<LogLine>,
    ) {
        let Some(f) = self.topics.get(key).and_then(|t| t.log.as_ref()) else {
            return;
        };
        let expected = f
            .ring
            .last_seq()
            .saturating_add(f.held.len() as u64)
            .saturating_add(1);
        let adopt = f.renumber || (f.ring.is_empty() && f.held.is_empty());
        if first != expected && (adopt || first > expected) {
            // Held lines go out in the old numbering before it changes.
            self.flush_held_of(io, key);
        }
        let Some(f) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) else {
            return;
        };
        if adopt {
            f.renumber = false;
            if first != expected {
                f.ring = LogRing::with_base(first - 1);
            }
        } else if first > expected {
            f.ring.restart(first - 1, false);
            self.gap_to_all(io, key, Some(first - expected));
        } else if first < expected {
            let dup = usize::try_from(expected - first).unwrap_or(usize::MAX);
            if dup >= lines.len() {
                return;
            }
            lines.drain(..dup);
        }
        self.on_log_lines(io, key, lines);
    }

    /// The owner of a relayed stream says lines were lost and it does not
    /// know how many (its numbering may have changed): subscribers are
    /// told, and the owner's next numbers are taken as they come.
    pub(super) fn relayed_gap(&mut self, io: &mut Io<'_>, key: &TopicKey) {
        self.flush_held_of(io, key);
        let Some(f) = self.topics.get_mut(key).and_then(|t| t.log.as_mut()) else {
            return;
        };
        f.renumber = true;
        // The waiting (no history yet) are served from what comes next.
        if f.has_history {
            self.gap_to_all(io, key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> LogLine {
        LogLine {
            stream: if i % 2 == 0 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            },
            timestamp: format!("2026-12-01T00:00:{:02}Z", i % 60),
            text: format!("line {i}"),
        }
    }

    #[test]
    fn records_round_trip_and_split() {
        let lines: Vec<LogLine> = (0..5).map(line).collect();
        let recs = encode_records(41, &lines);
        assert_eq!(recs.len(), 1);
        assert_eq!(decode_record(&recs[0]), Some((41, lines)));
        let big = LogLine {
            stream: LogStream::Console,
            timestamp: String::new(),
            text: "x".repeat(RECORD_BYTES - 10),
        };
        let recs = encode_records(7, &[big.clone(), big.clone(), line(1)]);
        assert_eq!(recs.len(), 2);
        assert_eq!(
            decode_record(&recs[1]).map(|(s, l)| (s, l.len())),
            Some((8, 2))
        );
        for bad in [
            &b"{}"[..],
            b"{\"seq\":0,\"lines\":[]}",
            b"{\"seq\":1,\"lines\":[[\"x\",\"\",\"\"]]}",
            b"{\"seq\":1,\"lines\":[[\"o\",\"\"]]}",
            b"not json",
        ] {
            assert_eq!(decode_record(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_ring_of_records_keeps_their_numbers() {
        let lines: Vec<LogLine> = (0..10).map(line).collect();
        let mut recs = encode_records(101, &lines[..4]);
        recs.extend(encode_records(103, &lines[2..7])); // overlaps two
        recs.push(Bytes::from_static(b"garbage"));
        recs.extend(encode_records(108, &lines[7..8]));
        let ring = ring_of_records(&recs).unwrap();
        assert_eq!(ring.last_seq(), 108);
        assert_eq!(ring.len(), 8);
        let (first, held) = ring.from_index(0);
        assert_eq!(first, 101);
        let texts: Vec<&str> = held.map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts[..7],
            [
                "line 0", "line 1", "line 2", "line 3", "line 4", "line 5", "line 6"
            ]
        );
        // A hole: the ring starts again after it.
        let mut holed = encode_records(1, &lines[..2]);
        holed.extend(encode_records(10, &lines[2..3]));
        let ring = ring_of_records(&holed).unwrap();
        assert_eq!((ring.last_seq(), ring.len()), (10, 1));
        assert!(ring_of_records(&[]).is_none());
    }
}
