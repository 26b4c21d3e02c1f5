//! fapigate quickstart: `cargo run --release --example quickstart`
//!
//! One command, everything on 127.0.0.1:
//!
//! 1. generates `conf/quickstart/` (git-ignored): a CA and a server certificate for
//!    127.0.0.1/localhost, the test issuer's ES256 key, the gateway's Ed25519 response-signing
//!    key, and the demo client's Ed25519 request-signing key (public JWKS) and ES256 DPoP key;
//! 2. runs a sample bank API on :9000 (plain HTTP, what the gateway protects);
//! 3. runs a test issuer on :9100 that serves its JWKS at `/jwks`;
//! 4. runs fapigate in this process with `conf/quickstart.toml` (TLS :8443, admin :9901);
//! 5. walks through real FAPI 2.0 requests and prints PASS/FAIL for each;
//! 6. stays up for requests by hand until Ctrl-C.
//!
//! The test issuer and the demo client (DPoP proofs, RFC 9421 request signatures) are example
//! code standing in for a bank's authorization server and a TPP. None of it is part of the
//! gateway binary.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine;
use fapigate::http_signatures::{
    component, serialize_inner_list, signature_base, signature_params, MessageView,
};
use fapigate::http_signatures::{content_digest, verify_content_digest};
use fapigate::http_signatures::{verify_with, HttpSigAlg, SigningKey};
use fapigate::http_signatures::{REQUEST_TAG, RESPONSE_TAG};
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use sfv::{BareItem, ListEntry, Parameters};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// These must agree with conf/quickstart.toml.
const GATEWAY: &str = "https://127.0.0.1:8443";
const GATEWAY_ADDR: &str = "127.0.0.1:8443";
const ADMIN_ADDR: &str = "127.0.0.1:9901";
const BANK_ADDR: &str = "127.0.0.1:9000";
const ISSUER_ADDR: &str = "127.0.0.1:9100";
const ISSUER: &str = "http://127.0.0.1:9100";

const CLIENT_ID: &str = "demo-tpp";
const ISSUER_KID: &str = "quickstart-issuer-es256";
const CLIENT_SIG_KID: &str = "demo-tpp-ed25519";
const TOKEN_LIFETIME: u64 = 15 * 60;
const PAYMENT_BODY: &str = r#"{"instructedAmount":{"currency":"EUR","amount":"25.00"},"creditorAccount":{"iban":"DE02100100109307118603"}}"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickstart: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("conf/quickstart.toml");
    let dir = root.join("conf/quickstart");

    // Every port first, so a busy one fails before anything is written or started.
    let bank_listener = listen(BANK_ADDR, "the sample bank API")?;
    let issuer_listener = listen(ISSUER_ADDR, "the test issuer")?;
    drop(listen(GATEWAY_ADDR, "the gateway's TLS listener")?);
    drop(listen(ADMIN_ADDR, "the gateway's admin listener")?);

    println!("fapigate quickstart");
    println!("  generating keys and certificates in {}", shown(&dir));
    let generated = generate(&dir)?;
    let issuer = Arc::new(TestIssuer {
        key: EcKey::from_pkcs8(&generated.issuer_pkcs8)?,
    });
    let dpop = Arc::new(EcKey::from_pkcs8(&generated.dpop_pkcs8)?);
    let jkt = fapigate::stages::jkt(dpop.jwk.as_object().expect("a JWK object"))
        .ok_or("the DPoP key has no thumbprint")?;

    spawn_http(bank_listener, Arc::new(bank_api));
    println!("  sample bank API   http://{BANK_ADDR}  (GET /accounts, GET /accounts/{{id}}/balances, POST /payments, GET /status)");
    {
        let (issuer, dpop, jkt) = (issuer.clone(), dpop.clone(), jkt.clone());
        spawn_http(
            issuer_listener,
            Arc::new(move |request: &Request| issuer_routes(request, &issuer, &dpop, &jkt)),
        );
    }
    println!("  test issuer       {ISSUER}  (JWKS at /jwks)");

    // The gateway, exactly as `fapigate run --config conf/quickstart.toml` runs it.
    fapigate::install_crypto_provider();
    let policy = fapigate::load_config(&config).map_err(|errors| errors.to_string())?;
    fapigate::init_logging(false, "warn");
    let gateway_config = config.clone();
    std::thread::Builder::new()
        .name("fapigate".into())
        .spawn(move || {
            // Returns only on a startup error; Ctrl-C makes Pingora exit the process.
            if let Err(error) = fapigate::run(policy, gateway_config, None) {
                eprintln!("quickstart: the gateway did not start: {error}");
                std::process::exit(1);
            }
        })
        .map_err(|e| format!("cannot start the gateway thread: {e}"))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    runtime.block_on(async {
        let http = https_client(&generated.ca)?;
        wait_ready(&http).await?;
        println!(
            "  fapigate          {GATEWAY}  (admin http://{ADMIN_ADDR}), {}",
            shown(&config)
        );
        let client = signer(&generated.client_signing_key)?;
        let demo = Demo {
            http,
            issuer,
            dpop,
            jkt,
            client,
        };
        let (passed, total) = demo.walk_through().await?;
        if let Some(path) = &generated.audit {
            match fapigate::audit_trail::verify(path, &Default::default()).map(|v| v.records) {
                Ok(count) => println!(
                    "\nAudit trail {}: {count} records, hash chain intact",
                    shown(path)
                ),
                Err(error) => println!("\nAudit trail {}: {error}", shown(path)),
            }
        }
        println!(
            "\n{passed}/{total} steps passed{}",
            if passed == total {
                ""
            } else {
                "  <-- see FAIL above"
            }
        );
        demo.print_by_hand(&generated);
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
        println!("\nstopping");
        Ok::<(), String>(())
    })?;
    std::process::exit(0)
}

