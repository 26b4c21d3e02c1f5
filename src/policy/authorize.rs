//! The authorization stage: does the grant cover *this* request? (SP2-RS-4, RAR-RS-1/2,
//! RFC 9396 §9, RFC 9470 step-up.)
//!
//! - Every `scopes` entry of the route must be granted.
//! - When the route lists `authorization_details`, at least one detail of the token must
//!   satisfy at least one requirement: same `type`; every listed action, location and datatype
//!   present in the detail; every `match` rule true. A detail that lists `locations` grants
//!   only requests whose URL is at or below one of them, on whole path segments. Details of
//!   other types grant nothing.
//! - A rule compares the detail's field (`key`, a JSON pointer) with its operand:
//!   `equals`, `contains` (the field is an array holding the operand), `at_least` /
//!   `at_most` (field >= / <= operand, as exact decimals). A missing field or operand makes the
//!   rule false. `equals` compares decimals exactly ("100.00" equals "100.0") when both sides
//!   are plain decimals and one of them is a JSON number or has a decimal point; otherwise it
//!   is exact JSON equality (so account "0123" never equals "123").
//! - `acr_values` / `max_auth_age`: the token's `acr` must be listed and `auth_time` recent.

use super::operands::{holds, holds_with, Equality, Sources};
use super::rar::{Comparison, DetailRequirement, Operand, Rule};
use super::routes::Route;
use crate::grant::Grant;
use serde_json::Value;

/// What the request offers to the match rules.
pub struct RequestView<'a> {
    /// `public_url` plus the request path.
    pub url: &'a str,
    pub params: &'a [(String, String)],
    pub body: Option<&'a Value>,
    pub headers: &'a http::HeaderMap,
    pub now: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// 403 `insufficient_scope`; the text names the route requirement not met.
    InsufficientScope(String),
    /// 401 `insufficient_user_authentication` (RFC 9470).
    StepUp(String),
}

/// Authorizes; on success returns the detail that granted the request, if details were needed.
pub fn authorize<'g>(
    route: &'g Route,
    grant: &'g Grant,
    request: &'g RequestView<'g>,
) -> Result<Option<&'g Value>, Denial> {
    if let Some(missing) = route.scopes.iter().find(|s| !grant.scopes.contains(s)) {
        return Err(Denial::InsufficientScope(format!(
            "route {} requires scope {missing}",
            route.id
        )));
    }
    if !route.acr_values.is_empty()
        && !grant
            .acr
            .as_ref()
            .is_some_and(|acr| route.acr_values.contains(acr))
    {
        return Err(Denial::StepUp(format!(
            "route {} requires acr {}",
            route.id,
            route.acr_values.join(" or ")
        )));
    }
    if let Some(max_age) = route.max_auth_age {
        let recent = grant
            .auth_time
            .is_some_and(|t| request.now.saturating_sub(t) <= max_age.as_secs());
        if !recent {
            return Err(Denial::StepUp(format!(
                "route {} requires an authentication within {} s",
                route.id,
                max_age.as_secs()
            )));
        }
    }
    let sources = Sources {
        request,
        grant,
        scope: consent_scope(route, grant)?,
    };
    route_rules(route, &sources)?;
    if route.authorization_details.is_empty() {
        return Ok(None);
    }
    let mut first_failure = None;
    for detail in &grant.authorization_details {
        for (index, requirement) in route.authorization_details.iter().enumerate() {
            match satisfies(detail, requirement, &sources) {
                Ok(()) => return Ok(Some(detail)),
                Err(why) => {
                    tracing::debug!(route = %route.id, requirement = index, reason = %why, "authorization detail does not match");
                    first_failure.get_or_insert((index, why));
                }
            }
        }
    }
    let text = match first_failure {
        Some((index, why)) => format!("route {} authorization_details[{index}]: {why}", route.id),
        None => format!("route {} requires authorization_details", route.id),
    };
    Err(Denial::InsufficientScope(text))
}

/// Why a detail does not satisfy a requirement; rendered only when it is reported.
enum Miss<'r> {
    Type(&'r str),
    Lacks(&'static str, &'r str),
    Locations,
    Rule(&'r str),
}

impl std::fmt::Display for Miss<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Type(kind) => write!(f, "no detail of type {kind}"),
            Miss::Lacks(field, missing) => write!(f, "{field} lacks {missing}"),
            Miss::Locations => f.write_str("the detail's locations do not cover this resource"),
            Miss::Rule(pointer) => write!(f, "rule {pointer} does not hold"),
        }
    }
}

