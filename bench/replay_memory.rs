//! Memory of the in-process DPoP replay store: RSS growth for N records (default 1 M).
//! `cargo run --release --example replay-memory [N]`. Target: at most 200 MiB for 1 M.

use fapigate::stages::{FirstUse, MemoryReplayStore, ProofRecord, ReplayStore};
use sha2::Digest;
use std::time::Duration;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let window = Duration::from_secs(70);
    let store = MemoryReplayStore::new(count, count, window);
    // Records of 10,000 keys, so the per-key counts are part of the measure.
    let jkts: Vec<String> = (0..10_000).map(|k| format!("key-{k:05}")).collect();
    let proof = |i: u64| ProofRecord {
        jkt: &jkts[(i % 10_000) as usize],
        key: sha2::Sha256::digest(i.to_le_bytes()).into(),
    };
    let before = rss_kib();
    for i in 0..count {
        let fresh = store.first_use(proof(i), window).await;
        assert_eq!(fresh, Ok(FirstUse::First), "record {i}");
    }
    // moka applies inserts lazily: let it settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    let still_refused = store.first_use(proof(0), window).await == Ok(FirstUse::Replayed);
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    println!(
        "{count} replay records: RSS {:.1} MiB -> {:.1} MiB, growth {growth_mib:.1} MiB ({:.0} bytes/record); first record still refused: {still_refused}; target <= 200 MiB: {}",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / count as f64,
        if growth_mib <= 200.0 { "met" } else { "missed" }
    );
}
