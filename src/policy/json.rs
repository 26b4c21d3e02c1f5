//! One JSON, one reading: the request bodies that `{body/...}` rules judge are parsed here, and
//! only a body that every JSON reader reads the same way is accepted (RFC 8259 §4, RFC 7493
//! I-JSON §2). Readers disagree on duplicate member names (serde_json keeps the last, others
//! the first), on names that differ only in case (ASP.NET Core, Newtonsoft and Go bind them
//! case-insensitively; Go also folds look-alikes such as U+212A KELVIN SIGN to `k`), and on
//! numbers with more digits than a double holds (rounded by some, kept exactly by decimal
//! readers). So a body is refused when it has a duplicate member at any depth, two members of
//! one object whose names are equal under Unicode case folding, a number whose value is not
//! exactly the one its shortest double text denotes, a byte-order mark, invalid UTF-8, a lone
//! surrogate escape, or nesting deeper than [`MAX_DEPTH`].

use serde_json::{Map, Number, Value};
use std::collections::HashSet;

/// Deeper nesting is refused (serde_json's own limit is 128; no payment API nests this deep).
pub(crate) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON text (RFC 8259 grammar), or invalid UTF-8.
    Syntax,
    /// The body starts with a byte-order mark (RFC 8259 §8.1: must not be added).
    ByteOrderMark,
    /// The same member name twice in one object (RFC 8259 §4, RFC 7493 §2.3).
    DuplicateMember,
    /// Two member names of one object equal under Unicode case folding.
    CaseFoldedMember,
    /// A number that would not read the same everywhere (RFC 7493 §2.2).
    InexactNumber,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl JsonError {
    /// The rejection reason, for metrics and the access log.
    pub fn reason(self) -> &'static str {
        match self {
            JsonError::Syntax => "body_malformed",
            JsonError::ByteOrderMark => "body_byte_order_mark",
            JsonError::DuplicateMember => "body_duplicate_member",
            JsonError::CaseFoldedMember => "body_case_folded_member",
            JsonError::InexactNumber => "body_inexact_number",
            JsonError::TooDeep => "body_too_deep",
        }
    }

    /// The `error_description` (names no member: the text is the client's own).
    pub fn describe(self) -> &'static str {
        match self {
            JsonError::Syntax => "the request body is not valid JSON",
            JsonError::ByteOrderMark => "the request body starts with a byte-order mark",
            JsonError::DuplicateMember => "the request body has a duplicate member name",
            JsonError::CaseFoldedMember => {
                "the request body has member names that differ only in case"
            }
            JsonError::InexactNumber => {
                "the request body has a number that cannot be read exactly; send it as a string"
            }
            JsonError::TooDeep => "the request body is nested too deeply",
        }
    }
}

/// Parses a whole body strictly (see the module doc).
pub(crate) fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_with(bytes, false)
}

/// Parses the claims of a token or an introspection response: only a member twice is
/// refused (the one ambiguity that lets two readers act on two values). Names that differ
/// only in case are an AS's to issue (Keycloak keys `resource_access` by client id, `App` and
/// `app` alike), and numbers are read as serde_json reads them.
pub(crate) fn parse_claims(bytes: &[u8]) -> Result<Value, JsonError> {
    parse_with(bytes, true)
}

fn parse_with(bytes: &[u8], claims: bool) -> Result<Value, JsonError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(JsonError::ByteOrderMark);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError::Syntax)?;
    let mut reader = Reader {
        bytes: text.as_bytes(),
        at: 0,
        claims,
    };
    let value = reader.value(0)?;
    reader.whitespace();
    if reader.at != reader.bytes.len() {
        return Err(JsonError::Syntax);
    }
    Ok(value)
}

