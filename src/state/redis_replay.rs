//! DPoP replay records in Redis: one atomic script per proof, under one hash tag per key so
//! that a cluster keeps a key's records and counts on one master.

use super::replay::{FirstUse, ProofRecord, ReplayStore, StoreUnavailable};
use super::Redis;
use crate::encoding::hex;
use async_trait::async_trait;
use std::time::Duration;

/// DPoP replay records shared by every replica, and each key's count of them.
pub(crate) struct RedisReplayStore {
    pub redis: std::sync::Arc<Redis>,
    /// How many records one key may hold (`replay_entries_per_key`).
    pub per_key: u64,
    /// The longest a record lives: a key's records are counted in epochs of this length, the
    /// current and the previous one.
    pub epoch: Duration,
}

/// Atomically: a replay is seen; else a key that holds its share is refused; else the record
/// is written and counted. KEYS: the record, this epoch's count, the previous epoch's count;
/// ARGV: the record's TTL (ms), the share, a count's TTL (ms). One hash tag, one cluster slot.
const FIRST_USE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local held = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(redis.call('GET', KEYS[3]) or '0')
if held >= tonumber(ARGV[2]) then return 2 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if redis.call('INCR', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1
"#;

#[async_trait]
impl ReplayStore for RedisReplayStore {
    async fn first_use(
        &self,
        proof: ProofRecord<'_>,
        ttl: Duration,
    ) -> Result<FirstUse, StoreUnavailable> {
        let epoch_ms = self.epoch.as_millis().max(1);
        let epoch = crate::clock::unix_millis() as u128 / epoch_ms;
        // The jkt is a base64url hash: a safe hash tag.
        let tag = format!("fapigate:dpop:{{{}}}", proof.jkt);
        let mut command = redis::cmd("EVAL");
        command
            .arg(FIRST_USE)
            .arg(3)
            .arg(format!("{tag}:jti:{}", hex(&proof.key)))
            .arg(format!("{tag}:count:{epoch}"))
            .arg(format!("{tag}:count:{}", epoch.saturating_sub(1)))
            .arg(ttl.as_millis().max(1) as u64)
            .arg(self.per_key)
            .arg((epoch_ms * 2) as u64);
        // A record no replica holds yet would be lost if the master failed over now, and the
        // proof would pass again at the new master: fail closed until the replicas have it.
        match self.redis.run_replicated::<i64>(command).await? {
            (0, _) => Ok(FirstUse::Replayed),
            (1, true) => Ok(FirstUse::First),
            (1, false) => Err(StoreUnavailable),
            _ => Ok(FirstUse::OverShare),
        }
    }
}
