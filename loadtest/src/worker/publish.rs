//! What publishers send, and when.
//!
//! Owns the message builders for every publisher kind (agent `log` and
//! `metrics` messages, a Docker agent's `hello`, container table,
//! `container_state_change`, `container_stats` and `log_batch` (SPEC 6), Socket.IO `publish` events, plain relay messages), the
//! pacing arithmetic, and the FIFO writer thread behind the container source.
//! Invariants: every message carries its own send time (taken right before it
//! is queued) and a per-publisher sequence number starting at 1; pacing never
//! bursts more than one second's worth of messages at once.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::payload::{self, now_ns};

/// `{"type":"log","server_id",...,"message":"<stamp line>","timestamp"}` (agent protocol §3.3).
pub fn agent_log(out: &mut Vec<u8>, sid: &str, ns: u64, seq: u64, size: usize) {
    out.extend_from_slice(br#"{"type":"log","server_id":""#);
    payload::json_escape_into(out, sid);
    out.extend_from_slice(br#"","level":"INFO","message":""#);
    payload::write_stamp_line(out, ns, seq, size);
    out.extend_from_slice(br#"","timestamp":""#);
    out.extend_from_slice(rfc3339_now().as_bytes());
    out.extend_from_slice(br#""}"#);
}

/// A metrics sample (agent protocol §3.3, `Metrics` fields of §3.1) plus
/// `sent_ns` and `seq`, which the hub forwards to browsers inside `data`.
pub fn agent_metrics(out: &mut Vec<u8>, sid: &str, ns: u64, seq: u64) {
    use std::io::Write as _;
    let wobble = (seq % 100) as f64;
    out.extend_from_slice(br#"{"type":"metrics","server_id":""#);
    payload::json_escape_into(out, sid);
    let _ = write!(
        out,
        concat!(
            r#"","cpu_percent":{:.1},"memory_percent":{:.1},"memory_used":{},"memory_total":8589934592,"#,
            r#""disk_usage":[{{"mount":"/","used":21474836480,"total":107374182400}}],"#,
            r#""network":[{{"interface":"eth0","rx_bytes":{},"tx_bytes":{}}}],"#,
            r#""load_average":[0.52,0.48,0.4],"timestamp":"{}","sent_ns":{},"seq":{}}}"#
        ),
        10.0 + wobble * 0.5,
        40.0 + wobble * 0.1,
        3_221_225_472u64 + seq * 4096,
        seq * 1500,
        seq * 900,
        rfc3339_now(),
        ns,
        seq
    );
}

/// Id of container `c` of remote agent `agent` (64 hex digits, like Docker's).
pub fn remote_container_id(agent: u64, c: u32) -> String {
    format!("{agent:032x}{c:032x}")
}

/// One container of a remote agent's table; `stamp` (send ns, seq) goes into
/// the labels `dw_sent_ns` and `dw_seq`, where subscribers read it back.
fn remote_container(out: &mut Vec<u8>, agent: u64, c: u32, stamp: Option<(u64, u64)>) {
    let id = remote_container_id(agent, c);
    let _ = write!(
        out,
        concat!(
            r#"{{"id":"{}","name":"a{}-c{}","image":"registry.local/app:{}","state":"running","#,
            r#""status":"Up 2 hours","created":"2026-11-30T06:00:00Z","labels":{{"#,
            r#""com.docker.compose.project":"load","com.docker.compose.service":"svc{}""#
        ),
        id,
        agent,
        c,
        c % 7,
        c
    );
    if let Some((ns, seq)) = stamp {
        let _ = write!(out, r#","dw_sent_ns":"{ns}","dw_seq":"{seq}""#);
    }
    out.extend_from_slice(
        br#"},"started_at":"2026-11-30T06:00:01Z","exit_code":null,"health":null}"#,
    );
}

/// What a Docker agent sends after `auth_success`: `hello` with `docker`,
/// then its whole table of `containers` in one message.
pub fn remote_intro(agent: u64, containers: u32) -> Vec<Box<str>> {
    let hello = format!(
        r#"{{"type":"hello","name":"load-{agent}","version":"loadtest","capabilities":["docker"]}}"#
    );
    let mut table = br#"{"type":"containers","containers":["#.to_vec();
    for c in 0..containers {
        if c > 0 {
            table.push(b',');
        }
        remote_container(&mut table, agent, c, None);
    }
    table.extend_from_slice(b"]}");
    vec![
        hello.into_boxed_str(),
        String::from_utf8_lossy(&table)
            .into_owned()
            .into_boxed_str(),
    ]
}

/// `container_state_change` for container `seq % containers`, stamped.
pub fn remote_change(out: &mut Vec<u8>, agent: u64, containers: u32, ns: u64, seq: u64) {
    out.extend_from_slice(br#"{"type":"container_state_change","container":"#);
    let c = (seq % u64::from(containers.max(1))) as u32;
    remote_container(out, agent, c, Some((ns, seq)));
    out.push(b'}');
}

/// `container_stats` for every container of a remote agent.
pub fn remote_stats(out: &mut Vec<u8>, agent: u64, containers: u32, tick: u64) {
    out.extend_from_slice(br#"{"type":"container_stats","stats":["#);
    for c in 0..containers {
        if c > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            concat!(
                r#"{{"id":"{}","cpu_percent":{:.2},"memory_used":{},"memory_limit":2147483648,"#,
                r#""net_rx_bytes":{},"net_tx_bytes":{}}}"#
            ),
            remote_container_id(agent, c),
            (tick % 50) as f64 * 0.1 + f64::from(c % 5),
            50_000_000 + u64::from(c) * 1_000_000 + tick * 4096,
            tick * 15_000,
            tick * 9_000
        );
    }
    out.extend_from_slice(b"]}");
}

/// `log_batch` of `n` stamp lines numbered from `first_seq`, all stamped `ns`.
pub fn remote_log_batch(
    out: &mut Vec<u8>,
    container_id: &str,
    ns: u64,
    first_seq: u64,
    n: u64,
    size: usize,
) {
    out.extend_from_slice(br#"{"type":"log_batch","container_id":""#);
    payload::json_escape_into(out, container_id);
    out.extend_from_slice(br#"","lines":["#);
    let ts = rfc3339_now();
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"stream":"stdout","timestamp":""#);
        out.extend_from_slice(ts.as_bytes());
        out.extend_from_slice(br#"","line":""#);
        payload::write_stamp_line(out, ns, first_seq + i, size);
        out.extend_from_slice(br#""}"#);
    }
    out.extend_from_slice(b"]}");
}

/// `{"ts":"<ns>","seq":N,"payload":"xxx…"}`: the relay object (peers/README.md).
pub fn relay_object(out: &mut Vec<u8>, ns: u64, seq: u64, size: usize) {
    let _ = write!(out, r#"{{"ts":"{ns}","seq":{seq},"payload":""#);
    out.resize(out.len() + size.max(1), b'x');
    out.extend_from_slice(br#""}"#);
}

/// `42["publish",{relay object}]`.
pub fn sio_publish(out: &mut Vec<u8>, ns: u64, seq: u64, size: usize) {
    out.extend_from_slice(br#"42["publish","#);
    relay_object(out, ns, seq, size);
    out.push(b']');
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Messages due at `elapsed` for `rate` per second, given `sent` so far,
/// capped at one second's worth so a stall is not followed by a huge burst.
pub fn due(rate: f64, elapsed: Duration, sent: u64) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    let target = (elapsed.as_secs_f64() * rate).floor() as u64;
    target.saturating_sub(sent).min(rate.ceil().max(1.0) as u64)
}

/// Time until the next message is due (at least 0).
pub fn until_next(rate: f64, elapsed: Duration, sent: u64) -> Duration {
    if rate <= 0.0 {
        return Duration::from_secs(1);
    }
    let next_at = (sent + 1) as f64 / rate;
    Duration::from_secs_f64((next_at - elapsed.as_secs_f64()).max(0.0))
}

/// Messages to the FIFO thread.
enum FifoGo {
    /// Write lines until `until`.
    Start { until: Instant },
}

/// Handle on the FIFO writer thread.
pub struct FifoWriter {
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    go: mpsc::Sender<FifoGo>,
}

impl FifoWriter {
    pub fn start(&self, until: Instant) {
        let _ = self.go.send(FifoGo::Start { until });
    }
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Spawns the writer: it opens `path` for writing (waiting up to
/// `open_timeout` for the container's reader), reports through `opened`, then
/// waits for `start` and writes stamp lines at `rate` per second.
pub fn spawn_fifo(
    path: String,
    rate: f64,
    size: usize,
    open_timeout: Duration,
    opened: impl FnOnce(Result<(), String>) + Send + 'static,
) -> FifoWriter {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (go_tx, go_rx) = mpsc::channel();
    let (sent2, stop2) = (sent.clone(), stop.clone());
    thread::spawn(move || {
        let deadline = Instant::now() + open_timeout;
        // O_NONBLOCK open fails with ENXIO until a reader has the FIFO open;
        // that is how we wait for the container without blocking forever.
        let file = loop {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(f) => break Ok(f),
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => break Err(format!("could not open FIFO {path}: {e}")),
            }
        };
        let mut file = match file {
            Ok(f) => {
                use std::os::fd::AsRawFd;
                // Back to blocking writes: pacing sleeps, the pipe applies backpressure.
                // SAFETY: fcntl on a valid fd we own.
                unsafe {
                    let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
                    libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
                }
                opened(Ok(()));
                f
            }
            Err(e) => {
                opened(Err(e));
                return;
            }
        };
        let Ok(FifoGo::Start { until }) = go_rx.recv() else {
            return;
        };
        let t0 = Instant::now();
        let mut n = 0u64;
        let mut buf = Vec::with_capacity(256 * 1024);
        while !stop2.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let k = due(rate, now - t0, n).min(2000);
            buf.clear();
            for _ in 0..k {
                n += 1;
                payload::write_stamp_line(&mut buf, now_ns(), n, size);
                buf.push(b'\n');
            }
            if !buf.is_empty() {
                if file.write_all(&buf).is_err() {
                    break;
                }
                sent2.store(n, Ordering::Relaxed);
            }
            if k < 2000 {
                thread::sleep(
                    until_next(rate, Instant::now() - t0, n).min(Duration::from_millis(1)),
                );
            }
        }
        // Keep the FIFO open until the worker drops its handle (it exits after
        // its result): closing it ends the container's `cat`, and the server
        // would report the stream stopped while late lines still count.
        let _ = go_rx.recv();
        drop(file);
    });
    FifoWriter {
        sent,
        stop,
        go: go_tx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_valid_json_with_stamps() {
        let mut out = Vec::new();
        agent_log(&mut out, "s\"id", 1_754_000_000_000_000_001, 9, 100);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "log");
        assert_eq!(v["server_id"], "s\"id");
        let m = v["message"].as_str().unwrap();
        assert_eq!(m.len(), 100);
        assert!(m.starts_with("1754000000000000001 9 "));
        assert!(humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());

        out.clear();
        agent_metrics(&mut out, "sid", 1_754_000_000_000_000_002, 3);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "metrics");
        assert_eq!(v["sent_ns"].as_u64(), Some(1_754_000_000_000_000_002));
        assert_eq!(v["seq"], 3);
        assert_eq!(v["disk_usage"][0]["mount"], "/");
        assert_eq!(v["load_average"].as_array().unwrap().len(), 3);
        assert!(humantime::parse_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());

        out.clear();
        sio_publish(&mut out, 1_754_000_000_000_000_003, 4, 10);
        assert!(out.starts_with(br#"42["publish",{"ts":"1754000000000000003","seq":4,"#));
        let v: serde_json::Value = serde_json::from_slice(&out[2..]).unwrap();
        assert_eq!(v[1]["payload"].as_str().unwrap().len(), 10);
        assert_eq!(
            payload::u64_field(&out, "ts"),
            Some(1_754_000_000_000_000_003)
        );
    }

    #[test]
    fn pacing() {
        assert_eq!(due(100.0, Duration::from_millis(0), 0), 0);
        assert_eq!(due(100.0, Duration::from_millis(10), 0), 1);
        assert_eq!(due(100.0, Duration::from_millis(95), 3), 6);
        // A 10 s stall allows at most one second's worth.
        assert_eq!(due(100.0, Duration::from_secs(10), 0), 100);
        assert_eq!(due(0.0, Duration::from_secs(10), 0), 0);
        let wait = until_next(100.0, Duration::from_millis(5), 0);
        assert!((wait.as_secs_f64() - 0.005).abs() < 1e-9);
        assert_eq!(
            until_next(100.0, Duration::from_millis(50), 0),
            Duration::ZERO
        );
    }

    #[test]
    fn fifo_writer_feeds_a_reader() {
        let dir = std::env::temp_dir().join(format!("dwlt-fifo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fifo");
        let cpath = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o666) }, 0);
        let (tx, rx) = mpsc::channel();
        let w = spawn_fifo(
            path.to_str().unwrap().to_string(),
            2000.0,
            50,
            Duration::from_secs(5),
            move |r| {
                let _ = tx.send(r);
            },
        );
        let reader_path = path.clone();
        let reader = thread::spawn(move || std::fs::read_to_string(reader_path).unwrap());
        rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        w.start(Instant::now() + Duration::from_millis(300));
        thread::sleep(Duration::from_millis(500));
        let sent = w.sent.load(Ordering::Relaxed);
        // The FIFO stays open until the handle is dropped.
        assert!(!reader.is_finished());
        drop(w);
        let text = reader.join().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, sent);
        assert!(
            (400..=700).contains(&sent),
            "sent {sent} lines in 0.3 s at 2000/s"
        );
        for (i, l) in lines.iter().enumerate() {
            let st = payload::parse_stamp_line(l.as_bytes()).unwrap();
            assert_eq!(st.seq, i as u64 + 1);
            assert_eq!(l.len(), 50);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
