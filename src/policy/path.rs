//! Request paths and route path templates.
//!
//! The gateway authorizes a request for one resource and forwards it to an upstream that will
//! resolve the path on its own. If the two ever disagreed about which resource a path names,
//! a consent for `/accounts/1` could be used to reach `/payments`. So the rule is strict and
//! simple: a path that a reasonable server could resolve in more than one way is refused with
//! 400 before routing. Concretely, a path is refused when it
//! - does not start with `/`, or contains an empty segment (`//accounts`, `/a//b`);
//! - has a `.` or `..` segment, also percent-encoded (`%2e`, `%2E%2e`);
//! - contains an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, or an encoded control byte (`%00`..`%1F`, `%7F`);
//! - contains `;`, raw or encoded (`%3B`): Tomcat, Jetty and Spring cut `;...` path parameters
//!   off a segment before removing dot segments, so `/accounts/..;/payments` would traverse;
//! - has a malformed percent escape, or does not decode to UTF-8.
//!
//! Everything else is matched segment by segment after percent-decoding (so `/acc%6Funts` is
//! `/accounts`, as the upstream would read it), and forwarded byte for byte as received. A
//! trailing slash is significant (`/accounts/` is not `/accounts`). The query string is never
//! part of matching.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    EncodedSeparator,
    ControlCharacter,
    BadEscape,
    NotUtf8,
    Semicolon,
}

impl PathError {
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with /",
            PathError::EmptySegment => "the request path has an empty segment",
            PathError::DotSegment => "the request path has a . or .. segment",
            PathError::EncodedSeparator => "the request path has an encoded or backslash separator",
            PathError::ControlCharacter => "the request path has a control character",
            PathError::BadEscape => "the request path has a malformed percent escape",
            PathError::NotUtf8 => "the request path is not UTF-8",
            PathError::Semicolon => "the request path has a ; (path parameters are not accepted)",
        }
    }
}

/// The decoded segments of a request path that passed the rules above.
#[derive(Debug, PartialEq, Eq)]
pub struct NormalPath<'a> {
    segments: Vec<Cow<'a, str>>,
}

impl<'a> NormalPath<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, PathError> {
        let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        if rest.is_empty() {
            return Ok(NormalPath {
                segments: Vec::new(),
            });
        }
        let mut segments = Vec::with_capacity(rest.bytes().filter(|&b| b == b'/').count() + 1);
        let mut parts = rest.split('/').peekable();
        while let Some(part) = parts.next() {
            // A single trailing slash is a legitimate, distinct resource name: keep it as an
            // empty final segment so `/accounts/` never matches `/accounts`.
            if part.is_empty() && parts.peek().is_some() {
                return Err(PathError::EmptySegment);
            }
            let decoded = percent_decode_segment(part)?;
            if decoded == "." || decoded == ".." {
                return Err(PathError::DotSegment);
            }
            segments.push(decoded);
        }
        Ok(NormalPath { segments })
    }

    pub fn segments(&self) -> &[Cow<'a, str>] {
        &self.segments
    }
}

fn percent_decode_segment(part: &str) -> Result<Cow<'_, str>, PathError> {
    if part.contains('\\') {
        return Err(PathError::EncodedSeparator);
    }
    if part.contains(';') {
        return Err(PathError::Semicolon);
    }
    if part.bytes().any(|b| b.is_ascii_control()) {
        return Err(PathError::ControlCharacter);
    }
    if !part.contains('%') {
        return Ok(Cow::Borrowed(part));
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let value = hex_pair(hex).ok_or(PathError::BadEscape)?;
            match value {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                b';' => return Err(PathError::Semicolon),
                v if v.is_ascii_control() => return Err(PathError::ControlCharacter),
                v => out.push(v),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::NotUtf8)
}

fn hex_pair(hex: &[u8]) -> Option<u8> {
    let high = (hex[0] as char).to_digit(16)?;
    let low = (hex[1] as char).to_digit(16)?;
    Some((high * 16 + low) as u8)
}

