//! The request header fields the gateway itself speaks for towards the upstream, or removes
//! on the way: what the proxy edits (`proxy::headers`) and what a route's rules may therefore
//! never judge (`config`), from one list.

/// RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
pub(crate) const CLIENT_CERT: &str = "client-cert";
pub(crate) const CLIENT_CERT_CHAIN: &str = "client-cert-chain";

/// Hop-by-hop fields (RFC 9110 §7.6.1): they describe one connection, not the message.
pub(crate) fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "http2-settings"
    )
}

/// Headers no client may send to the upstream: they rewrite the method or the URL in the
/// frameworks that read them (IIS, Symfony, Zend, Rails, ASP.NET; RFC 9110 §9 gives no such
/// field).
pub(crate) const OVERRIDE_HEADERS: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Client-address and client-URL fields that only a trusted proxy may send (RFC 7239 §8.1:
/// a proxy that does not vouch for them must not pass them on).
pub(crate) const PROXY_HEADERS: [&str; 6] = [
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-ssl",
    "x-real-ip",
    "true-client-ip",
];

/// Fields the gateway alone speaks for towards the upstream, besides the `[forward]` ones.
/// CGI, WSGI, PHP and Rack read a name with `_` as the same variable as with `-`
/// (`HTTP_X_FAPI_SUBJECT`), so a client's `X_Fapi_Subject` counts as the gateway's field too.
pub(crate) const GATEWAY_HEADERS: [&str; 10] = [
    CLIENT_CERT,
    CLIENT_CERT_CHAIN,
    crate::interaction::HEADER,
    crate::trace::HEADER,
    "authorization",
    "dpop",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Whether the upstream may receive something other than what the client sent in `name`:
/// the gateway sets, removes or rewrites it, or the connection consumes it. A rule judging
/// such a field would judge what the upstream never acts on. (`[forward]` headers are
/// configured and checked apart.)
pub(crate) fn not_passed_as_sent(name: &str) -> bool {
    is_hop_header(name)
        || OVERRIDE_HEADERS.contains(&name)
        || PROXY_HEADERS.contains(&name)
        || GATEWAY_HEADERS.contains(&name)
        || matches!(name, "host" | "content-length" | "cookie")
}
