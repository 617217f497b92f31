//! `dockwire-loadtest attack`: the misbehaving clients an outsider can
//! throw at a daemon, so an operator can check their own deployment and the
//! soak (scripts/soak.sh) can mix them with well-behaved load.
//!
//! Each kind guards against one attack:
//! - `slowloris`: HTTP heads sent a byte at a time, never finished — the
//!   daemon must close them after its handshake timeout, not hold them.
//! - `flood`: an upgraded but unauthenticated socket that sends pings and
//!   garbage messages as fast as it can and never reads — the daemon must
//!   not queue a pong per ping without bound, and must close it (auth
//!   timeout, bad input or the send-queue cap).
//! - `garbage`: random bytes, before the upgrade (as the HTTP head) and
//!   after it (as frames) — the daemon must answer with an error or a close.
//! - `nonreader`: an authenticated socket that follows a busy container's
//!   logs (`--container`) and never reads — the daemon must cap its queue
//!   (drop lines, or close with 1013), whatever the stream's rate.
//!
//! One thread per attacking connection (at most [`MAX_CONNECTIONS`]), plain
//! blocking sockets with timeouts; every loop is bounded by `--duration`.
//! The report says, per kind, how many connections the daemon ended and
//! how many were still open when the run ended.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::{AttackArgs, AttackKind};
use crate::target::parse_target;
use crate::wsproto;

/// Upper bound on attacking connections in one run (one thread each).
pub const MAX_CONNECTIONS: u64 = 500;

/// What happened to one attacking connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The daemon closed or reset it, after this long.
    Ended(Duration),
    /// Still open when the run ended.
    Held,
    /// Could not connect (or the upgrade failed before the attack began).
    Failed,
}

/// The report of one `attack` run, printed as a table or (with --json) JSON.
#[derive(Debug, Serialize)]
pub struct AttackReport {
    pub kind: &'static str,
    pub connections: u64,
    /// Ended by the daemon (close, reset or an HTTP error answer).
    pub ended_by_server: u64,
    /// Still open at the end of --duration.
    pub held_at_end: u64,
    pub failed_to_start: u64,
    /// Slowest time until the daemon ended a connection, in milliseconds.
    pub slowest_end_ms: Option<u64>,
    /// Bytes the attackers got out (the flood's and garbage's volume).
    pub bytes_sent: u64,
}

pub fn run(args: AttackArgs) -> anyhow::Result<()> {
    let target = parse_target(&args.target)?;
    anyhow::ensure!(
        !target.tls,
        "attack speaks plain TCP only; point it at a ws:// target"
    );
    anyhow::ensure!(
        (1..=MAX_CONNECTIONS).contains(&args.connections),
        "--connections must be 1..={MAX_CONNECTIONS}"
    );
    if args.kind == AttackKind::Nonreader {
        anyhow::ensure!(
            args.container.is_some() && args.token.is_some(),
            "nonreader needs --container and --token (it follows a container's logs)"
        );
    }
    let args = Arc::new(args);
    let stop = Arc::new(AtomicBool::new(false));
    if args.kind == AttackKind::Garbage {
        // Made here: compressing needs more stack than an attacker thread has.
        deflate_bomb();
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..args.connections {
        let args = Arc::clone(&args);
        let stop = Arc::clone(&stop);
        let addr = target.addr;
        let host = target.host_header.clone();
        handles.push(
            thread::Builder::new()
                .name(format!("attack-{i}"))
                .stack_size(64 * 1024)
                .spawn(move || attack_one(&args, addr, &host, i, &stop))
                .context("spawning an attacker thread")?,
        );
    }
    while started.elapsed() < args.duration {
        thread::sleep(Duration::from_millis(50).min(args.duration));
    }
    stop.store(true, Ordering::Relaxed);
    let mut report = AttackReport {
        kind: args.kind.name(),
        connections: args.connections,
        ended_by_server: 0,
        held_at_end: 0,
        failed_to_start: 0,
        slowest_end_ms: None,
        bytes_sent: 0,
    };
    for h in handles {
        let (outcome, sent) = h.join().unwrap_or((Outcome::Failed, 0));
        report.bytes_sent = report.bytes_sent.saturating_add(sent);
        match outcome {
            Outcome::Ended(after) => {
                report.ended_by_server += 1;
                let ms = after.as_millis().min(u128::from(u64::MAX)) as u64;
                report.slowest_end_ms = Some(report.slowest_end_ms.map_or(ms, |m| m.max(ms)));
            }
            Outcome::Held => report.held_at_end += 1,
            Outcome::Failed => report.failed_to_start += 1,
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "attack {}: {} connections, {} ended by the server (slowest after {}), {} still open at the end, {} failed to start, {} bytes sent",
            report.kind,
            report.connections,
            report.ended_by_server,
            report
                .slowest_end_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms} ms")),
            report.held_at_end,
            report.failed_to_start,
            report.bytes_sent
        );
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*), so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn attack_one(
    args: &AttackArgs,
    addr: SocketAddr,
    host: &str,
    index: u64,
    stop: &AtomicBool,
) -> (Outcome, u64) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (Outcome::Failed, 0);
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let began = Instant::now();
    let mut rng = Rng::new(args.seed ^ index);
    let mut sent = 0u64;
    let outcome = match args.kind {
        AttackKind::Slowloris => slowloris(&mut stream, host, stop, &mut sent),
        AttackKind::Flood => match upgrade(&mut stream, host, "/api/v1/ws", &mut rng, false) {
            Ok(()) => flood(&mut stream, &mut rng, stop, &mut sent),
            Err(_) => Some(()),
        },
        AttackKind::Garbage => garbage(&mut stream, host, index, &mut rng, stop, &mut sent),
        AttackKind::Nonreader => match upgrade(&mut stream, host, "/api/v1/ws", &mut rng, false) {
            Ok(()) => nonreader(&mut stream, args, &mut rng, stop, &mut sent),
            Err(_) => return (Outcome::Failed, 0),
        },
    };
    let outcome = match outcome {
        Some(()) => Outcome::Ended(began.elapsed()),
        None => Outcome::Held,
    };
    let _ = stream.shutdown(Shutdown::Both);
    (outcome, sent)
}

