//! Opaque tokens: RFC 7662 introspection, with RFC 9701 signed responses (JIR-4, JIR-5-1..3).
//! An AS error, a timeout or a response that cannot be verified is never "inactive": it is
//! 503 (INT-2). The caller caches the result (INT-3).

use super::jwks::KeySet;
use super::jwt::{checked_header, describe};
use super::TokenError;
use crate::grant::{Grant, TokenClaims};
use crate::policy::{IntrospectionAuth, IntrospectionPolicy};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const JWT_RESPONSE: &str = "application/token-introspection+jwt";
/// How old a signed introspection response may be.
const MAX_RESPONSE_AGE: u64 = 60;

enum ClientAuth {
    Basic(String),
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        kid: Option<String>,
    },
    Tls,
}

pub(crate) struct Introspector {
    issuer: String,
    audiences: Vec<String>,
    endpoint: String,
    client_id: String,
    auth: ClientAuth,
    signed_response: bool,
    pub cache_max_ttl: Duration,
    client: reqwest::Client,
    keys: Arc<KeySet>,
    algs: Vec<Algorithm>,
    skew: Duration,
    /// Bounds the calls in flight: a flood of unknown tokens gets 503s, not an AS in trouble.
    outstanding: tokio::sync::Semaphore,
    token_prefix: Option<String>,
}

/// What introspection said about a token.
pub(crate) enum Introspected {
    Active(Box<Grant>, Duration),
    Inactive(Duration),
}

