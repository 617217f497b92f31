//! The agent's Docker side (SPEC 6): the daemon's own Docker feed
//! ([`crate::feed::docker`], bollard on its own thread) turned into the
//! agent protocol's extension messages.
//!
//! Owns the bridge thread, which reads the feed's events, keeps the
//! container table (sent whole on every (re)connect), and hands each change
//! to the session as a ready-to-send message: `docker_status`, `containers`
//! (in chunks that fit one frame, `"more": true` on all but the last),
//! `container_state_change`, `container_stats`, `log_batch` (history chunks
//! flagged `"history": true`, the last also `"last": true`) and
//! `log_stream_stopped`.
//!
//! Invariants: one follower per container whatever the number of browsers
//! behind the hub (the hub asks once; a repeated `subscribe_logs` restarts
//! it); followers and sampling stop when the connection to the hub is lost
//! (the hub asks again after it reconnects); every message fits the hub's
//! frame limit (lines are cut to `max_line`, batches split).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use parking_lot::Mutex;
use serde_json::json;

use crate::feed::docker::{DockerHandle, MAX_TAIL};
use crate::feed::{DockerEvent, DockerRequest, FeedEvent, LogLine, LogStream};
use crate::protocol::model::{Container, ContainerStats};

use super::wire::{Outgoing, cap_json_len};

/// Bytes left for a message's envelope when packing a frame.
const ENVELOPE: usize = 512;
/// Waiting `LogLines` of one follower are merged up to this many lines
/// (the merged lines are still split into batches that fit a frame).
const MERGE_MAX_LINES: usize = 4096;

/// What the session tells the bridge and asks of it.
pub struct DockerBridge {
    handle: DockerHandle,
    state: Arc<Mutex<Table>>,
    max_frame: usize,
}

#[derive(Default)]
struct Table {
    /// `None` until the engine was first reached or missed.
    up: Option<Result<(), String>>,
    containers: HashMap<String, Container>,
    /// Container id -> its follower id.
    follows: HashMap<String, u64>,
    next_follow: u64,
}

impl DockerBridge {
    /// Starts the Docker feed for `host` and the bridge thread feeding `tx`.
    ///
    /// # Errors
    /// When a thread cannot start.
    pub fn start(
        host: String,
        tx: Sender<Outgoing>,
        shutdown: Arc<AtomicBool>,
        max_frame: usize,
        max_line: usize,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (feed_tx, feed_rx) = crossbeam_channel::unbounded();
        let handle = crate::feed::docker::spawn_for_channel(host, feed_tx)?;
        let state = Arc::new(Mutex::new(Table {
            next_follow: 1,
            ..Table::default()
        }));
        let bridge = Bridge {
            rx: feed_rx,
            tx,
            shutdown,
            state: Arc::clone(&state),
            max_frame,
            max_line,
        };
        let thread = thread::Builder::new()
            .name("agent-docker".into())
            .spawn(move || bridge.run())?;
        Ok((
            DockerBridge {
                handle,
                state,
                max_frame,
            },
            thread,
        ))
    }

    /// A new connection to the hub: forget the old one's followers and
    /// sampling, and return what the hub must hear first (engine state and
    /// the whole table).
    pub fn on_connected(&self) -> Vec<String> {
        let mut t = self.state.lock();
        for (_, follow_id) in t.follows.drain() {
            self.handle.request(DockerRequest::Unfollow { follow_id });
        }
        self.handle.request(DockerRequest::Stats { interval: None });
        let mut out = Vec::new();
        match &t.up {
            Some(Ok(())) => {
                out.push(json!({"type": "docker_status", "up": true}).to_string());
                let mut list: Vec<&Container> = t.containers.values().collect();
                list.sort_by(|a, b| a.name.cmp(&b.name));
                out.extend(table_messages(&list, self.max_frame));
            }
            Some(Err(why)) => {
                out.push(json!({"type": "docker_status", "up": false, "reason": why}).to_string())
            }
            None => {}
        }
        out
    }

    /// `subscribe_logs`: (re)start the container's one follower.
    pub fn subscribe_logs(&self, container_id: &str, tail: usize) {
        let mut t = self.state.lock();
        let follow_id = t.next_follow;
        t.next_follow += 1;
        if let Some(old) = t.follows.insert(container_id.to_string(), follow_id) {
            self.handle
                .request(DockerRequest::Unfollow { follow_id: old });
        }
        self.handle.request(DockerRequest::Follow {
            follow_id,
            container_id: container_id.to_string(),
            tail: tail.min(MAX_TAIL),
        });
    }

    /// `unsubscribe_logs`.
    pub fn unsubscribe_logs(&self, container_id: &str) {
        if let Some(follow_id) = self.state.lock().follows.remove(container_id) {
            self.handle.request(DockerRequest::Unfollow { follow_id });
        }
    }

