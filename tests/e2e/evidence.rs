//! Issue 15: evidence that holds up in a dispute. A signed route signs only what it sends: the
//! upstream's own digests and signatures never reach the client, the digest covers the exact
//! bytes sent (an empty body's too), and the audit records what was signed.

use crate::bank::*;
use crate::signing::{dpop_exchange, python, verify_response};
use crate::support::*;
use serde_json::Value;

/// The audit records of `bank`, in order.
pub fn audit_records(bank: &Bank) -> Vec<Value> {
    std::fs::read_to_string(bank.dir.path().join("audit/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an audit line is JSON"))
        .collect()
}

fn digest_of(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
    )
}

/// Asserts that none of the upstream's evidence (see the test upstream's `forged` answers)
/// reached the client.
fn assert_no_upstream_evidence(response: &Response) {
    for name in ["repr-digest", "x-upstream-secret", "connection"] {
        assert!(response.header(name).is_none(), "{name}: {response:?}");
    }
    for (name, value) in &response.headers {
        for value in value {
            assert!(
                !value.contains("AAAAAAAAAAAA") && !value.contains("upstream"),
                "{name}: {value} came from the upstream"
            );
        }
    }
}

#[test]
fn hs2_resp_rs_a_signed_route_sends_only_the_gateways_digest_and_signature() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let get = |path: &str, method: &str| dpop_exchange(&bank, &token, &key, method, path);

    // RFC 9421: the upstream's Content-Digest and Signature are replaced by the gateway's.
    let (response, request) = get("/statements/forged", "GET");
    assert_eq!(response.status, 200, "{response:?}");
    assert_no_upstream_evidence(&response);
    assert_eq!(
        response.header("content-digest"),
        Some(digest_of(response.body.as_bytes()).as_str())
    );
    let (ok, why) = verify_response(&bank, &response, &request);
    assert!(ok, "{why}");

    // 204: the digest is the empty body's, computed by the gateway, and signed.
    let (empty, request) = get("/statements/nocontent-forged", "GET");
    assert_eq!(empty.status, 204, "{empty:?}");
    assert_no_upstream_evidence(&empty);
    assert_eq!(
        empty.header("content-digest"),
        Some(digest_of(b"").as_str())
    );
    assert!(empty
        .header("signature-input")
        .is_some_and(|i| i.contains("\"content-digest\"")));
    let (ok, why) = verify_response(&bank, &empty, &request);
    assert!(ok, "{why}");

    // UK detached JWS: x-jws-signature is the gateway's, and no digest is passed on.
    let uk = bank.request("/uk/statements/forged", &[]);
    assert_eq!(uk.status, 200);
    assert_no_upstream_evidence(&uk);
    assert!(uk.header("content-digest").is_none(), "{uk:?}");
    assert!(uk.header("signature").is_none(), "{uk:?}");
    let jws = uk.header("x-jws-signature").expect("x-jws-signature");
    let jwks = bank.request("/.well-known/jwks.json", &[]);
    let jwks_path = bank.dir.path().join("gateway.jwks.json");
    std::fs::write(&jwks_path, &jwks.body).unwrap();
    let body_path = bank.dir.path().join("uk-body");
    std::fs::write(&body_path, uk.body.as_bytes()).unwrap();
    let (ok, _, why) = python(
        "jose_tool.py",
        &[
            "verify-detached",
            "--jwks",
            &jwks_path.to_string_lossy(),
            "--body",
            &body_path.to_string_lossy(),
            "--jws",
            jws,
        ],
    );
    assert!(ok, "{why}");

    // MS2-PRIV: each record holds the digest of the bytes the client received.
    let records = audit_records(&bank);
    let sent = [
        ("/statements/forged", response.body.as_str()),
        ("/statements/nocontent-forged", ""),
        ("/uk/statements/forged", uk.body.as_str()),
    ];
    assert_eq!(records.len(), sent.len(), "{records:?}");
    for (record, (path, body)) in records.iter().zip(sent) {
        assert_eq!(
            record["response_digest"],
            digest_of(body.as_bytes()),
            "{path}"
        );
    }
    assert_eq!(
        records[2]["response_signature"].as_str(),
        Some(jws),
        "the UK record holds the gateway's JWS"
    );
}

#[test]
fn br_1_a_jwt_response_embeds_the_upstream_json_verbatim() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    // The upstream's JSON has text a re-encoding would change (123.50, 1E2, spacing).
    let br = bank.dpop_get("/br/statements/verbatim-forged", &token, &key, &[]);
    assert_eq!(br.status, 200, "{br:?}");
    assert_no_upstream_evidence(&br);
    assert!(br.header("content-digest").is_none());
    let payload = br.body.split('.').nth(1).expect("a compact JWS");
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims = String::from_utf8(claims).unwrap();
    assert!(
        claims.ends_with(r#","data":{"amount":  123.50 , "n": 1E2}}"#),
        "{claims}"
    );
    assert_eq!(
        audit_records(&bank)[0]["response_digest"],
        digest_of(br.body.as_bytes())
    );

    // Duplicate members would be read differently by different readers: not signed, 502.
    let refused = bank.dpop_get("/br/statements/duplicate", &token, &key, &[]);
    assert_eq!(refused.status, 502, "{refused:?}");
    assert_eq!(
        audit_records(&bank).len(),
        1,
        "nothing recorded for the 502"
    );
    assert!(bank
        .gateway
        .log_text()
        .contains("the jwt format embeds the body as JSON"));
}
