//! Hostile requests from a client with a valid token: what the gateway judges must be exactly
//! what the upstream acts on. Each test reproduces one attack and checks the exact refusal,
//! its metric reason, and that the upstream never saw the request.

use crate::bank::*;
use serde_json::json;

const IBAN: &str = "DE02100100109307118603";
const OTHER_IBAN: &str = "DE89370400440532013000";

/// A bank whose payment route binds amount, currency and IBAN to a consent for 123.50 EUR.
fn consented_payment() -> (Bank, String, String) {
    let bank = Bank::start(Options::default());
    let consent = json!([{"type": "payment_initiation", "actions": ["initiate"],
        "instructedAmount": {"amount": "123.50", "currency": "EUR"},
        "creditorAccount": {"iban": IBAN}}]);
    let (token, key) = bank.dpop_token("tpp", "ES256", Some(consent));
    (bank, token, key)
}

fn pay(
    bank: &Bank,
    token: &str,
    key: &str,
    body: &str,
    headers: &[&str],
) -> crate::support::Response {
    let proof = bank
        .auth
        .proof(key, "POST", &bank.url("/payments"), token, None);
    let authorization = format!("Authorization: DPoP {token}");
    let dpop = format!("DPoP: {proof}");
    let mut args = vec!["-X", "POST", "-H", &authorization, "-H", &dpop];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.extend(["--data-binary", body]);
    bank.request("/payments", &args)
}

/// Each body is refused with 400 `invalid_request`, the description and the reason given,
/// and never reaches the upstream.
fn assert_refused(bank: &Bank, token: &str, key: &str, cases: &[(&str, &[&str], &str, &str)]) {
    for (body, headers, reason, description) in cases {
        let before = bank.upstream.requests_for("/payments");
        let response = pay(bank, token, key, body, headers);
        assert_eq!(response.status, 400, "{body}: {response:?}");
        assert_eq!(response.json()["error"], "invalid_request", "{body}");
        assert_eq!(response.json()["error_description"], *description, "{body}");
        assert_eq!(
            bank.upstream.requests_for("/payments"),
            before,
            "{body} reached the upstream"
        );
        // Read only once the head passed: counted on the route.
        bank.metrics_showing(&format!(
            "fapigate_rejections_total{{reason=\"{reason}\",route=\"payments\"}}"
        ));
    }
}

const JSON: &[&str] = &["content-type: application/json"];

#[test]
fn hostile_duplicate_and_case_folded_members_cannot_pay_another_amount_or_account() {
    let (bank, token, key) = consented_payment();
    let consented = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":"123.50"}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    let ok = pay(&bank, &token, &key, &consented, JSON);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.json()["body"],
        consented.as_str(),
        "the bytes checked are the bytes forwarded"
    );
    let duplicate = "the request body has a duplicate member name";
    let folded = "the request body has member names that differ only in case";
    let first_wins = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":"9999.00"}},"instructedAmount":{{"currency":"EUR","amount":"123.50"}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    let inner = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":"9999.00","amount":"123.50"}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    let cased_amount = format!(
        r#"{{"InstructedAmount":{{"currency":"EUR","amount":"9999.00"}},"instructedAmount":{{"currency":"EUR","amount":"123.50"}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    let cased_account = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":"123.50"}},"CreditorAccount":{{"iban":"{OTHER_IBAN}"}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    // U+212A KELVIN SIGN folds to k in Go's encoding/json.
    let kelvin = format!(
        "{{\"instructedAmount\":{{\"currency\":\"EUR\",\"amount\":\"123.50\"}},\"creditorAccount\":{{\"iban\":\"{IBAN}\"}},\"\u{212A}\":1,\"k\":2}}"
    );
    assert_refused(
        &bank,
        &token,
        &key,
        &[
            (&first_wins, JSON, "body_duplicate_member", duplicate),
            (&inner, JSON, "body_duplicate_member", duplicate),
            (&cased_amount, JSON, "body_case_folded_member", folded),
            (&cased_account, JSON, "body_case_folded_member", folded),
            (&kelvin, JSON, "body_case_folded_member", folded),
        ],
    );
}

