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

/// How long a component may take to start on a loaded 2-core machine (CI runs the whole suite
/// there, tests in parallel) before the test fails with what the component wrote.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP port on 127.0.0.1 that the test holds: bound here, kept bound until dropped, and
/// handed to the process that serves it as an inherited socket (descriptor 3). No other
/// process can take the port between choosing it and serving on it, so parallel tests never
/// race for ports.
pub struct Reserved(TcpListener);

impl Reserved {
    pub fn new() -> Reserved {
        Reserved(TcpListener::bind("127.0.0.1:0").expect("bind a port on 127.0.0.1"))
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().expect("bound address").port()
    }

    /// `command` starts with this socket as its descriptor 3.
    pub fn pass_to(&self, command: &mut Command) {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = self.0.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec and calls only dup2 and
        // fcntl, which are async-signal-safe; `fd` stays open in the parent until the spawn
        // returns (self is borrowed for the command's life at the call sites).
        unsafe {
            command.pre_exec(move || {
                let target = 3;
                if fd == target {
                    // Already in place: only the close-on-exec flag must go.
                    let flags = libc::fcntl(target, libc::F_GETFD);
                    if flags < 0
                        || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Default for Reserved {
    fn default() -> Self {
        Reserved::new()
    }
}

/// Waits for `child` to print a line starting with `prefix` on `stdout` (other lines are
/// passed to the test's output). Fails with `what`'s whole stderr (read from `stderr_file`)
/// when the child exits first or START_TIMEOUT passes.
pub fn wait_for_line(
    child: &mut Child,
    stdout: impl Read + Send + 'static,
    prefix: &'static str,
    what: &str,
    stderr_file: &Path,
) -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.starts_with(prefix) {
                let _ = sender.send(line);
                return;
            }
            eprintln!("{prefix}-wait: {line}");
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => return line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{what} exited ({status}) before printing {prefix}; stderr:\n{}",
                        std::fs::read_to_string(stderr_file).unwrap_or_default()
                    );
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                "{what} closed its stdout without a {prefix} line; stderr:\n{}",
                std::fs::read_to_string(stderr_file).unwrap_or_default()
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                "{what} printed no {prefix} line within {START_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(stderr_file).unwrap_or_default()
            ),
        }
    }
}

/// Polls `condition` until it holds (true) or 15 s pass (false): for a state the test cannot
/// be told about, with a deadline far above the time it takes.
pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
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
    fapigate::stages::X5tS256::of_der(der).encoded()
}

/// A real HTTP/1.1 upstream: answers every request with JSON describing what it received.
/// `/slow/<ms>` waits before answering.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Seen>,
}

/// The request targets an upstream has read the header of, in order.
#[derive(Default)]
struct Seen {
    targets: std::sync::Mutex<Vec<String>>,
    changed: std::sync::Condvar,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Seen::default());
        let (stopping, seeing) = (stop.clone(), seen.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let seeing = seeing.clone();
                    thread::spawn(move || serve_connection(stream, &seeing));
                }
            }
        });
        Upstream { addr, stop, seen }
    }

    /// How many requests for `target` have reached this upstream so far.
    pub fn requests_for(&self, target: &str) -> usize {
        let targets = self.seen.targets.lock().expect("seen lock");
        targets.iter().filter(|t| *t == target).count()
    }

    /// Blocks until a request for `target` has reached this upstream (START_TIMEOUT at most):
    /// the moment a request is known to be in flight behind the gateway.
    pub fn wait_for_request(&self, target: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut targets = self.seen.targets.lock().expect("seen lock");
        while !targets.iter().any(|t| t == target) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no request for {target} reached the upstream"
            );
            targets = self
                .seen
                .changed
                .wait_timeout(targets, left)
                .expect("seen lock")
                .0;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_connection(stream: TcpStream, seen: &Seen) {
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
        if let Ok(mut targets) = seen.targets.lock() {
            targets.push(target.clone());
            seen.changed.notify_all();
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
        // `/…forged…`: the answer carries evidence of its own that a signed route must not
        // pass on (digests, signatures, and a field its Connection names); `/…nocontent…`:
        // 204 without a body.
        let forged = if target.contains("forged") {
            "content-digest: sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:\r\n\
             repr-digest: sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:\r\n\
             signature-input: up=(\"@status\");keyid=\"upstream\"\r\n\
             signature: up=:AAAA:\r\nx-jws-signature: upstream..forged\r\n\
             connection: x-upstream-secret\r\nx-upstream-secret: internal\r\n"
        } else {
            ""
        };
        // `/…verbatim…` and `/…duplicate…`: JSON whose exact text matters.
        let echo = if target.contains("verbatim") {
            r#"{"amount":  123.50 , "n": 1E2}"#.to_string()
        } else if target.contains("duplicate") {
            r#"{"a": 1, "a": 2}"#.to_string()
        } else {
            echo
        };
        let response = if target.contains("nocontent") {
            format!("HTTP/1.1 204 No Content\r\n{forged}\r\n")
        } else {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{forged}content-length: {}\r\n\r\n{}",
                echo.len(),
                echo
            )
        };
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A running `fapigate run` process; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub config: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub plain_port: u16,
    pub log: PathBuf,
    /// The TLS listener's socket, held for the gateway's life (see [`Reserved`]).
    _socket: Reserved,
}

