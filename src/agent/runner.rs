//! Runs the hub's `command` requests, only from the allowlist.
//!
//! Owns the allowlist and child processes. Invariants:
//! - A command runs only when the string the hub sent is byte-for-byte equal
//!   to one `--allow-command` entry. Anything else is refused and nothing is
//!   spawned. An empty allowlist refuses everything.
//! - The entry is split into argv on ASCII/Unicode whitespace. There is no
//!   quoting, no escaping, no globbing, no variable expansion and no shell:
//!   `"ls -la /var/log"` runs `ls` with `["-la", "/var/log"]`, and an entry
//!   such as `"sh -c 'a b'"` runs `sh` with `["-c", "'a", "b'"]`.
//! - The child gets stdin from `/dev/null`, the agent's environment and
//!   working directory, and its own process group. stdout and stderr share
//!   one pipe, so their interleaving is the order the child wrote them.
//! - At most `max_output_bytes` of output are kept (the rest is read and
//!   counted so the child never blocks on a full pipe); a note says how much
//!   was cut. The reported output's JSON-escaped size is capped at
//!   `max_output_bytes` minus 512 bytes, so the whole `command_response`
//!   frame fits in `max_output_bytes` (the hub's 64 KiB message limit by
//!   default).
//! - At the timeout (or on agent shutdown) the whole process group gets
//!   SIGKILL and the answer has `exit_code` -1.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::AgentError;
use super::wire::cap_json_len;

/// How long to wait for the output pipe to close after the child exited
/// (a grandchild may still hold it open).
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// Room kept for the rest of the `command_response` message (type, id,
/// exit code, duration, truncation note) when capping the output.
const ENVELOPE_RESERVE: usize = 512;

/// The exact command strings this agent may run, with their argv.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    entries: Vec<(String, Vec<String>)>,
}

impl Allowlist {
    /// # Errors
    /// [`AgentError::InvalidAllowCommand`] for an entry that is empty or only
    /// whitespace (it could never run anything).
    pub fn new(entries: &[String]) -> Result<Self, AgentError> {
        let mut out: Vec<(String, Vec<String>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let argv = split_argv(entry);
            if argv.is_empty() {
                return Err(AgentError::InvalidAllowCommand(format!(
                    "{entry:?} is empty"
                )));
            }
            if !out.iter().any(|(e, _)| e == entry) {
                out.push((entry.clone(), argv));
            }
        }
        Ok(Self { entries: out })
    }

    /// The argv for `command` when it exactly equals an allowed entry.
    pub fn lookup(&self, command: &str) -> Option<&[String]> {
        self.entries
            .iter()
            .find(|(entry, _)| entry == command)
            .map(|(_, argv)| argv.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Splits on whitespace; see the module docs (no quoting, no shell).
pub fn split_argv(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_owned).collect()
}

/// What running (or refusing) a command produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub output: String,
    pub exit_code: i32,
    pub duration: Duration,
}

/// Limits for one command run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

/// Checks `command` against the allowlist and runs it when allowed.
pub fn execute(
    allowlist: &Allowlist,
    command: &str,
    limits: Limits,
    shutdown: &AtomicBool,
) -> Outcome {
    match allowlist.lookup(command) {
        Some(argv) => run_argv(argv, limits, shutdown),
        None => refused(allowlist),
    }
}

/// The answer for a command that is not allowed. Nothing is run.
pub fn refused(allowlist: &Allowlist) -> Outcome {
    let output = if allowlist.is_empty() {
        "command refused: this agent allows no commands (start it with --allow-command)"
    } else {
        "command refused: not in this agent's --allow-command list (exact match required)"
    };
    Outcome {
        output: output.to_owned(),
        exit_code: -1,
        duration: Duration::ZERO,
    }
}

/// Output captured by the reader thread.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
    done: bool,
}

