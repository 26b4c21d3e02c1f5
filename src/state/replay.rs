//! DPoP proof replay protection (RFC 9449 §11.1, DPOP-11.1-2/3): each accepted proof's `jti`
//! is recorded, hashed, for the proof acceptance window; a second use is refused. A store that
//! cannot answer refuses the request (503), never accepts it.

use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

/// One accepted proof, as the store keys it.
#[derive(Debug, Clone, Copy)]
pub struct ProofRecord<'a> {
    /// The `jkt` of the key that signed the proof: its records are counted against its share.
    pub jkt: &'a str,
    /// SHA-256 of the thumbprint and the `jti` (RFC 9449 §11.1: a jti is unique per key).
    pub key: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstUse {
    /// Not seen before: recorded.
    First,
    /// Seen before: a replay.
    Replayed,
    /// The key holds its whole share of the store: not recorded.
    OverShare,
    /// The store holds all it can (the memory store never forgets a record early): not
    /// recorded, and no proof is accepted until records age out.
    Full,
}

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Records `proof` for `ttl` at least (the memory store keeps every record for its whole
    /// window, which is never shorter).
    async fn first_use(
        &self,
        proof: ProofRecord<'_>,
        ttl: Duration,
    ) -> Result<FirstUse, StoreUnavailable>;
}

const SHARDS: usize = 16;

/// Two generations of entries: an entry lives in `current` until the epoch turns, then in
/// `previous` for one more, so it is kept at least one window and at most two. Every shard
/// turns on the same epochs (windows counted from one start), so a key's record count and
/// its records expire together.
struct Generations<T> {
    current: T,
    previous: T,
    epoch: u64,
}

impl<T: Default> Generations<T> {
    fn new() -> Self {
        Generations {
            current: T::default(),
            previous: T::default(),
            epoch: 0,
        }
    }

    fn turn_to(&mut self, epoch: u64) {
        if self.epoch == epoch {
            return;
        }
        self.previous = if self.epoch + 1 == epoch {
            std::mem::take(&mut self.current)
        } else {
            self.current = T::default();
            T::default()
        };
        self.epoch = epoch;
    }
}

type Records = Generations<HashSet<u128>>;
type Counts = Generations<HashMap<u64, u64>>;

/// One process's records: 16-byte prefixes of the SHA-256 of each `jti` (a collision needs
/// 2^64 proofs), in sharded hash sets. Nothing is evicted early: when a shard is full the
/// store refuses (503) rather than forget a record a replay could then slip past, and no key
/// may hold more than `per_key` records, so one client cannot fill it for everyone.
pub struct MemoryReplayStore {
    records: Vec<Mutex<Records>>,
    /// Records held per key (a keyed hash of its `jkt`), sharded by key.
    counts: Vec<Mutex<Counts>>,
    /// Randomly keyed per process: no client can aim its proofs at one shard and fill it.
    shard_key: std::collections::hash_map::RandomState,
    start: Instant,
    window: Duration,
    per_shard: usize,
    per_key: u64,
}

impl MemoryReplayStore {
    /// `capacity` bounds the records held (both generations), `per_key` those of one key;
    /// `window` is the longest a proof is accepted (max age plus clock skew).
    pub fn new(capacity: u64, per_key: u64, window: Duration) -> Self {
        // A quarter of slack so an uneven spread over shards does not refuse early.
        let per_shard = ((capacity as usize).saturating_mul(5) / 4)
            .div_ceil(SHARDS)
            .max(1);
        MemoryReplayStore {
            records: (0..SHARDS)
                .map(|_| Mutex::new(Generations::new()))
                .collect(),
            counts: (0..SHARDS)
                .map(|_| Mutex::new(Generations::new()))
                .collect(),
            shard_key: std::collections::hash_map::RandomState::new(),
            start: Instant::now(),
            window: window.max(Duration::from_millis(1)),
            per_shard,
            per_key: per_key.max(1),
        }
    }

    /// The records held now (both generations) and the most the store holds.
    pub(crate) fn fill(&self) -> (u64, u64) {
        let held: usize = self
            .records
            .iter()
            .map(|shard| {
                let records = shard.lock().unwrap_or_else(|e| e.into_inner());
                records.current.len() + records.previous.len()
            })
            .sum();
        (held as u64, (self.per_shard * SHARDS) as u64)
    }

