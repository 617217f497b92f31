//! Follows `--log-file`s like `tail -F` and turns new lines into log entries.
//!
//! Owns one [`Follower`] per path and the thread that polls them. Semantics:
//! - A file that exists at start is followed from its current end (history
//!   is not replayed). A file that does not exist yet is waited for and,
//!   once it appears, read from its beginning.
//! - Rotation by rename: when the path names a different file (device and
//!   inode) than the one open, the open file is first read to its end, then
//!   the new file is followed from its beginning. While the path is missing
//!   the old file is kept and still read.
//! - Truncation (the open file's size drops below our position, as
//!   `copytruncate` does) restarts at offset 0. As with `tail -F`, a
//!   truncation followed by regrowth past the old position within one poll
//!   interval cannot be seen.
//! - Lines end at `\n` (a trailing `\r` is dropped); a partial last line is
//!   held until its newline arrives (or the file is rotated away). Blank
//!   lines are skipped. Invalid UTF-8 is replaced (lossy).
//! - A line longer than `max_line` bytes is cut to that size and marked
//!   `[truncated]`; the rest of it is skipped. Memory per follower is
//!   bounded by `max_line` plus one read buffer.
//! - Polling is every `poll_interval` (default 250 ms) with a sleep between
//!   rounds; a round reads at most `READ_BUDGET` bytes per file so one busy
//!   file cannot starve the others.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender};

use super::level::parse_level;
use super::wire::{LogEntry, Outgoing, cap_json_len, now_rfc3339};

/// Bytes read from one file per poll round, at most.
const READ_BUDGET: usize = 1 << 20;

/// Appended to a line that was cut at `max_line`.
const TRUNCATED_MARK: &str = " [truncated]";

/// Device and inode: which file a path names.
type FileId = (u64, u64);

/// Follows one path. See the module docs.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    id: Option<FileId>,
    pos: u64,
    partial: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    max_line: usize,
    /// The last open/stat error reported, so a lasting problem logs once.
    last_error: Option<String>,
}

impl Follower {
    /// Opens `path` at its end when it exists; otherwise waits for it.
    pub fn new(path: PathBuf, max_line: usize) -> Self {
        let mut f = Self {
            path,
            file: None,
            id: None,
            pos: 0,
            partial: Vec::new(),
            discarding: false,
            max_line: max_line.max(1),
            last_error: None,
        };
        match open_with_id(&f.path) {
            Ok((mut file, id, len)) => match file.seek(SeekFrom::Start(len)) {
                Ok(_) => {
                    log::info!("following {} from its end", f.path.display());
                    f.file = Some(file);
                    f.id = Some(id);
                    f.pos = len;
                }
                Err(e) => f.report(format!("could not seek {}: {e}", f.path.display())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("waiting for {} to appear", f.path.display());
            }
            Err(e) => f.report(format!("could not open {}: {e}", f.path.display())),
        }
        f
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call, handing each complete
    /// line to `emit`. Returns `true` when the read budget ran out (more
    /// data is probably waiting).
    pub fn poll(&mut self, emit: &mut dyn FnMut(String)) -> bool {
        let mut budget = READ_BUDGET;
        // Two rounds: drain the old file, then pick up its replacement.
        for _ in 0..2 {
            if self.file.is_none() {
                self.try_open_fresh();
            }
            if self.file.is_none() {
                return false;
            }
            self.check_truncation();
            match self.read_available(&mut budget, emit) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    self.report(format!("could not read {}: {e}", self.path.display()));
                    self.close();
                    return false;
                }
            }
            if !self.switch_if_rotated(emit) {
                return false;
            }
        }
        false
    }

    /// Opens a file that appeared (or reappeared) at the path, from offset 0.
    fn try_open_fresh(&mut self) {
        match open_with_id(&self.path) {
            Ok((file, id, _)) => {
                log::info!("following {} from its beginning", self.path.display());
                self.file = Some(file);
                self.id = Some(id);
                self.pos = 0;
                self.partial.clear();
                self.discarding = false;
                self.last_error = None;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.report(format!("could not open {}: {e}", self.path.display())),
        }
    }

    fn check_truncation(&mut self) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        if len < self.pos {
            log::info!(
                "{} was truncated ({} -> {len} bytes); reading from the start",
                self.path.display(),
                self.pos
            );
            if file.seek(SeekFrom::Start(0)).is_ok() {
                self.pos = 0;
                self.partial.clear();
                self.discarding = false;
            }
        }
    }

