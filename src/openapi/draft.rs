//! One route per operation: its id, method and path template in the gateway's rules, its
//! access (see [`super::security`]) and the fields a suggested rule could compare.
//!
//! Paths: OpenAPI allows any parameter name (`{AccountId}`, `{account-id}`); a route's
//! parameters are lowercase letters, digits and `_` (`crate::policy::path`). A whole-segment
//! parameter is renamed to that form (`{AccountId}` -> `{account_id}`, said in a comment; the
//! upstream receives the request path as sent, so the name never reaches it). A template the
//! gateway still cannot route (a parameter inside a segment, a character not allowed in a
//! literal, a trailing slash), a method it does not route (TRACE), or a route whose template
//! matches exactly the paths of an earlier one with a method in common (`/accounts/{AccountId}`
//! beside `/accounts/{id}`: the gateway could not tell which is meant; `/accounts/summary`
//! beside `/accounts/{id}` is fine, the literal wins) is drafted commented out with the
//! reason: the uncommented output always loads.

use super::document::{pointer_token, Spec};
use super::schema::body_fields;
use super::security::{self, Access, SchemeKind};
use super::DraftError;
use crate::policy::path::PathTemplate;
use openapiv3::{Operation, Parameter, PathItem, ReferenceOr};
use std::collections::HashSet;

/// The methods a route may list (`config::compile_routes`).
const ROUTED: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The methods whose body a rule may read (`{body/...}`).
const WITH_BODY: [&str; 3] = ["POST", "PUT", "PATCH"];

/// A drafted route, before it is written as TOML.
#[derive(Debug)]
pub(super) struct Route {
    /// `GET /accounts/{AccountId}: GetAccount`, as the spec says it.
    pub(super) heading: String,
    pub(super) notes: Vec<String>,
    pub(super) id: String,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) access: Access,
    /// The path parameters, by their names in `path`.
    pub(super) path_params: Vec<String>,
    /// JSON pointers into the request body, for suggested rules.
    pub(super) body_fields: Vec<String>,
    /// Why the route is drafted commented out.
    pub(super) refused: Option<String>,
}

/// Every operation of the description, in the order read.
pub(super) fn routes(spec: &Spec) -> Result<Vec<Route>, DraftError> {
    let mut drafting = Drafting {
        spec,
        ids: HashSet::new(),
        loaded: Vec::new(),
    };
    let mut routes = Vec::new();
    for (template, item) in spec.api.paths.iter() {
        let (item, pointer) = spec.resolve(item).map_err(|error| DraftError::Reference {
            context: format!("path {template}"),
            error,
        })?;
        let item_pointer = pointer.unwrap_or_else(|| format!("/paths/{}", pointer_token(template)));
        for (method, operation) in item.iter() {
            let operation_pointer = format!("{item_pointer}/{method}");
            routes.push(drafting.route(template, &item, method, operation, &operation_pointer)?);
        }
    }
    Ok(routes)
}

struct Drafting<'s> {
    spec: &'s Spec,
    ids: HashSet<String>,
    /// The routes drafted uncommented: method, template, id.
    loaded: Vec<(String, PathTemplate, String)>,
}

