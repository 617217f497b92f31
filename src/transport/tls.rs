//! TLS over a non-blocking TCP socket (SPEC 10), with rustls driven from
//! the event loop: no thread, no async runtime.
//!
//! Owns the server side's TLS settings ([`load_server_config`]: PEM chain
//! and key, TLS 1.2 and 1.3, ALPN `http/1.1`) and [`TlsTransport`], which
//! the loop reads and writes exactly like plain TCP.
//!
//! How the bytes move: `read` feeds what the socket has to rustls and hands
//! back plaintext; `write_vectored` first sends any records still waiting,
//! then encrypts at most one buffer limit of plaintext (so the loop's queue,
//! not rustls, holds what the peer has not taken: backpressure and the
//! per-socket cap work as for TCP) and tries to send it. Records that could
//! not be sent yet are [`Transport::has_pending_output`]; the loop keeps
//! the socket writable-registered and calls `flush` until they are gone.
//!
//! A peer that speaks plain HTTP to the TLS port gets a plain `400` saying
//! so, then the socket closes; a failed handshake costs that one socket.
//! The handshake has the loop's head deadline (`handshake_timeout`).

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Transport;
use super::tcp::TcpTransport;

/// Plaintext rustls encrypts per write: the records of one call, at most.
const PLAINTEXT_PER_WRITE: usize = 64 << 10;

/// The answer to plain HTTP on the TLS port.
const PLAINTEXT_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 64\r\nConnection: close\r\n\r\n\
This port speaks TLS: use https:// or wss:// instead of http://\n";

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("could not read the TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("could not read the TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS key {key} does not fit the certificate {cert}: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
}

/// Reads a PEM certificate chain (leaf first) and its private key (PKCS#8,
/// PKCS#1 RSA or SEC1 EC) into a server configuration.
///
/// # Errors
/// An unreadable or empty file, or a key that is not the certificate's.
pub fn load_server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let shown = |p: &Path| p.display().to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsConfigError::Cert {
            path: shown(cert_file),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Cert {
            path: shown(cert_file),
            reason: "no CERTIFICATE block in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsConfigError::Key {
        path: shown(key_file),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsConfigError::Cert {
            path: shown(cert_file),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsConfigError::Mismatch {
            cert: shown(cert_file),
            key: shown(key_file),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One TLS connection: rustls's state over the plain TCP transport.
pub struct TlsTransport {
    tcp: TcpTransport,
    tls: ServerConnection,
    /// The first byte was looked at (plain HTTP is refused with a reply).
    sniffed: bool,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("handshaking", &self.tls.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// # Errors
    /// When rustls cannot start a session with `config` (not expected for
    /// a configuration [`load_server_config`] made).
    pub fn new(stream: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(PLAINTEXT_PER_WRITE));
        Ok(TlsTransport {
            tcp: TcpTransport::new(stream),
            tls,
            sniffed: false,
        })
    }

    /// Sends the records rustls holds until none is left (`Ok`) or the
    /// socket is full (`WouldBlock`).
    fn send_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Before the first record: a TLS client starts with a handshake
    /// record (0x16); an ASCII letter is an HTTP request sent in the clear,
    /// which gets a plain `400` saying to use TLS, then an error.
    fn sniff(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        match self.tcp.peek(&mut first) {
            Ok(1) if first[0].is_ascii_uppercase() => {
                let _ = self.tcp.write(PLAINTEXT_REFUSAL);
                self.tcp.shutdown_write();
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "plain HTTP on the TLS port",
                ))
            }
            Ok(_) => {
                self.sniffed = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl Read for TlsTransport {
    /// Plaintext the peer sent; `Ok(0)` after its `close_notify` or an
    /// `UnexpectedEof` error when the TCP stream ended without one.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if !self.sniffed {
                self.sniff()?;
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // rustls queued an alert telling the peer why: try to send it.
                let _ = self.send_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

impl Write for TlsTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.send_records()?;
        let n = self.tls.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Still handshaking with a full plaintext buffer: the handshake
            // (a readable event) lets it go on.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.send_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    /// Sends records still waiting; `WouldBlock` while some are left.
    fn flush(&mut self) -> io::Result<()> {
        self.send_records()
    }
}

impl Transport for TlsTransport {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        self.tcp.source()
    }

    fn shutdown_write(&mut self) {
        self.tls.send_close_notify();
        let _ = self.send_records();
        self.tcp.shutdown_write();
    }

    fn has_pending_output(&self) -> bool {
        self.tls.wants_write()
    }
}
