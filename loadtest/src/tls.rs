//! TLS for the load generator's connections (`--tls`, `--ca-file`).
//!
//! Owns the client settings ([`client_config`]: the PEM CA given, else the
//! system's roots; TLS 1.3 and 1.2; ALPN `http/1.1`; no session resumption,
//! so every connection is a full handshake) and [`Wire`], the byte stream a
//! connection reads and writes: plain TCP, or rustls driven non-blocking
//! over it in the worker's mio loop (no thread, no runtime).
//!
//! How the bytes move on [`Wire::Tls`]: `read` feeds what the socket has to
//! rustls, sends whatever rustls wants to answer (handshake flights, the
//! plaintext it held until the handshake finished) and hands back
//! plaintext; `write` sends records still waiting, encrypts at most one
//! buffer limit of plaintext and tries to send it. Records the socket did
//! not take stay in rustls until [`Wire::flush_records`] on the next
//! writable event (sockets are registered for both directions, edge
//! triggered). The plain variant is the `TcpStream` itself: one match per
//! call, no extra buffer, no copy.

use std::io::{self, Read, Write};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Plaintext rustls takes per write (and holds while handshaking).
const PLAINTEXT_PER_WRITE: usize = 64 << 10;

/// Client settings: trust `ca_pem`'s certificates only when given, else the
/// system's roots.
///
/// # Errors
/// A CA text without a usable certificate, or no system roots at all.
pub fn client_config(ca_pem: Option<&str>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .context("could not parse the --ca-file PEM")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                bail!("--ca-file holds no usable CA certificate");
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                log::warn!("reading the system's root certificates: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!(
                    "no system root certificates found: install ca-certificates or give --ca-file"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection pays a full handshake: what a fleet of new browsers
    // costs the server, and what the handshake figure measures.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The name the server's certificate must carry (a DNS name or an IP).
///
/// # Errors
/// A host that is neither.
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| anyhow::anyhow!("{host} is not a host name TLS can verify"))
}

/// One connection's byte stream.
pub enum Wire {
    Plain(TcpStream),
    Tls(Box<TlsWire>),
}

/// rustls's client state over the TCP socket.
pub struct TlsWire {
    tcp: TcpStream,
    tls: ClientConnection,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wire::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Wire::Tls(t) => f
                .debug_struct("Tls")
                .field("tcp", &t.tcp)
                .field("handshaking", &t.tls.is_handshaking())
                .finish(),
        }
    }
}

impl Wire {
    /// TLS to `name` over `tcp`; the ClientHello goes with the first write.
    ///
    /// # Errors
    /// When rustls cannot start a session with `config`.
    pub fn tls(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Wire> {
        let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(PLAINTEXT_PER_WRITE));
        Ok(Wire::Tls(Box::new(TlsWire { tcp, tls })))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &t.tcp,
        }
    }

    /// Sends records rustls still holds: `Ok` when none is left (always on
    /// plain TCP), `WouldBlock` while the socket is full.
    pub fn flush_records(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(_) => Ok(()),
            Wire::Tls(t) => t.send_records(),
        }
    }
}

impl TlsWire {
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

    /// Plaintext; `Ok(0)` after the server's `close_notify`, `UnexpectedEof`
    /// when TCP ended without one, `InvalidData` for a failed handshake or a
    /// bad record (the alert rustls queued is sent first, if the socket takes it).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.send_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake flights, and the request held until the handshake
            // ended, leave now: nothing else would send them.
            match self.send_records() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_records()?;
        let n = self.tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // Handshaking with the plaintext buffer full: the handshake
            // (a readable event) lets it go on.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.send_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records()
    }
}

impl Wire {
    /// The TCP socket under either kind (what mio registers).
    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &mut t.tcp,
        }
    }
}

impl mio::event::Source for Wire {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bad_ca_text() {
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("localhost").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("not a name").is_err());
        let e = client_config(Some("no pem here")).unwrap_err().to_string();
        assert!(e.contains("no usable CA"), "{e}");
    }
}
