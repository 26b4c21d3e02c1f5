//! Routing, proxying and the FAPI response basics through the real gateway.

use crate::support::*;

const UUID: &str = "6a0b2c1e-4f5d-4e8a-9b7c-0d1e2f3a4b5c";

#[test]
fn public_route_is_proxied_with_forwarded_headers() {
    let env = Env::start();
    let response = env.get(
        "/status?x=1",
        &[
            "-H",
            "x-fapi-subject: forged",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["target"], "/status?x=1");
    let headers = &echo["headers"];
    assert_eq!(
        headers["x-forwarded-for"][0], "127.0.0.1",
        "a client cannot forge its address"
    );
    assert_eq!(headers["forwarded"][0], "for=127.0.0.1;proto=https");
    assert_eq!(headers["x-forwarded-proto"][0], "https");
    assert!(
        headers.get("x-fapi-subject").is_none(),
        "forward headers are the gateway's alone"
    );
}

#[test]
fn cc_2_4_hop_by_hop_upgrade_and_client_cert_headers_never_reach_the_upstream() {
    let env = Env::start();
    let response = env.get(
        "/status",
        &[
            "--http1.1",
            "-H",
            "Connection: keep-alive, x-secret",
            "-H",
            "x-secret: 1",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Upgrade: websocket",
            "-H",
            "TE: trailers",
            "-H",
            "Proxy-Authorization: Basic eDp5",
            "-H",
            "Client-Cert: :AAAA:",
            "-H",
            "Client-Cert-Chain: :AAAA:",
            "-H",
            "x-fapi-client-id: forged",
            "-H",
            "Accept: application/json",
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let headers = &response.json()["headers"];
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "upgrade",
        "te",
        "proxy-authorization",
        "client-cert",
        "client-cert-chain",
        "x-fapi-client-id",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["accept"][0], "application/json");
    // A WebSocket handshake is proxied as a plain request: no tunnel past the gateway.
    let response = env.get(
        "/status",
        &[
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "-H",
            "Sec-WebSocket-Version: 13",
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let headers = &response.json()["headers"];
    assert!(headers.get("upgrade").is_none(), "{headers}");
    assert!(headers.get("connection").is_none(), "{headers}");
    // A Connection header naming a header the gateway sets would have it removed on the way
    // to the upstream (the caller's identity, the interaction id, the client's address): it is
    // refused, with the FAPI basics.
    for named in [
        "X-Forwarded-For",
        "Forwarded",
        "x-fapi-subject",
        "keep-alive, X-Fapi-Client-Id",
        "x-fapi-interaction-id",
    ] {
        let response = env.get(
            "/status",
            &["--http1.1", "-H", &format!("Connection: {named}")],
        );
        assert_eq!(response.status, 400, "{named}: {response:?}");
        assert_eq!(response.json()["error"], "invalid_request");
        assert!(response.header("x-fapi-interaction-id").is_some());
        assert!(response.header("date").is_some());
    }
}

#[test]
fn fapi1_rs_10_11_date_and_interaction_id_echoed() {
    let env = Env::start();
    let response = env.get(
        "/status",
        &["-H", &format!("x-fapi-interaction-id: {UUID}")],
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-fapi-interaction-id"), Some(UUID));
    assert!(httpdate::parse_http_date(response.header("date").unwrap()).is_ok());
    assert_eq!(response.json()["headers"]["x-fapi-interaction-id"][0], UUID);
    // FAPI1-RS-12 / IA-2: logged.
    let line = env.gateway.access_line(UUID);
    assert_eq!(line["route"], "status");
    assert_eq!(line["status"], 200);
    assert_eq!(line["interaction_id_origin"], "echoed");
}

#[test]
fn fapi1_rs_11_interaction_id_minted_and_non_uuid_replaced() {
    let env = Env::start();
    let minted = env.get("/status", &[]);
    let id = minted.header("x-fapi-interaction-id").unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
    assert_eq!(
        minted.json()["headers"]["x-fapi-interaction-id"][0],
        id.as_str()
    );

    let replaced = env.get("/nowhere", &["-H", "x-fapi-interaction-id: not-a-uuid"]);
    assert_eq!(replaced.status, 404);
    let id = replaced.header("x-fapi-interaction-id").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(
        env.gateway.access_line(id)["interaction_id_origin"],
        "replaced"
    );
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let env = Env::start();
    let response = env.get("/loans", &["-H", &format!("x-fapi-interaction-id: {UUID}")]);
    assert_eq!(response.status, 404);
    assert_eq!(
        response.header("x-fapi-interaction-id"),
        Some(UUID),
        "errors carry the id too"
    );
    assert!(response.header("date").is_some());
    assert_eq!(response.json()["error"], "not_found");

    let response = env.get("/accounts/a1/balances", &["-X", "DELETE"]);
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    let response = env.get("/status", &["-X", "FROB"]);
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));
}

#[test]
fn ambiguous_paths_never_reach_a_route() {
    let env = Env::start();
    for path in [
        "/status/../accounts",
        "/status/%2e%2e/accounts",
        "//status",
        "/accounts%2Fa1/balances",
        "/status/.",
    ] {
        let response = env.get(path, &[]);
        assert_eq!(response.status, 400, "{path}: {response:?}");
        assert_eq!(response.json()["error"], "invalid_request");
    }
    // Decoded matching: the upstream reads /st%61tus as /status, so does the gateway.
    let response = env.get("/st%61tus", &[]);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["target"],
        "/st%61tus",
        "forwarded byte for byte"
    );
}

#[test]
fn a_target_that_is_not_utf8_is_refused_before_routing() {
    use std::io::{Read, Write};
    let env = Env::start();
    // Raw bytes no URI can hold as sent: matched lossily, they would be forwarded differently.
    // Pingora's HTTP/1 parser refuses them already; the adapter refuses any that another
    // protocol path could carry (policy::path::PathError::NotUtf8).
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", env.gateway.plain_port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /status/\xff\xfe HTTP/1.1\r\nHost: bank\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
}

#[test]
fn token_routes_are_never_proxied_without_a_valid_token() {
    let env = Env::start();
    let response = env.get("/accounts", &[]);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some("Bearer, DPoP algs=\"ES256 PS256 EdDSA\"")
    );
    // The DPoP scheme without a proof: refused before the token is looked at, so nothing
    // reaches an AS (RFC 9449 §7.1).
    let response = env.get(
        "/accounts",
        &["-H", "Authorization: DPoP eyJhbGciOiJFUzI1NiJ9.e30.sig"],
    );
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some("DPoP error=\"invalid_dpop_proof\", error_description=\"a DPoP proof is required\", algs=\"ES256 PS256 EdDSA\"")
    );
    let response = env.get(
        "/accounts",
        &["-H", "Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig"],
    );
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(
            "Bearer error=\"invalid_token\", error_description=\"the access token has no issuer\""
        )
    );
    // SP2-RS-2: a token in the query string.
    let response = env.get("/accounts?access_token=abc", &[]);
    assert_eq!(response.status, 400);
    assert_eq!(
        response.challenge(),
        Some("Bearer error=\"invalid_request\", error_description=\"access tokens are accepted in the Authorization header only\", DPoP error=\"invalid_request\", error_description=\"access tokens are accepted in the Authorization header only\", algs=\"ES256 PS256 EdDSA\"")
    );
    // BEARER-2.3 (a token in a form body beside a valid header token): hostile.rs.
    // Nothing above reached the upstream: no upstream timing was recorded for the route.
    metrics_showing(
        env.gateway.admin_port,
        "fapigate_rejections_total{reason=\"no_credentials\",route=\"accounts\"} 1",
    );
    let metrics = metrics_showing(
        env.gateway.admin_port,
        "fapigate_rejections_total{reason=\"invalid_token\",route=\"accounts\"} 1",
    );
    assert!(
        !metrics.contains("fapigate_upstream_duration_seconds_count{route=\"accounts\"}"),
        "{metrics}"
    );
}

