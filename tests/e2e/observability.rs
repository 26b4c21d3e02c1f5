//! Issue 16 item 3: what on-call reads about one request. The access line names the TPP
//! (`client_id`), the trace (`trace_id`, `span_id`), the bytes each way and the TLS version; a
//! W3C `traceparent` is continued to the upstream with the gateway's span, or begun; requests
//! are counted per named client.

use crate::bank::{Bank, Options};
use crate::support::*;

const UUID: &str = "5d0c4a2e-8f6b-4c1d-9e3a-2b7f6a1c0d9e";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn upstream_traceparent(response: &Response) -> String {
    response.json()["headers"]["traceparent"][0]
        .as_str()
        .expect("the upstream got a traceparent")
        .to_string()
}

#[test]
fn ops_the_access_line_names_the_client_the_trace_bytes_and_tls() {
    // With signing, `tpp` is a [[client]]: a named client, its own label.
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let received = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let response = bank.dpop_get(
        "/accounts",
        &token,
        &key,
        &[
            "-H",
            &format!("traceparent: {received}"),
            "-H",
            &format!("x-fapi-interaction-id: {UUID}"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    // Continued: the same trace, the gateway's span as the upstream's parent.
    let sent = upstream_traceparent(&response);
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7");
    let line = bank.gateway.access_line(UUID);
    assert_eq!(line["client_id"], "tpp");
    assert_eq!(line["trace_id"], TRACE);
    assert_eq!(line["span_id"], parts[2]);
    assert_eq!(line["request_bytes"], 0);
    assert_eq!(line["response_bytes"], response.body.len());
    assert!(
        line["tls_version"]
            .as_str()
            .is_some_and(|v| v.contains("1.3") || v.contains("1.2")),
        "{line}"
    );
    bank.metrics_showing("fapigate_client_requests_total{client=\"tpp\",status=\"200\"} 1");

    // No traceparent: one is begun, and the upstream and the log agree on it.
    let other = "7a1c0d9e-8f6b-4c1d-9e3a-2b7f6a1c0d9e";
    let response = bank.dpop_get(
        "/accounts",
        &token,
        &key,
        &["-H", &format!("x-fapi-interaction-id: {other}")],
    );
    let sent = upstream_traceparent(&response);
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!((parts[0], parts[3]), ("00", "00"), "{sent}");
    assert!(parts[1].len() == 32 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
    let line = bank.gateway.access_line(other);
    assert_eq!(line["trace_id"], parts[1]);
    assert_eq!(line["span_id"], parts[2]);
}

#[test]
fn ops_clients_not_named_are_counted_as_other() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    let metrics =
        bank.metrics_showing("fapigate_client_requests_total{client=\"other\",status=\"200\"} 1");
    assert!(!metrics.contains("client=\"tpp\""), "{metrics}");
}
