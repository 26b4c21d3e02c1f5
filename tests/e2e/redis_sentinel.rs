//! Issue 14 §3: Redis Sentinel, the usual HA set-up: a master, a replica and a sentinel on
//! 127.0.0.1. Replay records cross two gateways through the master Sentinel names, and after a
//! failover the gateways find the new master without a restart; no replay is accepted.

use crate::bank::*;
use crate::redis_tcp::{start_on_free_ports, start_until};
use crate::support::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const MASTER: &str = "fapigate-master";

struct Sentinel {
    servers: Vec<Child>,
    master: u16,
    replica: u16,
    sentinel: u16,
    _dir: tempfile::TempDir,
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Polls `condition` (a state of the Redis servers) until it holds, for START_TIMEOUT.
fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Sentinel {
    fn start() -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("fapigate-redis-sentinel-")
            .tempdir()
            .expect("sentinel dir");
        let (master_child, master) = start_on_free_ports(&dir.path().join("master"), |free| {
            let port = free();
            (port, vec!["--port".into(), port.to_string()])
        });
        let (replica_child, replica) = start_on_free_ports(&dir.path().join("replica"), |free| {
            let port = free();
            let args = ["--port", &port.to_string(), "--replicaof", "127.0.0.1"]
                .map(str::to_string)
                .to_vec();
            (port, [args, vec![master.to_string()]].concat())
        });
        until("replication", || {
            cli(master, &["info", "replication"]).contains("connected_slaves:1")
        });
        let conf_dir = dir.path().join("sentinel");
        std::fs::create_dir_all(&conf_dir).expect("sentinel dir");
        let conf = conf_dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {MASTER} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n"
            ),
        )
        .expect("sentinel.conf");
        let (sentinel_child, sentinel) = start_until(&conf_dir, "+monitor master", |free| {
            let port = free();
            let args = [
                &conf.display().to_string(),
                "--sentinel",
                "--port",
                &port.to_string(),
            ]
            .map(str::to_string);
            (port, args.to_vec())
        });
        until("the sentinel seeing the replica", || {
            cli(sentinel, &["sentinel", "replicas", MASTER]).contains(&replica.to_string())
        });
        Sentinel {
            servers: vec![master_child, replica_child, sentinel_child],
            master,
            replica,
            sentinel,
            _dir: dir,
        }
    }

    fn state(&self) -> String {
        format!(
            "redis_sentinel_nodes = [\"redis://127.0.0.1:{}\"]\nredis_sentinel_master = \"{MASTER}\"\n",
            self.sentinel
        )
    }

    /// Sentinel promotes the replica; returns once it is the master everyone agrees on and the
    /// old master has been turned into its replica (it then refuses writes with READONLY).
    fn fail_over(&self) {
        assert!(cli(self.sentinel, &["sentinel", "failover", MASTER]).contains("OK"));
        until("the failover", || {
            cli(
                self.sentinel,
                &["sentinel", "get-master-addr-by-name", MASTER],
            )
            .contains(&self.replica.to_string())
                && cli(self.replica, &["info", "replication"]).contains("role:master")
                && cli(self.master, &["info", "replication"]).contains("role:slave")
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

#[test]
fn dpop_11_1_2_replays_are_refused_through_sentinel_before_and_after_a_failover() {
    let sentinel = Sentinel::start();
    let bank = Bank::start(Options {
        state_extra: sentinel.state(),
        public_url: Some("https://api.bank.test"),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let used_at_a_then_b = |expect_first: u16| -> bool {
        let proof = bank
            .auth
            .proof(&key, "GET", &bank.url("/accounts"), &token, None);
        let first = accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(&proof));
        if first.status != expect_first {
            return false;
        }
        let replayed = accounts_with(&replica, &bank.pki, "DPoP", &token, Some(&proof));
        // Refused as a replay, or (while a gateway finds the new master) 503: never a pass.
        assert!(
            [401, 503].contains(&replayed.status),
            "a replay was accepted: {replayed:?}"
        );
        replayed.status == 401
    };
    assert!(used_at_a_then_b(200));
    assert!(cli(sentinel.master, &["dbsize"]).trim() != "0");
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
    let records = cli(
        sentinel.replica,
        &["--scan", "--pattern", "fapigate:dpop:*"],
    );
    assert!(!records.trim().is_empty(), "no record on the new master");
}
