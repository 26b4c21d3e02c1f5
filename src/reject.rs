//! Every refusal the gateway makes, as a typed value, and the one place where it becomes an
//! HTTP response: status, `WWW-Authenticate` challenges (RFC 6750 §3, RFC 9449 §7.1) and a
//! small JSON body. The formats are those of the checklist §3.

use crate::binding::dpop::DpopCheck;
use crate::credential::Scheme;
use crate::policy::json::JsonError;
use crate::policy::path::PathError;
use crate::policy::{Profile, ProfileKind};
use http::Method;

/// `Retry-After` (seconds) when the replay store or nonce key cannot answer: Redis heals or
/// fails over within a second or two, and the gateway's own backoff starts at 100 ms.
const RETRY_STATE: u64 = 1;
/// When the AS or its keys cannot be reached: its timeout is 2 s by default, so a retry
/// sooner would most likely meet the same outage.
const RETRY_AUTHORIZATION_SERVER: u64 = 5;
/// When the audit trail cannot take a record (a full queue drains in milliseconds).
const RETRY_EVIDENCE: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The path could be read in more than one way (see `policy::path`).
    BadPath(PathError),
    NotFound,
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    /// RFC 6750 `invalid_request` (400): ambiguous or malformed credentials.
    InvalidRequest {
        description: &'static str,
    },
    /// A header the route requires is absent or sent more than once (400, `require_headers`).
    /// Not about the credential: no challenge.
    RequiredHeader {
        description: String,
    },
    /// The memory replay store holds all it can: 503, its own reason (not Redis being down).
    ReplayStoreFull,
    /// A `[[rate_limit]]` reached (RFC 6585 §4: 429 with `Retry-After`).
    RateLimited {
        retry_after: u64,
        description: String,
    },
    /// No credential of an accepted scheme (401, challenges without an error code).
    NoCredentials,
    /// RFC 6750 `invalid_token` (401), under the scheme the client used.
    InvalidToken {
        scheme: Scheme,
        description: &'static str,
    },
    /// RFC 9449 §7.1 `invalid_dpop_proof` (401): one of the §4.3 checks failed.
    InvalidDpopProof(DpopCheck),
    /// RFC 9449 §9 `use_dpop_nonce` (401) with a fresh `DPoP-Nonce`.
    UseDpopNonce {
        nonce: String,
    },
    /// A DPoP-bound token under the `Bearer` scheme (RFC 9449 §7.2, DPOP-7.2-1).
    DpopDowngrade,
    /// The replay store cannot answer: refuse rather than accept a possible replay (503).
    StateUnavailable,
    /// One DPoP key holds its whole share of the replay store (`replay_entries_per_key`): its
    /// next proofs wait (429) rather than crowd out every other client's.
    ReplayShareExhausted {
        retry_after: u64,
    },
    /// RFC 6750 `insufficient_scope` (403): the grant does not cover this request.
    InsufficientScope {
        scheme: Scheme,
        description: String,
    },
    /// RFC 9470 `insufficient_user_authentication` (401).
    StepUpRequired {
        scheme: Scheme,
        description: String,
        acr_values: Vec<String>,
        max_age: Option<u64>,
    },
    /// HS2-REQ-RS-3: a missing or invalid HTTP message signature (401).
    RequestSignature {
        scheme: Scheme,
        description: &'static str,
    },
    /// A JSON body the route's rules read is over the limit (413).
    BodyTooLarge,
    /// The route's rules read a JSON body and this is not one (415).
    BodyNotJson,
    /// The body could not be read (400).
    BodyMalformed,
    /// The body did not arrive whole within `listener.body_timeout` (408).
    BodyTimeout,
    /// A `Transfer-Encoding` other than exactly `chunked` (501, RFC 9112 §6.1).
    UnsupportedTransferCoding,
    /// The JSON body the route's rules read is not one every reader reads alike (400).
    BodyJson(JsonError),
    /// The body the route's rules read is labelled or coded so readers could differ (400).
    BodyEncoding(&'static str),
    /// The AS or its keys cannot be reached, or its answer not verified (503, INT-2).
    AuthorizationServerUnavailable,
    /// The request headers exceed the gateway's limit (431).
    HeadersTooLarge,
    /// The upstream could not be reached or failed mid-response (502).
    UpstreamFailed,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The audit trail cannot take a signed request (503, before the upstream is called).
    EvidenceUnavailable,
    /// The upstream answered, but its response could not be signed or recorded: it is
    /// withheld (502, and no `Retry-After`: the upstream may have acted, a retry could act
    /// twice).
    EvidenceFailed,
}

