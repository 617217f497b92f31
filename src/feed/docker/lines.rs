//! Docker log records -> [`LogLine`]s, and the seam between history and live.
//!
//! Pure code (no I/O) so it can be unit-tested without an engine.
//!
//! What Docker sends with `timestamps=true`: one *record* per message its log
//! driver stored, each `"<RFC 3339 nano> <payload>"`. A payload normally ends
//! with `\n`; a line longer than the driver's buffer (16 KiB) is stored as
//! several records without `\n` that share one timestamp, and a container's
//! last output may lack its `\n`. Non-TTY containers get one multiplexed frame
//! per record (bollard yields it as `StdOut`/`StdErr`); TTY containers get a
//! raw byte stream that bollard cuts at `\n`, so one `Console` item is one
//! line whose later fragments still carry their (identical) timestamp prefix.
//!
//! Invariants:
//! - [`Assembler`] never splits a line at a record boundary: text without its
//!   `\n` waits (per stream) until the rest arrives or the stream ends; only a
//!   line longer than [`LINE_MAX_BYTES`] is cut, so memory stays bounded.
//! - [`HistoryBuilder`] picks the *anchor*: the last record whose lines it
//!   put into the history. Records after the anchor are dropped from the
//!   history because the live stream delivers them again.
//! - [`Joiner`] finds the anchor (as a window of records) in the live stream;
//!   everything up to it is dropped, everything after it is new. Records are
//!   compared by stream, nanosecond timestamp and bytes, so a match is exact.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::feed::{LogLine, LogStream};

/// A line longer than this is cut into pieces of this size.
pub const LINE_MAX_BYTES: usize = 1024 * 1024;
/// The most bytes of text a history may hold (older lines are dropped first).
pub const HISTORY_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How many records, ending at the anchor, must match in the live stream.
pub const ANCHOR_WINDOW: usize = 4;

/// Longest timestamp prefix accepted ("2006-01-02T15:04:05.000000000Z07:00").
const MAX_TS_LEN: usize = 40;

/// One message of Docker's log, timestamp split off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: LogStream,
    /// Docker's RFC 3339 nano timestamp (empty when the prefix was missing).
    pub ts: Bytes,
    /// The text, with its `\n` when the message was a complete line.
    pub payload: Bytes,
}

impl Record {
    /// Splits one bollard log item. `None` for stdin echoes, which logs never
    /// carry in practice.
    pub fn from_output(out: bollard::container::LogOutput) -> Option<Self> {
        use bollard::container::LogOutput;
        let (stream, message) = match out {
            LogOutput::StdOut { message } => (LogStream::Stdout, message),
            LogOutput::StdErr { message } => (LogStream::Stderr, message),
            LogOutput::Console { message } => (LogStream::Console, message),
            LogOutput::StdIn { .. } => return None,
        };
        Some(Self::parse(stream, message))
    }

    /// Splits `"<ts> <payload>"`. For console items, later fragments of the
    /// same line repeat the exact `"<ts> "` prefix; those copies are removed.
    pub fn parse(stream: LogStream, message: Bytes) -> Self {
        let Some(sp) = timestamp_end(&message) else {
            return Self {
                stream,
                ts: Bytes::new(),
                payload: message,
            };
        };
        let ts = message.slice(..sp);
        let mut payload = message.slice(sp + 1..);
        if stream == LogStream::Console {
            let prefix = &message[..=sp];
            if find(&payload, prefix).is_some() {
                payload = Bytes::from(remove_all(&payload, prefix));
            }
        }
        Self {
            stream,
            ts,
            payload,
        }
    }

    /// True when the record ends a line.
    pub fn is_complete(&self) -> bool {
        self.payload.last() == Some(&b'\n')
    }
}

/// Index of the space after a leading timestamp, if the message starts with one.
fn timestamp_end(message: &[u8]) -> Option<usize> {
    if !message.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let limit = message.len().min(MAX_TS_LEN + 1);
    message[..limit].iter().position(|&b| b == b' ')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn remove_all(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
        LogStream::Console => 2,
    }
}

fn make_line(stream: LogStream, ts: &[u8], mut text: &[u8]) -> LogLine {
    if let [head @ .., b'\r'] = text {
        text = head;
    }
    LogLine {
        stream,
        timestamp: String::from_utf8_lossy(ts).into_owned(),
        text: String::from_utf8_lossy(text).into_owned(),
    }
}

