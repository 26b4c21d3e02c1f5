//! DPoP proof replay protection (RFC 9449 §11.1, DPOP-11.1-2/3): each accepted proof's `jti`
//! is recorded, hashed, for the proof acceptance window; a second use is refused. A store that
//! cannot answer refuses the request (503), never accepts it.

use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUnavailable;

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Records `key` for `window`; `Ok(true)` if it was not seen before.
    async fn first_use(&self, key: [u8; 32], window: Duration) -> Result<bool, StoreUnavailable>;
}

/// One process's records, in a bounded moka cache.
pub struct MemoryReplayStore {
    seen: moka::future::Cache<[u8; 32], ()>,
}

impl MemoryReplayStore {
    /// `window` is the longest a proof is accepted (max age plus clock skew).
    pub fn new(capacity: u64, window: Duration) -> Self {
        MemoryReplayStore {
            seen: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
        }
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn first_use(&self, key: [u8; 32], _window: Duration) -> Result<bool, StoreUnavailable> {
        Ok(self.seen.entry(key).or_insert(()).await.is_fresh())
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
}
