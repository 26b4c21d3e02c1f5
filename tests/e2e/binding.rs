//! Sender-constrained tokens only: DPoP (RFC 9449) with replay protection and nonces, and
//! mTLS-bound tokens (RFC 8705), with tokens from the real AS and proofs from the npm `dpop`
//! library (malformed ones built by hand in the unit tests of `binding::dpop`).

use crate::bank::*;
use serde_json::json;

fn with_proof(
    bank: &Bank,
    scheme: &str,
    token: &str,
    proof: Option<&str>,
) -> crate::support::Response {
    crate::support::accounts_with(&bank.gateway, &bank.pki, scheme, token, proof)
}

#[test]
fn dpop_11_1_2_a_replayed_proof_is_refused() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    assert_eq!(with_proof(&bank, "DPoP", &token, Some(&proof)).status, 200);
    let replay = with_proof(&bank, "DPoP", &token, Some(&proof));
    assert_eq!(replay.status, 401);
    assert_eq!(
        replay.challenge(),
        Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
    );
    assert_eq!(replay.header("cache-control"), Some("no-store"));
    bank.metrics_showing("fapigate_rejections_total{reason=\"dpop_replay\",route=\"accounts\"} 1");
}

#[test]
fn dpop_7_1_2_a_missing_proof_and_a_proof_for_another_uri_are_refused() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let response = with_proof(&bank, "DPoP", &token, None);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(dpop_challenge("invalid_dpop_proof", "a DPoP proof is required").as_str())
    );
    let elsewhere = bank
        .auth
        .proof(&key, "GET", &bank.url("/payments"), &token, None);
    let response = with_proof(&bank, "DPoP", &token, Some(&elsewhere));
    assert_eq!(
        response.challenge(),
        Some(
            dpop_challenge(
                "invalid_dpop_proof",
                "the DPoP proof htu does not match the request URI"
            )
            .as_str()
        )
    );
    let wrong_method = bank
        .auth
        .proof(&key, "POST", &bank.url("/accounts"), &token, None);
    let response = with_proof(&bank, "DPoP", &token, Some(&wrong_method));
    assert_eq!(response.status, 401);
    assert!(response.challenge().unwrap().contains("htm does not match"));
}

#[test]
fn dpop_4_3_9_positive_controls_query_fragment_case_and_header_names() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let htu = format!("{}?page=2#top", bank.url("/accounts")).replace("https://", "HTTPS://");
    let proof = bank.auth.proof(&key, "GET", &htu, &token, None);
    let response = bank.request(
        "/accounts?page=2",
        &[
            "-H",
            &format!("authorization: dPoP {token}"),
            "-H",
            &format!("dpop: {proof}"),
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn dpop_4_3_12_a_proof_signed_by_another_key_is_refused() {
    let bank = Bank::start(Options::default());
    let (token, _) = bank.dpop_token("tpp", "ES256", None);
    let (_, other_key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&other_key, "GET", &bank.url("/accounts"), &token, None);
    let response = with_proof(&bank, "DPoP", &token, Some(&proof));
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(dpop_challenge("invalid_token", "Invalid DPoP key binding").as_str())
    );
}

#[test]
fn dpop_7_2_1_bearer_downgrade_is_refused_with_and_without_a_proof() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    let expected = "Bearer error=\"invalid_token\", error_description=\"the access token is DPoP-bound: use the DPoP scheme with a proof\", DPoP algs=\"ES256 PS256 EdDSA\"";
    for proof in [None, Some(proof.as_str())] {
        let response = with_proof(&bank, "Bearer", &token, proof);
        assert_eq!(response.status, 401);
        assert_eq!(response.challenge(), Some(expected));
    }
}

