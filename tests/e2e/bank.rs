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
    /// Response signing, signed-request verification and the audit trail (see SIGNING).
    pub signing: bool,
    /// The response-signing algorithm: `ed25519` or `ecdsa-p256-sha256`.
    pub signing_alg: &'static str,
    /// `[state] backend = "redis"` with this URL.
    pub redis: Option<String>,
    /// The public URL (and token audience) instead of the gateway's own address, so that
    /// several replicas can serve the same tokens and proofs.
    pub public_url: Option<&'static str>,
    /// How the gateway authenticates to the introspection endpoint: `client_secret_basic`
    /// or `private_key_jwt` (an ES256 key registered with the AS).
    pub introspection_auth: &'static str,
    /// More configuration (routes) appended to the file.
    pub extra: &'static str,
    /// `profile.dpop_proof_max_age`.
    pub dpop_proof_max_age: &'static str,
    /// `listener.body_timeout`.
    pub body_timeout: &'static str,
    /// `listener.body_min_rate`.
    pub body_min_rate: u64,
    /// `listener.header_timeout`.
    pub header_timeout: &'static str,
    /// `listener.idle_timeout`.
    pub idle_timeout: &'static str,
    /// `log.level`.
    pub log_level: &'static str,
    /// `[state] replay_entries_per_key`.
    pub replay_entries_per_key: Option<u64>,
    /// More lines of the `[state]` table: with `redis`, or without it a `backend = "redis"`
    /// table of these lines (e.g. `redis_cluster_nodes`).
    pub state_extra: String,
    /// `[issuer.introspection] token_prefix`.
    pub token_prefix: Option<&'static str>,
    /// More lines of the `[audit]` table (with `signing`); `keys/audit.key` is a 32-byte key.
    pub audit_extra: &'static str,
    /// `[response_signing]` lines instead of `key = "keys/response-signing.json"` (a
    /// `pkcs11:` key and its `pin_file`).
    pub response_key: Option<String>,
    /// Environment variables of the gateway processes.
    pub gateway_env: Vec<(String, String)>,
    /// Top-level keys put before the first table (`include = [...]`).
    pub prelude: String,
    /// The test AS grants whatever scope is asked for (dynamic consent scopes).
    pub scope_from_request: bool,
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
            signing: false,
            signing_alg: "ed25519",
            redis: None,
            public_url: None,
            introspection_auth: "client_secret_basic",
            extra: "",
            dpop_proof_max_age: "60s",
            body_timeout: "10s",
            body_min_rate: 240,
            header_timeout: "10s",
            idle_timeout: "30s",
            log_level: "info",
            replay_entries_per_key: None,
            state_extra: String::new(),
            token_prefix: None,
            audit_extra: "",
            response_key: None,
            gateway_env: Vec::new(),
            prelude: String::new(),
            scope_from_request: false,
        }
    }
}

/// Signed routes: keys/response-signing.json (Ed25519, from gen-keys) signs; the client `tpp`
/// signs requests with keys/tpp.json (its public half in keys/tpp.jwks.json).
pub const SIGNING: &str = r#"
[response_signing]
format = "http-signature"
key = "keys/response-signing.json"
key_id = "rs-1"
alg = "ed25519"
max_body = "4KiB"
issuer = "bank-org-1"

[audit]
path = "audit/audit.jsonl"
fsync = "every-record"

[[client]]
client_id = "tpp"
jwks_file = "keys/tpp.jwks.json"

[[route]]
id = "signed-statements"
methods = ["GET", "HEAD"]
path = "/statements/{id}"
upstream = "core"
scopes = ["accounts"]
sign_response = true

[[route]]
id = "signed-payments"
methods = ["POST"]
path = "/signed-payments"
upstream = "core"
scopes = ["payments"]
verify_request_signature = true
sign_response = true

[[route]]
id = "uk-statements"
methods = ["GET"]
path = "/uk/statements/{id}"
upstream = "core"
auth = "none"
sign_response = true
response_format = "jws-detached"

[[route]]
id = "br-statements"
methods = ["GET"]
path = "/br/statements/{id}"
upstream = "core"
sign_response = true
response_format = "jwt"
"#;

/// Writes the EdDSA private JWK of a gen-keys set to `path` (mode 600).
fn eddsa_jwk(set: &Path, path: &Path) -> Value {
    jwk_of(set, "EdDSA", path)
}

/// Writes the private JWK of `alg` from a gen-keys set to `path` (mode 600).
fn jwk_of(set: &Path, alg: &str, path: &Path) -> Value {
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(set).unwrap()).unwrap();
    let key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["alg"] == alg)
        .unwrap()
        .clone();
    write_private(path, &key.to_string());
    key
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
    pub upstream: Upstream,
    pub dir: tempfile::TempDir,
    /// The configuration with `{PORT}`, `{ADMIN}` and `{PLAIN}` left to fill, for replicas.
    template: String,
    public_url: String,
    pub signing_alg: &'static str,
    env: Vec<(String, String)>,
}

