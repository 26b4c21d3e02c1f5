//! What the upstream receives besides the client's request: hop-by-hop headers removed
//! (RFC 9110 §7.6.1), `Client-Cert` removed (RFC 9440 §2.4), the gateway's own forward headers
//! removed from the client's copy, and `Forwarded` / `X-Forwarded-*` set.
//!
//! `Forwarded` and `X-Forwarded-For` are appended to only when the peer is a trusted proxy;
//! from anyone else they are replaced, so a client cannot forge its own address.

use super::client_cert::{CLIENT_CERT, CLIENT_CERT_CHAIN};
use crate::policy::Policy;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use std::net::IpAddr;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

pub struct Hop {
    pub peer: Option<IpAddr>,
    pub tls: bool,
    pub from_trusted_proxy: bool,
}

pub fn prepare_upstream_request(request: &mut RequestHeader, policy: &Policy, hop: Hop) {
    if request.headers.contains_key(http::header::CONNECTION) {
        let nominated: Vec<String> = request
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        for name in &nominated {
            request.remove_header(name.as_str());
        }
    }
    // Most requests carry none of these: look before touching the header map.
    for name in HOP_BY_HOP
        .into_iter()
        .chain([CLIENT_CERT, CLIENT_CERT_CHAIN])
    {
        if request.headers.contains_key(name) {
            request.remove_header(name);
        }
    }
    for name in policy.forward.owned_headers() {
        if request.headers.contains_key(name) {
            request.remove_header(name);
        }
    }
    set_forwarded(request, &hop);
}

fn set_forwarded(request: &mut RequestHeader, hop: &Hop) {
    let Some(peer) = hop.peer else { return };
    let earlier = |request: &RequestHeader, name: &str| -> Option<String> {
        let values: Vec<&str> = request
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (hop.from_trusted_proxy && !values.is_empty()).then(|| values.join(", "))
    };
    let proto = if hop.tls || hop.from_trusted_proxy {
        "https"
    } else {
        "http"
    };
    let node = match peer {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let element = format!("for={node};proto={proto}");
    let forwarded = match earlier(request, "forwarded") {
        Some(list) => format!("{list}, {element}"),
        None => element,
    };
    let xff = match earlier(request, "x-forwarded-for") {
        Some(list) => format!("{list}, {peer}"),
        None => peer.to_string(),
    };
    // The values are built from an IP address and fixed words: always valid header values.
    let _ = request.insert_header("forwarded", forwarded);
    let _ = request.insert_header("x-forwarded-for", xff);
    if !(hop.from_trusted_proxy && request.headers.contains_key("x-forwarded-proto")) {
        let _ = request.insert_header("x-forwarded-proto", proto);
    }
}

/// Hop-by-hop headers of the upstream's response are not passed on.
pub fn prepare_response(response: &mut ResponseHeader) -> Result<()> {
    if response.status != http::StatusCode::SWITCHING_PROTOCOLS {
        for name in [
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "proxy-authenticate",
        ] {
            response.remove_header(name);
        }
    }
    Ok(())
}