impl Drafting<'_> {
    fn route(
        &mut self,
        template: &str,
        item: &PathItem,
        method: &str,
        operation: &Operation,
        operation_pointer: &str,
    ) -> Result<Route, DraftError> {
        let method = method.to_ascii_uppercase();
        let context = match &operation.operation_id {
            Some(id) => format!("operation \"{id}\" ({method} {template})"),
            None => format!("operation {method} {template}"),
        };
        let mut heading = format!("{method} {template}");
        if let Some(id) = &operation.operation_id {
            heading.push_str(&format!(": {id}"));
        }
        if let Some(summary) = operation.summary.as_deref().filter(|s| !s.is_empty()) {
            let short: String = summary.chars().take(100).collect();
            heading.push_str(&format!(" ({short})"));
        }
        let mut notes = Vec::new();

        let (path, renamed) = gateway_path(template);
        if !renamed.is_empty() {
            let renames: Vec<String> = renamed
                .iter()
                .map(|(from, to)| format!("{{{from}}} -> {{{to}}}"))
                .collect();
            notes.push(format!(
                "path parameters renamed to the gateway's form (lowercase letters, digits, _): {}",
                renames.join(", ")
            ));
        }
        let declared = self.path_parameters(item, operation, &context)?;
        for name in template_parameters(template) {
            if !declared.iter().any(|d| d == name) {
                notes.push(format!(
                    "the spec does not declare the path parameter {{{name}}}"
                ));
            }
        }

        let spec = self.spec;
        let access = security::access(
            operation.security.as_deref(),
            spec.api.security.as_deref(),
            |name| scheme_kind(spec, name, &context),
        )?;

        let id = route_id(
            operation.operation_id.as_deref(),
            &method,
            &path,
            &mut self.ids,
            &mut notes,
        );

        let parsed = PathTemplate::parse(&path);
        let refused = if !ROUTED.contains(&method.as_str()) {
            Some(format!(
                "{method} is not a method the gateway routes ({})",
                ROUTED.join(", ")
            ))
        } else {
            match &parsed {
                Err(reason) => Some(reason.clone()),
                Ok(parsed) => self.overlap(&method, parsed, &id),
            }
        };
        let path_params = parsed
            .as_ref()
            .map(|t| t.param_names().map(String::from).collect())
            .unwrap_or_default();

        let mut body_fields = self.body_fields(operation, operation_pointer, &context)?;
        if !body_fields.is_empty() && !WITH_BODY.contains(&method.as_str()) {
            notes.push(format!(
                "the spec gives {method} a request body; rules compare {{body/...}} only for {}",
                WITH_BODY.join(", ")
            ));
            body_fields.clear();
        }
        Ok(Route {
            heading,
            notes,
            id,
            method,
            path,
            access,
            path_params,
            body_fields,
            refused,
        })
    }

    /// The reason a route cannot load beside those drafted before it, or `None` (and it is
    /// kept, for the next ones). The compiler's rule (`policy::routes::conflicts`): two
    /// routes may share a method unless their templates match exactly the same paths (then
    /// neither is the more specific one).
    fn overlap(&mut self, method: &str, template: &PathTemplate, id: &str) -> Option<String> {
        if let Some((_, other, other_id)) = self
            .loaded
            .iter()
            .find(|(m, t, _)| m == method && t.same_shape(template))
        {
            return Some(format!(
                "it matches the same {method} requests as route \"{other_id}\" ({other}); \
                 a request must match one route"
            ));
        }
        self.loaded
            .push((method.to_string(), template.clone(), id.to_string()));
        None
    }

    /// The names of the path parameters the path item and the operation declare; every
    /// parameter's `$ref` must resolve.
    fn path_parameters(
        &self,
        item: &PathItem,
        operation: &Operation,
        context: &str,
    ) -> Result<Vec<String>, DraftError> {
        let lists: [(&str, &[ReferenceOr<Parameter>]); 2] = [
            ("the path's parameters", item.parameters.as_slice()),
            ("parameters", operation.parameters.as_slice()),
        ];
        let mut names = Vec::new();
        for (list, parameters) in lists {
            for (i, parameter) in parameters.iter().enumerate() {
                let (parameter, _) =
                    self.spec
                        .resolve(parameter)
                        .map_err(|error| DraftError::Reference {
                            context: format!("{context}, {list}[{i}]"),
                            error,
                        })?;
                if let Parameter::Path { parameter_data, .. } = parameter {
                    names.push(parameter_data.name);
                }
            }
        }
        Ok(names)
    }

    /// The fields of the operation's JSON request body, if it has one.
    fn body_fields(
        &self,
        operation: &Operation,
        operation_pointer: &str,
        context: &str,
    ) -> Result<Vec<String>, DraftError> {
        let Some(body) = &operation.request_body else {
            return Ok(Vec::new());
        };
        let reference = |error| DraftError::Reference {
            context: format!("{context}, request body"),
            error,
        };
        let (body, pointer) = self.spec.resolve(body).map_err(reference)?;
        let body_pointer = pointer.unwrap_or_else(|| format!("{operation_pointer}/requestBody"));
        let Some(media) = body.content.keys().find(|media| is_json(media)) else {
            return Ok(Vec::new());
        };
        let schema_pointer = format!("{body_pointer}/content/{}/schema", pointer_token(media));
        let Some(schema) = self.spec.raw.pointer(&schema_pointer) else {
            return Ok(Vec::new());
        };
        body_fields(&self.spec.raw, schema).map_err(|error| DraftError::Reference {
            context: format!("{context}, request body ({media}) schema"),
            error,
        })
    }
}

/// What a security requirement's scheme is; an undeclared one is an error.
fn scheme_kind(spec: &Spec, name: &str, context: &str) -> Result<SchemeKind, DraftError> {
    let scheme = spec
        .api
        .components
        .as_ref()
        .and_then(|components| components.security_schemes.get(name))
        .ok_or_else(|| DraftError::Security {
            context: context.to_string(),
            message: format!(
                "names the security scheme \"{name}\", which components.securitySchemes does not declare"
            ),
        })?;
    let (scheme, _) = spec
        .resolve(scheme)
        .map_err(|error| DraftError::Reference {
            context: format!("{context}, security scheme \"{name}\""),
            error,
        })?;
    Ok(SchemeKind::of(&scheme))
}

