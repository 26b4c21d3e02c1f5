//! Request framing (RFC 9112 §6): the gateway forwards a body only when it knows where the
//! body ends exactly as the upstream will.

use crate::reject::Rejection;
use http::HeaderMap;
use pingora::proxy::Session;

/// The refusal for a request whose framing the gateway cannot vouch for, if any.
pub(crate) fn refusal(session: &Session) -> Option<Rejection> {
    let raw_content_length = || match session.as_downstream() {
        pingora::protocols::http::ServerSession::H1(h1) => {
            raw_has_field(&h1.get_headers_raw_bytes(), b"content-length")
        }
        _ => false,
    };
    refusal_of(&session.req_header().headers, raw_content_length)
}

/// How the request body is framed, if the gateway can vouch for it (RFC 9112 §6.1, §6.3): a
/// `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked` would reach the upstream
/// relabelled, the coded bytes inside) is not implemented (501), and `Content-Length` beside
/// `Transfer-Encoding` is a request smuggling vector (400). Pingora drops such a
/// `Content-Length` before any filter runs, so `sent_content_length` asks the raw header.
pub(crate) fn refusal_of(
    headers: &HeaderMap,
    sent_content_length: impl FnOnce() -> bool,
) -> Option<Rejection> {
    let mut codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .peekable();
    codings.peek()?;
    if headers.contains_key(http::header::CONTENT_LENGTH) || sent_content_length() {
        return Some(Rejection::InvalidRequest {
            description: "the request has both Content-Length and Transfer-Encoding",
        });
    }
    let mut tokens = codings
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii);
    let only_chunked = tokens
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"))
        && tokens.next().is_none();
    (!only_chunked).then_some(Rejection::UnsupportedTransferCoding)
}

/// Whether the raw HTTP/1 header block has a field named `name` (lower case).
fn raw_has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && matches!(line[name.len()], b':' | b' ' | b'\t')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_framing_only_exactly_chunked_and_never_beside_content_length() {
        let headers = |fields: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in fields {
                map.append(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        let reason = |fields, raw_cl| refusal_of(&headers(fields), || raw_cl).map(|r| r.reason());
        assert_eq!(reason(&[], false), None);
        assert_eq!(reason(&[("content-length", "5")], false), None);
        assert_eq!(reason(&[("transfer-encoding", "chunked")], false), None);
        assert_eq!(reason(&[("transfer-encoding", "Chunked")], false), None);
        assert_eq!(
            reason(&[("transfer-encoding", "gzip, chunked")], false),
            Some("transfer_coding")
        );
        assert_eq!(
            reason(
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked")
                ],
                false
            ),
            Some("transfer_coding")
        );
        assert_eq!(
            reason(&[("transfer-encoding", "chunked")], true),
            Some("invalid_request")
        );
    }

    #[test]
    fn raw_fields_are_found_by_name_only_at_a_line_start() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Content-Length: 1\r\n\r\n";
        assert!(raw_has_field(raw, b"content-length"));
        assert!(!raw_has_field(
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\n\r\n",
            b"content-length"
        ));
        assert!(!raw_has_field(
            b"GET /content-length: HTTP/1.1\r\n\r\n",
            b"content-length"
        ));
    }
}
