//! The token stage against the real AS: JWTs (RFC 9068), JWKS rotation, opaque tokens by
//! introspection (RFC 7662, RFC 9701), the cache, and failing closed.

use crate::bank::*;
use crate::support::*;
use base64::Engine;
use serde_json::json;
use std::time::Duration;

fn invalid_token(description: &str) -> String {
    dpop_challenge("invalid_token", description)
}

#[test]
fn sp2_rs_5_dpop_bound_jwt_es256_is_admitted_and_the_caller_forwarded() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let response = bank.dpop_get(
        "/accounts",
        &token,
        &key,
        &["-H", "x-fapi-client-id: forged"],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.json();
    assert_eq!(
        echo["headers"]["x-fapi-client-id"],
        json!(["tpp"]),
        "forged copy replaced"
    );
    let metrics = bank.metrics();
    assert!(
        metrics.contains("fapigate_token_validations_total{kind=\"jwt\",result=\"valid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fapigate_jwks_refreshes_total{key_set=\"test-as\",result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[test]
fn jwt_4_5_ps256_and_eddsa_tokens_and_proofs() {
    for alg in ["PS256", "EdDSA"] {
        let bank = Bank::start(Options {
            access_token_alg: alg,
            ..Options::default()
        });
        let (token, key) = bank.dpop_token("tpp", alg, None);
        let header: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg);
        let response = bank.dpop_get("/accounts", &token, &key, &[]);
        assert_eq!(response.status, 200, "{alg}: {response:?}");
    }
}

#[test]
fn jwt_4_4_a_token_for_another_audience_is_refused() {
    let bank = Bank::start(Options {
        audience: Some("https://api.other-bank.example"),
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let response = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(invalid_token("the access token is not for this resource server").as_str())
    );
}

#[test]
fn jwt_4_3_a_token_from_an_unknown_issuer_is_refused() {
    let bank = Bank::start(Options::default());
    let dir = temp_dir();
    AuthServer::generate_keys(&dir.path().join("as-keys.json"), "rogue");
    let rogue_socket = Reserved::new();
    let rogue_port = rogue_socket.port();
    let rogue = AuthServer::start(
        dir.path(),
        rogue_socket,
        &as_config(
            dir.path(),
            rogue_port,
            bank.gateway.port,
            &Options::default(),
        ),
    );
    let response = rogue.call(
        "/__test/token",
        json!({"client_id": "tpp", "client_secret": "tpp-secret", "dpop": true}),
    );
    let token = response["access_token"].as_str().unwrap();
    let key = response["dpop_key_id"].as_str().unwrap();
    let proof = rogue.proof(key, "GET", &bank.url("/accounts"), token, None);
    let response = bank.request(
        "/accounts",
        &[
            "-H",
            &format!("Authorization: DPoP {token}"),
            "-H",
            &format!("DPoP: {proof}"),
        ],
    );
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(invalid_token("the access token's issuer is not trusted").as_str())
    );
}

#[test]
fn jwt_4_5_tampered_signature_and_sp2_cry_3_alg_none_and_hs256_are_refused() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut signature = b64.decode(parts[2]).unwrap();
    signature[5] ^= 0x01;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64.encode(signature));
    let response = bank.dpop_get("/accounts", &tampered, &key, &[]);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(invalid_token("the access token signature is invalid").as_str())
    );

    for header in [
        r#"{"alg":"none","typ":"at+jwt"}"#,
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
    ] {
        let forged = format!(
            "{}.{}.{}",
            b64.encode(header),
            parts[1],
            if header.contains("none") { "" } else { "c2ln" }
        );
        let response = bank.dpop_get("/accounts", &forged, &key, &[]);
        assert_eq!(response.status, 401, "{header}");
        assert_eq!(
            response.challenge(),
            Some(invalid_token("the signing algorithm is not allowed").as_str()),
            "{header}"
        );
    }
}

