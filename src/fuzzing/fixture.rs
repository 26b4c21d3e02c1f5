//! What the fuzz targets share: a compiled policy with the routes and rules of the reference
//! configuration, a fixed Ed25519 key and its key set, made once per process in a folder of
//! its own (certificate, key, key set files).

use super::NOW;
use crate::policy::Policy;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The seed of the fixture Ed25519 key: it signs DPoP proofs and request signatures, and its
/// public half is in the fixture key sets (kid `fuzz`).
const KEY_SEED: [u8; 32] = [0x42; 32];

/// The folder the fixture policy's files are in (for tests that compile variants of it).
#[cfg(test)]
pub(crate) fn fixture_dir() -> &'static std::path::Path {
    &fixture().dir
}

/// What the targets share, made once per process.
pub(super) struct Fixture {
    pub(super) dir: PathBuf,
    pub(super) policy: Policy,
    pub(super) key: aws_lc_rs::signature::Ed25519KeyPair,
    pub(super) client_keys: Arc<crate::token::jwks::KeySet>,
    pub(super) payment_grant: crate::grant::Grant,
    pub(super) runtime: tokio::runtime::Runtime,
}

pub(super) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| match Fixture::new() {
        Ok(fixture) => fixture,
        // ok: only fixed fixture data reaches this; no input does.
        Err(error) => panic!("fuzz fixture: {error}"),
    })
}

/// A self-signed P-256 certificate for 127.0.0.1 (fixture only; valid until 2126).
const SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBqDCCAU6gAwIBAgIUclMZ0NQd/E3pZPoA0BPWI3mnn90wCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVZmFwaWdhdGUgZnV6eiBmaXh0dXJlMCAXDTI2MTIwMjA5NDEz
NFoYDzIxMjYxMTA4MDk0MTM0WjAgMR4wHAYDVQQDDBVmYXBpZ2F0ZSBmdXp6IGZp
eHR1cmUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQotS1Nan/fkWcueLvrw2fb
YYBs0TjqPi1fXsiAgQqO3zonPm9suJT1F1v0FnqXtAWG51HSWUjULr5RQVUtpiRo
o2QwYjAdBgNVHQ4EFgQU0jFUbIkMo/FknWP+65IU8JK0YeowHwYDVR0jBBgwFoAU
0jFUbIkMo/FknWP+65IU8JK0YeowDwYDVR0TAQH/BAUwAwEB/zAPBgNVHREECDAG
hwR/AAABMAoGCCqGSM49BAMCA0gAMEUCIFYdvJMG+ZCAXKLSsFn/SBqsPwkr76HN
NdN4pzFke/3hAiEA2TitRnQjufwczWNBYODUB0xXcnKQppHSEfYEgPd99vI=
-----END CERTIFICATE-----
";

/// The certificate's private key (fixture only: it protects nothing).
const SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1qKcynsa/F2SVdli
S/EuGsM3q1DAHSw2qhlAfOxOAVKhRANCAAQotS1Nan/fkWcueLvrw2fbYYBs0Tjq
Pi1fXsiAgQqO3zonPm9suJT1F1v0FnqXtAWG51HSWUjULr5RQVUtpiRo
-----END PRIVATE KEY-----
";

/// The fixture policy: the routes and rules of the reference configuration.
pub(crate) const POLICY: &str = r#"
[listener]
addr = "127.0.0.1:0"
public_url = "https://api.bank.example"
[listener.tls]
cert = "tls/server.crt"
key = "tls/server.key"
client_cert = "request"
[admin]
addr = "127.0.0.1:0"
[profile]
name = "fapi2"
[[issuer]]
id = "bank-as"
issuer = "https://as.bank.example"
audience = "https://api.bank.example"
jwks_file = "keys/jwks.json"
[[client]]
client_id = "tpp-001"
jwks_file = "keys/jwks.json"
[[upstream]]
id = "core"
addrs = ["127.0.0.1:9"]
[[route]]
id = "accounts"
methods = ["GET"]
path = "/accounts"
upstream = "core"
scopes = ["accounts"]
[[route]]
id = "account-balances"
methods = ["GET", "HEAD"]
path = "/accounts/{account_id}/balances"
upstream = "core"
[[route.authorization_details]]
type = "account_information"
actions = ["read_balances"]
locations = ["https://api.bank.example"]
[route.authorization_details.match]
"/accounts" = { contains = "{path.account_id}" }
[[route]]
id = "transactions"
methods = ["GET"]
path = "/accounts/{account_id}/transactions/{transaction_id}"
upstream = "core"
[[route]]
id = "payments"
methods = ["POST"]
path = "/payments"
upstream = "core"
verify_request_signature = true
[[route.authorization_details]]
type = "payment_initiation"
actions = ["initiate"]
[route.authorization_details.match]
"/instructedAmount/currency" = { equals = "{body/instructedAmount/currency}" }
"/instructedAmount/amount" = { equals = "{body/instructedAmount/amount}" }
"/creditorAccount/iban" = { equals = "{body/creditorAccount/iban}" }
"/maximumAmount" = { at_least = "{body/instructedAmount/amount}" }
[[route]]
id = "status"
methods = ["GET"]
path = "/status"
upstream = "core"
auth = "none"
"#;

impl Fixture {
    fn new() -> Result<Fixture, String> {
        use base64::Engine;
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fapigate-fuzz-{}", std::process::id()));
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&KEY_SEED)
            .map_err(|e| e.to_string())?;
        let public = aws_lc_rs::signature::KeyPair::public_key(&key);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_ref());
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "fuzz", "x": x, "use": "sig"}
        ]});
        let write = |relative: &str, contents: &str, mode: u32| -> Result<(), String> {
            let path = dir.join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&path, contents).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())
        };
        write("tls/server.crt", SERVER_CERT, 0o644)?;
        write("tls/server.key", SERVER_KEY, 0o600)?;
        write("keys/signing.key", SERVER_KEY, 0o600)?;
        write("keys/jwks.json", &jwks.to_string(), 0o644)?;
        let policy = crate::config::load_str(POLICY, &dir).map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{}: {}", e.key, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        let metrics = Arc::new(crate::telemetry::Metrics::new().map_err(|e| e.to_string())?);
        let client_keys = crate::token::jwks::KeySet::from_policy(
            "fuzz",
            &crate::policy::KeySet::File(dir.join("keys/jwks.json")),
            std::time::Duration::from_secs(300),
            metrics,
        )?;
        let payment_grant = crate::grant::Grant {
            issuer: "https://as.bank.example".into(),
            subject: Some("psu".into()),
            client_id: Some("tpp-001".into()),
            scopes: vec!["accounts".into(), "payments".into()],
            authorization_details: vec![serde_json::json!({
                "type": "payment_initiation",
                "actions": ["initiate"],
                "instructedAmount": {"currency": "EUR", "amount": "123.50"},
                "creditorAccount": {"iban": "DE02100100109307118603"},
                "maximumAmount": "1000.00",
            })],
            cnf: Default::default(),
            expires_at: Some(NOW + 300),
            issued_at: Some(NOW),
            acr: None,
            auth_time: None,
            token_id: None,
            token_type: None,
            claims: Default::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Fixture {
            dir,
            policy,
            key,
            client_keys,
            payment_grant,
            runtime,
        })
    }
}