    /// Records `proof` at `now` (the clock is a parameter so tests can set it).
    fn record(&self, proof: ProofRecord<'_>, now: Instant) -> Result<FirstUse, StoreUnavailable> {
        let elapsed = now.saturating_duration_since(self.start);
        let epoch = (elapsed.as_nanos() / self.window.as_nanos()) as u64;
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&proof.key[..16]);
        let id = u128::from_le_bytes(prefix);
        let shard = &self.records[self.shard_key.hash_one(id) as usize % SHARDS];
        let mut records = shard.lock().unwrap_or_else(|e| e.into_inner());
        records.turn_to(epoch);
        if records.previous.contains(&id) || records.current.contains(&id) {
            return Ok(FirstUse::Replayed);
        }
        if records.current.len() + records.previous.len() >= self.per_shard {
            return Ok(FirstUse::Full);
        }
        // Always taken after a record shard, never before: no lock-order inversion.
        let owner = self.shard_key.hash_one(proof.jkt);
        let mut counts = self.counts[owner as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.turn_to(epoch);
        let held = counts.current.get(&owner).copied().unwrap_or(0)
            + counts.previous.get(&owner).copied().unwrap_or(0);
        if held >= self.per_key {
            return Ok(FirstUse::OverShare);
        }
        *counts.current.entry(owner).or_insert(0) += 1;
        records.current.insert(id);
        Ok(FirstUse::First)
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn first_use(
        &self,
        proof: ProofRecord<'_>,
        _ttl: Duration,
    ) -> Result<FirstUse, StoreUnavailable> {
        self.record(proof, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(jkt: &str, key: [u8; 32]) -> ProofRecord<'_> {
        ProofRecord { jkt, key }
    }

    #[tokio::test]
    async fn dpop_11_1_2_a_jti_is_accepted_once() {
        let store = MemoryReplayStore::new(100, 100, Duration::from_secs(60));
        let window = Duration::from_secs(60);
        let first_use = |key| store.first_use(proof("k", key), window);
        assert_eq!(first_use([1; 32]).await, Ok(FirstUse::First));
        assert_eq!(first_use([1; 32]).await, Ok(FirstUse::Replayed));
        assert_eq!(first_use([2; 32]).await, Ok(FirstUse::First));
    }

    #[test]
    fn records_outlive_one_window_and_expire_after_two() {
        let window = Duration::from_secs(10);
        let store = MemoryReplayStore::new(100, 100, window);
        let at = |seconds| store.start + Duration::from_secs(seconds);
        // Written late in its epoch: still there a whole window later.
        assert_eq!(
            store.record(proof("k", [7; 32]), at(9)),
            Ok(FirstUse::First)
        );
        assert_eq!(
            store.record(proof("k", [7; 32]), at(19)),
            Ok(FirstUse::Replayed)
        );
        // Gone once a second epoch began.
        assert_eq!(
            store.record(proof("k", [7; 32]), at(20)),
            Ok(FirstUse::First)
        );
        // An idle shard that skipped epochs forgets both generations.
        assert_eq!(
            store.record(proof("k", [7; 32]), at(45)),
            Ok(FirstUse::First)
        );
    }

    #[tokio::test]
    async fn a_full_store_refuses_instead_of_forgetting() {
        let window = Duration::from_secs(60);
        let store = MemoryReplayStore::new(16, 1000, window);
        let mut refused = false;
        for i in 0..64u8 {
            let mut key = [i; 32];
            key[16] = 0;
            if store.first_use(proof(&format!("k{i}"), key), window).await == Ok(FirstUse::Full) {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn the_fill_counts_the_records_held() {
        let window = Duration::from_secs(10);
        let store = MemoryReplayStore::new(192, 100, window);
        let at = |seconds| store.start + Duration::from_secs(seconds);
        assert_eq!(
            store.fill(),
            (0, 240),
            "capacity plus the shards' quarter of slack"
        );
        for i in 0..3u8 {
            assert_eq!(
                store.record(proof("k", [i; 32]), at(1)),
                Ok(FirstUse::First)
            );
        }
        assert_eq!(
            store.record(proof("k", [0; 32]), at(1)),
            Ok(FirstUse::Replayed)
        );
        assert_eq!(store.fill().0, 3, "a replay adds nothing");
    }

    /// Issue 13 §5: one key that sends proofs as fast as it can fills its share, not the
    /// store: other keys' proofs are still recorded, and its own are again once its records
    /// age out.
    #[test]
    fn one_key_holds_at_most_its_share() {
        let window = Duration::from_secs(10);
        let store = MemoryReplayStore::new(1000, 10, window);
        let at = |seconds| store.start + Duration::from_secs(seconds);
        let key = |i: u32| {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            key
        };
        let outcomes: Vec<_> = (0..50)
            .map(|i| store.record(proof("greedy", key(i)), at(1)))
            .collect();
        assert_eq!(outcomes[..10], [Ok(FirstUse::First); 10]);
        assert_eq!(outcomes[10..], [Ok(FirstUse::OverShare); 40]);
        for i in 0..12 {
            let other = store.record(proof("other", key(1000 + i)), at(2));
            let expected = if i < 10 {
                FirstUse::First
            } else {
                FirstUse::OverShare
            };
            assert_eq!(other, Ok(expected), "{i}");
        }
        // Still the greedy key's share in the next epoch: its records are still held.
        let next = store.record(proof("greedy", key(60)), at(12));
        assert_eq!(next, Ok(FirstUse::OverShare));
        // A proof refused for the share was not recorded: once its records aged out, it is
        // accepted, not taken for a replay.
        let again = store.record(proof("greedy", key(20)), at(21));
        assert_eq!(again, Ok(FirstUse::First));
    }
}