/// One segment of a route's path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// A route path such as `/accounts/{account_id}/balances`: literal segments and whole-segment
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    pub fn parse(source: &str) -> Result<Self, String> {
        let rest = source
            .strip_prefix('/')
            .ok_or_else(|| format!("\"{source}\" must start with /"))?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for part in rest.split('/') {
                segments.push(parse_template_segment(source, part)?);
            }
        }
        let mut names: Vec<&str> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(name) => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!(
                "\"{source}\" names the parameter {{{}}} twice",
                pair[0]
            ));
        }
        Ok(PathTemplate {
            source: source.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Matches a normalised path; on success returns the captured parameters in template order.
    pub fn captures(&self, path: &NormalPath<'_>) -> Option<Vec<(String, String)>> {
        let got = path.segments();
        if got.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (want, have) in self.segments.iter().zip(got) {
            match want {
                Segment::Literal(text) if text == have => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if have.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), have.to_string())),
            }
        }
        Some(params)
    }

    /// Whether both templates match exactly the same paths (parameters in the same places):
    /// no order between them, so two such routes may not share a method.
    pub fn same_shape(&self, other: &PathTemplate) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    /// Of two templates that match one path, the more specific: the one with a literal where
    /// the other has its first parameter the first does not (OpenAPI 3 §4.8.8: concrete paths
    /// are matched before templated ones). `Greater` when `self` is more specific.
    pub fn specificity(&self, other: &PathTemplate) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        for pair in self.segments.iter().zip(&other.segments) {
            match pair {
                (Segment::Literal(_), Segment::Param(_)) => return Ordering::Greater,
                (Segment::Param(_), Segment::Literal(_)) => return Ordering::Less,
                _ => {}
            }
        }
        Ordering::Equal
    }

    /// Whether `self` is strictly more specific than `other` wherever both match: the same
    /// literals where `other` has literals, and a literal somewhere `other` has a parameter.
    /// Of two overlapping templates where neither dominates (`/a/{x}/{y}` and `/{p}/b/c`),
    /// frameworks disagree on the winner, so the gateway refuses the pair.
    pub fn dominates(&self, other: &PathTemplate) -> bool {
        if self.segments.len() != other.segments.len() {
            return false;
        }
        let mut stricter = false;
        for pair in self.segments.iter().zip(&other.segments) {
            match pair {
                (Segment::Literal(a), Segment::Literal(b)) if a == b => {}
                (Segment::Literal(_), Segment::Param(_)) => stricter = true,
                (Segment::Param(_), Segment::Param(_)) => {}
                _ => return false,
            }
        }
        stricter
    }

    /// Whether some request path could match both templates.
    pub fn overlaps(&self, other: &PathTemplate) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    // A parameter never matches an empty segment (a trailing slash).
                    (Segment::Param(_), Segment::Literal(text))
                    | (Segment::Literal(text), Segment::Param(_)) => !text.is_empty(),
                    (Segment::Param(_), Segment::Param(_)) => true,
                })
    }
}

