//! Helpers shared by the integration tests: start the real `dockwire`
//! binary on a free loopback port with a temp config, connect real
//! WebSocket clients (tungstenite), speak raw TCP, wait with deadlines.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dockwire::auth::{Role, sign_token};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "dockwire-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running daemon, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
}

impl Daemon {
    /// Starts `dockwire serve` with `extra` TOML appended to a config holding `listen`.
    pub fn start(extra: &str) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let dir = temp_dir("daemon");
        let config_path = dir.join("dockwire.toml");
        std::fs::write(
            &config_path,
            format!("listen = \"127.0.0.1:{port}\"\n{extra}\n"),
        )
        .unwrap();
        Self::start_at(config_path, port, dir, env)
    }

    pub fn start_at(config_path: PathBuf, port: u16, dir: PathBuf, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockwire"));
        cmd.arg("serve").arg("--config").arg(&config_path);
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        if std::env::var_os("DOCKER_HOST").is_none() {
            // No engine in this test: point at a socket that does not exist.
            cmd.env(
                "DOCKER_HOST",
                format!("unix://{}/no-docker.sock", dir.display()),
            );
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().expect("spawn dockwire");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let d = Daemon {
            child,
            addr,
            dir,
            config_path,
        };
        d.wait_ready();
        d
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match try_http_get(self.addr, "/healthz") {
                Ok((200, _)) => return,
                // A TLS port answers plain HTTP with this: it is up.
                Ok((400, body)) if body.contains("speaks TLS") => return,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not become ready; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn healthz(&self) -> Value {
        let (status, body) = http_get(self.addr, "/healthz");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub fn metrics_text(&self) -> String {
        http_get(self.addr, "/metrics").1
    }

    /// Value of a Prometheus sample line like `name{labels} 3`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident set size in KiB from /proc.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log());
        }
    }
}

/// A GET over raw TCP: (status, body).
pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let raw = raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    Ok(split_response(&raw))
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    try_http_get(addr, path).expect("http get")
}

/// Sends bytes, reads until EOF (bounded by a 10 s timeout).
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub fn split_response(raw: &str) -> (u16, String) {
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Connects a WebSocket client with a read timeout.
pub fn connect(url: &str) -> Ws {
    let (ws, _resp) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    set_timeout(&ws, Duration::from_millis(200));
    ws
}

pub fn set_timeout(ws: &Ws, d: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(d)).unwrap();
    }
}

/// Makes writes on `ws` fail after `d` instead of blocking.
pub fn set_write_timeout(ws: &Ws, d: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_write_timeout(Some(d)).unwrap();
    }
}

pub fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

/// Next WebSocket message before `deadline`: `Ok(None)` on timeout, the
/// error when the connection failed or is gone.
fn try_read_until(ws: &mut Ws, deadline: Instant) -> Result<Option<Message>, tungstenite::Error> {
    while Instant::now() < deadline {
        match ws.read() {
            Ok(m) => return Ok(Some(m)),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Next WebSocket message before `deadline`: `None` on timeout or when the
/// connection is gone.
fn read_until(ws: &mut Ws, deadline: Instant) -> Option<Message> {
    try_read_until(ws, deadline).ok().flatten()
}

/// Next JSON text message within `within`, or None.
pub fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Message::Text(t) = read_until(ws, deadline)? {
            return Some(serde_json::from_str(t.as_str()).expect("server sent JSON"));
        }
    }
}

/// Waits for a message whose `type` is `kind`, skipping others (e.g. metrics).
pub fn wait_type(ws: &mut Ws, kind: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {kind:?} message within {within:?}");
        if let Some(v) = next_json(ws, left)
            && v["type"] == kind
        {
            return v;
        }
    }
}

