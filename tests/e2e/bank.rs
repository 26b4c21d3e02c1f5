//! A bank in a box for the FAPI tests: the real AS (oidc-provider), the gateway configured
//! against it, and the echo upstream.

use crate::support::*;
use serde_json::{json, Value};
use std::path::Path;

pub struct Options {
    pub access_token_alg: &'static str,
    pub access_token_ttl: u64,
    pub profile: &'static str,
    pub dpop_nonce: bool,
    pub cache_max_ttl: &'static str,
    pub signed_introspection: bool,
    pub max_clock_skew: &'static str,
    /// The audience the gateway accepts (the AS always uses the gateway's public URL).
    pub audience: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access_token_alg: "ES256",
            access_token_ttl: 300,
            profile: "fapi2",
            dpop_nonce: false,
            cache_max_ttl: "30s",
            signed_introspection: true,
            max_clock_skew: "10s",
            audience: None,
        }
    }
}

pub const BALANCES_RULES: &str = r#"
[[route.authorization_details]]
type = "account_information"
actions = ["read_balances"]
[route.authorization_details.match]
"/accounts" = { contains = "{path.account_id}" }
"#;

pub const PAYMENTS_ROUTE: &str = r#"
[[route]]
id = "payments"
methods = ["POST"]
path = "/payments"
upstream = "core"
[[route.authorization_details]]
type = "payment_initiation"
actions = ["initiate"]
[route.authorization_details.match]
"/instructedAmount/currency" = { equals = "{body/instructedAmount/currency}" }
"/instructedAmount/amount" = { equals = "{body/instructedAmount/amount}" }
"/creditorAccount/iban" = { equals = "{body/creditorAccount/iban}" }
"#;

pub struct Bank {
    pub gateway: Gateway,
    pub auth: AuthServer,
    pub pki: Pki,
    _upstream: Upstream,
    pub dir: tempfile::TempDir,
}

pub fn as_config(dir: &Path, as_port: u16, gateway_port: u16, options: &Options) -> Value {
    json!({
        "port": as_port,
        "signing_keys": dir.join("as-keys.json"),
        "audience": format!("https://127.0.0.1:{gateway_port}"),
        "access_token_format": "jwt",
        "access_token_format_by_client": {"tpp-opaque": "opaque", "tpp-mtls-opaque": "opaque"},
        "access_token_alg": options.access_token_alg,
        "access_token_ttl": options.access_token_ttl,
        "clients": [
            {"client_id": "fapigate", "client_secret": "gw-secret"},
            {"client_id": "tpp", "client_secret": "tpp-secret"},
            {"client_id": "tpp-opaque", "client_secret": "tpp-secret"},
            {"client_id": "tpp-mtls", "client_secret": "tpp-secret", "tls_client_certificate_bound_access_tokens": true},
        ]
    })
}

impl Bank {
    pub fn start(options: Options) -> Bank {
        let dir = temp_dir();
        let pki = Pki::new(dir.path());
        let upstream = Upstream::start();
        let (as_port, port) = (free_port(), free_port());
        AuthServer::generate_keys(&dir.path().join("as-keys.json"), "k1");
        let auth = AuthServer::start(dir.path(), &as_config(dir.path(), as_port, port, &options));
        write_private(&dir.path().join("gw-secret.txt"), "gw-secret\n");
        let audience = options
            .audience
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://127.0.0.1:{port}"));
        let issuer = &auth.issuer;
        let extra = format!(
            r#"{BALANCES_RULES}
[[issuer]]
id = "test-as"
issuer = "{issuer}"
audience = "{audience}"
jwks_url = "{issuer}/jwks"
jwks_refresh = "5m"
[issuer.introspection]
endpoint = "{issuer}/token/introspection"
client_id = "fapigate"
auth = "client_secret_basic"
secret_file = "gw-secret.txt"
signed_response = {signed}
cache_max_ttl = "{ttl}"
timeout = "2s"
{PAYMENTS_ROUTE}"#,
            signed = options.signed_introspection,
            ttl = options.cache_max_ttl,
        );
        let profile = format!(
            "[profile]\nname = \"{}\"\nmax_clock_skew = \"{}\"\ndpop_nonce = \"{}\"\n",
            options.profile,
            options.max_clock_skew,
            if options.dpop_nonce {
                "required"
            } else {
                "off"
            }
        );
        let gateway = Gateway::launch(dir.path(), port, |admin, plain| {
            config_text(port, admin, plain, upstream.addr, &extra)
                .replace("[profile]\nname = \"fapi2\"\n", &profile)
        });
        Bank {
            gateway,
            auth,
            pki,
            _upstream: upstream,
            dir,
        }
    }

    /// A DPoP-bound token for `client` with its DPoP key id.
    pub fn dpop_token(&self, client: &str, alg: &str, details: Option<Value>) -> (String, String) {
        let mut request = json!({
            "client_id": client, "client_secret": "tpp-secret", "dpop": true, "dpop_alg": alg,
            "scope": "accounts payments",
        });
        if let Some(details) = details {
            request["authorization_details"] = details;
        }
        let response = self.auth.call("/__test/token", request);
        (
            response["access_token"]
                .as_str()
                .expect("token")
                .to_string(),
            response["dpop_key_id"]
                .as_str()
                .expect("key id")
                .to_string(),
        )
    }

    /// An mTLS-bound token for the certificate at `cert` (PEM).
    pub fn mtls_token(&self, client: &str, cert: &Path) -> String {
        let pem = std::fs::read_to_string(cert).expect("cert pem");
        let response = self.auth.call(
            "/__test/token",
            json!({"client_id": client, "client_secret": "tpp-secret", "scope": "accounts payments", "client_cert_pem": pem}),
        );
        response["access_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    pub fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    /// A request with `Authorization: DPoP` and a fresh proof.
    pub fn dpop_get(&self, path: &str, token: &str, key_id: &str, extra: &[&str]) -> Response {
        let proof = self.auth.proof(key_id, "GET", &self.url(path), token, None);
        let mut args = vec![
            "-H".to_string(),
            format!("Authorization: DPoP {token}"),
            "-H".to_string(),
            format!("DPoP: {proof}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_tls(&self.gateway, &self.pki, path, &args)
    }

    pub fn request(&self, path: &str, args: &[&str]) -> Response {
        curl_tls(&self.gateway, &self.pki, path, args)
    }

    pub fn metrics(&self) -> String {
        admin_get(self.gateway.admin_port, "/metrics").1
    }
}

/// The exact `WWW-Authenticate` of a DPoP-scheme error.
pub fn dpop_challenge(error: &str, description: &str) -> String {
    format!(
        "DPoP error=\"{error}\", error_description=\"{description}\", algs=\"ES256 PS256 EdDSA\""
    )
}
