//! DPoP proof replay protection (RFC 9449 §11.1, DPOP-11.1-2/3): each accepted proof's `jti`
//! is recorded, hashed, for the proof acceptance window; a second use is refused. A store that
//! cannot answer refuses the request (503), never accepts it.

use async_trait::async_trait;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Records `key` for `ttl` at least (the memory store keeps every record for its whole
    /// window, which is never shorter); `Ok(true)` if it was not seen before.
    async fn first_use(&self, key: [u8; 32], ttl: Duration) -> Result<bool, StoreUnavailable>;
}

const SHARDS: usize = 16;

/// Two generations of records: a record lives in `current` until the generation turns, then
/// in `previous` for one more window, so it is kept at least `window` and at most twice that.
struct Generations {
    current: HashSet<u128>,
    previous: HashSet<u128>,
    turned: Instant,
}

/// One process's records: 16-byte prefixes of the SHA-256 of each `jti` (a collision needs
/// 2^64 proofs), in sharded hash sets. Nothing is evicted early: when a shard is full the
/// store refuses (503) rather than forget a record a replay could then slip past.
pub struct MemoryReplayStore {
    shards: Vec<Mutex<Generations>>,
    /// Randomly keyed per process.
    shard_key: std::collections::hash_map::RandomState,
    window: Duration,
    per_shard: usize,
}

impl MemoryReplayStore {
    /// `capacity` bounds the records held (both generations); `window` is the longest a proof
    /// is accepted (max age plus clock skew).
    pub fn new(capacity: u64, window: Duration) -> Self {
        // A quarter of slack so an uneven spread over shards does not refuse early.
        let per_shard = ((capacity as usize).saturating_mul(5) / 4)
            .div_ceil(SHARDS)
            .max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Generations {
                    current: HashSet::new(),
                    previous: HashSet::new(),
                    turned: Instant::now(),
                })
            })
            .collect();
        MemoryReplayStore {
            shards,
            shard_key: std::collections::hash_map::RandomState::new(),
            window,
            per_shard,
        }
    }

    fn record(&self, key: &[u8; 32]) -> Result<bool, StoreUnavailable> {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&key[..16]);
        let id = u128::from_le_bytes(prefix);
        // A keyed hash picks the shard, so no client can aim its proofs at one shard and fill it.
        let shard = &self.shards[self.shard_key.hash_one(id) as usize % SHARDS];
        let mut generations = shard.lock().unwrap_or_else(|e| e.into_inner());
        if generations.turned.elapsed() >= self.window {
            let current = std::mem::take(&mut generations.current);
            generations.previous = current;
            generations.turned = Instant::now();
        }
        if generations.previous.contains(&id) || generations.current.contains(&id) {
            return Ok(false);
        }
        if generations.current.len() + generations.previous.len() >= self.per_shard {
            return Err(StoreUnavailable);
        }
        generations.current.insert(id);
        Ok(true)
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn first_use(&self, key: [u8; 32], _window: Duration) -> Result<bool, StoreUnavailable> {
        self.record(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dpop_11_1_2_a_jti_is_accepted_once() {
        let store = MemoryReplayStore::new(100, Duration::from_secs(60));
        let window = Duration::from_secs(60);
        assert_eq!(store.first_use([1; 32], window).await, Ok(true));
        assert_eq!(store.first_use([1; 32], window).await, Ok(false));
        assert_eq!(store.first_use([2; 32], window).await, Ok(true));
    }

    #[tokio::test]
    async fn records_outlive_one_window_and_expire_after_two() {
        let window = Duration::from_millis(50);
        let store = MemoryReplayStore::new(100, window);
        assert_eq!(store.first_use([7; 32], window).await, Ok(true));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            store.first_use([7; 32], window).await,
            Ok(false),
            "kept a full window"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(store.first_use([8; 32], window).await, Ok(true));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            store.first_use([7; 32], window).await,
            Ok(true),
            "gone after two windows"
        );
    }

    #[tokio::test]
    async fn a_full_store_refuses_instead_of_forgetting() {
        let window = Duration::from_secs(60);
        let store = MemoryReplayStore::new(16, window);
        let mut refused = false;
        for i in 0..64u8 {
            let mut key = [i; 32];
            key[16] = 0; // all in one shard
            if store.first_use(key, window).await == Err(StoreUnavailable) {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
