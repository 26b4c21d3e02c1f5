//! The state shared by every request and every service of one gateway process: the running
//! policy (swapped whole on reload), the metrics and readiness.

use crate::config;
use crate::policy::Policy;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Gateway {
    policy: ArcSwap<Policy>,
    config_path: PathBuf,
    pub metrics: Metrics,
    ready: AtomicBool,
    /// Round-robin position over upstream addresses.
    next_upstream: AtomicUsize,
}

impl Gateway {
    pub fn new(policy: Policy, config_path: PathBuf, metrics: Metrics) -> Self {
        Gateway {
            policy: ArcSwap::from_pointee(policy),
            config_path,
            metrics,
            ready: AtomicBool::new(false),
            next_upstream: AtomicUsize::new(0),
        }
    }

    /// The policy new requests run under.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        self.metrics.ready.set(i64::from(ready));
    }

    pub fn next_upstream_slot(&self) -> usize {
        self.next_upstream.fetch_add(1, Ordering::Relaxed)
    }

    /// Re-reads the configuration file. A valid file replaces the policy for new requests
    /// (requests in flight finish under the one they started with); an invalid one is
    /// reported and the running policy stays. Listener and TLS settings need a restart.
    pub fn reload(&self) -> Result<(), config::ConfigErrors> {
        match config::load(&self.config_path) {
            Ok(policy) => {
                let running = self.policy();
                if policy.listener.addr != running.listener.addr
                    || policy.admin_addr != running.admin_addr
                    || policy.listener.plain_addr != running.listener.plain_addr
                {
                    tracing::warn!("listener addresses changed: they take effect after a restart");
                }
                self.policy.store(Arc::new(policy));
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                Ok(())
            }
            Err(errors) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                Err(errors)
            }
        }
    }
}
