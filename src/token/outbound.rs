//! Outbound HTTPS to authorization servers (JWKS, introspection): TLS always checked
//! (SP2-NET-1, SP2-NET-5) against the system roots plus an optional `ca_file`, with the
//! process's FAPI cipher suites, and an optional client certificate (`tls_client_auth`).

use crate::config::read_certificates;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn client(
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
    let provider = Arc::new(crate::proxy::tls::fapi_crypto_provider());
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
