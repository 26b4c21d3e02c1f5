//! State shared between replicas (`[state] backend = "redis"`): DPoP replay records, the
//! DPoP nonce key and introspection results. A Redis node (through a reconnecting connection
//! manager) or a Redis Cluster. Every call has a deadline; a Redis that cannot answer makes
//! the caller fail closed (replay, nonces) or fall back (introspection cache), never pass.

use crate::policy::RedisPolicy;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use std::time::Duration;

pub(crate) mod rate_limit;
mod redis_client;
mod redis_replay;
pub(crate) mod replay;
use redis_client::{certificates, classify, sentinel_client, ConnectError};
pub(crate) use redis_replay::RedisReplayStore;
use replay::StoreUnavailable;

#[derive(Clone)]
enum Connection {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
    /// To the master Sentinel named; dropped on a connection error or `READONLY` (a failover)
    /// so that the next call asks Sentinel again.
    Sentinel(redis::aio::MultiplexedConnection),
}

enum Target {
    Node(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// When the next connection attempt may run: after each failure the wait doubles, from 100 ms
/// to at most 5 s, with a jitter of -25% to +25% so replicas do not retry in step.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    not_before: Option<std::time::Instant>,
}

impl Backoff {
    fn may_attempt(&self, now: std::time::Instant) -> bool {
        self.not_before.is_none_or(|at| now >= at)
    }

    /// Records a failure at `now`; `jitter` is a random byte. Returns the wait.
    fn failed(&mut self, now: std::time::Instant, jitter: u8) -> Duration {
        let base = Duration::from_millis(100)
            .saturating_mul(1 << self.failures.min(6))
            .min(Duration::from_secs(5));
        self.failures = self.failures.saturating_add(1);
        // 0.75 to 1.25 times the base.
        let base_ms = base.as_millis() as u64;
        let wait = Duration::from_millis(base_ms * (765 + 2 * u64::from(jitter)) / 1020);
        self.not_before = Some(now + wait);
        wait
    }
}

/// One connection to Redis and its attempts to make it.
#[derive(Default)]
struct Lane {
    connection: std::sync::RwLock<Option<Connection>>,
    /// One connection attempt at a time, and none during the backoff after a failure.
    attempts: tokio::sync::Mutex<Backoff>,
}

impl Lane {
    fn current(&self) -> Option<Connection> {
        self.connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a failed command: a Sentinel connection is dropped when the master may have
    /// moved (the others reconnect by themselves).
    fn after_failure(&self, connection: &Connection, error: &redis::RedisError) {
        let moved = error.is_io_error()
            || error.is_connection_dropped()
            || error.kind() == redis::ErrorKind::ReadOnly;
        if moved {
            self.forget_sentinel_master(connection);
        }
    }

    fn forget_sentinel_master(&self, connection: &Connection) {
        if matches!(connection, Connection::Sentinel(_)) {
            *self.connection.write().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

pub struct Redis {
    target: Target,
    /// Every command but the replicated writes.
    shared: Lane,
    /// The replay writes followed by `WAIT`: Redis reads nothing more from a client held in
    /// `WAIT`, so on the shared connection a slow or stopped replica would stall every other
    /// use of Redis (token cache, rate limits, the health check) behind them.
    replicated: Lane,
    timeout: Duration,
    /// `redis_replica_acks`.
    replica_acks: u32,
    /// The trust configuration, named in a failed handshake's error.
    tls_files: String,
}

impl Redis {
    /// A client for a node URL, or for cluster nodes; nothing connects until first use, so a
    /// gateway starts (not ready) while Redis is down. `rediss://` nodes are verified with
    /// `tls` (its files were checked when the configuration was compiled).
    pub fn new(policy: &RedisPolicy) -> Result<Redis, String> {
        let RedisPolicy {
            url,
            cluster_nodes,
            timeout,
            tls,
            sentinel,
            auth,
            replica_acks,
        } = policy;
        let (url, sentinel, auth, timeout) =
            (url.as_str(), sentinel.as_ref(), auth.as_ref(), *timeout);
        let target = if let Some(sentinel) = sentinel {
            Target::Sentinel(tokio::sync::Mutex::new(sentinel_client(
                sentinel, auth, tls,
            )?))
        } else if cluster_nodes.is_empty() {
            let client = if url.starts_with("rediss://") {
                redis::Client::build_with_tls(url, certificates(tls)?)
            } else {
                redis::Client::open(url)
            };
            Target::Node(client.map_err(|e| format!("redis_url: {e}"))?)
        } else {
            let mut builder = redis::cluster::ClusterClient::builder(cluster_nodes.to_vec())
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if cluster_nodes.iter().any(|n| n.starts_with("rediss://")) {
                builder = builder.certs(certificates(tls)?);
            }
            if let Some(auth) = auth {
                builder = builder.password(auth.password.clone());
                if let Some(user) = &auth.username {
                    builder = builder.username(user.clone());
                }
            }
            Target::Cluster(
                builder
                    .build()
                    .map_err(|e| format!("redis_cluster_nodes: {e}"))?,
            )
        };
        let mut files: Vec<String> = Vec::new();
        if let Some(ca) = &tls.ca_file {
            files.push(format!("state.redis_ca_file ({})", ca.display()));
        } else {
            files.push("the system's root certificates (state.redis_ca_file is not set)".into());
        }
        if let Some((cert, _)) = &tls.client {
            files.push(format!("state.redis_client_cert ({})", cert.display()));
        }
        Ok(Redis {
            target,
            shared: Lane::default(),
            replicated: Lane::default(),
            timeout,
            replica_acks: *replica_acks,
            tls_files: files.join(" and "),
        })
    }

    /// A new connection, refused when Redis may evict the gateway's records.
    async fn connect(&self) -> Result<Connection, ConnectError> {
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
                Target::Sentinel(client) => client
                    .lock()
                    .await
                    .get_async_connection()
                    .await
                    .map(Connection::Sentinel),
            }
        };
        let unreachable = |e: String| ConnectError::Unreachable(e);
        let connection = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| unreachable("Redis did not answer in time".into()))?
            .map_err(|e| classify(&e))?;
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        let info = Request::Command(info);
        let reply = tokio::time::timeout(self.timeout, query::<redis::Value>(&connection, info))
            .await
            .map_err(|_| unreachable("Redis did not answer INFO in time".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        refuse_eviction(&reply).map_err(ConnectError::Evicting)?;
        Ok(connection)
    }

    /// The connection, made on first use. Fails fast instead of queueing: while one attempt
    /// runs, and during the backoff after a failed one, callers get `StoreUnavailable` at once,
    /// so no request waits more than one `redis_timeout`.
    async fn connection(&self, lane: &Lane) -> Result<Connection, StoreUnavailable> {
        if let Some(connection) = lane.current() {
            return Ok(connection);
        }
        let Ok(mut attempts) = lane.attempts.try_lock() else {
            return Err(StoreUnavailable);
        };
        if let Some(connection) = lane.current() {
            return Ok(connection);
        }
        let now = std::time::Instant::now();
        if !attempts.may_attempt(now) {
            return Err(StoreUnavailable);
        }
        match self.connect().await {
            Ok(connection) => {
                *attempts = Backoff::default();
                *lane.connection.write().unwrap_or_else(|e| e.into_inner()) =
                    Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                let mut byte = [0u8; 1];
                let _ = aws_lc_rs::rand::fill(&mut byte);
                let wait = attempts.failed(std::time::Instant::now(), byte[0]);
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "Redis cannot be used");
                Err(StoreUnavailable)
            }
        }
    }

    /// At start-up, on a runtime of its own: a Redis that may evict records is a start-up
    /// error; one that cannot be reached is not (the gateway starts, not ready, and checks
    /// again when it connects).
    pub fn check_at_start(&self) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("state: {e}"))?;
        match runtime.block_on(self.probe()) {
            Ok(()) => Ok(()),
            Err(ConnectError::Evicting(error)) => Err(format!("state: {error}")),
            Err(ConnectError::Untrusted(error)) => Err(format!(
                "state: the TLS handshake with Redis failed ({error}); check {}",
                self.tls_files
            )),
            Err(ConnectError::Unreachable(error)) => {
                tracing::warn!(%error, "Redis is unreachable at start-up; not ready until it is");
                Ok(())
            }
        }
    }

