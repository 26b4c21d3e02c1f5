//! Routes of the configuration: methods, path templates, upstreams, the token-only settings
//! and the RFC 9396 match rules, checked and compiled; overlapping routes refused.

use super::compile::{unique, Errors};
use super::compile_consent::{consent, consent_scope, Consent, Offered};
use super::model;
use super::units::parse_duration;
use crate::policy::path::PathTemplate;
use crate::policy::rar::{DetailRequirement, JsonPointer, Rule};
use crate::policy::routes::{conflicts, AuthMode, Route};
use crate::policy::{ResponseFormat, UpstreamPolicy};
use http::Method;
use std::collections::HashSet;
use std::sync::Arc;

pub(super) struct RouteContext<'a> {
    pub upstreams: &'a [Arc<UpstreamPolicy>],
    pub signing: bool,
    pub clients: bool,
    /// The `[forward]` headers: the gateway removes the client's and sets its own.
    pub forwarded: Vec<http::HeaderName>,
}

const KNOWN_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

pub(super) fn routes(
    routes: &[model::Route],
    context: &RouteContext<'_>,
    errors: &mut Errors,
) -> Vec<Route> {
    let mut ids = HashSet::new();
    let mut compiled: Vec<(usize, Route)> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let key = format!("route[{i}]");
        unique(errors, &mut ids, format!("{key}.id"), &route.id);
        if let Some(compiled_route) = one_route(route, &key, context, errors) {
            for (j, earlier) in &compiled {
                if conflicts(earlier, &compiled_route) {
                    errors.add(
                        format!("{key}.path"),
                        format!(
                            "route \"{}\" ({}) could match the same requests as route[{j}] \"{}\" ({}); a request must match at most one route",
                            compiled_route.id, compiled_route.template, earlier.id, earlier.template
                        ),
                    );
                }
            }
            compiled.push((i, compiled_route));
        }
    }
    compiled.into_iter().map(|(_, route)| route).collect()
}

fn one_route(
    route: &model::Route,
    key: &str,
    context: &RouteContext<'_>,
    errors: &mut Errors,
) -> Option<Route> {
    let template = errors.check(&format!("{key}.path"), PathTemplate::parse(&route.path));
    let methods = methods(route, key, errors);
    let upstream = context
        .upstreams
        .iter()
        .find(|u| u.id == route.upstream)
        .cloned();
    if upstream.is_none() {
        errors.add(
            format!("{key}.upstream"),
            format!(
                "route \"{}\": upstream \"{}\" is not defined",
                route.id, route.upstream
            ),
        );
    }
    let auth = auth_mode(route, key, errors);
    let (sign_response, response_format) = response_signing(route, key, context, errors);
    let verify_request_signature = route.verify_request_signature.unwrap_or(false);
    if verify_request_signature && !context.clients {
        errors.add(
            format!("{key}.verify_request_signature"),
            "needs at least one [[client]] with the keys of the clients that sign",
        );
    }
    let acr_values = route.acr_values.clone().unwrap_or_default();
    if route.acr_values.is_some() && acr_values.is_empty() {
        errors.add(
            format!("{key}.acr_values"),
            "must list at least one value when set",
        );
    }
    let max_auth_age = route
        .max_auth_age
        .as_deref()
        .and_then(|text| errors.check(&format!("{key}.max_auth_age"), parse_duration(text)));
    let consent_scope = consent_scope(route, key, errors);
    let offered = Offered {
        route_id: &route.id,
        template: template.as_ref(),
        scope: consent_scope.as_ref(),
        methods: &methods,
        forwarded: &context.forwarded,
    };
    let details = details(route, key, &offered, errors);
    let Consent {
        rules,
        consent_scope,
        require_headers,
    } = consent(route, key, &offered, consent_scope.clone(), errors);
    Some(Route {
        id: route.id.clone(),
        methods,
        template: template?,
        upstream: upstream?,
        auth,
        scopes: route.scopes.clone(),
        authorization_details: details,
        sign_response,
        response_format,
        verify_request_signature,
        forward_token: route.forward_token.unwrap_or(false),
        acr_values,
        max_auth_age,
        rules,
        consent_scope,
        require_headers,
    })
}

