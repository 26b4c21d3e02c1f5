//! Reading the request body before the upstream is contacted, for routes that need it:
//! `{body/...}` rules (JSON, parsed), signed requests (the bytes, for Content-Digest) and
//! signed responses (the gateway forwards the body itself). Bounded at 64 KiB, the size of
//! Pingora's retry buffer, from which Pingora forwards the identical bytes on plain routes.

use crate::policy::routes::{AuthMode, Route};
use crate::policy::Policy;
use crate::reject::Rejection;
use bytes::Bytes;
use pingora::proxy::Session;
use std::time::Duration;

pub(crate) const MAX_BODY: usize = 64 * 1024;

pub(crate) struct RequestBody {
    pub bytes: Bytes,
    pub json: Option<serde_json::Value>,
}

/// A body the rules read must mean one thing to every reader (RFC 9110 §8.3, §8.4; RFC 8259
/// §8.1): one `Content-Type` field naming one JSON media type, UTF-8 if a charset is named,
/// and no content coding (the gateway would judge the coded bytes, the upstream the decoded).
fn json_headers(headers: &http::HeaderMap) -> Result<(), Rejection> {
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let Some(value) = types.next() else {
        return Err(Rejection::BodyNotJson);
    };
    if types.next().is_some() {
        return Err(Rejection::BodyEncoding(
            "the request has more than one Content-Type field",
        ));
    }
    let value = value.to_str().map_err(|_| Rejection::BodyNotJson)?;
    if value.contains(',') {
        return Err(Rejection::BodyEncoding(
            "the request's Content-Type names more than one media type",
        ));
    }
    if !is_json(Some(value)) {
        return Err(Rejection::BodyNotJson);
    }
    let other_charset = value.split(';').skip(1).any(|parameter| {
        parameter.split_once('=').is_some_and(|(name, charset)| {
            name.trim().eq_ignore_ascii_case("charset")
                && !charset
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("utf-8")
        })
    });
    if other_charset {
        return Err(Rejection::BodyEncoding("a JSON request body must be UTF-8"));
    }
    if headers.contains_key(http::header::CONTENT_ENCODING) {
        return Err(Rejection::BodyEncoding(
            "the request body must not have a Content-Encoding",
        ));
    }
    Ok(())
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
}

/// Bodies up to this size are read and discarded before a 413, so the client sees the answer
/// instead of a connection reset; larger ones are cut off.
const MAX_DRAIN: usize = 1024 * 1024;

async fn drain_for_refusal(session: &mut Session, declared: Option<usize>) {
    if declared.is_none_or(|n| n <= MAX_DRAIN) {
        let _ = tokio::time::timeout(Duration::from_secs(2), session.drain_request_body()).await;
    }
}