    /// One plain connection attempt and `INFO memory`: unlike the reconnecting connection,
    /// it reports why a TLS handshake failed instead of retrying until the deadline.
    async fn probe(&self) -> Result<(), ConnectError> {
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        let attempt = async {
            match &self.target {
                Target::Node(client) => {
                    let mut node = client.get_multiplexed_async_connection().await?;
                    info.query_async::<redis::Value>(&mut node).await
                }
                Target::Cluster(client) => {
                    let mut cluster = client.get_async_connection().await?;
                    info.query_async::<redis::Value>(&mut cluster).await
                }
                Target::Sentinel(client) => {
                    let mut master = client.lock().await.get_async_connection().await?;
                    info.query_async::<redis::Value>(&mut master).await
                }
            }
        };
        let patience = self.timeout.max(Duration::from_secs(5));
        let reply = tokio::time::timeout(patience, attempt)
            .await
            .map_err(|_| ConnectError::Unreachable("Redis did not answer in time".into()))?
            .map_err(|e| classify(&e))?;
        refuse_eviction(&reply).map_err(ConnectError::Evicting)
    }

    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, StoreUnavailable> {
        self.send(&self.shared, Request::Command(command)).await
    }

    /// `command`, a write, and then `WAIT` for `redis_replica_acks` replicas, in one round trip
    /// on one connection: its reply, and whether that many replicas hold the write. `WAIT`
    /// waits for at most half of `redis_timeout`, so the pair fits in one.
    pub(crate) async fn run_replicated<T: redis::FromRedisValue>(
        &self,
        command: redis::Cmd,
    ) -> Result<(T, bool), StoreUnavailable> {
        if self.replica_acks == 0 {
            return Ok((self.run(command).await?, true));
        }
        let wait_ms = (self.timeout.as_millis() / 2).max(1) as u64;
        let mut pipeline = redis::pipe();
        pipeline
            .add_command(command)
            .cmd("WAIT")
            .arg(self.replica_acks)
            .arg(wait_ms);
        let (reply, acks): (T, u64) = self
            .send(&self.replicated, Request::Pipeline(pipeline))
            .await?;
        let replicated = acks >= u64::from(self.replica_acks);
        if !replicated {
            tracing::warn!(
                acknowledged = acks,
                redis_replica_acks = self.replica_acks,
                "a shared-state write was not acknowledged by enough replicas in time"
            );
        }
        Ok((reply, replicated))
    }