// ---------------------------------------------------------------------------------------------
// Generated files

struct Generated {
    ca: PathBuf,
    issuer_pkcs8: Vec<u8>,
    dpop_pkcs8: Vec<u8>,
    dpop_key: PathBuf,
    client_signing_key: PathBuf,
    audit: Option<PathBuf>,
}

fn generate(dir: &Path) -> Result<Generated, String> {
    use std::os::unix::fs::PermissionsExt;
    let tls = dir.join("tls");
    let keys = dir.join("keys");
    let audit = dir.join("audit");
    for folder in [dir, &tls, &keys, &audit] {
        std::fs::create_dir_all(folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", keys.display()))?;

    // A CA and a server certificate for 127.0.0.1 and localhost, signed by it.
    let rcgen_err = |e: rcgen::Error| format!("certificate generation: {e}");
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fapigate quickstart CA");
    let ca = ca_params.self_signed(&ca_key).map_err(rcgen_err)?;
    let server_key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_err)?;
    let mut server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(rcgen_err)?;
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .map_err(rcgen_err)?;
    write_public(&tls.join("ca.crt"), &ca.pem())?;
    write_public(&tls.join("server.crt"), &server.pem())?;
    write_private(&tls.join("server.key"), &server_key.serialize_pem())?;

    let rng = SystemRandom::new();
    let ec_pkcs8 = || {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "P-256 key generation failed".to_string())
    };
    let ed_pkcs8 = || {
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "Ed25519 key generation failed".to_string())
    };

    // The test issuer's token-signing key (ES256).
    let issuer_pkcs8 = ec_pkcs8()?;
    write_private(&keys.join("issuer-es256.pem"), &pem(&issuer_pkcs8))?;
    // The gateway's response-signing key (Ed25519), named by [response_signing].
    write_private(&keys.join("response-signing.pem"), &pem(&ed_pkcs8()?))?;
    // The demo client's request-signing key (Ed25519) and its public JWKS, named by [[client]].
    let client_signing_key = keys.join("demo-tpp-signing.pem");
    write_private(&client_signing_key, &pem(&ed_pkcs8()?))?;
    let public = signer(&client_signing_key)?.public_jwk();
    write_public(
        &keys.join("demo-tpp.jwks.json"),
        &serde_json::to_string_pretty(&json!({ "keys": [public] })).expect("JSON"),
    )?;
    // The demo client's DPoP key (ES256): its tokens are bound to its thumbprint.
    let dpop_pkcs8 = ec_pkcs8()?;
    let dpop_key = keys.join("demo-tpp-dpop.pem");
    write_private(&dpop_key, &pem(&dpop_pkcs8))?;

    Ok(Generated {
        ca: tls.join("ca.crt"),
        issuer_pkcs8,
        dpop_pkcs8,
        dpop_key,
        client_signing_key,
        audit: Some(audit.join("fapigate-audit.jsonl")),
    })
}

