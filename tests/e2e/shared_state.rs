//! Several replicas sharing state through a real Redis: DPoP replay records and nonces cross
//! replicas, and a Redis outage fails closed and heals without a restart.

use crate::bank::*;
use crate::support::*;
use std::time::{Duration, Instant};

const PUBLIC_URL: &str = "https://api.bank.test";

fn with_proof(gateway: &Gateway, pki: &Pki, token: &str, proof: &str) -> Response {
    accounts_with(gateway, pki, "DPoP", token, Some(proof))
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn dpop_11_1_2_a_proof_used_at_one_replica_is_refused_at_another() {
    let redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some(PUBLIC_URL),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    assert_eq!(
        with_proof(&bank.gateway, &bank.pki, &token, &proof).status,
        200
    );
    let replayed = with_proof(&replica, &bank.pki, &token, &proof);
    assert_eq!(replayed.status, 401);
    assert_eq!(
        replayed.challenge(),
        Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
    );
    // A fresh proof works at the replica.
    let fresh = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    assert_eq!(with_proof(&replica, &bank.pki, &token, &fresh).status, 200);
}

#[test]
fn dpop_9_a_nonce_from_one_replica_is_accepted_by_another() {
    let redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some(PUBLIC_URL),
        dpop_nonce: true,
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let first = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(first.status, 401);
    let nonce = first.header("dpop-nonce").expect("nonce").to_string();
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, Some(&nonce));
    assert_eq!(with_proof(&replica, &bank.pki, &token, &proof).status, 200);
}

#[test]
fn redis_down_gives_503_and_not_ready_then_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some(PUBLIC_URL),
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    redis.stop();
    let down = with_proof(&bank.gateway, &bank.pki, &token, &proof);
    assert_eq!(down.status, 503, "never a pass: {down:?}");
    assert_eq!(down.header("retry-after"), Some("1"));
    assert!(wait_until(|| admin_get(bank.gateway.admin_port, "/readyz")
        .0
        == 503));
    redis.resume();
    assert!(wait_until(|| admin_get(bank.gateway.admin_port, "/readyz")
        .0
        == 200));
    let pid = bank.gateway.child.id();
    assert!(wait_until(|| {
        let proof = bank
            .auth
            .proof(&key, "GET", &bank.url("/accounts"), &token, None);
        with_proof(&bank.gateway, &bank.pki, &token, &proof).status == 200
    }));
    assert_eq!(bank.gateway.child.id(), pid);
}

/// Issue 13 §5: eviction would silently forget replay records (a used proof accepted again):
/// a Redis whose `maxmemory-policy` may evict is refused at start-up, naming the policy.
#[test]
fn dpop_11_1_a_redis_that_may_evict_records_is_refused_at_start_up() {
    let evicting = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        ..Options::default()
    });
    let output = run_with_changes(&bank, |text| text.replace(&redis.url(), &evicting.url()));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Redis maxmemory-policy is \"allkeys-lru\""),
        "{stderr}"
    );
}

/// Issue 13 §5: one key holds at most `replay_entries_per_key` records of the shared store;
/// beyond, its proofs get 429 while other clients' proofs are still recorded.
#[test]
fn dpop_11_1_one_key_cannot_fill_the_shared_replay_store() {
    let redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        replay_entries_per_key: Some(3),
        ..Options::default()
    });
    crate::hostile::one_key_holds_its_share(&bank, 3);
}

/// `fapigate run` on the running bank's configuration changed by `change`, on any free ports:
/// what a start-up that is meant to fail prints.
pub fn run_with_changes(
    bank: &Bank,
    change: impl FnOnce(String) -> String,
) -> std::process::Output {
    let text = std::fs::read_to_string(&bank.gateway.config).unwrap();
    let text: String = text
        .lines()
        .map(|line| match line.split_once(" = \"127.0.0.1:") {
            Some((key, _)) if key == "addr" || key == "plain_addr" => {
                format!("{key} = \"127.0.0.1:0\"\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    let config = bank.gateway.config.with_file_name("changed.toml");
    std::fs::write(&config, change(text)).unwrap();
    // Output to files (a pipe could fill up), and a gateway that starts after all is stopped
    // rather than waited for.
    let (out, err) = (
        config.with_file_name("changed.out"),
        config.with_file_name("changed.err"),
    );
    let mut child = std::process::Command::new(BINARY)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}