impl From<crate::binding::BindingError> for Rejection {
    fn from(error: crate::binding::BindingError) -> Rejection {
        use crate::binding::BindingError;
        match error {
            BindingError::Unbound {
                scheme,
                description,
            } => Rejection::InvalidToken {
                scheme,
                description,
            },
            BindingError::Downgrade => Rejection::DpopDowngrade,
            BindingError::Proof(check) => Rejection::InvalidDpopProof(check),
            BindingError::NonceRequired { nonce } => Rejection::UseDpopNonce { nonce },
            BindingError::ShareExhausted { retry_after } => {
                Rejection::ReplayShareExhausted { retry_after }
            }
            BindingError::StateUnavailable => Rejection::StateUnavailable,
            BindingError::StoreFull => Rejection::ReplayStoreFull,
        }
    }
}

impl From<crate::credential::CredentialError> for Rejection {
    fn from(error: crate::credential::CredentialError) -> Rejection {
        Rejection::InvalidRequest {
            description: error.describe(),
        }
    }
}

impl From<crate::signing::signer::SignError> for Rejection {
    fn from(error: crate::signing::signer::SignError) -> Rejection {
        match error {
            crate::signing::signer::SignError::Key(_) => Rejection::EvidenceFailed,
            crate::signing::signer::SignError::Body(_) => Rejection::UpstreamFailed,
        }
    }
}