/// `methods`: known, listed once, at least one.
fn methods(route: &model::Route, key: &str, errors: &mut Errors) -> Vec<Method> {
    let mut methods = Vec::new();
    if route.methods.is_empty() {
        errors.add(format!("{key}.methods"), "must list at least one method");
    }
    for (j, name) in route.methods.iter().enumerate() {
        match KNOWN_METHODS.iter().find(|m| m.as_str() == name) {
            Some(m) if methods.contains(m) => errors.add(
                format!("{key}.methods[{j}]"),
                format!("\"{name}\" is listed twice"),
            ),
            Some(m) => methods.push(m.clone()),
            None => errors.add(
                format!("{key}.methods[{j}]"),
                format!("\"{name}\" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            ),
        }
    }
    methods
}

/// `auth`, and the keys that only a route asking for a token may set.
fn auth_mode(route: &model::Route, key: &str, errors: &mut Errors) -> AuthMode {
    let auth = match route.auth.as_deref().unwrap_or("token") {
        "token" => AuthMode::Token,
        "none" => AuthMode::None,
        other => {
            errors.add(
                format!("{key}.auth"),
                format!("\"{other}\" is not one of \"token\", \"none\""),
            );
            AuthMode::Token
        }
    };
    if auth == AuthMode::None {
        let token_only = [
            ("scopes", !route.scopes.is_empty()),
            (
                "authorization_details",
                !route.authorization_details.is_empty(),
            ),
            (
                "verify_request_signature",
                route.verify_request_signature == Some(true),
            ),
            ("acr_values", route.acr_values.is_some()),
            ("max_auth_age", route.max_auth_age.is_some()),
            ("match", !route.rules.is_empty()),
            ("consent_scope", route.consent_scope.is_some()),
        ];
        for (name, set) in token_only {
            if set {
                errors.add(
                    format!("{key}.{name}"),
                    format!("route \"{}\" has auth = \"none\": it asks for no token, so {name} cannot apply", route.id),
                );
            }
        }
    }
    auth
}

/// `sign_response` and `response_format`, which need a `[response_signing]` section.
fn response_signing(
    route: &model::Route,
    key: &str,
    context: &RouteContext<'_>,
    errors: &mut Errors,
) -> (bool, Option<ResponseFormat>) {
    let sign_response = route.sign_response.unwrap_or(false);
    if sign_response && !context.signing {
        errors.add(
            format!("{key}.sign_response"),
            "needs a [response_signing] section",
        );
    }
    let response_format = route.response_format.as_deref().and_then(|name| {
        let format = ResponseFormat::parse(name);
        if format.is_none() {
            errors.add(
                format!("{key}.response_format"),
                ResponseFormat::unknown(name),
            );
        } else if !sign_response {
            errors.add(
                format!("{key}.response_format"),
                "needs sign_response = true",
            );
        }
        format
    });
    (sign_response, response_format)
}

/// `authorization_details`: each requirement compiled; a rule on the body needs a method that
/// carries one.
fn details(
    route: &model::Route,
    key: &str,
    offered: &Offered<'_>,
    errors: &mut Errors,
) -> Vec<DetailRequirement> {
    let mut details = Vec::new();
    for (j, requirement) in route.authorization_details.iter().enumerate() {
        let detail_key = format!("{key}.authorization_details[{j}]");
        if let Some(detail) = detail_requirement(requirement, &detail_key, offered, errors) {
            details.push(detail);
        }
    }
    details
}

fn detail_requirement(
    requirement: &model::DetailRequirement,
    key: &str,
    offered: &Offered<'_>,
    errors: &mut Errors,
) -> Option<DetailRequirement> {
    if requirement.kind.is_empty() {
        errors.add(format!("{key}.type"), "must not be empty");
    }
    let mut rules = Vec::new();
    for (pointer, comparisons) in &requirement.rules {
        let rule_key = format!("{key}.match.\"{pointer}\"");
        let field = errors.check(&rule_key, JsonPointer::parse(pointer));
        let compared = offered.comparison(comparisons, &rule_key, errors);
        if let (Some(field), Some((comparison, operand))) = (field, compared) {
            rules.push(Rule {
                field,
                comparison,
                operand,
            });
        }
    }
    Some(DetailRequirement {
        kind: requirement.kind.clone(),
        actions: requirement.actions.clone(),
        locations: requirement.locations.clone(),
        datatypes: requirement.datatypes.clone(),
        rules,
    })
}

pub(super) fn is_decimal(value: &serde_json::Value) -> bool {
    crate::policy::decimal::Decimal::from_json(value).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_plain_digits() {
        for good in ["100", "100.00", "-1.5", "0.1"] {
            assert!(is_decimal(&serde_json::json!(good)), "{good}");
        }
        for bad in ["1e3", "100.", ".5", "abc", ""] {
            assert!(!is_decimal(&serde_json::json!(bad)), "{bad}");
        }
    }
}
