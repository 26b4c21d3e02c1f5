//! Issue 14 §3: a real Redis Cluster of three masters on 127.0.0.1, created with
//! `redis-cli --cluster create`: DPoP replay records (one `EVAL` over keys under one hash tag)
//! and shared state work across two gateways through it.

use crate::bank::*;
use crate::support::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Cluster {
    nodes: Vec<(Child, u16)>,
    /// Each node's folder and cluster bus port, to restart it as it was.
    places: Vec<(std::path::PathBuf, u16)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(0)
    }

    /// Three masters with `replicas` replicas each, every replica synced.
    fn start_with(replicas: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("fapigate-redis-cluster-")
            .tempdir()
            .expect("cluster dir");
        let mut nodes = Vec::new();
        let mut places = Vec::new();
        for n in 0..3 * (1 + replicas) {
            let place = dir.path().join(format!("node-{n}"));
            let (child, port, bus) = start_node(&place, None);
            nodes.push((child, port));
            places.push((place, bus));
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(output.status.success(), "cluster create: {output:?}");
        let cluster = Cluster {
            nodes,
            places,
            _dir: dir,
        };
        cluster.wait_until_up();
        let deadline = Instant::now() + START_TIMEOUT;
        while cluster.replicas().len() < 3 * replicas
            || cluster.replicas().iter().any(|(_, port)| {
                !cli(*port, &["info", "replication"]).contains("master_link_status:up")
            })
        {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// The nodes that are replicas now.
    fn replicas(&self) -> Vec<&(Child, u16)> {
        self.nodes
            .iter()
            .filter(|(_, port)| cli(*port, &["role"]).starts_with("slave"))
            .collect()
    }

    /// Every node must agree the cluster is up before a client is pointed at it.
    fn wait_until_up(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for (_, port) in &self.nodes {
            loop {
                if cli(*port, &["cluster", "info"]).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not come up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn kill(&mut self, n: usize) {
        let _ = self.nodes[n].0.kill();
        let _ = self.nodes[n].0.wait();
    }

    /// Starts node `n` again on its ports, with its cluster configuration.
    fn restart(&mut self, n: usize) {
        let (place, bus) = self.places[n].clone();
        let (child, port, _) = start_node(&place, Some((self.nodes[n].1, bus)));
        self.nodes[n] = (child, port);
        self.wait_until_up();
    }

    /// How many masters hold a key matching `pattern`.
    fn nodes_holding(&self, pattern: &str) -> usize {
        self.nodes
            .iter()
            .filter(|(_, port)| !cli(*port, &["--scan", "--pattern", pattern]).is_empty())
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

/// `redis-cli` against the node on `port`.
fn cli(port: u16, args: &[&str]) -> String {
    redis_cli(&["-p".to_string(), port.to_string()], args)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One cluster-enabled `redis-server` on free ports, or on `ports` (client, bus) to restart
/// it: returns it with its client and cluster bus ports. A cluster missing a master keeps
/// serving the slots of the others (`cluster-require-full-coverage no`).
fn start_node(dir: &std::path::Path, ports: Option<(u16, u16)>) -> (Child, u16, u16) {
    let bus = std::cell::Cell::new(0);
    let (child, port) = crate::redis_tcp::start_on_free_ports(dir, |free| {
        let (port, bus_port) = ports.unwrap_or_else(|| (free(), free()));
        bus.set(bus_port);
        let args = [
            "--port".to_string(),
            port.to_string(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-port".into(),
            bus_port.to_string(),
            "--cluster-require-full-coverage".into(),
            "no".into(),
            // A replica's first sync at once, not after the default 5 s wait for more.
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--cluster-config-file".into(),
            dir.join("nodes.conf").display().to_string(),
        ];
        (port, args.to_vec())
    });
    (child, port, bus.get())
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

/// One proof sent to `bank`'s gateway, then the same proof to `b`: both answers.
fn used_at_a_then_b(bank: &Bank, b: &Gateway, token: &str, key: &str) -> (Response, Response) {
    let proof = bank
        .auth
        .proof(key, "GET", &bank.url("/accounts"), token, None);
    let first = accounts_with(&bank.gateway, &bank.pki, "DPoP", token, Some(&proof));
    let replayed = accounts_with(b, &bank.pki, "DPoP", token, Some(&proof));
    (first, replayed)
}

/// Issue 14 §3: one master of three killed: proofs whose records live on it get 503 (never a
/// pass), the others are admitted and still refused as replays at the other gateway; once the
/// master is back, every key works again without restarting a gateway.
#[test]
fn a_killed_cluster_master_fails_its_slots_closed_and_recovers_without_restart() {
    let mut cluster = Cluster::start();
    let bank = Bank::start(Options {
        state_extra: cluster.state(),
        public_url: Some("https://api.bank.test"),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let use_and_replay = |token: &str, key: &str| {
        let (first, replayed) = used_at_a_then_b(&bank, &replica, token, key);
        assert!(
            [401, 503].contains(&replayed.status),
            "a replay was accepted: {replayed:?}"
        );
        first.status
    };
    // The master dies under traffic (every proof sent to both gateways at once).
    let outcomes = crate::redis_chaos::under_load(&bank, &replica, || {
        std::thread::sleep(Duration::from_millis(500));
        cluster.kill(0);
        std::thread::sleep(Duration::from_secs(2));
    });
    assert_eq!(
        crate::redis_chaos::admitted_twice(&outcomes),
        0,
        "{outcomes:?}"
    );
    // Thirty keys: some of their hash tags are on the dead master, some on the live ones (all
    // thirty on one side would be a 1-in-10^5 event).
    let statuses: Vec<u16> = (0..30)
        .map(|_| {
            let (token, key) = bank.dpop_token("tpp", "ES256", None);
            use_and_replay(&token, &key)
        })
        .collect();
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "no key on the dead master: {statuses:?}"
    );
    assert!(
        statuses.contains(&200),
        "the live masters did not serve: {statuses:?}"
    );
    cluster.restart(0);
    let keys: Vec<(String, String)> = (0..10)
        .map(|_| bank.dpop_token("tpp", "ES256", None))
        .collect();
    let deadline = Instant::now() + START_TIMEOUT;
    for (token, key) in &keys {
        while use_and_replay(token, key) != 200 {
            assert!(Instant::now() < deadline, "the gateway did not recover");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// DPOP-11.1-2 across a failover, in a cluster with a replica per master and
/// `redis_replica_acks = 1`: a key's `EVAL` and its `WAIT` go together to the master of its
/// slot, so a proof is admitted only once that master's replica holds its record. With every
/// replica stopped, a proof gets 503 and is still a replay at the other gateway; with them back,
/// proofs pass again.
#[test]
fn dpop_11_1_2_a_cluster_with_replica_acks_admits_a_proof_once_a_replica_holds_its_record() {
    let cluster = Cluster::start_with(1);
    let bank = Bank::start(Options {
        // 1 s for a replica's acknowledgement (half of redis_timeout) on a loaded machine.
        state_extra: format!(
            "{}redis_replica_acks = 1\nredis_timeout = \"2s\"\n",
            cluster.state()
        ),
        public_url: Some("https://api.bank.test"),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let use_and_replay = |token: &str, key: &str| {
        let (first, replayed) = used_at_a_then_b(&bank, &replica, token, key);
        assert_eq!(replayed.status, 401, "{replayed:?}");
        assert_eq!(
            replayed.challenge(),
            Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
        );
        first
    };
    // Ten keys, their records spread over the masters (each key is one hash tag).
    for _ in 0..10 {
        let (token, key) = bank.dpop_token("tpp", "ES256", None);
        let first = use_and_replay(&token, &key);
        assert_eq!(first.status, 200, "{first:?}");
    }
    let replicas = cluster.replicas();
    assert_eq!(replicas.len(), 3);
    for (server, _) in &replicas {
        crate::redis_tcp::signal(server, "-STOP");
    }
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let first = use_and_replay(&token, &key);
    for (server, _) in &replicas {
        crate::redis_tcp::signal(server, "-CONT");
    }
    assert_eq!(
        first.status, 503,
        "admitted with no replica holding the record: {first:?}"
    );
    assert_eq!(first.header("retry-after"), Some("1"));
    let deadline = Instant::now() + START_TIMEOUT;
    while use_and_replay(&token, &key).status != 200 {
        assert!(
            Instant::now() < deadline,
            "proofs not admitted with the replicas back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
