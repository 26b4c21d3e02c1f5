//! State shared between replicas (`[state] backend = "redis"`): DPoP replay records, the
//! DPoP nonce key and introspection results. A Redis node (through a reconnecting connection
//! manager) or a Redis Cluster. Every call has a deadline; a Redis that cannot answer makes
//! the caller fail closed (replay, nonces) or fall back (introspection cache), never pass.

use crate::binding::replay::{ReplayStore, StoreUnavailable};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use std::time::Duration;

#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

enum Target {
    Node(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

pub struct Redis {
    target: Target,
    connection: tokio::sync::OnceCell<Connection>,
    timeout: Duration,
}

impl Redis {
    /// A client for a node URL, or for cluster nodes; nothing connects until first use, so a
    /// gateway starts (not ready) while Redis is down.
    pub fn new(url: &str, cluster_nodes: &[String], timeout: Duration) -> Result<Redis, String> {
        let target = if cluster_nodes.is_empty() {
            Target::Node(redis::Client::open(url).map_err(|e| format!("redis_url: {e}"))?)
        } else {
            Target::Cluster(
                redis::cluster::ClusterClient::builder(cluster_nodes.to_vec())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()
                    .map_err(|e| format!("redis_cluster_nodes: {e}"))?,
            )
        };
        Ok(Redis {
            target,
            connection: tokio::sync::OnceCell::new(),
            timeout,
        })
    }

    async fn connection(&self) -> Result<Connection, StoreUnavailable> {
        let connect = async {
            match &self.target {
                Target::Node(client) => {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(self.timeout)
                        .set_response_timeout(self.timeout)
                        .set_number_of_retries(1);
                    ConnectionManager::new_with_config(client.clone(), config)
                        .await
                        .map(Connection::Node)
                }
                Target::Cluster(client) => {
                    client.get_async_connection().await.map(Connection::Cluster)
                }
            }
        };
        let connection = self
            .connection
            .get_or_try_init(|| async {
                tokio::time::timeout(self.timeout, connect)
                    .await
                    .map_err(|_| StoreUnavailable)?
                    .map_err(|error| {
                        tracing::warn!(%error, "Redis is unreachable");
                        StoreUnavailable
                    })
            })
            .await?;
        Ok(connection.clone())
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, StoreUnavailable> {
        let connection = self.connection().await?;
        let call = async move {
            match connection {
                Connection::Node(mut node) => command.query_async::<T>(&mut node).await,
                Connection::Cluster(mut cluster) => command.query_async::<T>(&mut cluster).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                tracing::warn!(%error, "Redis command failed");
                Err(StoreUnavailable)
            }
            Err(_) => {
                tracing::warn!("Redis command timed out");
                Err(StoreUnavailable)
            }
        }
    }

    /// `SET key value NX PX ttl`: `true` when the key was not there.
    pub async fn set_new(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, StoreUnavailable> {
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let reply: Option<String> = self.run(command).await?;
        Ok(reply.is_some())
    }

    /// `SET key value NX` with no expiry: `true` when the key was not there.
    pub async fn set_new_forever(&self, key: &str, value: &[u8]) -> Result<bool, StoreUnavailable> {
        let mut command = redis::cmd("SET");
        command.arg(key).arg(value).arg("NX");
        let reply: Option<String> = self.run(command).await?;
        Ok(reply.is_some())
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreUnavailable> {
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.run::<()>(command).await
    }

    /// The value of `key`, if it exists and is at most [`MAX_VALUE_BYTES`] long. Read with
    /// `GETRANGE`, so a value someone made huge is never transferred whole; a longer (or empty)
    /// value counts as absent, and the caller falls back as if it were.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreUnavailable> {
        let mut command = redis::cmd("GETRANGE");
        command.arg(key).arg(0).arg(MAX_VALUE_BYTES);
        let value: Vec<u8> = self.run(command).await?;
        if value.len() > MAX_VALUE_BYTES {
            tracing::warn!(
                key,
                "a shared-state value is larger than any the gateway writes; ignored"
            );
            return Ok(None);
        }
        Ok((!value.is_empty()).then_some(value))
    }

    pub async fn ping(&self) -> bool {
        self.run::<String>(redis::cmd("PING")).await.is_ok()
    }
}

/// The largest value read back from Redis: the gateway's own values (introspection verdicts,
/// the nonce key) are far smaller.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Hex of a key hash, for Redis key names.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// DPoP replay records shared by every replica.
pub struct RedisReplayStore {
    pub redis: std::sync::Arc<Redis>,
}

#[async_trait]
impl ReplayStore for RedisReplayStore {
    async fn first_use(&self, key: [u8; 32], window: Duration) -> Result<bool, StoreUnavailable> {
        let name = format!("fapigate:dpop:jti:{}", hex(&key));
        self.redis.set_new(&name, b"1", window).await
    }
}