    /// Reads to end-of-file or until `budget` is spent (`Ok(true)`).
    fn read_available(
        &mut self,
        budget: &mut usize,
        emit: &mut dyn FnMut(String),
    ) -> io::Result<bool> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            if *budget == 0 {
                return Ok(true);
            }
            let want = buf.len().min(*budget);
            let Some(file) = self.file.as_mut() else {
                return Ok(false);
            };
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            *budget -= n;
            self.pos += n as u64;
            self.split_lines(&buf[..n], emit);
        }
    }

    fn split_lines(&mut self, mut data: &[u8], emit: &mut dyn FnMut(String)) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let (chunk, rest, complete) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if self.discarding {
                if complete {
                    self.discarding = false;
                }
                continue;
            }
            let room = self.max_line - self.partial.len();
            if chunk.len() > room {
                self.partial.extend_from_slice(&chunk[..room]);
                self.emit_partial(true, emit);
                self.discarding = !complete;
                continue;
            }
            self.partial.extend_from_slice(chunk);
            if complete {
                self.emit_partial(false, emit);
            }
        }
    }

    fn emit_partial(&mut self, truncated: bool, emit: &mut dyn FnMut(String)) {
        if self.partial.last() == Some(&b'\r') {
            self.partial.pop();
        }
        let mut line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if line.trim().is_empty() {
            return;
        }
        // Lossy decoding and JSON escaping can grow the text; keep the frame
        // bounded too.
        let cut = cap_json_len(&mut line, self.max_line);
        if truncated || cut {
            line.push_str(TRUNCATED_MARK);
        }
        emit(line);
    }

    /// After the open file was drained: if the path now names another file,
    /// switch to it. Returns whether a switch happened.
    fn switch_if_rotated(&mut self, emit: &mut dyn FnMut(String)) -> bool {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            // Missing (mid-rotation) or unreadable: keep the old file.
            Err(_) => return false,
        };
        if Some((meta.dev(), meta.ino())) == self.id {
            return false;
        }
        log::info!(
            "{} was rotated; following the new file",
            self.path.display()
        );
        if !self.partial.is_empty() && !self.discarding {
            self.emit_partial(false, emit);
        }
        self.close();
        true
    }

    fn close(&mut self) {
        self.file = None;
        self.id = None;
        self.pos = 0;
        self.partial.clear();
        self.discarding = false;
    }

    fn report(&mut self, msg: String) {
        if self.last_error.as_deref() != Some(msg.as_str()) {
            log::warn!("{msg}");
            self.last_error = Some(msg);
        }
    }
}

fn open_with_id(path: &Path) -> io::Result<(File, FileId, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    Ok((file, (meta.dev(), meta.ino()), meta.len()))
}

/// Settings for the tailer thread.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub paths: Vec<PathBuf>,
    pub poll_interval: Duration,
    pub max_line: usize,
}

/// Spawns the thread that polls every follower and sends log entries to the
/// session. It blocks (with a bounded wait, re-checking `shutdown`) when the
/// session's channel is full, so unread lines stay in the file rather than
/// in memory.
///
/// # Errors
/// When the OS refuses a new thread.
pub fn spawn(
    config: TailConfig,
    tx: Sender<Outgoing>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("agent-tail".into())
        .spawn(move || tail_loop(config, &tx, &shutdown))
}

fn tail_loop(config: TailConfig, tx: &Sender<Outgoing>, shutdown: &AtomicBool) {
    let mut followers: Vec<Follower> = config
        .paths
        .iter()
        .map(|p| Follower::new(p.clone(), config.max_line))
        .collect();
    let mut open = true;
    while open && !shutdown.load(Ordering::Relaxed) {
        let mut more = false;
        for f in &mut followers {
            let mut emit = |line: String| {
                if open {
                    open = send_line(tx, shutdown, line);
                }
            };
            more |= f.poll(&mut emit);
        }
        if !more {
            sleep_unless(shutdown, config.poll_interval);
        }
    }
    log::debug!("log tailer stopped");
}

/// Returns `false` when the session is gone or we are shutting down.
fn send_line(tx: &Sender<Outgoing>, shutdown: &AtomicBool, line: String) -> bool {
    let mut item = Outgoing::Log(LogEntry {
        level: parse_level(&line),
        message: line,
        timestamp: now_rfc3339(),
    });
    loop {
        match tx.send_timeout(item, Duration::from_millis(250)) {
            Ok(()) => return true,
            Err(SendTimeoutError::Disconnected(_)) => return false,
            Err(SendTimeoutError::Timeout(back)) => {
                if shutdown.load(Ordering::Relaxed) {
                    return false;
                }
                item = back;
            }
        }
    }
}