/// Waits for a message matching `pred` (`what` names it in the failure),
/// skipping others.
pub fn wait_match(
    ws: &mut Ws,
    what: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_json(ws, left) {
            Some(m) if pred(&m) => return m,
            Some(_) => {}
            None => panic!("no {what} within {within:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code seen (if any).
pub fn wait_close(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        match read_until(ws, deadline)? {
            Message::Close(Some(f)) => return Some(f.code.into()),
            Message::Close(None) => return Some(1005),
            _ => {}
        }
    }
}

/// How a read-until-close ended (fields are shown through Debug).
#[derive(Debug)]
pub enum CloseSeen {
    Code(u16),
    NoCloseFrame(String),
    Timeout,
}

/// Reads everything until a close frame, the end of the connection or the
/// deadline; returns how it ended and the text messages seen on the way.
pub fn read_to_close(ws: &mut Ws, within: Duration) -> (CloseSeen, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut texts = Vec::new();
    loop {
        match try_read_until(ws, deadline) {
            Ok(Some(Message::Close(Some(f)))) => return (CloseSeen::Code(f.code.into()), texts),
            Ok(Some(Message::Close(None))) => return (CloseSeen::Code(1005), texts),
            Ok(Some(Message::Text(t))) => texts.push(t.as_str().to_string()),
            Ok(Some(_)) => {}
            Ok(None) => return (CloseSeen::Timeout, texts),
            Err(e) => return (CloseSeen::NoCloseFrame(e.to_string()), texts),
        }
    }
}

/// A masked (client-to-server) WebSocket frame, built here rather than by the
/// library so the tests check the daemon against the wire format itself.
pub fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A raw Socket.IO v4 client over WebSocket: the Engine.IO open packet
/// (`0{...}`), CONNECT (`40`) and its ack (`40...`). Returns the socket, the
/// open packet and the ack, for callers that check more of them.
pub fn sio_handshake(d: &Daemon) -> (Ws, String, String) {
    let mut ws = connect(&d.url("/socket.io/?EIO=4&transport=websocket"));
    let open = sio_text(&mut ws, Duration::from_secs(5)).expect("open packet");
    assert!(open.starts_with("0{"), "{open}");
    ws.send(Message::text("40")).unwrap();
    let ack = sio_text(&mut ws, Duration::from_secs(5)).expect("connect ack");
    assert!(ack.starts_with("40"), "{ack}");
    (ws, open, ack)
}

/// A connected raw Socket.IO v4 client (see [`sio_handshake`]).
pub fn sio_connect(d: &Daemon) -> Ws {
    sio_handshake(d).0
}

/// Next Socket.IO text frame within `within` (Engine.IO pings `2` are
/// answered with `3` on the way); `None` on timeout or when the connection
/// is gone.
pub fn sio_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        match read_until(ws, deadline)? {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).unwrap(),
            Message::Text(t) => return Some(t.as_str().to_string()),
            _ => {}
        }
    }
}

/// A valid raw upgrade request for `path`.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The JWT secret of the test daemons (as the daemon loads it from the file
/// [`write_secret`] writes: trailing newlines stripped).
pub const TEST_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

/// Writes a secret file (`TEST_SECRET` and a newline) and returns its path.
pub fn write_secret(dir: &Path) -> PathBuf {
    let p = dir.join("jwt.secret");
    let mut contents = TEST_SECRET.to_vec();
    contents.push(b'\n');
    std::fs::write(&p, contents).unwrap();
    p
}

/// Lowercase hex SHA-256, as a `key_sha256` config value wants (computed
/// here, not by the library, so the tests follow the documented format).
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A daemon with browser auth on (`[auth] jwt_secret_file` at `secret`,
/// holding [`TEST_SECRET`]) and agent keys: `keys[i]` is (key, server id)
/// for `[[agents]]` entry `agent-{i}` with server id `srv-{i}`.
pub struct AgentHub {
    pub d: Daemon,
    pub secret: PathBuf,
    pub keys: Vec<(String, String)>,
}

/// An [`AgentHub`] with `n` agent keys and `metrics_interval = "1h"`.
/// `extra` is TOML placed before `[auth]`: top-level keys first, then any
/// tables (e.g. `[limits]`).
pub fn agent_hub(n: usize, extra: &str) -> AgentHub {
    let secret = write_secret(&temp_dir("hub"));
    let mut cfg = format!(
        "metrics_interval = \"1h\"\n{extra}\n[auth]\njwt_secret_file = \"{}\"\n",
        secret.display()
    );
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("dwk_agent_key_{i}_{}", "k".repeat(20));
        let sid = format!("srv-{i}");
        cfg.push_str(&format!(
            "[[agents]]\nname = \"agent-{i}\"\nkey_sha256 = \"{}\"\nserver_id = \"{sid}\"\n",
            sha256_hex(&key)
        ));
        keys.push((key, sid));
    }
    AgentHub {
        d: Daemon::start(&cfg),
        secret,
        keys,
    }
}

/// A fake agent on `/api/v1/agents/ws`, authenticated with key `i` of `h`
/// (its `auth_success` names the key's server id).
pub fn fake_agent(h: &AgentHub, i: usize) -> Ws {
    let mut a = connect(&h.d.url("/api/v1/agents/ws"));
    send_json(&mut a, &json!({"type": "auth", "api_key": h.keys[i].0}));
    let ok = wait_type(&mut a, "auth_success", Duration::from_secs(5));
    assert_eq!(ok["server_id"], h.keys[i].1.as_str());
    a
}

