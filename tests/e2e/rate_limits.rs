//! Issue 16 item 5: per-TPP fair-usage limits (`[[rate_limit]]`), 429 with `Retry-After` and
//! the RFC 6585 body, counted per client; under real load, per client, and shared by
//! replicas through Redis.

use crate::bank::{Bank, Options};
use crate::support::*;
use std::time::Instant;

/// A bounded wrk run against an auth = "none" route limited by peer address: what passes is
/// the burst plus the rate over the run, never more; the rest is 429, never a hang.
#[test]
fn rate_limit_by_peer_under_real_load_admits_the_burst_and_the_rate_only() {
    let env = Env::with_routes(
        "\n[[rate_limit]]\nid = \"per-peer\"\nby = \"peer_ip\"\nrate = \"20/s\"\nburst = 20\nroutes = [\"status\"]\n",
    );
    let url = format!("http://127.0.0.1:{}/status", env.gateway.plain_port);
    let started = Instant::now();
    let output = std::process::Command::new("wrk")
        .args(["-t1", "-c4", "-d2s", "--timeout", "2s", &url])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let elapsed = started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("Non-2xx or 3xx responses"), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    let passed = env.upstream.requests_for("/status");
    let most = 20 + (20.0 * elapsed).ceil() as usize;
    assert!(
        (20..=most).contains(&passed),
        "{passed} passed in {elapsed:.2} s (at most {most}):\n{report}"
    );
    let metrics = admin_get(env.gateway.admin_port, "/metrics").1;
    assert!(
        metrics.contains("fapigate_rate_limited_total{client=\"other\",limit=\"per-peer\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fapigate_rejections_total{reason=\"rate_limited\",route=\"status\"}"),
        "{metrics}"
    );
}

/// Each TPP has its own cell: one that used up its share is refused, another is not.
#[test]
fn rate_limit_by_client_id_counts_each_tpp_apart() {
    let bank = Bank::start(Options {
        extra: "\n[[rate_limit]]\nid = \"tpp-fair-usage\"\nby = \"client_id\"\nrate = \"1000/s\"\nroutes = [\"accounts\"]\n[rate_limit.clients]\ntpp = { rate = \"3/m\" }\n",
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    for _ in 0..3 {
        assert_eq!(bank.dpop_get("/accounts", &token, &key, &[]).status, 200);
    }
    let refused = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(refused.status, 429, "{}", refused.body);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "one request every 20 s: {retry}");
    // RFC 6585 §4: the body says why; no challenge (the token is fine).
    assert_eq!(refused.json()["error"], "rate_limit_exceeded");
    assert_eq!(
        refused.json()["error_description"],
        format!("rate limit tpp-fair-usage (3 per 60 s, burst 3) reached; retry after {retry} s")
    );
    assert_eq!(refused.challenge(), None);
    assert_eq!(bank.upstream.requests_for("/accounts"), 3);
    // Another TPP, its own cell (the default rate).
    let (other, other_key) = bank.dpop_token("tpp-opaque", "ES256", None);
    assert_eq!(
        bank.dpop_get("/accounts", &other, &other_key, &[]).status,
        200
    );
    bank.metrics_showing("fapigate_rate_limited_total{client=\"tpp\",limit=\"tpp-fair-usage\"} 1");
}

/// `shared = true`: the replicas count one cell in Redis, so a TPP's burst is the burst of the
/// deployment, not of each replica.
#[test]
fn rate_limit_shared_through_redis_holds_across_replicas() {
    let redis = RedisServer::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some("https://api.bank.test"),
        extra: "\n[[rate_limit]]\nid = \"shared\"\nby = \"client_id\"\nrate = \"3/m\"\nshared = true\nroutes = [\"accounts\"]\n",
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let at_replica = |gateway: &Gateway| {
        let proof = bank
            .auth
            .proof(&key, "GET", &bank.url("/accounts"), &token, None);
        accounts_with(gateway, &bank.pki, "DPoP", &token, Some(&proof))
    };
    assert_eq!(at_replica(&bank.gateway).status, 200);
    assert_eq!(at_replica(&replica).status, 200);
    assert_eq!(at_replica(&bank.gateway).status, 200);
    assert_eq!(at_replica(&replica).status, 429);
    assert_eq!(at_replica(&bank.gateway).status, 429);
}
