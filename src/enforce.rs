//! `Enforcer::admit`: the one door every request passes. The steps read like the pipeline of
//! the architecture: route, credential, token, binding, request signature, authorization.
//! Stages that are not built yet admit nothing (fail closed).

use crate::credential::{self, Credential};
use crate::grant::Grant;
use crate::policy::routes::AuthMode;
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
}

impl Engine {
    pub fn new(policy: Policy, metrics: Arc<Metrics>) -> Result<Self, String> {
        let tokens = Tokens::new(&policy, metrics)?;
        Ok(Engine { policy, tokens })
    }
}

/// A request the gateway lets through, with everything later phases need.
#[derive(Debug)]
pub struct Admission {
    /// Index of the route in the policy the request was admitted under.
    pub route: usize,
    pub params: Vec<(String, String)>,
    pub grant: Option<Arc<Grant>>,
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
        Err(on_route(self.bind(&credential, &grant)))
    }

    /// The binding stage (RFC 9449 / RFC 8705) is not built yet: nothing is admitted.
    fn bind(&self, credential: &Credential, _grant: &Grant) -> Rejection {
        Rejection::InvalidToken {
            scheme: credential.scheme,
            description: "the token's sender constraint cannot be verified on this gateway",
        }
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
