//! What every response carries whatever produced it: `Date`, `x-fapi-interaction-id` and, for
//! an admitted DPoP request, the rotated nonce.

use super::{headers, RequestContext};
use crate::interaction;
use http::{HeaderMap, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::ErrorType;

static DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// RFC 9449 §8.2: the rotated nonce of an admitted DPoP request, on a response not cached.
pub(super) fn add_dpop_nonce(headers: &mut HeaderMap, ctx: &RequestContext) -> Result<()> {
    if let Some(nonce) = &ctx.dpop_nonce {
        let nonce =
            HeaderValue::from_str(nonce).or_err(ErrorType::InternalError, "dpop nonce header")?;
        headers.insert(DPOP_NONCE.clone(), nonce);
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    Ok(())
}

/// `Date` and `x-fapi-interaction-id` on every response, errors included (FAPI1-RS-10/11).
pub(super) fn stamp_response(response: &mut ResponseHeader, ctx: &RequestContext) {
    headers::edit_response(response, |headers| stamp(headers, ctx));
}

pub(crate) fn stamp(headers: &mut HeaderMap, ctx: &RequestContext) {
    if !headers.contains_key(http::header::DATE) {
        headers.insert(http::header::DATE, http_date(ctx.now));
    }
    let echo = ctx
        .engine
        .as_ref()
        .is_none_or(|engine| engine.policy.profile.interaction_id);
    if let (true, Some(id)) = (echo, &ctx.interaction) {
        headers.insert(interaction::HEADER_NAME.clone(), id.value.clone());
    }
}

/// The `Date` value: the request's second, or a later one this thread has already formatted
/// (each second is formatted once per thread, and a date never goes back).
fn http_date(second: u64) -> http::HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, http::HeaderValue)> =
            const { std::cell::RefCell::new((u64::MAX, http::HeaderValue::from_static(""))) };
    }
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 == u64::MAX || cached.0 < second {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(second);
            // An HTTP date is always a valid header value.
            if let Ok(value) = http::HeaderValue::from_str(&httpdate::fmt_http_date(time)) {
                *cached = (second, value);
            }
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::http_date;

    #[test]
    fn fapi1_rs_10_the_date_is_the_requests_second_and_never_goes_back() {
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        // A request that started earlier, answered later on this thread, gets the later date.
        assert_eq!(http_date(1_699_999_990), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(http_date(1_700_000_001), "Tue, 14 Nov 2023 22:13:21 GMT");
    }
}