/// Runs `argv` without a shell; see the module docs for the guarantees.
pub fn run_argv(argv: &[String], limits: Limits, shutdown: &AtomicBool) -> Outcome {
    let started = Instant::now();
    let fail = |output: String| Outcome {
        output,
        exit_code: -1,
        duration: started.elapsed(),
    };
    let Some((program, args)) = argv.split_first() else {
        return fail("command refused: empty command".to_owned());
    };

    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return fail(format!("could not create an output pipe: {e}")),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return fail(format!("could not create an output pipe: {e}")),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end live in `cmd`; drop them so the
    // reader sees end-of-file once the child (and its children) are done.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return fail(format!("could not start `{program}`: {e}")),
    };

    let captured = Arc::new(Mutex::new(Captured::default()));
    let reader_thread = {
        let captured = Arc::clone(&captured);
        let max = limits.max_output_bytes;
        thread::Builder::new()
            .name("agent-cmd-output".into())
            .spawn(move || read_capped(reader, max, &captured))
    };
    if let Err(e) = reader_thread {
        kill_group(&mut child);
        return fail(format!("could not start an output reader: {e}"));
    }

    let deadline = started + limits.timeout;
    let mut nap = Duration::from_millis(2);
    let (status, note) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), None),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                break (None, Some(format!("could not wait for `{program}`: {e}")));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            break (
                None,
                Some(format!(
                    "command timed out after {} and was killed",
                    humantime::format_duration(limits.timeout)
                )),
            );
        }
        if shutdown.load(Ordering::Relaxed) {
            kill_group(&mut child);
            break (None, Some("agent shutting down: command killed".to_owned()));
        }
        thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(50));
    };

    // Give the reader a moment to see end-of-file.
    let grace_end = Instant::now() + PIPE_GRACE;
    while !captured.lock().done && Instant::now() < grace_end {
        thread::sleep(Duration::from_millis(5));
    }
    let duration = started.elapsed();

    let (mut output, pipe_open) = {
        let c = captured.lock();
        let mut out = String::from_utf8_lossy(&c.kept).into_owned();
        // Escaping can make the kept bytes bigger on the wire; the cap is
        // on what the hub receives, leaving room for the rest of the
        // message so the whole frame stays within `max_output_bytes`.
        let json_cut = cap_json_len(
            &mut out,
            limits
                .max_output_bytes
                .saturating_sub(ENVELOPE_RESERVE)
                .max(64),
        );
        if json_cut || c.total > c.kept.len() as u64 {
            out.push_str(&format!("\n[output truncated: {} bytes in total]", c.total));
        }
        (out, !c.done)
    };
    if pipe_open && status.is_some() {
        output.push_str("\n[output still open after the command exited; not waiting]");
    }

    let exit_code = match (&status, note) {
        (Some(s), _) if s.code().is_some() => s.code().unwrap_or(-1),
        (Some(s), _) => {
            output.push_str(&format!(
                "\n[terminated by signal {}]",
                s.signal().unwrap_or_default()
            ));
            -1
        }
        (None, Some(note)) => {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&format!("[{note}]"));
            -1
        }
        (None, None) => -1,
    };
    Outcome {
        output,
        exit_code,
        duration,
    }
}

/// Reads the pipe to its end, keeping the first `max` bytes.
fn read_capped(mut pipe: std::io::PipeReader, max: usize, captured: &Mutex<Captured>) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut c = captured.lock();
                let room = max.saturating_sub(c.kept.len());
                let keep = room.min(n);
                c.kept.extend_from_slice(&buf[..keep]);
                c.total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::debug!("command output pipe: {e}");
                break;
            }
        }
    }
    captured.lock().done = true;
}

