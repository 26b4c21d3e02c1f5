//! `Enforcer::admit`: the one door every request passes. The steps read like the pipeline of
//! the architecture: route, credential, token, binding, request signature, authorization.
//! The token, binding, signature and authorization stages come with their own issues; until
//! then a route that needs a token admits nothing (fail closed).

use crate::credential::{self, Credential};
use crate::policy::routes::AuthMode;
use crate::policy::{Policy, RouteMatch};
use crate::reject::Rejection;
use crate::request::RequestFacts;

/// A request the gateway lets through, with everything later phases need.
#[derive(Debug)]
pub struct Admission {
    /// Index of the route in the policy the request was admitted under.
    pub route: usize,
    pub params: Vec<(String, String)>,
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

pub struct Enforcer<'p> {
    policy: &'p Policy,
}

impl<'p> Enforcer<'p> {
    pub fn new(policy: &'p Policy) -> Self {
        Enforcer { policy }
    }

    /// Admits or rejects one request.
    pub fn admit(&self, facts: &RequestFacts<'_>) -> Result<Admission, Refused> {
        let (route_index, params) = match self.policy.routes.find(facts.method, facts.path) {
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
        let route = self
            .policy
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
            });
        }
        let credential = credential::extract(facts.headers, facts.query)
            .map_err(on_route)?
            .ok_or_else(|| on_route(Rejection::NoCredentials))?;
        Err(on_route(self.validate_token(&credential)))
    }

    /// The token stage. No validator is wired in yet, so every token is refused.
    fn validate_token(&self, credential: &Credential) -> Rejection {
        Rejection::InvalidToken {
            scheme: credential.scheme,
            description: "access token validation is not available on this gateway",
        }
    }
}
