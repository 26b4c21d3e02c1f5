//! Non-repudiation end to end: responses signed by the gateway are verified, and requests are
//! signed, by independent implementations (PyPI `http-message-signatures` and `joserfc`, see
//! tests/py); the audit chain is checked with `fapigate audit verify`.

use crate::bank::*;
use crate::support::*;
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

const PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py");

pub fn python(tool: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("python3")
        .arg(format!("{PY}/{tool}"))
        .args(args)
        .output()
        .expect("python3 runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

pub fn message_file(dir: &Path, name: &str, message: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, message.to_string()).unwrap();
    path.to_string_lossy().to_string()
}

fn pairs(headers: &[(String, String)]) -> Value {
    Value::Array(headers.iter().map(|(n, v)| json!([n, v])).collect())
}

pub fn response_json(response: &Response) -> Value {
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .flat_map(|(name, values)| values.iter().map(move |v| (name.clone(), v.clone())))
        .collect();
    json!({
        "status": response.status,
        "headers": pairs(&headers),
        "body_b64": base64::engine::general_purpose::STANDARD.encode(response.body.as_bytes()),
    })
}

pub fn request_json(method: &str, url: &str, headers: &[(String, String)], body: &str) -> Value {
    json!({
        "method": method, "url": url, "headers": pairs(headers),
        "body_b64": base64::engine::general_purpose::STANDARD.encode(body.as_bytes()),
    })
}

/// The gateway's public key `rs-1`, as served at its JWKS endpoint.
pub fn gateway_jwk(bank: &Bank) -> PathBuf {
    let jwks = bank.request("/.well-known/jwks.json", &[]);
    assert_eq!(jwks.status, 200);
    assert_eq!(
        jwks.header("content-type"),
        Some("application/jwk-set+json")
    );
    let key = jwks.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "rs-1")
        .expect("rs-1 published")
        .clone();
    assert!(key.get("d").is_none(), "no private member is published");
    let path = bank.dir.path().join("rs-1.public.json");
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

pub fn verify_response(bank: &Bank, response: &Response, request: &Value) -> (bool, String) {
    let dir = bank.dir.path();
    let jwk = gateway_jwk(bank);
    let (ok, _, stderr) = python(
        "httpsig_tool.py",
        &[
            "verify-response",
            "--jwk",
            &jwk.to_string_lossy(),
            "--alg",
            bank.signing_alg,
            "--response",
            &message_file(dir, "response.json", &response_json(response)),
            "--request",
            &message_file(dir, "request.json", request),
            "--require-tag",
            "fapi-2-response",
        ],
    );
    (ok, stderr)
}

pub fn headers_args(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .flat_map(|(n, v)| ["-H".to_string(), format!("{n}: {v}")])
        .collect()
}

/// A DPoP request to `path` with `token` and a fresh proof (`-I` for HEAD): the response, and
/// the request as the verifiers of `tests/py` take it.
pub fn dpop_exchange(
    bank: &Bank,
    token: &str,
    key: &str,
    method: &str,
    path: &str,
) -> (Response, Value) {
    let url = bank.url(path);
    let headers = vec![
        ("authorization".to_string(), format!("DPoP {token}")),
        (
            "dpop".to_string(),
            bank.auth.proof(key, method, &url, token, None),
        ),
    ];
    let mut args = headers_args(&headers);
    if method == "HEAD" {
        args.insert(0, "-I".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (
        bank.request(path, &args),
        request_json(method, &url, &headers, ""),
    )
}

#[test]
fn hs2_resp_rs_1_to_8_a_signed_response_verifies_with_an_independent_library() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let url = bank.url("/statements/7");
    let request_headers = vec![
        ("authorization".to_string(), format!("DPoP {token}")),
        (
            "dpop".to_string(),
            bank.auth.proof(&key, "GET", &url, &token, None),
        ),
    ];
    let args = headers_args(&request_headers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let response = bank.request("/statements/7", &args);
    assert_eq!(response.status, 200, "{response:?}");
    let input = response.header("signature-input").unwrap();
    assert!(input.starts_with("sig1=(\"@status\" \"content-type\" \"content-digest\" \"x-fapi-interaction-id\" \"@method\";req \"@target-uri\";req \"@authority\";req);created="), "{input}");
    assert!(
        input.ends_with(";keyid=\"rs-1\";tag=\"fapi-2-response\""),
        "{input}"
    );
    assert!(response
        .header("content-digest")
        .unwrap()
        .starts_with("sha-256=:"));
    let request = request_json("GET", &url, &request_headers, "");
    let (ok, why) = verify_response(&bank, &response, &request);
    assert!(ok, "independent verification failed: {why}");

    // The verifier can fail: a changed body or another request does not verify.
    let mut tampered = response_json(&response);
    tampered["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(b"{}"));
    let jwk = gateway_jwk(&bank);
    let (ok, _, _) = python(
        "httpsig_tool.py",
        &[
            "verify-response",
            "--jwk",
            &jwk.to_string_lossy(),
            "--alg",
            "ed25519",
            "--response",
            &message_file(bank.dir.path(), "t.json", &tampered),
            "--request",
            &message_file(bank.dir.path(), "r.json", &request),
        ],
    );
    assert!(!ok, "a tampered body must not verify");
    let other = request_json("GET", &bank.url("/statements/8"), &request_headers, "");
    assert!(!verify_response(&bank, &response, &other).0);

    let head_proof = bank.auth.proof(&key, "HEAD", &url, &token, None);
    let head = bank.request(
        "/statements/7",
        &[
            "-I",
            "-H",
            &format!("Authorization: DPoP {token}"),
            "-H",
            &format!("DPoP: {head_proof}"),
        ],
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.header("signature").is_some());
}

fn signed_payment(
    bank: &Bank,
    token: &str,
    key: &str,
    sign_url: &str,
    body_signed: &str,
    body_sent: &str,
    extra: &[&str],
) -> (Response, Vec<(String, String)>) {
    let url = bank.url("/signed-payments");
    let mut headers = vec![
        ("authorization".to_string(), format!("DPoP {token}")),
        (
            "dpop".to_string(),
            bank.auth.proof(key, "POST", &url, token, None),
        ),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let dir = bank.dir.path();
    let request = request_json("POST", sign_url, &headers, body_signed);
    let client_key = dir.join("keys/tpp.json").to_string_lossy().to_string();
    let mut args = vec![
        "sign-request",
        "--jwk",
        &client_key,
        "--alg",
        "ed25519",
        "--request",
    ];
    let request_path = message_file(dir, "to-sign.json", &request);
    args.push(&request_path);
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = python("httpsig_tool.py", &args);
    assert!(ok, "signing failed: {stderr}");
    let added: Value = serde_json::from_str(&stdout).unwrap();
    for pair in added["headers"].as_array().unwrap() {
        headers.push((
            pair[0].as_str().unwrap().to_string(),
            pair[1].as_str().unwrap().to_string(),
        ));
    }
    let mut curl_args = headers_args(&headers);
    curl_args.extend([
        "-X".into(),
        "POST".into(),
        "--data-binary".into(),
        body_sent.into(),
    ]);
    let curl_args: Vec<&str> = curl_args.iter().map(String::as_str).collect();
    (bank.request("/signed-payments", &curl_args), headers)
}

fn with_keyid<'a>(keyid: &'a str, tag: &'a str, components: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--keyid", keyid, "--components"];
    args.extend_from_slice(components);
    args.extend(["--tag", tag]);
    args
}

#[test]
fn hs2_req_rs_a_signed_request_is_accepted_and_the_response_binds_to_its_signature() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let body = r#"{"instructedAmount": {"amount": "10.00", "currency": "EUR"}}"#;
    let args = with_keyid(
        "tpp-eddsa",
        "fapi-2-request",
        &[
            "@method",
            "@target-uri",
            "authorization",
            "dpop",
            "content-digest",
        ],
    );
    let url = bank.url("/signed-payments");
    let (response, sent) = signed_payment(&bank, &token, &key, &url, body, body, &args);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.json()["body"],
        body,
        "the upstream receives the identical bytes"
    );
    let input = response.header("signature-input").unwrap();
    assert!(input.contains("\"content-digest\";req \"signature\";req;key=\"sig1\" \"signature-input\";req;key=\"sig1\""), "{input}");
    let request = request_json("POST", &url, &sent, body);
    let (ok, why) = verify_response(&bank, &response, &request);
    assert!(ok, "{why}");

    // MS2-PRIV: the exchange is in the audit chain, and the chain verifies.
    let audit = bank.dir.path().join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap();
    let record: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(record["route"], "signed-payments");
    assert_eq!(record["client_id"], "tpp");
    assert!(record["request_signature"]
        .as_str()
        .unwrap()
        .starts_with("sig1=:"));
    assert!(!text.contains(&token), "no tokens in the audit trail");
    assert!(
        !text.contains("instructedAmount"),
        "no bodies in the audit trail"
    );
    let verify = Command::new(BINARY)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn hs2_resp_rs_ecdsa_p256_responses_bound_to_a_signed_request_verify_independently() {
    let bank = Bank::start(Options {
        signing: true,
        signing_alg: "ecdsa-p256-sha256",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let body = r#"{"instructedAmount": {"amount": "5.00", "currency": "EUR"}}"#;
    let args = with_keyid(
        "tpp-eddsa",
        "fapi-2-request",
        &[
            "@method",
            "@target-uri",
            "authorization",
            "dpop",
            "content-digest",
        ],
    );
    let url = bank.url("/signed-payments");
    let (response, sent) = signed_payment(&bank, &token, &key, &url, body, body, &args);
    assert_eq!(response.status, 200, "{response:?}");
    let (ok, why) = verify_response(&bank, &response, &request_json("POST", &url, &sent, body));
    assert!(ok, "{why}");
}

#[test]
fn hs2_req_rs_3_to_8_tampered_or_incomplete_signatures_are_refused() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let body = r#"{"amount": "10.00"}"#;
    let url = bank.url("/signed-payments");
    let all = [
        "@method",
        "@target-uri",
        "authorization",
        "dpop",
        "content-digest",
    ];
    let stale = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 300)
        .to_string();
    let mut stale_args = with_keyid("tpp-eddsa", "fapi-2-request", &all);
    stale_args.extend(["--created", stale.as_str()]);
    let other_url = format!("{url}?x=1");
    let cases: Vec<(&str, Vec<&str>, &str, &str, &str)> = vec![
        (
            "body changed",
            with_keyid("tpp-eddsa", "fapi-2-request", &all),
            url.as_str(),
            r#"{"amount": "99.00"}"#,
            "the request body does not match its Content-Digest",
        ),
        (
            "target changed",
            with_keyid("tpp-eddsa", "fapi-2-request", &all),
            other_url.as_str(),
            body,
            "invalid HTTP message signature",
        ),
        (
            "stale created",
            stale_args,
            url.as_str(),
            body,
            "the signature created time is missing or outside the accepted window",
        ),
        (
            "no fapi tag",
            with_keyid("tpp-eddsa", "other-tag", &all),
            url.as_str(),
            body,
            "no signature has tag=\\\"fapi-2-request\\\"",
        ),
        (
            "authorization not covered",
            with_keyid(
                "tpp-eddsa",
                "fapi-2-request",
                &["@method", "@target-uri", "dpop", "content-digest"],
            ),
            url.as_str(),
            body,
            "the signature does not cover authorization",
        ),
        (
            "dpop not covered",
            with_keyid(
                "tpp-eddsa",
                "fapi-2-request",
                &["@method", "@target-uri", "authorization", "content-digest"],
            ),
            url.as_str(),
            body,
            "the signature does not cover dpop",
        ),
        (
            "unknown keyid",
            with_keyid("nobody", "fapi-2-request", &all),
            url.as_str(),
            body,
            "the signature keyid is not a key of this client",
        ),
    ];
    for (name, args, sign_url, sent, description) in cases {
        let (response, _) = signed_payment(&bank, &token, &key, sign_url, body, sent, &args);
        assert_eq!(response.status, 401, "{name}: {response:?}");
        assert_eq!(
            response.challenge(),
            Some(dpop_challenge("invalid_request", description).as_str()),
            "{name}"
        );
    }
    // No signature at all.
    let proof = bank.auth.proof(&key, "POST", &url, &token, None);
    let response = bank.request(
        "/signed-payments",
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            &format!("Authorization: DPoP {token}"),
            "-H",
            &format!("DPoP: {proof}"),
            "--data-binary",
            body,
        ],
    );
    assert_eq!(response.status, 401);
    assert_eq!(
        response.challenge(),
        Some(
            dpop_challenge(
                "invalid_request",
                "the request has no HTTP message signature"
            )
            .as_str()
        )
    );
}

#[test]
fn ukob_1_detached_jws_and_br_1_jwt_bodies_verify_with_joserfc() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let jwks = bank.request("/.well-known/jwks.json", &[]);
    let jwks_path = bank.dir.path().join("gateway.jwks.json");
    std::fs::write(&jwks_path, &jwks.body).unwrap();
    let jwks_path = jwks_path.to_string_lossy().to_string();

    let uk = bank.request("/uk/statements/1", &[]);
    assert_eq!(uk.status, 200);
    let jws = uk
        .header("x-jws-signature")
        .expect("x-jws-signature")
        .to_string();
    assert!(jws.contains(".."), "detached: {jws}");
    let body_path = bank.dir.path().join("uk-body");
    std::fs::write(&body_path, uk.body.as_bytes()).unwrap();
    let (ok, header, why) = python(
        "jose_tool.py",
        &[
            "verify-detached",
            "--jwks",
            &jwks_path,
            "--body",
            &body_path.to_string_lossy(),
            "--jws",
            &jws,
        ],
    );
    assert!(ok, "{why}");
    let header: Value = serde_json::from_str(&header).unwrap();
    assert_eq!(header["http://openbanking.org.uk/iss"], "bank-org-1");
    std::fs::write(&body_path, b"{\"changed\": true}").unwrap();
    let (ok, _, _) = python(
        "jose_tool.py",
        &[
            "verify-detached",
            "--jwks",
            &jwks_path,
            "--body",
            &body_path.to_string_lossy(),
            "--jws",
            &jws,
        ],
    );
    assert!(!ok, "a changed body must not verify");

    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let br = bank.dpop_get("/br/statements/1", &token, &key, &[]);
    assert_eq!(br.status, 200);
    assert_eq!(br.header("content-type"), Some("application/jwt"));
    let (ok, claims, why) = python(
        "jose_tool.py",
        &["verify-jwt", "--jwks", &jwks_path, "--jwt", br.body.trim()],
    );
    assert!(ok, "{why}");
    let claims: Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(claims["iss"], "bank-org-1");
    assert_eq!(
        claims["data"]["target"], "/br/statements/1",
        "the upstream payload under data"
    );
    assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
}

#[test]
fn signed_route_limits_and_the_jwks_command() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    // The echo upstream answers with the request headers: a large one exceeds max_body (4 KiB).
    let big = format!("x-pad: {}", "p".repeat(5_000));
    let response = bank.request("/uk/statements/1", &["-H", &big]);
    assert_eq!(
        response.status,
        502,
        "{}",
        response.body.chars().take(200).collect::<String>()
    );

    let output = Command::new(BINARY)
        .args(["jwks", "--config"])
        .arg(&bank.gateway.config)
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let served = bank.request("/.well-known/jwks.json", &[]).json();
    assert_eq!(printed, served);
}

