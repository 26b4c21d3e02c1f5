//! The route table: method plus path template to exactly one route. Overlapping routes are
//! refused at load time, so matching never depends on declaration order.

use super::path::{NormalPath, PathError, PathTemplate};
use super::rar::DetailRequirement;
use super::{ResponseFormat, UpstreamPolicy};
use http::Method;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A sender-constrained access token is required.
    Token,
    /// A public route: no token is asked for, nothing about a caller is forwarded.
    None,
}

#[derive(Debug)]
pub struct Route {
    pub id: String,
    pub methods: Vec<Method>,
    pub template: PathTemplate,
    pub upstream: Arc<UpstreamPolicy>,
    pub auth: AuthMode,
    pub scopes: Vec<String>,
    pub authorization_details: Vec<DetailRequirement>,
    pub sign_response: bool,
    pub response_format: Option<ResponseFormat>,
    pub verify_request_signature: bool,
    /// Whether the client's `Authorization` header reaches the upstream.
    pub forward_token: bool,
    pub acr_values: Vec<String>,
    pub max_auth_age: Option<Duration>,
}

impl Route {
    /// Whether a `match` rule reads the JSON request body.
    pub fn reads_body(&self) -> bool {
        self.authorization_details.iter().any(|d| d.reads_body())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch {
    Found {
        route: usize,
        params: Vec<(String, String)>,
    },
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
    BadPath(PathError),
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Routes must already be checked for overlap (`config::compile` does it).
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable { routes }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// `raw_path` is the path exactly as received, without the query.
    pub fn find(&self, method: &Method, raw_path: &str) -> RouteMatch {
        let path = match NormalPath::parse(raw_path) {
            Ok(path) => path,
            Err(error) => return RouteMatch::BadPath(error),
        };
        let mut allow: Vec<Method> = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if let Some(params) = route.template.captures(&path) {
                if route.methods.contains(method) {
                    return RouteMatch::Found {
                        route: index,
                        params,
                    };
                }
                allow.extend(route.methods.iter().cloned());
            }
        }
        if allow.is_empty() {
            RouteMatch::NotFound
        } else {
            allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            allow.dedup();
            RouteMatch::MethodNotAllowed { allow }
        }
    }
}

/// Two routes conflict when they share a method and some path matches both templates.
pub(crate) fn conflicts(a: &Route, b: &Route) -> bool {
    a.methods.iter().any(|m| b.methods.contains(m)) && a.template.overlaps(&b.template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn upstream() -> Arc<UpstreamPolicy> {
        Arc::new(UpstreamPolicy {
            id: "core".into(),
            addrs: vec!["127.0.0.1:9000".parse().unwrap()],
            tls: false,
            sni: String::new(),
            ca: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            host: None,
        })
    }

    fn route(id: &str, methods: &[Method], path: &str) -> Route {
        Route {
            id: id.into(),
            methods: methods.to_vec(),
            template: PathTemplate::parse(path).unwrap(),
            upstream: upstream(),
            auth: AuthMode::Token,
            scopes: vec![],
            authorization_details: vec![],
            sign_response: false,
            response_format: None,
            verify_request_signature: false,
            forward_token: false,
            acr_values: vec![],
            max_auth_age: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route("accounts", &[Method::GET], "/accounts"),
            route(
                "balances",
                &[Method::GET],
                "/accounts/{account_id}/balances",
            ),
            route("pay", &[Method::POST], "/payments"),
            route(
                "pay-status",
                &[Method::GET, Method::DELETE],
                "/payments/{id}",
            ),
        ])
    }

    #[test]
    fn method_and_template_select_one_route() {
        assert_eq!(
            table().find(&Method::GET, "/accounts/a1/balances"),
            RouteMatch::Found {
                route: 1,
                params: vec![("account_id".into(), "a1".into())]
            }
        );
        assert_eq!(
            table().find(&Method::GET, "/accounts/a%201/balances"),
            RouteMatch::Found {
                route: 1,
                params: vec![("account_id".into(), "a 1".into())]
            }
        );
    }

    #[test]
    fn unknown_path_is_not_found_and_wrong_method_lists_allow() {
        assert_eq!(table().find(&Method::GET, "/loans"), RouteMatch::NotFound);
        assert_eq!(
            table().find(&Method::GET, "/accounts/"),
            RouteMatch::NotFound
        );
        assert_eq!(
            table().find(&Method::PUT, "/payments/7"),
            RouteMatch::MethodNotAllowed {
                allow: vec![Method::DELETE, Method::GET]
            }
        );
        let odd = Method::from_bytes(b"FROB").unwrap();
        assert_eq!(
            table().find(&odd, "/payments"),
            RouteMatch::MethodNotAllowed {
                allow: vec![Method::POST]
            }
        );
    }

    #[test]
    fn traversal_never_reaches_another_route() {
        for raw in [
            "/accounts/../payments",
            "/accounts/%2e%2e/payments",
            "//payments",
            "/accounts%2Fx/balances",
        ] {
            assert!(
                matches!(table().find(&Method::GET, raw), RouteMatch::BadPath(_)),
                "{raw}"
            );
        }
    }

    #[test]
    fn overlapping_routes_conflict() {
        let a = route("a", &[Method::GET], "/accounts/{id}");
        let b = route("b", &[Method::GET, Method::POST], "/accounts/summary");
        let c = route("c", &[Method::POST], "/accounts/{id}");
        assert!(conflicts(&a, &b));
        assert!(!conflicts(&a, &c));
    }
}