/// `application/json`, with parameters or not, and `+json` types.
fn is_json(media: &str) -> bool {
    let essence = media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The names of the whole-segment parameters of an OpenAPI path template.
fn template_parameters(template: &str) -> impl Iterator<Item = &str> {
    template.split('/').filter_map(whole_segment_parameter)
}

fn whole_segment_parameter(segment: &str) -> Option<&str> {
    segment
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .filter(|name| !name.contains(['{', '}']))
}

/// The template with each whole-segment parameter in the gateway's form, and the renames.
pub(super) fn gateway_path(template: &str) -> (String, Vec<(String, String)>) {
    let mut renamed = Vec::new();
    let segments: Vec<String> = template
        .split('/')
        .map(|segment| match whole_segment_parameter(segment) {
            Some(name) => {
                let gateway = parameter_name(name);
                if gateway != name {
                    renamed.push((name.to_string(), gateway.clone()));
                }
                format!("{{{gateway}}}")
            }
            None => segment.to_string(),
        })
        .collect();
    (segments.join("/"), renamed)
}

/// `AccountId`, `account-id`, `accountId` -> `account_id`; a name with nothing to keep stays
/// as it is (and the template is refused with the reason).
pub(super) fn parameter_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        let previous = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
        let next = chars.get(i + 1).copied();
        if c.is_ascii_uppercase() {
            let word_starts = previous
                .is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                || (previous.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase()));
            if word_starts && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_end_matches('_');
    match trimmed.chars().next() {
        None => name.to_string(),
        Some(first) if first.is_ascii_digit() => format!("_{trimmed}"),
        Some(_) => trimmed.to_string(),
    }
}

/// A unique id: the operationId with characters other than letters, digits, `.`, `_` and
/// `-` replaced, or one made of the method and path; `-2`, `-3`... when taken.
pub(super) fn route_id(
    operation_id: Option<&str>,
    method: &str,
    path: &str,
    ids: &mut HashSet<String>,
    notes: &mut Vec<String>,
) -> String {
    let derived = || slug(&format!("{method} {path}"));
    let base = match operation_id {
        Some(given) => {
            let kept = sanitise(given);
            if kept.is_empty() {
                notes.push(format!(
                    "operationId \"{given}\" has no letter or digit to keep: id made of the method and path"
                ));
                derived()
            } else {
                if kept != given {
                    notes.push(format!(
                        "id from operationId \"{given}\", characters other than letters, digits, '.', '_' and '-' replaced"
                    ));
                }
                kept
            }
        }
        None => {
            notes.push("no operationId: id made of the method and path".into());
            derived()
        }
    };
    if ids.insert(base.clone()) {
        return base;
    }
    let mut n = 2u32;
    loop {
        let candidate = format!("{base}-{n}");
        if ids.insert(candidate.clone()) {
            notes.push(format!(
                "id \"{base}\" is taken: this route is \"{candidate}\""
            ));
            return candidate;
        }
        n = n.saturating_add(1);
    }
}

fn sanitise(given: &str) -> String {
    let mut out = String::with_capacity(given.len());
    for c in given.chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Lowercase letters and digits, words joined by `-`.
fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_parameter_names_take_the_gateway_form() {
        for (given, want) in [
            ("AccountId", "account_id"),
            ("DomesticPaymentId", "domestic_payment_id"),
            ("account-id", "account_id"),
            ("payment-product", "payment_product"),
            ("paymentId", "payment_id"),
            ("HTTPCode", "http_code"),
            ("id", "id"),
            ("v2Id", "v2_id"),
            ("1st", "_1st"),
            ("-", "-"),
        ] {
            assert_eq!(parameter_name(given), want, "{given}");
        }
        assert_eq!(
            gateway_path("/v1/accounts/{account-id}/transactions/{transactionId}"),
            (
                "/v1/accounts/{account_id}/transactions/{transaction_id}".to_string(),
                vec![
                    ("account-id".into(), "account_id".into()),
                    ("transactionId".into(), "transaction_id".into())
                ]
            )
        );
        for routable in [
            "/accounts/{AccountId}/balances",
            "/v1/payments/{payment-product}",
        ] {
            assert!(
                PathTemplate::parse(&gateway_path(routable).0).is_ok(),
                "{routable}"
            );
        }
        for refused in [
            "/statements/{StatementId}.pdf",
            "/a/{-}",
            "/a/",
            "/{Id}/{id}",
        ] {
            assert!(
                PathTemplate::parse(&gateway_path(refused).0).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn openapi_route_ids_are_unique_and_plain() {
        let mut ids = HashSet::new();
        let mut notes = Vec::new();
        let mut id = |operation_id: Option<&str>, path: &str| {
            route_id(operation_id, "GET", path, &mut ids, &mut notes)
        };
        assert_eq!(id(Some("GetAccounts"), "/accounts"), "GetAccounts");
        assert_eq!(id(Some("GetAccounts"), "/accounts"), "GetAccounts-2");
        assert_eq!(id(Some("get accounts\n\"x\""), "/a"), "get-accounts-x");
        assert_eq!(
            id(None, "/v1/consents/{consent_id}"),
            "get-v1-consents-consent-id"
        );
        assert_eq!(id(Some("!!!"), "/"), "get");
        assert_eq!(notes.len(), 4, "{notes:?}");
    }

    #[test]
    fn openapi_json_media_types() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in [
            "application/jose+jwe",
            "text/plain",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json(other), "{other}");
        }
    }
}
