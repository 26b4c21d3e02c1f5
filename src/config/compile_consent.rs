//! A route's consent binding beyond RAR: its own `match` rules (operand against operand),
//! `consent_scope` and `require_headers`; and the check every operand passes, wherever it
//! stands, against what the route can offer (its path parameters, a body, a captured scope).

use super::compile::Errors;
use super::model;
use super::operand::{parse_operand, parse_reference, unjudgeable};
use crate::policy::consent::{RouteRule, ScopePattern};
use crate::policy::path::PathTemplate;
use crate::policy::rar::{Comparison, Operand};
use http::{HeaderName, Method};

/// What a route offers its operands.
pub(super) struct Offered<'a> {
    pub route_id: &'a str,
    pub template: Option<&'a PathTemplate>,
    pub scope: Option<&'a ScopePattern>,
    pub methods: &'a [Method],
    pub forwarded: &'a [HeaderName],
}

impl Offered<'_> {
    fn has_body(&self) -> bool {
        self.methods
            .iter()
            .any(|m| [Method::POST, Method::PUT, Method::PATCH].contains(m))
    }

    /// Refuses an operand the route can never give a value: the rule could never hold.
    pub(super) fn check(&self, operand: &Operand, key: &str, errors: &mut Errors) {
        match operand {
            Operand::PathParam(param)
                if self
                    .template
                    .is_some_and(|t| !t.param_names().any(|n| n == param)) =>
            {
                errors.add(
                    key,
                    format!("{{path.{param}}} is not a parameter of the route's path"),
                );
            }
            Operand::Body(_) if !self.has_body() => errors.add(
                key,
                format!(
                    "route \"{}\" compares with {{body/...}} but none of its methods carries a body",
                    self.route_id
                ),
            ),
            Operand::Header(name) if self.forwarded.contains(name) => errors.add(
                key,
                format!("{name} is a [forward] header: the gateway replaces the client's, so a rule cannot judge it"),
            ),
            Operand::Scope(name) => match self.scope {
                None => errors.add(
                    key,
                    format!("{{scope.{name}}} needs the route's consent_scope, e.g. \"consent:{{{name}}}\""),
                ),
                Some(pattern) if pattern.name() != name => errors.add(
                    key,
                    format!(
                        "consent_scope \"{}\" captures {{scope.{}}}, not {{scope.{name}}}",
                        pattern.as_str(),
                        pattern.name()
                    ),
                ),
                Some(_) => {}
            },
            _ => {}
        }
    }
}

impl Offered<'_> {
    /// `{ NAME = operand }`: exactly one known comparison, its operand checked.
    pub(super) fn comparison(
        &self,
        comparisons: &std::collections::BTreeMap<String, toml::Value>,
        rule_key: &str,
        errors: &mut Errors,
    ) -> Option<(Comparison, Operand)> {
        let (Some((name, value)), 1) = (comparisons.iter().next(), comparisons.len()) else {
            errors.add(
                rule_key,
                "must hold exactly one of equals, contains, at_least, at_most",
            );
            return None;
        };
        let key = format!("{rule_key}.{name}");
        let Some(comparison) = Comparison::parse(name) else {
            errors.add(key, Comparison::unknown(name));
            return None;
        };
        let operand = errors.check(&key, parse_operand(value))?;
        self.check(&operand, &key, errors);
        if let Operand::Literal(value) = &operand {
            if matches!(comparison, Comparison::AtLeast | Comparison::AtMost)
                && !super::compile_routes::is_decimal(value)
            {
                errors.add(
                    &key,
                    "compares decimals: write the amount as a string such as \"100.00\"",
                );
            }
        }
        Some((comparison, operand))
    }
}

pub(super) struct Consent {
    pub rules: Vec<RouteRule>,
    pub consent_scope: Option<ScopePattern>,
    pub require_headers: Vec<HeaderName>,
}

pub(super) fn consent_scope(
    route: &model::Route,
    key: &str,
    errors: &mut Errors,
) -> Option<ScopePattern> {
    let text = route.consent_scope.as_deref()?;
    errors.check(&format!("{key}.consent_scope"), ScopePattern::parse(text))
}

