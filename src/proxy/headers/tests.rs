//! Unit tests of the header rules (the e2e suite checks them at a real upstream).

use super::*;

fn forward() -> ForwardPolicy {
    ForwardPolicy {
        subject_header: HeaderName::from_static("x-fapi-subject"),
        client_id_header: HeaderName::from_static("x-fapi-client-id"),
        authorization_details_header: HeaderName::from_static("x-fapi-authorization-details"),
    }
}

fn request(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn hop(peer: &str, tls: bool, trusted: bool) -> Hop {
    Hop {
        peer: Some(peer.parse().unwrap()),
        tls,
        from_trusted_proxy: trusted,
    }
}

static PUBLIC_HOST: HeaderValue = HeaderValue::from_static("api.bank.example");

fn handoff(forward_token: bool) -> Handoff<'static> {
    Handoff {
        forward_token,
        host: &PUBLIC_HOST,
        public_host: &PUBLIC_HOST,
    }
}

/// The names left after preparing `headers` for the upstream from an untrusted TLS peer
/// on a route that does not forward the token, sorted.
fn names_upstream(headers: &mut HeaderMap) -> Vec<String> {
    prepare_upstream_request(
        headers,
        &forward(),
        &hop("192.0.2.7", true, false),
        &handoff(false),
    );
    let mut names: Vec<String> = headers.keys().map(|n| n.to_string()).collect();
    names.sort_unstable();
    names
}

#[test]
fn cc_2_4_hop_by_hop_client_cert_and_owned_headers_are_removed() {
    // As on a signed route, which sends the request on its own connection.
    let mut headers = request(&[
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("client-cert", ":AAAA:"),
        ("client-cert-chain", ":AAAA:"),
        ("x-fapi-subject", "forged"),
        (
            "x-fapi-interaction-id",
            "c7a5f7b4-1a2b-4c3d-8e9f-0123456789ab",
        ),
        ("accept", "application/json"),
    ]);
    strip_hop_by_hop(&mut headers);
    assert_eq!(
        names_upstream(&mut headers),
        [
            "accept",
            "forwarded",
            "host",
            "x-fapi-interaction-id",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto"
        ]
    );
    assert_eq!(headers["forwarded"], "for=192.0.2.7;proto=https");
    assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
    assert_eq!(headers["x-forwarded-proto"], "https");
}

