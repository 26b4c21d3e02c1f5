//! The request head's own limits, checked before any FAPI decision.

use super::{framing, headers};
use crate::policy::path::PathError;
use crate::policy::Policy;
use crate::reject::Rejection;
use pingora::proxy::Session;

/// The head's own limits, before any FAPI check: its size, `Connection` naming a header the
/// gateway sets, framing whose end cannot be known, and a target that is not UTF-8.
pub(super) fn screen_head(
    session: &mut Session,
    policy: &Policy,
) -> std::result::Result<(), Rejection> {
    if header_bytes(session) > MAX_REQUEST_HEADER_BYTES {
        return Err(Rejection::HeadersTooLarge);
    }
    if headers::nominates_gateway_header(&session.req_header().headers, &policy.forward) {
        return Err(Rejection::InvalidRequest {
            description: "the Connection header names a header the gateway sets",
        });
    }
    if let Some(rejection) = framing::refusal(session) {
        // The body's end cannot be known: the connection is not reused after the answer.
        session.set_keepalive(None);
        return Err(rejection);
    }
    // The path is matched as the URI holds it and forwarded from the URI: a target the URI
    // could only hold lossily would be matched as one path and sent as another.
    if !session.req_header().raw_path_is_utf8() {
        return Err(Rejection::BadPath(PathError::NotUtf8));
    }
    Ok(())
}

/// The ceiling on the total size of request headers (431 above it).
const MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;

fn header_bytes(session: &Session) -> usize {
    let header = session.req_header();
    header
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + header.uri.path_and_query().map_or(0, |p| p.as_str().len())
}
