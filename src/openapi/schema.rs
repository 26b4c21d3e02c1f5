//! Fields of a JSON request body worth a rule (`{body/POINTER}`), from its schema as written (JSON Schema: the
//! OpenAPI 3.0 subset or 2020-12 in 3.1; the same walk for both): the scalar leaves under
//! `properties`, through `$ref` and `allOf`, as RFC 6901 pointers (`/Data/Initiation/
//! InstructedAmount/Amount`), the fields every valid body carries (required all the way
//! down) first. Arrays, `oneOf`/`anyOf` and free-form objects are not descended.
//!
//! Bounded: [`MAX_DEPTH`] levels of properties, [`MAX_SCHEMAS`] schemas visited. A property
//! that refers back to a schema it is inside (a recursive type) ends its branch; `$ref`s or
//! `allOf`s that come back to themselves without a property between never describe a body, and
//! are a [`RefError::Cycle`].

use super::document::{local_target, pointer_token, RefError};
use serde_json::Value;

/// How many levels of `properties` are descended.
const MAX_DEPTH: usize = 6;
/// How many schemas one body's walk visits at most.
const MAX_SCHEMAS: usize = 256;

struct Leaf {
    pointer: String,
    required: bool,
}

/// The fields of `schema` (a schema in `root`), required ones first.
pub(super) fn body_fields(root: &Value, schema: &Value) -> Result<Vec<String>, RefError> {
    let mut walk = Walk {
        root,
        budget: MAX_SCHEMAS,
        leaves: Vec::new(),
    };
    walk.visit(schema, String::new(), true, 0, &[])?;
    let (required, optional): (Vec<Leaf>, Vec<Leaf>) =
        walk.leaves.into_iter().partition(|leaf| leaf.required);
    Ok(required
        .into_iter()
        .chain(optional)
        .map(|leaf| leaf.pointer)
        .collect())
}

/// A property of an object schema: its name and schema.
struct Member<'v> {
    name: String,
    schema: &'v Value,
}

/// What an object schema holds, gathered from it and its `allOf` parts.
#[derive(Default)]
struct Object<'v> {
    members: Vec<Member<'v>>,
    /// `required` lists apply across the parts (a part may require what another declares).
    required: Vec<String>,
    /// The references followed to reach the parts, for the properties' recursion check.
    expanded: Vec<String>,
}

struct Walk<'v> {
    root: &'v Value,
    budget: usize,
    leaves: Vec<Leaf>,
}

impl<'v> Walk<'v> {
    /// `ancestors`: the references expanded by the objects this schema is a property of.
    fn visit(
        &mut self,
        schema: &'v Value,
        pointer: String,
        required: bool,
        depth: usize,
        ancestors: &[String],
    ) -> Result<(), RefError> {
        if self.budget == 0 {
            return Ok(());
        }
        self.budget -= 1;
        let mut chain = Vec::new();
        let Some(schema) = self.follow(schema, &mut chain, ancestors)? else {
            return Ok(());
        };
        let mut object = Object::default();
        self.gather(schema, &mut chain, ancestors, &mut object, 0)?;
        if object.members.is_empty() {
            if depth > 0 && is_scalar(schema) {
                self.leaves.push(Leaf { pointer, required });
            }
            return Ok(());
        }
        if depth >= MAX_DEPTH {
            return Ok(());
        }
        let mut inside = ancestors.to_vec();
        inside.extend(chain);
        inside.extend(object.expanded);
        for member in object.members {
            let child = format!("{pointer}/{}", pointer_token(&member.name));
            let member_required = required && object.required.contains(&member.name);
            self.visit(member.schema, child, member_required, depth + 1, &inside)?;
        }
        Ok(())
    }

    /// Follows `$ref`s to a schema that is not one. `chain` holds the references followed
    /// since the last property step (meeting one again is a cycle); `None`: a reference to
    /// a schema this one is a property of (recursion: the branch ends).
    fn follow(
        &self,
        mut schema: &'v Value,
        chain: &mut Vec<String>,
        ancestors: &[String],
    ) -> Result<Option<&'v Value>, RefError> {
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            if let Some(start) = chain.iter().position(|r| r == reference) {
                let mut cycle = chain.split_off(start);
                cycle.push(reference.to_string());
                return Err(RefError::Cycle(cycle));
            }
            if ancestors.iter().any(|r| r == reference) {
                return Ok(None);
            }
            chain.push(reference.to_string());
            schema = local_target(self.root, reference)?.0;
        }
        Ok(Some(schema))
    }

    /// The properties and `required` names of `schema` and of its `allOf` parts.
    fn gather(
        &mut self,
        schema: &'v Value,
        chain: &mut Vec<String>,
        ancestors: &[String],
        object: &mut Object<'v>,
        nesting: usize,
    ) -> Result<(), RefError> {
        if let Some(names) = schema.get("required").and_then(Value::as_array) {
            object
                .required
                .extend(names.iter().filter_map(Value::as_str).map(String::from));
        }
        if let Some(Value::Object(properties)) = schema.get("properties") {
            for (name, property) in properties {
                // `{body/}` names no field a rule can read.
                let unnamed = name.is_empty();
                if !unnamed && !object.members.iter().any(|m| m.name == *name) {
                    object.members.push(Member {
                        name: name.clone(),
                        schema: property,
                    });
                }
            }
        }
        let Some(Value::Array(parts)) = schema.get("allOf") else {
            return Ok(());
        };
        if nesting >= MAX_DEPTH {
            return Ok(());
        }
        for part in parts {
            if self.budget == 0 {
                return Ok(());
            }
            self.budget -= 1;
            // The chain is a stack: two parts that name one schema are not a cycle.
            let mark = chain.len();
            if let Some(part) = self.follow(part, chain, ancestors)? {
                self.gather(part, chain, ancestors, object, nesting + 1)?;
            }
            object.expanded.extend(chain.drain(mark..));
        }
        Ok(())
    }
}

