//! One log follower: a `LogHistory` of the last `tail` lines, then live
//! `LogLines` until the container stops (or the task is aborted).
//!
//! How history and live meet without a gap or a duplicate: Docker's `since`
//! has whole-second precision and its timestamps are not even monotonic
//! across stdout and stderr, so the seam is found by content instead.
//! 1. Two requests go out together: the history (`tail=N`, no follow) and
//!    the live stream (`follow`, `tail = JOIN_SLACK`). Docker serves a
//!    follow request from one snapshot of the log file: its replayed tail
//!    and its live part have no gap between them. The live stream is not
//!    read (beyond its first record) until the history is complete, so
//!    Docker, not this process, holds what it has to say meanwhile.
//! 2. The history's last complete record is the *anchor* (see
//!    `lines::HistoryBuilder`). In the live stream, the records up to the
//!    anchor (matched as a window, by stream, nanosecond timestamp and
//!    bytes) are dropped; everything after it is new. Whichever snapshot
//!    Docker took first, the anchor is in that stream: in its replayed tail
//!    or in its live part.
//! 3. If the anchor is not in it (more than the slack was written between
//!    the two snapshots), the live stream is requested again with `since` =
//!    the anchor's second (`tail=all`; Docker scans the whole file for that,
//!    so it is only the fallback), and the anchor is matched the same way.
//!    Should that fail too (the log was rotated away under us), records
//!    stamped after the anchor are taken as new.
//! 4. When a follow stream ends (the container stopped), Docker may not have
//!    sent the last lines written just before the stop (its follow reader
//!    quits at end of file once the container is gone). The end of the log
//!    is read once more, joined after the last record seen the same way,
//!    and only then is unfinished text flushed and `LogEnded` sent.
//!
//! Live batching: after one record arrives, every record already buffered is
//! taken without waiting (`now_or_never`), up to [`BATCH_MAX_LINES`] lines or
//! [`BATCH_MAX_BYTES`]; a lone line goes out at once. Before reading more,
//! the follower waits while the feed channel's backlog is over
//! [`LOG_BACKLOG_MAX_EVENTS`], so Docker, not this process, holds the excess.

use std::collections::VecDeque;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures_util::{FutureExt, Stream, StreamExt};

use super::engine::parse_rfc3339;
use super::lines::{ANCHOR_WINDOW, Assembler, HistoryBuilder, Joiner, Record, Verdict};
use super::{BATCH_MAX_BYTES, BATCH_MAX_LINES, LOG_BACKLOG_MAX_EVENTS, MAX_TAIL, Sink, error_text};
use crate::feed::{DockerEvent, LogLine};

/// Extra records the follow request replays beyond the history's, to cover
/// output written between the two snapshots.
const JOIN_SLACK: usize = 2048;
/// How often a follower re-checks the feed channel's backlog.
const BACKLOG_POLL: Duration = Duration::from_millis(2);

type Item = Result<LogOutput, bollard::errors::Error>;

/// Follows `container_id`'s logs; returns the follow id, why it ended and
/// whether that was the engine going away rather than the container
/// (checked with a ping when the reason is not the container's own end).
pub(super) async fn follow(
    docker: Docker,
    sink: Sink,
    follow_id: u64,
    container_id: String,
    tail: usize,
) -> (u64, String, bool) {
    let mut f = Follower {
        sink,
        follow_id,
        container_id,
        asm: Assembler::default(),
        recent: VecDeque::with_capacity(ANCHOR_WINDOW),
        batch: Batch::default(),
        taken: 0,
    };
    let reason = f.run(&docker, tail).await;
    let container_end = matches!(
        reason.as_str(),
        "container stopped"
            | "container removed"
            | "container restarted"
            | "the event loop is gone"
    );
    let engine_lost = !container_end && docker.ping().await.is_err();
    (follow_id, reason, engine_lost)
}

struct Follower {
    sink: Sink,
    follow_id: u64,
    container_id: String,
    asm: Assembler,
    /// The last records taken (starting as the history's anchor): where a
    /// catch-up read continues.
    recent: VecDeque<Record>,
    batch: Batch,
    /// Records taken as new, all streams together (for logs).
    taken: u64,
}

/// How one stream ended.
enum StreamEnd {
    /// The stream ended normally; `joined` tells whether the anchor was found.
    Ended {
        joined: bool,
    },
    /// The anchor was not in this stream.
    Missed,
    Failed(String),
    /// The loop is gone.
    Gone,
}

fn logs_options(follow: bool, tail: String) -> LogsOptions {
    LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        since: 0,
        until: 0,
        timestamps: true,
        tail,
    }
}

