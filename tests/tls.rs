//! TLS end to end (SPEC 10), with certificates made here by rcgen: every
//! endpoint over TLS 1.3 and 1.2 with ALPN `http/1.1`; plain HTTP to the
//! TLS port answered with a clear 400; handshake garbage and silent
//! sockets cost one socket each; clients that do not trust the CA refuse
//! the hub; real agents over `wss://` with `--ca-file` (and the next
//! `--hub` when the first is down); an expired certificate refused; and a
//! SIGHUP serving a new certificate to new connections while open ones
//! stay.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dockwire::auth::Role;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(10);

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A CA and a `localhost`/127.0.0.1 certificate it signed, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_der: CertificateDer<'static>,
}

/// Makes a CA named `name` and a leaf signed by it in `dir`; `expired`:
/// the leaf's validity ended yesterday.
fn pki(dir: &Path, name: &str, expired: bool) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("dockwire test CA {name}"),
    );
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    if expired {
        let now = time::OffsetDateTime::now_utc();
        leaf.not_before = now - time::Duration::days(30);
        leaf.not_after = now - time::Duration::days(1);
    }
    let leaf_key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&leaf_key, &ca).unwrap();
    let p = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca_der: ca.der().clone(),
    };
    std::fs::write(&p.ca, ca.pem()).unwrap();
    // The chain as servers send it: leaf, then the CA.
    std::fs::write(&p.cert, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&p.key, leaf_key.serialize_pem()).unwrap();
    p
}

