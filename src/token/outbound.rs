//! Outbound HTTPS to authorization servers (JWKS, introspection): TLS always checked
//! (SP2-NET-1, SP2-NET-5) against the system roots plus an optional `ca_file`, with the
//! process's FAPI cipher suites, and an optional client certificate (`tls_client_auth`).

use crate::config::read_certificates;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn client(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(native) = rustls_native_certs::load_native_certs() {
        roots.add_parsable_certificates(native);
    }
    if let Some(path) = ca_file {
        let (added, _) = roots.add_parsable_certificates(read_certificates(path)?);
        if added == 0 {
            return Err(format!("{}: no usable trust root", path.display()));
        }
    }
    let provider = Arc::new(crate::tls::fapi_crypto_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let tls = match identity {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = read_certificates(cert)?;
            let key: PrivateKeyDer<'static> = crate::config::read_private_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Calls to the AS go direct: a desktop HTTP_PROXY must not see introspection traffic.
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// The largest answer read from an authorization server or a key set URL: far above any
/// real JWKS or introspection response, small enough that a hostile or broken peer cannot
/// make the gateway buffer without bound.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a response body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    TooLarge,
    Unreadable,
}

/// Reads a response body of at most [`MAX_RESPONSE_BYTES`], refusing larger ones as soon as
/// they pass the limit (announced or not).
pub(crate) async fn bounded_body(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| ReadError::Unreadable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(body: Vec<u8>) -> reqwest::Response {
        reqwest::Response::from(http::Response::new(body))
    }

    #[tokio::test]
    async fn hi_network_answers_are_read_up_to_one_mib() {
        let small = vec![b'x'; 1000];
        assert_eq!(bounded_body(response(small.clone())).await, Ok(small));
        let limit = vec![b'x'; MAX_RESPONSE_BYTES];
        assert_eq!(
            bounded_body(response(limit)).await.map(|b| b.len()),
            Ok(MAX_RESPONSE_BYTES)
        );
        let big = vec![b'x'; MAX_RESPONSE_BYTES + 1];
        assert_eq!(bounded_body(response(big)).await, Err(ReadError::TooLarge));
    }
}