/// A rejection as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Rejection {
    /// The metric and log label of this rejection.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadPath(_) => "bad_path",
            Rejection::NotFound => "no_route",
            Rejection::MethodNotAllowed { .. } => "method_not_allowed",
            Rejection::InvalidRequest { .. } => "invalid_request",
            Rejection::RequiredHeader { .. } => "required_header",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::NoCredentials => "no_credentials",
            Rejection::InvalidToken { .. } => "invalid_token",
            Rejection::InsufficientScope { .. } => "insufficient_scope",
            Rejection::StepUpRequired { .. } => "insufficient_user_authentication",
            Rejection::RequestSignature { .. } => "request_signature",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::BodyNotJson => "body_not_json",
            Rejection::BodyMalformed => "body_malformed",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::UnsupportedTransferCoding => "transfer_coding",
            Rejection::BodyJson(error) => error.reason(),
            Rejection::BodyEncoding(_) => "body_encoding",
            Rejection::InvalidDpopProof(check) => check.reason(),
            Rejection::UseDpopNonce { .. } => "use_dpop_nonce",
            Rejection::DpopDowngrade => "dpop_downgrade",
            Rejection::StateUnavailable => "state_unavailable",
            Rejection::ReplayStoreFull => "replay_store_full",
            Rejection::ReplayShareExhausted { .. } => "replay_share_exhausted",
            Rejection::AuthorizationServerUnavailable => "authorization_server_unavailable",
            Rejection::HeadersTooLarge => "headers_too_large",
            Rejection::UpstreamFailed => "upstream_failed",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::EvidenceUnavailable => "evidence_unavailable",
            Rejection::EvidenceFailed => "evidence_failed",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Rejection::BadPath(_)
            | Rejection::InvalidRequest { .. }
            | Rejection::RequiredHeader { .. }
            | Rejection::BodyMalformed
            | Rejection::BodyJson(_)
            | Rejection::BodyEncoding(_) => 400,
            Rejection::InsufficientScope { .. } => 403,
            Rejection::BodyTimeout => 408,
            Rejection::UnsupportedTransferCoding => 501,
            Rejection::BodyTooLarge => 413,
            Rejection::BodyNotJson => 415,
            Rejection::NoCredentials
            | Rejection::InvalidToken { .. }
            | Rejection::InvalidDpopProof(_)
            | Rejection::UseDpopNonce { .. }
            | Rejection::DpopDowngrade
            | Rejection::StepUpRequired { .. }
            | Rejection::RequestSignature { .. } => 401,
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed { .. } => 405,
            Rejection::HeadersTooLarge => 431,
            Rejection::UpstreamFailed | Rejection::EvidenceFailed => 502,
            Rejection::UpstreamTimeout => 504,
            Rejection::AuthorizationServerUnavailable
            | Rejection::StateUnavailable
            | Rejection::ReplayStoreFull
            | Rejection::EvidenceUnavailable => 503,
            Rejection::ReplayShareExhausted { .. } | Rejection::RateLimited { .. } => 429,
        }
    }

    /// Renders the rejection. `resource_metadata` is the URL of the RFC 9728 metadata, added
    /// to every challenge so a client can discover the authorization servers.
    pub fn render(&self, profile: &Profile, resource_metadata: Option<&str>) -> Rendered {
        let (error, description) = self.error();
        let mut headers = Vec::new();
        if let Some(challenge) = self.challenge(profile, resource_metadata, error, description) {
            headers.push(("www-authenticate", challenge));
        }
        match self {
            Rejection::MethodNotAllowed { allow } => {
                let names: Vec<&str> = allow.iter().map(Method::as_str).collect();
                headers.push(("allow", names.join(", ")));
            }
            Rejection::UseDpopNonce { nonce } => headers.push(("dpop-nonce", nonce.clone())),
            _ => {}
        }
        if let Some(seconds) = self.retry_after() {
            headers.push(("retry-after", seconds.to_string()));
        }
        headers.push(("content-type", "application/json".into()));
        // Every refusal is no-store (RFC 9449 §9 requires it for nonce challenges).
        headers.push(("cache-control", "no-store".into()));
        let body = serde_json::json!({ "error": error, "error_description": description });
        Rendered {
            status: self.status(),
            headers,
            body: body.to_string(),
        }
    }

    /// The body's `error` and `error_description`; a challenge repeats them.
    fn error(&self) -> (&'static str, &str) {
        match self {
            Rejection::BadPath(e) => ("invalid_request", e.describe()),
            Rejection::NotFound => ("not_found", "no route for this path"),
            Rejection::MethodNotAllowed { .. } => (
                "method_not_allowed",
                "the route does not accept this method",
            ),
            Rejection::InvalidRequest { description } => ("invalid_request", description),
            Rejection::RequiredHeader { description } => ("invalid_request", description),
            Rejection::RateLimited { description, .. } => ("rate_limit_exceeded", description),
            Rejection::NoCredentials => ("invalid_request", "an access token is required"),
            Rejection::InvalidToken { description, .. } => ("invalid_token", description),
            Rejection::HeadersTooLarge => (
                "request_header_fields_too_large",
                "the request headers are too large",
            ),
            Rejection::InsufficientScope { description, .. } => ("insufficient_scope", description),
            Rejection::StepUpRequired { description, .. } => {
                ("insufficient_user_authentication", description)
            }
            Rejection::RequestSignature { description, .. } => ("invalid_request", description),
            Rejection::BodyTooLarge => ("invalid_request", "the request body is too large"),
            Rejection::BodyNotJson => (
                "invalid_request",
                "the request body must be application/json",
            ),
            Rejection::BodyMalformed => ("invalid_request", "the request body could not be read"),
            Rejection::UnsupportedTransferCoding => (
                "invalid_request",
                "only the chunked transfer coding is accepted",
            ),
            Rejection::BodyTimeout => {
                ("invalid_request", "the request body did not arrive in time")
            }
            Rejection::BodyJson(error) => ("invalid_request", error.describe()),
            Rejection::BodyEncoding(description) => ("invalid_request", description),
            Rejection::InvalidDpopProof(check) => ("invalid_dpop_proof", check.describe()),
            Rejection::UseDpopNonce { .. } => (
                "use_dpop_nonce",
                "Resource server requires nonce in DPoP proof",
            ),
            Rejection::DpopDowngrade => (
                "invalid_token",
                "the access token is DPoP-bound: use the DPoP scheme with a proof",
            ),
            Rejection::StateUnavailable => (
                "temporarily_unavailable",
                "the proof cannot be checked for replay right now",
            ),
            Rejection::ReplayStoreFull => (
                "temporarily_unavailable",
                "the proof cannot be recorded right now: the replay store is full",
            ),
            Rejection::ReplayShareExhausted { .. } => (
                "temporarily_unavailable",
                "this DPoP key has used its share of proofs for now",
            ),
            Rejection::AuthorizationServerUnavailable => (
                "temporarily_unavailable",
                "the access token cannot be checked right now",
            ),
            Rejection::UpstreamFailed => ("bad_gateway", "the upstream service failed"),
            Rejection::UpstreamTimeout => ("gateway_timeout", "the upstream service timed out"),
            Rejection::EvidenceUnavailable => (
                "temporarily_unavailable",
                "the request cannot be recorded right now",
            ),
            Rejection::EvidenceFailed => (
                "bad_gateway",
                "the upstream answered, but its response could not be signed or recorded",
            ),
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3, RFC 9449 §7.1), for the refusals that are
    /// about the credential.
    fn challenge(
        &self,
        profile: &Profile,
        metadata: Option<&str>,
        error: &str,
        description: &str,
    ) -> Option<String> {
        let of_scheme = |scheme: Scheme| {
            challenges(profile, Some(scheme), Some((error, description)), metadata)
        };
        let with_metadata = |mut challenge: String| {
            if let Some(url) = metadata {
                challenge.push_str(&format!(", resource_metadata=\"{}\"", quoted(url)));
            }
            challenge
        };
        Some(match self {
            Rejection::InvalidRequest { .. } => {
                challenges(profile, None, Some((error, description)), metadata)
            }
            Rejection::NoCredentials => challenges(profile, None, None, metadata),
            Rejection::InvalidToken { scheme, .. }
            | Rejection::InsufficientScope { scheme, .. }
            | Rejection::RequestSignature { scheme, .. } => of_scheme(*scheme),
            Rejection::InvalidDpopProof(_) => of_scheme(Scheme::Dpop),
            Rejection::StepUpRequired {
                scheme,
                acr_values,
                max_age,
                ..
            } => {
                let mut challenge =
                    challenges(profile, Some(*scheme), Some((error, description)), None);
                if !acr_values.is_empty() {
                    challenge.push_str(&format!(
                        ", acr_values=\"{}\"",
                        quoted(&acr_values.join(" "))
                    ));
                }
                if let Some(max_age) = max_age {
                    challenge.push_str(&format!(", max_age=\"{max_age}\""));
                }
                with_metadata(challenge)
            }
            // As in the RFC 9449 §9 example: the nonce challenge carries no algs.
            Rejection::UseDpopNonce { .. } => with_metadata(format!(
                "DPoP error=\"{error}\", error_description=\"{description}\""
            )),
            // The error goes with Bearer, the scheme used; DPoP is offered as the way out.
            Rejection::DpopDowngrade => format!(
                "{}, {}",
                of_scheme(Scheme::Bearer),
                challenges(profile, Some(Scheme::Dpop), None, metadata)
            ),
            _ => return None,
        })
    }

    /// Seconds after which the same request may succeed, for refusals that are temporary.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Rejection::StateUnavailable | Rejection::ReplayStoreFull => Some(RETRY_STATE),
            Rejection::ReplayShareExhausted { retry_after }
            | Rejection::RateLimited { retry_after, .. } => Some(*retry_after),
            Rejection::AuthorizationServerUnavailable => Some(RETRY_AUTHORIZATION_SERVER),
            Rejection::EvidenceUnavailable => Some(RETRY_EVIDENCE),
            _ => None,
        }
    }
}

