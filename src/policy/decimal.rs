//! Exact decimal numbers for amount comparisons: "100.00" equals "100.0", and nothing ever
//! goes through a float. Plain notation only (`-12.50`); exponents are refused.

use std::borrow::Cow;
use std::cmp::Ordering;

/// Borrows the digits of the text it was parsed from (JSON numbers are printed first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decimal<'a> {
    negative: bool,
    /// Integer digits without leading zeros.
    whole: Cow<'a, str>,
    /// Fraction digits without trailing zeros.
    fraction: Cow<'a, str>,
}

impl<'a> Decimal<'a> {
    pub(crate) fn parse(text: &'a str) -> Option<Decimal<'a>> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) if !f.is_empty() => (w, f),
            Some(_) => return None,
            None => (digits, ""),
        };
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let whole = whole.trim_start_matches('0');
        let fraction = fraction.trim_end_matches('0');
        let zero = whole.is_empty() && fraction.is_empty();
        Some(Decimal {
            negative: negative && !zero,
            whole: Cow::Borrowed(whole),
            fraction: Cow::Borrowed(fraction),
        })
    }

    /// A JSON number or a string holding a plain decimal.
    pub(crate) fn from_json(value: &'a serde_json::Value) -> Option<Decimal<'a>> {
        match value {
            serde_json::Value::String(text) => Decimal::parse(text),
            serde_json::Value::Number(number) => {
                let text = number.to_string();
                let parsed = Decimal::parse(&text)?;
                Some(Decimal {
                    negative: parsed.negative,
                    whole: Cow::Owned(parsed.whole.into_owned()),
                    fraction: Cow::Owned(parsed.fraction.into_owned()),
                })
            }
            _ => None,
        }
    }

    fn cmp_magnitude(&self, other: &Decimal<'_>) -> Ordering {
        self.whole
            .len()
            .cmp(&other.whole.len())
            .then_with(|| self.whole.cmp(&other.whole))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

impl Ord for Decimal<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal<'_> {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn equal_amounts_in_different_notations() {
        assert_eq!(d("100.00"), d("100.0"));
        assert_eq!(d("100"), d("100.000"));
        assert_eq!(d("0100.5"), d("100.50"));
        assert_eq!(d("-0.0"), d("0"));
    }

    #[test]
    fn ordering_is_exact() {
        assert!(d("100.01") > d("100.001"));
        assert!(d("99.999999999999999999") < d("100"));
        assert!(d("-5") < d("-4.99"));
        assert!(d("-1") < d("0.0001"));
        assert!(d("1000") > d("999.99"));
    }

    #[test]
    fn non_decimals_are_refused() {
        for bad in ["", "-", "1e3", "1.", ".5", "abc", "1,5", "+1", "1.2.3"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    /// Property: for integers and two-place fractions, the order agrees with integer cents.
    #[test]
    fn property_agrees_with_integer_cents() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2_000_001) as i64 - 1_000_000
        };
        let text = |cents: i64| {
            let sign = if cents < 0 { "-" } else { "" };
            format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
        };
        for _ in 0..5_000 {
            let (a, b) = (next(), next());
            assert_eq!(
                d(&text(a)).cmp(&d(&text(b))),
                a.cmp(&b),
                "{} vs {}",
                text(a),
                text(b)
            );
        }
    }
}
