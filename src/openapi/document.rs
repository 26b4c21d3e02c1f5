//! The description as the `openapiv3` model, with its version checked, and local `$ref`s
//! followed: `#` + an RFC 6901 JSON pointer, percent-decoded as an RFC 3986 fragment
//! (OpenAPI 3.0.3 §4.7.23 / 3.1.0 §4.8.23, Reference Object). References outside the document
//! are refused; a chain of references that comes back to itself is an error that names it.
//!
//! OpenAPI 3.1 (see the parent module) is read through the 3.0 model after [`neutralise`]:
//! Schema Objects become `{}` in the copy the model is read from, an operation without
//! `responses` and a document without `paths` get empty ones, and a `mutualTLS` security
//! scheme is read as an `http` one marked [`NEUTRALISED_TYPE`]. [`Spec::raw`] keeps the
//! document as written, for the request-body schemas.

use super::DraftError;
use openapiv3::{OpenAPI, PathItem, ReferenceOr};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;
use std::fmt;

/// The extension that marks a 3.1 scheme type the 3.0 model has no variant for.
pub(super) const NEUTRALISED_TYPE: &str = "x-fapigate-openapi-3.1-type";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V3_0,
    V3_1,
}

/// Why a `$ref` cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefError {
    /// Not `#...`: another file or a URL.
    External(String),
    /// `#` followed by something that is not a JSON pointer (a 3.1 `$anchor` name) or by a
    /// malformed percent escape.
    Malformed(String),
    /// Nothing in the document at the pointer.
    Missing(String),
    /// References that lead back to one of themselves, in the order followed.
    Cycle(Vec<String>),
    /// What the pointer names is not the object expected there.
    Target { reference: String, message: String },
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefError::External(r) => write!(
                f,
                "$ref \"{r}\" points outside this document; only local references (#/...) are followed"
            ),
            RefError::Malformed(r) => {
                write!(f, "$ref \"{r}\" is not a JSON pointer fragment (#/...)")
            }
            RefError::Missing(r) => write!(
                f,
                "$ref \"{r}\" does not resolve: the document has nothing there"
            ),
            RefError::Cycle(chain) => write!(f, "$ref cycle: {}", chain.join(" -> ")),
            RefError::Target { reference, message } => write!(f, "$ref \"{reference}\": {message}"),
        }
    }
}

/// A description read: the typed model, and the trees it came from.
pub(super) struct Spec {
    pub(super) api: OpenAPI,
    /// The document as written: JSON Schemas are read from here.
    pub(super) raw: Value,
    /// What `api` was read from (3.1: neutralised): typed `$ref` targets are read from here.
    typed: Value,
}

impl Spec {
    pub(super) fn read(raw: Value) -> Result<Spec, DraftError> {
        let Value::Object(root) = &raw else {
            return Err(DraftError::Version(
                "the top level is not a mapping: not an OpenAPI description".into(),
            ));
        };
        let version = version(root).map_err(DraftError::Version)?;
        let mut typed = raw.clone();
        if version == Version::V3_1 {
            neutralise(&mut typed);
        }
        let api = decode(&typed)?;
        Ok(Spec { api, raw, typed })
    }

    /// The object `item` is or names, following `$ref`s, and the JSON pointer it was found at
    /// (`None`: `item` itself, inline).
    pub(super) fn resolve<T: DeserializeOwned + Clone>(
        &self,
        item: &ReferenceOr<T>,
    ) -> Result<(T, Option<String>), RefError> {
        let mut reference = match item {
            ReferenceOr::Item(item) => return Ok((item.clone(), None)),
            ReferenceOr::Reference { reference } => reference.clone(),
        };
        let mut followed: Vec<String> = Vec::new();
        loop {
            if let Some(start) = followed.iter().position(|r| *r == reference) {
                let mut cycle = followed.split_off(start);
                cycle.push(reference);
                return Err(RefError::Cycle(cycle));
            }
            let (target, pointer) = local_target(&self.typed, &reference)?;
            let next =
                serde_path_to_error::deserialize::<_, ReferenceOr<T>>(target).map_err(|error| {
                    RefError::Target {
                        reference: reference.clone(),
                        message: with_location(&location("", error.path()), error.inner()),
                    }
                })?;
            match next {
                ReferenceOr::Item(item) => return Ok((item, Some(pointer))),
                ReferenceOr::Reference { reference: next } => {
                    followed.push(reference);
                    reference = next;
                }
            }
        }
    }
}

