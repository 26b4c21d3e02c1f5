//! `Enforcer`: the one door every request passes. The steps read like the pipeline of the
//! architecture: route, credential, token, binding (from the head), then the body's checks,
//! request signature and authorization at the moment of the decision.

use crate::audit::{AuditTrail, TrailError};
use crate::binding::{Binder, Bound, LocalState};
use crate::credential::{self, Credential};
use crate::grant::Grant;
use crate::limiter::{Caller, Limiter};
use crate::policy::authorize::{authorize, Denial, RequestView};
use crate::policy::routes::{AuthMode, Route};
use crate::policy::StateBackend;
use crate::policy::{Policy, RouteMatch};
use crate::reject::Rejection;
use crate::request::RequestFacts;
use crate::signing::base::MessageView;
use crate::signing::httpsig::{verify_request, SignedRequest, VerifiedSignature};
use crate::signing::signer::ResponseSigner;
use crate::startup::StartError;
use crate::state::Redis;
use crate::telemetry::{Metrics, RouteSeries};
use crate::token::jwks::KeySet;
use crate::token::{TokenError, Tokens};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often client keys from a URL are refreshed.
const CLIENT_KEYS_REFRESH: Duration = Duration::from_secs(300);

/// What the gateway runs on: the compiled policy and the runtime built from it (key sets,
/// AS clients, caches). Replaced whole on reload.
pub struct Engine {
    pub policy: Policy,
    pub tokens: Tokens,
    pub binder: Binder,
    /// Keys of clients that sign requests, by client_id.
    pub clients: HashMap<String, Arc<KeySet>>,
    pub signer: Option<ResponseSigner>,
    pub audit: Option<Arc<AuditTrail>>,
    /// Shared state for `[state] backend = "redis"`.
    pub redis: Option<Arc<Redis>>,
    /// `[[rate_limit]]`, with its cells (a reload starts them afresh).
    pub(crate) limiter: Limiter,
    /// Clients named in `[[client]]` or a limit's `clients`: the only `client` label values.
    pub(crate) named_clients: std::collections::HashSet<String>,
    metrics: Arc<Metrics>,
    /// The RFC 9728 protected resource metadata document.
    pub resource_metadata: String,
    /// Latency series by route index, and for requests that matched no route.
    pub series: Vec<RouteSeries>,
    pub unrouted: RouteSeries,
}

impl Engine {
    /// `local` is the per-process state reloads carry over (see [`LocalState`]).
    pub fn new(
        policy: Policy,
        metrics: Arc<Metrics>,
        local: &LocalState,
    ) -> Result<Self, StartError> {
        let redis = match &policy.state.backend {
            StateBackend::Memory => None,
            StateBackend::Redis(redis) => Some(Arc::new(Redis::new(redis)?)),
        };
        let tokens = Tokens::new(&policy, metrics.clone(), redis.clone())?;
        let binder = Binder::new(&policy, redis.clone(), local)?;
        let mut clients = HashMap::new();
        for client in &policy.clients {
            let label = format!("client:{}", client.client_id);
            let keys =
                KeySet::from_policy(&label, &client.jwks, CLIENT_KEYS_REFRESH, metrics.clone())
                    .map_err(|e| format!("client \"{}\": {e}", client.client_id))?;
            clients.insert(client.client_id.clone(), keys);
        }
        let signer = policy
            .response_signing
            .as_ref()
            .map(ResponseSigner::new)
            .transpose()?;
        let audit = match &policy.audit {
            Some(audit) => local
                .audit
                .trail_for(
                    audit,
                    signer
                        .as_ref()
                        .map(|signer| crate::audit::CheckpointKey::new(signer.active_key())),
                    &metrics,
                )
                .map_err(|e| match e {
                    TrailError::Settings(e) => StartError::Configuration(e),
                    TrailError::Open(e) => StartError::Unavailable(e),
                })?,
            None => None,
        };
        let resource_metadata = resource_metadata(&policy).to_string();
        let series = policy
            .routes
            .iter()
            .map(|r| RouteSeries::new(&r.id))
            .collect();
        let named_clients: std::collections::HashSet<String> = policy
            .clients
            .iter()
            .map(|c| c.client_id.clone())
            .chain(
                policy
                    .rate_limits
                    .iter()
                    .flat_map(|l| l.clients.keys().cloned()),
            )
            .collect();
        let limiter = Limiter::new(&policy, redis.clone(), named_clients.clone());
        Ok(Engine {
            limiter,
            named_clients,
            metrics,
            series,
            unrouted: RouteSeries::new("none"),
            resource_metadata,
            policy,
            tokens,
            binder,
            clients,
            signer,
            audit,
            redis,
        })
    }
}

