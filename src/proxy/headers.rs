//! What the upstream receives besides the client's request: hop-by-hop headers removed
//! (RFC 9110 §7.6.1), `Client-Cert` removed (RFC 9440 §2.4), the gateway's own forward headers
//! removed from the client's copy, and `Forwarded` / `X-Forwarded-*` set. And what the client
//! receives of the upstream's response: its hop-by-hop headers removed.
//!
//! On proxied routes the client's request header is edited once, as soon as it is admitted;
//! Pingora copies it for the upstream and removes the hop-by-hop headers itself (the standard
//! request policy, with upgrades denied).
//!
//! `Forwarded` and `X-Forwarded-For` are appended to only when the peer is a trusted proxy;
//! from anyone else they are replaced, so a client cannot forge its own address.
//!
//! Both directions are edited as a plain `http::HeaderMap` ([`edit_request`],
//! [`edit_response`]). Pingora's header types keep a second map with the original case of each
//! name, and every insert through them parses the name and updates both maps; the gateway
//! edits several headers on every request, and that bookkeeping cost more than all its other
//! per-request work. So names leave the gateway in canonical case (registered names titled,
//! `Content-Type`; others lower case), as HAProxy and Envoy send them: field names are
//! case-insensitive (RFC 9110 §5.1) and HTTP/2 clients send them in lower case anyway.

use super::RequestContext;
use crate::gateway_headers::{
    is_hop_header, CLIENT_CERT, CLIENT_CERT_CHAIN, GATEWAY_HEADERS, OVERRIDE_HEADERS, PROXY_HEADERS,
};
use crate::interaction;
use crate::policy::ForwardPolicy;
use base64::Engine as _;
use http::header::{CONNECTION, FORWARDED};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, OrErr, Result};
use std::cell::RefCell;
use std::net::IpAddr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers the gateway adds to a request at most: `Forwarded`, `X-Forwarded-*`, the
/// interaction id and the three `[forward]` headers (room reserved once, not per insert).
const ADDED_REQUEST_HEADERS: usize = 8;

/// Runs `edit` on the request's headers as a plain `http::HeaderMap` (see the module note).
/// The request target is kept: it comes from the URI, and the adapter refuses targets the URI
/// cannot carry byte for byte (non-UTF-8) before anything is proxied.
pub(crate) fn edit_request<T>(
    request: &mut RequestHeader,
    edit: impl FnOnce(&mut HeaderMap) -> T,
) -> T {
    let end_stream = request.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(request, placeholder).into();
    parts.headers.reserve(ADDED_REQUEST_HEADERS);
    let outcome = edit(&mut parts.headers);
    *request = RequestHeader::from(parts);
    if end_stream == Some(false) {
        request.set_send_end_stream(false);
    }
    outcome
}

/// Runs `edit` on the response's headers as a plain `http::HeaderMap` (see the module note).
pub(crate) fn edit_response<T>(
    response: &mut ResponseHeader,
    edit: impl FnOnce(&mut HeaderMap) -> T,
) -> T {
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(response, placeholder).into();
    parts.headers.reserve(4);
    let outcome = edit(&mut parts.headers);
    *response = ResponseHeader::from(parts);
    outcome
}

/// What the upstream is told: spoofable headers removed, `Forwarded` set, the caller
/// (`[forward]`) and the interaction id added (hop-by-hop headers: see the module note).
pub(super) fn upstream_headers(
    request: &mut RequestHeader,
    ctx: &RequestContext,
    tls: bool,
) -> Result<()> {
    let Some(engine) = ctx.engine.as_ref() else {
        return Error::e_explain(ErrorType::InternalError, "no policy");
    };
    let policy = &engine.policy;
    let trusted = ctx
        .peer
        .is_some_and(|ip| !tls && policy.listener.is_trusted_proxy(ip));
    let hop = Hop {
        peer: ctx.peer,
        tls,
        from_trusted_proxy: trusted,
    };
    let route = ctx.route.and_then(|index| policy.routes.get(index));
    let handoff = Handoff {
        forward_token: route.is_some_and(|r| r.forward_token),
        host: route
            .and_then(|r| r.upstream.host.as_ref())
            .unwrap_or(&policy.listener.public_url.host),
        public_host: &policy.listener.public_url.host,
    };
    edit_request(request, |headers| {
        prepare_upstream_request(headers, &policy.forward, &hop, &handoff);
        if let Some(grant) = &ctx.grant {
            forward_grant(headers, &policy.forward, grant, ctx.granted_detail.as_ref())?;
        }
        if let Some(id) = &ctx.interaction {
            if policy.profile.interaction_id {
                headers.insert(interaction::HEADER_NAME.clone(), id.value.clone());
            }
        }
        // W3C Trace Context: the same trace, with the gateway's span as the parent.
        if let Some(trace) = &ctx.trace {
            headers.insert(
                http::HeaderName::from_static(crate::trace::HEADER),
                trace.header(),
            );
        }
        Ok(())
    })
}

