//! The description file as a tree: YAML 1.2 or JSON into a `serde_json::Value`, which the
//! typed OpenAPI model is then read from (so YAML and JSON descriptions take one path).
//!
//! YAML is read from yaml-rust2's event parser (`Parser::next_token`) into the tree directly,
//! not through its `YamlLoader` and `Yaml` tree: the loader recurses once per nesting level
//! (`Parser::load`), keeps no location but for a duplicate key, and copies an alias's node
//! without limit (a "billion laughs" document would fill the memory). Here, one loop over the
//! events:
//! - mapping keys are the scalars' text (`200:` is the key "200", as JSON and OpenAPI's
//!   response codes want); a collection, an alias or a null as a key is refused;
//! - a duplicate key is refused at its line and column (YAML 1.2 §3.2.1.1: keys are unique);
//! - plain scalars resolve by the YAML 1.2 core schema as yaml-rust2 does (`Yaml::from_str`:
//!   null, booleans, integers, floats), quoted ones are strings, `!!str`/`!!int`/`!!float`/
//!   `!!bool`/`!!null` are honoured; a float JSON cannot hold (`.inf`, `.nan`) is refused;
//! - aliases are expanded, at most [`MAX_ALIAS_NODES`] nodes and [`MAX_ALIAS_BYTES`] bytes of
//!   strings and keys in all (a small file of aliases to one long string would otherwise
//!   expand without bound); nesting deeper than
//!   [`MAX_DEPTH`] (aliases included) is refused, so nothing after this recurses unboundedly;
//! - one document only.
//!
//! A file whose first character is `{` is read as JSON first (serde_json, with its own depth
//! limit of 128 and duplicate keys refused), then as YAML if that fails (a YAML flow mapping).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// How deep collections may nest: deeper than any real description, shallow enough for the
/// recursive walks that follow.
pub(super) const MAX_DEPTH: usize = 128;

/// How many nodes aliases may add to the tree, in all.
pub(super) const MAX_ALIAS_NODES: usize = 1_000_000;

/// The most string and key bytes aliases may expand to, in all.
pub(super) const MAX_ALIAS_BYTES: usize = 64 << 20;

/// Why the file is not YAML or JSON, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl SyntaxError {
    fn at(mark: Marker, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            line: mark.line(),
            column: mark.col() + 1,
            message: message.into(),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Reads a description: JSON when it starts with `{` and parses as JSON, YAML otherwise.
pub(super) fn parse(text: &str) -> Result<Value, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().starts_with('{') {
        return json(text).or_else(|json_error| yaml(text).map_err(|_| json_error));
    }
    yaml(text)
}

fn yaml(text: &str) -> Result<Value, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    loop {
        let (event, mark) = parser
            .next_token()
            .map_err(|e| SyntaxError::at(*e.marker(), e.info()))?;
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                builder.documents += 1;
                if builder.documents > 1 {
                    return Err(SyntaxError::at(
                        mark,
                        "a second YAML document: the file must hold one description",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                builder.scalar(value, style, anchor, tag.as_ref(), mark)?
            }
            Event::SequenceStart(anchor, _) => builder.open(
                Node::Sequence {
                    anchor,
                    items: Vec::new(),
                },
                mark,
            )?,
            Event::MappingStart(anchor, _) => builder.open(
                Node::Mapping {
                    anchor,
                    entries: Map::new(),
                    key: None,
                },
                mark,
            )?,
            Event::SequenceEnd | Event::MappingEnd => builder.close(mark)?,
            Event::Alias(anchor) => builder.alias(anchor, mark)?,
        }
    }
    builder.root.ok_or(SyntaxError {
        line: 1,
        column: 1,
        message: "the file holds no YAML document".into(),
    })
}

/// A collection being read.
enum Node {
    Sequence {
        anchor: usize,
        items: Vec<Value>,
    },
    Mapping {
        anchor: usize,
        entries: Map<String, Value>,
        /// The key read, waiting for its value.
        key: Option<String>,
    },
}

/// A node an anchor names, with what an alias to it adds.
struct Anchored {
    value: Value,
    nodes: usize,
    bytes: usize,
    height: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    anchors: HashMap<usize, Anchored>,
    alias_nodes: usize,
    alias_bytes: usize,
    root: Option<Value>,
    documents: usize,
}

impl Builder {
    fn expects_key(&self) -> bool {
        matches!(self.stack.last(), Some(Node::Mapping { key: None, .. }))
    }