/// Everything from a second before the anchor window's oldest record on.
/// Docker scans the whole log file for this: only for the rare retry.
fn since_options(follow: bool, anchor: &[Record]) -> LogsOptions {
    let oldest = anchor
        .iter()
        .filter_map(|r| std::str::from_utf8(&r.ts).ok().and_then(parse_rfc3339))
        .map(|(secs, _)| secs)
        .min()
        .unwrap_or(0);
    let since = i32::try_from(oldest.saturating_sub(1)).unwrap_or(0).max(0);
    LogsOptions {
        since,
        ..logs_options(follow, "all".into())
    }
}

impl Follower {
    async fn run(&mut self, docker: &Docker, tail: usize) -> String {
        let want = tail.min(MAX_TAIL);
        // At least one record, so there is an anchor even for `tail: 0`.
        let h_tail = want.max(1);
        // The anchor is among the last records of the log when the history
        // was read, whatever `tail` is: the live request need not replay more.
        let limit = JOIN_SLACK;
        let cid = self.container_id.clone();
        let mut live = Box::pin(docker.logs(&cid, Some(logs_options(true, limit.to_string()))));
        let mut first: Option<Option<Item>> = None;
        let history = {
            let h = read_history(docker, &cid, h_tail, want);
            let mut h = std::pin::pin!(h);
            loop {
                tokio::select! {
                    res = &mut h => break res,
                    // Gets the live request going; only its first record is taken.
                    item = live.next(), if first.is_none() => first = Some(item),
                }
            }
        };
        let hist = match history {
            Ok(h) => h,
            Err(reason) => return reason,
        };
        let ev = DockerEvent::LogHistory {
            follow_id: self.follow_id,
            container_id: cid.clone(),
            lines: hist.lines,
        };
        if !self.sink.send(ev) {
            return "the event loop is gone".into();
        }
        self.asm = hist.asm;
        self.recent = hist.anchor.iter().cloned().collect();
        let anchor = hist.anchor;
        let mut joiner = if anchor.is_empty() {
            // The log was empty: all it holds now is new, however much.
            live = Box::pin(docker.logs(&cid, Some(logs_options(true, "all".into()))));
            first = None;
            Joiner::Open
        } else {
            Joiner::new(&anchor, limit)
        };

        // Stage 0: the request made with the history. Stage 1: the anchor
        // was not in it, so ask from the anchor's second on. Stage 2: not
        // there either (rotated away): join by timestamp.
        let mut stage = 0;
        loop {
            let end = self.pump(&mut live, first.take(), &mut joiner).await;
            match end {
                StreamEnd::Ended { joined: true } => break,
                StreamEnd::Ended { joined: false } | StreamEnd::Missed if stage < 2 => {
                    stage += 1;
                    joiner = if stage == 1 {
                        log::debug!(
                            "follower {}: anchor missed, asking since the anchor",
                            self.follow_id
                        );
                        Joiner::new(&anchor, usize::MAX)
                    } else {
                        log::warn!(
                            "follower {}: no exact seam in {cid}'s log; joining by timestamp",
                            self.follow_id
                        );
                        Joiner::after(&anchor)
                    };
                    live = Box::pin(docker.logs(&cid, Some(since_options(true, &anchor))));
                }
                StreamEnd::Ended { joined: false } | StreamEnd::Missed => break,
                StreamEnd::Failed(reason) => return reason,
                StreamEnd::Gone => return "the event loop is gone".into(),
            }
        }
        drop(live);

        if let Some(reason) = self.catch_up(docker).await {
            return reason;
        }
        self.asm.flush(&mut |l| self.batch.push(l));
        if !self.send_batch() {
            return "the event loop is gone".into();
        }
        end_reason(docker, &cid).await
    }

    /// Reads the end of the log again and takes what comes after the last
    /// record seen. `Some` when the follower must end with that reason.
    async fn catch_up(&mut self, docker: &Docker) -> Option<String> {
        let anchor: Vec<Record> = self.recent.iter().cloned().collect();
        for exact_tail in [true, false] {
            let (opts, mut joiner) = if anchor.is_empty() {
                (logs_options(false, "all".into()), Joiner::Open)
            } else if exact_tail {
                (
                    logs_options(false, JOIN_SLACK.to_string()),
                    Joiner::new(&anchor, JOIN_SLACK),
                )
            } else {
                (
                    since_options(false, &anchor),
                    Joiner::new(&anchor, usize::MAX),
                )
            };
            let mut s = Box::pin(docker.logs(&self.container_id, Some(opts)));
            let before = self.taken;
            match self.pump(&mut s, None, &mut joiner).await {
                StreamEnd::Ended { joined: true } => {
                    if self.taken > before {
                        log::debug!(
                            "follower {}: catch-up took {} records",
                            self.follow_id,
                            self.taken - before
                        );
                    }
                    return None;
                }
                StreamEnd::Ended { joined: false } | StreamEnd::Missed => {}
                // E.g. the container was removed meanwhile.
                StreamEnd::Failed(e) => {
                    log::debug!("follower {}: no catch-up: {e}", self.follow_id);
                    return None;
                }
                StreamEnd::Gone => return Some("the event loop is gone".into()),
            }
        }
        log::debug!("follower {}: catch-up found no seam", self.follow_id);
        None
    }

