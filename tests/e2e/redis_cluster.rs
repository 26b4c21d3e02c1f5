//! Issue 14 §3: a real Redis Cluster of three masters on 127.0.0.1, created with
//! `redis-cli --cluster create`: DPoP replay records (one `EVAL` over keys under one hash tag)
//! and shared state work across two gateways through it.

use crate::bank::*;
use crate::support::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Cluster {
    nodes: Vec<(Child, u16)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("fapigate-redis-cluster-")
            .tempdir()
            .expect("cluster dir");
        let mut nodes = Vec::new();
        for n in 0..3 {
            nodes.push(start_node(&dir.path().join(format!("node-{n}"))));
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(output.status.success(), "cluster create: {output:?}");
        let cluster = Cluster { nodes, _dir: dir };
        // Every node must agree the cluster is up before a client is pointed at it.
        let deadline = Instant::now() + START_TIMEOUT;
        for (_, port) in &cluster.nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli runs");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// How many masters hold a key matching `pattern`.
    fn nodes_holding(&self, pattern: &str) -> usize {
        self.nodes
            .iter()
            .filter(|(_, port)| {
                let scan = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "--scan", "--pattern", pattern])
                    .output()
                    .expect("redis-cli runs");
                !String::from_utf8_lossy(&scan.stdout).trim().is_empty()
            })
            .count()
    }

    fn state(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|(_, port)| format!("\"redis://127.0.0.1:{port}\""))
            .collect();
        format!("redis_cluster_nodes = [{}]\n", nodes.join(", "))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One cluster-enabled `redis-server`, with its client and cluster bus ports.
fn start_node(dir: &std::path::Path) -> (Child, u16) {
    crate::redis_tcp::start_on_free_ports(dir, |free| {
        let (port, bus) = (free(), free());
        let args = [
            "--port".to_string(),
            port.to_string(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-port".into(),
            bus.to_string(),
            "--cluster-config-file".into(),
            dir.join("nodes.conf").display().to_string(),
        ];
        (port, args.to_vec())
    })
}

#[test]
fn dpop_11_1_2_a_proof_used_at_one_gateway_is_refused_at_another_through_a_redis_cluster() {
    let cluster = Cluster::start();
    let bank = Bank::start(Options {
        state_extra: cluster.state(),
        public_url: Some("https://api.bank.test"),
        replay_entries_per_key: Some(100),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    // DPoP keys until their records are on two masters at least (each key's records share a
    // hash tag, so one slot); twenty keys on one master of three would be a 1-in-10^9 event.
    let mut masters_used = 0;
    for round in 0..20 {
        if round >= 3 && masters_used >= 2 {
            break;
        }
        let (token, key) = bank.dpop_token("tpp", "ES256", None);
        let proof = bank
            .auth
            .proof(&key, "GET", &bank.url("/accounts"), &token, None);
        let first = accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(&proof));
        assert_eq!(first.status, 200, "{first:?}");
        let replayed = accounts_with(&replica, &bank.pki, "DPoP", &token, Some(&proof));
        assert_eq!(replayed.status, 401, "{replayed:?}");
        assert_eq!(
            replayed.challenge(),
            Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
        );
        assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
        masters_used = cluster.nodes_holding("fapigate:dpop:*");
    }
    assert!(masters_used >= 2, "every record on one master");
}
