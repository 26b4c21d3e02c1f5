//! Operands of body rules as the contract writes them in TOML: `{path.NAME}`, `{body/POINTER}`
//! or a literal. The policy holds the typed [`Operand`]; only the configuration reads TOML.

use crate::policy::rar::{JsonPointer, Operand};

/// Whether a rule may judge the header field `name`: not the credential and proof (judged by
/// the gateway and not forwarded), not one the gateway sets, removes or the connection
/// consumes (see `gateway_headers`).
pub(super) fn unjudgeable(name: &str) -> bool {
    crate::gateway_headers::not_passed_as_sent(name)
}

/// Reads an operand as the contract writes it: `{path.NAME}`, `{body/POINTER}`,
/// `{claim/POINTER}`, `{scope.NAME}`, `{header.NAME}` or a literal.
pub(super) fn parse_operand(value: &toml::Value) -> Result<Operand, String> {
    if let toml::Value::String(text) = value {
        if let Some(operand) = parse_reference(text)? {
            return Ok(operand);
        }
    }
    serde_json::to_value(value)
        .map(Operand::Literal)
        .map_err(|e| format!("literal cannot be used: {e}"))
}

/// `{...}`: a reference to a value of the request or the token; `None` for other text.
pub(super) fn parse_reference(text: &str) -> Result<Option<Operand>, String> {
    let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return Ok(None);
    };
    let pointer = |source: &str, rest: &str, example: &str| {
        if rest.is_empty() || rest == "/" {
            return Err(format!("{{{source}}} needs a pointer, e.g. {example}"));
        }
        JsonPointer::parse(rest)
    };
    let operand = if let Some(name) = inner.strip_prefix("path.") {
        Operand::PathParam(name.to_string())
    } else if let Some(rest) = inner.strip_prefix("body") {
        Operand::Body(pointer("body", rest, "{body/instructedAmount/amount}")?)
    } else if let Some(rest) = inner.strip_prefix("claim") {
        let claim = pointer("claim", rest, "{claim/openbanking_intent_id}")?;
        if claim.as_str() == "/authorization_details"
            || claim.as_str().starts_with("/authorization_details/")
        {
            return Err(
                "authorization_details are matched by an [[route.authorization_details]] requirement, not {claim/...}"
                    .into(),
            );
        }
        Operand::Claim(claim)
    } else if let Some(name) = inner.strip_prefix("scope.") {
        Operand::Scope(name.to_string())
    } else if let Some(name) = inner.strip_prefix("header.") {
        let header = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("\"{name}\" is not a header field name"))?;
        if unjudgeable(header.as_str()) {
            return Err(format!(
                "{{header.{name}}}: the gateway does not judge {header} by a rule"
            ));
        }
        Operand::Header(header)
    } else {
        return Err(format!(
            "\"{text}\" is none of {{path.NAME}}, {{body/POINTER}}, {{claim/POINTER}}, {{scope.NAME}}, {{header.NAME}}"
        ));
    };
    Ok(Some(operand))
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
        assert_eq!(
            parse_operand(&s("{scope.consent_id}")),
            Ok(Operand::Scope("consent_id".into()))
        );
        assert_eq!(
            parse_operand(&s("{header.Consent-ID}")),
            Ok(Operand::Header(http::HeaderName::from_static("consent-id")))
        );
        assert!(matches!(
            parse_operand(&s("{claim/openbanking_intent_id}")),
            Ok(Operand::Claim(_))
        ));
        for bad in [
            "{claim}",
            "{claim/}",
            "{claim/authorization_details/0}",
            "{header.Authorization}",
            "{header.DPoP}",
            "{header.bad name}",
            "{claimx}",
        ] {
            assert!(parse_operand(&s(bad)).is_err(), "{bad}");
        }
        assert!(parse_operand(&s("{query.x}")).is_err());
        assert!(parse_operand(&s("{body}")).is_err());
        assert!(parse_operand(&s("{bodyx}")).is_err());
    }
}
