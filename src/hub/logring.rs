//! A log stream's numbered history (SPEC 7): the ring of the last lines
//! every subscriber was sent, the `seq` of each, the answer to a resuming
//! client's `since_seq`, and the seam between what the ring holds and the
//! history of a new follower (after a Docker outage, an agent reconnect, or
//! a stream that was idle for a while).
//!
//! Numbering: a stream's lines are numbered `base + 1, base + 2, …` where
//! `base` is the Unix time in microseconds when the hub first followed the
//! stream (its *epoch*). A stream the hub forgot (daemon restart, idle past
//! retention) starts again with a later base, so a client's `since_seq`
//! from an older epoch is below the current base and is recognised as
//! such instead of being taken for a line of the new numbering (unless the
//! old stream averaged more than a million lines a second). Numbers stay
//! below 2^53 until the year 2255, so JavaScript clients read them exactly.
//!
//! Bounds: a ring holds at most [`LOG_HISTORY_LINES`] lines and
//! [`RING_MAX_BYTES`] of text (always at least 1 MiB or 1,000 lines, as the
//! SPEC asks); retained idle streams are bounded by [`IdleLogs`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::defaults::LOG_HISTORY_LINES;
use crate::feed::LogLine;

use super::logs::LogFollow;
use super::topics::TopicKey;

/// The most bytes of text one ring holds (older lines go first).
pub const RING_MAX_BYTES: usize = 4 << 20;
/// How many records, ending at the ring's newest, must match in a new
/// follower's history for an exact seam.
const SEAM_WINDOW: usize = 4;

/// What a `since_seq` asks for, against what a ring holds.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Every line after it is held: from this index of the ring on.
    Held(usize),
    /// `missed` lines after it are gone; the ring's lines follow them.
    Gap(u64),
    /// Not a number of this stream's epoch (older epoch, or beyond the
    /// newest line): the count of missed lines is unknown.
    Unknown,
}

/// How a new follower's history meets the ring.
#[derive(Debug, PartialEq, Eq)]
pub struct Seam {
    /// The history's lines from this index on are new.
    pub new_from: usize,
    /// Lines may have been lost between the ring and the new lines.
    pub gap: bool,
}

/// The numbered lines of one stream.
#[derive(Debug)]
pub struct LogRing {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// The seq of the newest line (`base` while there is none).
    last: u64,
    /// The epoch: the seq before the stream's first line.
    base: u64,
}

impl Default for LogRing {
    fn default() -> Self {
        Self::with_base(epoch_now())
    }
}

/// A new stream's base: the Unix time in microseconds.
fn epoch_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
}

impl LogRing {
    pub fn with_base(base: u64) -> Self {
        LogRing {
            lines: VecDeque::new(),
            bytes: 0,
            last: base,
            base,
        }
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The seq of the newest line (the base when none was ever sent).
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// Bytes of text held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The seq of the oldest line held (`last_seq + 1` when empty).
    fn first_seq(&self) -> u64 {
        self.last + 1 - self.lines.len() as u64
    }

    /// Numbers `line` as the next of the stream and keeps it.
    pub fn push(&mut self, line: LogLine) {
        self.last = self.last.saturating_add(1);
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.lines.len() > LOG_HISTORY_LINES
            || (self.bytes > RING_MAX_BYTES && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.text.len();
            }
        }
    }

    /// Forgets every line; the next is numbered `last + 1`. Unless it is a
    /// `new_epoch`, a `since_seq` before it is still a known gap.
    pub fn restart(&mut self, last: u64, new_epoch: bool) {
        self.lines.clear();
        self.bytes = 0;
        self.last = last;
        if new_epoch || last < self.base {
            self.base = last;
        }
    }

    /// The held lines from index `from` on, with the seq of the first.
    pub fn from_index(&self, from: usize) -> (u64, impl Iterator<Item = &LogLine>) {
        (self.first_seq() + from as u64, self.lines.iter().skip(from))
    }

    /// Where the last `tail` lines start (an index for [`Self::from_index`]).
    pub fn tail_index(&self, tail: usize) -> usize {
        self.lines.len().saturating_sub(tail)
    }

    /// Where the lines after `since` (a client's `since_seq`) are.
    pub fn after(&self, since: u64) -> After {
        if since < self.base || since > self.last {
            return After::Unknown;
        }
        let first = self.first_seq();
        if since + 1 >= first {
            // `since + 1 - first` <= len, since `since <= last`.
            After::Held((since + 1 - first) as usize)
        } else {
            After::Gap(first - 1 - since)
        }
    }

