//! The listener's TLS: TLS 1.3, and TLS 1.2 with the FAPI / BCP 195 suites only
//! (SP2-NET-1..6, FAPI1-ADV-4); client certificates asked for in the first handshake
//! (RFC 8705 §3, MTLS-3-1) and carried to the request phases through the TLS digest.

use crate::policy::{ClientCertMode, TlsPolicy, TrustRoots};
use crate::request::{CertSource, ClientCert};
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::CaType;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::any::Any;
use std::sync::{Arc, PoisonError, RwLock};

/// Pingora's form of each upstream's trust roots, made once per set of certificates: the
/// policy holds plain certificates, and a reload brings new ones. A set Pingora cannot read
/// (its parser is older than the one the configuration was checked with, and panics) is
/// remembered as `None`: every request to that upstream is 502, logged once.
#[derive(Default)]
pub(crate) struct RootsCache(RwLock<Vec<(TrustRoots, Option<Arc<CaType>>)>>);

impl RootsCache {
    pub(crate) fn get(&self, certs: &TrustRoots) -> Option<Arc<CaType>> {
        let known = |entries: &[(TrustRoots, Option<Arc<CaType>>)]| {
            entries
                .iter()
                .find(|(known, _)| Arc::ptr_eq(known, certs))
                .map(|(_, roots)| roots.clone())
        };
        if let Some(roots) = known(&self.0.read().unwrap_or_else(PoisonError::into_inner)) {
            return roots;
        }
        let mut entries = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(roots) = known(&entries) {
            return roots;
        }
        // Roots that only this cache still holds belonged to an engine a reload replaced.
        entries.retain(|(known, _)| Arc::strong_count(known) > 1);
        let roots = std::panic::catch_unwind(|| upstream_roots(certs)).ok();
        if roots.is_none() {
            tracing::error!("an upstream's ca_file holds a certificate the TLS client cannot read: its requests get 502");
        }
        entries.push((certs.clone(), roots.clone()));
        roots
    }
}

fn upstream_roots(certs: &TrustRoots) -> Arc<CaType> {
    use pingora::utils::tls::{parse_x509, WrappedX509};
    let wrapped: Vec<WrappedX509> = certs
        .iter()
        .map(|cert| WrappedX509::new(cert.to_vec(), parse_x509))
        .collect();
    Arc::from(wrapped)
}

/// Accepts any well-formed client certificate whose holder proves possession of its key:
/// the binding is the certificate hash (RFC 8705 §6.2, MTLS-6.2). With `client_cert = "off"`
/// none is asked for (`offered` false).
#[derive(Debug)]
struct AnyClientCert {
    offered: bool,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        self.offered
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        x509_parser::parse_x509_certificate(end_entity.as_ref())
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Hands the client certificate from the handshake to the request phases, checked again
/// against the verifier serving now: a resumed TLS session carries the certificate of the
/// handshake it resumes without verifying it, so a certificate revoked (or a CA removed)
/// since is caught here.
pub(crate) struct CarryClientCert {
    pub(crate) current: Arc<super::listener_tls::ListenerTls>,
}

/// The connection's certificate is not accepted now (revoked, or no longer trusted since a
/// resumed session's first handshake): every request on it is refused.
pub(crate) struct RefusedClientCert;

#[async_trait]
impl TlsAccept for CarryClientCert {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let chain = tls.peer_cert_chain_der()?;
        let (leaf, intermediates) = chain.split_first()?;
        let verified =
            self.current
                .verifier()
                .verify_client_cert(leaf, intermediates, UnixTime::now());
        if verified.is_err() {
            return Some(Arc::new(RefusedClientCert));
        }
        Some(Arc::new(ClientCert::new(leaf.to_vec(), CertSource::Tls)))
    }
}

/// The client-certificate verifier `policy` asks for: none (`client_cert = "off"`), any
/// certificate whose holder proves its key, or one that chains to `client_ca` and is not
/// revoked by `client_crl` (the end entity's status; an authority without a CRL there makes
/// its certificates' status unknown, and they are refused).
pub(crate) fn client_verifier(policy: &TlsPolicy) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let algorithms = crate::tls::fapi_crypto_provider().signature_verification_algorithms;
    match (&policy.client_ca, policy.client_cert) {
        (None, mode) | (Some(_), mode @ ClientCertMode::Off) => Ok(Arc::new(AnyClientCert {
            offered: mode != ClientCertMode::Off,
            mandatory: mode == ClientCertMode::Require,
            algorithms,
        })),
        (Some(ca), mode) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = crate::config::read_certificates(ca)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no usable trust root", ca.display()));
            }
            let mut crls = Vec::new();
            for path in &policy.client_crl {
                crls.extend(crate::config::read_crls(path)?);
            }
            let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(crate::tls::fapi_crypto_provider()),
            );
            if !crls.is_empty() {
                builder = builder.with_crls(crls).only_check_end_entity_revocation();
            }
            if mode != ClientCertMode::Require {
                builder = builder.allow_unauthenticated();
            }
            builder.build().map_err(|e| e.to_string())
        }
    }
}

/// Server verification for the gateway's own readiness probe of its TLS listener: it only
/// checks that a handshake completes, it never sends data or trusts the peer.
#[derive(Debug)]
pub(crate) struct ProbeVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ProbeVerifier {
    pub(crate) fn new() -> Self {
        ProbeVerifier {
            algorithms: crate::tls::fapi_crypto_provider().signature_verification_algorithms,
        }
    }
}

impl Default for ProbeVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl rustls::client::danger::ServerCertVerifier for ProbeVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
