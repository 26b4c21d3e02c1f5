//! Issue 18: the ecosystem packs in conf/packs/, included by a bank's file and judged with
//! tokens shaped as each ecosystem's AS issues them (DPoP-bound, minted by the test AS), in
//! front of a real upstream. Each pack's own negative cases: another consent's account, an
//! altered payment amount, a second consent scope, a missing Consent-ID or x-v.

use crate::bank::{dpop_challenge, Bank, Options};
use crate::support::*;
use serde_json::{json, Value};

fn pack(name: &str) -> String {
    format!("{}/conf/packs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A bank whose file includes `pack` and maps its upstream names with `mapping`.
fn bank_with(pack_file: &str, mapping: &'static str) -> Bank {
    Bank::start(Options {
        prelude: format!("include = [\"{}\"]\n", pack(pack_file)),
        extra: mapping,
        scope_from_request: true,
        ..Options::default()
    })
}

/// A DPoP-bound token with `scope` and the ecosystem's own `claims`, and its key id.
fn token(bank: &Bank, scope: &str, claims: Value) -> (String, String) {
    let response = bank.auth.call(
        "/__test/token",
        json!({"client_id": "tpp", "client_secret": "tpp-secret", "dpop": true,
               "dpop_alg": "ES256", "scope": scope, "claims": claims}),
    );
    (
        response["access_token"]
            .as_str()
            .expect("token")
            .to_string(),
        response["dpop_key_id"].as_str().expect("key").to_string(),
    )
}

fn headers(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(name, value)| ["-H".to_string(), format!("{name}: {value}")])
        .collect()
}

fn get(bank: &Bank, path: &str, token: &(String, String), pairs: &[(&str, &str)]) -> Response {
    get_with(bank, path, token, pairs, &[])
}

fn get_with(
    bank: &Bank,
    path: &str,
    token: &(String, String),
    pairs: &[(&str, &str)],
    flags: &[&str],
) -> Response {
    let mut args = headers(pairs);
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bank.dpop_get(path, &token.0, &token.1, &args)
}

fn post(
    bank: &Bank,
    path: &str,
    token: &(String, String),
    body: &Value,
    pairs: &[(&str, &str)],
) -> Response {
    post_as(
        bank,
        path,
        token,
        "application/json",
        body.to_string(),
        pairs,
    )
}

fn post_as(
    bank: &Bank,
    path: &str,
    token: &(String, String),
    content_type: &str,
    body: String,
    pairs: &[(&str, &str)],
) -> Response {
    let proof = bank
        .auth
        .proof(&token.1, "POST", &bank.url(path), &token.0, None);
    let mut args = headers(&[
        ("Authorization", &format!("DPoP {}", token.0)),
        ("DPoP", &proof),
        ("Content-Type", content_type),
    ]);
    args.extend(headers(pairs));
    args.extend([
        "-X".to_string(),
        "POST".to_string(),
        "--data-binary".to_string(),
        body,
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    bank.request(path, &args)
}

/// 403 `insufficient_scope` naming the rule, in the body and the DPoP challenge.
fn assert_refused(response: &Response, description: &str) {
    assert_eq!(response.status, 403, "{}", response.body);
    assert_eq!(response.json()["error"], "insufficient_scope");
    assert_eq!(response.json()["error_description"], description);
    assert_eq!(
        response.challenge(),
        Some(dpop_challenge("insufficient_scope", description).as_str())
    );
}

/// 400 `invalid_request` for a required header, with no challenge (not about the token).
fn assert_header_refused(response: &Response, description: &str) {
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["error"], "invalid_request");
    assert_eq!(response.json()["error_description"], description);
    assert_eq!(response.challenge(), None);
}

#[test]
fn packs_load_with_fapigate_check() {
    let env = Env::start();
    for (file, mapping) in [
        ("uk-ob.toml", "aisp = \"core\"\npisp = \"core\""),
        (
            "brazil-open-finance.toml",
            "accounts = \"core\"\npayments = \"core\"",
        ),
        ("berlin-group.toml", "ais = \"core\"\npis = \"core\""),
        ("au-cdr.toml", "banking = \"core\""),
    ] {
        let text = std::fs::read_to_string(&env.gateway.config).unwrap();
        let config = env.gateway.config.with_file_name("with-pack.toml");
        std::fs::write(
            &config,
            format!(
                "include = [\"{}\"]\n{text}\n[pack_upstreams]\n{mapping}\n",
                pack(file)
            ),
        )
        .unwrap();
        let output = std::process::Command::new(BINARY)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(output.status.success(), "{file}: {output:?}");
        // A pack's mistake is named in the pack, with its line.
        let broken = std::fs::read_to_string(pack(file)).unwrap().replacen(
            "methods = [\"GET\"]",
            "methods = [\"FETCH\"]",
            1,
        );
        let copy = dir_of(&config).join(file);
        std::fs::write(&copy, &broken).unwrap();
        std::fs::write(
            &config,
            format!(
                "include = [\"{}\"]\n{text}\n[pack_upstreams]\n{mapping}\n",
                copy.display()
            ),
        )
        .unwrap();
        let output = std::process::Command::new(BINARY)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{file}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = broken.lines().position(|l| l.contains("FETCH")).unwrap() + 1;
        assert!(
            stderr.contains(&format!(
                "line {line}: include[0] ({}): route[0].methods[0]",
                copy.display()
            )),
            "{stderr}"
        );
    }
}

fn dir_of(path: &std::path::Path) -> std::path::PathBuf {
    path.parent().unwrap().to_path_buf()
}

const UK: &str = "[pack_upstreams]\naisp = \"core\"\npisp = \"core\"\n";

fn uk_payment(consent: &str, amount: &str) -> Value {
    json!({"Data": {"ConsentId": consent, "Initiation": {
        "InstructionIdentification": "ACME412", "EndToEndIdentification": "FRESCO.21302.GFX.20",
        "InstructedAmount": {"Amount": amount, "Currency": "GBP"},
        "CreditorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                            "Identification": "08080021325698", "Name": "ACME Inc"}}},
        "Risk": {}})
}

#[test]
fn uk_ob_accounts_of_the_consent_and_the_payment_it_authorised() {
    let bank = bank_with("uk-ob.toml", UK);
    let consent = json!({"InstructionIdentification": "ACME412",
        "EndToEndIdentification": "FRESCO.21302.GFX.20",
        "InstructedAmount": {"Amount": "165.88", "Currency": "GBP"},
        "CreditorAccount": {"SchemeName": "UK.OBIE.SortCodeAccountNumber",
                            "Identification": "08080021325698", "Name": "ACME Inc"}});
    let aisp = token(
        &bank,
        "accounts",
        json!({"openbanking_intent_id": "aac-fee2b8eb", "ob_account_ids": ["22289", "31820"]}),
    );
    let base = "/open-banking/v3.1/aisp/accounts";
    assert_eq!(
        get(&bank, &format!("{base}/22289/balances"), &aisp, &[]).status,
        200
    );
    assert_eq!(
        bank.upstream
            .requests_for(&format!("{base}/22289/balances")),
        1
    );
    // Another consent's account.
    let other = get(&bank, &format!("{base}/99999/balances"), &aisp, &[]);
    assert_refused(
        &other,
        "route uk-account-balances rule {claim/ob_account_ids} contains {path.account_id} does not hold",
    );
    assert_eq!(
        bank.upstream
            .requests_for(&format!("{base}/99999/balances")),
        0
    );
    // A token without the consent's accounts serves none of them.
    let bare = token(&bank, "accounts", json!({"openbanking_intent_id": "aac-1"}));
    assert_refused(
        &get(&bank, &format!("{base}/22289"), &bare, &[]),
        "route uk-account rule {claim/ob_account_ids} contains {path.account_id} does not hold: {claim/ob_account_ids} is absent",
    );

    let pisp = token(
        &bank,
        "payments",
        json!({"openbanking_intent_id": "pdc-58923", "ob_initiation": consent}),
    );
    let payments = "/open-banking/v3.1/pisp/domestic-payments";
    let idempotent = [("x-idempotency-key", "FRESNO.1317.GFX.22")];
    let ok = post(
        &bank,
        payments,
        &pisp,
        &uk_payment("pdc-58923", "165.88"),
        &idempotent,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The Initiation is compared whole and exactly: an amount written otherwise, an altered
    // amount, an added roll number are all another payment.
    let initiation_rule = "route uk-domestic-payments rule {body/Data/Initiation} equals {claim/ob_initiation} does not hold";
    for altered in [
        uk_payment("pdc-58923", "165.880"),
        uk_payment("pdc-58923", "1165.88"),
        {
            let mut body = uk_payment("pdc-58923", "165.88");
            body["Data"]["Initiation"]["CreditorAccount"]["SecondaryIdentification"] =
                json!("0002");
            body
        },
    ] {
        assert_refused(
            &post(&bank, payments, &pisp, &altered, &idempotent),
            initiation_rule,
        );
    }
    // Another consent's id in the body.
    assert_refused(
        &post(&bank, payments, &pisp, &uk_payment("pdc-00001", "165.88"), &idempotent),
        "route uk-domestic-payments rule {body/Data/ConsentId} equals {claim/openbanking_intent_id} does not hold",
    );
    // x-idempotency-key is mandatory, once.
    assert_header_refused(
        &post(
            &bank,
            payments,
            &pisp,
            &uk_payment("pdc-58923", "165.88"),
            &[],
        ),
        "route uk-domestic-payments requires the header x-idempotency-key",
    );
    assert_header_refused(
        &post(
            &bank,
            payments,
            &pisp,
            &uk_payment("pdc-58923", "165.88"),
            &[("x-idempotency-key", "a"), ("x-idempotency-key", "b")],
        ),
        "the header x-idempotency-key must be sent exactly once",
    );
    assert_eq!(bank.upstream.requests_for(payments), 1);
}

const BRAZIL: &str = "[pack_upstreams]\naccounts = \"core\"\npayments = \"core\"\n";

#[test]
fn brazil_the_consent_scope_names_the_consent_once() {
    let bank = bank_with("brazil-open-finance.toml", BRAZIL);
    let consent = "urn:bancoex:C1DD33123";
    let accounts = token(
        &bank,
        &format!("openid accounts consent:{consent}"),
        json!({}),
    );
    let path = "/open-banking/accounts/v2/accounts/291e5a29/balances";
    assert_eq!(get(&bank, path, &accounts, &[]).status, 200);
    // A second consent scope.
    let two = token(
        &bank,
        &format!("accounts consent:{consent} consent:urn:bancoex:FFFF0000"),
        json!({}),
    );
    assert_refused(
        &get(&bank, path, &two, &[]),
        "route br-account-balances accepts exactly one scope consent:{consent_id}: the token has several",
    );
    let none = token(&bank, "accounts", json!({}));
    assert_refused(
        &get(&bank, path, &none, &[]),
        "route br-account-balances requires a scope consent:{consent_id}",
    );
    assert_eq!(bank.upstream.requests_for(path), 1);

    let payments = token(&bank, &format!("payments consent:{consent}"), json!({}));
    let pix = "/open-banking/payments/v2/pix/payments";
    // The body is a signed JWS (application/jwt): passed on as it came, for the core.
    let jws = "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCJ9.eyJkYXRhIjp7ImNvbnNlbnRJZCI6InVybjpiYW5jb2V4OkMxREQzMzEyMyJ9fQ.c2lnbmF0dXJl";
    let key = [("x-idempotency-key", "7a4c3f0e")];
    let send = |token: &(String, String), pairs: &[(&str, &str)]| {
        post_as(&bank, pix, token, "application/jwt", jws.to_string(), pairs)
    };
    let ok = send(&payments, &key);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.body.contains(jws),
        "the upstream got the JWS as sent: {}",
        ok.body
    );
    let two_payments = token(
        &bank,
        &format!("payments consent:{consent} consent:urn:bancoex:FFFF0000"),
        json!({}),
    );
    assert_refused(
        &send(&two_payments, &key),
        "route br-pix-payments accepts exactly one scope consent:{consent_id}: the token has several",
    );
    assert_header_refused(
        &send(&payments, &[]),
        "route br-pix-payments requires the header x-idempotency-key",
    );
    assert_eq!(bank.upstream.requests_for(pix), 1);
}

const BERLIN: &str = "[pack_upstreams]\nais = \"core\"\npis = \"core\"\n";

#[test]
fn berlin_group_consent_id_must_be_the_tokens_consent() {
    let bank = bank_with("berlin-group.toml", BERLIN);
    let consent = "VOLA-6d2a2d8e";
    let ais = token(&bank, &format!("AIS:{consent}"), json!({}));
    let path = "/v1/accounts/3dc3d5b3-7023-4848-9853-f5400a64e80f/balances";
    let request_id = ("X-Request-ID", "99391c7e-ad88-49ec-a2ad-99ddcb1f7721");
    assert_eq!(
        get(&bank, path, &ais, &[request_id, ("Consent-ID", consent)]).status,
        200
    );
    // What is judged is what the upstream gets: a Consent-ID that Connection would have
    // removed on the way, or a second spelling an upstream framework reads as the same.
    assert_header_refused(
        // HTTP/1.1: HTTP/2 has no Connection header.
        &get_with(
            &bank,
            path,
            &ais,
            &[
                request_id,
                ("Consent-ID", consent),
                ("Connection", "keep-alive, Consent-ID"),
            ],
            &["--http1.1"],
        ),
        "the Connection header names consent-id, which this route judges",
    );
    assert_header_refused(
        &get(
            &bank,
            path,
            &ais,
            &[
                request_id,
                ("Consent-ID", consent),
                ("Consent_ID", "VOLA-other"),
            ],
        ),
        "consent-id is also sent spelled with _: send it once, with -",
    );
    // A missing Consent-ID.
    assert_header_refused(
        &get(&bank, path, &ais, &[request_id]),
        "route bg-account-balances requires the header consent-id",
    );
    // Another consent's id.
    assert_refused(
        &get(&bank, path, &ais, &[request_id, ("Consent-ID", "VOLA-other")]),
        "route bg-account-balances rule {header.consent-id} equals {scope.consent_id} does not hold",
    );
    // The token of a payment is not an account consent.
    let pis = token(&bank, "PIS:pay-1234", json!({}));
    assert_refused(
        &get(&bank, path, &pis, &[request_id, ("Consent-ID", consent)]),
        "route bg-account-balances requires a scope AIS:{consent_id}",
    );
    assert_eq!(bank.upstream.requests_for(path), 1);
    // A payment's status with the PSU's token of that payment only.
    let status = "/v1/payments/sepa-credit-transfers/pay-1234/status";
    assert_eq!(get(&bank, status, &pis, &[request_id]).status, 200);
    assert_refused(
        &get(
            &bank,
            "/v1/payments/sepa-credit-transfers/pay-9999/status",
            &pis,
            &[request_id],
        ),
        "route bg-payment-status rule {path.payment_id} equals {scope.payment_id} does not hold",
    );
}

const CDR: &str = "[pack_upstreams]\nbanking = \"core\"\n";

#[test]
fn au_cdr_scopes_and_the_version_header() {
    let bank = bank_with("au-cdr.toml", CDR);
    let basic = token(
        &bank,
        "bank:accounts.basic:read",
        json!({"cdr_arrangement_id": "5a1bf696-ee03-408b-b315-97955415d1f0"}),
    );
    let version = ("x-v", "2");
    // Bulk balances beside /accounts/{accountId}: the literal path wins.
    let bulk = "/cds-au/v1/banking/accounts/balances";
    assert_eq!(get(&bank, bulk, &basic, &[version]).status, 200);
    assert_eq!(bank.upstream.requests_for(bulk), 1);
    // Account detail needs the detailed scope.
    assert_refused(
        &get(
            &bank,
            "/cds-au/v1/banking/accounts/acc-1",
            &basic,
            &[version],
        ),
        "route au-account-detail requires scope bank:accounts.detail:read",
    );
    let detail = token(&bank, "bank:accounts.detail:read", json!({}));
    assert_eq!(
        get(
            &bank,
            "/cds-au/v1/banking/accounts/acc-1",
            &detail,
            &[version]
        )
        .status,
        200
    );
    assert_header_refused(
        &get(
            &bank,
            "/cds-au/v1/banking/accounts/acc-1/balance",
            &basic,
            &[],
        ),
        "route au-account-balance requires the header x-v",
    );
}
