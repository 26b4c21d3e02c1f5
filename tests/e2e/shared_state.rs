//! Several replicas sharing state through a real Redis: DPoP replay records and nonces cross
//! replicas, and a Redis outage fails closed and heals without a restart.

use crate::bank::*;
use crate::support::*;
use std::time::{Duration, Instant};

const PUBLIC_URL: &str = "https://api.bank.test";

fn with_proof(gateway: &Gateway, pki: &Pki, token: &str, proof: &str) -> Response {
    accounts_with(gateway, pki, "DPoP", token, Some(proof))
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
fn redis_down_gives_503_but_stays_ready_then_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some(PUBLIC_URL),
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    bank.metrics_showing("fapigate_shared_state_up 1");
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    redis.stop();
    let down = with_proof(&bank.gateway, &bank.pki, &token, &proof);
    assert_eq!(down.status, 503, "never a pass: {down:?}");
    assert_eq!(down.header("retry-after"), Some("1"));
    // Issue 14 §4: the replica stays in the load balancer (routes without Redis still work);
    // the outage is a gauge.
    bank.metrics_showing("fapigate_shared_state_up 0");
    assert_eq!(admin_get(bank.gateway.admin_port, "/readyz").0, 200);
    redis.resume();
    bank.metrics_showing("fapigate_shared_state_up 1");
    let pid = bank.gateway.child.id();
    assert!(wait_for(|| {
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

/// Issue 14 §2: a verdict edited in Redis is not believed. An opaque token whose consent
/// covers acc-9 is introspected at one replica; its shared verdict is rewritten to cover
/// acc-1; the other replica (empty local cache) finds the MAC broken, asks the AS again and
/// refuses the balances of acc-1.
#[test]
fn a_forged_shared_verdict_is_not_believed() {
    let (redis, bank, _keys) = bank_sharing_verdicts();
    let replica = bank.replica("replica-b");
    let consent = serde_json::json!([{"type": "account_information",
        "actions": ["read_balances"], "accounts": ["acc-9"]}]);
    let (opaque, key) = bank.dpop_token("tpp-opaque", "ES256", Some(consent));
    let path = "/accounts/acc-1/balances";
    assert_eq!(bank.dpop_get(path, &opaque, &key, &[]).status, 403);
    let name = redis.cli(&["--scan", "--pattern", "fapigate:*:introspection:*"]);
    assert!(
        name.starts_with("fapigate:api.bank.test:introspection:"),
        "{name}"
    );
    let value = redis.cli(&["GET", &name]);
    let forged = value.replace("\"acc-9\"", "\"acc-1\"");
    assert_ne!(forged, value, "the verdict names the consented account");
    assert_eq!(redis.cli(&["SET", &name, &forged, "KEEPTTL"]), "OK");
    let before = bank.auth.introspections();
    let proof = bank.auth.proof(&key, "GET", &bank.url(path), &opaque, None);
    let args = [
        "-H".to_string(),
        format!("Authorization: DPoP {opaque}"),
        "-H".to_string(),
        format!("DPoP: {proof}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let response = curl_tls(&replica, &bank.pki, path, &args);
    assert_eq!(
        response.status, 403,
        "the forged verdict was believed: {response:?}"
    );
    assert_eq!(
        bank.auth.introspections(),
        before + 1,
        "the AS was asked again"
    );
    metrics_showing(
        replica.admin_port,
        "fapigate_shared_state_rejected_total{kind=\"introspection_verdict\"} 1",
    );
}

/// A bank on a real Redis whose verdicts are shared under a verdict key (kept in the returned
/// folder).
fn bank_sharing_verdicts() -> (RedisServer, Bank, tempfile::TempDir) {
    let redis = RedisServer::start();
    let keys = tempfile::tempdir().unwrap();
    let verdict_key = keys.path().join("verdict.key");
    write_private(&verdict_key, &"v".repeat(32));
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some(PUBLIC_URL),
        state_extra: format!("verdict_key_file = \"{}\"\n", verdict_key.display()),
        ..Options::default()
    });
    (redis, bank, keys)
}

/// Issue 14 §2: two gateways on one Redis and one namespace that accept different audiences:
/// the verdict one shared for its audience is not believed by the other, which asks the AS
/// itself and refuses a token that is not for it.
#[test]
fn a_verdict_shared_for_one_audience_is_not_believed_by_a_gateway_of_another() {
    let (_redis, bank, _keys) = bank_sharing_verdicts();
    let other = bank.replica_with("other-audience", |text| {
        text.replace(
            &format!("audience = \"{PUBLIC_URL}\""),
            "audience = \"https://other.bank.test\"",
        )
    });
    let (opaque, key) = bank.dpop_token("tpp-opaque", "ES256", None);
    assert_eq!(bank.dpop_get("/accounts", &opaque, &key, &[]).status, 200);
    let before = bank.auth.introspections();
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &opaque, None);
    let response = with_proof(&other, &bank.pki, &opaque, &proof);
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(
        response.challenge(),
        Some(
            dpop_challenge(
                "invalid_token",
                "the access token is not for this resource server"
            )
            .as_str()
        )
    );
    assert_eq!(
        bank.auth.introspections(),
        before + 1,
        "the other gateway asked the AS"
    );
    metrics_showing(
        other.admin_port,
        "fapigate_shared_state_rejected_total{kind=\"introspection_verdict\"} 1",
    );
}