/// True once the peer closed or reset the connection (a read of 0 or an
/// error other than a timeout). Reads and discards what is there.
fn peer_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Writes `bytes`; true when the peer is gone, false when written or when
/// the socket's buffer is full (a non-reading peer is not a close).
fn write_or_closed(stream: &mut TcpStream, bytes: &[u8], sent: &mut u64) -> bool {
    match stream.write(bytes) {
        Ok(n) => {
            *sent = sent.saturating_add(n as u64);
            false
        }
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Writes all of `bytes` (frames must not be cut, or the flood would be
/// garbage), waiting while the socket's buffer is full until `stop`; true
/// when the peer is gone.
fn write_all_or_closed(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    stop: &AtomicBool,
    sent: &mut u64,
) -> bool {
    while !bytes.is_empty() && !stop.load(Ordering::Relaxed) {
        match stream.write(bytes) {
            Ok(0) => return true,
            Ok(n) => {
                *sent = sent.saturating_add(n as u64);
                bytes = &bytes[n..];
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if peer_closed_now(stream) {
                    return true;
                }
            }
            Err(_) => return true,
        }
    }
    false
}

fn slowloris(stream: &mut TcpStream, host: &str, stop: &AtomicBool, sent: &mut u64) -> Option<()> {
    let head = format!("GET /api/v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nX-Pad: ");
    for b in head.bytes().chain(std::iter::repeat(b'a')) {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        if write_or_closed(stream, &[b], sent) {
            return Some(());
        }
        // The read waits up to its timeout: one byte every ~200 ms.
        if peer_closed(stream) {
            return Some(());
        }
    }
    None
}

fn upgrade(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    rng: &mut Rng,
    deflate: bool,
) -> anyhow::Result<()> {
    let mut raw = [0u8; 16];
    rng.fill(&mut raw);
    let key = wsproto::make_key(raw);
    stream.write_all(&wsproto::handshake_request(host, path, &key, deflate))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => anyhow::bail!("closed during the upgrade"),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if wsproto::parse_response(&buf, &key)?.is_some() {
                    return Ok(());
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("no upgrade answer in 5 s")
}

fn flood(stream: &mut TcpStream, rng: &mut Rng, stop: &AtomicBool, sent: &mut u64) -> Option<()> {
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        batch.clear();
        while batch.len() < 60 * 1024 {
            let mask = (rng.next() as u32).to_be_bytes();
            if round % 8 == 7 {
                // Now and then a text message that is no request at all.
                let mut junk = [0u8; 48];
                rng.fill(&mut junk);
                let text: String = junk.iter().map(|b| char::from(b'a' + b % 26)).collect();
                wsproto::encode_frame(&mut batch, 0x1, text.as_bytes(), mask);
            } else {
                wsproto::encode_frame(&mut batch, 0x9, b"flood", mask);
            }
            round += 1;
        }
        if write_all_or_closed(stream, &batch, stop, sent) {
            return Some(());
        }
        // A flood never reads; after each batch, only look (without
        // waiting) whether the daemon has hung up.
        if peer_closed_now(stream) {
            return Some(());
        }
    }
    None
}

/// Like [`peer_closed`] but without waiting: a peek with no timeout.
fn peer_closed_now(stream: &mut TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut b = [0u8; 1];
    let closed = match stream.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    };
    let _ = stream.set_nonblocking(false);
    closed
}

fn garbage(
    stream: &mut TcpStream,
    host: &str,
    index: u64,
    rng: &mut Rng,
    stop: &AtomicBool,
    sent: &mut u64,
) -> Option<()> {
    // Even connections send garbage as the HTTP head, odd ones as frames
    // after a valid upgrade; every fourth negotiates permessage-deflate and
    // first sends a deflate bomb (a few KiB inflating to 16 MiB).
    let deflate = index % 4 == 3;
    if index % 2 == 1 && upgrade(stream, host, "/api/v1/ws", rng, deflate).is_err() {
        return Some(());
    }
    if deflate {
        let mut frame = Vec::new();
        let mask = (rng.next() as u32).to_be_bytes();
        // RSV1 (0x40): a compressed text message.
        wsproto::encode_frame(&mut frame, 0x40 | 0x1, deflate_bomb(), mask);
        if write_all_or_closed(stream, &frame, stop, sent) {
            return Some(());
        }
    }
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        rng.fill(&mut buf);
        if write_or_closed(stream, &buf, sent) {
            return Some(());
        }
        if peer_closed(stream) {
            return Some(());
        }
    }
    None
}

/// Raw deflate of 16 MiB of zeros (what a permessage-deflate message
/// carries): about 16 KiB on the wire, made once, by [`run`] before the
/// attacker threads start (they run on 64 KiB stacks).
fn deflate_bomb() -> &'static [u8] {
    static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BOMB.get_or_init(|| {
        use std::io::Write as _;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 64 * 1024];
        for _ in 0..256 {
            e.write_all(&zeros).expect("writing to a Vec");
        }
        e.finish().expect("writing to a Vec")
    })
}