pub(super) fn consent(
    route: &model::Route,
    key: &str,
    offered: &Offered<'_>,
    consent_scope: Option<ScopePattern>,
    errors: &mut Errors,
) -> Consent {
    let mut rules = Vec::new();
    for (left_text, comparisons) in &route.rules {
        let rule_key = format!("{key}.match.\"{left_text}\"");
        let left = match parse_reference(left_text) {
            Ok(Some(left)) => Some(left),
            Ok(None) => {
                errors.add(
                    &rule_key,
                    "a route's rule starts from a reference such as \"{body/Data/ConsentId}\" or \"{header.Consent-ID}\"",
                );
                None
            }
            Err(e) => {
                errors.add(&rule_key, e);
                None
            }
        };
        if let Some(left) = &left {
            offered.check(left, &rule_key, errors);
        }
        let compared = offered.comparison(comparisons, &rule_key, errors);
        if let (Some(left), Some((comparison, right))) = (left, compared) {
            rules.push(RouteRule {
                left,
                comparison,
                right,
            });
        }
    }
    Consent {
        rules,
        consent_scope,
        require_headers: require_headers(route, key, offered.forwarded, errors),
    }
}

fn require_headers(
    route: &model::Route,
    key: &str,
    forwarded: &[HeaderName],
    errors: &mut Errors,
) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for (j, text) in route.require_headers.iter().enumerate() {
        let key = format!("{key}.require_headers[{j}]");
        match HeaderName::from_bytes(text.as_bytes()) {
            Err(_) => errors.add(key, format!("\"{text}\" is not a header field name")),
            Ok(name) if unjudgeable(name.as_str()) || forwarded.contains(&name) => errors.add(
                key,
                format!("{name} is the gateway's to judge, not a route's requirement"),
            ),
            Ok(name) if names.contains(&name) => {
                errors.add(key, format!("\"{text}\" is listed twice"))
            }
            Ok(name) => names.push(name),
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use crate::fuzzing::{fixture_dir, POLICY};
    use crate::policy::authorize::{authorize, Denial, RequestView};
    use serde_json::json;

    const PAYMENT: &str = r#"
[[route]]
id = "uk-payment"
methods = ["POST"]
path = "/domestic-payments"
upstream = "core"
scopes = ["payments"]
require_headers = ["x-idempotency-key"]
[route.match]
"{body/Data/ConsentId}" = { equals = "{claim/openbanking_intent_id}" }
[[route]]
id = "br-account"
methods = ["GET"]
path = "/br/accounts/{account_id}"
upstream = "core"
consent_scope = "consent:{consent_id}"
[route.match]
"{header.x-consent-id}" = { equals = "{scope.consent_id}" }
"#;

    fn policy(extra: &str) -> Result<crate::policy::Policy, Vec<super::super::ConfigError>> {
        super::super::load_str(&format!("{POLICY}{extra}"), fixture_dir())
    }

    fn grant(claims: serde_json::Value) -> crate::grant::Grant {
        let serde_json::Value::Object(claims) = claims else {
            panic!("claims are an object")
        };
        crate::grant::TokenClaims::grant_from(claims, "https://as.bank.example").unwrap()
    }

    fn judge(
        route_id: &str,
        grant: &crate::grant::Grant,
        body: Option<serde_json::Value>,
        headers: &http::HeaderMap,
    ) -> Result<(), String> {
        let policy = policy(PAYMENT).unwrap();
        let route = policy.routes.iter().find(|r| r.id == route_id).unwrap();
        let view = RequestView {
            url: "https://api.bank.example/x",
            params: &[],
            body: body.as_ref(),
            headers,
            now: 1_000,
        };
        authorize(route, grant, &view)
            .map(|_| ())
            .map_err(|denial| match denial {
                Denial::InsufficientScope(text) | Denial::StepUp(text) => text,
            })
    }

    #[test]
    fn uk_ob_the_body_consent_must_be_the_tokens_intent() {
        let token = grant(json!({"scope": "payments", "openbanking_intent_id": "urn-1"}));
        let headers = http::HeaderMap::new();
        let body = |id: serde_json::Value| Some(json!({"Data": {"ConsentId": id}}));
        assert_eq!(
            judge("uk-payment", &token, body(json!("urn-1")), &headers),
            Ok(())
        );
        assert_eq!(
            judge("uk-payment", &token, body(json!("urn-2")), &headers),
            Err("route uk-payment rule {body/Data/ConsentId} equals {claim/openbanking_intent_id} does not hold".into())
        );
        let no_intent = grant(json!({"scope": "payments"}));
        assert_eq!(
            judge("uk-payment", &no_intent, body(json!("urn-1")), &headers),
            Err("route uk-payment rule {body/Data/ConsentId} equals {claim/openbanking_intent_id} does not hold: {claim/openbanking_intent_id} is absent".into())
        );
        let numeric = grant(json!({"scope": "payments", "openbanking_intent_id": 1}));
        assert_eq!(
            judge("uk-payment", &numeric, body(json!("1")), &headers),
            Err("route uk-payment rule {body/Data/ConsentId} equals {claim/openbanking_intent_id} does not hold: {claim/openbanking_intent_id} is not a string, object or array".into())
        );
    }

    #[test]
    fn a_consent_scope_must_be_exactly_one_and_the_header_sent_once() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-consent-id",
            http::HeaderValue::from_static("urn:bank:C1"),
        );
        let one = grant(json!({"scope": "openid accounts consent:urn:bank:C1"}));
        assert_eq!(judge("br-account", &one, None, &headers), Ok(()));
        let other = grant(json!({"scope": "accounts consent:urn:bank:C2"}));
        assert!(judge("br-account", &other, None, &headers).is_err());
        let two = grant(json!({"scope": "consent:urn:bank:C1 consent:urn:bank:C2"}));
        assert_eq!(
            judge("br-account", &two, None, &headers),
            Err("route br-account accepts exactly one scope consent:{consent_id}: the token has several".into())
        );
        let none = grant(json!({"scope": "accounts"}));
        assert_eq!(
            judge("br-account", &none, None, &headers),
            Err("route br-account requires a scope consent:{consent_id}".into())
        );
        headers.append(
            "x-consent-id",
            http::HeaderValue::from_static("urn:bank:C1"),
        );
        assert_eq!(
            judge("br-account", &one, None, &headers),
            Err("route br-account rule {header.x-consent-id} equals {scope.consent_id} does not hold: {header.x-consent-id} is sent more than once".into())
        );
    }

    fn error(extra: &str, key: &str) -> String {
        let errors = policy(extra).unwrap_err();
        errors
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.message.clone())
            .unwrap_or_else(|| panic!("no error at {key}: {errors:?}"))
    }

    #[test]
    fn check_names_the_key_of_every_operand_it_refuses() {
        let route = |body: &str| {
            format!("[[route]]\nid = \"r\"\nmethods = [\"GET\"]\npath = \"/r/{{id}}\"\nupstream = \"core\"\n{body}")
        };
        assert_eq!(
            error(&route("[route.match]\n\"{header.consent-id}\" = { equals = \"{scope.consent_id}\" }\n"), "route[5].match.\"{header.consent-id}\".equals"),
            "{scope.consent_id} needs the route's consent_scope, e.g. \"consent:{consent_id}\""
        );
        assert_eq!(
            error(&route("consent_scope = \"AIS:{id}\"\n[route.match]\n\"{path.id}\" = { equals = \"{scope.consent_id}\" }\n"), "route[5].match.\"{path.id}\".equals"),
            "consent_scope \"AIS:{id}\" captures {scope.id}, not {scope.consent_id}"
        );
        assert!(error(
            &route("[route.match]\n\"/Data\" = { equals = \"x\" }\n"),
            "route[5].match.\"/Data\""
        )
        .contains("starts from a reference"));
        assert_eq!(
            error(
                &route("[route.match]\n\"{body/Data}\" = { equals = \"x\" }\n"),
                "route[5].match.\"{body/Data}\""
            ),
            "route \"r\" compares with {body/...} but none of its methods carries a body"
        );
        assert!(error(
            &route("[route.match]\n\"{header.authorization}\" = { equals = \"x\" }\n"),
            "route[5].match.\"{header.authorization}\""
        )
        .contains("does not judge"));
        assert_eq!(
            error(
                &route("require_headers = [\"x-idempotency-key\", \"X-Idempotency-Key\"]\n"),
                "route[5].require_headers[1]"
            ),
            "\"X-Idempotency-Key\" is listed twice"
        );
        assert!(error(
            &route("auth = \"none\"\nconsent_scope = \"consent:{id}\"\n"),
            "route[5].consent_scope"
        )
        .contains("auth = \"none\""));
        assert!(error(
            &route("consent_scope = \"consent\"\n"),
            "route[5].consent_scope"
        )
        .contains("one {NAME}"));
        assert!(error(
            &route("[route.match]\n\"{header.x-fapi-client-id}\" = { equals = \"tpp\" }\n"),
            "route[5].match.\"{header.x-fapi-client-id}\""
        )
        .contains("[forward] header"));
        assert!(error(
            &route("require_headers = [\"x-fapi-subject\"]\n"),
            "route[5].require_headers[0]"
        )
        .contains("the gateway's to judge"));
    }
}
