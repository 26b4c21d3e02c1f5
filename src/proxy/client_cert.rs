//! Where the client certificate of a request comes from: the TLS handshake of this connection
//! (RFC 8705 §3, MTLS-3-2), or, on the plain listener behind a TLS terminator, the RFC 9440
//! `Client-Cert` header, believed only from `trusted_proxies` (CC-4). Any other `Client-Cert`
//! is ignored here and removed before the upstream sees it (CC-2.4).

use crate::policy::Policy;
use crate::request::{parse_client_cert, CertSource, ClientCert};
use pingora::proxy::Session;
use std::net::IpAddr;

pub(crate) use crate::gateway_headers::CLIENT_CERT;

pub(crate) fn from_tls(session: &Session) -> Option<&ClientCert> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<ClientCert>()
}

/// Whether this connection's certificate was refused when its handshake completed (see
/// `tls::CarryClientCert`).
pub(crate) fn refused_on_tls(session: &Session) -> bool {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some_and(|tls| {
            tls.extension
                .get::<super::tls::RefusedClientCert>()
                .is_some()
        })
}

pub(crate) fn from_trusted_proxy(
    session: &Session,
    policy: &Policy,
    peer: Option<IpAddr>,
) -> Option<ClientCert> {
    let on_tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    if on_tls || !peer.is_some_and(|ip| policy.listener.is_trusted_proxy(ip)) {
        return None;
    }
    let mut values = session.req_header().headers.get_all(CLIENT_CERT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None; // CC-2.2: a singleton; two values are not believed.
    }
    parse_client_cert(value.to_str().ok()?)
        .map(|der| ClientCert::new(der, CertSource::TrustedProxyHeader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_2_1_byte_sequence_is_required() {
        assert_eq!(parse_client_cert("not-a-cert"), None);
        assert_eq!(parse_client_cert(":bm90IGEgY2VydA==:"), None); // base64, but not DER
        assert_eq!(parse_client_cert(":!!:"), None);
    }
}
