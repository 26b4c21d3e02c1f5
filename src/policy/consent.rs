//! Consent bound the ways open-banking ecosystems bind it outside RAR: a route's own `match`
//! rules comparing two operands (UK Open Banking's `openbanking_intent_id` claim against the
//! body's `Data.ConsentId`), a consent id captured from a scope by `consent_scope` (Brazil's
//! `consent:<id>`, Berlin Group's `AIS:<id>`), and headers a route requires.

use super::rar::{Comparison, Operand};

/// `consent_scope = "consent:{consent_id}"`: one `{NAME}` with literal text around it. A
/// token must hold exactly one scope of this shape; its captured part is `{scope.NAME}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopePattern {
    text: String,
    prefix: String,
    name: String,
    suffix: String,
}

impl ScopePattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "\"{text}\" must be a scope with one {{NAME}} in it, e.g. \"consent:{{consent_id}}\""
            )
        };
        let (prefix, rest) = text.split_once('{').ok_or_else(shape)?;
        let (name, suffix) = rest.split_once('}').ok_or_else(shape)?;
        let name_ok =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok || prefix.is_empty() || suffix.contains(['{', '}']) {
            return Err(shape());
        }
        // RFC 6749 §3.3: a scope token is visible ASCII without space, `"` or `\`.
        let scope_char = |b: u8| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\';
        if !prefix.bytes().chain(suffix.bytes()).all(scope_char) {
            return Err(format!("\"{text}\" has a character a scope cannot hold"));
        }
        Ok(ScopePattern {
            text: text.to_string(),
            prefix: prefix.to_string(),
            name: name.to_string(),
            suffix: suffix.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part of `scope` standing for `{NAME}`, when the scope has this shape.
    pub fn capture<'s>(&self, scope: &'s str) -> Option<&'s str> {
        scope
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())
            .filter(|captured| !captured.is_empty())
    }
}

/// A route's own rule: `"{body/Data/ConsentId}" = { equals = "{claim/openbanking_intent_id}" }`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRule {
    pub left: Operand,
    pub comparison: Comparison,
    pub right: Operand,
}

impl std::fmt::Display for RouteRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.left, self.comparison.name(), self.right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_pattern_captures_one_part() {
        let brazil = ScopePattern::parse("consent:{consent_id}").unwrap();
        assert_eq!(brazil.name(), "consent_id");
        assert_eq!(
            brazil.capture("consent:urn:bank:C1DD33123"),
            Some("urn:bank:C1DD33123")
        );
        assert_eq!(brazil.capture("consent:"), None);
        assert_eq!(brazil.capture("accounts"), None);
        let suffixed = ScopePattern::parse("AIS:{id}:read").unwrap();
        assert_eq!(suffixed.capture("AIS:42:read"), Some("42"));
        assert_eq!(suffixed.capture("AIS:42"), None);
        for bad in [
            "consent",
            "{id}",
            "consent:{}",
            "consent:{a-b}",
            "consent:{a}{b}",
            "con sent:{a}",
        ] {
            assert!(ScopePattern::parse(bad).is_err(), "{bad}");
        }
    }
}