#[test]
fn rfc9728_protected_resource_metadata_and_resource_metadata_in_every_challenge() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let response = bank.request("/.well-known/oauth-protected-resource", &[]);
    assert_eq!(response.status, 200);
    let metadata = response.json();
    assert_eq!(metadata["resource"], bank.url(""));
    assert_eq!(metadata["authorization_servers"], json!([bank.auth.issuer]));
    assert_eq!(metadata["jwks_uri"], bank.url("/.well-known/jwks.json"));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    assert_eq!(
        metadata["dpop_signing_alg_values_supported"],
        json!(["ES256", "PS256", "EdDSA"])
    );
    assert_eq!(metadata["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(metadata["dpop_bound_access_tokens_required"], false);
    assert_eq!(
        metadata["authorization_details_types_supported"],
        json!(["account_information", "payment_initiation"])
    );

    let url = bank.url("/.well-known/oauth-protected-resource");
    let none = bank.request("/accounts", &[]);
    assert_eq!(
        none.header("www-authenticate"),
        Some(format!("Bearer resource_metadata=\"{url}\", DPoP algs=\"ES256 PS256 EdDSA\", resource_metadata=\"{url}\"").as_str())
    );
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let replayed = bank.dpop_get("/accounts", &token, &key, &["-H", "dpop: second"]);
    assert_eq!(replayed.status, 401);
    assert!(replayed
        .header("www-authenticate")
        .unwrap()
        .ends_with(&format!(", resource_metadata=\"{url}\"")));
}

/// An upstream that answers the first request of each connection in full (keep-alive) and the
/// second with a header and half the announced body, then closes. Counts the POSTs it read.
fn half_answering_upstream(
    posts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (std::net::SocketAddr, std::sync::mpsc::Sender<()>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < until && stopped.try_recv().is_err() {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            };
            let posts = posts.clone();
            std::thread::spawn(move || {
                stream.set_nonblocking(false).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                for served in 0.. {
                    let mut head = String::new();
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(value) =
                            line.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    if head.starts_with("POST ") {
                        posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    let answer: &[u8] = if served == 0 {
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"paid\":"
                    };
                    writer.write_all(answer).unwrap();
                    if served > 0 {
                        return;
                    }
                }
            });
        }
    });
    (addr, stop)
}

/// A payment is never made twice (RFC 9110 §9.2.2): a signed POST whose pooled upstream
/// connection fails after the answer began gets 502 and is not sent again; the GET before it
/// on the same connection is answered and signed.
#[test]
fn a_signed_post_is_not_sent_twice_when_the_upstream_fails_mid_answer() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    write_private(&dir.path().join("rs.pem"), &key.serialize_pem());
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (upstream, stop) = half_answering_upstream(posts.clone());
    let routes = r#"
[response_signing]
format = "http-signature"
key = "rs.pem"
key_id = "rs-test"
alg = "ed25519"

[[route]]
id = "pay"
methods = ["GET", "POST"]
path = "/pay"
upstream = "core"
auth = "none"
sign_response = true
"#;
    let gateway = Gateway::start(dir.path(), upstream, routes);
    let first = curl_tls(&gateway, &pki, "/pay", &[]);
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.header("signature").is_some(), "{first:?}");
    let paid = curl_tls(
        &gateway,
        &pki,
        "/pay",
        &[
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"amount":"100.00"}"#,
        ],
    );
    assert_eq!(paid.status, 502, "{paid:?}");
    assert_eq!(paid.json()["error"], "bad_gateway");
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(gateway);
    let _ = stop.send(());
}
