//! The authorization stage: `policy::authorize::authorize` for a token holding 10
//! `authorization_details` against a route whose requirement has 5 match rules (contains on
//! `{path.account_id}`, equals on `{body/...}` with decimal amounts, at_most on a literal),
//! where only the 10th detail satisfies it.
//!
//! `cargo bench --bench authorize -- --warm-up-time 1 --measurement-time 3`
//!
//! Target: under 5 µs.

#[path = "support.rs"]
mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fapigate::stages::Grant;
use fapigate::stages::RouteMatch;
use fapigate::stages::{authorize, RequestView};
use http::Method;
use serde_json::{json, Value};
use support::*;

const ROUTE: &str = r#"
[[route]]
id = "payments"
methods = ["POST"]
path = "/accounts/{account_id}/payments"
upstream = "core"
scopes = ["payments"]
[[route.authorization_details]]
type = "payment_initiation"
actions = ["initiate"]
[route.authorization_details.match]
"/accounts" = { contains = "{path.account_id}" }
"/instructedAmount/currency" = { equals = "{body/instructedAmount/currency}" }
"/instructedAmount/amount" = { equals = "{body/instructedAmount/amount}" }
"/creditorAccount/iban" = { equals = "{body/creditorAccount/iban}" }
"/fee" = { at_most = "2.50" }
"#;

const IBAN: &str = "DE02100100109307118603";

/// Ten details; each of the first nine fails at a different check, the tenth matches.
fn details(locations: bool) -> Vec<Value> {
    let base = |accounts: &[&str], currency: &str, amount: &str, iban: &str, fee: &str| {
        json!({
            "type": "payment_initiation",
            "actions": ["initiate"],
            "locations": ["https://api.bank.example/accounts"],
            "accounts": accounts,
            "instructedAmount": {"currency": currency, "amount": amount},
            "creditorAccount": {"iban": iban},
            "creditorName": "Merchant A",
            "fee": fee,
        })
    };
    let mut all = vec![
        json!({"type": "account_information", "actions": ["read_balances"],
               "locations": ["https://api.bank.example/accounts"], "accounts": ["acc-7"]}),
        {
            let mut d = base(&["acc-7"], "EUR", "100.00", IBAN, "1.00");
            d["actions"] = json!(["status"]);
            d
        },
        base(&["acc-2", "acc-3"], "EUR", "100.00", IBAN, "1.00"),
        base(
            &["acc-7"],
            "EUR",
            "100.00",
            "DE89370400440532013000",
            "1.00",
        ),
        base(&["acc-7"], "EUR", "100.00", IBAN, "3.00"),
        base(&["acc-7"], "EUR", "100.01", IBAN, "1.00"),
        base(&["acc-7"], "EUR", "99.99", IBAN, "1.00"),
        base(&["acc-7"], "USD", "100.00", IBAN, "1.00"),
        {
            let mut d = base(&["acc-7"], "EUR", "100.00", IBAN, "1.00");
            d["locations"] = json!(["https://api.other.example"]);
            d
        },
        base(&["acc-1", "acc-7"], "EUR", "100.00", IBAN, "1.00"),
    ];
    if !locations {
        for d in &mut all {
            d.as_object_mut().unwrap().remove("locations");
        }
        // Without locations the ninth would match: make it fail on its account instead.
        all[8]["accounts"] = json!(["acc-9"]);
    }
    all
}

fn grant(details: Vec<Value>) -> Grant {
    Grant {
        issuer: ISSUER.into(),
        subject: Some("alice".into()),
        client_id: Some("tpp-001".into()),
        scopes: vec!["accounts".into(), "payments".into()],
        authorization_details: details,
        cnf: Default::default(),
        expires_at: None,
        issued_at: None,
        acr: None,
        auth_time: None,
        token_id: None,
        token_type: None,
        claims: Default::default(),
    }
}

fn bench_authorize(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), ROUTE);
    let path = "/accounts/acc-7/payments";
    let RouteMatch::Found { route, params } = policy.routes.find(&Method::POST, path) else {
        panic!("the payments route matches");
    };
    let route = policy.routes.get(route).unwrap();
    assert_eq!(route.authorization_details[0].rules.len(), 5);
    let url = format!("{PUBLIC_URL}{path}");
    let body = json!({
        "instructedAmount": {"currency": "EUR", "amount": "100.0"},
        "creditorAccount": {"iban": IBAN},
        "creditorName": "Merchant A",
        "remittanceInformation": "invoice 42",
    });
    let headers = http::HeaderMap::new();
    let view = RequestView {
        url: &url,
        params: &params,
        body: Some(&body),
        headers: &headers,
        now: 1_700_000_000,
    };

    let mut group = c.benchmark_group("authorize");
    for (name, locations) in [
        ("10_details_last_matches/with_locations", true),
        ("10_details_last_matches/no_locations", false),
    ] {
        let grant = grant(details(locations));
        let granted = authorize(route, &grant, &view).expect("the tenth detail grants");
        assert_eq!(granted, Some(&grant.authorization_details[9]), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| authorize(route, black_box(&grant), black_box(&view)).unwrap())
        });
    }
    // For scale: the same route when the first detail already matches.
    let first = grant(vec![details(true).pop().unwrap()]);
    group.bench_function("1_detail_matches", |b| {
        b.iter(|| authorize(route, black_box(&first), black_box(&view)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_authorize);
criterion_main!(benches);
