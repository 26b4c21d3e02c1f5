//! `redis-server` on TCP ports, for what a unix socket cannot do (TLS, Cluster).

use crate::support::{Pki, START_TIMEOUT};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts `redis-server` in `dir` with the arguments `args` makes from free ports (it asks the
/// given function for each port it needs and returns the client port with the arguments).
/// Redis cannot take a listening socket from us: free ports are found by binding, released and
/// taken by redis-server; if another process took one meanwhile, Redis says so and other ports
/// are tried. The outcome never depends on timing.
pub fn start_on_free_ports(
    dir: &Path,
    args: impl Fn(&mut dyn FnMut() -> u16) -> (u16, Vec<String>),
) -> (Child, u16) {
    start_until(dir, "Ready to accept connections", args)
}

/// [`start_on_free_ports`], for a server whose log says `ready` once it serves (a sentinel
/// logs its first `+monitor`).
pub fn start_until(
    dir: &Path,
    ready: &str,
    args: impl Fn(&mut dyn FnMut() -> u16) -> (u16, Vec<String>),
) -> (Child, u16) {
    std::fs::create_dir_all(dir).expect("redis dir");
    let log = dir.join("redis.log");
    for _ in 0..10 {
        let (port, args) = args(&mut free_port);
        let _ = std::fs::remove_file(&log);
        // The arguments first: a configuration file must be the first one.
        let mut child = Command::new("redis-server")
            .args(&args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(ready) {
                return (child, port);
            }
            if let Some(status) = child.try_wait().expect("redis status") {
                assert!(
                    text.contains("Address already in use"),
                    "redis-server exited ({status}):\n{text}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no free ports for redis-server in ten tries");
}

/// `redis-server` arguments for TLS only on `port`, with `pki`'s server certificate (for
/// 127.0.0.1) and `clients_ca` as the roots of client certificates.
pub fn tls_args(pki: &Pki, port: u16, clients_ca: &Path) -> Vec<String> {
    let tls = |name: &str| pki.dir.join("tls").join(name).display().to_string();
    [
        "--port".to_string(),
        "0".into(),
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        tls("server.crt"),
        "--tls-key-file".into(),
        tls("server.key"),
        "--tls-ca-cert-file".into(),
        clients_ca.display().to_string(),
    ]
    .to_vec()
}

/// Sends `signal` (`-STOP` or `-CONT`) to a Redis server and returns once it took effect: a
/// stopped server reads nothing, so a replica acknowledges no write.
pub fn signal(server: &Child, signal: &str) {
    let pid = server.id();
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
    let stopped = signal == "-STOP";
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        let state = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest.trim_start());
        if state.starts_with('T') == stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kill {signal} {pid} took no effect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
