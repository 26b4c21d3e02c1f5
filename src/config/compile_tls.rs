//! `[listener.tls]`: the certificate and key (they must match), the client-certificate mode,
//! its trust roots and their CRLs, all read and checked at load.

use super::compile::Errors;
use super::{files, model};
use crate::policy::{ClientCertMode, TlsPolicy};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) fn listener_tls(
    tls: &model::ListenerTls,
    base: &Path,
    errors: &mut Errors,
) -> Option<TlsPolicy> {
    let cert = files::resolve(base, &tls.cert);
    let key = files::resolve(base, &tls.key);
    let certs = errors.check("listener.tls.cert", files::read_certificates(&cert));
    let private_key = errors.check("listener.tls.key", files::read_private_key(&key));
    if let (Some(certs), Some(private_key)) = (certs, private_key) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let built = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(certs, private_key)
                    .map_err(|e| format!("does not match the certificate ({e})"))
            });
        errors.check("listener.tls.key", built);
    }
    let client_cert = match tls.client_cert.as_deref().unwrap_or("request") {
        "request" => ClientCertMode::Request,
        "require" => ClientCertMode::Require,
        "off" => ClientCertMode::Off,
        other => {
            errors.add(
                "listener.tls.client_cert",
                format!("\"{other}\" is not one of \"request\", \"require\", \"off\""),
            );
            ClientCertMode::Request
        }
    };
    let client_ca = tls.client_ca.as_ref().map(|p| files::resolve(base, p));
    if let Some(path) = &client_ca {
        if client_cert == ClientCertMode::Off {
            errors.add(
                "listener.tls.client_ca",
                "is set but client_cert = \"off\" never asks for a certificate",
            );
        }
        errors.check("listener.tls.client_ca", files::read_certificates(path));
    }
    let client_crl: Vec<PathBuf> = tls
        .client_crl
        .iter()
        .map(|p| files::resolve(base, p))
        .collect();
    if !client_crl.is_empty() && client_ca.is_none() {
        errors.add(
            "listener.tls.client_crl",
            "needs client_ca: a CRL is checked against the authority that signed it",
        );
    }
    for (i, path) in client_crl.iter().enumerate() {
        errors.check(
            &format!("listener.tls.client_crl[{i}]"),
            files::read_crls(path),
        );
    }
    Some(TlsPolicy {
        cert,
        key,
        client_cert,
        client_ca,
        client_crl,
    })
}