    /// `subscribe_stats` / `unsubscribe_stats`.
    pub fn sample_stats(&self, interval: Option<Duration>) {
        self.handle.request(DockerRequest::Stats { interval });
    }
}

/// The bridge thread: feed events in, messages for the hub out.
struct Bridge {
    rx: Receiver<FeedEvent>,
    tx: Sender<Outgoing>,
    shutdown: Arc<AtomicBool>,
    state: Arc<Mutex<Table>>,
    max_frame: usize,
    max_line: usize,
}

impl Bridge {
    fn run(self) {
        // An event taken while merging log lines, handled next.
        let mut held: Option<DockerEvent> = None;
        while !self.shutdown.load(Ordering::Relaxed) {
            let ev = match held.take() {
                Some(ev) => ev,
                None => match self.rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(FeedEvent::Docker(ev)) => ev,
                    Ok(FeedEvent::LocalMetrics(_) | FeedEvent::Cluster(_))
                    | Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let ev = self.merge_waiting_lines(ev, &mut held);
            for msg in self.messages(ev) {
                if !self.send(msg) {
                    return;
                }
            }
        }
    }

    /// A busy container's follower sends many small `LogLines`; the ones
    /// of the same follower already waiting in the channel join `ev`, up to
    /// [`MERGE_MAX_LINES`], so the hub gets fewer, fuller `log_batch`es
    /// (one message per batch is what the hub's fan-out costs). Never
    /// waits; the first other event is left in `held`, so order is kept.
    fn merge_waiting_lines(&self, ev: DockerEvent, held: &mut Option<DockerEvent>) -> DockerEvent {
        let DockerEvent::LogLines {
            follow_id,
            container_id,
            mut lines,
        } = ev
        else {
            return ev;
        };
        while lines.len() < MERGE_MAX_LINES {
            match self.rx.try_recv() {
                Ok(FeedEvent::Docker(DockerEvent::LogLines {
                    follow_id: next_follow,
                    container_id: next_container,
                    lines: more,
                })) if next_follow == follow_id && next_container == container_id => {
                    lines.extend(more);
                }
                Ok(FeedEvent::Docker(other)) => {
                    *held = Some(other);
                    break;
                }
                Ok(FeedEvent::LocalMetrics(_) | FeedEvent::Cluster(_)) => {}
                Err(_) => break,
            }
        }
        DockerEvent::LogLines {
            follow_id,
            container_id,
            lines,
        }
    }

    /// Hands one message to the session; waits while its queue is full
    /// (the feed then holds log lines back), gives up at shutdown.
    fn send(&self, text: String) -> bool {
        let mut item = Outgoing::Raw(text);
        loop {
            match self.tx.send_timeout(item, Duration::from_millis(200)) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(back)) => {
                    if self.shutdown.load(Ordering::Relaxed) {
                        return false;
                    }
                    item = back;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    /// The messages one feed event becomes (the table is updated here).
    fn messages(&self, ev: DockerEvent) -> Vec<String> {
        let history = matches!(ev, DockerEvent::LogHistory { .. });
        let mut t = self.state.lock();
        match ev {
            DockerEvent::Up { containers } => {
                t.up = Some(Ok(()));
                t.containers = containers.into_iter().map(|c| (c.id.clone(), c)).collect();
                let mut out = vec![json!({"type": "docker_status", "up": true}).to_string()];
                let mut list: Vec<&Container> = t.containers.values().collect();
                list.sort_by(|a, b| a.name.cmp(&b.name));
                out.extend(table_messages(&list, self.max_frame));
                out
            }
            DockerEvent::Down { reason } => {
                log::warn!("docker is down: {reason}");
                t.up = Some(Err(reason.clone()));
                vec![json!({"type": "docker_status", "up": false, "reason": reason}).to_string()]
            }
            DockerEvent::Changed(c) => {
                let msg = json!({"type": "container_state_change", "container": c}).to_string();
                t.containers.insert(c.id.clone(), c);
                vec![msg]
            }
            DockerEvent::Removed { id } => {
                t.containers.remove(&id);
                vec![
                    json!({"type": "container_state_change", "container": {"id": id, "state": "removed"}})
                        .to_string(),
                ]
            }
            DockerEvent::Stats(stats) => stats_messages(&stats, self.max_frame),
            DockerEvent::LogHistory {
                follow_id,
                container_id,
                lines,
            }
            | DockerEvent::LogLines {
                follow_id,
                container_id,
                lines,
            } => {
                // Lines of a follower that was replaced or stopped are stale.
                if t.follows.get(&container_id) != Some(&follow_id) {
                    return Vec::new();
                }
                self.log_messages(&container_id, lines, history)
            }
            DockerEvent::LogEnded {
                follow_id,
                container_id,
                reason,
                engine_lost,
            } => {
                if t.follows.get(&container_id) != Some(&follow_id) {
                    return Vec::new();
                }
                t.follows.remove(&container_id);
                // `resumable`: the engine went away, not the container; the
                // hub suspends the stream and asks again (SPEC 7).
                let mut msg = json!({"type": "log_stream_stopped", "container_id": container_id, "message": reason});
                if engine_lost {
                    msg["resumable"] = true.into();
                }
                vec![msg.to_string()]
            }
            DockerEvent::ActionDone { .. } => Vec::new(),
        }
    }

    /// `log_batch` messages that each fit one frame, lines in order.
    fn log_messages(&self, container_id: &str, lines: Vec<LogLine>, history: bool) -> Vec<String> {
        let budget = self
            .max_frame
            .saturating_sub(ENVELOPE + container_id.len())
            .max(1024);
        let max_line = self.max_line.min(budget / 2);
        let items = lines.into_iter().map(|l| {
            let mut line = l.text;
            cap_json_len(&mut line, max_line);
            let stream = match l.stream {
                LogStream::Stdout => "stdout",
                LogStream::Stderr => "stderr",
                LogStream::Console => "console",
            };
            to_json(&json!({"stream": stream, "timestamp": l.timestamp, "line": line}))
        });
        let id = to_json(&container_id);
        // History always ends with a batch marked last, even an empty one.
        pack(items, budget, history, |lines, last| {
            let flags = match (history, last) {
                (true, true) => r#","history":true,"last":true"#,
                (true, false) => r#","history":true"#,
                (false, _) => "",
            };
            format!(r#"{{"type":"log_batch","container_id":{id},"lines":[{lines}]{flags}}}"#)
        })
    }
}

fn to_json(v: &impl serde::Serialize) -> String {
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

/// Packs JSON items, each serialized once, into arrays of at most `budget`
/// bytes, in order; `wrap(joined items, is_last)` makes each message.
/// `always`: one message even when there are no items.
fn pack(
    items: impl IntoIterator<Item = String>,
    budget: usize,
    always: bool,
    wrap: impl Fn(&str, bool) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut joined = String::new();
    for item in items {
        if !joined.is_empty() && joined.len() + 1 + item.len() > budget {
            out.push(wrap(&joined, false));
            joined.clear();
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(&item);
    }
    if !joined.is_empty() || always {
        out.push(wrap(&joined, true));
    }
    out
}

/// The whole table as `containers` messages that fit one frame each.
fn table_messages(list: &[&Container], max_frame: usize) -> Vec<String> {
    let budget = max_frame.saturating_sub(ENVELOPE).max(1024);
    let items = list.iter().filter_map(|c| {
        let item = to_json(c);
        if item.len() > budget {
            log::warn!(
                "container {} is too large to describe to the hub; left out",
                c.id
            );
            return None;
        }
        Some(item)
    });
    // An empty table is still one message: the hub must learn it is empty.
    pack(items, budget, true, |containers, last| {
        let more = if last { "" } else { r#","more":true"# };
        format!(r#"{{"type":"containers","containers":[{containers}]{more}}}"#)
    })
}

/// One round of usage as `container_stats` messages that fit one frame each.
fn stats_messages(stats: &[ContainerStats], max_frame: usize) -> Vec<String> {
    // An entry is at most ~250 bytes: ids are 64 hex digits, the rest numbers.
    let per = (max_frame.saturating_sub(ENVELOPE) / 256).max(1);
    stats
        .chunks(per)
        .map(|c| json!({"type": "container_stats", "stats": c}).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn container(i: usize) -> Container {
        Container {
            id: format!("{i:064x}"),
            name: format!("c{i}"),
            image: "img".into(),
            state: "running".into(),
            status: "Up".into(),
            created: "2026-01-01T00:00:00Z".into(),
            labels: (0..20)
                .map(|k| (format!("label{k}"), "v".repeat(40)))
                .collect(),
            started_at: None,
            exit_code: None,
            health: None,
        }
    }

    #[test]
    fn a_large_table_is_sent_in_chunks_that_fit_a_frame() {
        let all: Vec<Container> = (0..300).map(container).collect();
        let refs: Vec<&Container> = all.iter().collect();
        let msgs = table_messages(&refs, 64 * 1024);
        assert!(msgs.len() > 1);
        let mut n = 0;
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= 64 * 1024, "{}", m.len());
            let v: Value = serde_json::from_str(m).unwrap();
            assert_eq!(v["more"].as_bool().unwrap_or(false), i + 1 < msgs.len());
            n += v["containers"].as_array().unwrap().len();
        }
        assert_eq!(n, 300);
        // An empty table is still one message: the hub must learn it is empty.
        assert_eq!(table_messages(&[], 64 * 1024).len(), 1);
    }

    #[test]
    fn log_batches_fit_a_frame_keep_order_and_mark_history() {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let b = Bridge {
            rx: crossbeam_channel::never(),
            tx,
            shutdown: Arc::new(AtomicBool::new(false)),
            state: Arc::new(Mutex::new(Table::default())),
            max_frame: 8 * 1024,
            max_line: 16 * 1024,
        };
        let lines: Vec<LogLine> = (0..500)
            .map(|i| LogLine {
                stream: LogStream::Stderr,
                timestamp: "2026-01-01T00:00:00.000000001Z".into(),
                text: format!(
                    "line {i} {}",
                    if i == 7 {
                        "x".repeat(20_000)
                    } else {
                        String::new()
                    }
                ),
            })
            .collect();
        let msgs = b.log_messages("cid", lines, true);
        let mut seen = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= 8 * 1024, "{}", m.len());
            let v: Value = serde_json::from_str(m).unwrap();
            assert_eq!(v["history"], true);
            assert_eq!(v["last"].as_bool().unwrap_or(false), i + 1 == msgs.len());
            for l in v["lines"].as_array().unwrap() {
                assert_eq!(l["stream"], "stderr");
                seen.push(
                    l["line"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .nth(1)
                        .unwrap()
                        .to_string(),
                );
            }
        }
        let want: Vec<String> = (0..500).map(|i| i.to_string()).collect();
        assert_eq!(seen, want);
        // An empty history still says it is complete.
        let empty = b.log_messages("cid", Vec::new(), true);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].contains("\"last\":true"));
        assert!(b.log_messages("cid", Vec::new(), false).is_empty());
    }

    fn lines_event(follow_id: u64, container: &str, from: usize, n: usize) -> DockerEvent {
        DockerEvent::LogLines {
            follow_id,
            container_id: container.into(),
            lines: (from..from + n)
                .map(|i| LogLine {
                    stream: LogStream::Stdout,
                    timestamp: String::new(),
                    text: i.to_string(),
                })
                .collect(),
        }
    }

    fn texts(ev: &DockerEvent) -> Vec<String> {
        match ev {
            DockerEvent::LogLines { lines, .. } => lines.iter().map(|l| l.text.clone()).collect(),
            _ => panic!("not LogLines"),
        }
    }

    #[test]
    fn waiting_lines_of_one_follower_merge_in_order_and_stop_at_another_event() {
        let (feed_tx, feed_rx) = crossbeam_channel::unbounded();
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let b = Bridge {
            rx: feed_rx,
            tx,
            shutdown: Arc::new(AtomicBool::new(false)),
            state: Arc::new(Mutex::new(Table::default())),
            max_frame: 64 * 1024,
            max_line: 16 * 1024,
        };
        for k in 1..4 {
            feed_tx
                .send(FeedEvent::Docker(lines_event(1, "a", k * 10, 10)))
                .unwrap();
        }
        // Another follower's lines end the merge and are handled next.
        feed_tx
            .send(FeedEvent::Docker(lines_event(2, "b", 0, 1)))
            .unwrap();
        feed_tx
            .send(FeedEvent::Docker(lines_event(1, "a", 40, 10)))
            .unwrap();
        let mut held = None;
        let merged = b.merge_waiting_lines(lines_event(1, "a", 0, 10), &mut held);
        let want: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        assert_eq!(texts(&merged), want);
        let held = held.expect("the other follower's event is kept");
        assert!(matches!(&held, DockerEvent::LogLines { follow_id: 2, .. }));
        // Not a LogLines: passed through, nothing taken from the channel.
        let mut none = None;
        let other = b.merge_waiting_lines(DockerEvent::Removed { id: "x".into() }, &mut none);
        assert!(matches!(other, DockerEvent::Removed { .. }) && none.is_none());
        assert_eq!(b.rx.len(), 1);
        // At most MERGE_MAX_LINES lines are merged; the rest wait.
        for k in 0..10 {
            feed_tx
                .send(FeedEvent::Docker(lines_event(1, "a", 50 + k * 1000, 1000)))
                .unwrap();
        }
        let mut held = None;
        let big = b.merge_waiting_lines(lines_event(1, "a", 0, 1), &mut held);
        assert!(held.is_none());
        let n = texts(&big).len();
        assert!(
            (MERGE_MAX_LINES..MERGE_MAX_LINES + 1000).contains(&n),
            "{n}"
        );
        assert!(!b.rx.is_empty());
    }
}
