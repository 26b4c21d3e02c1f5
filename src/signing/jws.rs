//! Ecosystem response signatures: UK Open Banking detached JWS in `x-jws-signature`
//! (UKOB-1/2) and Open Finance Brasil JWT bodies (BR-1/2).

use super::keys::SigningKey;
use base64::Engine;

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jws(
    key: &SigningKey,
    alg: &str,
    header: serde_json::Value,
    payload: &[u8],
) -> Result<(String, String), String> {
    let protected = b64url(header.to_string().as_bytes());
    let signing_input = format!("{protected}.{}", b64url(payload));
    let signature = key.sign(signing_input.as_bytes(), true)?;
    let _ = alg;
    Ok((signing_input, b64url(&signature)))
}

/// UKOB-1/2: `header..signature` over the exact body, payload base64url-encoded in the
/// signing input (no `b64` header, OBIE v3.1.4 and later).
pub fn detached(
    key: &SigningKey,
    alg: &str,
    issuer: &str,
    trust_anchor: &str,
    now: u64,
    body: &[u8],
) -> Result<String, String> {
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
/// payload under `data`.
pub fn jwt_body(
    key: &SigningKey,
    alg: &str,
    issuer: &str,
    audience: &str,
    now: u64,
    body: &[u8],
) -> Result<String, String> {
    let data: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body).map_err(|_| "the upstream body is not JSON".to_string())?
    };
    let claims = serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "data": data,
    });
    let header = serde_json::json!({"alg": alg, "kid": key.key_id, "typ": "JWT"});
    let (signing_input, signature) = jws(key, alg, header, claims.to_string().as_bytes())?;
    Ok(format!("{signing_input}.{signature}"))
}
