//! The agent's side of `wss://` (SPEC 10): which roots it trusts and the
//! byte stream under its WebSocket, plain or TLS.
//!
//! Owns [`client_config`] (the system's roots from `rustls-native-certs`,
//! or only the certificates of `--ca-file`) and [`HubStream`], which the
//! session's blocking tungstenite socket reads and writes. rustls runs on
//! the session thread over the blocking TCP stream; the socket's read
//! timeout still paces the session loop (a timed-out read leaves rustls's
//! state intact).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Trust for the hub's certificate: only `ca_file`'s certificates when one
/// is given, else the system's roots.
///
/// # Errors
/// An unreadable CA file, one without a usable certificate, or a system
/// without any root certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("could not read --ca-file {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "--ca-file {} holds no usable CA certificate",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                log::warn!("reading the system's root certificates: {e}");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system root certificates found: install ca-certificates or give --ca-file"
                        .into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The stream under the agent's WebSocket.
#[derive(Debug)]
pub enum HubStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl HubStream {
    /// TLS to `host` over `tcp`; the handshake runs with the first write
    /// (the WebSocket upgrade request), within the socket's timeouts.
    ///
    /// # Errors
    /// A host name that is not a valid DNS name or IP address.
    pub fn tls(tcp: TcpStream, host: &str, config: Arc<ClientConfig>) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host} is not a host name TLS can verify"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(HubStream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// The TCP socket (for its timeouts).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            HubStream::Plain(s) => s,
            HubStream::Tls(s) => &s.sock,
        }
    }
}

impl Read for HubStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HubStream::Plain(s) => s.read(buf),
            HubStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for HubStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            HubStream::Plain(s) => s.write(buf),
            HubStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            HubStream::Plain(s) => s.flush(),
            HubStream::Tls(s) => s.flush(),
        }
    }
}