/// What a local `$ref` names in `root`, and its (decoded) JSON pointer.
pub(super) fn local_target<'v>(
    root: &'v Value,
    reference: &str,
) -> Result<(&'v Value, String), RefError> {
    let fragment = reference
        .strip_prefix('#')
        .ok_or_else(|| RefError::External(reference.to_string()))?;
    let pointer =
        percent_decode(fragment).ok_or_else(|| RefError::Malformed(reference.to_string()))?;
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(RefError::Malformed(reference.to_string()));
    }
    root.pointer(&pointer)
        .map(|target| (target, pointer.clone()))
        .ok_or_else(|| RefError::Missing(reference.to_string()))
}

/// A name as one token of a JSON pointer (RFC 6901 §3).
pub(super) fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let high = (*bytes.get(i + 1)? as char).to_digit(16)?;
            let low = (*bytes.get(i + 2)? as char).to_digit(16)?;
            out.push(u8::try_from(high * 16 + low).ok()?);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `openapi` field: 3.0.x or 3.1.x, as a string.
fn version(root: &Map<String, Value>) -> Result<Version, String> {
    let (text, is_string) = match root.get("openapi") {
        Some(Value::String(text)) => (text.clone(), true),
        Some(Value::Number(number)) => (number.to_string(), false),
        Some(other) => {
            return Err(format!(
                "openapi: {other} is not a version such as \"3.0.3\""
            ))
        }
        None => {
            return Err(match root.get("swagger") {
                Some(swagger) => format!(
                    "swagger: {swagger}: Swagger 2.0 (OpenAPI 2) is not supported; convert the \
                     description to OpenAPI 3.0 or 3.1 first"
                ),
                None => "no `openapi` field: not an OpenAPI 3 description (3.0.x and 3.1.x \
                         are read)"
                    .into(),
            })
        }
    };
    let mut parts = text.split('.');
    let (major, minor, patch, extra) = (parts.next(), parts.next(), parts.next(), parts.next());
    let patch_ok = patch.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let version = match (major, minor) {
        (Some("3"), Some("0")) if patch_ok && extra.is_none() => Version::V3_0,
        (Some("3"), Some("1")) if patch_ok && extra.is_none() => Version::V3_1,
        (Some("2" | "1"), _) => {
            return Err(format!(
                "openapi: \"{text}\": OpenAPI 2 (Swagger) is not supported; convert the \
                 description to OpenAPI 3.0 or 3.1 first"
            ))
        }
        _ => {
            return Err(format!(
                "openapi: \"{text}\" is not a version this reads (3.0.x and 3.1.x are)"
            ))
        }
    };
    if !is_string {
        return Err(format!(
            "openapi: {text} is a number; write the version as a string, e.g. openapi: \"{text}.0\""
        ));
    }
    Ok(version)
}

/// Makes a 3.1 document readable by the 3.0 model, for the parts this reads.
fn neutralise(tree: &mut Value) {
    empty_schemas(tree);
    let Some(root) = tree.as_object_mut() else {
        return;
    };
    root.entry("paths")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(Value::Object(paths)) = root.get_mut("paths") {
        paths.values_mut().for_each(|item| fill_responses(item, 0));
    }
    let Some(Value::Object(components)) = root.get_mut("components") else {
        return;
    };
    if let Some(Value::Object(schemas)) = components.get_mut("schemas") {
        schemas
            .values_mut()
            .for_each(|schema| *schema = Value::Object(Map::new()));
    }
    if let Some(Value::Object(items)) = components.get_mut("pathItems") {
        items.values_mut().for_each(|item| fill_responses(item, 0));
    }
    if let Some(Value::Object(callbacks)) = components.get_mut("callbacks") {
        callbacks.values_mut().for_each(|c| fill_callback(c, 0));
    }
    if let Some(Value::Object(schemes)) = components.get_mut("securitySchemes") {
        for scheme in schemes.values_mut() {
            if scheme.get("type").and_then(Value::as_str) == Some("mutualTLS") {
                let mut replaced = Map::new();
                replaced.insert("type".into(), Value::from("http"));
                replaced.insert("scheme".into(), Value::from("mutualTLS"));
                replaced.insert(NEUTRALISED_TYPE.into(), Value::from("mutualTLS"));
                *scheme = Value::Object(replaced);
            }
        }
    }
}