fn parse_template_segment(source: &str, part: &str) -> Result<Segment, String> {
    if let Some(inner) = part.strip_prefix('{') {
        let name = inner
            .strip_suffix('}')
            .ok_or_else(|| format!("\"{source}\": a parameter must fill a whole segment"))?;
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "\"{source}\": parameter name \"{name}\" must be lowercase letters, digits and _"
            ));
        }
        return Ok(Segment::Param(name.to_string()));
    }
    if part.is_empty() {
        return Err(format!("\"{source}\" has an empty segment"));
    }
    if part == "." || part == ".." {
        return Err(format!("\"{source}\" has a dot segment"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c);
    if let Some(bad) = part.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "\"{source}\": '{bad}' is not allowed in a literal segment"
        ));
    }
    Ok(Segment::Literal(part.to_string()))
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(raw: &str) -> Result<Vec<String>, PathError> {
        NormalPath::parse(raw).map(|p| p.segments().iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn hi_path_a_semicolon_raw_or_encoded_is_refused() {
        for path in [
            "/accounts/..;/payments",
            "/accounts/a;v=1/balances",
            "/a%3Bb",
            "/a%3bb",
            "/;",
        ] {
            assert_eq!(NormalPath::parse(path), Err(PathError::Semicolon), "{path}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        let cases = [
            ("/accounts/../payments", PathError::DotSegment),
            ("/accounts/./1", PathError::DotSegment),
            ("/accounts/%2e%2e/payments", PathError::DotSegment),
            ("/accounts/%2E/1", PathError::DotSegment),
            ("//accounts", PathError::EmptySegment),
            ("/accounts//1", PathError::EmptySegment),
            ("/accounts%2Fpayments", PathError::EncodedSeparator),
            ("/accounts%2fpayments", PathError::EncodedSeparator),
            ("/accounts%5C1", PathError::EncodedSeparator),
            ("/accounts\\1", PathError::EncodedSeparator),
            ("/accounts/%00", PathError::ControlCharacter),
            ("/accounts/%zz", PathError::BadEscape),
            ("/accounts/%2", PathError::BadEscape),
            ("/accounts/%ff", PathError::NotUtf8),
            ("accounts", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(NormalPath::parse(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn plain_and_encoded_paths_decode() {
        assert_eq!(segments("/"), Ok(vec![]));
        assert_eq!(segments("/accounts"), Ok(vec!["accounts".into()]));
        assert_eq!(segments("/acc%6Funts"), Ok(vec!["accounts".into()]));
        assert_eq!(
            segments("/accounts/"),
            Ok(vec!["accounts".into(), "".into()])
        );
        assert_eq!(
            segments("/accounts/a%20b"),
            Ok(vec!["accounts".into(), "a b".into()])
        );
    }

    #[test]
    fn templates_capture_whole_segments() {
        let template = PathTemplate::parse("/accounts/{account_id}/balances").unwrap();
        let path = NormalPath::parse("/accounts/acc-1/balances").unwrap();
        assert_eq!(
            template.captures(&path),
            Some(vec![("account_id".into(), "acc-1".into())])
        );
        for miss in [
            "/accounts/acc-1",
            "/accounts/acc-1/balances/",
            "/accounts/balances",
        ] {
            let path = NormalPath::parse(miss).unwrap();
            assert_eq!(template.captures(&path), None, "{miss}");
        }
        let root = PathTemplate::parse("/").unwrap();
        assert!(root.captures(&NormalPath::parse("/").unwrap()).is_some());
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "accounts",
            "/accounts//x",
            "/accounts/{Id}",
            "/accounts/x{id}",
            "/accounts/{id",
            "/a/{id}/b/{id}",
            "/a/..",
            "/a b",
            "/a?x=1",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn overlap_is_detected() {
        let t = |s| PathTemplate::parse(s).unwrap();
        assert!(t("/accounts/{id}").overlaps(&t("/accounts/summary")));
        assert!(t("/accounts/{id}").overlaps(&t("/accounts/{other}")));
        assert!(!t("/accounts/{id}").overlaps(&t("/accounts")));
        assert!(!t("/accounts/{id}").overlaps(&t("/payments/{id}")));
        assert!(t("/accounts/{id}").same_shape(&t("/accounts/{other}")));
        assert!(!t("/accounts/{id}").same_shape(&t("/accounts/summary")));
        use std::cmp::Ordering;
        assert_eq!(
            t("/accounts/balances").specificity(&t("/accounts/{id}")),
            Ordering::Greater
        );
        assert_eq!(
            t("/a/{x}/c").specificity(&t("/a/b/{y}")),
            Ordering::Less,
            "the leftmost literal decides"
        );
        assert!(t("/accounts/balances").dominates(&t("/accounts/{id}")));
        assert!(!t("/accounts/{id}").dominates(&t("/accounts/balances")));
        assert!(!t("/a/{x}/c").dominates(&t("/a/b/{y}")), "crossed");
        assert!(!t("/a/b/{y}").dominates(&t("/a/{x}/c")), "crossed");
        assert!(!t("/a/{x}").dominates(&t("/a/{y}")), "the same shape");
    }
}