pub fn as_config(dir: &Path, as_port: u16, gateway_port: u16, options: &Options) -> Value {
    json!({
        "port": as_port,
        "signing_keys": dir.join("as-keys.json"),
        "audience": options.public_url.map(str::to_string).unwrap_or_else(|| format!("https://127.0.0.1:{gateway_port}")),
        "access_token_format": "jwt",
        "access_token_format_by_client": {"tpp-opaque": "opaque", "tpp-mtls-opaque": "opaque"},
        "access_token_alg": options.access_token_alg,
        "access_token_ttl": options.access_token_ttl,
        "scope_from_request": options.scope_from_request,
        "clients": [
            {"client_id": "fapigate", "client_secret": "gw-secret"},
            {"client_id": "tpp", "client_secret": "tpp-secret"},
            {"client_id": "tpp-opaque", "client_secret": "tpp-secret"},
            {"client_id": "tpp-mtls", "client_secret": "tpp-secret", "tls_client_certificate_bound_access_tokens": true},
        ]
    })
}

/// Registers the gateway's introspection client `fapigate` in `as_settings` with
/// `private_key_jwt` and a fresh ES256 key (kid `gw-1`); returns that key's PEM.
pub fn private_key_jwt_client(as_settings: &mut Value) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw();
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    as_settings["clients"][0] = json!({
        "client_id": "fapigate",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "gw-1", "use": "sig",
            "x": b64(&point[1..33]), "y": b64(&point[33..65])}]},
    });
    key.serialize_pem()
}