/// The `WWW-Authenticate` value. With `only`, just that scheme's challenge carries the error
/// (RFC 9449 §7.2); without it, every scheme the profile accepts is offered.
fn challenges(
    profile: &Profile,
    only: Option<Scheme>,
    error: Option<(&str, &str)>,
    metadata: Option<&str>,
) -> String {
    let offered: &[Scheme] = match profile.kind {
        ProfileKind::Fapi2 => &[Scheme::Bearer, Scheme::Dpop],
        ProfileKind::Fapi1Advanced => &[Scheme::Bearer],
    };
    let schemes: Vec<Scheme> = match only {
        Some(scheme) => vec![scheme],
        None => offered.to_vec(),
    };
    let rendered: Vec<String> = schemes
        .into_iter()
        .map(|scheme| {
            let mut params = Vec::new();
            if let Some((code, description)) = error {
                params.push(format!("error=\"{code}\""));
                params.push(format!("error_description=\"{}\"", quoted(description)));
            }
            if scheme == Scheme::Dpop {
                params.push(format!("algs=\"{}\"", profile.algs_parameter()));
            }
            if let Some(url) = metadata {
                params.push(format!("resource_metadata=\"{}\"", quoted(url)));
            }
            if params.is_empty() {
                scheme.name().to_string()
            } else {
                format!("{} {}", scheme.name(), params.join(", "))
            }
        })
        .collect();
    rendered.join(", ")
}

