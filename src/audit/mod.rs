//! The audit trail of signed exchanges (MS2-PRIV): what a bank shows when a TPP disputes a
//! payment. No bodies and no tokens: digests and signatures only.
//!
//! One trail per process and file, kept across reloads (requests still running on the old
//! engine and new ones on the next append to the same chain). A signed request takes a place
//! in the trail's bounded queue before the upstream is called, so the disk being slow turns
//! into waiting or a 503 before anything happens, never into a response without its record;
//! the response is released once its record is written (and synced, with
//! `fsync = "every-record"`).

pub(crate) mod chain;
mod reopen;
mod writer;

use crate::policy::{AuditPolicy, FsyncPolicy, OnFull};
use crate::signing::keys::SigningKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
pub use writer::head_file_path;

#[derive(serde::Serialize)]
pub struct Record<'a> {
    pub time: u64,
    pub interaction_id: &'a str,
    pub route: &'a str,
    pub client_id: Option<&'a str>,
    pub request_digest: Option<&'a str>,
    pub request_signature_input: Option<&'a str>,
    pub request_signature: Option<&'a str>,
    pub response_status: u16,
    pub response_digest: Option<&'a str>,
    pub response_signature_input: Option<&'a str>,
    pub response_signature: Option<&'a str>,
}

/// The key that signs checkpoints (the response-signing key) and its JOSE algorithm.
#[derive(Clone)]
pub struct CheckpointKey {
    pub key: Arc<SigningKey>,
    pub alg: &'static str,
}

impl CheckpointKey {
    pub fn new(key: Arc<SigningKey>) -> CheckpointKey {
        let alg = key.jose_alg();
        CheckpointKey { key, alg }
    }
}

/// Why a signed exchange cannot be recorded: refused before the upstream is asked (503,
/// `Full`), or its response withheld after (502, `Write`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditError {
    /// The queue stayed full (`on_full = "refuse"`, or longer than `wait_max`).
    Full,
    /// The record could not be written.
    Write(String),
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditError::Full => f.write_str("the audit queue is full"),
            AuditError::Write(e) => write!(f, "the audit record was not written: {e}"),
        }
    }
}

pub struct AuditTrail {
    path: PathBuf,
    queue: tokio::sync::mpsc::Sender<writer::Message>,
    on_full: OnFull,
    checkpoint_key: Arc<Mutex<Option<CheckpointKey>>>,
    /// The settings the writer was started with, to tell a reload that changes them.
    settings: String,
}

/// How long a signed response waits for its record to be written.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A place in the queue, held while the upstream is called.
pub struct Slot<'a>(tokio::sync::mpsc::Permit<'a, writer::Message>);

impl AuditTrail {
    /// Takes a place in the queue: waits up to `wait_max`, or (`refuse`) not at all.
    pub async fn reserve(&self) -> Result<Slot<'_>, AuditError> {
        let permit = match self.on_full {
            OnFull::Refuse => self.queue.try_reserve().map_err(|_| AuditError::Full)?,
            OnFull::Wait(bound) => tokio::time::timeout(bound, self.queue.reserve())
                .await
                .map_err(|_| AuditError::Full)?
                .map_err(|_| AuditError::Write("the audit writer stopped".into()))?,
        };
        Ok(Slot(permit))
    }
}

impl Slot<'_> {
    /// Hands the record to the writer and waits until it is written.
    pub async fn record(self, record: &Record<'_>) -> Result<(), AuditError> {
        let fields = match serde_json::to_value(record) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => return Err(AuditError::Write("the record is not a JSON object".into())),
        };
        let (done, written) = tokio::sync::oneshot::channel();
        self.0.send(writer::Message::Record { fields, done });
        // A disk that hangs (a stalled network volume) must not hold the request forever.
        match tokio::time::timeout(ACK_TIMEOUT, written).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(AuditError::Write(error)),
            Ok(Err(_)) => Err(AuditError::Write("the audit writer stopped".into())),
            Err(_) => Err(AuditError::Write(format!(
                "not written within {ACK_TIMEOUT:?}"
            ))),
        }
    }
}

/// The process's trails: the one for a file is made once and handed to every engine after.
/// Why no trail: its settings (what `check` reports), or the file (held by another process,
/// unreadable: outside the configuration).
#[derive(Debug)]
pub enum TrailError {
    Settings(String),
    Open(String),
}

#[derive(Default)]
pub struct Trails {
    current: Mutex<Option<Arc<AuditTrail>>>,
    /// `fapigate check`: the settings are checked, no file is opened or locked.
    dry: bool,
}

impl Trails {
    pub fn dry() -> Trails {
        Trails {
            current: Mutex::new(None),
            dry: true,
        }
    }

