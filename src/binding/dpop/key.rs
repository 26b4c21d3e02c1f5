//! A DPoP proof's protected header and the key it carries (RFC 9449 §4.3 checks 4, 5 and 7),
//! and the cache of those keys by header: what the header decides depends on its bytes alone.

use super::DpopCheck;
use crate::binding::thumbprint::jkt;
use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::Arc;
use std::time::Duration;

/// The keys of recent proofs, by the exact bytes of their protected header. A client signs
/// every proof with one key, so its header (`typ`, `alg`, `jwk`) is the same on each request:
/// the JSON, the thumbprint and the point validation need not be done again (about 12 µs of a
/// DPoP request under load, where the signature is about 75). Only headers of proofs whose
/// signature verified are kept, weighed by their length; what a header decides depends on its
/// bytes alone, except the algorithms allowed, which are checked on every proof.
pub struct ProofKeys(moka::sync::Cache<Box<str>, Arc<ProofKey>>);

impl ProofKeys {
    /// At most `bytes` of headers (and their keys, a few hundred bytes each) are kept.
    pub fn new(bytes: u64) -> Self {
        ProofKeys(
            moka::sync::Cache::<Box<str>, Arc<ProofKey>>::builder()
                .weigher(|header, _| u32::try_from(header.len() + 512).unwrap_or(u32::MAX))
                .max_capacity(bytes)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        )
    }

    pub(super) fn get(&self, header_b64: &str) -> Option<Arc<ProofKey>> {
        self.0.get(header_b64)
    }

    /// Only for a header whose proof's signature verified.
    pub(super) fn insert(&self, header_b64: &str, key: Arc<ProofKey>) {
        self.0.insert(header_b64.into(), key);
    }

    #[cfg(test)]
    pub(super) fn entry_count(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.entry_count()
    }
}

/// What a proof's protected header decides: its algorithm, its key's thumbprint and the key.
pub(super) struct ProofKey {
    pub(super) alg: Algorithm,
    pub(super) jkt: String,
    pub(super) verifier: Verifier,
}

pub(super) enum Verifier {
    /// P-256 and Ed25519: the point decoded and validated (on the curve, exact length).
    Parsed(ParsedPublicKey),
    /// RSA: the components, verified through the JOSE library.
    Rsa(DecodingKey),
}

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The header's checks (#4 typ, #5 alg, #7 jwk, no `crit`) and its key.
pub(super) fn proof_key(header_b64: &str, algs: &[Algorithm]) -> Result<ProofKey, DpopCheck> {
    let header: serde_json::Map<String, serde_json::Value> =
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(DpopCheck::Malformed)?;
    if header.get("typ").and_then(|t| t.as_str()) != Some("dpop+jwt") {
        return Err(DpopCheck::Typ);
    }
    // RFC 7515 §4.1.11: no critical extension is understood here.
    if header.contains_key("crit") {
        return Err(DpopCheck::Malformed);
    }
    let alg = match header.get("alg").and_then(|a| a.as_str()) {
        Some("ES256") => Algorithm::ES256,
        Some("PS256") => Algorithm::PS256,
        Some("EdDSA") => Algorithm::EdDSA,
        _ => return Err(DpopCheck::Alg),
    };
    if !algs.contains(&alg) {
        return Err(DpopCheck::Alg);
    }
    let jwk = header
        .get("jwk")
        .and_then(|j| j.as_object())
        .ok_or(DpopCheck::Jwk)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopCheck::Jwk);
    }
    Ok(ProofKey {
        alg,
        jkt: jkt(jwk).ok_or(DpopCheck::Jwk)?,
        verifier: public_key(jwk, alg).ok_or(DpopCheck::Jwk)?,
    })
}

/// The verification key of a public JWK of the type `alg` needs (RFC 7518 §6, RFC 8037).
fn public_key(
    jwk: &serde_json::Map<String, serde_json::Value>,
    alg: Algorithm,
) -> Option<Verifier> {
    let member = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    let bytes = |name: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(member(name)?)
            .ok()
    };
    match (alg, member("kty")?, member("crv")) {
        (Algorithm::ES256, "EC", Some("P-256")) => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            // SEC 1 §2.3.3 uncompressed point; parsing checks that it is on the curve.
            let point = [&[4u8][..], &x, &y].concat();
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .ok()
                .map(Verifier::Parsed)
        }
        (Algorithm::EdDSA, "OKP", Some("Ed25519")) => {
            let x = bytes("x")?;
            if x.len() != 32 {
                return None;
            }
            ParsedPublicKey::new(&ED25519, x).ok().map(Verifier::Parsed)
        }
        (Algorithm::PS256, "RSA", _) => {
            let n = member("n")?;
            if crate::encoding::rsa_modulus_bits(n)? < crate::encoding::MIN_RSA_BITS {
                return None;
            }
            DecodingKey::from_rsa_components(n, member("e")?)
                .ok()
                .map(Verifier::Rsa)
        }
        _ => None,
    }
}