#[test]
fn jwt_4_6_an_expired_token_is_refused() {
    let bank = Bank::start(Options {
        access_token_ttl: 1,
        max_clock_skew: "1s",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    std::thread::sleep(Duration::from_millis(3_100));
    let response = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(invalid_token("the access token has expired").as_str())
    );
}

#[test]
fn as_key_rotation_is_picked_up_on_first_use_of_the_new_kid() {
    let mut bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    // The AS rotates: a new key set, new kids; the old key is gone.
    AuthServer::generate_keys(&bank.dir.path().join("as-keys.json"), "k2");
    bank.auth.restart();
    let (rotated, key) = bank.dpop_token("tpp", "ES256", None);
    let kid = serde_json::from_slice::<serde_json::Value>(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(rotated.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()["kid"]
        .clone();
    assert_eq!(kid, "k2-es256");
    // Unknown-kid refetches are rate limited (5 s) so random kids cannot hammer the AS.
    std::thread::sleep(Duration::from_millis(5_200));
    let response = bank.dpop_get("/accounts", &rotated, &key, &[]);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(bank
        .metrics()
        .contains("fapigate_jwks_refreshes_total{key_set=\"test-as\",result=\"ok\"} 2"));
}

#[test]
fn opaque_tokens_are_introspected_once_with_signed_responses_then_cached() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    assert!(!token.contains('.'), "opaque: {token}");
    let before = bank.auth.introspections();
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    assert_eq!(bank.auth.introspections() - before, 1);
    let metrics = bank.metrics();
    assert!(
        metrics.contains("fapigate_token_cache_total{kind=\"opaque\",result=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fapigate_introspection_duration_seconds_count 1"),
        "{metrics}"
    );
}

#[test]
fn int_1_introspection_with_private_key_jwt_client_authentication() {
    let bank = Bank::start(Options {
        introspection_auth: "private_key_jwt",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    let before = bank.auth.introspections();
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    assert_eq!(bank.auth.introspections() - before, 1);
}

#[test]
fn plain_json_introspection_works_too() {
    let bank = Bank::start(Options {
        signed_introspection: false,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
}

#[test]
fn int_3_concurrent_requests_with_one_new_token_make_one_introspection() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    let url = bank.url("/accounts");
    let proofs: Vec<String> = (0..8)
        .map(|_| bank.auth.proof(&key, "GET", &url, &token, None))
        .collect();
    let before = bank.auth.introspections();
    let ca = bank.pki.ca().to_string_lossy().to_string();
    let handles: Vec<_> = proofs
        .into_iter()
        .map(|proof| {
            let (url, ca, token) = (url.clone(), ca.clone(), token.clone());
            std::thread::spawn(move || {
                curl(&[
                    "--cacert",
                    &ca,
                    "-H",
                    &format!("Authorization: DPoP {token}"),
                    "-H",
                    &format!("DPoP: {proof}"),
                    &url,
                ])
                .status
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), 200);
    }
    assert_eq!(bank.auth.introspections() - before, 1);
}

#[test]
fn int_2_as_down_cached_tokens_keep_working_and_new_opaque_tokens_get_503() {
    let mut bank = Bank::start(Options::default());
    let (jwt, jwt_key) = bank.dpop_token("tpp", "ES256", None);
    let (opaque, opaque_key) = bank.dpop_token("tpp-opaque", "ES256", None);
    let (fresh, fresh_key) = bank.dpop_token("tpp-opaque", "ES256", None);
    // Proofs are made while the AS (which holds the client's DPoP keys) is still up.
    let url = bank.url("/accounts");
    let jwt_proof = bank.auth.proof(&jwt_key, "GET", &url, &jwt, None);
    let opaque_proof = bank.auth.proof(&opaque_key, "GET", &url, &opaque, None);
    let fresh_proof = bank.auth.proof(&fresh_key, "GET", &url, &fresh, None);
    assert_eq!(bank.dpop_get("/accounts", &jwt, &jwt_key, &[]).status, 200);
    assert_eq!(
        bank.dpop_get("/accounts", &opaque, &opaque_key, &[]).status,
        200
    );
    bank.auth.stop();
    let with = |token: &str, proof: &str| {
        accounts_with(&bank.gateway, &bank.pki, "DPoP", token, Some(proof))
    };
    assert_eq!(with(&jwt, &jwt_proof).status, 200, "cached JWT");
    assert_eq!(
        with(&opaque, &opaque_proof).status,
        200,
        "cached introspection"
    );
    let response = with(&fresh, &fresh_proof);
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("retry-after"), Some("5"));
    assert_eq!(response.json()["error"], "temporarily_unavailable");
    assert!(bank
        .metrics()
        .contains("fapigate_introspection_failures_total{reason=\"unreachable\"} 1"));
}

#[test]
fn sp2_rs_3_a_revoked_token_is_refused_within_cache_max_ttl() {
    let bank = Bank::start(Options {
        cache_max_ttl: "1s",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    bank.auth.call(
        "/__test/revoke",
        json!({"token": token, "client_id": "tpp-opaque", "client_secret": "tpp-secret"}),
    );
    std::thread::sleep(Duration::from_millis(1_300));
    let response = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(invalid_token("the access token is not active").as_str())
    );
}
