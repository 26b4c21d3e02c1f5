//! What an operand stands for in one request, and how two values compare. Every source is read
//! strictly: a header sent twice, a claim that is absent or a scope that is not there makes
//! the rule false (fail closed), with the reason for the refusal's description.

use super::authorize::RequestView;
use super::decimal::Decimal;
use super::rar::{Comparison, Operand};
use crate::grant::Grant;
use serde_json::Value;
use std::borrow::Cow;

/// Where operands are read: the request, the token's grant and the scope `consent_scope`
/// captured.
pub(super) struct Sources<'s> {
    pub request: &'s RequestView<'s>,
    pub grant: &'s Grant,
    pub scope: Option<&'s str>,
}

/// Why an operand has no value in this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unresolved {
    Missing,
    Repeated,
    NotText,
    /// A claim compared as one value must be a string, or an object or array compared whole
    /// (a consent's Initiation); a number, boolean or null is not believed as an identifier.
    NotString,
}

impl Unresolved {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Unresolved::Missing => "is absent",
            Unresolved::Repeated => "is sent more than once",
            Unresolved::NotText => "is not visible ASCII text",
            Unresolved::NotString => "is not a string, object or array",
        }
    }
}

impl<'s> Sources<'s> {
    /// The value of an operand compared as one value.
    pub(super) fn value(&self, operand: &'s Operand) -> Result<Cow<'s, Value>, Unresolved> {
        let value = self.container(operand)?;
        let comparable = matches!(
            &*value,
            Value::String(_) | Value::Object(_) | Value::Array(_)
        );
        if matches!(operand, Operand::Claim(_)) && !comparable {
            return Err(Unresolved::NotString);
        }
        Ok(value)
    }

    /// The value of an operand of any JSON type (the array `contains` looks into).
    pub(super) fn container(&self, operand: &'s Operand) -> Result<Cow<'s, Value>, Unresolved> {
        match operand {
            Operand::Literal(value) => Ok(Cow::Borrowed(value)),
            Operand::PathParam(name) => self
                .request
                .params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, value)| Cow::Owned(Value::String(value.clone())))
                .ok_or(Unresolved::Missing),
            Operand::Body(pointer) => self
                .request
                .body
                .and_then(|body| pointer.resolve(body))
                .map(Cow::Borrowed)
                .ok_or(Unresolved::Missing),
            Operand::Claim(pointer) => pointer
                .resolve_in(&self.grant.claims)
                .map(Cow::Borrowed)
                .ok_or(Unresolved::Missing),
            Operand::Scope(_) => self
                .scope
                .map(|s| Cow::Owned(Value::String(s.to_string())))
                .ok_or(Unresolved::Missing),
            Operand::Header(name) => {
                let mut values = self.request.headers.get_all(name).iter();
                let value = values.next().ok_or(Unresolved::Missing)?;
                if values.next().is_some() {
                    return Err(Unresolved::Repeated);
                }
                let text = value.to_str().map_err(|_| Unresolved::NotText)?;
                Ok(Cow::Owned(Value::String(text.to_string())))
            }
        }
    }
}

/// How `equals` (and `contains`) compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Equality {
    /// Decimals folded ("100.00" equals 100): RAR rules, and a route rule against a literal.
    Decimal,
    /// Exact JSON: a route rule between two values of the request and the token, where both
    /// are identifiers or whole objects ("0123" never equals 123, "12.5" never "12.50").
    Exact,
}

/// `field <comparison> operand`.
pub(super) fn holds(comparison: Comparison, field: &Value, operand: &Value) -> bool {
    holds_with(Equality::Decimal, comparison, field, operand)
}

pub(super) fn holds_with(
    equality: Equality,
    comparison: Comparison,
    field: &Value,
    operand: &Value,
) -> bool {
    let same = |a: &Value, b: &Value| match equality {
        Equality::Decimal => equals(a, b),
        Equality::Exact => a == b,
    };
    match comparison {
        Comparison::Equals => same(field, operand),
        Comparison::Contains => match field {
            Value::Array(items) => items.iter().any(|item| same(item, operand)),
            _ => false,
        },
        Comparison::AtLeast => compare(field, operand).is_some_and(|o| o.is_ge()),
        Comparison::AtMost => compare(field, operand).is_some_and(|o| o.is_le()),
    }
}

/// Decimals compare exactly ("100.00" equals "100.0") when both sides are plain decimals and
/// one of them is a JSON number or has a decimal point; otherwise exact JSON equality (so
/// account "0123" never equals "123").
fn equals(a: &Value, b: &Value) -> bool {
    if a.is_object() || a.is_array() || b.is_object() || b.is_array() {
        return a == b;
    }
    let decimal_intent = |v: &Value| match v {
        Value::Number(_) => true,
        Value::String(s) => s.contains('.'),
        _ => false,
    };
    if decimal_intent(a) || decimal_intent(b) {
        if let Some(order) = compare(a, b) {
            return order.is_eq();
        }
    }
    a == b
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    Some(Decimal::from_json(a)?.cmp(&Decimal::from_json(b)?))
}
