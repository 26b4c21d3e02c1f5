//! Shared fixtures for the criterion micro-benchmarks (`bench/*.rs`, `harness = false`):
//! freshly generated ES256 / PS256 / EdDSA keys, a compiled [`Policy`] from a TOML text with a
//! throw-away TLS certificate, and token / DPoP proof minting. Included with
//! `#[path = "support.rs"] mod support;` so every bench gets its own copy.

#![allow(dead_code)]

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine;
use fapigate::Policy;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::Digest;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "https://as.bank.example";
pub const AUDIENCE: &str = "https://api.bank.example";
pub const PUBLIC_URL: &str = "https://api.bank.example";

pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Wall-clock Unix seconds: jsonwebtoken checks `exp` against the real clock, so tokens and
/// the `now` given to fapigate must agree with it.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A signing key and its public JWK (no `kid`, no private members).
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: &'static str,
    pub encoding: EncodingKey,
    pub public_jwk: serde_json::Value,
}

impl TestKey {
    /// The public JWK as published by an AS: with `kid`, `use` and `alg`.
    pub fn published_jwk(&self) -> serde_json::Value {
        let mut jwk = self.public_jwk.clone();
        jwk["kid"] = self.kid.into();
        jwk["use"] = "sig".into();
        jwk["alg"] = alg_name(self.alg).into();
        jwk
    }

    /// RFC 7638 thumbprint (what `cnf.jkt` holds).
    pub fn jkt(&self) -> String {
        fapigate::stages::jkt(self.public_jwk.as_object().expect("object")).expect("supported key")
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::PS256 => "PS256",
        Algorithm::EdDSA => "EdDSA",
        other => panic!("no test key for {other:?}"),
    }
}

pub fn es256_key(kid: &'static str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    TestKey {
        alg: Algorithm::ES256,
        kid,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        public_jwk: serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }),
    }
}

pub fn eddsa_key(kid: &'static str) -> TestKey {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    TestKey {
        alg: Algorithm::EdDSA,
        kid,
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        public_jwk: serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "x": b64url(pair.public_key().as_ref()),
        }),
    }
}

pub fn ps256_key(kid: &'static str) -> TestKey {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    // jsonwebtoken's RSA EncodingKey wants PKCS#1; from_rsa_pem unwraps a PKCS#8 PEM.
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD
            .encode(pkcs8.as_ref())
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let public = pair.public_key();
    TestKey {
        alg: Algorithm::PS256,
        kid,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("PKCS#8 RSA PEM"),
        public_jwk: serde_json::json!({
            "kty": "RSA",
            "n": b64url(public.modulus().big_endian_without_leading_zero()),
            "e": b64url(public.exponent().big_endian_without_leading_zero()),
        }),
    }
}

/// Signs `header.claims` by hand, so the header may hold anything (a `jwk` for DPoP).
pub fn sign_jws(key: &TestKey, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key.encoding, key.alg).unwrap();
    format!("{message}.{signature}")
}

/// An RFC 9068 access token, DPoP-bound to `jkt`, of a typical size (about 1 KiB).
pub fn access_token(key: &TestKey, jkt: &str, jti: &str, now: u64) -> String {
    let mut header = Header::new(key.alg);
    header.typ = Some("at+jwt".into());
    header.kid = Some(key.kid.into());
    let claims = serde_json::json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "client_id": "tpp-001",
        "scope": "accounts payments",
        "iat": now,
        "exp": now + 3600,
        "jti": jti,
        "acr": "urn:bank:sca",
        "auth_time": now - 30,
        "cnf": {"jkt": jkt},
        "authorization_details": [
            {"type": "account_information", "actions": ["list_accounts", "read_balances"],
             "locations": [PUBLIC_URL], "accounts": ["acc-1", "acc-2", "acc-3"]},
            {"type": "payment_initiation", "actions": ["initiate"],
             "instructedAmount": {"currency": "EUR", "amount": "100.00"},
             "creditorAccount": {"iban": "DE02100100109307118603"},
             "creditorName": "Merchant A"}
        ]
    });
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

/// A DPoP proof (RFC 9449 §4.2) for `method target_uri` carrying `ath` of `access_token`.
pub fn dpop_proof(
    key: &TestKey,
    jti: &str,
    method: &str,
    target_uri: &str,
    access_token: &str,
    iat: u64,
) -> String {
    let header = serde_json::json!({
        "typ": "dpop+jwt", "alg": alg_name(key.alg), "jwk": key.public_jwk,
    });
    let claims = serde_json::json!({
        "jti": jti, "htm": method, "htu": target_uri, "iat": iat,
        "ath": b64url(sha2::Sha256::digest(access_token.as_bytes())),
    });
    sign_jws(key, &header, &claims)
}

pub fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Writes a self-signed listener certificate into `dir/tls/` (the listener requires TLS).
pub fn write_tls(dir: &Path) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["api.bank.example".into()]).unwrap();
    std::fs::write(tls.join("server.crt"), certified.cert.pem()).unwrap();
    write_private(&tls.join("server.key"), &certified.key_pair.serialize_pem());
}

/// The listener, admin, profile and upstream every bench policy shares; `extra` holds the
/// issuers and routes.
pub fn config_text(extra: &str) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:8443"
public_url = "{PUBLIC_URL}"

[listener.tls]
cert = "tls/server.crt"
key = "tls/server.key"
client_cert = "request"

[admin]
addr = "127.0.0.1:9901"

[profile]
name = "fapi2"
algs = ["PS256", "ES256", "EdDSA"]
max_clock_skew = "10s"
dpop_proof_max_age = "60s"

[state]
token_cache_entries = 100000
replay_cache_entries = 1000000
# Each bench signs all its proofs with one key, more than the default 1/16 share of the
# store in a default criterion run; the share itself is tested in src/state/replay.rs.
replay_entries_per_key = 1000000

[[upstream]]
id = "core"
addrs = ["127.0.0.1:9000"]

{extra}
"#
    )
}

/// Compiles a policy in `dir` (which must outlive it: file key sets are read from there).
pub fn policy(dir: &Path, extra: &str) -> Policy {
    write_tls(dir);
    match fapigate::load_config_str(&config_text(extra), dir) {
        Ok(policy) => policy,
        Err(errors) => panic!("bench policy refused: {errors:#?}"),
    }
}

/// A single-threaded runtime for the async APIs; benches drive whole loops inside one
/// `block_on` (`iter_custom`) so runtime entry is not part of the measurement.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
