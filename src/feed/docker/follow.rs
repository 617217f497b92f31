//! One log follower: a `LogHistory` of the last `tail` lines, then live
//! `LogLines` until the container stops (or the task is aborted).
//!
//! How history and live meet without a gap or a duplicate: Docker's `since`
//! has whole-second precision and its timestamps are not even monotonic
//! across stdout and stderr, so the seam is found by content instead.
//! 1. A non-follow request with `tail=N` gives the history; its last
//!    complete record is the *anchor* (see `lines::HistoryBuilder`).
//! 2. A `follow` request with `tail = records + JOIN_SLACK` replays the end
//!    of the log and then streams new output; Docker serves both from one
//!    snapshot of the log file, so that stream itself has no gap. The
//!    records up to the anchor (matched as a window, by stream, nanosecond
//!    timestamp and bytes) are dropped; everything after it is new.
//! 3. If the container wrote more than the slack between the two requests,
//!    the anchor is not in the replayed tail: ask again with an 8x larger
//!    tail. After [`MAX_JOIN_ATTEMPTS`], fall back to "stamped after the
//!    anchor" (may lose or repeat lines stamped in the same nanosecond; only
//!    for logs rotated away under us or absurd output rates).
//!
//! Live batching: after one record arrives, every record already buffered is
//! taken without waiting (`now_or_never`), up to [`BATCH_MAX_LINES`] lines or
//! [`BATCH_MAX_BYTES`]; a lone line goes out at once. Before reading more,
//! the follower waits while the feed channel's backlog is over
//! [`LOG_BACKLOG_MAX_EVENTS`], so Docker, not this process, holds the excess.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::LogsOptions;
use futures_util::{FutureExt, Stream, StreamExt};

use super::lines::{Assembler, HistoryBuilder, Joiner, Record, Verdict};
use super::{BATCH_MAX_BYTES, BATCH_MAX_LINES, LOG_BACKLOG_MAX_EVENTS, MAX_TAIL, Sink, error_text};
use crate::feed::{DockerEvent, LogLine};

/// Extra records the follow request replays beyond the history's, to cover
/// output written between the two requests.
const JOIN_SLACK: usize = 2048;
/// Exact-match attempts (each with an 8x larger tail) before the fallback.
const MAX_JOIN_ATTEMPTS: u32 = 4;
/// How often a follower re-checks the feed channel's backlog.
const BACKLOG_POLL: Duration = Duration::from_millis(2);

/// Follows `container_id`'s logs; returns the follow id and why it ended.
pub(super) async fn follow(
    docker: Docker,
    sink: Sink,
    follow_id: u64,
    container_id: String,
    tail: usize,
) -> (u64, String) {
    let mut f = Follower {
        sink,
        follow_id,
        container_id,
    };
    let reason = f.run(&docker, tail).await;
    (follow_id, reason)
}

struct Follower {
    sink: Sink,
    follow_id: u64,
    container_id: String,
}

/// How one follow request ended.
enum LiveEnd {
    /// The stream ended normally (container stopped); `joined` tells
    /// whether the anchor had been found.
    Ended {
        joined: bool,
    },
    /// The anchor was not within the replayed tail.
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

impl Follower {
    async fn run(&mut self, docker: &Docker, tail: usize) -> String {
        let want = tail.min(MAX_TAIL);
        // At least one record, so there is an anchor even for `tail: 0`.
        let opts = logs_options(false, want.max(1).to_string());
        let mut builder = HistoryBuilder::new(want);
        let mut history = std::pin::pin!(docker.logs(&self.container_id, Some(opts)));
        while let Some(item) = history.next().await {
            match item {
                Ok(out) => {
                    if let Some(rec) = Record::from_output(out) {
                        builder.push(rec);
                    }
                }
                Err(e) => return format!("could not read logs: {}", error_text(&e)),
            }
        }
        let hist = builder.finish();
        let ev = DockerEvent::LogHistory {
            follow_id: self.follow_id,
            container_id: self.container_id.clone(),
            lines: hist.lines,
        };
        if !self.sink.send(ev) {
            return "the event loop is gone".into();
        }

        let mut asm = hist.asm;
        let mut limit = hist.records.saturating_add(JOIN_SLACK);
        let mut attempt = 0;
        loop {
            let (tail, mut joiner) = if hist.anchor.is_empty() {
                // The log was empty: everything in it now is new.
                ("all".to_string(), Joiner::Open)
            } else if attempt < MAX_JOIN_ATTEMPTS {
                (limit.to_string(), Joiner::new(&hist.anchor, limit))
            } else {
                log::warn!(
                    "follower {}: could not find where the history ends in {}'s log; joining by timestamp",
                    self.follow_id,
                    self.container_id
                );
                (limit.to_string(), Joiner::after(&hist.anchor))
            };
            let stream = docker.logs(&self.container_id, Some(logs_options(true, tail)));
            match self.live(stream, &mut joiner, &mut asm).await {
                LiveEnd::Missed => {
                    attempt += 1;
                    limit = limit.saturating_mul(8);
                    log::debug!(
                        "follower {}: anchor missed, retrying with tail {limit}",
                        self.follow_id
                    );
                }
                LiveEnd::Ended { joined: false } if attempt < MAX_JOIN_ATTEMPTS => {
                    // The anchor is gone from the log (rotated): fall back.
                    attempt = MAX_JOIN_ATTEMPTS;
                }
                LiveEnd::Ended { .. } => return end_reason(docker, &self.container_id).await,
                LiveEnd::Failed(reason) => return reason,
                LiveEnd::Gone => return "the event loop is gone".into(),
            }
        }
    }

    /// Reads one follow stream until it ends, sending new lines in batches.
    async fn live(
        &mut self,
        stream: impl Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>,
        joiner: &mut Joiner,
        asm: &mut Assembler,
    ) -> LiveEnd {
        let mut stream = std::pin::pin!(stream);
        let mut batch = Batch::default();
        loop {
            while self.sink.backlog() > LOG_BACKLOG_MAX_EVENTS {
                tokio::time::sleep(BACKLOG_POLL).await;
            }
            let mut item = stream.next().await;
            let end = loop {
                match item {
                    Some(Ok(out)) => {
                        if let Some(rec) = Record::from_output(out) {
                            match joiner.offer(&rec) {
                                Verdict::Old => {}
                                Verdict::New => asm.push(&rec, &mut |l| batch.push(l)),
                                Verdict::Missed => return LiveEnd::Missed,
                            }
                        }
                    }
                    Some(Err(e)) => {
                        break Some(LiveEnd::Failed(format!(
                            "log stream failed: {}",
                            error_text(&e)
                        )));
                    }
                    None => {
                        asm.flush(&mut |l| batch.push(l));
                        break Some(LiveEnd::Ended {
                            joined: matches!(joiner, Joiner::Open),
                        });
                    }
                }
                if batch.is_full() {
                    break None;
                }
                // Take what is already buffered; never wait here.
                match stream.next().now_or_never() {
                    Some(next) => item = next,
                    None => break None,
                }
            };
            if !batch.lines.is_empty() {
                let ev = DockerEvent::LogLines {
                    follow_id: self.follow_id,
                    container_id: self.container_id.clone(),
                    lines: batch.take(),
                };
                if !self.sink.send(ev) {
                    return LiveEnd::Gone;
                }
            }
            if let Some(end) = end {
                return end;
            }
            // Let the event watcher and other followers run between batches.
            tokio::task::yield_now().await;
        }
    }
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
