//! The gateway's response signer: the active key, the published JWKS, and the formats
//! (`http-signature`, `jws-detached`, `jwt`) chosen per route.

use super::base::MessageView;
use super::digest::content_digest;
use super::httpsig::{sign_response, RequestBinding};
use super::jws;
use super::keys::SigningKey;
use crate::policy::{ResponseFormat, ResponseSigningPolicy};
use http::{HeaderMap, HeaderName, HeaderValue};

static CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
static SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
static SIGNATURE: HeaderName = HeaderName::from_static("signature");
static X_JWS_SIGNATURE: HeaderName = HeaderName::from_static("x-jws-signature");

/// Why a response could not be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The key could not sign (an HSM that stopped answering): the answer is withheld (503).
    Key(String),
    /// The upstream's answer cannot be signed as the route's format requires (502).
    Body(String),
}

impl std::fmt::Display for SignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignError::Key(e) => write!(f, "the signing key failed: {e}"),
            SignError::Body(e) => write!(f, "the upstream's answer cannot be signed: {e}"),
        }
    }
}

pub struct ResponseSigner {
    active: std::sync::Arc<SigningKey>,
    pub default_format: ResponseFormat,
    pub max_body: u64,
    pub jwks_path: String,
    issuer: String,
    trust_anchor: String,
    jwks: String,
}

impl ResponseSigner {
    pub fn new(policy: &ResponseSigningPolicy) -> Result<Self, String> {
        let active = match &policy.hsm {
            Some((uri, pin)) => SigningKey::from_hsm(uri, pin, &policy.key_id)
                .map_err(|e| format!("response_signing.key: {e}"))?,
            None => SigningKey::load(&policy.key, &policy.key_id)?,
        };
        if !active.supports(&policy.alg) {
            return Err(format!(
                "response_signing.alg: the key in {} cannot sign {}",
                policy.key.display(),
                policy.alg
            ));
        }
        let mut keys = vec![active.public_jwk()];
        for (path, key_id, _alg) in &policy.additional_keys {
            let key = SigningKey::load(path, key_id)?;
            keys.push(key.public_jwk());
        }
        let jwks = serde_json::json!({ "keys": keys }).to_string();
        Ok(ResponseSigner {
            active: std::sync::Arc::new(active),
            default_format: policy.format,
            max_body: policy.max_body,
            jwks_path: policy.jwks_path.clone(),
            issuer: policy.issuer.clone(),
            trust_anchor: policy.trust_anchor.clone(),
            jwks,
        })
    }

    /// The active key, which also signs the audit trail's checkpoints.
    pub fn active_key(&self) -> std::sync::Arc<SigningKey> {
        self.active.clone()
    }

    /// The public JWKS served at `jwks_path` (and printed by `fapigate jwks`).
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Signs a response in place: adds headers, or (`jwt`) replaces the body.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        format: ResponseFormat,
        status: u16,
        headers: &mut HeaderMap,
        body: &mut Vec<u8>,
        request: &RequestBinding<'_>,
        client_id: Option<&str>,
        now: u64,
    ) -> Result<(), SignError> {
        // Field values are moved in, not copied (the conversion still validates them).
        let value =
            |text: String| HeaderValue::try_from(text).map_err(|e| SignError::Body(e.to_string()));
        match format {
            ResponseFormat::HttpSignature => {
                // The digest of the exact bytes sent, an empty body's included (the upstream's
                // own was removed before).
                headers.insert(CONTENT_DIGEST.clone(), value(content_digest(body))?);
                let view = MessageView {
                    method: None,
                    target_uri: None,
                    status: Some(status),
                    headers,
                };
                let (input, signature) = sign_response(&self.active, &view, request, now)?;
                headers.insert(SIGNATURE_INPUT.clone(), value(input)?);
                headers.insert(SIGNATURE.clone(), value(signature)?);
            }
            ResponseFormat::JwsDetached => {
                let alg = self.active.jose_alg();
                let jws = jws::detached(
                    &self.active,
                    alg,
                    &self.issuer,
                    &self.trust_anchor,
                    now,
                    body,
                )?;
                headers.insert(X_JWS_SIGNATURE.clone(), value(jws)?);
            }
            ResponseFormat::Jwt => {
                let alg = self.active.jose_alg();
                let jwt = jws::jwt_body(
                    &self.active,
                    alg,
                    &self.issuer,
                    client_id.unwrap_or(""),
                    now,
                    body,
                )?;
                *body = jwt.into_bytes();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/jwt"),
                );
            }
        }
        Ok(())
    }
}
