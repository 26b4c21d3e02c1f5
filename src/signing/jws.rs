//! Ecosystem response signatures: UK Open Banking detached JWS in `x-jws-signature`
//! (UKOB-1/2) and Open Finance Brasil JWT bodies (BR-1/2).

use super::keys::SigningKey;
use super::signer::SignError;
use base64::Engine;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jws(
    key: &SigningKey,
    alg: &str,
    header: serde_json::Value,
    payload: &[u8],
) -> Result<(String, String), SignError> {
    let protected = b64url(header.to_string().as_bytes());
    let signing_input = format!("{protected}.{}", b64url(payload));
    let signature = key
        .sign(signing_input.as_bytes(), true)
        .map_err(SignError::Key)?;
    let _ = alg;
    Ok((signing_input, b64url(&signature)))
}

/// A compact JWS of `payload` (the audit trail's checkpoints).
pub(crate) fn compact(key: &SigningKey, alg: &str, payload: &[u8]) -> Result<String, SignError> {
    let header = serde_json::json!({"alg": alg, "kid": key.key_id, "typ": "JWT"});
    let (signing_input, signature) = jws(key, alg, header, payload)?;
    Ok(format!("{signing_input}.{signature}"))
}

/// UKOB-1/2: `header..signature` over the exact body, payload base64url-encoded in the
/// signing input (no `b64` header, OBIE v3.1.4 and later).
pub(crate) fn detached(
    key: &SigningKey,
    alg: &str,
    issuer: &str,
    trust_anchor: &str,
    now: u64,
    body: &[u8],
) -> Result<String, SignError> {
    let header = serde_json::json!({
        "alg": alg,
        "kid": key.key_id,
        "typ": "JOSE",
        "cty": "application/json",
        "http://openbanking.org.uk/iat": now,
        "http://openbanking.org.uk/iss": issuer,
        "http://openbanking.org.uk/tan": trust_anchor,
        "crit": ["http://openbanking.org.uk/iat", "http://openbanking.org.uk/iss", "http://openbanking.org.uk/tan"],
    });
    let (signing_input, signature) = jws(key, alg, header, body)?;
    let protected = signing_input.split('.').next().unwrap_or_default();
    Ok(format!("{protected}..{signature}"))
}

/// BR-1/2: the body becomes a compact JWS with `iss`, `aud`, `jti`, `iat` and the JSON
/// payload under `data`. The payload is the upstream's bytes verbatim (never re-serialised,
/// which would round numbers and drop duplicate members); a body that JSON readers could
/// read differently (duplicate members, inexact numbers: see `policy::json`) is refused.
pub(crate) fn jwt_body(
    key: &SigningKey,
    alg: &str,
    issuer: &str,
    audience: &str,
    now: u64,
    body: &[u8],
) -> Result<String, SignError> {
    let data: &[u8] = if body.is_empty() {
        b"null"
    } else {
        crate::policy::json::parse(body).map_err(|error| {
            SignError::Body(format!(
                "the jwt format embeds the body as JSON, and {}",
                error
                    .describe()
                    .replacen("the request body", "the upstream's body", 1)
            ))
        })?;
        body
    };
    let mut claims = serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
    })
    .to_string()
    .into_bytes();
    // `{...}` becomes `{...,"data":<body>}`.
    claims.pop();
    claims.extend_from_slice(b",\"data\":");
    claims.extend_from_slice(data);
    claims.push(b'}');
    let header = serde_json::json!({"alg": alg, "kid": key.key_id, "typ": "JWT"});
    let (signing_input, signature) = jws(key, alg, header, &claims)?;
    Ok(format!("{signing_input}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_of(jwt: &str) -> Vec<u8> {
        let payload = jwt.split('.').nth(1).unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap()
    }

    fn key() -> SigningKey {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        SigningKey::from_pkcs8_der(der.as_ref(), "k").unwrap()
    }

    #[test]
    fn br_1_the_jwt_body_carries_the_upstream_bytes_verbatim() {
        let body = br#"{"amount": 123.50, "big": 12345678901234567890, "n": [1e2]}"#;
        let jwt = jwt_body(&key(), "EdDSA", "bank", "tpp", 7, body).unwrap();
        let claims = claims_of(&jwt);
        let text = String::from_utf8(claims).unwrap();
        assert!(text.ends_with(&format!(
            ",\"data\":{}}}",
            std::str::from_utf8(body).unwrap()
        )));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["iss"], "bank");
        assert_eq!(value["aud"], "tpp");
        assert_eq!(value["iat"], 7);
    }

    #[test]
    fn br_1_a_body_readers_would_read_differently_is_not_signed() {
        for body in [
            &br#"{"a": 1, "a": 2}"#[..],
            br#"{"amount": 123.500000000000000001}"#,
            b"not json",
        ] {
            assert!(matches!(
                jwt_body(&key(), "EdDSA", "bank", "tpp", 7, body),
                Err(SignError::Body(_))
            ));
        }
        let empty = jwt_body(&key(), "EdDSA", "bank", "tpp", 7, b"").unwrap();
        assert!(String::from_utf8(claims_of(&empty))
            .unwrap()
            .ends_with(",\"data\":null}"));
    }
}
