//! `Enforcer::admit`: the one door every request passes. The steps read like the pipeline of
//! the architecture: route, credential, token, binding, request signature, authorization.
//! Request signatures (HS2) are not verified yet: routes that ask for them admit nothing.

use crate::binding::Binder;
use crate::credential::{self, Credential};
use crate::grant::Grant;
use crate::policy::authorize::{authorize, Denial, RequestView};
use crate::policy::routes::{AuthMode, Route};
use crate::policy::{Policy, RouteMatch};
use crate::reject::Rejection;
use crate::request::RequestFacts;
use crate::telemetry::Metrics;
use crate::token::{TokenError, Tokens};
use std::sync::Arc;

/// What the gateway runs on: the compiled policy and the runtime built from it (key sets,
/// AS clients, caches). Replaced whole on reload.
pub struct Engine {
    pub policy: Policy,
    pub tokens: Tokens,
    pub binder: Binder,
}

impl Engine {
    pub fn new(policy: Policy, metrics: Arc<Metrics>) -> Result<Self, String> {
        let tokens = Tokens::new(&policy, metrics)?;
        let binder = Binder::new(&policy)?;
        Ok(Engine {
            policy,
            tokens,
            binder,
        })
    }
}

/// A request the gateway lets through, with everything later phases need.
#[derive(Debug)]
pub struct Admission {
    /// Index of the route in the policy the request was admitted under.
    pub route: usize,
    pub params: Vec<(String, String)>,
    pub grant: Option<Arc<Grant>>,
    /// A fresh `DPoP-Nonce` for the response, when the nonce slot turned.
    pub dpop_nonce: Option<String>,
    /// The authorization detail that granted the request, for the upstream.
    pub granted_detail: Option<serde_json::Value>,
}

/// A refused request: why, and on which route (for metrics), if one matched.
#[derive(Debug)]
pub struct Refused {
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

pub struct Enforcer<'e> {
    engine: &'e Engine,
}

impl<'e> Enforcer<'e> {
    pub fn new(engine: &'e Engine) -> Self {
        Enforcer { engine }
    }

    /// Admits or rejects one request.
    pub async fn admit(&self, facts: &RequestFacts<'_>) -> Result<Admission, Refused> {
        let policy = &self.engine.policy;
        let (route_index, params) = match policy.routes.find(facts.method, facts.path) {
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
        if route.auth == AuthMode::None {
            return Ok(Admission {
                route: route_index,
                params,
                grant: None,
                dpop_nonce: None,
                granted_detail: None,
            });
        }
        let credential = credential::extract(facts.headers, facts.query)
            .map_err(on_route)?
            .ok_or_else(|| on_route(Rejection::NoCredentials))?;
        let grant = self
            .engine
            .tokens
            .validate(&credential.token, facts.now)
            .await
            .map_err(|e| on_route(token_rejection(&credential, e)))?;
        let bound = self
            .engine
            .binder
            .bind(policy, &credential, &grant, facts)
            .await
            .map_err(on_route)?;
        if route.verify_request_signature {
            return Err(on_route(Rejection::RequestSignature {
                scheme: credential.scheme,
                description: "HTTP message signatures cannot be verified by this gateway yet",
            }));
        }
        let url = policy.listener.public_url.join(facts.path);
        let view = RequestView {
            url: &url,
            params: &params,
            body: facts.body,
            now: facts.now,
        };
        let granted_detail = authorize(route, &grant, &view)
            .map_err(|denial| on_route(denial_rejection(route, &credential, denial)))?
            .cloned();
        Ok(Admission {
            route: route_index,
            params,
            grant: Some(grant),
            dpop_nonce: bound.fresh_nonce,
            granted_detail,
        })
    }
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
