//! The plain facts about one request that every FAPI decision is made from. Built by the
//! Pingora adapter; nothing here touches a socket.

use http::{HeaderMap, Method};
use std::fmt;

/// `x5t#S256` (RFC 8705 §3.1): SHA-256 of the DER client certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct X5tS256(pub [u8; 32]);

impl X5tS256 {
    pub fn of_der(der: &[u8]) -> Self {
        use sha2::Digest;
        X5tS256(sha2::Sha256::digest(der).into())
    }

    /// The form used in `cnf`: base64url without padding.
    pub fn encoded(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }

    /// A short prefix for logs: enough to correlate, too short to matter.
    pub fn log_prefix(&self) -> String {
        self.encoded().chars().take(12).collect()
    }
}

impl fmt::Debug for X5tS256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X5tS256({})", self.encoded())
    }
}

/// Where the client certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertSource {
    /// Presented in this TLS handshake.
    Tls,
    /// RFC 9440 `Client-Cert` header from a trusted TLS-terminating proxy.
    TrustedProxyHeader,
}

#[derive(Debug, Clone)]
pub struct ClientCert {
    pub der: Vec<u8>,
    pub x5t_s256: X5tS256,
    pub source: CertSource,
}

impl ClientCert {
    pub fn new(der: Vec<u8>, source: CertSource) -> Self {
        let x5t_s256 = X5tS256::of_der(&der);
        ClientCert {
            der,
            x5t_s256,
            source,
        }
    }
}

/// What the enforcer sees of a request.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// The path exactly as received, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub client_cert: Option<&'a ClientCert>,
    /// The connection's peer address (what `by = "peer_ip"` limits count).
    pub peer: Option<std::net::IpAddr>,
    /// The JSON request body, parsed only for routes whose rules read it.
    pub body: Option<&'a serde_json::Value>,
    /// The request body bytes, read for routes that verify signatures or sign responses.
    pub raw_body: Option<&'a [u8]>,
    /// The time of the decision, Unix seconds (the injected clock).
    pub now: u64,
}
/// RFC 9440 §2.1: an RFC 8941 Byte Sequence, `:base64:`, of the DER certificate.
pub(crate) fn parse_client_cert(value: &str) -> Option<Vec<u8>> {
    let inner = value.trim().strip_prefix(':')?.strip_suffix(':')?;
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(inner)
        .ok()?;
    x509_parser::parse_x509_certificate(&der).ok()?;
    Some(der)
}