/// RFC 9728 §2: what a client needs to know to get a token for this resource server.
fn resource_metadata(policy: &Policy) -> serde_json::Value {
    let resource = policy.listener.public_url.resource();
    let mut types: Vec<&str> = policy
        .routes
        .iter()
        .flat_map(|r| r.authorization_details.iter().map(|d| d.kind.as_str()))
        .collect();
    types.sort_unstable();
    types.dedup();
    let mut document = serde_json::json!({
        "resource": resource,
        "authorization_servers": policy.issuers.iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "tls_client_certificate_bound_access_tokens": true,
        "dpop_bound_access_tokens_required": false,
        "authorization_details_types_supported": types,
    });
    if policy.profile.kind == crate::policy::ProfileKind::Fapi2 {
        document["dpop_signing_alg_values_supported"] = serde_json::json!(policy
            .profile
            .algs
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>());
    }
    if let Some(signing) = &policy.response_signing {
        document["jwks_uri"] =
            serde_json::json!(policy.listener.public_url.join(&signing.jwks_path));
    }
    document
}

/// A request the gateway lets through, with everything later phases need.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Index of the route in the policy the request was admitted under.
    pub route: usize,
    pub grant: Option<Arc<Grant>>,
    /// A fresh `DPoP-Nonce` for the response, when the nonce period turned.
    pub dpop_nonce: Option<String>,
    /// The authorization detail that granted the request, for the upstream.
    pub granted_detail: Option<serde_json::Value>,
    /// The verified `fapi-2-request` signature (HS2-RESP-RS-3 binds to it).
    pub request_signature: Option<VerifiedSignature>,
}

/// A refused request: why, and on which route (for metrics), if one matched.
#[derive(Debug)]
pub(crate) struct Refused {
    pub route: Option<usize>,
    pub rejection: Rejection,
}

impl Refused {
    fn before_routing(rejection: Rejection) -> Self {
        Refused {
            route: None,
            rejection,
        }
    }
}

/// A request whose head passed: route, credential, token and binding were judged from its
/// method, target and header fields. Only [`Enforcer::authenticate`] makes one, and only
/// [`Enforcer::conclude`] turns it into an [`Admission`].
#[derive(Debug)]
pub(crate) struct Authenticated {
    /// Index of the matched route.
    pub route: usize,
    params: Vec<(String, String)>,
    /// `None` on `auth = "none"` routes.
    token: Option<TokenCheck>,
}

#[derive(Debug)]
struct TokenCheck {
    credential: Credential,
    grant: Arc<Grant>,
    bound: Bound,
    judged_at: u64,
}

/// The one door every request passes, in two halves: [`Enforcer::authenticate`] judges the
/// head before any body is read (an unauthenticated request never has its body buffered);
/// [`Enforcer::conclude`] judges what needs the body (a form token, the request signature's
/// digest, `{body/...}` rules) and everything again at the moment of the decision.
pub(crate) struct Enforcer<'e> {
    engine: &'e Engine,
}

impl<'e> Enforcer<'e> {
    pub(crate) fn new(engine: &'e Engine) -> Self {
        Enforcer { engine }
    }

