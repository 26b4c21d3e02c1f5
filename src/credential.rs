//! From the request to the credential it carries: RFC 6750 §2 and RFC 9449 §7.1.
//!
//! The access token is accepted from the `Authorization` header only (SP2-RS-1/2, BEARER-2.3);
//! the scheme is matched case-insensitively (HTTP-11.1). A token in the query string is
//! refused even when a header is present too (BEARER-2), and so are two `Authorization`
//! headers.

use http::header::AUTHORIZATION;
use http::HeaderMap;
use sha2::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer",
            Scheme::Dpop => "DPoP",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub scheme: Scheme,
    token: String,
    /// SHA-256 of the token, taken once with it: the token cache's key and what a DPoP
    /// proof's `ath` hashes (RFC 9449 §4.2), so neither hashes the token again.
    sha256: [u8; 32],
}

impl Credential {
    pub fn new(scheme: Scheme, token: String) -> Self {
        let sha256 = sha2::Sha256::digest(token.as_bytes()).into();
        Credential {
            scheme,
            token,
            sha256,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

impl std::fmt::Debug for Credential {
    // Tokens never reach logs, not even through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential({:?}, <{} bytes>)",
            self.scheme,
            self.token.len()
        )
    }
}

/// Whether a Content-Type is `application/x-www-form-urlencoded`.
pub(crate) fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Why the request's credentials cannot be read (RFC 6750 `invalid_request`, 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// A token in the query or a form body (SP2-RS-2, BEARER-2.3).
    TokenElsewhere,
    /// Two `Authorization` headers (BEARER-2).
    TwoAuthorizations,
    /// An `Authorization` value that is not `scheme token68`.
    Malformed,
}

impl CredentialError {
    pub fn describe(self) -> &'static str {
        match self {
            CredentialError::TokenElsewhere => {
                "access tokens are accepted in the Authorization header only"
            }
            CredentialError::TwoAuthorizations => "more than one Authorization header",
            CredentialError::Malformed => "malformed Authorization header",
        }
    }
}

fn token_elsewhere() -> CredentialError {
    CredentialError::TokenElsewhere
}

/// RFC 6750 §2.2: a form body (`form`, of an `application/x-www-form-urlencoded` request)
/// that carries an access token is refused, even beside a header. Judged once the body is
/// read, which happens only after the header credential passed.
pub(crate) fn refuse_form_token(form: Option<&[u8]>) -> Result<(), CredentialError> {
    let in_form = form
        .map(String::from_utf8_lossy)
        .is_some_and(|body| has_access_token_parameter(&body));
    if in_form {
        return Err(token_elsewhere());
    }
    Ok(())
}

/// `Ok(None)`: the request carries no credential of a scheme the gateway accepts.
pub(crate) fn extract(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Credential>, CredentialError> {
    if query.is_some_and(has_access_token_parameter) {
        return Err(token_elsewhere());
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialError::TwoAuthorizations);
    }
    let malformed = CredentialError::Malformed;
    let text = value.to_str().map_err(|_| malformed)?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Ok(None);
    };
    let token = token.trim_start_matches(' ');
    if !is_token68(token) {
        return Err(malformed);
    }
    Ok(Some(Credential::new(scheme, token.to_string())))
}

fn has_access_token_parameter(query: &str) -> bool {
    query
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(name, _)| name))
        .any(|name| name == "access_token" || name.eq_ignore_ascii_case("access%5Ftoken"))
}

/// RFC 9110 §11.2 token68: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn http_11_1_scheme_is_case_insensitive() {
        for (value, scheme) in [
            ("Bearer abc.def", Scheme::Bearer),
            ("bEARER abc.def", Scheme::Bearer),
            ("DPoP abc.def", Scheme::Dpop),
            ("dPoP abc.def", Scheme::Dpop),
        ] {
            let got = extract(&headers(&[value]), None).unwrap().unwrap();
            assert_eq!(got.scheme, scheme, "{value}");
            assert_eq!(got.token(), "abc.def");
            assert_eq!(got.sha256()[..], sha2::Sha256::digest(b"abc.def")[..]);
        }
    }

    #[test]
    fn sp2_rs_2_bearer_2_3_query_token_is_refused_even_with_a_header() {
        for query in ["access_token=abc", "a=1&access_token=abc", "access_token"] {
            assert!(matches!(
                extract(&headers(&["Bearer x"]), Some(query)),
                Err(CredentialError::TokenElsewhere)
            ));
            assert!(matches!(
                extract(&HeaderMap::new(), Some(query)),
                Err(CredentialError::TokenElsewhere)
            ));
        }
        assert!(extract(&HeaderMap::new(), Some("not_access_token=1")).is_ok());
    }

    #[test]
    fn bearer_2_3_a_form_body_token_is_refused_even_with_a_header() {
        assert!(matches!(
            refuse_form_token(Some(b"a=1&access_token=abc")),
            Err(CredentialError::TokenElsewhere)
        ));
        assert!(refuse_form_token(Some(b"a=1&b=2")).is_ok());
        assert!(is_form(Some(
            "application/x-www-form-urlencoded; charset=utf-8"
        )));
        assert!(!is_form(Some("application/json")));
    }

    #[test]
    fn bearer_2_two_authorization_headers_are_refused() {
        assert!(matches!(
            extract(&headers(&["Bearer a", "DPoP b"]), None),
            Err(CredentialError::TwoAuthorizations)
        ));
    }

    #[test]
    fn malformed_and_foreign_credentials() {
        for bad in ["Bearer", "Bearer a b", "DPoP ===", "Bearer a,b"] {
            assert_eq!(
                extract(&headers(&[bad]), None),
                Err(CredentialError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(extract(&headers(&["Basic dXNlcjpwYXNz"]), None), Ok(None));
        assert_eq!(extract(&HeaderMap::new(), None), Ok(None));
    }
}