/// Sleeps `total`, waking early (within ~50 ms) once `shutdown` is set.
pub fn sleep_unless(shutdown: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let end = std::time::Instant::now() + total;
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return;
        }
        thread::sleep((end - now).min(step));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::test_util::tempdir;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::time::Instant;

    fn append(path: &Path, data: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(data.as_bytes()).unwrap();
    }

    fn poll(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(&mut |l| out.push(l));
        out
    }

    #[test]
    fn starts_at_the_end_and_follows_appends() {
        let dir = tempdir();
        let p = dir.join("app.log");
        append(&p, "old 1\nold 2\n");
        let mut f = Follower::new(p.clone(), 1024);
        assert!(poll(&mut f).is_empty());
        append(&p, "new 1\nnew ");
        assert_eq!(poll(&mut f), ["new 1"]);
        append(&p, "2\r\n\n   \nnew 3\n");
        assert_eq!(poll(&mut f), ["new 2", "new 3"]);
        assert!(poll(&mut f).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn waits_for_a_missing_file_then_reads_it_from_the_start() {
        let dir = tempdir();
        let p = dir.join("later.log");
        let mut f = Follower::new(p.clone(), 1024);
        assert!(poll(&mut f).is_empty());
        append(&p, "first\nsecond\n");
        assert_eq!(poll(&mut f), ["first", "second"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn survives_rotation_by_rename() {
        let dir = tempdir();
        let p = dir.join("app.log");
        let rotated = dir.join("app.log.1");
        append(&p, "");
        let mut f = Follower::new(p.clone(), 1024);
        append(&p, "a\n");
        assert_eq!(poll(&mut f), ["a"]);

        // Written just before the rename, not yet seen: must not be lost.
        append(&p, "b\npartial");
        std::fs::rename(&p, &rotated).unwrap();
        // The writer still has the old file open for a moment.
        append(&rotated, " end\n");
        // The path is missing: the old file is still read.
        assert_eq!(poll(&mut f), ["b", "partial end"]);

        append(&p, "c\n");
        append(&rotated, "late\n");
        // Old file drained first, then the new one from its beginning.
        assert_eq!(poll(&mut f), ["late", "c"]);
        append(&p, "d\n");
        assert_eq!(poll(&mut f), ["d"]);

        // Rename + create in one go, with a partial line left in the old file.
        append(&p, "tail-without-newline");
        std::fs::rename(&p, &rotated).unwrap();
        append(&p, "e\n");
        assert_eq!(poll(&mut f), ["tail-without-newline", "e"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn restarts_after_truncation() {
        let dir = tempdir();
        let p = dir.join("app.log");
        append(&p, "some history that is long\n");
        let mut f = Follower::new(p.clone(), 1024);
        append(&p, "x\n");
        assert_eq!(poll(&mut f), ["x"]);
        // copytruncate style: same inode, size drops.
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        assert!(poll(&mut f).is_empty());
        append(&p, "after\n");
        assert_eq!(poll(&mut f), ["after"]);
        // Truncated and rewritten shorter than before, between two polls.
        std::fs::write(&p, "").unwrap();
        append(&p, "y\n");
        assert_eq!(poll(&mut f), ["y"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn long_lines_are_capped() {
        let dir = tempdir();
        let p = dir.join("app.log");
        append(&p, "");
        let mut f = Follower::new(p.clone(), 10);
        let long = "0123456789abcdefghij";
        append(&p, &format!("{long}\nshort\n{long}"));
        assert_eq!(
            poll(&mut f),
            ["0123456789 [truncated]", "short", "0123456789 [truncated]"]
        );
        // The rest of the unfinished long line is skipped, not emitted.
        append(&p, "more-of-the-same-line\nok\n");
        assert_eq!(poll(&mut f), ["ok"]);
        // Exactly max_line fits.
        append(&p, "0123456789\n");
        assert_eq!(poll(&mut f), ["0123456789"]);
        // Control bytes count at their escaped width.
        append(&p, "\u{1}\u{1}\u{1}\n");
        assert_eq!(poll(&mut f), ["\u{1} [truncated]"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn thread_sends_entries_with_levels_and_stops_on_shutdown() {
        let dir = tempdir();
        let p = dir.join("app.log");
        append(&p, "ignored history\n");
        let (tx, rx) = crossbeam_channel::bounded(16);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = spawn(
            TailConfig {
                paths: vec![p.clone(), dir.join("missing.log")],
                poll_interval: Duration::from_millis(50),
                max_line: 1024,
            },
            tx,
            Arc::clone(&stop),
        )
        .unwrap();
        // Let the thread open the file at its end before writing.
        thread::sleep(Duration::from_millis(200));
        append(&p, "[error] disk on fire\nall good\n");
        let mut got = Vec::new();
        while got.len() < 2 {
            match rx
                .recv_timeout(Duration::from_secs(5))
                .expect("no log entry in 5s")
            {
                Outgoing::Log(e) => got.push((e.level, e.message, e.timestamp)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            (got[0].0, got[0].1.as_str()),
            ("ERROR", "[error] disk on fire")
        );
        assert_eq!((got[1].0, got[1].1.as_str()), ("INFO", "all good"));
        assert!(
            got[0].2.ends_with('Z') && got[0].2.contains('T'),
            "{}",
            got[0].2
        );

        // The missing file is picked up when it appears, from its start.
        append(&dir.join("missing.log"), "WARN now here\n");
        match rx.recv_timeout(Duration::from_secs(5)).expect("no entry") {
            Outgoing::Log(e) => {
                assert_eq!((e.level, e.message.as_str()), ("WARNING", "WARN now here"))
            }
            other => panic!("unexpected {other:?}"),
        }

        let t = Instant::now();
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