/// The key under which member names are compared for case: Unicode simple folding as Go's
/// `strings.EqualFold` applies it (upper, then lower, maps `ſ`/`K`/`k`/`K` alike).
fn folded(name: &str) -> String {
    name.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Claims, not a body: case-folded names and inexact numbers are accepted.
    claims: bool,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(JsonError::Syntax)
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(JsonError::Syntax)
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.whitespace();
        match self.peek().ok_or(JsonError::Syntax)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b't' => self.literal(b"true", Value::Bool(true)),
            b'f' => self.literal(b"false", Value::Bool(false)),
            b'n' => self.literal(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number().map(Value::Number),
            _ => Err(JsonError::Syntax),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.expect(b'{')?;
        let mut members = Map::new();
        let mut folded_names = HashSet::new();
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.whitespace();
            let name = self.string()?;
            self.whitespace();
            self.expect(b':')?;
            let value = self.value(depth)?;
            if members.contains_key(&name) {
                return Err(JsonError::DuplicateMember);
            }
            if !self.claims && !folded_names.insert(folded(&name)) {
                return Err(JsonError::CaseFoldedMember);
            }
            members.insert(name, value);
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(JsonError::Syntax),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(JsonError::Syntax),
            }
        }
    }

    /// A string (RFC 8259 §7); the input is valid UTF-8, so unescaped runs are copied whole.
    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.at += 1;
            }
            // Stops only at ASCII bytes, so both ends are character boundaries.
            let run =
                std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| JsonError::Syntax)?;
            out.push_str(run);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    out.push(self.escape()?);
                }
                _ => return Err(JsonError::Syntax),
            }
        }
    }

    fn escape(&mut self) -> Result<char, JsonError> {
        let byte = self.peek().ok_or(JsonError::Syntax)?;
        self.at += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                match first {
                    0xD800..=0xDBFF => {
                        // I-JSON §2.1: a high surrogate must be followed by a low one.
                        if !self.bytes[self.at..].starts_with(b"\\u") {
                            return Err(JsonError::Syntax);
                        }
                        self.at += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(JsonError::Syntax);
                        }
                        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                        char::from_u32(code).ok_or(JsonError::Syntax)?
                    }
                    0xDC00..=0xDFFF => return Err(JsonError::Syntax),
                    _ => char::from_u32(first).ok_or(JsonError::Syntax)?,
                }
            }
            _ => return Err(JsonError::Syntax),
        })
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or(JsonError::Syntax)?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + char::from(digit).to_digit(16).ok_or(JsonError::Syntax)?;
        }
        self.at += 4;
        Ok(value)
    }

    /// A number (RFC 8259 §6), kept only when its value survives the reading every JSON
    /// library does: integers that fit 64 bits, and other numbers whose decimal value is the
    /// one the shortest text of their double denotes.
    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(JsonError::Syntax),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(JsonError::Syntax);
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(JsonError::Syntax);
            }
            self.digits();
        }
        let text =
            std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| JsonError::Syntax)?;
        if integer {
            if let Ok(n) = text.parse::<u64>() {
                return Ok(Number::from(n));
            }
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Number::from(n));
            }
            if !self.claims {
                return Err(JsonError::InexactNumber);
            }
        }
        let double = text.parse::<f64>().map_err(|_| JsonError::Syntax)?;
        if self.claims {
            return Number::from_f64(double).ok_or(JsonError::InexactNumber);
        }
        // Below the normal range a double keeps fewer digits, and common readers round such
        // numbers differently (serde_json reads 730E-311 as 7.299999999999997e-309).
        if double != 0.0 && double.abs() < f64::MIN_POSITIVE {
            return Err(JsonError::InexactNumber);
        }
        let number = Number::from_f64(double).ok_or(JsonError::InexactNumber)?;
        if Scientific::of(text) != Scientific::of(&number.to_string()) {
            return Err(JsonError::InexactNumber);
        }
        Ok(number)
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
    }
}

