//! `fapigate routes --from-openapi`: `[[route]]` blocks drafted from a bank's OpenAPI
//! description, for an operator to review and append to the configuration. An offline tool:
//! nothing here is on the request path.
//!
//! - [`source`] reads the file, YAML 1.2 or JSON, into a `serde_json::Value`.
//! - [`document`] checks the version and reads the tree as the `openapiv3` model, following
//!   local `$ref`s (OpenAPI 3.0.3 §4.7.23 / 3.1.0 §4.8.23; RFC 6901 pointers) and refusing
//!   cycles.
//! - [`security`] turns an operation's security requirements (3.0.3 §4.7.28 / 3.1.0 §4.8.30)
//!   into `auth` and `scopes`, failing closed.
//! - [`schema`] lists the fields of a JSON request body, for suggested `[route.match]` rules.
//! - [`draft`] makes one route per operation (id, method, path template in the gateway's
//!   rules, overlaps); [`render`] writes the TOML.
//!
//! OpenAPI 3.1: `openapiv3` models 3.0 only. What this reads through it (paths, path items,
//! operations, parameters, request bodies, security requirements and schemes) has the same
//! shape in 3.1 but for three changes, which [`document`] neutralises in the copy the model is
//! read from: Schema Objects are JSON Schema 2020-12 (`type` lists, numeric
//! `exclusiveMinimum`, boolean schemas), so each becomes `{}`; `responses` and `paths` became
//! optional, so empty ones are filled in; and the new `mutualTLS` scheme type is read as an
//! `http` scheme marked with an extension. JSON Schemas are never needed from the model: the
//! request-body walk reads them from the document as written, the same way for 3.0 and 3.1.
//! No other crate is needed, and 3.0 documents are read unchanged (and their schemas checked
//! by the model). Other versions (Swagger 2.0, 3.2, 4.x) are refused by name.
//!
//! Order: `serde_json`'s map is sorted (its `preserve_order` feature is off in this build),
//! so routes come in path order and, for one path, in the order get, put, post, delete,
//! options, head, patch, trace; body fields in name order. The output does not change when a
//! spec is only reordered.

mod document;
mod draft;
mod render;
mod schema;
mod security;
mod source;

use std::fmt;

use document::RefError;
use source::SyntaxError;

/// Why no route could be drafted.
#[derive(Debug)]
pub(crate) enum DraftError {
    /// The file is not YAML or JSON.
    Syntax(SyntaxError),
    /// Not an OpenAPI 3.0 or 3.1 description.
    Version(String),
    /// A part not shaped as OpenAPI says, at a key path (`paths."/accounts".get`).
    Shape { path: String, message: String },
    /// A `$ref` that cannot be followed, and where it was met.
    Reference { context: String, error: RefError },
    /// A security requirement that names no declared scheme.
    Security { context: String, message: String },
}

impl fmt::Display for DraftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DraftError::Syntax(error) => write!(f, "{error}"),
            DraftError::Version(message) => f.write_str(message),
            DraftError::Shape { path, message } if path.is_empty() => f.write_str(message),
            DraftError::Shape { path, message } => write!(f, "{path}: {message}"),
            DraftError::Reference { context, error } => write!(f, "{context}: {error}"),
            DraftError::Security { context, message } => write!(f, "{context} {message}"),
        }
    }
}

/// Drafts `[[route]]` blocks, naming the upstream `upstream`, from an OpenAPI 3.0 or 3.1
/// description (YAML or JSON). The text always parses as TOML, and its uncommented routes
/// load in a configuration that defines that upstream. The error is the message to show.
pub fn draft_routes(spec: &str, upstream: &str) -> Result<String, String> {
    draft_text(spec, upstream).map_err(|error| error.to_string())
}

