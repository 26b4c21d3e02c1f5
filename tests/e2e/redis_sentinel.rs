//! Issue 14 §3: Redis Sentinel, the usual HA set-up: a master, a replica and a sentinel on
//! 127.0.0.1. Replay records cross two gateways through the master Sentinel names, and after a
//! failover the gateways find the new master without a restart; no replay is accepted.

use crate::bank::*;
use crate::redis_tcp::{signal, start_on_free_ports, start_until};
use crate::support::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const MASTER: &str = "fapigate-master";

/// TLS on every server (certificates from one test CA) and passwords: the master's and the
/// replica's `requirepass`, and the sentinel's own.
struct Secure {
    pki: Pki,
    password: &'static str,
    sentinel_password: &'static str,
}

struct Sentinel {
    servers: Vec<Child>,
    master: u16,
    replica: u16,
    sentinel: u16,
    secure: Option<Secure>,
    dir: tempfile::TempDir,
}

/// Polls `condition` (a state of the Redis servers) until it holds, for START_TIMEOUT.
fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Secure {
    fn tls_file(&self, name: &str) -> String {
        self.pki.dir.join("tls").join(name).display().to_string()
    }

    /// `redis-server` arguments: TLS only, the same password to serve and to replicate.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args = crate::redis_tcp::tls_args(&self.pki, port, &self.pki.ca());
        args.extend(
            [
                "--tls-auth-clients",
                "no",
                "--tls-replication",
                "yes",
                "--requirepass",
                self.password,
                "--masterauth",
                self.password,
            ]
            .map(str::to_string),
        );
        args
    }
}

impl Sentinel {
    fn start() -> Sentinel {
        Sentinel::start_with(false)
    }