/// Who the caller is, for the upstream (`[forward]`).
fn forward_grant(
    headers: &mut HeaderMap,
    forward: &ForwardPolicy,
    grant: &crate::grant::Grant,
    detail: Option<&serde_json::Value>,
) -> Result<()> {
    let value = |text: &str| {
        HeaderValue::from_str(text).or_err(ErrorType::InternalError, "forward header value")
    };
    if let Some(subject) = &grant.subject {
        headers.insert(forward.subject_header.clone(), value(subject)?);
    }
    if let Some(client_id) = &grant.client_id {
        headers.insert(forward.client_id_header.clone(), value(client_id)?);
    }
    if let Some(detail) = detail {
        // base64url of the JSON: header-safe whatever the detail holds.
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(detail.to_string());
        headers.insert(
            forward.authorization_details_header.clone(),
            value(&encoded)?,
        );
    }
    Ok(())
}

pub(crate) struct Hop {
    pub peer: Option<IpAddr>,
    pub tls: bool,
    pub from_trusted_proxy: bool,
}

/// What the upstream is handed besides the client's request.
pub(crate) struct Handoff<'a> {
    /// The route forwards the client's `Authorization` header (`forward_token`).
    pub forward_token: bool,
    /// The `Host` the upstream gets.
    pub host: &'a HeaderValue,
    /// The `public_url` authority, for `X-Forwarded-Host`.
    pub public_host: &'a HeaderValue,
}

/// What the client sent for the gateway alone is removed (RFC 9440 `Client-Cert`, the
/// `[forward]` headers and their `_` spellings, the DPoP proof, the access token unless the
/// route forwards it, method and URL overrides, and proxy fields from a peer that is not a
/// trusted proxy); `Host`, `Forwarded` and `X-Forwarded-*` are set. Hop-by-hop headers are left
/// to the connection that sends the request: Pingora's upstream request policy on proxied
/// routes (upgrades denied), [`strip_hop_by_hop`] on signed routes.
pub(crate) fn prepare_upstream_request(
    headers: &mut HeaderMap,
    forward: &ForwardPolicy,
    hop: &Hop,
    handoff: &Handoff<'_>,
) {
    let owned = forward.owned_headers();
    let removable = |name: &HeaderName| {
        let name = name.as_str();
        match name {
            CLIENT_CERT | CLIENT_CERT_CHAIN | "dpop" => true,
            "authorization" => !handoff.forward_token,
            _ if OVERRIDE_HEADERS.contains(&name) => true,
            _ if PROXY_HEADERS.contains(&name) => !hop.from_trusted_proxy,
            _ if owned.iter().any(|o| o.as_str() == name) => true,
            _ if name.contains('_') => {
                let dashed = name.replace('_', "-");
                GATEWAY_HEADERS.contains(&dashed.as_str())
                    || PROXY_HEADERS.contains(&dashed.as_str())
                    || owned.iter().any(|o| o.as_str() == dashed)
            }
            _ => false,
        }
    };
    remove_where(headers, removable);
    headers.insert(http::header::HOST, handoff.host.clone());
    if !headers.contains_key(&X_FORWARDED_HOST) {
        headers.insert(X_FORWARDED_HOST.clone(), handoff.public_host.clone());
    }
    set_forwarded(headers, hop);
}