fn pem(pkcs8: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(pkcs8);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// Writes a private key readable by its owner only (fapigate refuses anything looser).
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    write_mode(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &str) -> Result<(), String> {
    write_mode(path, contents, 0o644)
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    // An older file keeps its mode through open(): set it again.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)
}

fn signer(path: &Path) -> Result<SigningKey, String> {
    SigningKey::load(path, CLIENT_SIG_KID)
}

// ---------------------------------------------------------------------------------------------
// Keys and JWS (ES256) for the test issuer and the demo client's DPoP proofs

struct EcKey {
    encoding: EncodingKey,
    /// The public JWK: kty, crv, x, y.
    jwk: Value,
}

impl EcKey {
    fn from_pkcs8(pkcs8: &[u8]) -> Result<EcKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|_| "not a P-256 PKCS#8 key".to_string())?;
        let point = pair.public_key().as_ref();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Ok(EcKey {
            encoding: EncodingKey::from_ec_der(pkcs8),
            jwk: json!({
                "kty": "EC", "crv": "P-256",
                "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
            }),
        })
    }

    /// A compact JWS over `header` and `claims`, signed with ES256.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, Algorithm::ES256)
                .expect("ES256 signing");
        format!("{message}.{signature}")
    }

    /// An RFC 9449 DPoP proof for one request: a fresh `jti`, `htm`, `htu`, `iat` and `ath`.
    fn dpop_proof(&self, method: &str, url: &str, token: &str) -> String {
        let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
        self.sign(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}),
            &json!({
                "jti": uuid::Uuid::new_v4().to_string(),
                "htm": method,
                "htu": url,
                "iat": now(),
                "ath": ath,
            }),
        )
    }
}

/// The test issuer: an ES256 key, its JWKS, and RFC 9068 access tokens minted in-process.
/// Example code only, standing in for the bank's authorization server.
struct TestIssuer {
    key: EcKey,
}

impl TestIssuer {
    fn jwks(&self) -> Value {
        let mut jwk = self.key.jwk.clone();
        jwk["kid"] = json!(ISSUER_KID);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        json!({ "keys": [jwk] })
    }

    /// A DPoP-bound `at+jwt` for alice, as if she had consented (with SCA) to reading acc-1's
    /// balances and to paying EUR 25.00 to DE02100100109307118603.
    fn mint(&self, jkt: &str) -> String {
        let now = now();
        self.key.sign(
            &json!({"typ": "at+jwt", "alg": "ES256", "kid": ISSUER_KID}),
            &json!({
                "iss": ISSUER,
                "aud": GATEWAY,
                "sub": "alice",
                "client_id": CLIENT_ID,
                "scope": "accounts payments",
                "iat": now,
                "exp": now + TOKEN_LIFETIME,
                "jti": uuid::Uuid::new_v4().to_string(),
                "cnf": {"jkt": jkt},
                "acr": "urn:bank:sca",
                "auth_time": now,
                "authorization_details": [
                    {
                        "type": "account_information",
                        "actions": ["read_balances"],
                        "accounts": ["acc-1"]
                    },
                    {
                        "type": "payment_initiation",
                        "actions": ["initiate"],
                        "instructedAmount": {"currency": "EUR", "amount": "25.00"},
                        "creditorAccount": {"iban": "DE02100100109307118603"}
                    }
                ]
            }),
        )
    }
}