#[test]
fn hi_headers_nobody_vouched_for_never_reach_the_upstream() {
    let sent = [
        ("host", "evil.example"),
        ("x_fapi_subject", "victim-psu"),
        ("x-fapi_client_id", "victim-tpp"),
        ("client_cert", ":AAAA:"),
        ("x_forwarded_for", "10.0.0.1"),
        ("authorization", "DPoP token"),
        ("dpop", "proof"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "80"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-ssl", "on"),
        ("x-real-ip", "10.0.0.1"),
        ("true-client-ip", "10.0.0.1"),
        ("x_custom_field", "kept"),
    ];
    let mut headers = request(&sent);
    assert_eq!(
        names_upstream(&mut headers),
        [
            "forwarded",
            "host",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x_custom_field"
        ]
    );
    assert_eq!(headers["host"], "api.bank.example");
    assert_eq!(headers["x-forwarded-host"], "api.bank.example");
    // A trusted proxy speaks for the client's address and URL; the route may forward the
    // token; the proof never goes on.
    let mut headers = request(&sent);
    prepare_upstream_request(
        &mut headers,
        &forward(),
        &hop("10.1.2.3", false, true),
        &handoff(true),
    );
    assert_eq!(headers["authorization"], "DPoP token");
    assert!(headers.get("dpop").is_none());
    assert_eq!(headers["x-forwarded-host"], "evil.example");
    assert_eq!(headers["x-real-ip"], "10.0.0.1");
    assert!(headers.get("x-http-method-override").is_none());
    assert!(headers.get("x_fapi_subject").is_none());
    assert_eq!(headers["host"], "api.bank.example");
}

#[test]
fn an_untrusted_peer_cannot_forge_its_forwarding_chain() {
    let mut headers = request(&[
        ("forwarded", "for=10.0.0.1"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
    ]);
    prepare_upstream_request(
        &mut headers,
        &forward(),
        &hop("2001:db8::1", false, false),
        &handoff(false),
    );
    assert_eq!(headers["forwarded"], "for=\"[2001:db8::1]\";proto=http");
    assert_eq!(headers["x-forwarded-for"], "2001:db8::1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers.get_all("forwarded").iter().count(), 1);
}

#[test]
fn a_trusted_proxy_chain_is_extended() {
    let mut headers = request(&[
        ("forwarded", "for=198.51.100.9;proto=https"),
        ("x-forwarded-for", "198.51.100.9"),
        ("x-forwarded-proto", "https"),
    ]);
    prepare_upstream_request(
        &mut headers,
        &forward(),
        &hop("10.1.2.3", false, true),
        &handoff(false),
    );
    assert_eq!(
        headers["forwarded"],
        "for=198.51.100.9;proto=https, for=10.1.2.3;proto=https"
    );
    assert_eq!(headers["x-forwarded-for"], "198.51.100.9, 10.1.2.3");
    assert_eq!(headers["x-forwarded-proto"], "https");
}

#[test]
fn the_per_thread_values_follow_the_peer() {
    for (peer, tls, expected) in [
        ("192.0.2.1", false, "for=192.0.2.1;proto=http"),
        ("192.0.2.1", true, "for=192.0.2.1;proto=https"),
        ("192.0.2.2", true, "for=192.0.2.2;proto=https"),
        ("192.0.2.1", false, "for=192.0.2.1;proto=http"),
    ] {
        let mut headers = HeaderMap::new();
        prepare_upstream_request(
            &mut headers,
            &forward(),
            &hop(peer, tls, false),
            &handoff(false),
        );
        assert_eq!(headers["forwarded"], expected);
        assert_eq!(headers["x-forwarded-for"], peer);
    }
}

#[test]
fn a_connection_header_naming_a_gateway_header_is_caught() {
    for value in [
        "x-fapi-subject",
        "keep-alive, X-FAPI-Client-Id",
        "Forwarded",
        "x-fapi-interaction-id",
        "host",
        " x-forwarded-proto ",
    ] {
        let headers = request(&[("connection", value)]);
        assert!(nominates_gateway_header(&headers, &forward()), "{value}");
    }
    for value in ["keep-alive", "x-secret, te", "upgrade", ""] {
        let headers = request(&[("connection", value)]);
        assert!(!nominates_gateway_header(&headers, &forward()), "{value}");
    }
    assert!(!nominates_gateway_header(&HeaderMap::new(), &forward()));
}

#[test]
fn response_hop_by_hop_headers_are_removed_except_on_101() {
    let mut headers = request(&[
        ("upgrade", "websocket"),
        ("keep-alive", "timeout=5"),
        ("content-type", "application/json"),
    ]);
    prepare_response(&mut headers, http::StatusCode::OK);
    assert_eq!(
        headers.keys().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["content-type"]
    );
    let mut switching = request(&[("upgrade", "websocket")]);
    prepare_response(&mut switching, http::StatusCode::SWITCHING_PROTOCOLS);
    assert!(switching.contains_key("upgrade"));
}

#[test]
fn editing_as_parts_keeps_method_target_and_values() {
    let mut request = RequestHeader::build("POST", b"/accounts/a%2Fb?x=1&y=%20", Some(1)).unwrap();
    request
        .insert_header("Content-Type", "application/json")
        .unwrap();
    edit_request(&mut request, |headers| {
        headers.insert("x-added", HeaderValue::from_static("yes"));
    });
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.raw_path(), b"/accounts/a%2Fb?x=1&y=%20");
    let mut wire = Vec::new();
    request.header_to_h1_wire(&mut wire);
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "Content-Type: application/json\r\nx-added: yes\r\n"
    );
}