    /// With `secure`, every connection is TLS and every server wants a password.
    fn start_with(secure: bool) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("fapigate-redis-sentinel-")
            .tempdir()
            .expect("sentinel dir");
        let secure = secure.then(|| Secure {
            pki: Pki::new(dir.path()),
            password: "master-password",
            sentinel_password: "sentinel-password",
        });
        let args = |port: u16| match &secure {
            Some(secure) => secure.server_args(port),
            None => vec!["--port".into(), port.to_string()],
        };
        // The first sync at once, not after the default 5 s wait for more replicas.
        let args = |port: u16| {
            [
                args(port),
                vec!["--repl-diskless-sync-delay".into(), "0".into()],
            ]
            .concat()
        };
        let (master_child, master) = start_on_free_ports(&dir.path().join("master"), |free| {
            let port = free();
            (port, args(port))
        });
        let (replica_child, replica) = start_on_free_ports(&dir.path().join("replica"), |free| {
            let port = free();
            let replica_of = [
                "--replicaof".to_string(),
                "127.0.0.1".into(),
                master.to_string(),
            ];
            (port, [args(port), replica_of.to_vec()].concat())
        });
        let mut sentinel = Sentinel {
            servers: vec![master_child, replica_child],
            master,
            replica,
            sentinel: 0,
            secure,
            dir,
        };
        // Online, not merely connected: until its first sync is done, the replica acknowledges
        // no write, and the gateway admits no proof.
        until("replication", || {
            sentinel
                .cli(master, &["info", "replication"])
                .contains("state=online")
        });
        let conf_dir = sentinel.dir.path().join("sentinel");
        std::fs::create_dir_all(&conf_dir).expect("sentinel dir");
        let conf = conf_dir.join("sentinel.conf");
        let mut text = format!(
            "sentinel monitor {MASTER} 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 10000\n"
        );
        if let Some(secure) = &sentinel.secure {
            text.push_str(&format!(
                "sentinel auth-pass {MASTER} {}\nrequirepass {}\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n",
                secure.password,
                secure.sentinel_password,
                secure.tls_file("server.crt"),
                secure.tls_file("server.key"),
                secure.tls_file("ca.crt"),
            ));
        }
        std::fs::write(&conf, text).expect("sentinel.conf");
        let tls = sentinel.secure.is_some();
        let (sentinel_child, port) = start_until(&conf_dir, "+monitor master", |free| {
            let port = free();
            let mut args = vec![conf.display().to_string(), "--sentinel".into()];
            let listen: &[&str] = if tls {
                &["--port", "0", "--tls-port"]
            } else {
                &["--port"]
            };
            args.extend(listen.iter().map(|a| a.to_string()));
            args.push(port.to_string());
            (port, args)
        });
        sentinel.servers.push(sentinel_child);
        sentinel.sentinel = port;
        until("the sentinel seeing the replica", || {
            sentinel
                .cli(port, &["sentinel", "replicas", MASTER])
                .contains(&replica.to_string())
        });
        sentinel
    }

    /// `redis-cli` against one of the servers, with TLS and its password when secure.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.arg("-p").arg(port.to_string());
        if let Some(secure) = &self.secure {
            let password = if port == self.sentinel {
                secure.sentinel_password
            } else {
                secure.password
            };
            command
                .args(["--tls", "--cacert", &secure.tls_file("ca.crt")])
                .args(["--no-auth-warning", "-a", password]);
        }
        let output = command.args(args).output().expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// The `[state]` lines that reach the master through this sentinel. A `redis_timeout` of
    /// 2 s gives a replica 1 s to acknowledge a record (`WAIT`) on a loaded machine.
    fn state(&self) -> String {
        let timeout = "redis_timeout = \"2s\"\n";
        let state = match &self.secure {
            None => format!(
                "redis_sentinel_nodes = [\"redis://127.0.0.1:{}\"]\nredis_sentinel_master = \"{MASTER}\"\n\
                 redis_insecure = true\n",
                self.sentinel
            ),
            Some(secure) => {
                let password = self.dir.path().join("master-password");
                write_private(&password, &format!("{}\n", secure.password));
                format!(
                    "redis_sentinel_nodes = [\"rediss://:{}@127.0.0.1:{}\"]\n\
                     redis_sentinel_master = \"{MASTER}\"\n\
                     redis_password_file = \"{}\"\nredis_ca_file = \"{}\"\n",
                    secure.sentinel_password,
                    self.sentinel,
                    password.display(),
                    secure.tls_file("ca.crt"),
                )
            }
        };
        format!("{state}{timeout}")
    }

    /// Sentinel promotes the replica; returns once it is the master everyone agrees on and the
    /// old master has been turned into its replica (it then refuses writes with READONLY).
    fn fail_over(&self) {
        assert!(self
            .cli(self.sentinel, &["sentinel", "failover", MASTER])
            .contains("OK"));
        until("the failover", || {
            self.cli(
                self.sentinel,
                &["sentinel", "get-master-addr-by-name", MASTER],
            )
            .contains(&self.replica.to_string())
                && self
                    .cli(self.replica, &["info", "replication"])
                    .contains("role:master")
                && self
                    .cli(self.master, &["info", "replication"])
                    .contains("role:slave")
        });
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A proof admitted at `a` and then refused as a replay at `b` (true), or not admitted at `a`
/// with `expect_first` (false). A replay is never accepted.
fn used_at_a_then_b(bank: &Bank, b: &Gateway, token: &str, key: &str, expect_first: u16) -> bool {
    let proof = bank
        .auth
        .proof(key, "GET", &bank.url("/accounts"), token, None);
    let first = accounts_with(&bank.gateway, &bank.pki, "DPoP", token, Some(&proof));
    if first.status != expect_first {
        return false;
    }
    let replayed = accounts_with(b, &bank.pki, "DPoP", token, Some(&proof));
    // Refused as a replay, or (while a gateway finds the new master) 503: never a pass.
    assert!(
        [401, 503].contains(&replayed.status),
        "a replay was accepted: {replayed:?}"
    );
    replayed.status == 401
}

/// Two gateways whose shared state is reached through `sentinel`, and a DPoP token with its
/// key id.
fn two_gateways(sentinel: &Sentinel) -> (Bank, Gateway, String, String) {
    let bank = Bank::start(Options {
        state_extra: sentinel.state(),
        public_url: Some("https://api.bank.test"),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    (bank, replica, token, key)
}

#[test]
fn dpop_11_1_2_replays_are_refused_through_sentinel_before_and_after_a_failover() {
    let sentinel = Sentinel::start();
    let (bank, replica, token, key) = two_gateways(&sentinel);
    let used_at_a_then_b =
        |expect_first: u16| used_at_a_then_b(&bank, &replica, &token, &key, expect_first);
    assert!(used_at_a_then_b(200));
    assert!(sentinel.cli(sentinel.master, &["dbsize"]).trim() != "0");
    // The failover happens under traffic: every proof sent to both gateways at once.
    let outcomes = crate::redis_chaos::under_load(&bank, &replica, || sentinel.fail_over());
    assert_eq!(
        crate::redis_chaos::admitted_twice(&outcomes),
        0,
        "{outcomes:?}"
    );
    assert!(!outcomes.is_empty());
    // Each gateway finds the new master by itself: at first a proof may get 503 (never 200
    // twice), then it is admitted once and refused at the other gateway.
    until("the gateways using the new master", || {
        used_at_a_then_b(200)
    });
    let records = sentinel.cli(
        sentinel.replica,
        &["--scan", "--pattern", "fapigate:dpop:*"],
    );
    assert!(!records.trim().is_empty(), "no record on the new master");
}

/// DPOP-11.1-2 across a failover: Redis replicates asynchronously, so a record only the master
/// holds is lost when a replica is promoted, and the proof would pass again there (the suite
/// once saw exactly that under load). A proof is admitted only once a replica acknowledged its
/// record (`WAIT`, `redis_replica_acks` = 1 with Sentinel): with the replica stopped, the
/// proof gets 503 and is still a replay at the other gateway; with it back, proofs pass.
#[test]
fn dpop_11_1_2_a_proof_is_admitted_only_once_a_replica_holds_its_record() {
    let sentinel = Sentinel::start();
    let (bank, replica, token, key) = two_gateways(&sentinel);
    assert!(used_at_a_then_b(&bank, &replica, &token, &key, 200));
    let replica_server = &sentinel.servers[1];
    signal(replica_server, "-STOP");
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    let first = accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(&proof));
    let replayed = accounts_with(&replica, &bank.pki, "DPoP", &token, Some(&proof));
    signal(replica_server, "-CONT");
    assert_eq!(
        first.status, 503,
        "admitted with no replica holding the record: {first:?}"
    );
    assert_eq!(first.header("retry-after"), Some("1"));
    assert_eq!(replayed.status, 401, "{replayed:?}");
    assert_eq!(
        replayed.challenge(),
        Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
    );
    until("proofs admitted with the replica back", || {
        used_at_a_then_b(&bank, &replica, &token, &key, 200)
    });
}

#[test]
fn dpop_11_1_2_replays_are_refused_through_sentinel_over_tls_with_passwords() {
    let sentinel = Sentinel::start_with(true);
    let (bank, replica, token, key) = two_gateways(&sentinel);
    assert!(used_at_a_then_b(&bank, &replica, &token, &key, 200));
    let records = sentinel.cli(sentinel.master, &["--scan", "--pattern", "fapigate:dpop:*"]);
    assert!(!records.trim().is_empty(), "no record on the TLS master");
    // After a failover, the new master is also reached over TLS with the password.
    sentinel.fail_over();
    until("the gateways using the new master", || {
        used_at_a_then_b(&bank, &replica, &token, &key, 200)
    });
    let records = sentinel.cli(
        sentinel.replica,
        &["--scan", "--pattern", "fapigate:dpop:*"],
    );
    assert!(!records.trim().is_empty(), "no record on the new master");
}