#[test]
fn dpop_9_nonce_required_then_accepted() {
    let bank = Bank::start(Options {
        dpop_nonce: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let first = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(first.status, 401);
    assert_eq!(
        first.challenge(),
        Some("DPoP error=\"use_dpop_nonce\", error_description=\"Resource server requires nonce in DPoP proof\"")
    );
    assert_eq!(first.headers.get("dpop-nonce").map(Vec::len), Some(1));
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let nonce = first.header("dpop-nonce").unwrap();
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, Some(nonce));
    let second = with_proof(&bank, "DPoP", &token, Some(&proof));
    assert_eq!(second.status, 200, "{second:?}");
    let forged = bank.auth.proof(
        &key,
        "GET",
        &bank.url("/accounts"),
        &token,
        Some("bm90LWEtbm9uY2U"),
    );
    assert_eq!(with_proof(&bank, "DPoP", &token, Some(&forged)).status, 401);
}

#[test]
fn mtls_3_2_certificate_bound_token_needs_the_same_certificate() {
    let bank = Bank::start(Options::default());
    let (cert, key, _) = bank.pki.client("tpp-mtls");
    let (other_cert, other_key, _) = bank.pki.client("someone-else");
    let token = bank.mtls_token("tpp-mtls", &cert);
    let (cert, key) = (
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );
    let (other_cert, other_key) = (
        other_cert.to_string_lossy().to_string(),
        other_key.to_string_lossy().to_string(),
    );
    let bearer = format!("Authorization: Bearer {token}");
    let ok = bank.request(
        "/accounts",
        &["--cert", &cert, "--key", &key, "-H", &bearer],
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    let other = bank.request(
        "/accounts",
        &["--cert", &other_cert, "--key", &other_key, "-H", &bearer],
    );
    assert_eq!(other.status, 401);
    assert_eq!(
        other.challenge(),
        Some("Bearer error=\"invalid_token\", error_description=\"the client certificate does not match the access token\"")
    );
    let none = bank.request("/accounts", &["-H", &bearer]);
    assert_eq!(none.status, 401);
    assert_eq!(
        none.challenge(),
        Some("Bearer error=\"invalid_token\", error_description=\"no client certificate was presented\"")
    );
    // IA-4: an mTLS-bound token under the DPoP scheme is refused, even with a valid proof
    // (without one, the proof is what is missing, checked before the token).
    let (_, dpop_key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&dpop_key, "GET", &bank.url("/accounts"), &token, None);
    let dpop = bank.request(
        "/accounts",
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            &format!("Authorization: DPoP {token}"),
            "-H",
            &format!("DPoP: {proof}"),
        ],
    );
    assert_eq!(dpop.status, 401);
    assert_eq!(
        dpop.challenge(),
        Some(
            dpop_challenge(
                "invalid_token",
                "the access token is certificate-bound: present it with the Bearer scheme"
            )
            .as_str()
        )
    );
}

#[test]
fn sp2_rs_6_an_unbound_token_is_refused() {
    let bank = Bank::start(Options::default());
    let response = bank.auth.call(
        "/__test/token",
        json!({"client_id": "tpp", "client_secret": "tpp-secret", "scope": "accounts"}),
    );
    let token = response["access_token"].as_str().unwrap();
    let response = bank.request(
        "/accounts",
        &["-H", &format!("Authorization: Bearer {token}")],
    );
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some("Bearer error=\"invalid_token\", error_description=\"the access token is not sender-constrained\"")
    );
}

#[test]
fn fapi1_adv_3_only_mtls_bound_tokens_under_fapi1_advanced() {
    let bank = Bank::start(Options {
        profile: "fapi1-advanced",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let response = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(
            dpop_challenge(
                "invalid_token",
                "DPoP-bound access tokens are not accepted by this resource server"
            )
            .as_str()
        )
    );
    let (cert, key, _) = bank.pki.client("tpp-mtls");
    let token = bank.mtls_token("tpp-mtls", &cert);
    let (cert, key) = (
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );
    let ok = bank.request(
        "/accounts",
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            &format!("Authorization: Bearer {token}"),
        ],
    );
    assert_eq!(ok.status, 200);
    let none = bank.request("/accounts", &[]);
    assert_eq!(none.challenge(), Some("Bearer"));
}

#[test]
fn dpop_11_1_2_replay_records_survive_a_configuration_reload() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    assert_eq!(with_proof(&bank, "DPoP", &token, Some(&proof)).status, 200);
    let config = bank.gateway.config.clone();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[route]]\nid = \"added\"\nmethods = [\"GET\"]\npath = \"/added\"\nupstream = \"core\"\nauth = \"none\"\n");
    std::fs::write(&config, text).unwrap();
    bank.gateway.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while bank.request("/added", &[]).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "reload did not take effect"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let replay = with_proof(&bank, "DPoP", &token, Some(&proof));
    assert_eq!(
        replay.status, 401,
        "a reload must not make a used proof usable again"
    );
    assert_eq!(
        replay.challenge(),
        Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
    );
}

/// DPOP-11.1-2: a full memory replay store refuses (503) rather than forget a proof, under its
/// own reason: on-call must tell "raise replay_cache_entries" from "Redis is down".
#[test]
fn dpop_11_1_2_a_full_replay_store_is_503_replay_store_full() {
    let bank = crate::bank::Bank::start(crate::bank::Options {
        public_url: Some("https://api.bank.test"),
        replay_entries_per_key: Some(16),
        ..crate::bank::Options::default()
    });
    let small = bank.replica_with("small", |text| {
        assert!(text.contains("replay_entries_per_key = 16\n"));
        text.replace(
            "replay_entries_per_key = 16\n",
            "replay_entries_per_key = 16\nreplay_cache_entries = 16\n",
        )
    });
    // Two keys, each with a share of 16: the store (16 records and a quarter of slack over 16
    // shards, 2 each) is full before either key has used its share, since a record is refused
    // for a full shard before its key's share is looked at.
    let keys = [
        bank.dpop_token("tpp", "ES256", None),
        bank.dpop_token("tpp", "ES256", None),
    ];
    let mut full = None;
    for i in 0..40 {
        let (token, key) = &keys[i % 2];
        let proof = bank
            .auth
            .proof(key, "GET", &bank.url("/accounts"), token, None);
        let response =
            crate::support::accounts_with(&small, &bank.pki, "DPoP", token, Some(&proof));
        if response.status != 200 {
            full = Some(response);
            break;
        }
    }
    let full = full.expect("a store of 32 places fills within 33 proofs");
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["error"], "temporarily_unavailable");
    assert_eq!(
        full.json()["error_description"],
        "the proof cannot be recorded right now: the replay store is full"
    );
    assert!(full.header("retry-after").is_some());
    crate::support::metrics_showing(
        small.admin_port,
        "fapigate_rejections_total{reason=\"replay_store_full\",route=\"accounts\"} 1",
    );
}
