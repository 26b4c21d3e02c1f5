//! Operands of body rules as the contract writes them in TOML: `{path.NAME}`, `{body/POINTER}`
//! or a literal. The policy holds the typed [`Operand`]; only the configuration reads TOML.

use crate::policy::rar::{JsonPointer, Operand};

/// Reads an operand as the contract writes it: `{path.NAME}`, `{body/POINTER}` or a literal.
pub(super) fn parse_operand(value: &toml::Value) -> Result<Operand, String> {
    if let toml::Value::String(text) = value {
        if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            if let Some(name) = inner.strip_prefix("path.") {
                return Ok(Operand::PathParam(name.to_string()));
            }
            if let Some(pointer) = inner.strip_prefix("body") {
                if pointer.is_empty() {
                    return Err(
                        "{body} needs a pointer, e.g. {body/instructedAmount/amount}".into(),
                    );
                }
                return JsonPointer::parse(pointer).map(Operand::Body);
            }
            return Err(format!(
                "\"{text}\" is neither {{path.NAME}} nor {{body/POINTER}}"
            ));
        }
    }
    serde_json::to_value(value)
        .map(Operand::Literal)
        .map_err(|e| format!("literal cannot be used: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_are_typed() {
        let s = |t: &str| toml::Value::String(t.into());
        assert_eq!(
            parse_operand(&s("{path.account_id}")),
            Ok(Operand::PathParam("account_id".into()))
        );
        assert!(matches!(
            parse_operand(&s("{body/creditorAccount/iban}")),
            Ok(Operand::Body(_))
        ));
        assert_eq!(
            parse_operand(&s("EUR")),
            Ok(Operand::Literal(serde_json::json!("EUR")))
        );
        assert!(parse_operand(&s("{query.x}")).is_err());
        assert!(parse_operand(&s("{body}")).is_err());
        assert!(parse_operand(&s("{bodyx}")).is_err());
    }
}
