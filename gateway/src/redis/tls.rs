//! TLS to Redis (`rediss://`, Redis's `tls-port`): rustls with the ring provider, the server's
//! certificate checked against a CA bundle (the operator's file, or the system's), and its name
//! checked against the address connected to or a name given once for every node.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

/// The system's CA bundle (Debian's `ca-certificates`), used when no CA file is given.
pub const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How to speak TLS to every node.
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// The name every node's certificate must carry; `None`: the node's IP address.
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls(name {:?})", self.name)
    }
}

/// A TLS session over a node's socket.
pub type Stream = StreamOwned<ClientConnection, TcpStream>;

impl Tls {
    /// Trusts the CAs in the PEM file `ca` (the system's bundle when `None`); certificates must
    /// name `name` (when given) or the address connected to.
    pub fn new(ca: Option<&Path>, name: Option<&str>) -> Result<Tls, String> {
        let ca = ca.unwrap_or(Path::new(SYSTEM_CAS));
        let mut roots = RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("{}: a CA certificate: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate in it", ca.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = name
            .map(|n| {
                ServerName::try_from(n.to_string())
                    .map_err(|e| format!("TLS server name {n:?}: {e}"))
            })
            .transpose()?;
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
    }

    /// Runs the handshake over `tcp` (within its read and write timeouts).
    pub fn connect(&self, addr: SocketAddr, tcp: TcpStream) -> Result<Stream, String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let conn = ClientConnection::new(self.config.clone(), name).map_err(|e| e.to_string())?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(s)
    }
}