    /// The trail for `policy`: the running one when it writes the same file (its checkpoint
    /// key follows the reload), otherwise a new writer. `None` for a dry run.
    pub fn trail_for(
        &self,
        policy: &AuditPolicy,
        checkpoint_key: Option<CheckpointKey>,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<Option<Arc<AuditTrail>>, TrailError> {
        let key = policy
            .key_file
            .as_ref()
            .map(|path| chain::MacKey::load(path))
            .transpose()
            .map_err(TrailError::Settings)?;
        if self.dry {
            return Ok(None);
        }
        let settings = format!("{policy:?}");
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(trail) = current.as_ref().filter(|t| t.path == policy.path) {
            if trail.settings != settings {
                tracing::warn!(
                    "audit settings changed: the running writer of {} keeps its own until a \
                     restart (one chain per file)",
                    policy.path.display()
                );
            }
            *trail
                .checkpoint_key
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = checkpoint_key;
            return Ok(Some(trail.clone()));
        }
        let shared_key = Arc::new(Mutex::new(checkpoint_key));
        let writer = writer::Writer::open(writer::Settings {
            path: policy.path.clone(),
            fsync_every_batch: policy.fsync == FsyncPolicy::EveryRecord,
            key,
            checkpoint_every: policy.checkpoint_every,
            checkpoint_interval: policy.checkpoint_interval,
            checkpoint_key: shared_key.clone(),
            rotate_size: policy.rotate_size,
            rotate_daily: policy.rotate_daily,
            records: metrics.audit_records.clone(),
            checkpoints: metrics.audit_checkpoints.clone(),
        })
        .map_err(TrailError::Open)?;
        let (queue, receiver) = tokio::sync::mpsc::channel(policy.queue);
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| TrailError::Open(format!("audit writer: {e}")))?;
        std::thread::Builder::new()
            .name("fapigate-audit".into())
            .spawn(move || writer.run(receiver, clock))
            .map_err(|e| TrailError::Open(format!("audit writer: {e}")))?;
        let trail = Arc::new(AuditTrail {
            path: policy.path.clone(),
            queue,
            on_full: policy.on_full,
            checkpoint_key: shared_key,
            settings,
        });
        *current = Some(trail.clone());
        Ok(Some(trail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &std::path::Path, on_full: OnFull) -> AuditPolicy {
        AuditPolicy {
            path: dir.join("audit.jsonl"),
            fsync: FsyncPolicy::Interval,
            key_file: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            queue: 1,
            on_full,
            rotate_size: None,
            rotate_daily: false,
        }
    }

    fn record() -> Record<'static> {
        Record {
            time: 1,
            interaction_id: "i",
            route: "r",
            client_id: None,
            request_digest: None,
            request_signature_input: None,
            request_signature: None,
            response_status: 200,
            response_digest: None,
            response_signature_input: None,
            response_signature: None,
        }
    }

    #[tokio::test]
    async fn ms2_priv_a_full_queue_refuses_or_waits_its_bound_before_the_upstream_is_called() {
        let metrics = crate::telemetry::Metrics::new().unwrap();
        for (on_full, waits) in [
            (OnFull::Refuse, Duration::ZERO),
            (
                OnFull::Wait(Duration::from_millis(50)),
                Duration::from_millis(50),
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let trails = Trails::default();
            let trail = trails
                .trail_for(&policy(dir.path(), on_full), None, &metrics)
                .unwrap()
                .unwrap();
            // The one place is held (a signed request waiting for its upstream).
            let held = trail.reserve().await.unwrap();
            let started = std::time::Instant::now();
            assert_eq!(trail.reserve().await.err(), Some(AuditError::Full));
            assert!(started.elapsed() >= waits);
            // Once it is used, the next request gets a place, and both are written.
            let record = record();
            held.record(&record).await.unwrap();
            trail
                .reserve()
                .await
                .unwrap()
                .record(&record)
                .await
                .unwrap();
            let verified = chain::verify(&dir.path().join("audit.jsonl"), &Default::default());
            assert_eq!(verified.unwrap().records, 2);
        }
    }

    #[tokio::test]
    async fn ms2_priv_a_checkpoint_follows_its_interval_when_traffic_stops() {
        let metrics = crate::telemetry::Metrics::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut policy = policy(dir.path(), OnFull::Refuse);
        policy.checkpoint_interval = Duration::from_millis(100);
        let trails = Trails::default();
        let trail = trails.trail_for(&policy, None, &metrics).unwrap().unwrap();
        trail
            .reserve()
            .await
            .unwrap()
            .record(&record())
            .await
            .unwrap();
        // No other record comes: the writer wakes by itself and attests the one it has.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let path = dir.path().join("audit.jsonl");
        loop {
            let verified = chain::verify(&path, &Default::default()).unwrap();
            if verified.checkpoints == 1 {
                assert_eq!((verified.records, verified.unattested), (2, 0));
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no checkpoint");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // With a queue of one and `refuse`, the writer's own wake-ups never take the place.
        for _ in 0..5 {
            trail
                .reserve()
                .await
                .unwrap()
                .record(&record())
                .await
                .unwrap();
        }
    }

    #[test]
    fn ms2_priv_a_reload_keeps_the_writer_of_the_same_file() {
        let metrics = crate::telemetry::Metrics::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let trails = Trails::default();
        let policy = policy(dir.path(), OnFull::Refuse);
        let first = trails.trail_for(&policy, None, &metrics).unwrap().unwrap();
        let again = trails.trail_for(&policy, None, &metrics).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Trails::dry()
            .trail_for(&policy, None, &metrics)
            .unwrap()
            .is_none());
    }
}