fn client_config(ca: &CertificateDer<'static>, tls12_only: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// A TLS stream to the daemon, handshake done.
fn tls_connect(d: &Daemon, config: Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let tcp = TcpStream::connect(d.addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// GET over TLS: (status, body).
fn https_get(s: &mut TlsStream, path: &str) -> (u16, String) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    split_response(&String::from_utf8_lossy(&raw))
}

fn wss(d: &Daemon, config: Arc<ClientConfig>, path: &str) -> WebSocket<TlsStream> {
    let s = tls_connect(d, config).unwrap();
    let url = format!("wss://localhost:{}{path}", d.addr.port());
    tungstenite::client::client(url.as_str(), s).unwrap().0
}

fn send(ws: &mut WebSocket<TlsStream>, v: &Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

fn wait_for(ws: &mut WebSocket<TlsStream>, kind: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no {kind} within {WAIT:?}");
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == kind {
                    return v;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("waiting for {kind}: {e}"),
        }
    }
}

/// A browser over `wss://`, authenticated.
fn browser_wss(d: &Daemon, config: Arc<ClientConfig>) -> WebSocket<TlsStream> {
    let mut b = wss(d, config, "/api/v1/ws");
    send(
        &mut b,
        &json!({"type": "auth", "token": token(Role::Viewer)}),
    );
    wait_for(&mut b, "auth_success");
    b
}

const AGENT_KEY: &str = "dwk_tls_agent_key_0123456789abcdef";

/// A TLS daemon with browser auth, one agent key (server id `srv-tls`) and
/// a short handshake deadline.
fn tls_daemon(dir: &Path, p: &Pki) -> Daemon {
    let secret = write_secret(dir);
    Daemon::start(&format!(
        "metrics_interval = \"1h\"\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [limits]\nhandshake_timeout = \"1s\"\n[auth]\njwt_secret_file = \"{}\"\n\
         [[agents]]\nname = \"tls-agent\"\nkey_sha256 = \"{}\"\nserver_id = \"srv-tls\"\n",
        p.cert.display(),
        p.key.display(),
        secret.display(),
        sha256_hex(AGENT_KEY)
    ))
}

/// A real `dockwire agent` with `args`, its log in `dir/agent.log`.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, tag: &str, args: &[&str]) -> Agent {
        let key = dir.join("agent.key");
        std::fs::write(&key, AGENT_KEY).unwrap();
        let log = dir.join(format!("agent-{tag}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_dockwire"))
            .args(["agent", "--no-docker", "--api-key-file"])
            .arg(&key)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log holds `text`.
    fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "agent log never said {text:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGHUP and waits until the log says `outcome` once more.
fn sighup_and_wait(d: &Daemon, outcome: &str) {
    let before = d.log().matches(outcome).count();
    // SAFETY: kill(2) on the daemon's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + WAIT;
    while d.log().matches(outcome).count() == before {
        assert!(
            Instant::now() < deadline,
            "no {outcome:?} after SIGHUP; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_endpoint_speaks_tls_and_bad_peers_cost_one_socket() {
    let dir = temp_dir("tls");
    let p = pki(&dir, "a", false);
    let d = tls_daemon(&dir, &p);
    let trust = client_config(&p.ca_der, false);

    // TLS 1.3 and 1.2, ALPN http/1.1.
    let mut s = tls_connect(&d, trust.clone()).unwrap();
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = https_get(&mut s, "/healthz");
    assert_eq!(status, 200, "{body}");
    let mut s12 = tls_connect(&d, client_config(&p.ca_der, true)).unwrap();
    assert_eq!(
        s12.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(https_get(&mut s12, "/healthz").0, 200);
    // The dashboard and the API too.
    let mut s = tls_connect(&d, trust.clone()).unwrap();
    assert_eq!(https_get(&mut s, "/").0, 200);

    // Browsers over wss://, both dialects.
    let mut b = browser_wss(&d, trust.clone());
    send(&mut b, &json!({"type": "list_servers", "request_id": "l"}));
    assert_eq!(wait_for(&mut b, "servers")["request_id"], "l");
    let mut sio = wss(&d, trust.clone(), "/socket.io/?EIO=4&transport=websocket");
    match sio.read().unwrap() {
        Message::Text(t) => assert!(t.as_str().starts_with("0{"), "{t}"),
        other => panic!("socket.io open: {other:?}"),
    }

    // Plain HTTP to the TLS port: a 400 that says what to do.
    let raw = raw_request(
        d.addr,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (status, body) = split_response(&raw);
    assert_eq!(status, 400, "{raw}");
    assert!(
        body.contains("speaks TLS") && body.contains("https://"),
        "{body}"
    );

    // Handshake garbage: that socket is closed, nothing else is touched.
    let mut junk = TcpStream::connect(d.addr).unwrap();
    junk.set_read_timeout(Some(WAIT)).unwrap();
    let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    junk.write_all(&garbage).unwrap();
    let mut buf = [0u8; 256];
    let mut closed = false;
    for _ in 0..10 {
        match junk.read(&mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => {} // the alert
        }
    }
    assert!(closed, "a garbage handshake was not closed");

    // A client that does not trust the hub's CA refuses it.
    let other = pki(&dir, "other", false);
    let err = tls_connect(&d, client_config(&other.ca_der, false)).unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A socket that never says anything is closed at the handshake
    // deadline (after a TLS alert record at most).
    let mut silent = TcpStream::connect(d.addr).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = 0;
    let ended = loop {
        match silent.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(
        ended,
        "a silent socket was kept past the handshake deadline"
    );
    assert!(got <= 7, "a silent socket got {got} bytes");

    // The browser opened before all that still works.
    send(
        &mut b,
        &json!({"type": "list_servers", "request_id": "again"}),
    );
    assert_eq!(wait_for(&mut b, "servers")["request_id"], "again");
    let mut s = tls_connect(&d, trust).unwrap();
    assert_eq!(https_get(&mut s, "/healthz").0, 200);
}

#[test]
fn agents_reach_the_hub_over_wss_trusting_their_ca_file() {
    let dir = temp_dir("tls-agents");
    let p = pki(&dir, "a", false);
    let d = tls_daemon(&dir, &p);
    let url = format!("wss://localhost:{}/api/v1/agents/ws", d.addr.port());
    let ca = p.ca.display().to_string();

    // The wrong CA: the agent refuses the hub and says why.
    let other = pki(&dir, "other", false);
    let other_ca = other.ca.display().to_string();
    let wrong = Agent::start(&dir, "wrong", &["--hub", &url, "--ca-file", &other_ca]);
    wrong.wait_log("invalid peer certificate");
    assert!(!d.log().contains("connected as srv-tls"), "{}", d.log());
    drop(wrong);

    // A first hub that is down, then the real one: the agent goes on to
    // the second and connects over TLS.
    let down = format!("wss://localhost:{}/api/v1/agents/ws", free_port());
    let agent = Agent::start(
        &dir,
        "good",
        &["--hub", &down, "--hub", &url, "--ca-file", &ca],
    );
    agent.wait_log(&format!("connected to hub {url}"));
    assert!(
        agent.log().contains(&down),
        "the first hub was not tried first"
    );

    // Browsers see it; its metrics arrived over TLS.
    let mut b = browser_wss(&d, client_config(&p.ca_der, false));
    send(&mut b, &json!({"type": "list_servers", "request_id": "s"}));
    let servers = wait_for(&mut b, "servers");
    let srv = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["server_id"] == "srv-tls")
        .cloned()
        .unwrap_or_else(|| panic!("{servers}"));
    assert_eq!(srv["online"], true, "{srv}");
}

#[test]
fn an_expired_certificate_is_refused_by_the_agent() {
    let dir = temp_dir("tls-expired");
    let p = pki(&dir, "old", true);
    let d = tls_daemon(&dir, &p);
    let url = format!("wss://localhost:{}/api/v1/agents/ws", d.addr.port());
    let ca = p.ca.display().to_string();
    let agent = Agent::start(&dir, "expired", &["--hub", &url, "--ca-file", &ca]);
    agent.wait_log("certificate expired");
    assert!(!d.log().contains("connected as srv-tls"), "{}", d.log());
    // Plain ws:// to a host that is not this one is refused at start.
    let out = Command::new(env!("CARGO_BIN_EXE_dockwire"))
        .args([
            "agent",
            "--no-docker",
            "--hub",
            "ws://hub.example:7575/api/v1/agents/ws",
            "--api-key-file",
        ])
        .arg(dir.join("agent.key"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-plaintext"), "{err}");
}

#[test]
fn a_reload_serves_the_new_certificate_to_new_connections_and_keeps_open_ones() {
    let dir = temp_dir("tls-reload");
    let first = pki(&dir, "first", false);
    let d = tls_daemon(&dir, &first);
    let old_trust = client_config(&first.ca_der, false);
    let mut b = browser_wss(&d, old_trust.clone());

    // A renewed certificate from another CA, at the same paths.
    let second = pki(&dir, "second", false);
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    sighup_and_wait(&d, "config reloaded");

    // New connections get the new certificate...
    let mut s = tls_connect(&d, client_config(&second.ca_der, false)).unwrap();
    assert_eq!(https_get(&mut s, "/healthz").0, 200);
    assert!(tls_connect(&d, old_trust).is_err());
    // ...and the open one was not touched.
    send(
        &mut b,
        &json!({"type": "list_servers", "request_id": "after"}),
    );
    assert_eq!(wait_for(&mut b, "servers")["request_id"], "after");

    // A broken certificate: the reload fails, the current one stays.
    std::fs::write(&first.cert, "not a certificate").unwrap();
    sighup_and_wait(&d, "config reload failed");
    let mut s = tls_connect(&d, client_config(&second.ca_der, false)).unwrap();
    assert_eq!(https_get(&mut s, "/healthz").0, 200);
}