    fn open(&mut self, node: Node, mark: Marker) -> Result<(), SyntaxError> {
        if self.expects_key() {
            return Err(SyntaxError::at(
                mark,
                "a mapping key must be a scalar, not a collection",
            ));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::at(
                mark,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(node);
        Ok(())
    }

    fn close(&mut self, mark: Marker) -> Result<(), SyntaxError> {
        let (anchor, value) = match self.stack.pop() {
            Some(Node::Sequence { anchor, items }) => (anchor, Value::Array(items)),
            Some(Node::Mapping {
                anchor, entries, ..
            }) => (anchor, Value::Object(entries)),
            None => {
                return Err(SyntaxError::at(
                    mark,
                    "the end of a collection never opened",
                ))
            }
        };
        self.remember(anchor, &value);
        self.insert(value, mark)
    }

    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        mark: Marker,
    ) -> Result<(), SyntaxError> {
        if self.expects_key() {
            let plain = style == TScalarStyle::Plain && tag.is_none();
            if plain && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                return Err(SyntaxError::at(mark, "a mapping key is null"));
            }
            if let Some(Node::Mapping { entries, .. }) = self.stack.last() {
                if entries.contains_key(&text) {
                    return Err(SyntaxError::at(
                        mark,
                        format!("duplicate key \"{}\" in a mapping", text.escape_debug()),
                    ));
                }
            }
            self.remember(anchor, &Value::String(text.clone()));
            if let Some(Node::Mapping { key, .. }) = self.stack.last_mut() {
                *key = Some(text);
            }
            return Ok(());
        }
        let value = scalar_value(text, style, tag).map_err(|m| SyntaxError::at(mark, m))?;
        self.remember(anchor, &value);
        self.insert(value, mark)
    }

    fn alias(&mut self, anchor: usize, mark: Marker) -> Result<(), SyntaxError> {
        if self.expects_key() {
            return Err(SyntaxError::at(mark, "a mapping key must not be an alias"));
        }
        let Some(anchored) = self.anchors.get(&anchor) else {
            return Err(SyntaxError::at(
                mark,
                "an alias names no anchor defined before it",
            ));
        };
        if self.stack.len() + anchored.height > MAX_DEPTH {
            return Err(SyntaxError::at(
                mark,
                format!("an alias nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.alias_nodes = self.alias_nodes.saturating_add(anchored.nodes);
        if self.alias_nodes > MAX_ALIAS_NODES {
            return Err(SyntaxError::at(
                mark,
                format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
            ));
        }
        self.alias_bytes = self.alias_bytes.saturating_add(anchored.bytes);
        if self.alias_bytes > MAX_ALIAS_BYTES {
            return Err(SyntaxError::at(
                mark,
                format!("aliases expand to more than {MAX_ALIAS_BYTES} bytes"),
            ));
        }
        let value = anchored.value.clone();
        self.insert(value, mark)
    }

    /// Keeps what `anchor` (0: none) names, for its aliases.
    fn remember(&mut self, anchor: usize, value: &Value) {
        if anchor > 0 {
            let (nodes, height) = measure(value);
            self.anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    nodes,
                    bytes: text_bytes(value),
                    height,
                },
            );
        }
    }

    fn insert(&mut self, value: Value, mark: Marker) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
                Ok(())
            }
            Some(Node::Sequence { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Node::Mapping { entries, key, .. }) => match key.take() {
                Some(key) => {
                    entries.insert(key, value);
                    Ok(())
                }
                None => Err(SyntaxError::at(mark, "a mapping key must be a scalar")),
            },
        }
    }
}

/// The bytes of the strings and keys in a tree (what an alias copies besides its nodes).
fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(text_bytes).fold(0, usize::saturating_add),
        Value::Object(entries) => entries
            .iter()
            .map(|(key, value)| key.len().saturating_add(text_bytes(value)))
            .fold(0, usize::saturating_add),
        _ => 8,
    }
}

/// Nodes in a tree and how many collections deep it goes (a scalar: 1 node, height 0).
fn measure(value: &Value) -> (usize, usize) {
    let children: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(entries) => entries.values().collect(),
        _ => return (1, 0),
    };
    let (mut nodes, mut height) = (1usize, 0usize);
    for child in children {
        let (child_nodes, child_height) = measure(child);
        nodes = nodes.saturating_add(child_nodes);
        height = height.max(child_height);
    }
    (nodes, height + 1)
}