/// SIGKILLs the child's process group (then the child, in case it left the
/// group) and reaps it.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group;
        // the group id is the child's pid since we spawned it with
        // process_group(0), and we have not reaped it yet.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, max: usize) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            max_output_bytes: max,
        }
    }

    fn allow(entries: &[&str]) -> Allowlist {
        Allowlist::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn split_is_plain_whitespace() {
        assert_eq!(split_argv("ls -la  /var/log"), ["ls", "-la", "/var/log"]);
        assert_eq!(split_argv("  uptime\t"), ["uptime"]);
        assert_eq!(split_argv("sh -c 'a b'"), ["sh", "-c", "'a", "b'"]);
        assert!(split_argv(" \t ").is_empty());
    }

    #[test]
    fn allowlist_needs_exact_match() {
        let a = allow(&["uptime", "df -h"]);
        assert_eq!(a.lookup("uptime").unwrap(), ["uptime"]);
        assert_eq!(a.lookup("df -h").unwrap(), ["df", "-h"]);
        assert!(a.lookup("df  -h").is_none());
        assert!(a.lookup("df -h ").is_none());
        assert!(a.lookup(" uptime").is_none());
        assert!(a.lookup("Uptime").is_none());
        assert!(a.lookup("uptime; rm -rf /").is_none());
        assert!(a.lookup("df").is_none());
        assert!(a.lookup("").is_none());
        assert!(Allowlist::new(&["  ".to_string()]).is_err());
        assert!(Allowlist::new(&[String::new()]).is_err());
    }

    #[test]
    fn refused_commands_never_run() {
        let dir = crate::agent::test_util::tempdir();
        let marker = dir.join("ran");
        let entry = format!("touch {}", marker.display());
        let a = allow(&[&entry]);
        let stop = AtomicBool::new(false);
        for bad in [
            format!("{entry} "),
            format!("touch  {}", marker.display()),
            "touch".into(),
        ] {
            let out = execute(&a, &bad, limits(5000, 1024), &stop);
            assert_eq!(out.exit_code, -1);
            assert!(out.output.contains("refused"), "{}", out.output);
        }
        assert!(!marker.exists());
        let empty = Allowlist::default();
        let out = execute(&empty, &entry, limits(5000, 1024), &stop);
        assert_eq!(out.exit_code, -1);
        assert!(out.output.contains("allows no commands"));
        assert!(!marker.exists());
        // The exact entry does run.
        let out = execute(&a, &entry, limits(5000, 1024), &stop);
        assert_eq!(out.exit_code, 0, "{}", out.output);
        assert!(marker.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn captures_stdout_and_stderr_and_exit_code() {
        let stop = AtomicBool::new(false);
        let script = "printf out;printf err>&2;exit 3";
        let out = run_argv(
            &["sh".into(), "-c".into(), script.into()],
            limits(5000, 1024),
            &stop,
        );
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.output, "outerr");
    }

    #[test]
    fn no_shell_means_no_expansion() {
        let stop = AtomicBool::new(false);
        let a = allow(&["echo $HOME *"]);
        let out = execute(&a, "echo $HOME *", limits(5000, 1024), &stop);
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.output, "$HOME *\n");
    }

    #[test]
    fn output_is_capped_with_a_note() {
        let stop = AtomicBool::new(false);
        let out = run_argv(
            &[
                "sh".into(),
                "-c".into(),
                "yes | tr -d '\\n' | head -c 100000".into(),
            ],
            limits(10_000, 2000),
            &stop,
        );
        assert_eq!(out.exit_code, 0);
        let (kept, note) = out.output.split_once("\n[output truncated: ").unwrap();
        // 2000 bytes kept, 512 of them reserved for the message around it.
        assert_eq!(kept, "y".repeat(1488));
        assert_eq!(note, "100000 bytes in total]");

        // Newlines escape to two bytes: the cap holds for the JSON form.
        let out = run_argv(
            &["sh".into(), "-c".into(), "yes | head -c 100000".into()],
            limits(10_000, 2000),
            &stop,
        );
        let (kept, note) = out.output.split_once("\n[output truncated: ").unwrap();
        let encoded = serde_json::to_string(kept).unwrap();
        assert!(
            encoded.len() - 2 <= 1488 && encoded.len() - 2 >= 1486,
            "{}",
            encoded.len()
        );
        assert!(kept.starts_with("y\ny\n"));
        assert_eq!(note, "100000 bytes in total]");

        // Output under the cap is untouched.
        let out = run_argv(
            &["echo".into(), "short".into()],
            limits(10_000, 1000),
            &stop,
        );
        assert_eq!(out.output, "short\n");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        // The child shell starts a grandchild sleeper holding the pipe; both
        // must die at the timeout, or the reader would wait 30 s.
        let out = run_argv(
            &[
                "sh".into(),
                "-c".into(),
                "echo started; sleep 30 & sleep 30".into(),
            ],
            limits(300, 1024),
            &stop,
        );
        let took = started.elapsed();
        assert_eq!(out.exit_code, -1);
        assert!(out.output.starts_with("started\n"), "{}", out.output);
        assert!(
            out.output.contains("timed out after 300ms"),
            "{}",
            out.output
        );
        assert!(!out.output.contains("still open"), "{}", out.output);
        assert!(took >= Duration::from_millis(300));
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    #[test]
    fn shutdown_kills_a_running_command() {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let t = thread::spawn(move || {
            run_argv(&["sleep".into(), "30".into()], limits(30_000, 1024), &s2)
        });
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let out = t.join().unwrap();
        assert_eq!(out.exit_code, -1);
        assert!(out.output.contains("shutting down"), "{}", out.output);
        assert!(out.duration < Duration::from_secs(5));
    }

    #[test]
    fn spawn_failure_is_reported() {
        let stop = AtomicBool::new(false);
        let out = run_argv(
            &["/nonexistent/dockwire-no-such-program".into()],
            limits(1000, 1024),
            &stop,
        );
        assert_eq!(out.exit_code, -1);
        assert!(out.output.starts_with("could not start"), "{}", out.output);
    }

    #[test]
    fn killed_by_signal_is_minus_one() {
        let stop = AtomicBool::new(false);
        let out = run_argv(
            &["sh".into(), "-c".into(), "kill -9 $$".into()],
            limits(5000, 1024),
            &stop,
        );
        assert_eq!(out.exit_code, -1);
        assert!(
            out.output.contains("terminated by signal 9"),
            "{}",
            out.output
        );
    }
}
