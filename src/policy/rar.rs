//! Compiled RFC 9396 `authorization_details` requirements of a route (the match language of
//! the configuration contract). Compiled and checked at load time; evaluated by the
//! authorization stage.

/// An RFC 6901 JSON pointer, already checked for syntax and split into unescaped segments
/// at load time, so resolving it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPointer {
    text: String,
    segments: Vec<String>,
}

impl JsonPointer {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.is_empty() && !text.starts_with('/') {
            return Err(format!(
                "\"{text}\" is not a JSON pointer (it must start with /)"
            ));
        }
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0') | Some('1')) {
                return Err(format!(
                    "\"{text}\" is not a JSON pointer (~ must be followed by 0 or 1)"
                ));
            }
        }
        let segments = text
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        Ok(JsonPointer {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The member it starts at (for a claim: the claim's name).
    pub fn first(&self) -> Option<&str> {
        self.segments.first().map(String::as_str)
    }

    /// The value the pointer names in an object given as its members (a token's claims).
    pub fn resolve_in<'v>(
        &self,
        members: &'v serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'v serde_json::Value> {
        let (first, rest) = self.segments.split_first()?;
        let start = members.get(first.as_str())?;
        JsonPointer::walk(start, rest)
    }

    /// The value the pointer names in `value` (RFC 6901 §4), if any.
    pub fn resolve<'v>(&self, value: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        JsonPointer::walk(value, &self.segments)
    }

    fn walk<'v>(
        value: &'v serde_json::Value,
        segments: &[String],
    ) -> Option<&'v serde_json::Value> {
        segments
            .iter()
            .try_fold(value, |current, segment| match current {
                serde_json::Value::Object(map) => map.get(segment.as_str()),
                serde_json::Value::Array(items) => {
                    let valid = !segment.is_empty()
                        && segment.bytes().all(|b| b.is_ascii_digit())
                        && (segment == "0" || !segment.starts_with('0'));
                    if valid {
                        segment.parse::<usize>().ok().and_then(|i| items.get(i))
                    } else {
                        None
                    }
                }
                _ => None,
            })
    }
}

/// What a rule compares.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `{path.NAME}`: a captured path parameter.
    PathParam(String),
    /// `{body/POINTER}`: a field of the JSON request body.
    Body(JsonPointer),
    /// `{claim/POINTER}`: a claim of the access token (JWT claims or introspection members).
    Claim(JsonPointer),
    /// `{scope.NAME}`: the part of the token's one scope matching the route's `consent_scope`.
    Scope(String),
    /// `{header.NAME}`: a request header field, sent exactly once.
    Header(http::HeaderName),
    /// Anything else: a literal value.
    Literal(serde_json::Value),
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Operand::PathParam(name) => write!(f, "{{path.{name}}}"),
            Operand::Body(pointer) => write!(f, "{{body{}}}", pointer.as_str()),
            Operand::Claim(pointer) => write!(f, "{{claim{}}}", pointer.as_str()),
            Operand::Scope(name) => write!(f, "{{scope.{name}}}"),
            Operand::Header(name) => write!(f, "{{header.{name}}}"),
            Operand::Literal(value) => write!(f, "{value}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equals,
    /// The detail's field is an array holding the operand.
    Contains,
    /// Decimal comparison, exact (never floating point).
    AtLeast,
    AtMost,
}

impl Comparison {
    /// Every operator: a new one is added here and in the matches the compiler then names.
    pub const ALL: [Comparison; 4] = [
        Comparison::Equals,
        Comparison::Contains,
        Comparison::AtLeast,
        Comparison::AtMost,
    ];

    /// Its name in the configuration (`"/field" = { NAME = operand }`).
    pub fn name(self) -> &'static str {
        match self {
            Comparison::Equals => "equals",
            Comparison::Contains => "contains",
            Comparison::AtLeast => "at_least",
            Comparison::AtMost => "at_most",
        }
    }

    pub fn parse(name: &str) -> Option<Comparison> {
        Comparison::ALL.into_iter().find(|c| c.name() == name)
    }

    /// `"x" is not one of equals, contains, …`, for configuration errors.
    pub fn unknown(name: &str) -> String {
        let names: Vec<&str> = Comparison::ALL.iter().map(|c| c.name()).collect();
        format!("\"{name}\" is not one of {}", names.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub field: JsonPointer,
    pub comparison: Comparison,
    pub operand: Operand,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetailRequirement {
    pub kind: String,
    pub actions: Vec<String>,
    pub locations: Vec<String>,
    pub datatypes: Vec<String>,
    pub rules: Vec<Rule>,
}

impl DetailRequirement {
    pub fn reads_body(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.operand, Operand::Body(_)))
    }
}

impl Operand {
    pub fn is_body(&self) -> bool {
        matches!(self, Operand::Body(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_follow_rfc_6901() {
        for good in [
            "",
            "/",
            "/accounts",
            "/a~0b/c~1d",
            "/instructedAmount/amount",
        ] {
            assert!(JsonPointer::parse(good).is_ok(), "{good}");
        }
        for bad in ["accounts", "/a~2", "/a~"] {
            assert!(JsonPointer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pointers_resolve_like_serde_json() {
        let value = serde_json::json!({"a": {"b/c": [10, 20], "m~n": 1, "": 2}, "01": 3});
        for text in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/1",
            "/a/m~0n",
            "/a/",
            "/01",
            "/a/b~1c/01",
            "/a/b~1c/2",
            "/x/y",
        ] {
            let pointer = JsonPointer::parse(text).unwrap();
            assert_eq!(pointer.resolve(&value), value.pointer(text), "{text}");
        }
    }

    /// Property: any path built from a random document resolves to the value it came from.
    #[test]
    fn property_pointers_to_every_leaf_resolve() {
        fn walk(
            value: &serde_json::Value,
            path: String,
            out: &mut Vec<(String, serde_json::Value)>,
        ) {
            out.push((path.clone(), value.clone()));
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let escaped = k.replace('~', "~0").replace('/', "~1");
                        walk(v, format!("{path}/{escaped}"), out);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, format!("{path}/{i}"), out);
                    }
                }
                _ => {}
            }
        }
        let document = serde_json::json!({"x/y": {"~": [1, {"": null, "a~b": "c"}]}, "list": [[], {}, "s"], "n": 1.5});
        let mut paths = Vec::new();
        walk(&document, String::new(), &mut paths);
        assert!(paths.len() > 8);
        for (path, expected) in paths {
            let pointer = JsonPointer::parse(&path).unwrap();
            assert_eq!(pointer.resolve(&document), Some(&expected), "{path}");
        }
    }
}