/// Quoted-string content: no CR/LF/TAB, quotes and backslashes escaped.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_that_cannot_sign_withholds_the_response_with_503() {
        use crate::signing::signer::SignError;
        let key = Rejection::from(SignError::Key("the HSM did not sign".into()));
        assert_eq!((key.status(), key.reason()), (502, "evidence_failed"));
        let rendered = key.render(&profile(ProfileKind::Fapi2), None);
        assert!(rendered
            .headers
            .iter()
            .all(|(name, _)| *name != "retry-after"));
        let body = Rejection::from(SignError::Body("not JSON".into()));
        assert_eq!((body.status(), body.reason()), (502, "upstream_failed"));
    }

    use super::*;
    use crate::policy::Alg;
    use std::time::Duration;

    fn profile(kind: ProfileKind) -> Profile {
        Profile {
            kind,
            algs: vec![Alg::ES256, Alg::PS256, Alg::EdDSA],
            max_clock_skew: Duration::from_secs(10),
            dpop_proof_max_age: Duration::from_secs(60),
            dpop_nonce_required: false,
            dpop_nonce_secret_file: None,
            request_signature_max_age: Duration::from_secs(60),
            interaction_id: true,
        }
    }

    fn challenge(rendered: &Rendered) -> &str {
        rendered
            .headers
            .iter()
            .find(|(name, _)| *name == "www-authenticate")
            .map(|(_, value)| value.as_str())
            .unwrap()
    }

    #[test]
    fn bearer_3_2_no_credentials_offers_both_schemes_without_error() {
        let rendered = Rejection::NoCredentials.render(&profile(ProfileKind::Fapi2), None);
        assert_eq!(rendered.status, 401);
        assert_eq!(
            challenge(&rendered),
            "Bearer, DPoP algs=\"ES256 PS256 EdDSA\""
        );
        let rendered = Rejection::NoCredentials.render(&profile(ProfileKind::Fapi1Advanced), None);
        assert_eq!(challenge(&rendered), "Bearer");
    }

    #[test]
    fn dpop_7_2_2_ambiguous_request_errors_in_both_challenges() {
        let rendered = Rejection::InvalidRequest {
            description: "more than one Authorization header",
        }
        .render(&profile(ProfileKind::Fapi2), None);
        assert_eq!(rendered.status, 400);
        assert_eq!(
            challenge(&rendered),
            "Bearer error=\"invalid_request\", error_description=\"more than one Authorization header\", \
             DPoP error=\"invalid_request\", error_description=\"more than one Authorization header\", algs=\"ES256 PS256 EdDSA\""
        );
    }

    #[test]
    fn jwt_4_7_invalid_token_uses_the_scheme_of_the_request() {
        let rendered = Rejection::InvalidToken {
            scheme: Scheme::Dpop,
            description: "Invalid DPoP key binding",
        }
        .render(&profile(ProfileKind::Fapi2), None);
        assert_eq!(rendered.status, 401);
        assert_eq!(
            challenge(&rendered),
            "DPoP error=\"invalid_token\", error_description=\"Invalid DPoP key binding\", algs=\"ES256 PS256 EdDSA\""
        );
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let rendered = Rejection::MethodNotAllowed {
            allow: vec![Method::GET, Method::POST],
        }
        .render(&profile(ProfileKind::Fapi2), None);
        assert_eq!(rendered.status, 405);
        assert!(rendered
            .headers
            .contains(&("allow", "GET, POST".to_string())));
    }

    #[test]
    fn descriptions_cannot_break_the_header() {
        assert_eq!(quoted("a\"b\\c\r\nd"), "a\\\"b\\\\cd");
    }
}
