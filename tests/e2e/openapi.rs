//! `fapigate routes --from-openapi`: routes drafted from a bank's OpenAPI description (UK
//! Open Banking-shaped 3.0, Berlin Group NextGenPSD2-shaped 3.1) come out as TOML whose routes
//! `fapigate check` accepts; a description that cannot be read exits 1 naming the place.

use crate::support::*;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openapi")
        .join(name)
}

fn routes_command(spec: &str, extra: &[&str]) -> Output {
    Command::new(BINARY)
        .args(["routes", "--from-openapi"])
        .arg(fixture(spec))
        .args(extra)
        .output()
        .expect("fapigate routes runs")
}

/// The draft printed for `spec`, and its `[[route]]` tables.
fn drafted(spec: &str, extra: &[&str]) -> (String, Vec<toml::Value>) {
    let output = routes_command(spec, extra);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let parsed: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"));
    let routes = parsed
        .get("route")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    (text, routes)
}

fn strings(route: &toml::Value, key: &str) -> Vec<String> {
    route
        .get(key)
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn field<'a>(route: &'a toml::Value, key: &str) -> Option<&'a str> {
    route.get(key).and_then(|v| v.as_str())
}

/// Asserts route `id`: its one method, path, scopes and `auth` (`None`: the default, token).
fn assert_route(
    routes: &[toml::Value],
    id: &str,
    method: &str,
    path: &str,
    scopes: &[&str],
    auth: Option<&str>,
) {
    let route = routes
        .iter()
        .find(|r| field(r, "id") == Some(id))
        .unwrap_or_else(|| panic!("no route {id} in {routes:?}"));
    assert_eq!(strings(route, "methods"), [method], "{id}");
    assert_eq!(field(route, "path"), Some(path), "{id}");
    assert_eq!(strings(route, "scopes"), scopes, "{id}");
    assert_eq!(field(route, "auth"), auth, "{id}");
    assert_eq!(field(route, "upstream"), Some("core"), "{id}");
}

/// `fapigate check` on the shared test configuration, its own routes replaced by `routes`.
fn check_with(routes: &str) -> Output {
    let dir = temp_dir();
    Pki::new(dir.path());
    let base = config_text(8443, 9901, 8080, "127.0.0.1:9".parse().unwrap(), "");
    let without_routes = base.split("\n[[route]]").next().unwrap_or_default();
    assert!(without_routes.contains("[[upstream]]\nid = \"core\""));
    let config = dir.path().join("fapigate.toml");
    std::fs::write(&config, format!("{without_routes}\n{routes}")).unwrap();
    Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("fapigate check runs")
}

fn assert_checks(routes: &str, count: usize) {
    let output = check_with(routes);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{routes}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("{count} routes")), "{stdout}");
}

#[test]
fn openapi_uk_open_banking_routes_are_drafted_and_load() {
    let (text, routes) = drafted("uk-ob-shaped.yaml", &[]);
    assert!(text.starts_with(
        "# fapigate routes drafted from \"UK Open Banking Read/Write API (shaped)\" version \
         3.1.11 (OpenAPI 3.0.3).\n"
    ));
    assert!(
        text.contains("13 operations: 12 routes, 1 commented out."),
        "{text}"
    );
    assert_eq!(routes.len(), 12, "{text}");
    assert_route(
        &routes,
        "GetAccounts",
        "GET",
        "/accounts",
        &["accounts"],
        None,
    );
    assert_route(
        &routes,
        "GetAccount",
        "GET",
        "/accounts/{account_id}",
        &["accounts"],
        None,
    );
    assert_route(
        &routes,
        "GetAccountBalances",
        "GET",
        "/accounts/{account_id}/balances",
        &["accounts"],
        None,
    );
    // No security on the operation: the root's.
    assert_route(
        &routes,
        "GetBalances",
        "GET",
        "/balances",
        &["accounts"],
        None,
    );
    // No operationId: an id made of the method and path, and said so.
    assert_route(
        &routes,
        "get-transactions",
        "GET",
        "/transactions",
        &["accounts"],
        None,
    );
    assert!(text.contains("# no operationId: id made of the method and path"));
    assert_route(
        &routes,
        "CreateDomesticPaymentConsents",
        "POST",
        "/domestic-payment-consents",
        &["payments"],
        None,
    );
    assert_route(
        &routes,
        "GetDomesticPaymentConsentsConsentId",
        "GET",
        "/domestic-payment-consents/{consent_id}",
        &["payments"],
        None,
    );
    assert_route(
        &routes,
        "CreateDomesticPayments",
        "POST",
        "/domestic-payments",
        &["payments"],
        None,
    );
    assert_route(
        &routes,
        "GetDomesticPaymentsDomesticPaymentId",
        "GET",
        "/domestic-payments/{domestic_payment_id}",
        &["payments"],
        None,
    );
    // Renamed parameters are said; a template the gateway cannot route is left commented out.
    assert!(text.contains("{AccountId} -> {account_id}"), "{text}");
    assert!(
        text.contains(
            "# NOT LOADED, left commented out: \"/accounts/{account_id}/statements/{StatementId}.pdf\": \
             a parameter must fill a whole segment\n# [[route]]\n# id = \"GetAccountStatementFile\""
        ),
        "{text}"
    );
    // Suggested rules on the payment's body and on path parameters, commented out.
    for suggestion in [
        "# \"{body/Data/Initiation/InstructedAmount/Amount}\" = { equals = \"{claim/TODO}\" }",
        "# \"{body/Data/ConsentId}\" = { equals = \"{claim/TODO}\" }",
        "# \"{path.account_id}\" = { equals = \"{claim/TODO}\" }",
    ] {
        assert!(text.contains(suggestion), "{suggestion}\n{text}");
    }
    assert_checks(&text, 12);
}