/// Text of one stream still waiting for its `\n`.
#[derive(Debug, Clone)]
struct Pending {
    ts: Bytes,
    buf: Vec<u8>,
    /// Arrival order, so [`Assembler::flush`] keeps Docker's order.
    seq: u64,
}

/// Turns records into lines, holding back unfinished text per stream.
#[derive(Debug, Clone, Default)]
pub struct Assembler {
    pending: [Option<Pending>; 3],
    seq: u64,
}

impl Assembler {
    /// Feeds one record; every completed line goes to `out`, in order.
    pub fn push(&mut self, rec: &Record, out: &mut impl FnMut(LogLine)) {
        let slot = &mut self.pending[stream_index(rec.stream)];
        let mut data = &rec.payload[..];
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let piece = &data[..nl];
            match slot.take() {
                Some(mut p) => {
                    p.buf.extend_from_slice(piece);
                    out(make_line(rec.stream, &p.ts, &p.buf));
                }
                None => out(make_line(rec.stream, &rec.ts, piece)),
            }
            data = &data[nl + 1..];
        }
        if data.is_empty() {
            return;
        }
        let p = slot.get_or_insert_with(|| {
            self.seq += 1;
            Pending {
                ts: rec.ts.clone(),
                buf: Vec::new(),
                seq: self.seq,
            }
        });
        p.buf.extend_from_slice(data);
        while p.buf.len() >= LINE_MAX_BYTES {
            let rest = p.buf.split_off(LINE_MAX_BYTES);
            out(make_line(rec.stream, &p.ts, &p.buf));
            p.buf = rest;
        }
        if p.buf.is_empty() {
            *slot = None;
        }
    }

    /// Ends every unfinished line (the stream is over), oldest first.
    pub fn flush(&mut self, out: &mut impl FnMut(LogLine)) {
        let mut rest: Vec<(LogStream, Pending)> =
            [LogStream::Stdout, LogStream::Stderr, LogStream::Console]
                .into_iter()
                .filter_map(|s| self.pending[stream_index(s)].take().map(|p| (s, p)))
                .collect();
        rest.sort_by_key(|(_, p)| p.seq);
        for (stream, p) in rest {
            out(make_line(stream, &p.ts, &p.buf));
        }
    }
}

/// Builds a follower's history from a non-follow `tail` request.
#[derive(Debug)]
pub struct HistoryBuilder {
    want: usize,
    asm: Assembler,
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// Incomplete records after the last complete one: not yet committed.
    uncommitted: Vec<Record>,
    uncommitted_bytes: usize,
    /// The last committed records (the anchor is the newest).
    window: VecDeque<Record>,
}

/// What a finished history hands to the live phase.
#[derive(Debug)]
pub struct History {
    /// At most `want` lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Unfinished text at the anchor; the live stream continues it.
    pub asm: Assembler,
    /// The records ending at the anchor (oldest first); empty when the log
    /// was empty, in which case every live record is new.
    pub anchor: Vec<Record>,
}

impl HistoryBuilder {
    pub fn new(want: usize) -> Self {
        Self {
            want,
            asm: Assembler::default(),
            lines: VecDeque::new(),
            bytes: 0,
            uncommitted: Vec::new(),
            uncommitted_bytes: 0,
            window: VecDeque::with_capacity(ANCHOR_WINDOW),
        }
    }

    pub fn push(&mut self, rec: Record) {
        if rec.is_complete() {
            self.commit_uncommitted();
            self.commit(rec);
        } else {
            self.uncommitted_bytes += rec.payload.len();
            self.uncommitted.push(rec);
            // A line in progress this long is cut anyway (LINE_MAX_BYTES);
            // committing bounds what we hold.
            if self.uncommitted_bytes >= LINE_MAX_BYTES {
                self.commit_uncommitted();
            }
        }
    }

    fn commit_uncommitted(&mut self) {
        self.uncommitted_bytes = 0;
        for r in std::mem::take(&mut self.uncommitted) {
            self.commit(r);
        }
    }