    /// Routes the request and judges its credential, token and binding from the head
    /// (`head.body` and `head.raw_body` are not read).
    pub(crate) async fn authenticate(
        &self,
        head: &RequestFacts<'_>,
    ) -> Result<Authenticated, Refused> {
        let policy = &self.engine.policy;
        let (route_index, params) = match policy.routes.find(head.method, head.path) {
            RouteMatch::Found { route, params } => (route, params),
            RouteMatch::NotFound => return Err(Refused::before_routing(Rejection::NotFound)),
            RouteMatch::BadPath(error) => {
                return Err(Refused::before_routing(Rejection::BadPath(error)))
            }
            RouteMatch::MethodNotAllowed { allow } => {
                return Err(Refused::before_routing(Rejection::MethodNotAllowed {
                    allow,
                }))
            }
        };
        let route = policy
            .routes
            .get(route_index)
            .ok_or(Refused::before_routing(Rejection::NotFound))?;
        let on_route = |rejection| Refused {
            route: Some(route_index),
            rejection,
        };
        // What the connection shows (a certificate, the peer) is counted before any credential
        // is looked at; the client, once its token is known.
        let connection = Caller {
            certificate: head.client_cert.map(|c| &c.x5t_s256),
            peer: head.peer,
            ..Caller::default()
        };
        self.engine
            .limiter
            .admit(route_index, &connection, &self.engine.metrics)
            .await
            .map_err(on_route)?;
        if route.auth == AuthMode::None {
            required_headers(route, head.headers).map_err(on_route)?;
            return Ok(Authenticated {
                route: route_index,
                params,
                token: None,
            });
        }
        let credential = credential::extract(head.headers, head.query)
            .map_err(|e| on_route(e.into()))?
            .ok_or_else(|| on_route(Rejection::NoCredentials))?;
        // A DPoP request's proof is checked before its token: without a valid proof for this
        // token, nothing reaches the AS.
        let proof = self
            .engine
            .binder
            .proof(policy, &credential, head)
            .map_err(|e| on_route(e.into()))?;
        // The stages below hold large futures (AS calls, key fetches): boxed, they are built
        // only by requests that reach them, and do not inflate every request's state.
        let grant = Box::pin(self.engine.tokens.validate(&credential, head.now))
            .await
            .map_err(|e| on_route(token_rejection(&credential, e)))?;
        let bound = Box::pin(
            self.engine
                .binder
                .bind(policy, &credential, &grant, proof, head),
        )
        .await
        .map_err(|e| on_route(e.into()))?;
        let client = Caller {
            client_id: grant.client_id.as_deref(),
            issuer: Some(grant.issuer.as_str()),
            bound_to: grant.cnf.jkt.as_deref().or(grant.cnf.x5t_s256.as_deref()),
            ..Caller::default()
        };
        self.engine
            .limiter
            .admit(route_index, &client, &self.engine.metrics)
            .await
            .map_err(on_route)?;
        // After the token: a caller without one learns nothing about the route's headers.
        required_headers(route, head.headers).map_err(on_route)?;
        Ok(Authenticated {
            route: route_index,
            params,
            token: Some(TokenCheck {
                credential,
                grant,
                bound,
                judged_at: head.now,
            }),
        })
    }

    /// Admits or rejects an authenticated request, `facts` now holding the body the route
    /// needs and the time of the decision.
    pub(crate) async fn conclude(
        &self,
        authenticated: Authenticated,
        facts: &RequestFacts<'_>,
    ) -> Result<Admission, Refused> {
        let policy = &self.engine.policy;
        let Authenticated {
            route: route_index,
            params,
            token,
        } = authenticated;
        let on_route = |rejection| Refused {
            route: Some(route_index),
            rejection,
        };
        let Some(TokenCheck {
            credential,
            grant,
            mut bound,
            judged_at,
        }) = token
        else {
            return Ok(Admission {
                route: route_index,
                grant: None,
                dpop_nonce: None,
                granted_detail: None,
                request_signature: None,
            });
        };
        let route = policy
            .routes
            .get(route_index)
            .ok_or(Refused::before_routing(Rejection::NotFound))?;
        let content_type = facts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        credential::refuse_form_token(facts.raw_body.filter(|_| credential::is_form(content_type)))
            .map_err(|e| on_route(e.into()))?;
        if facts.now != judged_at {
            self.engine
                .tokens
                .unexpired(&grant, facts.now)
                .map_err(|e| on_route(token_rejection(&credential, e)))?;
        }
        let request_signature = if route.verify_request_signature {
            Some(
                Box::pin(self.verify_signature(&credential, &grant, facts))
                    .await
                    .map_err(on_route)?,
            )
        } else {
            None
        };
        let url = policy.listener.public_url.join(facts.path);
        let view = RequestView {
            url: &url,
            params: &params,
            body: facts.body,
            headers: facts.headers,
            now: facts.now,
        };
        let granted_detail = authorize(route, &grant, &view)
            .map_err(|denial| on_route(denial_rejection(route, &credential, denial)))?
            .cloned();
        // Last: only an admitted request uses up its proof.
        Box::pin(self.engine.binder.record(&mut bound, facts.now))
            .await
            .map_err(|e| on_route(e.into()))?;
        Ok(Admission {
            route: route_index,
            grant: Some(grant),
            dpop_nonce: bound.fresh_nonce,
            granted_detail,
            request_signature,
        })
    }

