//! DPoP proof validation, RFC 9449 §4.3 (DPOP-4.3-1..13) for a resource request (§7.1).
//! Pure: the proof, the request and the time in; a valid proof or the check that failed out.
//! Replay and nonce state are applied by the caller.

mod key;

use base64::Engine;
use jsonwebtoken::Algorithm;
pub use key::ProofKeys;
use key::{proof_key, Verifier};
use serde::Deserialize;
use sha2::Digest;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// Each RFC 9449 §4.3 check, so every refusal has its own reason (and metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopCheck {
    /// §7.1: the `DPoP` scheme needs a proof.
    Missing,
    /// #1: at most one `DPoP` header.
    Multiple,
    /// #2, #3: one well-formed JWT with every required claim.
    Malformed,
    /// #4: `typ` is `dpop+jwt`.
    Typ,
    /// #5: `alg` allowed by the profile.
    Alg,
    /// #7: `jwk` is a public key of a supported type.
    Jwk,
    /// #6: the signature verifies with `jwk`.
    Signature,
    /// #8: `htm` is the method.
    Htm,
    /// #9: `htu` is the request URI.
    Htu,
    /// #11: `iat` within the window.
    Iat,
    /// #12: `ath` is the hash of the access token.
    Ath,
    /// `jti` missing or over the size bound (§11.1).
    Jti,
    /// #12: the proof key is the key the token is bound to.
    KeyBinding,
    /// §11.1: the proof was used before.
    Replay,
}

impl DpopCheck {
    pub fn reason(self) -> &'static str {
        match self {
            DpopCheck::Missing => "dpop_missing",
            DpopCheck::Multiple => "dpop_multiple",
            DpopCheck::Malformed => "dpop_malformed",
            DpopCheck::Typ => "dpop_typ",
            DpopCheck::Alg => "dpop_alg",
            DpopCheck::Jwk => "dpop_jwk",
            DpopCheck::Signature => "dpop_signature",
            DpopCheck::Htm => "dpop_htm",
            DpopCheck::Htu => "dpop_htu",
            DpopCheck::Iat => "dpop_iat",
            DpopCheck::Ath => "dpop_ath",
            DpopCheck::Jti => "dpop_jti",
            DpopCheck::KeyBinding => "dpop_key_binding",
            DpopCheck::Replay => "dpop_replay",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            DpopCheck::Missing => "a DPoP proof is required",
            DpopCheck::Multiple => "more than one DPoP header",
            DpopCheck::Malformed => {
                "the DPoP proof is not a well-formed JWT with jti, htm, htu, iat and ath"
            }
            DpopCheck::Typ => "the DPoP proof typ is not dpop+jwt",
            DpopCheck::Alg => "the DPoP proof algorithm is not allowed",
            DpopCheck::Jwk => "the DPoP proof jwk is not a supported public key",
            DpopCheck::Signature => "the DPoP proof signature is invalid",
            DpopCheck::Htm => "the DPoP proof htm does not match the request method",
            DpopCheck::Htu => "the DPoP proof htu does not match the request URI",
            DpopCheck::Iat => "the DPoP proof iat is outside the acceptable window",
            DpopCheck::Ath => "the DPoP proof ath does not match the access token",
            DpopCheck::Jti => "the DPoP proof jti is missing or too long",
            DpopCheck::KeyBinding => "Invalid DPoP key binding",
            DpopCheck::Replay => "the DPoP proof was already used",
        }
    }
}

/// The longest `jti` we store a hash of (DPOP-11.1-3).
const MAX_JTI_BYTES: usize = 256;
/// A SHA-256 in unpadded base64url: the length of an `ath`.
const ATH_CHARS: usize = 43;

/// What a request says, for comparing with a proof.
pub struct ProofContext<'a> {
    pub method: &'a str,
    /// `public_url` plus the request path, without query.
    pub target_uri: &'a str,
    /// SHA-256 of the access token the proof must be bound to (`ath`).
    pub access_token_sha256: &'a [u8; 32],
    pub now: u64,
    pub algs: &'a [Algorithm],
    pub max_clock_skew: Duration,
    pub max_age: Duration,
    /// The keys of headers seen in proofs that verified, or `None` to parse every header.
    pub keys: Option<&'a ProofKeys>,
}