/// A DPoP-bound token from `auth` for `client` (scopes `accounts payments`, with `details`
/// as its authorization_details), and its DPoP key id.
pub fn dpop_token(
    auth: &AuthServer,
    client: &str,
    alg: &str,
    details: Option<Value>,
) -> (String, String) {
    let mut request = json!({
        "client_id": client, "client_secret": "tpp-secret", "dpop": true, "dpop_alg": alg,
        "scope": "accounts payments",
    });
    if let Some(details) = details {
        request["authorization_details"] = details;
    }
    let response = auth.call("/__test/token", request);
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

impl Bank {
    pub fn start(options: Options) -> Bank {
        let dir = temp_dir();
        let pki = Pki::new(dir.path());
        let upstream = Upstream::start();
        let (as_socket, socket) = (Reserved::new(), Reserved::new());
        let (as_port, port) = (as_socket.port(), socket.port());
        AuthServer::generate_keys(&dir.path().join("as-keys.json"), "k1");
        let mut as_settings = as_config(dir.path(), as_port, port, &options);
        let introspection_client = if options.introspection_auth == "private_key_jwt" {
            let pem = private_key_jwt_client(&mut as_settings);
            write_private(&dir.path().join("gw-client.pem"), &pem);
            "auth = \"private_key_jwt\"\nkey = \"gw-client.pem\"\nkey_id = \"gw-1\"".to_string()
        } else {
            "auth = \"client_secret_basic\"\nsecret_file = \"gw-secret.txt\"".to_string()
        };
        let auth = AuthServer::start(dir.path(), as_socket, &as_settings);
        write_private(&dir.path().join("gw-secret.txt"), "gw-secret\n");
        let public_url = options
            .public_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("https://127.0.0.1:{port}"));
        let audience = options
            .audience
            .map(str::to_string)
            .unwrap_or_else(|| public_url.clone());
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
{introspection_client}
signed_response = {signed}
cache_max_ttl = "{ttl}"
timeout = "2s"
{prefix}{PAYMENTS_ROUTE}{extra_routes}"#,
            extra_routes = options.extra,
            prefix = options
                .token_prefix
                .map_or(String::new(), |p| format!("token_prefix = \"{p}\"\n")),
            signed = options.signed_introspection,
            ttl = options.cache_max_ttl,
        );
        if options.signing {
            let keys = dir.path().join("keys");
            std::fs::create_dir_all(&keys).unwrap();
            std::fs::create_dir_all(dir.path().join("audit")).unwrap();
            write_private(
                &keys.join("audit.key"),
                "an-audit-mac-key-of-32-bytes-or-more\n",
            );
            AuthServer::generate_keys(&keys.join("gw-set.json"), "gw");
            let jose = if options.signing_alg == "ed25519" {
                "EdDSA"
            } else {
                "ES256"
            };
            jwk_of(
                &keys.join("gw-set.json"),
                jose,
                &keys.join("response-signing.json"),
            );
            AuthServer::generate_keys(&keys.join("tpp-set.json"), "tpp");
            let client = eddsa_jwk(&keys.join("tpp-set.json"), &keys.join("tpp.json"));
            let mut public = client.clone();
            public.as_object_mut().unwrap().remove("d");
            std::fs::write(
                keys.join("tpp.jwks.json"),
                json!({"keys": [public]}).to_string(),
            )
            .unwrap();
        }
        let extra = if options.signing {
            let signing = SIGNING
                .replace(
                    "alg = \"ed25519\"",
                    &format!("alg = \"{}\"", options.signing_alg),
                )
                .replace(
                    "fsync = \"every-record\"\n",
                    &format!("fsync = \"every-record\"\n{}\n", options.audit_extra),
                );
            let signing = match &options.response_key {
                Some(lines) => signing.replace("key = \"keys/response-signing.json\"", lines),
                None => signing,
            };
            format!("{extra}{signing}")
        } else {
            extra
        };
        let profile = format!(
            "[profile]\nname = \"{}\"\nmax_clock_skew = \"{}\"\ndpop_proof_max_age = \"{}\"\ndpop_nonce = \"{}\"\n",
            options.profile,
            options.max_clock_skew,
            options.dpop_proof_max_age,
            if options.dpop_nonce {
                "required"
            } else {
                "off"
            }
        );
        let mut state = match &options.redis {
            Some(url) => format!(
                "\n[state]\nbackend = \"redis\"\nredis_url = \"{url}\"\n{}",
                options.state_extra
            ),
            // Redis reached otherwise (cluster nodes) than by one URL.
            None if !options.state_extra.is_empty() => {
                format!("\n[state]\nbackend = \"redis\"\n{}", options.state_extra)
            }
            None => String::new(),
        };
        if let Some(per_key) = options.replay_entries_per_key {
            if state.is_empty() {
                state.push_str("\n[state]\n");
            }
            state.push_str(&format!("replay_entries_per_key = {per_key}\n"));
        }
        // Placeholders that cannot occur in the rest of the file.
        let template = config_text(1, 2, 3, upstream.addr, &format!("{extra}{state}"));
        let template = format!("{}{template}", options.prelude);
        let template = template
            .replace("[profile]\nname = \"fapi2\"\n", &profile)
            .replace(
                "level = \"info\"",
                &format!("level = \"{}\"", options.log_level),
            )
            .replace("127.0.0.1:1\"", "127.0.0.1:{PORT}\"")
            .replace("127.0.0.1:2\"", "127.0.0.1:{ADMIN}\"")
            .replace(
                "127.0.0.1:3\"",
                &format!(
                    "127.0.0.1:{{PLAIN}}\"\nbody_timeout = \"{}\"\nheader_timeout = \"{}\"\n\
                     idle_timeout = \"{}\"\nbody_min_rate = {}",
                    options.body_timeout,
                    options.header_timeout,
                    options.idle_timeout,
                    options.body_min_rate
                ),
            )
            .replace(
                "public_url = \"https://127.0.0.1:{PORT}\"",
                &format!("public_url = \"{public_url}\""),
            );
        let gateway =
            Gateway::launch_with_env(dir.path(), socket, &options.gateway_env, |admin, plain| {
                fill(&template, port, admin, plain)
            });
        Bank {
            gateway,
            auth,
            pki,
            upstream,
            dir,
            template,
            public_url,
            signing_alg: options.signing_alg,
            env: options.gateway_env,
        }
    }

    /// Another replica of the same gateway configuration, in its own folder and ports.
    pub fn replica(&self, name: &str) -> Gateway {
        self.replica_with(name, |text| text)
    }

    /// A replica whose configuration is this bank's changed by `change`.
    pub fn replica_with(&self, name: &str, change: impl FnOnce(String) -> String) -> Gateway {
        let dir = self.dir.path().join(name);
        copy_dir(self.dir.path(), &dir);
        let socket = Reserved::new();
        let port = socket.port();
        let template = change(self.template.clone());
        Gateway::launch_with_env(&dir, socket, &self.env, |admin, plain| {
            fill(&template, port, admin, plain)
        })
    }

    /// A DPoP-bound token for `client` with its DPoP key id.
    pub fn dpop_token(&self, client: &str, alg: &str, details: Option<Value>) -> (String, String) {
        dpop_token(&self.auth, client, alg, details)
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

    /// The URL clients address (DPoP `htu`): the public URL plus the path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
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

    /// See [`metrics_showing`].
    pub fn metrics_showing(&self, line: &str) -> String {
        metrics_showing(self.gateway.admin_port, line)
    }
}

fn fill(template: &str, port: u16, admin: u16, plain: u16) -> String {
    template
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{PLAIN}", &plain.to_string())
}

/// Copies the certificates, keys and secrets a replica's configuration names.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path == to {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The exact `WWW-Authenticate` of a DPoP-scheme error.
pub fn dpop_challenge(error: &str, description: &str) -> String {
    format!(
        "DPoP error=\"{error}\", error_description=\"{description}\", algs=\"ES256 PS256 EdDSA\""
    )
}