/// The test issuer's HTTP side. `/jwks` is what the gateway reads; `/demo/*` lets a person
/// with curl play the demo client (a real client never hands its DPoP key to anyone).
fn issuer_routes(request: &Request, issuer: &TestIssuer, dpop: &EcKey, jkt: &str) -> Response {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target.as_str(), ""));
    match (request.method.as_str(), path) {
        ("GET", "/jwks") => Response::json(200, &issuer.jwks()),
        ("GET", "/demo/token") => Response::text(200, issuer.mint(jkt)),
        ("GET", "/demo/proof") => {
            let param = |name: &str| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| percent_decode(value))
            };
            match (param("htm"), param("htu"), param("token")) {
                (Some(htm), Some(htu), Some(token)) => {
                    Response::text(200, dpop.dpop_proof(&htm, &htu, &token))
                }
                _ => Response::text(400, "usage: /demo/proof?htm=GET&htu=URL&token=TOKEN".into()),
            }
        }
        _ => Response::json(404, &json!({"error": "not_found"})),
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The sample bank API (the upstream): plain HTTP/1.1, keep-alive, one thread per connection

/// Who owns which account in the sample bank.
const ACCOUNTS: [(&str, &str, &str, &str); 2] = [
    ("acc-1", "alice", "DE89370400440532013000", "1234.56"),
    ("acc-2", "bob", "DE75512108001245126199", "98765.43"),
];

fn bank_api(request: &Request) -> Response {
    let path = request.target.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The gateway tells the upstream who the caller is (incoming copies are always removed).
    let subject = request.header("x-fapi-subject").unwrap_or("");
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["status"]) => {
            Response::json(200, &json!({"status": "up", "service": "sample bank API"}))
        }
        ("GET", ["accounts"]) => {
            let accounts: Vec<Value> = ACCOUNTS
                .iter()
                .filter(|(_, owner, _, _)| *owner == subject)
                .map(|(id, _, iban, _)| json!({"accountId": id, "iban": iban, "currency": "EUR"}))
                .collect();
            Response::json(200, &json!({"owner": subject, "accounts": accounts}))
        }
        ("GET", ["accounts", id, "balances"]) => match ACCOUNTS.iter().find(|a| a.0 == *id) {
            Some((id, _, _, amount)) => Response::json(
                200,
                &json!({
                    "accountId": id,
                    "balances": [{
                        "balanceType": "closingBooked",
                        "balanceAmount": {"currency": "EUR", "amount": amount}
                    }]
                }),
            ),
            None => Response::json(404, &json!({"error": "no such account"})),
        },
        ("POST", ["payments"]) => match serde_json::from_slice::<Value>(&request.body) {
            Ok(body) => Response::json(
                201,
                &json!({
                    "paymentId": format!("pmt-{}", uuid::Uuid::new_v4()),
                    "status": "AcceptedSettlementInProcess",
                    "debtor": subject,
                    "instructedAmount": body["instructedAmount"],
                    "creditorAccount": body["creditorAccount"],
                }),
            ),
            Err(_) => Response::json(400, &json!({"error": "the body is not JSON"})),
        },
        _ => Response::json(404, &json!({"error": "not_found"})),
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    fn text(status: u16, text: String) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: text.into_bytes(),
        }
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

fn listen(addr: &str, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "{addr} is already in use, and {what} needs it. Stop whatever listens there \
             (`ss -ltnp | grep {port}` shows it; perhaps another quickstart) and run again.",
            port = addr.rsplit(':').next().unwrap_or(addr)
        ),
        _ => format!("cannot listen on {addr} for {what}: {e}"),
    })
}

fn spawn_http(listener: TcpListener, handler: Arc<Handler>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handler = handler.clone();
            std::thread::spawn(move || serve_connection(stream, &*handler));
        }
    });
}