#[test]
fn hostile_an_amount_with_more_digits_than_a_double_holds_is_refused_not_rounded() {
    let (bank, token, key) = consented_payment();
    let body = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":123.500000000000000001}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    assert_refused(
        &bank,
        &token,
        &key,
        &[(
            &body,
            JSON,
            "body_inexact_number",
            "the request body has a number that cannot be read exactly; send it as a string",
        )],
    );
    // The same amount as an exact number is judged (and matches the consent).
    let exact = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":123.5}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    assert_eq!(pay(&bank, &token, &key, &exact, JSON).status, 200);
}

#[test]
fn hostile_bodies_labelled_or_coded_so_readers_differ_are_refused() {
    let (bank, token, key) = consented_payment();
    let body = format!(
        r#"{{"instructedAmount":{{"currency":"EUR","amount":"123.50"}},"creditorAccount":{{"iban":"{IBAN}"}}}}"#
    );
    let bom = format!("\u{FEFF}{body}");
    assert_refused(
        &bank,
        &token,
        &key,
        &[
            (
                &body,
                &["content-type: application/json", "content-encoding: gzip"],
                "body_encoding",
                "the request body must not have a Content-Encoding",
            ),
            (
                &body,
                &["content-type: application/json; charset=utf-16"],
                "body_encoding",
                "a JSON request body must be UTF-8",
            ),
            (
                &body,
                &[
                    "content-type: application/json",
                    "content-type: application/json",
                ],
                "body_encoding",
                "the request has more than one Content-Type field",
            ),
            (
                &body,
                &["content-type: application/json, text/plain"],
                "body_encoding",
                "the request's Content-Type names more than one media type",
            ),
            (
                &bom,
                JSON,
                "body_byte_order_mark",
                "the request body starts with a byte-order mark",
            ),
        ],
    );
}

