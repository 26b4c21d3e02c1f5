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
pub(crate) mod tests {
    use super::*;
    use crate::binding::thumbprint::jkt;
    use jsonwebtoken::{EncodingKey, Header};

    /// A P-256 key pair for signing test proofs, and its public JWK.
    pub(crate) struct TestKey {
        pub encoding: EncodingKey,
        pub jwk: serde_json::Value,
    }

    pub(crate) fn es256_key() -> TestKey {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        TestKey {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256",
                "x": b64.encode(&public[1..33]), "y": b64.encode(&public[33..65]),
            }),
        }
    }

    pub(crate) fn proof(
        key: &TestKey,
        header_extra: serde_json::Value,
        claims: serde_json::Value,
    ) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        let mut header_json = serde_json::to_value(&header).unwrap();
        header_json["jwk"] = key.jwk.clone();
        if let (Some(target), Some(extra)) = (header_json.as_object_mut(), header_extra.as_object())
        {
            for (k, v) in extra {
                if v.is_null() {
                    target.remove(k);
                } else {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        // Sign header.claims by hand so the header can hold anything a test wants.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!(
            "{}.{}",
            b64.encode(header_json.to_string()),
            b64.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, Algorithm::ES256)
                .unwrap();
        format!("{message}.{signature}")
    }

    pub(crate) const TOKEN: &str = "the-access-token";
    static TOKEN_SHA256: std::sync::LazyLock<[u8; 32]> =
        std::sync::LazyLock::new(|| sha2::Sha256::digest(TOKEN).into());
    pub(crate) const URI: &str = "https://api.bank.example/accounts";
    pub(crate) const NOW: u64 = 1_700_000_000;

    fn unpadded(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub(crate) fn claims() -> serde_json::Value {
        let ath = unpadded(&sha2::Sha256::digest(TOKEN));
        serde_json::json!({"jti": "j-1", "htm": "GET", "htu": URI, "iat": NOW, "ath": ath})
    }

    #[test]
    fn dpop_11_1_replay_records_are_scoped_by_key_and_jti() {
        let (one, two) = (es256_key(), es256_key());
        let record = |key: &TestKey| {
            verify(&proof(key, serde_json::json!({}), claims()), &context())
                .unwrap()
                .jti_hash
        };
        assert_eq!(
            record(&one),
            record(&one),
            "the same key and jti: one record"
        );
        assert_ne!(
            record(&one),
            record(&two),
            "another key's jti is another record"
        );
    }

    #[test]
    fn hi_jws_a_proof_with_a_crit_header_is_refused() {
        let key = es256_key();
        let proof = proof(&key, serde_json::json!({"crit": ["x"], "x": 1}), claims());
        assert_eq!(verify(&proof, &context()), Err(DpopCheck::Malformed));
        assert!(verify(&proof_without_crit(&key), &context()).is_ok());
    }

    fn proof_without_crit(key: &TestKey) -> String {
        proof(key, serde_json::json!({}), claims())
    }

    fn context() -> ProofContext<'static> {
        ProofContext {
            method: "GET",
            target_uri: URI,
            access_token_sha256: &TOKEN_SHA256,
            now: NOW,
            algs: &[Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA],
            max_clock_skew: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
            keys: None,
        }
    }

    fn with(mut base: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
        if value.is_null() {
            base.as_object_mut().unwrap().remove(key);
        } else {
            base[key] = value;
        }
        base
    }

    #[test]
    fn dpop_4_3_7_a_point_off_the_curve_is_not_a_key() {
        let key = es256_key();
        let mut jwk = key.jwk.clone();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        jwk["y"] = b64.encode([7u8; 32]).into();
        let off_curve = TestKey {
            encoding: key.encoding,
            jwk,
        };
        let bad = proof(&off_curve, serde_json::json!({}), claims());
        assert_eq!(verify(&bad, &context()), Err(DpopCheck::Jwk));
    }

    #[test]
    fn dpop_4_3_a_valid_proof_passes_and_yields_its_jkt() {
        let key = es256_key();
        let valid = verify(&proof(&key, serde_json::json!({}), claims()), &context()).unwrap();
        assert_eq!(valid.jkt, jkt(key.jwk.as_object().unwrap()).unwrap());
    }

    #[test]
    fn dpop_4_3_each_check_refuses_with_its_own_reason() {
        let key = es256_key();
        let c = claims();
        let cases: Vec<(&str, String, DpopCheck)> = vec![
            (
                "dpop_4_3_2_not_a_jwt",
                "abc.def".into(),
                DpopCheck::Malformed,
            ),
            (
                "dpop_4_3_4_typ",
                proof(&key, serde_json::json!({"typ": "JWT"}), c.clone()),
                DpopCheck::Typ,
            ),
            (
                "dpop_4_3_5_alg_none",
                proof(&key, serde_json::json!({"alg": "none"}), c.clone()),
                DpopCheck::Alg,
            ),
            (
                "dpop_4_3_5_alg_hs256",
                proof(&key, serde_json::json!({"alg": "HS256"}), c.clone()),
                DpopCheck::Alg,
            ),
            (
                "dpop_4_3_7_private_key",
                proof(
                    &key,
                    serde_json::json!({"jwk": {"kty": "EC", "crv": "P-256", "x": key.jwk["x"], "y": key.jwk["y"], "d": "secret"}}),
                    c.clone(),
                ),
                DpopCheck::Jwk,
            ),
            (
                "dpop_4_3_7_no_jwk",
                proof(&key, serde_json::json!({"jwk": null}), c.clone()),
                DpopCheck::Jwk,
            ),
            (
                "dpop_4_3_6_signature",
                proof(&key, serde_json::json!({"jwk": es256_key().jwk}), c.clone()),
                DpopCheck::Signature,
            ),
            (
                "dpop_4_3_3_no_jti",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "jti", serde_json::Value::Null),
                ),
                DpopCheck::Malformed,
            ),
            (
                "dpop_4_3_3_no_ath",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "ath", serde_json::Value::Null),
                ),
                DpopCheck::Malformed,
            ),
            (
                "dpop_4_3_8_htm",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "htm", "POST".into()),
                ),
                DpopCheck::Htm,
            ),
            (
                "dpop_4_3_9_htu",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "htu", "https://api.bank.example/payments".into()),
                ),
                DpopCheck::Htu,
            ),
            (
                "dpop_4_3_11_iat_future",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "iat", (NOW + 11).into()),
                ),
                DpopCheck::Iat,
            ),
            (
                "dpop_4_3_11_iat_old",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "iat", (NOW - 61).into()),
                ),
                DpopCheck::Iat,
            ),
            (
                "dpop_4_3_12_ath",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "ath", "AAAA".into()),
                ),
                DpopCheck::Ath,
            ),
            (
                "dpop_4_3_12_ath_of_another_token",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(
                        c.clone(),
                        "ath",
                        unpadded(&sha2::Sha256::digest("another-token")).into(),
                    ),
                ),
                DpopCheck::Ath,
            ),
            (
                "dpop_4_3_12_ath_padded",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(
                        c.clone(),
                        "ath",
                        format!("{}=", unpadded(&*TOKEN_SHA256)).into(),
                    ),
                ),
                DpopCheck::Ath,
            ),
            (
                "dpop_11_1_3_jti_too_long",
                proof(
                    &key,
                    serde_json::json!({}),
                    with(c.clone(), "jti", "j".repeat(300).into()),
                ),
                DpopCheck::Jti,
            ),
            (
                "dpop_4_3_6_signature_by_another_key_under_a_known_header",
                proof(
                    &TestKey {
                        jwk: key.jwk.clone(),
                        ..es256_key()
                    },
                    serde_json::json!({}),
                    c.clone(),
                ),
                DpopCheck::Signature,
            ),
        ];
        // Each check holds as well when the client's key is known from an earlier proof (as
        // the gateway runs) and its header is not parsed again.
        let keys = ProofKeys::new(1 << 20);
        let warm = ProofContext {
            keys: Some(&keys),
            ..context()
        };
        verify(&proof(&key, serde_json::json!({}), c.clone()), &warm).unwrap();
        for (name, proof, want) in cases {
            assert_eq!(verify(&proof, &context()), Err(want), "{name}");
            assert_eq!(verify(&proof, &warm), Err(want), "{name}, key known");
        }
    }

    #[test]
    fn dpop_4_3_6_a_key_is_known_only_after_its_proof_verified_and_its_alg_is_checked_each_time() {
        let key = es256_key();
        let keys = ProofKeys::new(1 << 20);
        let warm = ProofContext {
            keys: Some(&keys),
            ..context()
        };
        let forged = TestKey {
            jwk: key.jwk.clone(),
            ..es256_key()
        };
        let forged = proof(&forged, serde_json::json!({}), claims());
        assert_eq!(verify(&forged, &warm), Err(DpopCheck::Signature));
        assert_eq!(
            keys.entry_count(),
            0,
            "a header whose proof failed is not kept"
        );

        let good = proof(&key, serde_json::json!({}), claims());
        let valid = verify(&good, &warm).unwrap();
        assert_eq!(keys.entry_count(), 1);
        assert_eq!(
            verify(&good, &warm),
            Ok(valid),
            "the known key decides alike"
        );
        assert_eq!(verify(&forged, &warm), Err(DpopCheck::Signature));
        // DPOP-4.3-5: a reload that no longer allows ES256 refuses the known key.
        let no_es256 = ProofContext {
            algs: &[Algorithm::PS256],
            ..warm
        };
        assert_eq!(verify(&good, &no_es256), Err(DpopCheck::Alg));
    }

    #[test]
    fn dpop_4_3_9_htu_ignores_query_and_fragment_and_normalises() {
        let key = es256_key();
        for htu in [
            "https://api.bank.example/accounts?x=1",
            "https://api.bank.example/accounts#frag",
            "https://api.bank.example/accounts?x=1#frag",
            "HTTPS://API.Bank.Example:443/accounts",
        ] {
            let p = proof(
                &key,
                serde_json::json!({}),
                with(claims(), "htu", htu.into()),
            );
            assert!(verify(&p, &context()).is_ok(), "{htu}");
        }
    }

    #[test]
    fn sp2_clk_1_iat_8_seconds_ahead_and_10_behind_are_accepted() {
        let key = es256_key();
        for iat in [NOW + 8, NOW - 10] {
            let p = proof(
                &key,
                serde_json::json!({}),
                with(claims(), "iat", iat.into()),
            );
            assert!(verify(&p, &context()).is_ok(), "{iat}");
        }
    }

    #[test]
    fn dpop_4_2_3_unknown_header_parameters_and_claims_are_ignored() {
        let key = es256_key();
        let p = proof(
            &key,
            serde_json::json!({"x-extra": 1}),
            with(claims(), "unknown", "yes".into()),
        );
        assert!(verify(&p, &context()).is_ok());
    }
}