impl Introspector {
    pub(crate) fn new(
        policy: &IntrospectionPolicy,
        issuer: &str,
        audiences: &[String],
        keys: Arc<KeySet>,
        ca_file: Option<&std::path::Path>,
        algs: Vec<Algorithm>,
        skew: Duration,
    ) -> Result<Self, String> {
        let (auth, identity) = match &policy.auth {
            IntrospectionAuth::ClientSecretBasic { secret_file } => {
                let secret = std::fs::read_to_string(secret_file)
                    .map_err(|e| format!("{}: {e}", secret_file.display()))?;
                let encode = |s: &str| form_urlencoded(s);
                let pair = format!("{}:{}", encode(&policy.client_id), encode(secret.trim()));
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                );
                (ClientAuth::Basic(value), None)
            }
            IntrospectionAuth::PrivateKeyJwt { key, key_id } => {
                let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
                let (key, alg) = signing_key(&pem).ok_or_else(|| {
                    format!(
                        "{}: not an EC P-256, Ed25519 or RSA PEM private key",
                        key.display()
                    )
                })?;
                (
                    ClientAuth::PrivateKeyJwt {
                        key,
                        alg,
                        kid: key_id.clone(),
                    },
                    None,
                )
            }
            IntrospectionAuth::TlsClientAuth { cert, key } => {
                (ClientAuth::Tls, Some((cert.as_path(), key.as_path())))
            }
        };
        let client = super::outbound::client(ca_file, identity, policy.timeout)?;
        Ok(Introspector {
            issuer: issuer.to_string(),
            audiences: audiences.to_vec(),
            endpoint: policy.endpoint.clone(),
            client_id: policy.client_id.clone(),
            auth,
            signed_response: policy.signed_response,
            cache_max_ttl: policy.cache_max_ttl,
            client,
            keys,
            algs,
            skew,
            outstanding: tokio::sync::Semaphore::new(policy.max_outstanding),
            token_prefix: policy.token_prefix.clone(),
        })
    }

    pub(crate) async fn introspect(
        &self,
        token: &str,
        now: u64,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<Introspected, TokenError> {
        let started = Instant::now();
        let result = self.call(token, now).await;
        metrics
            .introspection_duration
            .observe(started.elapsed().as_secs_f64());
        if let Err(TokenError::Unavailable(reason)) = &result {
            metrics
                .introspection_failures
                .with_label_values(&[reason])
                .inc();
        }
        result
    }

    /// The `iss` of this AS.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences this gateway accepts from this AS.
    pub(crate) fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The prefix of this AS's opaque tokens, when configured.
    pub(crate) fn token_prefix(&self) -> Option<&str> {
        self.token_prefix.as_deref()
    }

    async fn call(&self, token: &str, now: u64) -> Result<Introspected, TokenError> {
        let Ok(_permit) = self.outstanding.try_acquire() else {
            tracing::warn!(endpoint = %self.endpoint, "introspection calls at their limit");
            return Err(TokenError::Unavailable("busy"));
        };
        let mut form = vec![
            ("token", token.to_string()),
            ("token_type_hint", "access_token".to_string()),
        ];
        let mut request = self.client.post(&self.endpoint);
        match &self.auth {
            ClientAuth::Basic(value) => request = request.header("authorization", value),
            ClientAuth::PrivateKeyJwt { key, alg, kid } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    self.client_assertion(key, *alg, kid, now)?,
                ));
            }
            ClientAuth::Tls => form.push(("client_id", self.client_id.clone())),
        }
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_urlencoded(v)))
            .collect::<Vec<_>>()
            .join("&");
        let accept = if self.signed_response {
            JWT_RESPONSE
        } else {
            "application/json"
        };
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", accept)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, endpoint = %self.endpoint, "introspection request failed");
                TokenError::Unavailable(if e.is_timeout() { "timeout" } else { "unreachable" })
            })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), endpoint = %self.endpoint, "introspection refused");
            return Err(TokenError::Unavailable("error_status"));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bytes = super::outbound::bounded_body(response)
            .await
            .map_err(|e| match e {
                super::outbound::ReadError::TooLarge => {
                    TokenError::Unavailable("response_too_large")
                }
                super::outbound::ReadError::Unreadable => TokenError::Unavailable("unreadable"),
            })?;
        let object = if self.signed_response {
            if !content_type.starts_with(JWT_RESPONSE) {
                return Err(TokenError::Unavailable("unsigned_response"));
            }
            self.verify_signed(&bytes, now).await?
        } else {
            crate::policy::json::parse_claims(&bytes)
                .map_err(|_| TokenError::Unavailable("malformed_response"))?
        };
        self.interpret(object, now)
    }

    /// RFC 9701 §5: typ, signature with the issuer's keys, iss, aud = our client_id, iat.
    async fn verify_signed(&self, bytes: &[u8], now: u64) -> Result<serde_json::Value, TokenError> {
        let jwt = std::str::from_utf8(bytes)
            .map_err(|_| TokenError::Unavailable("malformed_response"))?
            .trim();
        let header = checked_header(jwt, &self.algs, &["token-introspection+jwt"])
            .map_err(|_| TokenError::Unavailable("unverifiable_response"))?;
        let key = self
            .keys
            .key_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|_| TokenError::Unavailable("unverifiable_response"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.client_id.as_str()]);
        validation.set_required_spec_claims(&["iss", "aud"]);
        validation.validate_exp = false;
        #[derive(Deserialize)]
        struct Envelope {
            iat: Option<u64>,
        }
        let data = jsonwebtoken::decode::<Envelope>(jwt, &key, &validation).map_err(|e| {
            tracing::warn!(
                reason = describe(e.kind()),
                "signed introspection response refused"
            );
            TokenError::Unavailable("unverifiable_response")
        })?;
        let iat = data
            .claims
            .iat
            .ok_or(TokenError::Unavailable("unverifiable_response"))?;
        if iat > now + self.skew.as_secs()
            || now.saturating_sub(iat) > MAX_RESPONSE_AGE + self.skew.as_secs()
        {
            return Err(TokenError::Unavailable("stale_response"));
        }
        // Read again strictly: a member twice is not believed (see `strict_payload`).
        super::jwt::strict_payload(jwt)
            .and_then(|mut envelope| envelope.remove("token_introspection"))
            .ok_or(TokenError::Unavailable("malformed_response"))
    }

    fn interpret(&self, object: serde_json::Value, now: u64) -> Result<Introspected, TokenError> {
        let active = object.get("active").and_then(|a| a.as_bool());
        match active {
            Some(false) => return Ok(Introspected::Inactive(self.cache_max_ttl)),
            Some(true) => {}
            None => return Err(TokenError::Unavailable("malformed_response")),
        }
        let audience_ok = match object.get("aud") {
            Some(serde_json::Value::String(aud)) => self.audiences.contains(aud),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|a| a.as_str())
                .any(|a| self.audiences.iter().any(|ours| ours == a)),
            _ => false,
        };
        if object
            .get("iss")
            .and_then(|i| i.as_str())
            .is_some_and(|iss| iss != self.issuer)
        {
            return Err(TokenError::Invalid("the access token has the wrong issuer"));
        }
        let serde_json::Value::Object(members) = object else {
            return Err(TokenError::Unavailable("malformed_response"));
        };
        let grant = TokenClaims::grant_from(members, &self.issuer)
            .map_err(|_| TokenError::Unavailable("malformed_response"))?;
        if !audience_ok {
            return Err(TokenError::Invalid(
                "the access token is not for this resource server",
            ));
        }
        let Some(exp) = grant.expires_at else {
            return Ok(Introspected::Active(Box::new(grant), self.cache_max_ttl));
        };
        if exp <= now {
            return Ok(Introspected::Inactive(self.cache_max_ttl));
        }
        let ttl = Duration::from_secs(exp - now).min(self.cache_max_ttl);
        Ok(Introspected::Active(Box::new(grant), ttl))
    }

    fn client_assertion(
        &self,
        key: &EncodingKey,
        alg: Algorithm,
        kid: &Option<String>,
        now: u64,
    ) -> Result<String, TokenError> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| TokenError::Unavailable("rng"))?;
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.issuer,
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
            "iat": now,
            "exp": now + 60,
        });
        let mut header = Header::new(alg);
        header.kid = kid.clone();
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|_| TokenError::Unavailable("client_assertion"))
    }
}

/// A PEM private key for `private_key_jwt`, with the algorithm its type implies.
fn signing_key(pem: &[u8]) -> Option<(EncodingKey, Algorithm)> {
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        return Some((key, Algorithm::ES256));
    }
    if let Ok(key) = EncodingKey::from_ed_pem(pem) {
        return Some((key, Algorithm::EdDSA));
    }
    EncodingKey::from_rsa_pem(pem)
        .ok()
        .map(|key| (key, Algorithm::PS256))
}

/// application/x-www-form-urlencoded for one value.
fn form_urlencoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