/// Whether the `Connection` header names a header the gateway sets for the upstream (`Host`,
/// `Forwarded`, `X-Forwarded-*`, the interaction id, the `[forward]` headers). Whoever removes
/// the headers `Connection` names would remove the gateway's own: such a request is refused.
pub(crate) fn nominates_gateway_header(headers: &HeaderMap, forward: &ForwardPolicy) -> bool {
    let owned = forward.owned_headers();
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .any(|token| match HeaderName::from_bytes(token) {
            Ok(name) => {
                matches!(
                    name.as_str(),
                    "host"
                        | "forwarded"
                        | "x-forwarded-for"
                        | "x-forwarded-host"
                        | "x-forwarded-proto"
                        | crate::interaction::HEADER
                ) || owned.contains(&&name)
            }
            // Not a header name at all: it names nothing the gateway sets.
            Err(_) => false,
        })
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), also those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let nominated: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in &nominated {
        headers.remove(name.as_str());
    }
    remove_where(headers, |name| is_hop_header(name.as_str()));
}

/// Removes every header whose name matches; one look at each name, as most messages carry
/// none of them.
pub(super) fn remove_where(headers: &mut HeaderMap, matches: impl Fn(&HeaderName) -> bool) {
    if headers.keys().any(&matches) {
        let doomed: Vec<HeaderName> = headers.keys().filter(|n| matches(n)).cloned().collect();
        for name in &doomed {
            headers.remove(name);
        }
    }
}

fn set_forwarded(headers: &mut HeaderMap, hop: &Hop) {
    let Some(peer) = hop.peer else { return };
    let https = hop.tls || hop.from_trusted_proxy;
    let own = ForwardedValues::of(peer, https);
    let earlier = |headers: &HeaderMap, name: &HeaderName| -> Option<String> {
        if !hop.from_trusted_proxy {
            return None;
        }
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let forwarded = match earlier(headers, &FORWARDED) {
        Some(list) => joined(&list, &own.forwarded),
        None => own.forwarded,
    };
    let xff = match earlier(headers, &X_FORWARDED_FOR) {
        Some(list) => joined(&list, &own.xff),
        None => own.xff,
    };
    headers.insert(FORWARDED, forwarded);
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    if !(hop.from_trusted_proxy && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
}

/// `earlier, own`; the earlier values were header values and `own` is built from an address,
/// so the result is a valid header value (the fallback keeps only this hop).
fn joined(earlier: &str, own: &HeaderValue) -> HeaderValue {
    let own_text = own.to_str().unwrap_or_default();
    HeaderValue::try_from(format!("{earlier}, {own_text}")).unwrap_or_else(|_| own.clone())
}

/// This hop's `Forwarded` element and `X-Forwarded-For` entry. Formatting an address costs
/// more than the rest of the header work, and a connection (or a load balancer in front)
/// sends many requests from one address, so the last pair is kept per thread.
#[derive(Clone)]
struct ForwardedValues {
    peer: IpAddr,
    https: bool,
    forwarded: HeaderValue,
    xff: HeaderValue,
}

impl ForwardedValues {
    fn of(peer: IpAddr, https: bool) -> Self {
        thread_local! {
            static LAST: RefCell<Option<ForwardedValues>> = const { RefCell::new(None) };
        }
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some(values) if values.peer == peer && values.https == https => values.clone(),
                _ => {
                    let values = ForwardedValues::format(peer, https);
                    *last = Some(values.clone());
                    values
                }
            }
        })
    }

    fn format(peer: IpAddr, https: bool) -> Self {
        let node = match peer {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        let proto = if https { "https" } else { "http" };
        // Built from an IP address and fixed words: always valid header values.
        let value = |text: String| {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        ForwardedValues {
            peer,
            https,
            forwarded: value(format!("for={node};proto={proto}")),
            xff: value(peer.to_string()),
        }
    }
}

/// Hop-by-hop headers of the upstream's response are not passed on.
pub(crate) fn prepare_response(headers: &mut HeaderMap, status: http::StatusCode) {
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    remove_where(headers, |name| {
        matches!(
            name.as_str(),
            "keep-alive" | "proxy-connection" | "upgrade" | "proxy-authenticate"
        )
    });
}

#[cfg(test)]
mod tests;