/// Docker: env for tests that need the engine; None when not configured.
pub fn docker_host() -> Option<String> {
    std::env::var("DOCKER_HOST").ok()
}

pub fn test_image() -> String {
    std::env::var("DOCKWIRE_TEST_IMAGE").unwrap_or_else(|_| "dockwire-test:latest".into())
}

/// Runs the docker CLI against the test engine; returns stdout (trimmed).
pub fn docker(args: &[&str]) -> String {
    docker_with(Command::new("docker").args(args), args)
}

/// Runs the docker CLI against the engine at `host`; returns stdout (trimmed).
pub fn docker_at(host: &str, args: &[&str]) -> String {
    docker_with(
        Command::new("docker").args(args).env("DOCKER_HOST", host),
        args,
    )
}

fn docker_with(cmd: &mut Command, args: &[&str]) -> String {
    let out = cmd.output().expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker` but tolerating failure (cleanup).
pub fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A unique container name for a test.
pub fn unique_name(tag: &str) -> String {
    format!("dw-{tag}-{}-{}", std::process::id(), free_port())
}

/// Removes its container (by name) when dropped, pass or fail.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        docker_quiet(&["rm", "-f", &self.0]);
    }
}

/// `docker run -d --network none --name NAME [extra] IMAGE sh -c CMD`: the
/// cleanup guard and the full id.
pub fn run_container(name: &str, extra: &[&str], cmd: &str) -> (Container, String) {
    let image = test_image();
    let mut args = vec!["run", "-d", "--network", "none", "--name", name];
    args.extend_from_slice(extra);
    args.push(&image);
    args.extend_from_slice(&["sh", "-c", cmd]);
    let id = docker(&args);
    (Container(name.to_string()), id)
}

/// An engine of this test's own (scripts/docker-env.sh with its own state
/// dir), stopped and deleted on drop.
pub struct OwnEngine {
    pub state: std::path::PathBuf,
    pub host: String,
}

impl OwnEngine {
    pub fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker-env.sh")
    }

    pub fn run(state: &std::path::Path, cmd: &str) -> String {
        let out = Command::new("bash")
            .arg(Self::script())
            .arg(cmd)
            .env("DOCKWIRE_TESTENV", state)
            .output()
            .expect("run docker-env.sh");
        assert!(
            out.status.success(),
            "docker-env.sh {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start() -> OwnEngine {
        let state = std::env::temp_dir().join(unique_name("engine"));
        Self::run(&state, "start");
        let env = Self::run(&state, "env");
        let host = env
            .lines()
            .find_map(|l| l.strip_prefix("export DOCKER_HOST="))
            .map(|h| h.trim_matches(|c| c == '\'' || c == '"').to_string())
            .expect("DOCKER_HOST from docker-env.sh env");
        OwnEngine { state, host }
    }

    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.state.join("dockerd.pid")).unwrap();
        let st = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("stop")
            .env("DOCKWIRE_TESTENV", &self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

// ---- agents and browsers of an AgentHub ----

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A browser JWT signed with [`TEST_SECRET`] (the secret of every [`agent_hub`]).
pub fn token(role: Role) -> String {
    sign_token(
        TEST_SECRET,
        "tester",
        role,
        Duration::from_secs(3600),
        unix_now(),
    )
    .unwrap()
}

/// An authenticated browser socket on `path` of the hub.
pub fn browser(h: &AgentHub, path: &str, role: Role) -> Ws {
    let mut b = connect(&h.d.url(path));
    send_json(&mut b, &json!({"type": "auth", "token": token(role)}));
    wait_type(&mut b, "auth_success", Duration::from_secs(5));
    b
}

/// A real `dockwire agent` process, killed on drop.
pub struct AgentProc(pub Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `dockwire agent` with key `i` of `h` and `args`.
pub fn spawn_agent(h: &AgentHub, i: usize, args: &[&str]) -> AgentProc {
    let dir = temp_dir("agent");
    let key_file = dir.join("key");
    std::fs::write(&key_file, format!("{}\n", h.keys[i].0)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .arg("agent")
        .arg("--hub")
        .arg(h.d.url("/api/v1/agents/ws"))
        .arg("--api-key-file")
        .arg(&key_file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    AgentProc(child)
}

/// Waits until the hub counts `n` connected agents.
pub fn wait_agents(h: &AgentHub, n: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while h.d.metric("dockwire_agents_connected") != Some(n) {
        assert!(
            Instant::now() < deadline,
            "agents connected never reached {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