/// Every value under a `schema` key becomes the empty schema.
fn empty_schemas(tree: &mut Value) {
    match tree {
        Value::Object(entries) => {
            for (key, value) in entries.iter_mut() {
                if key == "schema" {
                    *value = Value::Object(Map::new());
                } else {
                    empty_schemas(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(empty_schemas),
        _ => {}
    }
}

/// 3.1 operations may omit `responses`, which the 3.0 model requires.
fn fill_responses(path_item: &mut Value, depth: usize) {
    let Some(item) = path_item.as_object_mut() else {
        return;
    };
    for method in METHODS {
        if let Some(Value::Object(operation)) = item.get_mut(method) {
            operation
                .entry("responses")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(Value::Object(callbacks)) = operation.get_mut("callbacks") {
                callbacks.values_mut().for_each(|c| fill_callback(c, depth));
            }
        }
    }
}

/// A Callback Object: expressions to path items (bounded: callbacks may nest).
fn fill_callback(callback: &mut Value, depth: usize) {
    if depth >= 8 {
        return;
    }
    if let Some(expressions) = callback.as_object_mut() {
        expressions
            .values_mut()
            .for_each(|item| fill_responses(item, depth + 1));
    }
}

/// The typed read; an error names its key path. Inside `paths`, which the model reads
/// through a buffer that loses the path, each path item is read again to find the place.
fn decode(typed: &Value) -> Result<OpenAPI, DraftError> {
    serde_path_to_error::deserialize::<_, OpenAPI>(typed).map_err(|error| {
        let in_paths = matches!(
            error.path().iter().next(),
            Some(Segment::Map { key }) if key == "paths"
        );
        let refined = if in_paths {
            locate_in_paths(typed)
        } else {
            None
        };
        refined.unwrap_or_else(|| DraftError::Shape {
            path: location("", error.path()),
            message: error.inner().to_string(),
        })
    })
}

fn locate_in_paths(typed: &Value) -> Option<DraftError> {
    let paths = typed.get("paths")?.as_object()?;
    for (template, item) in paths {
        if !template.starts_with('/') || item.get("$ref").is_some() {
            continue;
        }
        if let Err(error) = serde_path_to_error::deserialize::<_, PathItem>(item) {
            return Some(DraftError::Shape {
                path: location(&format!("paths.{}", key_text(template)), error.path()),
                message: error.inner().to_string(),
            });
        }
    }
    None
}

/// `prefix` and a serde path as `paths."/accounts".get.parameters[0]`.
pub(super) fn location(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let mut out = prefix.to_string();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_text(key));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

fn with_location(location: &str, message: impl fmt::Display) -> String {
    if location.is_empty() {
        message.to_string()
    } else {
        format!("{location}: {message}")
    }
}

/// A key as written in a location: bare when it is a plain word, quoted otherwise.
pub(super) fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_string()
    } else {
        format!("\"{}\"", key.escape_debug())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openapiv3::Parameter;
    use serde_json::json;

    fn spec(tree: Value) -> Result<Spec, String> {
        Spec::read(tree).map_err(|e| e.to_string())
    }

    fn minimal(version: &str) -> Value {
        json!({"openapi": version, "info": {"title": "t", "version": "1"}, "paths": {}})
    }

    #[test]
    fn openapi_versions_3_0_and_3_1_only() {
        assert!(spec(minimal("3.0.3")).is_ok());
        assert!(spec(minimal("3.0")).is_ok());
        assert!(spec(minimal("3.1.0")).is_ok());
        for (tree, needle) in [
            (minimal("2.0"), "OpenAPI 2 (Swagger) is not supported"),
            (minimal("4.0.0"), "\"4.0.0\" is not a version this reads"),
            (minimal("3.2.0"), "\"3.2.0\" is not a version this reads"),
            (json!({"openapi": 3.0, "info": {}}), "is a number"),
            (
                json!({"swagger": "2.0"}),
                "Swagger 2.0 (OpenAPI 2) is not supported",
            ),
            (json!({"info": {}}), "no `openapi` field"),
            (json!(["openapi"]), "not a mapping"),
        ] {
            let error = spec(tree).err().unwrap_or_default();
            assert!(error.contains(needle), "{error}");
        }
    }

    #[test]
    fn openapi_3_1_schemas_and_mutual_tls_are_neutralised() {
        let tree = json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {"/a": {"get": {"parameters": [{"name": "n", "in": "query",
                "schema": {"type": ["string", "null"], "exclusiveMinimum": 1}}]}}},
            "components": {
                "schemas": {"S": {"type": ["object", "null"], "const": 1}, "B": true},
                "securitySchemes": {"mtls": {"type": "mutualTLS"}}
            }
        });
        let read = spec(tree.clone()).unwrap();
        assert_eq!(read.raw, tree, "the document as written is kept");
        let components = read.api.components.unwrap();
        assert!(matches!(
            components.security_schemes.get("mtls"),
            Some(ReferenceOr::Item(openapiv3::SecurityScheme::HTTP { extensions, .. }))
                if extensions.get(NEUTRALISED_TYPE) == Some(&json!("mutualTLS"))
        ));
        // The same schemas are refused as 3.0, where they are not valid.
        let mut as_3_0 = tree;
        as_3_0["openapi"] = json!("3.0.3");
        assert!(spec(as_3_0).is_err());
    }

    #[test]
    fn openapi_shape_errors_name_the_key_path() {
        let mut tree = minimal("3.0.3");
        tree["paths"] = json!({"/accounts": {"get": {"summary": "no responses"}}});
        let error = spec(tree).err().unwrap_or_default();
        assert!(error.starts_with("paths.\"/accounts\".get"), "{error}");
        assert!(error.contains("responses"), "{error}");
        let mut tree = minimal("3.0.3");
        tree["info"] = json!({"title": "t"});
        let error = spec(tree).err().unwrap_or_default();
        assert!(
            error.starts_with("info: missing field `version`"),
            "{error}"
        );
    }

    fn with_parameters(parameters: Value) -> Spec {
        let mut tree = minimal("3.0.3");
        tree["components"] = json!({"parameters": parameters});
        Spec::read(tree).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parameter(reference: &str) -> ReferenceOr<Parameter> {
        ReferenceOr::Reference {
            reference: reference.into(),
        }
    }

    #[test]
    fn openapi_refs_resolve_through_chains() {
        let read = with_parameters(json!({
            "A": {"$ref": "#/components/parameters/B"},
            "B": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
            "a~b/c": {"$ref": "#/components/parameters/B"}
        }));
        let (found, pointer) = read
            .resolve(&parameter("#/components/parameters/A"))
            .unwrap();
        assert_eq!(found.parameter_data_ref().name, "id");
        assert_eq!(pointer.as_deref(), Some("/components/parameters/B"));
        let escaped = parameter("#/components/parameters/a~0b~1c");
        assert!(read.resolve(&escaped).is_ok());
        let encoded = parameter("#/components/parameters/a~0b%7E1c");
        assert!(read.resolve(&encoded).is_ok());
    }

    #[test]
    fn openapi_ref_cycles_are_named_not_followed_forever() {
        let read = with_parameters(json!({
            "A": {"$ref": "#/components/parameters/B"},
            "B": {"$ref": "#/components/parameters/C"},
            "C": {"$ref": "#/components/parameters/B"},
            "Self": {"$ref": "#/components/parameters/Self"}
        }));
        assert_eq!(
            read.resolve(&parameter("#/components/parameters/A")).err(),
            Some(RefError::Cycle(vec![
                "#/components/parameters/B".into(),
                "#/components/parameters/C".into(),
                "#/components/parameters/B".into(),
            ]))
        );
        assert_eq!(
            read.resolve(&parameter("#/components/parameters/Self"))
                .err()
                .map(|e| e.to_string()),
            Some("$ref cycle: #/components/parameters/Self -> #/components/parameters/Self".into())
        );
    }

    #[test]
    fn openapi_refs_that_cannot_be_followed_say_why() {
        let read = with_parameters(json!({}));
        let cases = [
            ("#/components/parameters/Nope", "does not resolve"),
            (
                "common.yaml#/components/parameters/X",
                "points outside this document",
            ),
            ("#anchor", "is not a JSON pointer fragment"),
            (
                "#/components/parameters/%zz",
                "is not a JSON pointer fragment",
            ),
            ("#/info", "$ref \"#/info\": "),
        ];
        for (reference, needle) in cases {
            let error = read
                .resolve(&parameter(reference))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(needle), "{reference}: {error}");
        }
    }
}