/// The settings every test gateway shares; `extra` is appended (routes, upstreams...).
/// `admin` and `plain` are 0 for a gateway started here: it binds any free port and reports
/// it in its ready file.
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
drain_delay = "1s"

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
        let socket = Reserved::new();
        let port = socket.port();
        Gateway::launch(dir, socket, |admin, plain| {
            config_text(port, admin, plain, upstream, extra)
        })
    }

    /// Starts the gateway with its TLS listener on `socket` (whose port tokens name in `aud`
    /// and `htu`) and the configuration `text(admin_port, plain_port)` returns; both ports
    /// are 0, and the ones bound are read from the gateway's ready file.
    pub fn launch(dir: &Path, socket: Reserved, text: impl FnOnce(u16, u16) -> String) -> Gateway {
        Gateway::launch_with_env(dir, socket, &[], text)
    }

    /// [`Gateway::launch`] with more environment variables (e.g. `SOFTHSM2_CONF`).
    pub fn launch_with_env(
        dir: &Path,
        socket: Reserved,
        env: &[(String, String)],
        text: impl FnOnce(u16, u16) -> String,
    ) -> Gateway {
        let config = dir.join("fapigate.toml");
        std::fs::write(&config, text(0, 0)).expect("config");
        let log = dir.join("gateway.log");
        let ready = dir.join("gateway.ready.json");
        let _ = std::fs::remove_file(&ready);
        let stderr = dir.join("gateway.err");
        // The socket arrives as a service manager would pass it (sd_listen_fds(3)); the shell
        // sets LISTEN_PID to its own pid, which `exec` hands to the gateway.
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"",
            ])
            .arg(BINARY)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--ready-file")
            .arg(&ready)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("err file"),
            ));
        socket.pass_to(&mut command);
        let mut child = command.spawn().expect("start fapigate");
        let bound = wait_for_ready_file(&mut child, &ready, &stderr);
        let port_of = |key: &str| {
            bound[key]
                .as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map(|a| a.port())
        };
        assert_eq!(port_of("listener"), Some(socket.port()), "{bound}");
        Gateway {
            child,
            config,
            port: socket.port(),
            admin_port: port_of("admin").expect("admin address"),
            plain_port: port_of("plain").unwrap_or(0),
            log,
            _socket: socket,
        }
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

/// Waits for the gateway's ready file (written whole once every listener answers) and returns
/// it; fails with the gateway's whole stderr when it exits first or START_TIMEOUT passes.
fn wait_for_ready_file(child: &mut Child, ready: &Path, stderr: &Path) -> serde_json::Value {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            return serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("ready file is not JSON ({e}): {text}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "gateway exited ({status}) before it was ready; stderr:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            panic!(
                "gateway not ready within {START_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
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

/// The admin `/metrics` text once it contains `line`. Request and rejection counters are
/// updated when the response has been written, so right after a response they may lag it by
/// a moment: this waits (START_TIMEOUT at most) instead of racing; it fails with the text.
pub fn metrics_showing(admin_port: u16, line: &str) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let (_, text) = admin_get(admin_port, "/metrics");
        if text.contains(line) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("the metrics never showed {line}:\n{text}");
        }
        thread::sleep(Duration::from_millis(20));
    }
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
    pub upstream: Upstream,
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
            upstream,
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
    /// The AS's socket, held until `stop`: a restart serves the same port.
    socket: Option<Reserved>,
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

    /// Starts the AS on `socket` with `config` (JSON, see tests/as/README.md; its `port` is
    /// `socket`'s) written to `dir/as.json`.
    pub fn start(dir: &Path, socket: Reserved, config: &serde_json::Value) -> AuthServer {
        let path = dir.join("as.json");
        let mut config = config.clone();
        config["listen_fd"] = 3.into();
        std::fs::write(&path, config.to_string()).expect("as config");
        let (child, issuer) = AuthServer::spawn_child(&path, &socket);
        AuthServer {
            child,
            issuer,
            config: path,
            socket: Some(socket),
        }
    }

    fn spawn_child(config: &Path, socket: &Reserved) -> (Child, String) {
        let log_path = config.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("as log");
        let mut command = Command::new("node");
        command
            .arg(format!("{AS_DIR}/server.mjs"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        socket.pass_to(&mut command);
        let mut child = command.spawn().expect("start the test AS");
        let stdout = child.stdout.take().expect("stdout");
        let line = wait_for_line(&mut child, stdout, "READY ", "the test AS", &log_path);
        let issuer = line["READY ".len()..].trim().to_string();
        (child, issuer)
    }

    /// Stops the AS for good: its port is released, so connections to it are refused (an AS
    /// process that is down, not a host that does not answer).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.socket = None;
    }

    /// Stops and starts again with the same config file (same port, keys re-read). The port
    /// stays bound in between: connections made meanwhile wait for the new process.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let socket = self.socket.as_ref().expect("restart of a stopped AS");
        let (child, issuer) = AuthServer::spawn_child(&self.config, socket);
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

/// `redis-cli` reaching its server with `connection` (`-s SOCKET`, or `--tls ... -p PORT`),
/// running `args`: the reply as text. Fails when redis-cli does.
pub fn redis_cli(connection: &[String], args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(connection)
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// A real `redis-server` (Debian package), without persistence, listening on a unix socket
/// in its own folder only: no TCP port to race for, and a restart finds the same address.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (e.g. a `--maxmemory-policy`).
    args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            dir: tempfile::Builder::new()
                .prefix("fapigate-redis-")
                .tempdir()
                .expect("redis dir"),
        };
        server.resume();
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// `redis-cli` against this server: its reply as text.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&["-s".into(), self.socket().display().to_string()], args)
    }

    /// Starts (again) on the same socket; returns once it answers PING.
    pub fn resume(&mut self) {
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::from(std::fs::File::create(&log).expect("redis log")))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reply = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    break;
                }
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "redis-server did not start ({exited:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
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