fn satisfies<'r>(
    detail: &Value,
    requirement: &'r DetailRequirement,
    sources: &Sources<'r>,
) -> Result<(), Miss<'r>> {
    let request = sources.request;
    if detail.get("type").and_then(Value::as_str) != Some(requirement.kind.as_str()) {
        return Err(Miss::Type(&requirement.kind));
    }
    for (field, wanted) in [
        ("actions", &requirement.actions),
        ("locations", &requirement.locations),
        ("datatypes", &requirement.datatypes),
    ] {
        if let Some(missing) = wanted.iter().find(|w| !lists(detail.get(field), w)) {
            return Err(Miss::Lacks(field, missing));
        }
    }
    match detail.get("locations") {
        None => {}
        Some(Value::Array(locations)) => {
            let covered = locations
                .iter()
                .filter_map(Value::as_str)
                .any(|location| at_or_below(request.url, location));
            if !covered {
                return Err(Miss::Locations);
            }
        }
        // RFC 9396 §2.2: an array of strings. Anything else restricts to nothing we know.
        Some(_) => return Err(Miss::Locations),
    }
    for rule in &requirement.rules {
        if !rule_holds(detail, rule, sources) {
            return Err(Miss::Rule(rule.field.as_str()));
        }
    }
    Ok(())
}

/// Whether a detail's array field holds the string `wanted`.
fn lists(field: Option<&Value>, wanted: &str) -> bool {
    matches!(field, Some(Value::Array(items)) if items.iter().any(|i| i.as_str() == Some(wanted)))
}

/// Whether `url` is `location` or below it on whole path segments (scheme and host compared
/// without case, default port ignored).
fn at_or_below(url: &str, location: &str) -> bool {
    /// (scheme, authority without its default port, path without a trailing slash)
    fn split(uri: &str) -> Option<(&str, &str, &str)> {
        let (scheme, rest) = uri.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let path = tail.split(['?', '#']).next().unwrap_or("");
        let default = if scheme.eq_ignore_ascii_case("https") {
            ":443"
        } else {
            ":80"
        };
        let authority = match authority.len().checked_sub(default.len()) {
            Some(cut) if authority.is_char_boundary(cut) && authority[cut..] == *default => {
                &authority[..cut]
            }
            _ => authority,
        };
        Some((scheme, authority, path.trim_end_matches('/')))
    }
    let (Some(target), Some(scope)) = (split(url), split(location)) else {
        return false;
    };
    target.0.eq_ignore_ascii_case(scope.0)
        && target.1.eq_ignore_ascii_case(scope.1)
        && (target.2 == scope.2
            || target
                .2
                .strip_prefix(scope.2)
                .is_some_and(|rest| rest.starts_with('/')))
}

fn rule_holds<'s>(detail: &Value, rule: &'s Rule, sources: &Sources<'s>) -> bool {
    let Some(field) = rule.field.resolve(detail) else {
        return false;
    };
    sources
        .value(&rule.operand)
        .is_ok_and(|operand| holds(rule.comparison, field, &operand))
}

/// The token's one scope of the route's `consent_scope` shape, captured; none without one.
fn consent_scope<'g>(route: &Route, grant: &'g Grant) -> Result<Option<&'g str>, Denial> {
    let Some(pattern) = &route.consent_scope else {
        return Ok(None);
    };
    let mut found = grant.scopes.iter().filter_map(|s| pattern.capture(s));
    match (found.next(), found.next()) {
        (Some(captured), None) => Ok(Some(captured)),
        (None, _) => Err(Denial::InsufficientScope(format!(
            "route {} requires a scope {}",
            route.id,
            pattern.as_str()
        ))),
        (Some(_), Some(_)) => Err(Denial::InsufficientScope(format!(
            "route {} accepts exactly one scope {}: the token has several",
            route.id,
            pattern.as_str()
        ))),
    }
}