fn draft_text(spec: &str, upstream: &str) -> Result<String, DraftError> {
    let tree = source::parse(spec).map_err(DraftError::Syntax)?;
    let spec = document::Spec::read(tree)?;
    let routes = draft::routes(&spec)?;
    Ok(render::render(&spec.api, &routes, upstream))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UK: &str = include_str!("../../tests/fixtures/openapi/uk-ob-shaped.yaml");
    const BERLIN: &str = include_str!("../../tests/fixtures/openapi/berlin-group-shaped.yaml");

    fn routes_of(text: &str) -> Vec<toml::Value> {
        let parsed: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        parsed
            .get("route")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default()
    }

    /// The fuzz fixture's configuration without its routes: an upstream "core", issuers,
    /// clients, the files they name.
    fn configuration_with(routes: &str) -> Result<(), String> {
        let base = crate::fuzzing::POLICY
            .split("[[route]]")
            .next()
            .unwrap_or_default();
        crate::config::load_str(&format!("{base}\n{routes}"), crate::fuzzing::fixture_dir())
            .map(|_| ())
            .map_err(|errors| {
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.key, e.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
    }

    /// The suggested rules, uncommented as an operator would (the placeholder claim kept).
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest == "[route.match]" || rest.starts_with("\"{") => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn openapi_drafts_of_both_fixtures_load_and_so_do_their_suggestions() {
        for (name, spec) in [("uk", UK), ("berlin", BERLIN)] {
            let text = draft_routes(spec, "core").unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(routes_of(&text).len() >= 10, "{name}:\n{text}");
            configuration_with(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            let suggested = uncommented(&text);
            assert!(suggested.contains("\n[route.match]\n\"{"), "{name}");
            configuration_with(&suggested).unwrap_or_else(|e| panic!("{name}: {e}\n{suggested}"));
        }
    }

    #[test]
    fn openapi_a_route_that_cannot_load_is_commented_out_with_the_reason() {
        let spec = r#"
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /accounts/summary:
    get: {operationId: summary, responses: {'200': {description: ok}}}
  /accounts/{AccountId}:
    get: {operationId: one, responses: {'200': {description: ok}}}
    trace: {operationId: three, responses: {'200': {description: ok}}}
  /accounts/{id}:
    get: {operationId: two, responses: {'200': {description: ok}}}
    delete: {operationId: four, responses: {'200': {description: ok}}}
  /files/{name}.pdf:
    get: {operationId: five, responses: {'200': {description: ok}}}
"#;
        let text = draft_routes(spec, "core").unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<String> = routes_of(&text)
            .iter()
            .filter_map(|r| r.get("id").and_then(|v| v.as_str()).map(String::from))
            .collect();
        // The literal beside a parameter loads (it wins); the same shape with a method in
        // common does not.
        assert_eq!(ids, ["summary", "one", "four"], "{text}");
        for reason in [
            "NOT LOADED, left commented out: it matches the same GET requests as route \"one\"",
            "NOT LOADED, left commented out: TRACE is not a method the gateway routes",
            "NOT LOADED, left commented out: \"/files/{name}.pdf\": a parameter must fill a whole segment",
        ] {
            assert!(text.contains(reason), "{reason}\n{text}");
        }
        configuration_with(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn openapi_errors_name_the_place() {
        let cases = [
            ("openapi: 3.0.3\ninfo: [\n", "line "),
            (
                "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    get:\n      responses: {}\n      security: [{nowhere: []}]\n",
                "operation GET /a names the security scheme \"nowhere\", which components.securitySchemes does not declare",
            ),
            (
                "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a:\n    post:\n      operationId: make\n      responses: {}\n      requestBody: {$ref: '#/components/requestBodies/Gone'}\n",
                "operation \"make\" (POST /a), request body: $ref \"#/components/requestBodies/Gone\" does not resolve",
            ),
        ];
        for (spec, needle) in cases {
            let error = draft_routes(spec, "core").err().unwrap_or_default();
            assert!(error.contains(needle), "{needle}\n{error}");
        }
    }
}
