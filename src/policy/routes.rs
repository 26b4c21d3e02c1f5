//! The route table: method plus path template to exactly one route. Where two templates match
//! one path, one must dominate the other (its literals where the other has literals, and more)
//! and it wins, as OpenAPI orders concrete paths before templated ones; crossed templates, and
//! two routes of the same shape sharing a method, are refused at load time. Matching never
//! depends on declaration order.

use super::consent::{RouteRule, ScopePattern};
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
    /// The route's own `match` rules, each comparing two operands.
    pub rules: Vec<RouteRule>,
    pub consent_scope: Option<ScopePattern>,
    /// Each must be sent exactly once (400 otherwise).
    pub require_headers: Vec<http::HeaderName>,
}

impl Route {
    /// Every operand of the route's rules and requirements.
    pub fn operands(&self) -> impl Iterator<Item = &super::rar::Operand> {
        self.rules.iter().flat_map(|r| [&r.left, &r.right]).chain(
            self.authorization_details
                .iter()
                .flat_map(|d| d.rules.iter().map(|r| &r.operand)),
        )
    }

    /// Every request header this route's decision reads: `require_headers` and the
    /// `{header.NAME}` operands. The upstream must receive exactly these.
    pub fn judged_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        let of_rules = self.operands().filter_map(|operand| match operand {
            super::rar::Operand::Header(name) => Some(name),
            _ => None,
        });
        self.require_headers.iter().chain(of_rules)
    }

    /// Whether a `match` rule reads the JSON request body.
    pub fn reads_body(&self) -> bool {
        self.authorization_details.iter().any(|d| d.reads_body())
            || self
                .rules
                .iter()
                .any(|r| r.left.is_body() || r.right.is_body())
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
        // The most specific template that matches decides the resource; then the method
        // chooses among the routes of that very template (or 405 with theirs).
        let mut best: Option<&PathTemplate> = None;
        let mut found = None;
        let mut allow: Vec<Method> = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            let Some(params) = route.template.captures(&path) else {
                continue;
            };
            match best.map(|b| route.template.specificity(b)) {
                Some(std::cmp::Ordering::Less) => continue,
                Some(std::cmp::Ordering::Greater) | None => {
                    best = Some(&route.template);
                    found = None;
                    allow.clear();
                }
                Some(std::cmp::Ordering::Equal) => {}
            }
            if route.methods.contains(method) {
                found = Some((index, params));
            }
            allow.extend(route.methods.iter().cloned());
        }
        if let Some((route, params)) = found {
            return RouteMatch::Found { route, params };
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

/// Two routes conflict when their templates cross (some path matches both and neither is
/// more specific: refused whatever the methods), or match the same paths and share a method.
pub(crate) fn conflicts(a: &Route, b: &Route) -> bool {
    let (x, y) = (&a.template, &b.template);
    let crossed = x.overlaps(y) && !x.same_shape(y) && !x.dominates(y) && !y.dominates(x);
    crossed || (a.methods.iter().any(|m| b.methods.contains(m)) && x.same_shape(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn upstream() -> Arc<UpstreamPolicy> {
        Arc::new(UpstreamPolicy {
            id: "core".into(),
            addrs: vec!["127.0.0.1:9000".parse().unwrap()],
            targets: vec!["127.0.0.1:9000".into()],
            health: Default::default(),
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
            rules: vec![],
            consent_scope: None,
            require_headers: vec![],
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
    fn routes_of_one_shape_conflict_on_a_shared_method() {
        let a = route("a", &[Method::GET], "/accounts/{id}");
        let b = route("b", &[Method::GET, Method::POST], "/accounts/{account}");
        let c = route("c", &[Method::POST], "/accounts/{id}");
        let d = route("d", &[Method::GET], "/accounts/summary");
        assert!(conflicts(&a, &b));
        assert!(!conflicts(&a, &c));
        assert!(!conflicts(&a, &d), "ordered by specificity");
        let crossed_a = route("x", &[Method::GET], "/a/{x}/{y}");
        let crossed_b = route("y", &[Method::POST], "/{p}/b/c");
        assert!(
            conflicts(&crossed_a, &crossed_b),
            "crossed: refused whatever the methods"
        );
    }

    /// CDR's GET /banking/accounts/balances beside GET /banking/accounts/{accountId}: the
    /// literal wins whatever the declaration order, and its methods alone decide a 405.
    #[test]
    fn the_more_specific_template_decides_whatever_the_order() {
        let detail = route("detail", &[Method::GET, Method::DELETE], "/accounts/{id}");
        let bulk = route("bulk", &[Method::GET], "/accounts/balances");
        for routes in [
            vec![detail, bulk],
            vec![
                route("bulk", &[Method::GET], "/accounts/balances"),
                route("detail", &[Method::GET, Method::DELETE], "/accounts/{id}"),
            ],
        ] {
            let bulk_index = routes.iter().position(|r| r.id == "bulk").unwrap();
            let detail_index = routes.iter().position(|r| r.id == "detail").unwrap();
            let table = RouteTable::new(routes);
            assert_eq!(
                table.find(&Method::GET, "/accounts/balances"),
                RouteMatch::Found {
                    route: bulk_index,
                    params: vec![]
                }
            );
            assert_eq!(
                table.find(&Method::GET, "/accounts/a1"),
                RouteMatch::Found {
                    route: detail_index,
                    params: vec![("id".into(), "a1".into())]
                }
            );
            assert_eq!(
                table.find(&Method::DELETE, "/accounts/balances"),
                RouteMatch::MethodNotAllowed {
                    allow: vec![Method::GET]
                },
                "the resource is the bulk one: DELETE does not fall through to detail"
            );
        }
    }
}
