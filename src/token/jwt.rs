//! JWT access tokens, RFC 9068 §4 (JWT-4-1..7) under RFC 8725 and the FAPI algorithm list
//! (SP2-CRY-1..3).

use super::jwks::KeySet;
use super::TokenError;
use crate::grant::{Grant, TokenClaims};
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Whether a token is a JWS: three segments whose first decodes to a JSON object with `alg`.
/// Anything else is an opaque token, sent to introspection.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|value| value.get("alg").is_some())
}

/// The parts of a header every JWS we accept must pass before any key is looked at.
pub(crate) fn checked_header(
    token: &str,
    algs: &[Algorithm],
    typ: &[&str],
) -> Result<Header, &'static str> {
    // The alg is read from the raw header first: `none` is not even an Algorithm to the
    // JOSE library, and it must be refused as a disallowed algorithm, not as malformed.
    let raw: serde_json::Value = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or("malformed JWS header")?;
    // RFC 7515 §4.1.11: every extension listed in `crit` must be understood; none is here.
    if raw.get("crit").is_some() {
        return Err("the JWS header has critical extensions this server does not support");
    }
    let named = raw.get("alg").and_then(|a| a.as_str()).unwrap_or("");
    let allowed = match named {
        "ES256" => algs.contains(&Algorithm::ES256),
        "PS256" => algs.contains(&Algorithm::PS256),
        "EdDSA" => algs.contains(&Algorithm::EdDSA),
        _ => false,
    };
    if !allowed {
        return Err("the signing algorithm is not allowed");
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed JWS header")?;
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        let short = t.strip_prefix("application/").unwrap_or(&t).to_string();
        typ.contains(&short.as_str())
    });
    if !typ_ok {
        return Err("wrong JWS typ");
    }
    Ok(header)
}

/// The payload of a compact JWS read by the claims reader (a member twice is refused, RFC 7493
/// §2.3), when it is an object. The signature is not checked here.
pub(crate) fn strict_payload(jws: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let payload = jws.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    match crate::policy::json::parse_claims(&bytes).ok()? {
        serde_json::Value::Object(claims) => Some(claims),
        _ => None,
    }
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

/// The unverified `iss`, used only to choose which issuer's keys verify the token.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
        .ok()
        .and_then(|c| c.iss)
}

pub struct JwtIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: Arc<KeySet>,
}

/// Verifies a JWT access token and returns its grant and how long it may be cached.
pub async fn verify_access_token(
    token: &str,
    issuer: &JwtIssuer,
    algs: &[Algorithm],
    skew: Duration,
    now: u64,
) -> Result<(Grant, Duration), TokenError> {
    let header = checked_header(token, algs, &["at+jwt"]).map_err(|e| {
        TokenError::Invalid(match e {
            "wrong JWS typ" => "the access token is not an RFC 9068 at+jwt",
            other => other,
        })
    })?;
    let key = issuer
        .keys
        .key_for(header.kid.as_deref(), header.alg)
        .await?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer.issuer.as_str()]);
    validation.set_audience(&issuer.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = skew.as_secs();
    validation.validate_nbf = true;
    jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &key, &validation)
        .map_err(|e| TokenError::Invalid(describe(e.kind())))?;
    // The claims rules judge are read once more, strictly: a claim sent twice would be read
    // differently by the upstream or another reader (serde_json keeps the last).
    let claims = strict_payload(token).ok_or(TokenError::Invalid(
        "the access token's claims hold a member twice",
    ))?;
    let grant = TokenClaims::grant_from(claims, &issuer.issuer)
        .map_err(|_| TokenError::Invalid("the access token's claims are malformed"))?;
    let ttl = grant
        .expires_at
        .map(|exp| Duration::from_secs((exp + skew.as_secs()).saturating_sub(now)))
        .unwrap_or(Duration::ZERO);
    Ok((grant, ttl))
}