#[test]
fn openapi_berlin_group_3_1_routes_are_drafted_and_load() {
    let (text, routes) = drafted("berlin-group-shaped.yaml", &[]);
    assert!(text.contains("(OpenAPI 3.1.0)"), "{text}");
    assert_eq!(routes.len(), 11, "{text}");
    assert_route(
        &routes,
        "getAccountList",
        "GET",
        "/v1/accounts",
        &["AIS"],
        None,
    );
    // Hyphenated and camelCase parameters take the gateway's form.
    assert_route(
        &routes,
        "getTransactionList",
        "GET",
        "/v1/accounts/{account_id}/transactions",
        &["AIS"],
        None,
    );
    assert_route(
        &routes,
        "initiatePayment",
        "POST",
        "/v1/payments/{payment_product}",
        &["PIS"],
        None,
    );
    assert_route(
        &routes,
        "getPaymentInitiationStatus",
        "GET",
        "/v1/payments/{payment_product}/{payment_id}/status",
        &["PIS"],
        None,
    );
    assert_route(
        &routes,
        "createConsent",
        "POST",
        "/v1/consents",
        &["AIS"],
        None,
    );
    // From a path item by $ref: one without operationId, one with alternatives.
    assert_route(
        &routes,
        "get-v1-consents-consent-id",
        "GET",
        "/v1/consents/{consent_id}",
        &["AIS"],
        None,
    );
    assert_route(
        &routes,
        "deleteConsent",
        "DELETE",
        "/v1/consents/{consent_id}",
        &["AIS"],
        None,
    );
    // `security: []`: public.
    assert_route(&routes, "getHealth", "GET", "/v1/health", &[], Some("none"));
    for note in [
        "{account-id} -> {account_id}",
        "{payment-product} -> {payment_product}, {paymentId} -> {payment_id}",
        "it also accepts ApiKeyAuth",
        "the spec also requires TPPCertificate (mutualTLS) with it",
        "also allows anonymous access ({}): authentication is optional there",
        "# \"{body/instructedAmount/amount}\" = { equals = \"{claim/TODO}\" }",
        "# \"{path.payment_product}\" = { equals = \"{claim/TODO}\" }",
    ] {
        assert!(text.contains(note), "{note}\n{text}");
    }
    assert_checks(&text, 11);
}

#[test]
fn openapi_routes_name_the_upstream_given() {
    let (text, routes) = drafted("uk-ob-shaped.yaml", &["--upstream", "core-banking"]);
    assert!(!routes.is_empty());
    for route in &routes {
        assert_eq!(field(route, "upstream"), Some("core-banking"), "{route:?}");
    }
    assert!(
        text.contains("[[upstream]] id = \"core-banking\""),
        "{text}"
    );
}

#[test]
fn openapi_descriptions_that_cannot_be_read_exit_1_naming_the_place() {
    let cases = [
        (
            "bad-ref-cycle.yaml",
            "operation \"CreatePayment\" (POST /payments), request body (application/json) \
             schema: $ref cycle: #/components/schemas/CycleA -> #/components/schemas/CycleB -> \
             #/components/schemas/CycleA",
        ),
        (
            "bad-missing-ref.yaml",
            "operation \"GetConsent\" (GET /consents/{ConsentId}), parameters[0]: $ref \
             \"#/components/parameters/NoSuchParameter\" does not resolve",
        ),
        (
            "swagger-2.yaml",
            "swagger: \"2.0\": Swagger 2.0 (OpenAPI 2) is not supported",
        ),
        (
            "openapi-4.yaml",
            "openapi: \"4.0.0\" is not a version this reads (3.0.x and 3.1.x are)",
        ),
        (
            "bad-syntax.yaml",
            "line 8, column 19: mapping values are not allowed in this context",
        ),
        (
            "bad-duplicate-keys.yaml",
            "line 12, column 5: duplicate key \"get\" in a mapping",
        ),
    ];
    for (spec, message) in cases {
        let output = routes_command(spec, &[]);
        assert_eq!(output.status.code(), Some(1), "{spec}: {output:?}");
        assert!(output.stdout.is_empty(), "{spec}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let want = format!("fapigate routes: {}: {message}", fixture(spec).display());
        assert!(stderr.contains(&want), "{spec}:\n{stderr}\nwanted: {want}");
    }
    let missing = routes_command("no-such-file.yaml", &[]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
}