    fn commit(&mut self, rec: Record) {
        let (want, lines, bytes) = (self.want, &mut self.lines, &mut self.bytes);
        self.asm.push(&rec, &mut |line: LogLine| {
            if want == 0 {
                return;
            }
            *bytes += line.text.len();
            lines.push_back(line);
            while lines.len() > want || (*bytes > HISTORY_MAX_BYTES && lines.len() > 1) {
                if let Some(old) = lines.pop_front() {
                    *bytes -= old.text.len();
                }
            }
        });
        if self.window.len() == ANCHOR_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(rec);
    }

    /// Ends the history. Trailing incomplete records are dropped (the live
    /// stream repeats them) unless nothing complete came at all, in which
    /// case they are committed and the last of them becomes the anchor.
    pub fn finish(mut self) -> History {
        if self.window.is_empty() {
            self.commit_uncommitted();
        }
        History {
            lines: self.lines.into(),
            asm: self.asm,
            anchor: self.window.into(),
        }
    }
}

/// What the joiner says about one live-stream record.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Already in the history (or older): drop it.
    Old,
    /// New: process it.
    New,
    /// The anchor did not show up within the tail window: ask again with a
    /// larger tail.
    Missed,
}

/// Locates the history's anchor in a `follow` stream requested with a tail.
#[derive(Debug)]
pub enum Joiner {
    /// Everything is new.
    Open,
    /// Drop records until the anchor window has been seen.
    Window {
        anchor: Vec<Record>,
        recent: VecDeque<Record>,
        seen: usize,
        limit: usize,
    },
    /// Fallback when exact matching failed: records stamped after `ts` are
    /// new (Docker's fixed-width UTC stamps order as bytes).
    After { ts: Bytes },
}

impl Joiner {
    /// `limit`: the tail the follow request asked for. Past that many
    /// records, the first one stamped after the anchor ends the search
    /// ([`Verdict::Missed`]).
    pub fn new(anchor: &[Record], limit: usize) -> Self {
        if anchor.is_empty() {
            Self::Open
        } else {
            Self::Window {
                anchor: anchor.to_vec(),
                recent: VecDeque::with_capacity(anchor.len()),
                seen: 0,
                limit,
            }
        }
    }

    pub fn after(anchor: &[Record]) -> Self {
        match anchor.last() {
            Some(last) => Self::After {
                ts: last.ts.clone(),
            },
            None => Self::Open,
        }
    }