    /// Finds where a new follower's `history` continues the ring. The
    /// ring's newest lines are looked for in it as a window (stream,
    /// timestamp and text must match); what follows the latest match is
    /// new. Without a match, lines stamped after the ring's newest are new
    /// and some may be missing (`gap`).
    pub fn seam(&self, history: &[LogLine]) -> Seam {
        let w = self.lines.len().min(SEAM_WINDOW);
        if w == 0 {
            return Seam {
                new_from: 0,
                gap: false,
            };
        }
        let window: Vec<&LogLine> = self.lines.iter().skip(self.lines.len() - w).collect();
        for end in (w..=history.len()).rev() {
            if history[end - w..end]
                .iter()
                .zip(&window)
                .all(|(a, b)| same_line(a, b))
            {
                return Seam {
                    new_from: end,
                    gap: false,
                };
            }
        }
        // A history that starts inside the window (shorter than it before
        // the ring's newest line): its first lines are the ring's last.
        for k in (1..w).rev() {
            if history.len() >= k
                && history[..k]
                    .iter()
                    .zip(&window[w - k..])
                    .all(|(a, b)| same_line(a, b))
            {
                return Seam {
                    new_from: k,
                    gap: false,
                };
            }
        }
        let newest = window[w - 1];
        let newest_ts = crate::feed::docker::parse_rfc3339(&newest.timestamp);
        let new_from = match newest_ts {
            Some(t) => history
                .iter()
                .position(|l| {
                    crate::feed::docker::parse_rfc3339(&l.timestamp).is_none_or(|lt| lt > t)
                })
                .unwrap_or(history.len()),
            // No timestamps to go by: all of it is taken as new.
            None => 0,
        };
        Seam {
            new_from,
            gap: !history.is_empty(),
        }
    }
}

/// Whether two lines are the same line of a stream: same text, and same
/// stream and timestamp where both have one (lines relayed from another
/// hub carry neither: a follower that takes over such a ring is joined to
/// it by text).
fn same_line(a: &LogLine, b: &LogLine) -> bool {
    a.text == b.text
        && (a.timestamp.is_empty()
            || b.timestamp.is_empty()
            || (a.timestamp == b.timestamp && a.stream == b.stream))
}

/// Streams nobody follows any more, kept so that a client that lost its
/// socket can resume (SPEC 7). Bounded three ways: at most
/// [`IDLE_LOGS_MAX`] streams, at most [`IDLE_LOGS_MAX_BYTES`] of text in
/// all, each for at most [`IDLE_LOGS_KEEP`]; the oldest goes first.
#[derive(Debug, Default)]
pub struct IdleLogs {
    streams: HashMap<TopicKey, (Box<LogFollow>, Instant)>,
    bytes: usize,
}

/// How long a stream nobody follows is kept for a resume.
pub const IDLE_LOGS_KEEP: Duration = Duration::from_secs(5 * 60);
/// The most idle streams kept.
pub const IDLE_LOGS_MAX: usize = 64;
/// The most bytes of text kept in idle streams, all together.
pub const IDLE_LOGS_MAX_BYTES: usize = 64 << 20;

