//! Per-route authorization with tokens from the real AS carrying RFC 9396
//! `authorization_details`: path parameters, body fields, locations, several details.

use crate::bank::*;
use base64::Engine;
use serde_json::{json, Value};

fn consent_accounts(accounts: &[&str]) -> Value {
    json!([{"type": "account_information", "actions": ["read_balances"], "accounts": accounts}])
}

fn payment_consent(amount: &str, currency: &str, iban: &str) -> Value {
    json!({"type": "payment_initiation", "actions": ["initiate"],
        "instructedAmount": {"amount": amount, "currency": currency},
        "creditorAccount": {"iban": iban}})
}

const IBAN: &str = "DE02100100109307118603";

fn post_payment(bank: &Bank, token: &str, key: &str, body: &str) -> crate::support::Response {
    post_payment_with(bank, token, key, body, &[])
}

fn post_payment_with(
    bank: &Bank,
    token: &str,
    key: &str,
    body: &str,
    extra: &[&str],
) -> crate::support::Response {
    let proof = bank
        .auth
        .proof(key, "POST", &bank.url("/payments"), token, None);
    let authorization = format!("Authorization: DPoP {token}");
    let dpop = format!("DPoP: {proof}");
    let mut args = extra.to_vec();
    args.extend([
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-H",
        &authorization,
        "-H",
        &dpop,
        "-H",
        "x-fapi-authorization-details: forged",
        "--data-binary",
        body,
    ]);
    bank.request("/payments", &args)
}

#[test]
fn rar_rs_1_the_account_in_the_path_must_be_consented() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", Some(consent_accounts(&["acc-1"])));
    let ok = bank.dpop_get("/accounts/acc-1/balances", &token, &key, &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    let forwarded = ok.json()["headers"]["x-fapi-authorization-details"][0]
        .as_str()
        .unwrap()
        .to_string();
    let detail: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(forwarded)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(detail, consent_accounts(&["acc-1"])[0]);

    let other = bank.dpop_get("/accounts/acc-2/balances", &token, &key, &[]);
    assert_eq!(other.status, 403);
    assert_eq!(
        other.challenge(),
        Some(
            dpop_challenge(
                "insufficient_scope",
                "route account-balances authorization_details[0]: rule /accounts does not hold"
            )
            .as_str()
        )
    );
    bank.metrics_showing(
        "fapigate_rejections_total{reason=\"insufficient_scope\",route=\"account-balances\"} 1",
    );
}

#[test]
fn rar_a_missing_action_another_location_or_unknown_type_grant_nothing() {
    let bank = Bank::start(Options::default());
    let cases = [
        json!([{"type": "account_information", "actions": ["list_accounts"], "accounts": ["acc-1"]}]),
        json!([{"type": "account_information", "actions": ["read_balances"], "accounts": ["acc-1"],
                "locations": ["https://api.other-bank.example"]}]),
        json!([{"type": "payment_initiation", "actions": ["read_balances"], "accounts": ["acc-1"]}]),
    ];
    for details in cases {
        let (token, key) = bank.dpop_token("tpp", "ES256", Some(details.clone()));
        let response = bank.dpop_get("/accounts/acc-1/balances", &token, &key, &[]);
        assert_eq!(response.status, 403, "{details}");
    }
    // Our own location, on a segment boundary, is fine.
    let here = json!([{"type": "account_information", "actions": ["read_balances"], "accounts": ["acc-1"],
        "locations": [bank.url("/accounts")]}]);
    let (token, key) = bank.dpop_token("tpp", "ES256", Some(here));
    assert_eq!(
        bank.dpop_get("/accounts/acc-1/balances", &token, &key, &[])
            .status,
        200
    );
}

#[test]
fn rar_a_payment_must_match_amount_currency_and_iban_and_the_body_is_forwarded_unchanged() {
    let bank = Bank::start(Options::default());
    // Several details: only the second one matches this payment.
    let details = json!([
        payment_consent("20.00", "EUR", IBAN),
        payment_consent("100.00", "EUR", IBAN)
    ]);
    let (token, key) = bank.dpop_token("tpp", "ES256", Some(details));
    let body = format!(
        r#"{{"instructedAmount": {{"amount": "100.0", "currency": "EUR"}}, "creditorAccount": {{"iban": "{IBAN}"}}, "remittance": "invoice 7"}}"#
    );
    let ok = post_payment(&bank, &token, &key, &body);
    assert_eq!(ok.status, 200, "{ok:?}");
    let echo = ok.json();
    assert_eq!(
        echo["body"],
        body.as_str(),
        "the upstream receives the identical bytes"
    );
    assert_eq!(echo["headers"]["x-fapi-client-id"], json!(["tpp"]));
    let forwarded = echo["headers"]["x-fapi-authorization-details"][0]
        .as_str()
        .unwrap();
    assert_ne!(forwarded, "forged");
    let detail: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(forwarded)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(detail["instructedAmount"]["amount"], "100.00");

    for wrong in [
        r#"{"instructedAmount": {"amount": "100.01", "currency": "EUR"}, "creditorAccount": {"iban": "DE02100100109307118603"}}"#,
        r#"{"instructedAmount": {"amount": "100.00", "currency": "USD"}, "creditorAccount": {"iban": "DE02100100109307118603"}}"#,
        r#"{"instructedAmount": {"amount": "100.00", "currency": "EUR"}, "creditorAccount": {"iban": "DE89370400440532013000"}}"#,
    ] {
        let response = post_payment(&bank, &token, &key, wrong);
        assert_eq!(response.status, 403, "{wrong}");
        assert!(response
            .challenge()
            .unwrap()
            .starts_with("DPoP error=\"insufficient_scope\""));
    }
}

#[test]
fn body_rules_need_json_within_64_kib() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token(
        "tpp",
        "ES256",
        Some(json!([payment_consent("1.00", "EUR", IBAN)])),
    );
    let malformed = post_payment(&bank, &token, &key, "{not json");
    assert_eq!(malformed.status, 400);
    assert_eq!(
        malformed.json()["error_description"],
        "the request body is not valid JSON"
    );
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    // Over HTTP/1.1: curl reports an h2 stream reset (sent after the early 413) as a failure.
    assert_eq!(
        post_payment_with(&bank, &token, &key, &big, &["--http1.1"]).status,
        413
    );
    let proof = bank
        .auth
        .proof(&key, "POST", &bank.url("/payments"), &token, None);
    let form = bank.request(
        "/payments",
        &[
            "-X",
            "POST",
            "-H",
            "content-type: text/plain",
            "-H",
            &format!("Authorization: DPoP {token}"),
            "-H",
            &format!("DPoP: {proof}"),
            "--data-binary",
            "amount=1",
        ],
    );
    assert_eq!(form.status, 415);
}
