//! The test harness: real certificates made here, a real HTTP upstream on 127.0.0.1, the real
//! `fapigate` binary started as a user would, and curl / openssl as the clients.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_fapigate");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and self-signed client certificates.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fapigate test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let server_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("server key");
        let server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");
        std::fs::write(tls.join("ca.crt"), ca.pem()).expect("ca");
        std::fs::write(tls.join("server.crt"), server.pem()).expect("server cert");
        write_private(&tls.join("server.key"), &server_key.serialize_pem());
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.crt")
    }

    /// A self-signed client certificate; returns (cert path, key path, DER).
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("client cert");
        let cert_path = self.dir.join(format!("tls/{name}.crt"));
        let key_path = self.dir.join(format!("tls/{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("client cert");
        write_private(&key_path, &key.serialize_pem());
        (cert_path, key_path, cert.der().to_vec())
    }
}

/// base64url(SHA-256(DER)), the `x5t#S256` of RFC 8705.
pub fn x5t_s256(der: &[u8]) -> String {
    fapigate::request::X5tS256::of_der(der).encoded()
}

/// A real HTTP/1.1 upstream: answers every request with JSON describing what it received.
/// `/slow/<ms>` waits before answering.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    thread::spawn(move || serve_connection(stream));
                }
            }
        });
        Upstream { addr, stop }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_connection(stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(length, 0);
            if reader.read_exact(&mut body).is_err() {
                return;
            }
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size_line = String::new();
                if reader.read_line(&mut size_line).unwrap_or(0) == 0 {
                    return;
                }
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                if reader.read_exact(&mut chunk).is_err() {
                    return;
                }
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        if let Some(ms) = target
            .strip_prefix("/slow/")
            .and_then(|m| m.parse::<u64>().ok())
        {
            thread::sleep(Duration::from_millis(ms));
        }
        let mut header_map = serde_json::Map::new();
        for (name, value) in &headers {
            if let Some(values) = header_map
                .entry(name.clone())
                .or_insert_with(|| serde_json::Value::Array(vec![]))
                .as_array_mut()
            {
                values.push(serde_json::Value::String(value.clone()));
            }
        }
        let echo = serde_json::json!({
            "method": method,
            "target": target,
            "headers": header_map,
            "body": String::from_utf8_lossy(&body),
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            echo.len(),
            echo
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A running `fapigate run` process; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub plain_port: u16,
    pub log: PathBuf,
}

/// The settings every test gateway shares; `extra` is appended (routes, upstreams...).
pub fn config_text(port: u16, admin: u16, plain: u16, upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[listener]
addr = "127.0.0.1:{port}"
public_url = "https://127.0.0.1:{port}"
plain_addr = "127.0.0.1:{plain}"

[listener.tls]
cert = "tls/server.crt"
key = "tls/server.key"
client_cert = "request"

[listener.forwarded]
trusted_proxies = ["127.0.0.2/32"]

[admin]
addr = "127.0.0.1:{admin}"

[profile]
name = "fapi2"

[server]
threads = 2
shutdown_grace = "2s"
shutdown_timeout = "2s"

[log]
format = "json"
level = "info"

[[upstream]]
id = "core"
addrs = ["{upstream}"]
read_timeout = "1s"
connect_timeout = "1s"

[[route]]
id = "status"
methods = ["GET"]
path = "/status"
upstream = "core"
auth = "none"

[[route]]
id = "slow"
methods = ["GET"]
path = "/slow/{{ms}}"
upstream = "core"
auth = "none"

[[route]]
id = "accounts"
methods = ["GET"]
path = "/accounts"
upstream = "core"
scopes = ["accounts"]

[[route]]
id = "account-balances"
methods = ["GET", "HEAD"]
path = "/accounts/{{account_id}}/balances"
upstream = "core"
{extra}
"#
    )
}

impl Gateway {
    /// Writes the config into `dir` (which holds the PKI) and starts the gateway.
    pub fn start(dir: &Path, upstream: SocketAddr, extra: &str) -> Gateway {
        Gateway::start_at(dir, upstream, extra, free_port())
    }

    /// Starts the gateway with its TLS listener on `port` (tokens name it in `aud` and `htu`).
    pub fn start_at(dir: &Path, upstream: SocketAddr, extra: &str, port: u16) -> Gateway {
        Gateway::launch(dir, port, |admin, plain| {
            config_text(port, admin, plain, upstream, extra)
        })
    }

    /// Starts the gateway with the configuration `text(admin_port, plain_port)` returns.
    pub fn launch(dir: &Path, port: u16, text: impl FnOnce(u16, u16) -> String) -> Gateway {
        let (admin_port, plain_port) = (free_port(), free_port());
        let config = dir.join("fapigate.toml");
        std::fs::write(&config, text(admin_port, plain_port)).expect("config");
        let log = dir.join("gateway.log");
        let child = Command::new(BINARY)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("gateway.err")).expect("err file"),
            ))
            .spawn()
            .expect("start fapigate");
        let gateway = Gateway {
            child,
            dir: dir.to_path_buf(),
            config,
            port,
            admin_port,
            plain_port,
            log,
        };
        gateway.wait_ready();
        gateway
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if admin_get(self.admin_port, "/readyz").0 == 200 {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "gateway not ready; stderr: {}",
            std::fs::read_to_string(self.dir.join("gateway.err")).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.port, path)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The access-log line of one interaction, waiting briefly for it to be written.
    pub fn access_line(&self, interaction_id: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["interaction_id"] == interaction_id && v["message"] == "access");
            if let Some(line) = found {
                return line;
            }
            if Instant::now() > deadline {
                panic!("no access line for {interaction_id} in:\n{text}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain GET to the admin listener: (status, body).
pub fn admin_get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
    challenge: Option<String>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// `WWW-Authenticate` without its `resource_metadata` parameters (RFC 9728 §5.1), which
    /// every challenge carries and `resource_metadata_is_in_every_challenge` checks.
    pub fn challenge(&self) -> Option<&str> {
        self.challenge.as_deref()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn strip_resource_metadata(challenge: &str) -> String {
    let mut text = challenge.to_string();
    while let Some(start) = text.find("resource_metadata=\"") {
        let value_start = start + "resource_metadata=\"".len();
        let end = text[value_start..]
            .find('"')
            .map(|i| value_start + i + 1)
            .unwrap_or(text.len());
        let from = if text[..start].ends_with(", ") {
            start - 2
        } else if text[..start].ends_with(' ') {
            start - 1
        } else {
            start
        };
        text.replace_range(from..end, "");
    }
    text
}

/// Runs curl with `args` (plus `-s -i`) and parses the final response.
pub fn curl(args: &[&str]) -> Response {
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    parse_response(&text).unwrap_or_else(|| {
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(120).collect()).collect();
        panic!(
            "curl {:?} gave no response (exit {:?}): {}{}",
            shown,
            output.status.code(),
            text,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn parse_response(text: &str) -> Option<Response> {
    let mut rest = text;
    loop {
        let (head, body) = rest.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        if status == 100 {
            rest = body;
            continue;
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers
                    .entry(name.trim().to_ascii_lowercase())
                    .or_default()
                    .push(value.trim().to_string());
            }
        }
        let challenge = headers
            .get("www-authenticate")
            .and_then(|v| v.first())
            .map(|c| strip_resource_metadata(c));
        return Some(Response {
            status,
            headers,
            body: body.to_string(),
            challenge,
        });
    }
}

/// curl against the gateway's TLS listener, trusting the test CA.
pub fn curl_tls(gateway: &Gateway, pki: &Pki, path: &str, extra: &[&str]) -> Response {
    let url = gateway.url(path);
    let ca = pki.ca();
    let ca = ca.to_string_lossy();
    let mut args: Vec<&str> = vec!["--path-as-is", "--cacert", &ca];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// `GET /accounts` at `gateway` with `Authorization: <scheme> <token>` and, if given, a proof.
pub fn accounts_with(
    gateway: &Gateway,
    pki: &Pki,
    scheme: &str,
    token: &str,
    proof: Option<&str>,
) -> Response {
    let authorization = format!("Authorization: {scheme} {token}");
    let dpop = proof.map(|p| format!("DPoP: {p}"));
    let mut args = vec!["-H", authorization.as_str()];
    if let Some(dpop) = &dpop {
        args.extend(["-H", dpop.as_str()]);
    }
    curl_tls(gateway, pki, "/accounts", &args)
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fapigate-e2e-")
        .tempdir()
        .expect("temp dir")
}

/// One test's world: a temp dir with certificates, an upstream and a running gateway.
pub struct Env {
    pub gateway: Gateway,
    _upstream: Upstream,
    pub pki: Pki,
    _dir: tempfile::TempDir,
}

impl Env {
    pub fn start() -> Env {
        Env::with_routes("")
    }

    /// `extra` is TOML appended to the shared configuration.
    pub fn with_routes(extra: &str) -> Env {
        let dir = temp_dir();
        let pki = Pki::new(dir.path());
        let upstream = Upstream::start();
        let gateway = Gateway::start(dir.path(), upstream.addr, extra);
        Env {
            gateway,
            _upstream: upstream,
            pki,
            _dir: dir,
        }
    }

    pub fn get(&self, path: &str, extra: &[&str]) -> Response {
        curl_tls(&self.gateway, &self.pki, path, extra)
    }
}

/// The real authorization server of `tests/as` (node `oidc-provider`), with its test-client
/// control API. Killed when dropped.
pub struct AuthServer {
    child: Child,
    pub issuer: String,
    pub config: PathBuf,
}

pub const AS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/as");

impl AuthServer {
    /// Generates a signing key set (kids `<prefix>-es256`, `-ps256`, `-eddsa`) into `path`.
    pub fn generate_keys(path: &Path, prefix: &str) {
        let status = Command::new("node")
            .arg(format!("{AS_DIR}/gen-keys.mjs"))
            .arg(path)
            .arg(prefix)
            .stdout(Stdio::null())
            .status()
            .expect("node runs");
        assert!(status.success(), "gen-keys failed");
    }

    /// Starts the AS with `config` (JSON, see tests/as/README.md) written to `dir/as.json`.
    pub fn start(dir: &Path, config: &serde_json::Value) -> AuthServer {
        let path = dir.join("as.json");
        std::fs::write(&path, config.to_string()).expect("as config");
        let (child, issuer) = AuthServer::spawn_child(&path);
        AuthServer {
            child,
            issuer,
            config: path,
        }
    }

    fn spawn_child(config: &Path) -> (Child, String) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_extension("log"))
            .expect("as log");
        let mut child = Command::new("node")
            .arg(format!("{AS_DIR}/server.mjs"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the test AS");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(20))
            .expect("the AS printed READY");
        let issuer = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected AS output: {line}"))
            .to_string();
        (child, issuer)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops and starts again with the same config file (same port, keys re-read).
    pub fn restart(&mut self) {
        self.stop();
        let (child, issuer) = AuthServer::spawn_child(&self.config);
        self.child = child;
        self.issuer = issuer;
    }

    pub fn call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}{path}", self.issuer);
        let body = body.to_string();
        let response = curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
            &url,
        ]);
        assert_eq!(response.status, 200, "{path}: {}", response.body);
        response.json()
    }

    pub fn introspections(&self) -> u64 {
        let response = curl(&[&format!("{}/__test/stats", self.issuer)]);
        response.json()["introspections"].as_u64().expect("count")
    }

    /// A DPoP proof from the `dpop` library for a request to `htu`.
    pub fn proof(
        &self,
        key_id: &str,
        htm: &str,
        htu: &str,
        token: &str,
        nonce: Option<&str>,
    ) -> String {
        let mut body = serde_json::json!({"dpop_key_id": key_id, "htm": htm, "htu": htu, "access_token": token});
        if let Some(nonce) = nonce {
            body["nonce"] = nonce.into();
        }
        self.call("/__test/proof", body)["proof"]
            .as_str()
            .expect("proof")
            .to_string()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real `redis-server` on 127.0.0.1 (Debian package), without persistence.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
        };
        server.resume();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
