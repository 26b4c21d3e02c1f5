//! The listener's certificate and key, client CAs and CRLs, swapped while it serves: a new
//! handshake takes what is current, connections already open keep theirs. Read again on
//! SIGHUP (with the configuration) and when the files change on disk (cert-manager rotates
//! them every few weeks; a Kubernetes Secret volume swaps them under a symlink). A set that
//! does not load (a key that does not match, a CRL that does not parse) leaves the serving
//! one in place, and says why.

use super::tls::{client_verifier, CarryClientCert};
use crate::policy::TlsPolicy;
use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// What the handshakes use now.
struct Material {
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

pub(crate) struct ListenerTls {
    current: ArcSwap<Material>,
    /// The files' (modified, length) when they were last read, successfully or not: a change
    /// is tried once, not every time the watch looks.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

fn load(policy: &TlsPolicy) -> Result<Material, String> {
    let chain = crate::config::read_certificates(&policy.cert)?;
    let key = crate::config::read_private_key(&policy.key)?;
    let key =
        CertifiedKey::from_der(chain, key, &crate::tls::fapi_crypto_provider()).map_err(|e| {
            format!(
                "{}: does not match the certificate ({e})",
                policy.key.display()
            )
        })?;
    Ok(Material {
        key: Arc::new(key),
        verifier: client_verifier(policy)?,
    })
}

/// The files a TLS policy reads, and how each looks on disk now.
fn stamps(policy: &TlsPolicy) -> Vec<Option<(SystemTime, u64)>> {
    let files = [&policy.cert, &policy.key]
        .into_iter()
        .chain(policy.client_ca.iter())
        .chain(policy.client_crl.iter());
    files
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

impl ListenerTls {
    pub(crate) fn load(policy: &TlsPolicy) -> Result<Arc<ListenerTls>, String> {
        let seen = stamps(policy);
        Ok(Arc::new(ListenerTls {
            current: ArcSwap::from_pointee(load(policy)?),
            seen: Mutex::new(seen),
        }))
    }

    /// Pingora's settings for the listener, resolving through this.
    pub(crate) fn settings(self: &Arc<Self>) -> Result<TlsSettings, String> {
        let mut settings = TlsSettings::with_callbacks(Box::new(CarryClientCert {
            current: self.clone(),
        }))
        .map_err(|e| e.to_string())?;
        settings.set_cert_resolver(Arc::new(Resolver(self.clone())));
        settings.set_client_cert_verifier(Arc::new(Delegate(self.clone())));
        settings.enable_h2();
        Ok(settings)
    }

    /// Reads the files of `policy` and, if they load, serves them from the next handshake.
    pub(crate) fn reload(&self, policy: &TlsPolicy) -> Result<(), String> {
        let stamps = stamps(policy);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        let material = load(policy)?;
        self.current.store(Arc::new(material));
        Ok(())
    }

    /// The client-certificate verifier serving now.
    pub(crate) fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.load().verifier.clone()
    }

    /// Whether a file of `policy` changed since it was last read (or tried).
    pub(crate) fn changed_on_disk(&self, policy: &TlsPolicy) -> bool {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) != stamps(policy)
    }
}

#[derive(Debug)]
struct Resolver(Arc<ListenerTls>);

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerTls")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().key.clone())
    }
}

/// The current client-certificate verifier. It sends no CA names in its request (the names
/// would have to outlive a swap); TLS 1.3 makes them optional, and clients then offer the
/// certificate they have.
#[derive(Debug)]
struct Delegate(Arc<ListenerTls>);

impl Delegate {
    fn now(&self) -> Arc<dyn ClientCertVerifier> {
        self.0.current.load().verifier.clone()
    }
}

impl ClientCertVerifier for Delegate {
    fn offer_client_auth(&self) -> bool {
        self.now().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.now().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.now()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.now().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.now().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.now().supported_verify_schemes()
    }
}