pub(crate) fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the access token has expired",
        ErrorKind::ImmatureSignature => "the access token is not yet valid",
        ErrorKind::InvalidAudience => "the access token is not for this resource server",
        ErrorKind::InvalidIssuer => "the access token has the wrong issuer",
        ErrorKind::InvalidSignature => "the access token signature is invalid",
        ErrorKind::InvalidAlgorithm => "the signing algorithm is not allowed",
        ErrorKind::MissingRequiredClaim(_) => "the access token lacks a required claim",
        _ => "the access token is malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim twice would be read as its last value here and perhaps its first elsewhere:
    /// the token is refused. Case-differing names and large numbers are an AS's to issue.
    #[test]
    fn claims_are_read_once_and_a_claim_twice_is_refused() {
        let jws = |payload: &str| {
            let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
            format!("{}.{}.c2ln", b64(r#"{"alg":"ES256"}"#), b64(payload))
        };
        assert!(strict_payload(&jws(
            r#"{"openbanking_intent_id":"a","openbanking_intent_id":"b"}"#
        ))
        .is_none());
        let claims = strict_payload(&jws(
            r#"{"resource_access":{"App":{},"app":{}},"n":123456789012345678901234567890,"x":0.1}"#,
        ))
        .expect("accepted");
        assert_eq!(
            claims["resource_access"].as_object().map(|m| m.len()),
            Some(2)
        );
        assert!(strict_payload(&jws("[1]")).is_none(), "not an object");
    }

    #[test]
    fn jwt_and_opaque_tokens_are_told_apart() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#);
        assert!(looks_like_jwt(&format!("{header}.e30.c2ln")));
        assert!(!looks_like_jwt("2YotnFZFEjr1zCsicMWpAA"));
        assert!(!looks_like_jwt("a.b.c"));
        assert!(!looks_like_jwt(&format!("{header}.e30.c2ln.x")));
    }

    #[test]
    fn hi_jws_a_crit_header_is_refused_rfc_7515_4_1_11() {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"ES256","typ":"at+jwt","crit":["exp"],"exp":1}"#);
        assert_eq!(
            checked_header(
                &format!("{header}.e30.c2ln"),
                &[Algorithm::ES256],
                &["at+jwt"]
            )
            .err(),
            Some("the JWS header has critical extensions this server does not support")
        );
    }

    #[test]
    fn sp2_cry_3_jwt_4_1_header_checks() {
        let encode = |json: &str| {
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
            format!("{header}.e30.c2ln")
        };
        let algs = [Algorithm::ES256, Algorithm::PS256, Algorithm::EdDSA];
        assert!(checked_header(
            &encode(r#"{"alg":"ES256","typ":"at+jwt"}"#),
            &algs,
            &["at+jwt"]
        )
        .is_ok());
        assert!(checked_header(
            &encode(r#"{"alg":"ES256","typ":"application/AT+JWT"}"#),
            &algs,
            &["at+jwt"]
        )
        .is_ok());
        assert_eq!(
            checked_header(
                &encode(r#"{"alg":"ES256","typ":"JWT"}"#),
                &algs,
                &["at+jwt"]
            )
            .err(),
            Some("wrong JWS typ")
        );
        assert_eq!(
            checked_header(&encode(r#"{"alg":"ES256"}"#), &algs, &["at+jwt"]).err(),
            Some("wrong JWS typ")
        );
        assert_eq!(
            checked_header(
                &encode(r#"{"alg":"HS256","typ":"at+jwt"}"#),
                &algs,
                &["at+jwt"]
            )
            .err(),
            Some("the signing algorithm is not allowed")
        );
        assert_eq!(
            checked_header(
                &encode(r#"{"alg":"RS256","typ":"at+jwt"}"#),
                &algs,
                &["at+jwt"]
            )
            .err(),
            Some("the signing algorithm is not allowed")
        );
        assert!(checked_header(
            &encode(r#"{"alg":"none","typ":"at+jwt"}"#),
            &algs,
            &["at+jwt"]
        )
        .is_err());
    }
}