/// A decimal number as sign, significant digits and the power of ten of the last of them:
/// `-12.50`, `-1.25e1` and `-0.125E2` are all (true, "125", -1).
#[derive(Debug, PartialEq, Eq)]
struct Scientific {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Scientific {
    /// Of a JSON number's text (already checked against the grammar).
    fn of(text: &str) -> Option<Scientific> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits: String = whole.chars().chain(fraction.chars()).collect();
        let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
        let trailing = digits.len() - digits.trim_end_matches('0').len();
        digits.truncate(digits.len() - trailing);
        exponent = exponent.checked_add(i64::try_from(trailing).ok()?)?;
        let digits = digits.trim_start_matches('0').to_string();
        if digits.is_empty() {
            // Zero: -0 and 0 are the same value to every decimal reader.
            return Some(Scientific {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Some(Scientific {
            negative,
            digits,
            exponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_json_duplicate_members_at_any_depth_are_refused() {
        for body in [
            r#"{"a":1,"a":2}"#,
            r#"{"instructedAmount":{"amount":"9999.00"},"instructedAmount":{"amount":"123.50"}}"#,
            r#"{"x":{"amount":"1","amount":"2"}}"#,
            r#"[{"a":1,"a":1}]"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            assert_eq!(
                parse(body.as_bytes()),
                Err(JsonError::DuplicateMember),
                "{body}"
            );
        }
    }

    #[test]
    fn hi_json_member_names_equal_under_case_folding_are_refused() {
        for body in [
            r#"{"instructedAmount":{},"InstructedAmount":{}}"#,
            r#"{"iban":"a","IBAN":"b"}"#,
            "{\"k\":1,\"\u{212A}\":2}",
            "{\"s\":1,\"\u{17F}\":2}",
        ] {
            assert_eq!(
                parse(body.as_bytes()),
                Err(JsonError::CaseFoldedMember),
                "{body}"
            );
        }
        // The same names in different objects are fine.
        assert!(parse(br#"{"a":{"Id":1},"b":{"id":2}}"#).is_ok());
    }

    #[test]
    fn hi_json_numbers_are_kept_only_when_every_reader_reads_them_alike() {
        for exact in [
            "123.5",
            "123.50",
            "0.1",
            "-0.0",
            "1e2",
            "1.25E-3",
            "18446744073709551615",
            "-9223372036854775808",
            "0",
        ] {
            let value = parse(exact.as_bytes()).unwrap_or_else(|e| panic!("{exact}: {e:?}"));
            assert!(value.is_number(), "{exact}");
        }
        for inexact in [
            "123.500000000000000001",
            "18446744073709551616",
            "-9223372036854775809",
            "0.30000000000000000001",
            "1e400",
            "9007199254740993.0",
            "730E-311",
            "5e-324",
        ] {
            assert_eq!(
                parse(inexact.as_bytes()),
                Err(JsonError::InexactNumber),
                "{inexact}"
            );
        }
    }

    #[test]
    fn hi_json_encodings_other_than_plain_utf8_are_refused() {
        assert_eq!(parse(b"\xEF\xBB\xBF{}"), Err(JsonError::ByteOrderMark));
        assert_eq!(parse(b"{\"a\":\"\xFF\"}"), Err(JsonError::Syntax));
        assert_eq!(parse(br#"{"a":"\ud800"}"#), Err(JsonError::Syntax));
        assert_eq!(parse(br#"{"a":"\udc00\ud800"}"#), Err(JsonError::Syntax));
        assert_eq!(
            parse(br#""\ud83d\ude00""#),
            Ok(Value::String("\u{1F600}".into()))
        );
    }

    #[test]
    fn hi_json_the_grammar_is_rfc_8259() {
        for bad in [
            "",
            " ",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"\t\"",
            "\"\\x\"",
            "[1] [2]",
            "'a'",
            "NaN",
            "Infinity",
        ] {
            assert_eq!(parse(bad.as_bytes()), Err(JsonError::Syntax), "{bad:?}");
        }
        let value = parse(b" {\"a\" : [true, false, null, -1, \"x\\n\\u00e9\"]} ").unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": [true, false, null, -1, "x\n\u{e9}"]})
        );
    }

    #[test]
    fn hi_json_nesting_is_bounded() {
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(deep.as_bytes()).is_ok());
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deeper.as_bytes()), Err(JsonError::TooDeep));
        let attack = "{\"a\":".repeat(100_000);
        assert_eq!(parse(attack.as_bytes()), Err(JsonError::TooDeep));
    }

    #[test]
    fn hi_json_what_serde_json_reads_the_strict_reader_reads_alike() {
        for body in [
            r#"{"instructedAmount":{"currency":"EUR","amount":"123.50"},"creditorAccount":{"iban":"DE02"}}"#,
            r#"[1, 2.5, -3e-2, {"a": "b\"c"}, [], {}]"#,
        ] {
            let loose: Value = serde_json::from_str(body).unwrap();
            assert_eq!(parse(body.as_bytes()).unwrap(), loose, "{body}");
        }
    }
}
