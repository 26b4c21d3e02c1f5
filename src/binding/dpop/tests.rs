//! Tests of proof verification (RFC 9449 §4.3, each by its requirement ID), and the keys and
//! proofs the tests of other modules sign with.

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
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
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
    if let (Some(target), Some(extra)) = (header_json.as_object_mut(), header_extra.as_object()) {
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
        jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, Algorithm::ES256).unwrap();
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