#[test]
fn hostile_headers_nobody_vouched_for_never_reach_the_upstream() {
    use crate::support::Env;
    let env = Env::with_routes(
        r#"
[[route]]
id = "legacy"
methods = ["GET"]
path = "/legacy"
upstream = "core"
auth = "none"
"#,
    );
    let response = env.get(
        "/legacy",
        &[
            "--http1.1",
            "-H",
            "X_Fapi_Subject: victim-psu",
            "-H",
            "X-Fapi_Client_Id: victim-tpp",
            "-H",
            "X-HTTP-Method-Override: DELETE",
            "-H",
            "X-Original-URL: /admin",
            "-H",
            "X-Rewrite-URL: /admin",
            "-H",
            "X-Forwarded-Host: evil.example",
            "-H",
            "X-Real-IP: 10.9.9.9",
            "-H",
            "True-Client-IP: 10.9.9.9",
            "-H",
            "Host: evil.example",
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let headers = &response.json()["headers"];
    for name in [
        "x_fapi_subject",
        "x-fapi_client_id",
        "x-http-method-override",
        "x-original-url",
        "x-rewrite-url",
        "x-real-ip",
        "true-client-ip",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the upstream: {headers}"
        );
    }
    // What clients legitimately address, never the client's own choice.
    let public = format!("127.0.0.1:{}", env.gateway.port);
    assert_eq!(headers["host"], json!([public]), "{headers}");
    assert_eq!(headers["x-forwarded-host"], json!([public]), "{headers}");
}

#[test]
fn hostile_the_upstream_never_sees_the_proof_and_sees_the_token_only_where_configured() {
    let bank = Bank::start(Options {
        extra: "\n[[route]]\nid = \"token-aware\"\nmethods = [\"GET\"]\npath = \"/token-aware\"\nupstream = \"core\"\nforward_token = true\n",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let response = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(response.status, 200, "{response:?}");
    let headers = &response.json()["headers"];
    assert!(
        headers.get("dpop").is_none(),
        "the DPoP proof reached the upstream: {headers}"
    );
    assert!(
        headers.get("authorization").is_none(),
        "the access token reached the upstream: {headers}"
    );
    assert_eq!(
        headers["x-fapi-client-id"],
        json!(["tpp"]),
        "the caller is told by [forward]"
    );
    let response = bank.dpop_get("/token-aware", &token, &key, &[]);
    assert_eq!(response.status, 200, "{response:?}");
    let headers = &response.json()["headers"];
    assert_eq!(headers["authorization"], json!([format!("DPoP {token}")]));
    assert!(headers.get("dpop").is_none(), "{headers}");
}

#[test]
fn hostile_no_token_or_proof_is_logged_even_at_debug_level() {
    let bank = Bank::start(Options {
        log_level: "debug",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let (opaque, opaque_key) = bank.dpop_token("tpp-opaque", "ES256", None);
    // A consent for another account: the refusal's reason is logged at debug level.
    let other = json!([{"type": "account_information", "actions": ["read_balances"],
        "accounts": ["acc-9"]}]);
    let (consented, consented_key) = bank.dpop_token("tpp", "ES256", Some(other));
    let mut secrets = vec![token.clone(), opaque.clone(), consented.clone()];
    for (token, key, path) in [
        (&token, &key, "/accounts"),
        (&opaque, &opaque_key, "/accounts"),
        (&consented, &consented_key, "/accounts/acc-1/balances"),
    ] {
        let proof = bank.auth.proof(key, "GET", &bank.url(path), token, None);
        let authorization = format!("Authorization: DPoP {token}");
        let dpop = format!("DPoP: {proof}");
        bank.request(path, &["-H", &authorization, "-H", &dpop]);
        // The same proof again: a replay, refused and logged.
        bank.request(path, &["-H", &authorization, "-H", &dpop]);
        secrets.push(proof);
    }
    let log = bank.gateway.log_text();
    let err = std::fs::read_to_string(bank.gateway.config.with_file_name("gateway.err"))
        .unwrap_or_default();
    assert!(log.contains("\"level\":\"DEBUG\""), "debug logging is on");
    for secret in &secrets {
        // Any 16 characters of a token or proof would be enough to look it up.
        let middle = secret.len() / 2;
        for window in [
            &secret[..16],
            &secret[middle - 8..middle + 8],
            &secret[secret.len() - 16..],
        ] {
            assert!(
                !log.contains(window),
                "a secret's text is in the log: {window}"
            );
            assert!(
                !err.contains(window),
                "a secret's text is on stderr: {window}"
            );
        }
    }
}

#[test]
fn hostile_transfer_codings_the_gateway_cannot_vouch_for_are_refused() {
    let env = crate::support::Env::start();
    let port = env.gateway.plain_port;
    let gzip_chunked = crate::hostile_timing::raw_exchange(
        port,
        "GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(gzip_chunked.starts_with("HTTP/1.1 501"), "{gzip_chunked}");
    assert!(
        gzip_chunked.contains("only the chunked transfer coding is accepted"),
        "{gzip_chunked}"
    );
    let both = crate::hostile_timing::raw_exchange(
        port,
        "GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(both.starts_with("HTTP/1.1 400"), "{both}");
    assert_eq!(
        env.upstream.requests_for("/status"),
        0,
        "neither reached the upstream"
    );
    let chunked = crate::hostile_timing::raw_exchange(
        port,
        "GET /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
}

#[test]
fn hostile_dpop_requests_without_a_valid_proof_never_reach_the_authorization_server() {
    let bank = Bank::start(Options::default());
    let (opaque, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    let before = bank.auth.introspections();
    let authorization = format!("Authorization: DPoP {opaque}");
    // No proof, a proof for another token, a garbage proof: each refused, none introspected.
    let (other, other_key) = bank.dpop_token("tpp-opaque", "ES256", None);
    let wrong = bank
        .auth
        .proof(&other_key, "GET", &bank.url("/accounts"), &other, None);
    for extra in [
        vec![],
        vec!["-H".to_string(), format!("DPoP: {wrong}")],
        vec!["-H".into(), "DPoP: a.b.c".into()],
    ] {
        let mut args: Vec<&str> = vec!["-H", &authorization];
        args.extend(extra.iter().map(String::as_str));
        let response = bank.request("/accounts", &args);
        assert_eq!(response.status, 401, "{response:?}");
        assert!(
            response
                .challenge()
                .unwrap()
                .starts_with("DPoP error=\"invalid_dpop_proof\""),
            "{response:?}"
        );
    }
    assert_eq!(
        bank.auth.introspections(),
        before,
        "the AS was asked about an unproven token"
    );
    // With a valid proof the token is introspected once.
    assert_eq!(bank.dpop_get("/accounts", &opaque, &key, &[]).status, 200);
    assert_eq!(bank.auth.introspections(), before + 1);
}

/// Issue 13 §6: an opaque token goes only to the AS whose `token_prefix` it carries; one
/// that carries none is refused without a call to any AS.
#[test]
fn hostile_an_opaque_token_without_the_as_prefix_never_reaches_the_as() {
    let bank = Bank::start(Options {
        token_prefix: Some("bank-as_"),
        ..Options::default()
    });
    let (opaque, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    let before = bank.auth.introspections();
    let response = bank.dpop_get("/accounts", &opaque, &key, &[]);
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.challenge(),
        Some(
            dpop_challenge(
                "invalid_token",
                "the access token is not from a known authorization server"
            )
            .as_str()
        )
    );
    assert_eq!(bank.auth.introspections(), before, "an AS was asked");
    assert_eq!(bank.upstream.requests_for("/accounts"), 0);
}

#[test]
fn hostile_a_refused_request_does_not_use_up_its_proof() {
    let bank = Bank::start(Options::default());
    // A consent for another account: the balances request is refused by authorization.
    let other = json!([{"type": "account_information", "actions": ["read_balances"],
        "accounts": ["acc-9"]}]);
    let (token, key) = bank.dpop_token("tpp", "ES256", Some(other));
    let path = "/accounts/acc-1/balances";
    let proof = bank.auth.proof(&key, "GET", &bank.url(path), &token, None);
    let args = [
        "-H".to_string(),
        format!("Authorization: DPoP {token}"),
        "-H".to_string(),
        format!("DPoP: {proof}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for _ in 0..2 {
        let response = bank.request(path, &args);
        assert_eq!(
            response.status, 403,
            "refused for the consent, not as a replay: {response:?}"
        );
    }
    // An admitted request uses its proof up.
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    let with = |proof: &str| {
        crate::support::accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(proof))
    };
    assert_eq!(with(&proof).status, 200);
    assert_eq!(with(&proof).status, 401);
}

/// `per_key` fresh proofs of one key are admitted, the next gets 429 with `Retry-After`, and
/// another key's proof is still admitted.
pub fn one_key_holds_its_share(bank: &Bank, per_key: usize) {
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    for _ in 0..per_key {
        assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    }
    let over = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(over.status, 429, "{over:?}");
    assert_eq!(over.header("retry-after"), Some("70"));
    assert_eq!(over.json()["error"], "temporarily_unavailable");
    assert_eq!(
        over.json()["error_description"],
        "this DPoP key has used its share of proofs for now"
    );
    let (other, other_key) = bank.dpop_token("tpp", "ES256", None);
    assert_eq!(
        bank.dpop_get("/accounts", &other, &other_key, &[]).status,
        200
    );
    bank.metrics_showing(
        "fapigate_rejections_total{reason=\"replay_share_exhausted\",route=\"accounts\"} 1",
    );
    assert_eq!(bank.upstream.requests_for("/accounts"), per_key + 1);
}

/// Issue 13 §5, the process's own store: one key cannot make every other client's proofs
/// fail with 503.
#[test]
fn hostile_one_key_cannot_fill_the_replay_store() {
    let bank = Bank::start(Options {
        replay_entries_per_key: Some(3),
        ..Options::default()
    });
    one_key_holds_its_share(&bank, 3);
}