/// A scalar's value: quoted scalars are strings; plain ones resolve by the core schema.
fn scalar_value(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if style != TScalarStyle::Plain {
        return Ok(Value::String(text));
    }
    if let Some(tag) = tag {
        if tag.handle != "tag:yaml.org,2002:" {
            return Ok(Value::String(text));
        }
        let resolved = Yaml::from_str(&text);
        return match (tag.suffix.as_str(), resolved) {
            ("str", _) => Ok(Value::String(text)),
            ("null", Yaml::Null) => Ok(Value::Null),
            ("bool", Yaml::Boolean(b)) => Ok(Value::Bool(b)),
            ("int", Yaml::Integer(i)) => Ok(Value::from(i)),
            ("float", Yaml::Integer(i)) => real(&i.to_string()),
            ("float", Yaml::Real(r)) => real(&r),
            ("null" | "bool" | "int" | "float", _) => Err(format!(
                "\"{}\" is not a valid !!{}",
                text.escape_debug(),
                tag.suffix
            )),
            _ => Ok(Value::String(text)),
        };
    }
    Ok(match Yaml::from_str(&text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(r) => real(&r)?,
        _ => Value::String(text),
    })
}

fn real(text: &str) -> Result<Value, String> {
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("{text} is not a number JSON can hold"))
}

fn json(text: &str) -> Result<Value, SyntaxError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Strict::deserialize(&mut deserializer).and_then(|Strict(value)| {
        deserializer.end()?;
        Ok(value)
    });
    parsed.map_err(|error| {
        let (line, column) = (error.line(), error.column());
        let full = error.to_string();
        let suffix = format!(" at line {line} column {column}");
        SyntaxError {
            line,
            column,
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_string(),
        }
    })
}

/// A JSON value whose objects repeat no key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if entries.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate key \"{}\" in an object",
                    key.escape_debug()
                )));
            }
            let Strict(value) = map.next_value()?;
            entries.insert(key, value);
        }
        Ok(Value::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openapi_yaml_scalars_follow_the_core_schema() {
        let text =
            "a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 3.0.3\ng: !!str 12\nh: \"x\"\n200: ok\ni:\n";
        assert_eq!(
            parse(text),
            Ok(json!({
                "a": 1, "b": 1.5, "c": true, "d": null, "e": "1", "f": "3.0.3", "g": "12",
                "h": "x", "200": "ok", "i": null
            }))
        );
    }

    #[test]
    fn openapi_yaml_duplicate_keys_are_refused_at_their_place() {
        let error = parse("paths:\n  /a:\n    get: 1\n    get: 2\n").unwrap_err();
        assert_eq!((error.line, error.column), (4, 5), "{error}");
        assert!(error.message.contains("duplicate key \"get\""), "{error}");
    }

    #[test]
    fn openapi_yaml_syntax_errors_name_line_and_column() {
        let error = parse("openapi: 3.0.3\ninfo:\n  title: [unclosed\n").unwrap_err();
        assert!(error.line >= 3, "{error}");
        let error = parse("a: b: c\n").unwrap_err();
        assert_eq!(error.line, 1, "{error}");
    }

    #[test]
    fn openapi_yaml_keys_must_be_scalars() {
        for text in ["? [a, b]\n: c\n", "~: x\n", "x: &a 1\n*a : 2\n"] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn openapi_yaml_aliases_are_expanded_within_a_budget() {
        assert_eq!(
            parse("base: &b {x: 1}\ncopy: *b\n"),
            Ok(json!({"base": {"x": 1}, "copy": {"x": 1}}))
        );
        // A "billion laughs": each level doubles ten times over.
        let mut text = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = format!("*l{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            text.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("aliases expand"), "{error}");
        assert!(parse("a: *nowhere\n").is_err());
    }

    #[test]
    fn openapi_yaml_deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
        let block = (0..200)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>();
        let error = parse(&block).unwrap_err();
        assert!(error.message.contains("nested deeper"), "{error}");
    }

    #[test]
    fn openapi_json_is_read_and_duplicates_refused() {
        assert_eq!(
            parse("{\n\t\"a\": [1, 2.5, null, \"x\"]\n}"),
            Ok(json!({"a": [1, 2.5, null, "x"]}))
        );
        let error = parse("{\"a\": 1,\n \"a\": 2}").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(error.message.contains("duplicate key \"a\""), "{error}");
        // A YAML flow mapping that is not JSON still reads.
        assert_eq!(parse("{a: 1}"), Ok(json!({"a": 1})));
    }

    /// A short file of aliases to one long string: refused by bytes before it can grow.
    #[test]
    fn openapi_yaml_aliases_to_a_long_string_are_bounded_by_bytes() {
        let long = "x".repeat(1 << 20);
        let mut text = format!("a: &big \"{long}\"\nb:\n");
        for _ in 0..100 {
            text.push_str("  - *big\n");
        }
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("bytes"), "{error}");
        // A few are fine.
        let few = format!("a: &big \"{long}\"\nb: [*big, *big]\n");
        assert!(parse(&few).is_ok());
    }

    #[test]
    fn openapi_yaml_one_document_only() {
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert!(parse("").is_err());
        assert!(parse("a: .inf\n").is_err());
    }
}