/// A proof that passed every stateless check.
#[derive(Debug, PartialEq, Eq)]
pub struct ValidProof {
    pub jkt: String,
    /// The proof's `iat`: its replay record lives as long as the proof could be accepted.
    pub iat: u64,
    pub nonce: Option<String>,
    /// SHA-256 of the key thumbprint and the `jti`, the replay-store key.
    pub jti_hash: [u8; 32],
}

#[derive(Deserialize)]
struct ProofClaims<'a> {
    #[serde(borrow)]
    jti: Option<Cow<'a, str>>,
    #[serde(borrow)]
    htm: Option<Cow<'a, str>>,
    #[serde(borrow)]
    htu: Option<Cow<'a, str>>,
    iat: Option<serde_json::Number>,
    #[serde(borrow)]
    ath: Option<Cow<'a, str>>,
    #[serde(borrow)]
    nonce: Option<Cow<'a, str>>,
}

pub fn verify(proof: &str, request: &ProofContext<'_>) -> Result<ValidProof, DpopCheck> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(DpopCheck::Malformed);
    };
    let known = request.keys.and_then(|keys| keys.get(header_b64));
    let key = match &known {
        Some(key) if !request.algs.contains(&key.alg) => return Err(DpopCheck::Alg),
        Some(key) => Arc::clone(key),
        None => Arc::new(proof_key(header_b64, request.algs)?),
    };

    // The signature is checked over the signing input as sent.
    let signing_input = &proof[..header_b64.len() + 1 + payload.len()];
    let verified = match &key.verifier {
        Verifier::Parsed(public) => b64
            .decode(signature)
            .is_ok_and(|raw| public.verify_sig(signing_input.as_bytes(), &raw).is_ok()),
        Verifier::Rsa(public) => {
            jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), public, key.alg)
                .unwrap_or(false)
        }
    };
    if !verified {
        return Err(DpopCheck::Signature);
    }
    if let (None, Some(keys)) = (&known, request.keys) {
        keys.insert(header_b64, Arc::clone(&key));
    }
    let payload = b64.decode(payload).map_err(|_| DpopCheck::Malformed)?;
    let claims: ProofClaims<'_> =
        serde_json::from_slice(&payload).map_err(|_| DpopCheck::Malformed)?;

    let (Some(jti), Some(htm), Some(htu), Some(iat), Some(ath)) =
        (claims.jti, claims.htm, claims.htu, claims.iat, claims.ath)
    else {
        return Err(DpopCheck::Malformed);
    };
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(DpopCheck::Jti);
    }
    if htm != request.method {
        return Err(DpopCheck::Htm);
    }
    // The URI as the request names it needs no normalising (the common case).
    if *htu != *request.target_uri && normalise_htu(&htu).as_deref() != Some(request.target_uri) {
        return Err(DpopCheck::Htu);
    }
    let iat = iat.as_f64().ok_or(DpopCheck::Malformed)? as u64;
    let newest = request.now + request.max_clock_skew.as_secs();
    let oldest = request.now.saturating_sub(request.max_age.as_secs());
    if iat > newest || iat < oldest {
        return Err(DpopCheck::Iat);
    }
    let mut expected_ath = [0u8; ATH_CHARS];
    let written = b64
        .encode_slice(request.access_token_sha256, &mut expected_ath)
        .map_err(|_| DpopCheck::Ath)?;
    if ath.as_bytes() != &expected_ath[..written] {
        return Err(DpopCheck::Ath);
    }
    // Scoped by key (RFC 9449 §11.1: a jti is unique per key): another client's proof with
    // the same jti is another record.
    let jti_hash = {
        let mut hash = sha2::Sha256::new();
        hash.update(key.jkt.as_bytes());
        hash.update([0]);
        hash.update(jti.as_bytes());
        hash.finalize().into()
    };
    Ok(ValidProof {
        jkt: key.jkt.clone(),
        iat,
        nonce: claims.nonce.map(Cow::into_owned),
        jti_hash,
    })
}

/// RFC 3986 §6.2.2/§6.2.3 normalisation of `htu` (DPOP-4.3-9/13): lowercase scheme and host,
/// default port dropped, empty path as `/`, query and fragment ignored.
pub fn normalise_htu(htu: &str) -> Option<String> {
    let without_fragment = htu.split('#').next()?;
    let uri: http::Uri = without_fragment.parse().ok()?;
    let (scheme, authority) = crate::encoding::normal_origin(&uri)?;
    let path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    Some(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
pub(crate) mod tests;
