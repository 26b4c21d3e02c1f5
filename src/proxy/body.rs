//! Reading the request body before the upstream is contacted, for routes that need it:
//! `{body/...}` rules (JSON, parsed), signed requests (the bytes, for Content-Digest) and
//! signed responses (the gateway forwards the body itself). Bounded at 64 KiB, the size of
//! Pingora's retry buffer, from which Pingora forwards the identical bytes on plain routes.

use crate::policy::{Policy, RouteMatch};
use crate::reject::Rejection;
use bytes::Bytes;
use pingora::proxy::Session;
use std::time::Duration;

pub const MAX_BODY: usize = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RequestBody {
    pub bytes: Bytes,
    pub json: Option<serde_json::Value>,
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
pub async fn discard(session: &mut Session) {
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

/// Whether [`read`] could want the body: some route reads bodies, or this one is a form. Most
/// requests answer no here without the cost of setting up the read.
pub fn may_read(header: &pingora::http::RequestHeader, policy: &Policy) -> bool {
    policy.routes.any_reads_body() || is_form(header)
}

/// Reads the body when the matched route needs it; `Ok(None)` when it does not.
pub async fn read(
    session: &mut Session,
    policy: &Policy,
) -> Result<Option<RequestBody>, Rejection> {
    let header = session.req_header();
    let form = is_form(header);
    if !policy.routes.any_reads_body() && !form {
        return Ok(None);
    }
    let route = match policy.routes.find(&header.method, header.uri.path()) {
        RouteMatch::Found { route, .. } => policy.routes.get(route),
        _ => None,
    };
    let Some(route) = route else { return Ok(None) };
    let needs_json = route.reads_body();
    // A form body may carry an access token (RFC 6750 §2.2), which must be refused.
    let token_form = form && route.auth == crate::policy::routes::AuthMode::Token;
    if !(needs_json || route.verify_request_signature || route.sign_response || token_form) {
        return Ok(None);
    }
    let content_type = header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if needs_json && !is_json(content_type) {
        return Err(Rejection::BodyNotJson);
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
        read_whole(session, &mut body, declared).await?;
    }
    let json = if needs_json {
        Some(serde_json::from_slice(&body).map_err(|_| Rejection::BodyMalformed)?)
    } else {
        None
    };
    Ok(Some(RequestBody {
        bytes: Bytes::from(body),
        json,
    }))
}

/// Reads the rest of the body into `body`, at most [`MAX_BODY`].
async fn read_whole(
    session: &mut Session,
    body: &mut Vec<u8>,
    declared: Option<usize>,
) -> Result<(), Rejection> {
    loop {
        // h2 body reads have no timeout of their own.
        let chunk = tokio::time::timeout(READ_TIMEOUT, session.read_request_body())
            .await
            .map_err(|_| Rejection::BodyMalformed)?
            .map_err(|_| Rejection::BodyMalformed)?;
        let Some(chunk) = chunk else { return Ok(()) };
        if body.len() + chunk.len() > MAX_BODY {
            drain_for_refusal(session, declared).await;
            return Err(Rejection::BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}