/// A schema for one value a rule can compare: not an array, an object or a choice.
fn is_scalar(schema: &Value) -> bool {
    let Some(object) = schema.as_object() else {
        return false;
    };
    let types: Vec<&str> = match object.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    !types.iter().any(|t| *t == "array" || *t == "object")
        && ["items", "additionalProperties", "oneOf", "anyOf"]
            .iter()
            .all(|key| !object.contains_key(*key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(root: &Value, reference: &str) -> Result<Vec<String>, RefError> {
        body_fields(root, &json!({"$ref": reference}))
    }

    #[test]
    fn openapi_body_fields_required_first_through_refs_and_all_of() {
        let root = json!({"components": {"schemas": {
            "Amount": {"type": "object", "required": ["Amount", "Currency"], "properties": {
                "Amount": {"type": "string"}, "Currency": {"type": "string"}}},
            "Payment": {"type": "object", "required": ["Data"], "properties": {
                "Data": {"allOf": [
                    {"$ref": "#/components/schemas/Base"},
                    {"required": ["InstructedAmount"], "properties": {
                        "InstructedAmount": {"$ref": "#/components/schemas/Amount"},
                        "Tags": {"type": "array", "items": {"type": "string"}}}}
                ]},
                "Note": {"type": ["string", "null"]}}},
            "Base": {"properties": {"ConsentId": {"type": "string"}}, "required": ["ConsentId"]}
        }}});
        assert_eq!(
            fields(&root, "#/components/schemas/Payment").unwrap(),
            [
                "/Data/ConsentId",
                "/Data/InstructedAmount/Amount",
                "/Data/InstructedAmount/Currency",
                "/Note",
            ]
        );
    }

    #[test]
    fn openapi_body_fields_recursive_types_end_their_branch() {
        let root = json!({"components": {"schemas": {
            "Node": {"properties": {"name": {"type": "string"},
                "child": {"$ref": "#/components/schemas/Node"}}}
        }}});
        assert_eq!(
            fields(&root, "#/components/schemas/Node").unwrap(),
            ["/name"]
        );
    }

    #[test]
    fn openapi_body_fields_ref_cycles_are_errors() {
        let root = json!({"components": {"schemas": {
            "A": {"$ref": "#/components/schemas/B"},
            "B": {"$ref": "#/components/schemas/A"},
            "C": {"allOf": [{"$ref": "#/components/schemas/C"}]}
        }}});
        assert_eq!(
            fields(&root, "#/components/schemas/A").err(),
            Some(RefError::Cycle(vec![
                "#/components/schemas/A".into(),
                "#/components/schemas/B".into(),
                "#/components/schemas/A".into(),
            ]))
        );
        assert!(matches!(
            fields(&root, "#/components/schemas/C"),
            Err(RefError::Cycle(_))
        ));
        assert_eq!(
            fields(&root, "#/components/schemas/Nope").err(),
            Some(RefError::Missing("#/components/schemas/Nope".into()))
        );
    }

    #[test]
    fn openapi_body_fields_are_bounded() {
        // Five levels, four wide at each: 1024 leaves, more than one walk visits.
        let mut wide = json!({"type": "string"});
        for _ in 0..5 {
            let properties: serde_json::Map<String, Value> =
                (0..4).map(|i| (format!("p{i}/~"), wide.clone())).collect();
            wide = json!({"type": "object", "properties": properties});
        }
        let found = body_fields(&json!({}), &wide).unwrap();
        assert!(
            !found.is_empty() && found.len() < MAX_SCHEMAS,
            "{}",
            found.len()
        );
        assert_eq!(
            found.first().map(String::as_str),
            Some("/p0~1~0/p0~1~0/p0~1~0/p0~1~0/p0~1~0")
        );
        // Deeper than MAX_DEPTH levels of properties: nothing listed.
        let mut deep = json!({"type": "string"});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"properties": {"d": deep}});
        }
        assert_eq!(
            body_fields(&json!({}), &deep).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn openapi_body_fields_two_parts_naming_one_schema_are_no_cycle() {
        let root = json!({"components": {"schemas": {
            "Common": {"properties": {"id": {"type": "string"}}},
            "Left": {"allOf": [{"$ref": "#/components/schemas/Common"}]},
            "Right": {"allOf": [{"$ref": "#/components/schemas/Common"}]},
            "Both": {"allOf": [
                {"$ref": "#/components/schemas/Left"},
                {"$ref": "#/components/schemas/Right"}
            ]}
        }}});
        assert_eq!(fields(&root, "#/components/schemas/Both").unwrap(), ["/id"]);
    }
}