    /// Reads `stream` (after `first`, an item already taken from it) until it
    /// ends, sending new lines in batches. Unfinished text stays in the
    /// assembler.
    async fn pump<S>(
        &mut self,
        stream: &mut S,
        mut first: Option<Option<Item>>,
        joiner: &mut Joiner,
    ) -> StreamEnd
    where
        S: Stream<Item = Item> + Unpin,
    {
        loop {
            while self.sink.backlog() > LOG_BACKLOG_MAX_EVENTS {
                tokio::time::sleep(BACKLOG_POLL).await;
            }
            let mut item = match first.take() {
                Some(item) => item,
                None => stream.next().await,
            };
            let end = loop {
                match item {
                    Some(Ok(out)) => {
                        if let Some(rec) = Record::from_output(out) {
                            match joiner.offer(&rec) {
                                Verdict::Old => {}
                                Verdict::New => {
                                    self.taken += 1;
                                    self.asm.push(&rec, &mut |l| self.batch.push(l));
                                    if self.recent.len() == ANCHOR_WINDOW {
                                        self.recent.pop_front();
                                    }
                                    self.recent.push_back(rec);
                                }
                                Verdict::Missed => return StreamEnd::Missed,
                            }
                        }
                    }
                    Some(Err(e)) => {
                        break Some(StreamEnd::Failed(format!(
                            "log stream failed: {}",
                            error_text(&e)
                        )));
                    }
                    None => {
                        break Some(StreamEnd::Ended {
                            joined: matches!(joiner, Joiner::Open),
                        });
                    }
                }
                if self.batch.is_full() {
                    break None;
                }
                // Take what is already buffered; never wait here.
                match stream.next().now_or_never() {
                    Some(next) => item = next,
                    None => break None,
                }
            };
            if !self.send_batch() {
                return StreamEnd::Gone;
            }
            if let Some(end) = end {
                return end;
            }
            // Let the event watcher and other followers run between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Sends the collected lines, if any. `false` when the loop is gone.
    fn send_batch(&mut self) -> bool {
        if self.batch.lines.is_empty() {
            return true;
        }
        self.sink.send(DockerEvent::LogLines {
            follow_id: self.follow_id,
            container_id: self.container_id.clone(),
            lines: self.batch.take(),
        })
    }
}

/// Reads the history request to its end.
async fn read_history(
    docker: &Docker,
    container_id: &str,
    h_tail: usize,
    want: usize,
) -> Result<super::lines::History, String> {
    let mut builder = HistoryBuilder::new(want);
    let mut s =
        std::pin::pin!(docker.logs(container_id, Some(logs_options(false, h_tail.to_string()))));
    while let Some(item) = s.next().await {
        match item {
            Ok(out) => {
                if let Some(rec) = Record::from_output(out) {
                    builder.push(rec);
                }
            }
            Err(e) => return Err(format!("could not read logs: {}", error_text(&e))),
        }
    }
    Ok(builder.finish())
}

/// Lines collected for one `LogLines`.
#[derive(Default)]
struct Batch {
    lines: Vec<LogLine>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, line: LogLine) {
        self.bytes += line.text.len() + line.timestamp.len();
        self.lines.push(line);
    }

    fn is_full(&self) -> bool {
        self.lines.len() >= BATCH_MAX_LINES || self.bytes >= BATCH_MAX_BYTES
    }

    fn take(&mut self) -> Vec<LogLine> {
        self.bytes = 0;
        std::mem::take(&mut self.lines)
    }
}

/// Why a follow stream that ended cleanly ended.
async fn end_reason(docker: &Docker, container_id: &str) -> String {
    use bollard::models::ContainerStateStatusEnum as S;
    match docker.inspect_container(container_id, None).await {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => "container removed".into(),
        Ok(info) => match info.state.and_then(|s| s.status) {
            Some(S::RUNNING | S::RESTARTING) => "container restarted".into(),
            Some(S::REMOVING) => "container removed".into(),
            _ => "container stopped".into(),
        },
        Err(e) => format!("log stream ended: {}", error_text(&e)),
    }
}
