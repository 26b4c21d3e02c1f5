//! What the gateway answers itself, without the upstream: its public documents and, rendered
//! in `reject.rs`, its rejections.

use super::stamp::stamp_response;
use super::{body, RequestContext};
use crate::enforce::Engine;
use crate::policy::Policy;
use crate::reject::Rejection;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// The gateway's own public documents: the protected resource metadata (RFC 9728) and the
/// JWKS of the response-signing keys (SP2-CRY-6), with their content types.
pub(super) fn builtin_document<'e>(
    session: &Session,
    engine: &'e Engine,
) -> Option<(&'static str, &'e str)> {
    if is_get(session, crate::policy::RESOURCE_METADATA_PATH) {
        return Some(("application/json", &engine.resource_metadata));
    }
    let signer = engine.signer.as_ref()?;
    is_get(session, &signer.jwks_path).then(|| ("application/jwk-set+json", signer.jwks()))
}

fn is_get(session: &Session, path: &str) -> bool {
    let header = session.req_header();
    header.uri.path() == path
        && (header.method == http::Method::GET || header.method == http::Method::HEAD)
}

/// A public document of the gateway: the JWKS of the response-signing keys (SP2-CRY-6) or
/// the protected resource metadata (RFC 9728).
pub(super) async fn serve_document(
    session: &mut Session,
    ctx: &RequestContext,
    content_type: &str,
    document: &str,
) -> Result<()> {
    let mut response = ResponseHeader::build(200, Some(5))?;
    response.insert_header(http::header::CONTENT_TYPE, content_type)?;
    response.insert_header(http::header::CONTENT_LENGTH, document.len().to_string())?;
    response.insert_header(http::header::CACHE_CONTROL, "max-age=300")?;
    stamp_response(&mut response, ctx);
    let head = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(response), head)
        .await?;
    if !head {
        session
            .write_response_body(Some(Bytes::copy_from_slice(document.as_bytes())), true)
            .await?;
    }
    Ok(())
}

/// Writes a rejection, rendered by `reject.rs`, as the whole response.
pub(super) async fn respond(
    session: &mut Session,
    ctx: &mut RequestContext,
    policy: &Policy,
    rejection: Rejection,
) -> Result<()> {
    ctx.rejection = Some(rejection.reason());
    let metadata = policy
        .listener
        .public_url
        .join(crate::policy::RESOURCE_METADATA_PATH);
    let rendered = rejection.render(&policy.profile, Some(&metadata));
    let mut response = ResponseHeader::build(rendered.status, Some(rendered.headers.len() + 3))?;
    for (name, value) in &rendered.headers {
        response.insert_header(*name, value.as_str())?;
    }
    response.insert_header(
        http::header::CONTENT_LENGTH,
        rendered.body.len().to_string(),
    )?;
    stamp_response(&mut response, ctx);
    body::discard(session).await;
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(rendered.body)), true)
        .await
}

/// Answers with a rejection; the request goes no further.
pub(super) async fn refuse(
    session: &mut Session,
    ctx: &mut RequestContext,
    policy: &Policy,
    rejection: Rejection,
) -> Result<bool> {
    Box::pin(respond(session, ctx, policy, rejection)).await?;
    Ok(true)
}