/// The route's own rules, in order; the first that fails is named.
fn route_rules<'s>(route: &'s Route, sources: &Sources<'s>) -> Result<(), Denial> {
    for rule in &route.rules {
        let refuse = |why: String| {
            Denial::InsufficientScope(format!("route {} rule {rule} does not hold{why}", route.id))
        };
        let left = if rule.comparison == Comparison::Contains {
            sources.container(&rule.left)
        } else {
            sources.value(&rule.left)
        };
        let left = left.map_err(|u| refuse(format!(": {} {}", rule.left, u.describe())))?;
        let right = sources
            .value(&rule.right)
            .map_err(|u| refuse(format!(": {} {}", rule.right, u.describe())))?;
        let equality = match rule.right {
            Operand::Literal(_) => Equality::Decimal,
            _ => Equality::Exact,
        };
        if !holds_with(equality, rule.comparison, &left, &right) {
            return Err(refuse(String::new()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::path::PathTemplate;
    use crate::policy::rar::JsonPointer;
    use crate::policy::routes::AuthMode;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;

    fn route(scopes: &[&str], details: Vec<DetailRequirement>) -> Route {
        Route {
            id: "r".into(),
            methods: vec![http::Method::GET],
            template: PathTemplate::parse("/accounts/{account_id}").unwrap(),
            upstream: Arc::new(crate::policy::UpstreamPolicy {
                id: "u".into(),
                addrs: vec![],
                targets: vec![],
                health: Default::default(),
                tls: false,
                sni: String::new(),
                ca: None,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                host: None,
            }),
            auth: AuthMode::Token,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            authorization_details: details,
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

    fn rule(field: &str, comparison: Comparison, operand: Operand) -> Rule {
        Rule {
            field: JsonPointer::parse(field).unwrap(),
            comparison,
            operand,
        }
    }

    fn body_at(pointer: &str) -> Operand {
        Operand::Body(JsonPointer::parse(pointer).unwrap())
    }

    fn requirement(kind: &str, actions: &[&str], rules: Vec<Rule>) -> DetailRequirement {
        DetailRequirement {
            kind: kind.into(),
            actions: actions.iter().map(|s| s.to_string()).collect(),
            locations: vec![],
            datatypes: vec![],
            rules,
        }
    }

    fn grant(scopes: &[&str], details: Value) -> Grant {
        Grant {
            issuer: "as".into(),
            subject: Some("alice".into()),
            client_id: Some("tpp".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            authorization_details: details.as_array().cloned().unwrap_or_default(),
            cnf: Default::default(),
            expires_at: None,
            issued_at: None,
            acr: None,
            auth_time: None,
            token_id: None,
            token_type: None,
            claims: Default::default(),
        }
    }

    const URL: &str = "https://api.bank.example/accounts/acc-1";

    fn view<'a>(params: &'a [(String, String)], body: Option<&'a Value>) -> RequestView<'a> {
        RequestView {
            url: URL,
            params,
            body,
            headers: Box::leak(Box::default()),
            now: 1_000,
        }
    }

    #[test]
    fn sp2_rs_4_scopes_are_all_required() {
        let r = route(&["accounts", "payments"], vec![]);
        let params = vec![];
        assert!(authorize(
            &r,
            &grant(&["accounts", "payments", "x"], json!([])),
            &view(&params, None)
        )
        .is_ok());
        assert_eq!(
            authorize(&r, &grant(&["accounts"], json!([])), &view(&params, None)),
            Err(Denial::InsufficientScope(
                "route r requires scope payments".into()
            ))
        );
    }

    #[test]
    fn rar_rs_1_path_parameter_must_be_in_the_consented_accounts() {
        let r = route(
            &[],
            vec![requirement(
                "account_information",
                &["read_balances"],
                vec![rule(
                    "/accounts",
                    Comparison::Contains,
                    Operand::PathParam("account_id".into()),
                )],
            )],
        );
        let ok = grant(
            &[],
            json!([{"type": "account_information", "actions": ["read_balances"], "accounts": ["acc-1", "acc-2"]}]),
        );
        let params = vec![("account_id".to_string(), "acc-1".to_string())];
        assert!(authorize(&r, &ok, &view(&params, None)).unwrap().is_some());
        let other = vec![("account_id".to_string(), "acc-9".to_string())];
        assert!(matches!(
            authorize(&r, &ok, &view(&other, None)),
            Err(Denial::InsufficientScope(_))
        ));
        let no_action = grant(
            &[],
            json!([{"type": "account_information", "actions": ["list_accounts"], "accounts": ["acc-1"]}]),
        );
        assert!(authorize(&r, &no_action, &view(&params, None)).is_err());
    }

    #[test]
    fn rar_rs_2_unknown_types_grant_nothing_and_the_second_detail_can_match() {
        let r = route(&[], vec![requirement("account_information", &[], vec![])]);
        let params = vec![];
        assert!(authorize(
            &r,
            &grant(&[], json!([{"type": "unknown"}])),
            &view(&params, None)
        )
        .is_err());
        assert!(authorize(
            &r,
            &grant(
                &[],
                json!([{"type": "unknown"}, {"type": "account_information"}])
            ),
            &view(&params, None)
        )
        .is_ok());
        assert!(authorize(
            &r,
            &grant(&[], json!(["not an object", 3])),
            &view(&params, None)
        )
        .is_err());
    }

    #[test]
    fn payment_body_must_match_the_consent_exactly() {
        let r = route(
            &[],
            vec![requirement(
                "payment_initiation",
                &["initiate"],
                vec![
                    rule(
                        "/instructedAmount/currency",
                        Comparison::Equals,
                        body_at("/instructedAmount/currency"),
                    ),
                    rule(
                        "/instructedAmount/amount",
                        Comparison::Equals,
                        body_at("/instructedAmount/amount"),
                    ),
                    rule(
                        "/creditorAccount/iban",
                        Comparison::Equals,
                        body_at("/creditorAccount/iban"),
                    ),
                ],
            )],
        );
        let consent = grant(
            &[],
            json!([{"type": "payment_initiation", "actions": ["initiate"],
            "instructedAmount": {"currency": "EUR", "amount": "100.00"},
            "creditorAccount": {"iban": "DE02100100109307118603"}}]),
        );
        let params = vec![];
        let body = json!({"instructedAmount": {"currency": "EUR", "amount": "100.0"}, "creditorAccount": {"iban": "DE02100100109307118603"}});
        assert!(authorize(&r, &consent, &view(&params, Some(&body))).is_ok());
        for wrong in [
            json!({"instructedAmount": {"currency": "EUR", "amount": "100.01"}, "creditorAccount": {"iban": "DE02100100109307118603"}}),
            json!({"instructedAmount": {"currency": "USD", "amount": "100.00"}, "creditorAccount": {"iban": "DE02100100109307118603"}}),
            json!({"instructedAmount": {"currency": "EUR", "amount": "100.00"}, "creditorAccount": {"iban": "DE89370400440532013000"}}),
            json!({"instructedAmount": {"currency": "EUR"}, "creditorAccount": {"iban": "DE02100100109307118603"}}),
        ] {
            assert!(
                authorize(&r, &consent, &view(&params, Some(&wrong))).is_err(),
                "{wrong}"
            );
        }
        assert!(authorize(&r, &consent, &view(&params, None)).is_err());
    }

    #[test]
    fn limits_compare_as_decimals() {
        let r = route(
            &[],
            vec![requirement(
                "payment_initiation",
                &[],
                vec![rule("/maxAmount", Comparison::AtLeast, body_at("/amount"))],
            )],
        );
        let consent = grant(
            &[],
            json!([{"type": "payment_initiation", "maxAmount": "500.00"}]),
        );
        let params = vec![];
        for (amount, ok) in [
            ("499.99", true),
            ("500", true),
            ("500.001", false),
            ("1e2", false),
        ] {
            let body = json!({"amount": amount});
            assert_eq!(
                authorize(&r, &consent, &view(&params, Some(&body))).is_ok(),
                ok,
                "{amount}"
            );
        }
        assert!(
            !holds(Comparison::Equals, &json!("0123"), &json!("123")),
            "identifiers are not numbers"
        );
        assert!(holds(Comparison::Equals, &json!(100), &json!("100.00")));
    }

    #[test]
    fn locations_cover_whole_path_segments() {
        assert!(at_or_below(URL, "https://api.bank.example"));
        assert!(at_or_below(URL, "https://API.bank.example:443/accounts/"));
        assert!(at_or_below(URL, "https://api.bank.example/accounts/acc-1"));
        assert!(!at_or_below(URL, "https://api.bank.example/acc"));
        assert!(!at_or_below(URL, "https://other.bank.example"));
        assert!(!at_or_below(URL, "https://api.bank.example/payments"));
        let r = route(&[], vec![requirement("account_information", &[], vec![])]);
        let params = vec![];
        let elsewhere = grant(
            &[],
            json!([{"type": "account_information", "locations": ["https://rs.other.example"]}]),
        );
        assert!(authorize(&r, &elsewhere, &view(&params, None)).is_err());
    }

    #[test]
    fn hi_rar_locations_that_are_not_an_array_grant_nothing() {
        let r = route(&[], vec![requirement("account_information", &[], vec![])]);
        let params = vec![];
        for locations in [
            json!("https://api.bank.example"),
            json!({}),
            json!(null),
            json!(1),
        ] {
            let odd = grant(
                &[],
                json!([{"type": "account_information", "locations": locations}]),
            );
            assert!(
                authorize(&r, &odd, &view(&params, None)).is_err(),
                "{locations}"
            );
        }
        let none = grant(&[], json!([{"type": "account_information"}]));
        assert!(authorize(&r, &none, &view(&params, None)).is_ok());
    }

    #[test]
    fn rfc9470_step_up_needs_acr_and_recent_auth_time() {
        let mut r = route(&[], vec![]);
        r.acr_values = vec!["urn:bank:sca".into()];
        r.max_auth_age = Some(Duration::from_secs(300));
        let params = vec![];
        let mut g = grant(&[], json!([]));
        assert!(matches!(
            authorize(&r, &g, &view(&params, None)),
            Err(Denial::StepUp(_))
        ));
        g.acr = Some("urn:bank:sca".into());
        g.auth_time = Some(500);
        assert!(matches!(
            authorize(&r, &g, &view(&params, None)),
            Err(Denial::StepUp(_))
        ));
        g.auth_time = Some(800);
        assert!(authorize(&r, &g, &view(&params, None)).is_ok());
    }
}