    async fn send<T: redis::FromRedisValue>(
        &self,
        lane: &Lane,
        request: Request,
    ) -> Result<T, StoreUnavailable> {
        let connection = self.connection(lane).await?;
        let call = query::<T>(&connection, request);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                tracing::warn!(%error, "Redis command failed");
                lane.after_failure(&connection, &error);
                Err(StoreUnavailable)
            }
            Err(_) => {
                tracing::warn!("Redis command timed out");
                // A master that stopped answering may have been failed over.
                lane.forget_sentinel_master(&connection);
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

    /// The health check: Redis answers on the shared connection. It also makes the
    /// replicated writes' connection when there is none, so that the first proofs after
    /// ready do not find it being made (they would get 503 meanwhile). Not a `PING` on it:
    /// that would queue behind a `WAIT`.
    pub async fn ping(&self) -> bool {
        if self.replica_acks > 0 && self.replicated.current().is_none() {
            let _ = self.connection(&self.replicated).await;
        }
        self.run::<String>(redis::cmd("PING")).await.is_ok()
    }
}

/// One command, or several sent together on one connection (their replies in order).
enum Request {
    Command(redis::Cmd),
    Pipeline(redis::Pipeline),
}

impl Request {
    async fn send<T: redis::FromRedisValue>(
        &self,
        connection: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<T> {
        match self {
            Request::Command(command) => command.query_async(connection).await,
            Request::Pipeline(pipeline) => pipeline.query_async(connection).await,
        }
    }
}

async fn query<T: redis::FromRedisValue>(
    connection: &Connection,
    request: Request,
) -> redis::RedisResult<T> {
    match connection.clone() {
        Connection::Node(mut node) => request.send(&mut node).await,
        Connection::Cluster(mut cluster) => request.send(&mut cluster).await,
        Connection::Sentinel(mut master) => request.send(&mut master).await,
    }
}

/// Any eviction may drop a replay record (a used proof becomes usable again) or the nonce key:
/// only `noeviction` is accepted, on every node that answered `INFO memory`.
fn refuse_eviction(reply: &redis::Value) -> Result<(), String> {
    let mut texts = Vec::new();
    collect_text(reply, &mut texts);
    let policies: Vec<&str> = texts
        .iter()
        .flat_map(|text| text.lines())
        .filter_map(|line| line.trim().strip_prefix("maxmemory_policy:"))
        .collect();
    if policies.is_empty() {
        return Err(
            "Redis INFO memory names no maxmemory_policy: eviction cannot be ruled out".into(),
        );
    }
    match policies.iter().find(|p| **p != "noeviction") {
        Some(policy) => Err(format!(
            "Redis maxmemory-policy is \"{policy}\": it may evict replay records, so a used \
             DPoP proof could be accepted again; set maxmemory-policy noeviction"
        )),
        None => Ok(()),
    }
}

fn collect_text(value: &redis::Value, texts: &mut Vec<String>) {
    match value {
        redis::Value::BulkString(bytes) => texts.push(String::from_utf8_lossy(bytes).into()),
        redis::Value::SimpleString(text) | redis::Value::VerbatimString { text, .. } => {
            texts.push(text.clone())
        }
        redis::Value::Array(values) | redis::Value::Set(values) => {
            values.iter().for_each(|v| collect_text(v, texts))
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_text(v, texts)),
        _ => {}
    }
}

/// The largest value read back from Redis: the gateway's own values (introspection verdicts,
/// the nonce key) are far smaller.
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Issue 14 §4: after failures, attempts wait a doubling, bounded, jittered backoff.
    #[test]
    fn failed_connects_back_off_doubling_to_five_seconds_with_jitter() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert!(backoff.may_attempt(now));
        // A jitter byte of 0 gives 0.75 times the base.
        let waits: Vec<Duration> = (0..8).map(|_| backoff.failed(now, 0)).collect();
        let millis: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(millis, [75, 150, 300, 600, 1200, 2400, 3750, 3750]);
        assert!(!backoff.may_attempt(now + Duration::from_millis(3749)));
        assert!(backoff.may_attempt(now + Duration::from_millis(3750)));
        let low = Backoff::default().failed(now, 0);
        let high = Backoff::default().failed(now, 255);
        assert_eq!((low.as_millis(), high.as_millis()), (75, 125));
    }
}