impl IdleLogs {
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Keeps a stream nobody follows (its follower already stopped).
    pub fn keep(&mut self, key: TopicKey, follow: Box<LogFollow>, now: Instant) {
        if let Some((old, _)) = self.streams.remove(&key) {
            self.bytes -= old.ring.bytes();
        }
        self.bytes += follow.ring.bytes();
        self.streams.insert(key, (follow, now));
        while self.streams.len() > IDLE_LOGS_MAX || self.bytes > IDLE_LOGS_MAX_BYTES {
            let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, (_, since))| *since)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.take(&oldest);
        }
    }

    /// The kept stream of `key`, no longer kept.
    pub fn take(&mut self, key: &TopicKey) -> Option<Box<LogFollow>> {
        let (f, _) = self.streams.remove(key)?;
        self.bytes -= f.ring.bytes();
        Some(f)
    }

    /// Forgets streams kept longer than [`IDLE_LOGS_KEEP`].
    pub fn expire(&mut self, now: Instant) {
        let old: Vec<TopicKey> = self
            .streams
            .iter()
            .filter(|(_, (_, since))| now.saturating_duration_since(*since) >= IDLE_LOGS_KEEP)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            self.take(&k);
        }
    }

    /// Forgets every kept stream of a server (e.g. an agent removed by a reload).
    pub fn forget_server(&mut self, server_id: &str) {
        let keys: Vec<TopicKey> = self
            .streams
            .keys()
            .filter(|k| k.server() == server_id)
            .cloned()
            .collect();
        for k in keys {
            self.take(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::LogStream;

    fn l(ts: &str, t: &str) -> LogLine {
        LogLine {
            stream: LogStream::Stdout,
            timestamp: ts.into(),
            text: t.into(),
        }
    }

    fn ts(i: u32) -> String {
        format!("2026-11-30T14:00:{:02}.{:09}Z", i / 1000, i % 1000)
    }

    fn ring_of(range: std::ops::Range<u32>) -> LogRing {
        let mut r = LogRing::with_base(100);
        for i in range {
            r.push(l(&ts(i), &format!("line {i}")));
        }
        r
    }

    #[test]
    fn since_seq_is_answered_from_the_ring_or_as_a_gap() {
        let r = ring_of(0..1500); // seqs 101..=1600, holding 601..=1600
        assert_eq!(r.len(), LOG_HISTORY_LINES);
        assert_eq!(r.last_seq(), 1600);
        assert_eq!(
            r.after(1600),
            After::Held(1000),
            "up to date: nothing to replay"
        );
        assert_eq!(r.after(1599), After::Held(999));
        assert_eq!(r.after(600), After::Held(0));
        assert_eq!(r.after(599), After::Gap(1));
        assert_eq!(r.after(100), After::Gap(500), "from the very start");
        assert_eq!(r.after(99), After::Unknown, "an older epoch");
        assert_eq!(r.after(1601), After::Unknown, "beyond the newest line");
        assert_eq!(r.after(u64::MAX), After::Unknown);
        assert_eq!(r.after(0), After::Unknown);
        let (first, lines) = r.from_index(999);
        assert_eq!(first, 1600);
        assert_eq!(
            lines.map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["line 1499"]
        );
        let empty = LogRing::with_base(5);
        assert_eq!(empty.after(5), After::Held(0));
        assert_eq!(empty.after(6), After::Unknown);
    }

    #[test]
    fn ring_bytes_are_bounded_but_keep_a_mebibyte() {
        let mut r = LogRing::with_base(0);
        let big = "x".repeat(300 << 10);
        for _ in 0..40 {
            r.push(l("", &big));
        }
        assert!(r.bytes() <= RING_MAX_BYTES && r.bytes() >= 1 << 20);
        assert_eq!(r.last_seq(), 40);
        assert_eq!(r.after(39), After::Held(r.len() - 1));
    }

    #[test]
    fn seam_finds_the_newest_line_and_else_reports_a_gap() {
        let r = ring_of(0..10);
        // A history overlapping the ring: lines after line 9 are new.
        let hist: Vec<LogLine> = (5..14).map(|i| l(&ts(i), &format!("line {i}"))).collect();
        assert_eq!(
            r.seam(&hist),
            Seam {
                new_from: 5,
                gap: false
            }
        );
        // Nothing new yet.
        assert_eq!(
            r.seam(&hist[..5]),
            Seam {
                new_from: 5,
                gap: false
            }
        );
        // The ring's end is not in it: newer lines are new, with a gap.
        let later: Vec<LogLine> = (20..25).map(|i| l(&ts(i), &format!("line {i}"))).collect();
        assert_eq!(
            r.seam(&later),
            Seam {
                new_from: 0,
                gap: true
            }
        );
        let mixed: Vec<LogLine> = (7..9)
            .map(|i| l(&ts(i), "other"))
            .chain((30..32).map(|i| l(&ts(i), "x")))
            .collect();
        assert_eq!(
            r.seam(&mixed),
            Seam {
                new_from: 2,
                gap: true
            }
        );
        assert_eq!(
            r.seam(&[]),
            Seam {
                new_from: 0,
                gap: false
            }
        );
        // Repeated identical lines: the window picks the right one.
        let mut same = LogRing::with_base(0);
        for t in ["a", "b", "a", "b"] {
            same.push(l("", t));
        }
        let hist: Vec<LogLine> = ["a", "b", "a", "b", "c"].iter().map(|t| l("", t)).collect();
        assert_eq!(
            same.seam(&hist),
            Seam {
                new_from: 4,
                gap: false
            }
        );
        // A history that starts inside the window.
        assert_eq!(
            same.seam(&hist[1..]),
            Seam {
                new_from: 3,
                gap: false
            }
        );
        assert_eq!(
            LogRing::with_base(0).seam(&hist),
            Seam {
                new_from: 0,
                gap: false
            }
        );
    }

    #[test]
    fn idle_streams_are_bounded_and_expire() {
        let mut idle = IdleLogs::default();
        let t0 = Instant::now();
        for i in 0..(IDLE_LOGS_MAX + 5) {
            let key = TopicKey::Logs {
                server: "s".into(),
                container: format!("c{i}"),
            };
            idle.keep(key, Box::default(), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(idle.len(), IDLE_LOGS_MAX);
        let first = TopicKey::Logs {
            server: "s".into(),
            container: "c0".into(),
        };
        assert!(idle.take(&first).is_none(), "the oldest went first");
        idle.expire(t0 + IDLE_LOGS_KEEP + Duration::from_secs(1));
        assert!(idle.is_empty());
    }
}