    pub fn offer(&mut self, rec: &Record) -> Verdict {
        match self {
            Self::Open => Verdict::New,
            Self::After { ts } => {
                if rec.ts > *ts {
                    *self = Self::Open;
                    Verdict::New
                } else {
                    Verdict::Old
                }
            }
            Self::Window {
                anchor,
                recent,
                seen,
                limit,
            } => {
                *seen += 1;
                if recent.len() == anchor.len() {
                    recent.pop_front();
                }
                recent.push_back(rec.clone());
                if recent.len() == anchor.len() && recent.iter().eq(anchor.iter()) {
                    *self = Self::Open;
                    return Verdict::Old;
                }
                // Past the replayed tail, a record stamped after the anchor
                // means the anchor went by before the window: it is not in
                // this stream. (A record stamped earlier may still precede
                // it: the anchor can sit in the live part when the follow
                // request's snapshot came first.)
                let after_anchor = anchor.last().is_some_and(|a| rec.ts > a.ts);
                if *seen > *limit && after_anchor {
                    Verdict::Missed
                } else {
                    Verdict::Old
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS1: &str = "2026-01-01T00:00:01.000000001Z";
    const TS2: &str = "2026-01-01T00:00:02.000000002Z";
    const TS3: &str = "2026-01-01T00:00:03.000000003Z";

    fn rec(stream: LogStream, ts: &str, payload: &str) -> Record {
        Record::parse(stream, Bytes::from(format!("{ts} {payload}")))
    }

    fn lines_of(asm: &mut Assembler, recs: &[Record]) -> Vec<LogLine> {
        let mut out = Vec::new();
        for r in recs {
            asm.push(r, &mut |l| out.push(l));
        }
        out
    }

    #[test]
    fn parse_splits_timestamp() {
        let r = rec(LogStream::Stdout, TS1, "hello\n");
        assert_eq!(&r.ts[..], TS1.as_bytes());
        assert_eq!(&r.payload[..], b"hello\n");
        assert!(r.is_complete());
    }

    #[test]
    fn parse_without_timestamp_keeps_everything() {
        let r = Record::parse(LogStream::Stdout, Bytes::from_static(b"no stamp here\n"));
        assert!(r.ts.is_empty());
        assert_eq!(&r.payload[..], b"no stamp here\n");
    }

    #[test]
    fn console_fragments_lose_repeated_prefix() {
        let raw = format!("{TS1} aaaa{TS1} bbbb{TS1} cc\r\n");
        let r = Record::parse(LogStream::Console, Bytes::from(raw));
        assert_eq!(&r.payload[..], b"aaaabbbbcc\r\n");
        // A different stamp inside the text is user data and stays.
        let raw = format!("{TS1} see {TS2} here\n");
        let r = Record::parse(LogStream::Console, Bytes::from(raw));
        assert_eq!(r.payload, Bytes::from(format!("see {TS2} here\n")));
    }

    #[test]
    fn assembler_joins_fragments_and_strips_cr() {
        let mut asm = Assembler::default();
        let out = lines_of(
            &mut asm,
            &[
                rec(LogStream::Stdout, TS1, "par"),
                rec(LogStream::Stderr, TS2, "err line\r\n"),
                rec(LogStream::Stdout, TS1, "tial\n"),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].text, "err line");
        assert_eq!(out[0].stream, LogStream::Stderr);
        assert_eq!(out[1].text, "partial");
        assert_eq!(out[1].timestamp, TS1);
    }

    #[test]
    fn assembler_splits_embedded_newlines_and_flushes_in_order() {
        let mut asm = Assembler::default();
        let mut out = lines_of(
            &mut asm,
            &[
                rec(LogStream::Stdout, TS1, "a\nb\nc"),
                rec(LogStream::Stderr, TS2, "d"),
            ],
        );
        assert_eq!(
            out.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        asm.flush(&mut |l| out.push(l));
        let texts: Vec<_> = out.iter().map(|l| (l.stream, l.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                (LogStream::Stdout, "a"),
                (LogStream::Stdout, "b"),
                (LogStream::Stdout, "c"),
                (LogStream::Stderr, "d")
            ]
        );
        let mut none = Vec::new();
        asm.flush(&mut |l| none.push(l));
        assert!(none.is_empty());
    }

    #[test]
    fn assembler_cuts_overlong_lines() {
        let mut asm = Assembler::default();
        let big = "x".repeat(LINE_MAX_BYTES + 10);
        let out = lines_of(&mut asm, &[rec(LogStream::Stdout, TS1, &big)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text.len(), LINE_MAX_BYTES);
        let out = lines_of(&mut asm, &[rec(LogStream::Stdout, TS1, "y\n")]);
        assert_eq!(out[0].text, format!("{}y", "x".repeat(10)));
    }

    #[test]
    fn history_keeps_last_lines_and_anchor() {
        let mut h = HistoryBuilder::new(2);
        for (ts, t) in [(TS1, "one\n"), (TS2, "two\n"), (TS3, "three\n")] {
            h.push(rec(LogStream::Stdout, ts, t));
        }
        let hist = h.finish();
        let texts: Vec<_> = hist.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"]);
        assert_eq!(hist.anchor.len(), 3);
        assert_eq!(&hist.anchor[2].payload[..], b"three\n");
    }

    #[test]
    fn history_drops_trailing_partials_but_keeps_earlier_ones() {
        let mut h = HistoryBuilder::new(10);
        h.push(rec(LogStream::Stdout, TS1, "out-par"));
        h.push(rec(LogStream::Stderr, TS2, "err\n"));
        h.push(rec(LogStream::Stderr, TS3, "trailing"));
        let hist = h.finish();
        assert_eq!(hist.lines.len(), 1);
        assert_eq!(hist.lines[0].text, "err");
        assert_eq!(&hist.anchor.last().unwrap().payload[..], b"err\n");
        // The live stream repeats "trailing" after the anchor and completes
        // stdout's pending text.
        let mut asm = hist.asm;
        let out = lines_of(
            &mut asm,
            &[
                rec(LogStream::Stderr, TS3, "trailing\n"),
                rec(LogStream::Stdout, TS1, "tial\n"),
            ],
        );
        let texts: Vec<_> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["trailing", "out-partial"]);
    }

    #[test]
    fn history_of_only_partials_anchors_on_last() {
        let mut h = HistoryBuilder::new(5);
        h.push(rec(LogStream::Stdout, TS1, "aaa"));
        h.push(rec(LogStream::Stdout, TS1, "bbb"));
        let hist = h.finish();
        assert!(hist.lines.is_empty());
        assert_eq!(&hist.anchor.last().unwrap().payload[..], b"bbb");
        let mut asm = hist.asm;
        let out = lines_of(&mut asm, &[rec(LogStream::Stdout, TS1, "ccc\n")]);
        assert_eq!(out[0].text, "aaabbbccc");
    }

    #[test]
    fn history_zero_tail_still_anchors() {
        let mut h = HistoryBuilder::new(0);
        h.push(rec(LogStream::Stdout, TS1, "x\n"));
        let hist = h.finish();
        assert!(hist.lines.is_empty());
        assert_eq!(hist.anchor.len(), 1);
    }

    #[test]
    fn joiner_finds_window_and_passes_the_rest() {
        let all: Vec<Record> = (0..20)
            .map(|i| {
                rec(
                    LogStream::Stdout,
                    &format!("2026-01-01T00:00:00.{i:09}Z"),
                    &format!("{i}\n"),
                )
            })
            .collect();
        let anchor = &all[6..10];
        let mut j = Joiner::new(anchor, 12);
        let verdicts: Vec<_> = all[2..].iter().map(|r| j.offer(r)).collect();
        // Records 2..=9 are old, 10.. are new.
        assert!(verdicts[..8].iter().all(|v| *v == Verdict::Old));
        assert!(verdicts[8..].iter().all(|v| *v == Verdict::New));
    }

    #[test]
    fn joiner_needs_the_whole_window() {
        let a = rec(LogStream::Stdout, TS1, "same\n");
        let b = rec(LogStream::Stdout, TS2, "same\n");
        let c = rec(LogStream::Stdout, TS3, "x\n");
        // Anchor window [a, b]: a lone `b` preceded by something else is not it.
        let mut j = Joiner::new(&[a.clone(), b.clone()], 10);
        assert_eq!(j.offer(&c), Verdict::Old);
        assert_eq!(j.offer(&b), Verdict::Old);
        assert!(matches!(j, Joiner::Window { .. }));
        assert_eq!(j.offer(&a), Verdict::Old);
        assert_eq!(j.offer(&b), Verdict::Old);
        assert!(matches!(j, Joiner::Open));
        assert_eq!(j.offer(&c), Verdict::New);
    }

    #[test]
    fn joiner_reports_miss_after_limit() {
        let a = rec(LogStream::Stdout, TS2, "a\n");
        let older = rec(LogStream::Stdout, TS1, "o\n");
        let newer = rec(LogStream::Stdout, TS3, "n\n");
        let mut j = Joiner::new(std::slice::from_ref(&a), 2);
        assert_eq!(j.offer(&newer), Verdict::Old);
        assert_eq!(j.offer(&newer), Verdict::Old);
        // Past the limit, older records may still lead to the anchor...
        assert_eq!(j.offer(&older), Verdict::Old);
        // ...a newer one means it was missed.
        assert_eq!(j.offer(&newer), Verdict::Missed);
        // And the anchor found late (in the live part) still joins.
        let mut j = Joiner::new(std::slice::from_ref(&a), 1);
        assert_eq!(j.offer(&older), Verdict::Old);
        assert_eq!(j.offer(&older), Verdict::Old);
        assert_eq!(j.offer(&a), Verdict::Old);
        assert_eq!(j.offer(&newer), Verdict::New);
    }

    #[test]
    fn joiner_after_timestamp() {
        let a = rec(LogStream::Stdout, TS2, "a\n");
        let mut j = Joiner::after(std::slice::from_ref(&a));
        assert_eq!(j.offer(&rec(LogStream::Stdout, TS1, "old\n")), Verdict::Old);
        assert_eq!(j.offer(&rec(LogStream::Stdout, TS2, "a\n")), Verdict::Old);
        assert_eq!(j.offer(&rec(LogStream::Stdout, TS3, "new\n")), Verdict::New);
        // Once open, everything passes (even a late, older stamp).
        assert_eq!(
            j.offer(&rec(LogStream::Stdout, TS1, "late\n")),
            Verdict::New
        );
        assert_eq!(Joiner::new(&[], 5).offer(&a), Verdict::New);
    }
}