fn declared_length(header: &pingora::http::RequestHeader) -> Option<usize> {
    header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

fn expects_continue(header: &pingora::http::RequestHeader) -> bool {
    header
        .headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Before a refusal: the body the client is still sending is read and discarded when it is
/// small (bounded like a 413's), so the client sees the answer rather than a reset stream;
/// a client waiting for `100 Continue` is answered at once. A connection whose body was not
/// read whole is not reused.
pub(crate) async fn discard(session: &mut Session) {
    if session.is_body_empty() || session.is_body_done() {
        return;
    }
    let header = session.req_header();
    if !expects_continue(header) {
        let declared = declared_length(header);
        drain_for_refusal(session, declared).await;
    }
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
}

fn is_form(header: &pingora::http::RequestHeader) -> bool {
    crate::credential::is_form(
        header
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Reads the body when the route needs it; `Ok(None)` when it does not. Called only once the
/// request's credential, token and binding have passed: an unauthenticated request never has
/// its body buffered.
pub(crate) async fn read(
    session: &mut Session,
    policy: &Policy,
    route: &Route,
) -> Result<Option<RequestBody>, Rejection> {
    let header = session.req_header();
    let needs_json = route.reads_body();
    // A form body may carry an access token (RFC 6750 §2.2), which must be refused.
    let token_form = route.auth == AuthMode::Token && is_form(header);
    if !(needs_json || route.verify_request_signature || route.sign_response || token_form) {
        return Ok(None);
    }
    if needs_json {
        json_headers(&header.headers)?;
    }
    let declared = declared_length(header);
    if declared.is_some_and(|n| n > MAX_BODY) {
        drain_for_refusal(session, declared).await;
        return Err(Rejection::BodyTooLarge);
    }
    if expects_continue(header) {
        session
            .write_continue_response()
            .await
            .map_err(|_| Rejection::BodyMalformed)?;
    }
    let mut body = Vec::new();
    // A request that declared no body (GET, or HEADERS with END_STREAM) has nothing to read.
    if !session.is_body_empty() {
        session.enable_retry_buffering();
        let deadline = tokio::time::Instant::now() + policy.listener.body_timeout;
        let min_rate = policy.listener.body_min_rate;
        read_whole(session, &mut body, declared, deadline, min_rate).await?;
    }
    let json = if needs_json {
        Some(crate::policy::json::parse(&body).map_err(Rejection::BodyJson)?)
    } else {
        None
    };
    Ok(Some(RequestBody {
        bytes: Bytes::from(body),
        json,
    }))
}

/// Reads the rest of the body into `body`, at most [`MAX_BODY`], all of it by `deadline`
/// (`listener.body_timeout`) and, after a grace, at `min_rate` bytes per second at least: a
/// body trickled in to hold the request open gets 408, whatever the pace of each read.
async fn read_whole(
    session: &mut Session,
    body: &mut Vec<u8>,
    declared: Option<usize>,
    deadline: tokio::time::Instant,
    min_rate: u64,
) -> Result<(), Rejection> {
    let started = tokio::time::Instant::now();
    loop {
        // The bytes received so far keep up with the rate until this moment.
        let keeps_up = (min_rate > 0).then(|| {
            let seconds = body.len() as f64 / min_rate as f64;
            started + crate::policy::BODY_RATE_GRACE + Duration::from_secs_f64(seconds)
        });
        let by = keeps_up.map_or(deadline, |at| at.min(deadline));
        // h2 body reads have no timeout of their own.
        let chunk = match tokio::time::timeout_at(by, session.read_request_body()).await {
            Ok(read) => read.map_err(|_| Rejection::BodyMalformed)?,
            Err(_) => {
                session.set_keepalive(None);
                return Err(Rejection::BodyTimeout);
            }
        };
        let Some(chunk) = chunk else { return Ok(()) };
        if body.len() + chunk.len() > MAX_BODY {
            drain_for_refusal(session, declared).await;
            return Err(Rejection::BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hi_json_body_headers_name_one_utf8_json_type_and_no_coding() {
        for good in [
            &[("content-type", "application/json")][..],
            &[("content-type", "application/json; charset=utf-8")],
            &[("content-type", "Application/JSON;Charset=\"UTF-8\"")],
            &[("content-type", "application/problem+json")],
        ] {
            assert_eq!(json_headers(&headers(good)), Ok(()), "{good:?}");
        }
        let refused = |fields| json_headers(&headers(fields)).map_err(|r| r.reason());
        assert_eq!(refused(&[]), Err("body_not_json"));
        assert_eq!(
            refused(&[("content-type", "text/plain")]),
            Err("body_not_json")
        );
        for bad in [
            &[
                ("content-type", "application/json"),
                ("content-type", "application/json"),
            ][..],
            &[("content-type", "application/json, text/plain")],
            &[("content-type", "application/json; charset=utf-16")],
            &[("content-type", "application/json; charset=iso-8859-1")],
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            &[
                ("content-type", "application/json"),
                ("content-encoding", "identity"),
            ],
        ] {
            assert_eq!(refused(bad), Err("body_encoding"), "{bad:?}");
        }
    }
}