    /// HS2-REQ-RS-1..8 with the keys registered for the token's client.
    async fn verify_signature(
        &self,
        credential: &Credential,
        grant: &Grant,
        facts: &RequestFacts<'_>,
    ) -> Result<VerifiedSignature, Rejection> {
        let refuse = |description| Rejection::RequestSignature {
            scheme: credential.scheme,
            description,
        };
        let keys = grant
            .client_id
            .as_deref()
            .and_then(|id| self.engine.clients.get(id))
            .ok_or(refuse("the client has no registered signing keys"))?;
        let policy = &self.engine.policy;
        let target_uri = policy
            .listener
            .public_url
            .target_uri(facts.path, facts.query);
        let request = SignedRequest {
            message: MessageView {
                method: Some(facts.method.as_str()),
                target_uri: Some(&target_uri),
                status: None,
                headers: facts.headers,
            },
            body: facts.raw_body,
            now: facts.now,
            max_age: policy.profile.request_signature_max_age.as_secs(),
            max_skew: policy.profile.max_clock_skew.as_secs(),
        };
        verify_request(&request, keys)
            .await
            .map_err(|error| match error {
                crate::signing::httpsig::RequestSigError::KeysUnavailable => {
                    Rejection::AuthorizationServerUnavailable
                }
                other => refuse(other.describe()),
            })
    }
}

/// `require_headers`: each exactly once (an idempotency key sent twice is two keys to the
/// upstream's readers). And every header the route judges reaches the upstream as judged: not
/// named by `Connection` (which would have it removed on the way) and not shadowed by an `_`
/// spelling (CGI, WSGI and Rack read `Consent_ID` as `Consent-ID`).
fn required_headers(route: &Route, headers: &http::HeaderMap) -> Result<(), Rejection> {
    let mut judged = route.judged_headers().peekable();
    if judged.peek().is_some() {
        // By bytes, as the connection reads it (a value that is not text still names fields).
        let nominates = |name: &http::HeaderName| {
            headers
                .get_all(http::header::CONNECTION)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .any(|token| {
                    token
                        .trim_ascii()
                        .eq_ignore_ascii_case(name.as_str().as_bytes())
                })
        };
        for name in judged {
            let description = if nominates(name) {
                format!("the Connection header names {name}, which this route judges")
            } else if headers.keys().any(|k| {
                k != name
                    && k.as_str().contains('_')
                    && k.as_str().replace('_', "-") == name.as_str()
            }) {
                format!("{name} is also sent spelled with _: send it once, with -")
            } else {
                continue;
            };
            return Err(Rejection::RequiredHeader { description });
        }
    }
    for name in &route.require_headers {
        let mut values = headers.get_all(name).iter();
        let description = match (values.next(), values.next()) {
            (Some(value), None) if !value.is_empty() => continue,
            (Some(_), None) => format!("the header {name} must not be empty"),
            (None, _) => format!("route {} requires the header {name}", route.id),
            (Some(_), Some(_)) => format!("the header {name} must be sent exactly once"),
        };
        return Err(Rejection::RequiredHeader { description });
    }
    Ok(())
}

fn denial_rejection(route: &Route, credential: &Credential, denial: Denial) -> Rejection {
    match denial {
        Denial::InsufficientScope(description) => Rejection::InsufficientScope {
            scheme: credential.scheme,
            description,
        },
        Denial::StepUp(description) => Rejection::StepUpRequired {
            scheme: credential.scheme,
            description,
            acr_values: route.acr_values.clone(),
            max_age: route.max_auth_age.map(|d| d.as_secs()),
        },
    }
}

fn token_rejection(credential: &Credential, error: TokenError) -> Rejection {
    match error {
        TokenError::Invalid(description) => Rejection::InvalidToken {
            scheme: credential.scheme,
            description,
        },
        TokenError::Unavailable(_) => Rejection::AuthorizationServerUnavailable,
    }
}