/// HTTP/1.1 with keep-alive: requests with a Content-Length body (or none), responses with a
/// Content-Length. Enough for the gateway's pooled upstream connections and for curl.
fn serve_connection(stream: TcpStream, handler: &Handler) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target), version) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let mut request = Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let http10 = version == Some("HTTP/1.0");
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                request
                    .headers
                    .push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        if request.header("transfer-encoding").is_some() {
            let _ = writer.write_all(
                b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        let length: usize = request
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        request.body = vec![0; length];
        if reader.read_exact(&mut request.body).is_err() {
            return;
        }
        let close = http10
            || request
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = handler(&request);
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: {}\r\n\r\n",
            response.status,
            reason(response.status),
            response.content_type,
            response.body.len(),
            if close { "close" } else { "keep-alive" }
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(&response.body).is_err()
            || writer.flush().is_err()
            || close
        {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The demo client: real requests through the gateway

fn https_client(ca: &Path) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in fapigate::read_certificates(ca)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(fapigate::fapi_crypto_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

async fn wait_ready(http: &reqwest::Client) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Ok(response) = http.get(format!("http://{ADMIN_ADDR}/readyz")).send().await {
            if response.status() == 200 {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "the gateway was not ready after 30 s (http://{ADMIN_ADDR}/readyz)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Demo {
    http: reqwest::Client,
    issuer: Arc<TestIssuer>,
    dpop: Arc<EcKey>,
    jkt: String,
    /// The demo client's RFC 9421 request-signing key.
    client: SigningKey,
}

struct Exchange {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The outcome of one step.
struct Step {
    ok: bool,
    notes: Vec<String>,
}

impl Demo {
    async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        body: Option<&str>,
    ) -> Result<Exchange, String> {
        let method: reqwest::Method = method.parse().map_err(|_| "bad method")?;
        let mut request = self.http.request(method, url).headers(headers.clone());
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_vec();
        Ok(Exchange {
            status,
            headers,
            body,
        })
    }

    async fn gateway_jwks(&self) -> Result<Value, String> {
        let url = format!("{GATEWAY}/.well-known/jwks.json");
        let exchange = self.send("GET", &url, &HeaderMap::new(), None).await?;
        serde_json::from_slice(&exchange.body).map_err(|e| format!("{url}: not JSON ({e})"))
    }

    async fn walk_through(&self) -> Result<(usize, usize), String> {
        let jwks = self.gateway_jwks().await?;
        let token = self.issuer.mint(&self.jkt);
        println!("\nWalk-through: alice consented (with SCA) to demo-tpp reading acc-1's balances");
        println!("and paying EUR 25.00 to DE02100100109307118603. Her access token is DPoP-bound");
        println!(
            "(cnf.jkt = {}); every request carries a fresh DPoP proof.",
            self.jkt
        );
        let mut results = Vec::new();

        // (a) An allowed read with a signed response.
        let balances = format!("{GATEWAY}/accounts/acc-1/balances");
        let first_proof = self.dpop.dpop_proof("GET", &balances, &token);
        let headers = dpop_headers(&token, &first_proof);
        title(
            1,
            "read a balance alice consented to (acc-1); the response is signed",
        );
        let exchange = self.send("GET", &balances, &headers, None).await?;
        let mut step = show(&exchange, "GET", &balances, &headers, &[200]);
        check_response_signature(&mut step, &jwks, &exchange, "GET", &balances, &headers);
        results.push(verdict(step));

        // (b) A signed payment request, a signed response.
        let payments = format!("{GATEWAY}/payments");
        let headers = self.signed_payment_headers(&token, &payments)?;
        title(
            2,
            "initiate the consented payment: RFC 9421-signed request, signed response",
        );
        println!("    body: {PAYMENT_BODY}");
        let exchange = self
            .send("POST", &payments, &headers, Some(PAYMENT_BODY))
            .await?;
        let mut step = show(&exchange, "POST", &payments, &headers, &[201]);
        check_response_signature(&mut step, &jwks, &exchange, "POST", &payments, &headers);
        results.push(verdict(step));

        // (c) Step 1's DPoP proof, replayed.
        let headers = dpop_headers(&token, &first_proof);
        title(
            3,
            "replay step 1's DPoP proof (an attacker who copied the request)",
        );
        let exchange = self.send("GET", &balances, &headers, None).await?;
        let mut step = show(&exchange, "GET", &balances, &headers, &[401]);
        expect_challenge(&mut step, &exchange, "invalid_dpop_proof");
        results.push(verdict(step));

        // (d) Another customer's account.
        let other = format!("{GATEWAY}/accounts/acc-2/balances");
        let headers = dpop_headers(&token, &self.dpop.dpop_proof("GET", &other, &token));
        title(
            4,
            "read another customer's account (acc-2), valid token and proof",
        );
        let exchange = self.send("GET", &other, &headers, None).await?;
        let mut step = show(&exchange, "GET", &other, &headers, &[403]);
        expect_challenge(&mut step, &exchange, "insufficient_scope");
        results.push(verdict(step));

        // (e) A Bearer downgrade: the stolen token without the key.
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            value(&format!("Bearer {token}"))?,
        );
        title(
            5,
            "Bearer downgrade: the DPoP-bound token sent as a plain Bearer token",
        );
        let exchange = self.send("GET", &balances, &headers, None).await?;
        let mut step = show(&exchange, "GET", &balances, &headers, &[401]);
        expect_challenge(&mut step, &exchange, "invalid_token");
        results.push(verdict(step));

        let passed = results.iter().filter(|ok| **ok).count();
        Ok((passed, results.len()))
    }

    /// The payment request's headers: DPoP, Content-Digest (RFC 9530) and an RFC 9421
    /// signature under the FAPI 2.0 profile, built with fapigate's own signature base.
    fn signed_payment_headers(&self, token: &str, url: &str) -> Result<HeaderMap, String> {
        let mut headers = dpop_headers(token, &self.dpop.dpop_proof("POST", url, token));
        headers.insert(http::header::CONTENT_TYPE, value("application/json")?);
        headers.insert(
            HeaderName::from_static("content-digest"),
            value(&content_digest(PAYMENT_BODY.as_bytes()))?,
        );
        let components: Vec<_> = [
            "@method",
            "@target-uri",
            "authorization",
            "dpop",
            "content-digest",
        ]
        .iter()
        .map(|name| component(name, &[]))
        .collect();
        let mut params = Parameters::new();
        params.insert("created".into(), BareItem::Integer(now() as i64));
        params.insert("keyid".into(), BareItem::String(CLIENT_SIG_KID.into()));
        params.insert("tag".into(), BareItem::String(REQUEST_TAG.into()));
        let list = signature_params(&components, params);
        let base = signature_base(
            &list,
            &MessageView {
                method: Some("POST"),
                target_uri: Some(url),
                status: None,
                headers: &headers,
            },
            None,
        )
        .map_err(|e| format!("request signature base: {e:?}"))?;
        let signature = self.client.sign(base.as_bytes(), false)?;
        headers.insert(
            HeaderName::from_static("signature-input"),
            value(&format!("sig1={}", serialize_inner_list(&list)))?,
        );
        headers.insert(
            HeaderName::from_static("signature"),
            value(&format!(
                "sig1=:{}:",
                base64::engine::general_purpose::STANDARD.encode(signature)
            ))?,
        );
        Ok(headers)
    }

    fn print_by_hand(&self, generated: &Generated) {
        let ca = shown(&generated.ca);
        let token = self.issuer.mint(&self.jkt);
        println!(
            r#"
fapigate is running; Ctrl-C stops everything.
  gateway   {GATEWAY}     admin  http://{ADMIN_ADDR}/metrics, /readyz
  issuer    {ISSUER}/jwks     bank API  http://{BANK_ADDR} (reach it through the gateway)

Try it by hand (from the repository root; behind a proxy add --noproxy '*'):
  curl --cacert {ca} {GATEWAY}/status
  curl -i --cacert {ca} {GATEWAY}/accounts          # 401: this route needs a token

Token routes need a DPoP-bound access token AND a fresh DPoP proof on every request: a JWT
(typ dpop+jwt) signed with the client's private key, carrying its public key (jwk) and
naming the method (htm), the URL (htu), the time (iat), a unique id (jti) and the SHA-256 of
the token (ath). A proof is good for one request, for 60 s; the token alone is useless.

A token minted just now (sub alice, client demo-tpp, valid {minutes} minutes, cnf.jkt {jkt}):
{token}

It is bound to the demo client's key {dpop_key}. To play that client with curl, the test
issuer mints proofs with it (example code: a real client never gives its key away):

  CA={ca}
  TOKEN=$(curl -s {ISSUER}/demo/token)
  URL={GATEWAY}/accounts/acc-1/balances
  curl -i --cacert $CA $URL -H "Authorization: DPoP $TOKEN" \
       -H "DPoP: $(curl -s "{ISSUER}/demo/proof?htm=GET&htu=$URL&token=$TOKEN")"

Then try URL={GATEWAY}/accounts (alice's accounts) or .../accounts/acc-2/balances (403),
send one DPoP header twice (401), or POST /payments, which also needs an RFC 9421 request
signature with {client_key} (see signed_payment_headers in deploy/quickstart.rs).
Refusals are counted by reason: curl -s http://{ADMIN_ADDR}/metrics | grep fapigate_rejections_total
"#,
            minutes = TOKEN_LIFETIME / 60,
            jkt = self.jkt,
            dpop_key = shown(&generated.dpop_key),
            client_key = shown(&generated.client_signing_key),
        );
    }
}

fn value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|e| format!("header value: {e}"))
}

fn dpop_headers(token: &str, proof: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("DPoP {token}")).expect("a token is header-safe"),
    );
    headers.insert(
        HeaderName::from_static("dpop"),
        HeaderValue::from_str(proof).expect("a proof is header-safe"),
    );
    headers
}

fn title(number: usize, text: &str) {
    println!("\n[{number}/5] {text}");
}

/// Prints the exchange and checks its status.
fn show(
    exchange: &Exchange,
    method: &str,
    url: &str,
    request: &HeaderMap,
    expected: &[u16],
) -> Step {
    println!("  > {method} {url}");
    for (name, value) in request {
        let value = value.to_str().unwrap_or("");
        let shown = match name.as_str() {
            "authorization" => abbreviate(value, 20),
            "dpop" => abbreviate(value, 16),
            _ => value.to_string(),
        };
        println!("  > {}: {shown}", display_name(name.as_str()));
    }
    let reason = http::StatusCode::from_u16(exchange.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    println!("  < {} {reason}", exchange.status);
    for name in [
        "www-authenticate",
        "content-digest",
        "signature-input",
        "signature",
    ] {
        if let Some(value) = exchange.header(name) {
            println!("  < {}: {value}", display_name(name));
        }
    }
    let body = String::from_utf8_lossy(&exchange.body);
    println!("  < body: {}", abbreviate(&body, 220));
    let ok = expected.contains(&exchange.status);
    Step {
        ok,
        notes: if ok {
            vec![]
        } else {
            vec![format!(
                "expected status {expected:?}, got {}",
                exchange.status
            )]
        },
    }
}

fn expect_challenge(step: &mut Step, exchange: &Exchange, error: &str) {
    let wanted = format!("error=\"{error}\"");
    match exchange.header("www-authenticate") {
        Some(challenge) if challenge.contains(&wanted) => {}
        other => {
            step.ok = false;
            step.notes.push(format!(
                "expected a WWW-Authenticate with {wanted}, got {other:?}"
            ));
        }
    }
}

fn check_response_signature(
    step: &mut Step,
    jwks: &Value,
    exchange: &Exchange,
    method: &str,
    url: &str,
    request: &HeaderMap,
) {
    match verify_response(jwks, exchange, method, url, request) {
        Ok(keyid) => println!(
            "    signature verified: key \"{keyid}\" from {GATEWAY}/.well-known/jwks.json, \
             Content-Digest matches the body"
        ),
        Err(why) => {
            step.ok = false;
            step.notes.push(format!("response signature: {why}"));
        }
    }
}

fn verdict(step: Step) -> bool {
    if step.ok {
        println!("  PASS");
    } else {
        println!("  FAIL: {}", step.notes.join("; "));
    }
    step.ok
}

/// Verifies the gateway's `fapi-2-response` signature (RFC 9421) of a response to the request
/// we sent, with the public key the gateway publishes, using fapigate's own signature base.
fn verify_response(
    jwks: &Value,
    exchange: &Exchange,
    method: &str,
    url: &str,
    request: &HeaderMap,
) -> Result<String, String> {
    let field = |name: &str| exchange.header(name).ok_or(format!("no {name} header"));
    let inputs = sfv::Parser::parse_dictionary(field("signature-input")?.as_bytes())
        .map_err(|e| format!("Signature-Input: {e}"))?;
    let signatures = sfv::Parser::parse_dictionary(field("signature")?.as_bytes())
        .map_err(|e| format!("Signature: {e}"))?;
    let (label, list) = inputs
        .iter()
        .find_map(|(label, entry)| match entry {
            ListEntry::InnerList(list)
                if list.params.get("tag").and_then(BareItem::as_str) == Some(RESPONSE_TAG) =>
            {
                Some((label, list))
            }
            _ => None,
        })
        .ok_or("no signature tagged fapi-2-response")?;
    let signature = match signatures.get(label) {
        Some(ListEntry::Item(item)) => item
            .bare_item
            .as_byte_seq()
            .ok_or("the signature is not a byte sequence")?,
        _ => return Err(format!("no signature labelled {label}")),
    };
    let keyid = list
        .params
        .get("keyid")
        .and_then(BareItem::as_str)
        .ok_or("no keyid")?;
    let created = list
        .params
        .get("created")
        .and_then(BareItem::as_int)
        .ok_or("no created")?;
    if (now() as i64 - created).abs() > 60 {
        return Err(format!("created {created} is not recent"));
    }
    let published = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == keyid))
        .ok_or(format!("key {keyid} is not in the gateway's JWKS"))?;
    let alg = match (published["kty"].as_str(), published["crv"].as_str()) {
        (Some("OKP"), Some("Ed25519")) => HttpSigAlg::Ed25519,
        (Some("EC"), Some("P-256")) => HttpSigAlg::EcdsaP256Sha256,
        (Some("RSA"), _) => HttpSigAlg::RsaPssSha512,
        _ => return Err(format!("key {keyid} has an unsupported type")),
    };
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(published.clone()).map_err(|e| format!("JWK {keyid}: {e}"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| format!("JWK {keyid}: {e}"))?;
    let base = signature_base(
        list,
        &MessageView {
            method: None,
            target_uri: None,
            status: Some(exchange.status),
            headers: &exchange.headers,
        },
        Some(&MessageView {
            method: Some(method),
            target_uri: Some(url),
            status: None,
            headers: request,
        }),
    )
    .map_err(|e| format!("signature base: {e:?}"))?;
    if !verify_with(alg, &key, base.as_bytes(), signature) {
        return Err("the signature does not verify".into());
    }
    verify_content_digest(field("content-digest")?, &exchange.body)
        .map_err(|e| format!("Content-Digest: {e:?}"))?;
    Ok(keyid.to_string())
}

fn display_name(name: &str) -> String {
    match name {
        "www-authenticate" => "WWW-Authenticate".into(),
        "dpop" => "DPoP".into(),
        other => other
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                    None => String::new(),
                }
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

fn abbreviate(text: &str, keep: usize) -> String {
    if text.chars().count() <= keep + 3 {
        text.to_string()
    } else {
        let head: String = text.chars().take(keep).collect();
        format!("{head}... ({} chars)", text.len())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A path as the user would type it: relative to the working directory when inside it.
fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