#[test]
fn oversized_headers_get_431() {
    let env = Env::start();
    let big = format!("x-big: {}", "a".repeat(40 * 1024));
    let response = env.get("/status", &["-H", &big]);
    assert_eq!(response.status, 431);
}

#[test]
fn upstream_down_is_502_and_slow_upstream_is_504() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let gateway = Gateway::start(dir.path(), dead_addr, "");
    let response = curl_tls(&gateway, &pki, "/status", &[]);
    assert_eq!(response.status, 502, "{response:?}");
    assert_eq!(response.json()["error"], "bad_gateway");
    assert!(response.header("x-fapi-interaction-id").is_some());
    // Issue 16 item 3: per-upstream errors, by reason.
    metrics_showing(
        gateway.admin_port,
        "fapigate_upstream_errors_total{reason=\"connect_refused\",upstream=\"core\"} 1",
    );
    drop(gateway);

    let env = Env::start();
    let response = env.get("/slow/1500", &[]);
    assert_eq!(response.status, 504, "{response:?}");
    assert_eq!(response.json()["error"], "gateway_timeout");
    metrics_showing(
        env.gateway.admin_port,
        "fapigate_upstream_errors_total{reason=\"timeout\",upstream=\"core\"} 1",
    );
}

/// A request body the upstream stops reading is bounded by the upstream write timeout: 504,
/// never a hang (Pingora reads no answer while a body write is pending).
#[test]
fn upstream_that_stops_reading_a_body_is_504() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    // Accepts connections and never reads from them, until the test ends (20 s at most).
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = stalled.local_addr().unwrap();
    stalled.set_nonblocking(true).unwrap();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < until && finished.try_recv().is_err() {
            if let Ok((stream, _)) = stalled.accept() {
                held.push(stream);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let route = r#"
[[route]]
id = "upload"
methods = ["POST"]
path = "/upload"
upstream = "core"
auth = "none"
"#;
    let gateway = Gateway::start(dir.path(), addr, route);
    // Far more than the kernel's socket buffers hold on both sides.
    let body = dir.path().join("body.bin");
    std::fs::write(&body, vec![b'x'; 48 * 1024 * 1024]).unwrap();
    let started = std::time::Instant::now();
    let response = curl_tls(
        &gateway,
        &pki,
        "/upload",
        &[
            "--http1.1",
            "-H",
            "Expect:",
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
            &format!("@{}", body.display()),
        ],
    );
    assert_eq!(response.status, 504, "{response:?}");
    assert_eq!(response.json()["error"], "gateway_timeout");
    assert!(response.header("x-fapi-interaction-id").is_some());
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    drop(gateway);
    let _ = done.send(());
    holder.join().unwrap();
}

#[test]
fn metrics_count_traffic_by_route_and_status() {
    let env = Env::start();
    for _ in 0..3 {
        assert_eq!(env.get("/status", &[]).status, 200);
    }
    assert_eq!(env.get("/loans", &[]).status, 404);
    let (status, _) = admin_get(env.gateway.admin_port, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "fapigate_requests_total{route=\"status\",status=\"200\"} 3",
        "fapigate_requests_total{route=\"none\",status=\"404\"} 1",
        "fapigate_request_duration_seconds_count{route=\"status\"} 3",
        "fapigate_upstream_duration_seconds_count{route=\"status\"} 3",
        "fapigate_rejections_total{reason=\"no_route\",route=\"none\"} 1",
    ] {
        metrics_showing(env.gateway.admin_port, line);
    }
    assert_eq!(admin_get(env.gateway.admin_port, "/healthz").0, 200);
    assert_eq!(admin_get(env.gateway.admin_port, "/readyz").0, 200);
}

#[test]
fn h2_is_negotiated_by_alpn() {
    let env = Env::start();
    let response = env.get("/status", &["--http2"]);
    assert_eq!(response.status, 200);
    assert!(response.header("x-fapi-interaction-id").is_some());
    let response = env.get("/status", &["--http2", "-w", "%{http_version}"]);
    assert!(response.body.ends_with('2'), "{}", response.body);
}