fn nonreader(
    stream: &mut TcpStream,
    args: &AttackArgs,
    rng: &mut Rng,
    stop: &AtomicBool,
    sent: &mut u64,
) -> Option<()> {
    let token = args.token.as_deref().unwrap_or_default();
    let container = args.container.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    let auth = serde_json::json!({"type": "auth", "token": token}).to_string();
    let follow =
        serde_json::json!({"type": "start_log_stream", "container_id": container}).to_string();
    for msg in [auth, follow] {
        let mask = (rng.next() as u32).to_be_bytes();
        wsproto::encode_frame(&mut out, 0x1, msg.as_bytes(), mask);
    }
    if write_or_closed(stream, &out, sent) {
        return Some(());
    }
    // Never read again; only notice a reset or close, by peeking rarely.
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(250));
        if peer_closed_now(stream) {
            return Some(());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_fills_partial_chunks() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
        assert_ne!(Rng::new(8).next(), Rng::new(7).next());
    }

    fn one_slowloris(addr: SocketAddr) -> AttackArgs {
        AttackArgs {
            target: addr.to_string(),
            kind: AttackKind::Slowloris,
            connections: 1,
            duration: Duration::from_secs(10),
            token: None,
            container: None,
            seed: 1,
            json: false,
        }
    }

    #[test]
    fn a_slowloris_against_a_listener_that_hangs_up_is_counted_as_ended() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 8];
            let _ = s.read(&mut b);
            drop(s);
        });
        let args = one_slowloris(addr);
        let stop = AtomicBool::new(false);
        let (outcome, sent) = attack_one(&args, addr, &addr.to_string(), 0, &stop);
        server.join().unwrap();
        assert!(matches!(outcome, Outcome::Ended(_)), "{outcome:?}");
        assert!(sent >= 1);
    }

    #[test]
    fn a_slowloris_the_listener_keeps_is_held_when_the_run_stops() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let kept = listener.accept().unwrap();
                thread::sleep(Duration::from_millis(600));
                stop.store(true, Ordering::Relaxed);
                kept
            })
        };
        let args = one_slowloris(addr);
        let (outcome, _) = attack_one(&args, addr, &addr.to_string(), 0, &stop);
        drop(stopper.join().unwrap());
        assert_eq!(outcome, Outcome::Held);
    }
}
