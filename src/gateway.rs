//! The state shared by every request and every service of one gateway process: the running
//! engine (policy plus runtime, swapped whole on reload), the metrics and readiness.

use crate::binding::LocalState;
use crate::config;
use crate::enforce::Engine;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(crate) struct Gateway {
    engine: ArcSwap<Engine>,
    /// Replay records and the nonce key, kept across reloads.
    local: Arc<LocalState>,
    config_path: PathBuf,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// SIGTERM came: readiness never comes back.
    draining: AtomicBool,
    /// Whether the shared state (Redis) answered the last health check.
    state_ok: AtomicBool,
    /// Upstream addresses: round robin, passive health, names resolved again.
    pub(crate) upstreams: crate::upstreams::Upstreams,
}

impl Gateway {
    pub(crate) fn new(
        engine: Engine,
        local: Arc<LocalState>,
        config_path: PathBuf,
        metrics: Arc<Metrics>,
    ) -> Self {
        Gateway {
            engine: ArcSwap::from_pointee(engine),
            local,
            config_path,
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            state_ok: AtomicBool::new(true),
            upstreams: crate::upstreams::Upstreams::default(),
        }
    }

    /// The engine new requests run under.
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Listeners bound and a policy loaded. Not the shared state: a Redis blip would take
    /// every replica out of the load balancer at once, although routes that need no Redis
    /// (mTLS-bound tokens) still work; its health is `fapigate_shared_state_up`.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Ready (`/readyz` 200, `READY=1` to the service manager), unless a drain has begun: a
    /// SIGTERM before the start-up probes finish, or a SIGHUP during the drain, must not put
    /// a stopping gateway back into the load balancer.
    pub(crate) fn announce_ready(&self) {
        // Set, then look: a drain that began in between is seen and wins (SeqCst both sides).
        self.set_ready(true);
        if self.is_draining() {
            self.set_ready(false);
            return;
        }
        crate::notify::ready();
    }

    /// Out of the load balancer for good (SIGTERM); the service manager is told once.
    pub(crate) fn start_draining(&self) {
        let first = !self.draining.swap(true, Ordering::SeqCst);
        self.set_ready(false);
        if first {
            crate::notify::stopping();
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.ready.set(i64::from(self.is_ready()));
    }

    pub(crate) fn set_state_ok(&self, ok: bool) {
        let was = self.state_ok.swap(ok, Ordering::AcqRel);
        if was != ok {
            if ok {
                tracing::info!("shared state (Redis) reachable again");
            } else {
                tracing::error!("shared state (Redis) unreachable: DPoP requests get 503");
            }
        }
        self.metrics.shared_state_up.set(i64::from(ok));
    }

    /// The Prometheus exposition, with the gauges read at scrape time brought up to date.
    pub(crate) fn render_metrics(&self) -> Vec<u8> {
        let (held, capacity) = self.local.replay_fill();
        self.metrics.replay_store_entries.set(held as i64);
        self.metrics.replay_store_capacity.set(capacity as i64);
        self.metrics
            .access_log_dropped
            .inc_by(crate::access_log::take_dropped());
        let now = std::time::Instant::now();
        self.metrics.upstream_address_up.reset();
        for upstream in &self.engine().policy.upstreams {
            for addr in self.upstreams.addresses(upstream).iter() {
                let up = !self.upstreams.is_out(*addr, now);
                self.metrics
                    .upstream_address_up
                    .with_label_values(&[&upstream.id, &addr.to_string()])
                    .set(i64::from(up));
            }
        }
        self.metrics.render()
    }

    /// Re-reads the configuration file. A valid file replaces the engine for new requests
    /// (requests in flight finish under the one they started with); an invalid one is
    /// reported and the running engine stays. Listener addresses need a restart.
    /// `before_swap` sees the new policy last and may still refuse it (the listener's TLS
    /// files are read there: a broken certificate keeps the old configuration as a whole).
    pub(crate) fn reload(
        &self,
        before_swap: impl FnOnce(&crate::policy::Policy) -> Result<(), String>,
    ) -> Result<(), String> {
        let outcome = config::load(&self.config_path)
            .map_err(|errors| errors.to_string())
            .and_then(|policy| {
                Engine::new(policy, self.metrics.clone(), &self.local).map_err(|e| e.to_string())
            })
            .and_then(|engine| before_swap(&engine.policy).map(|()| engine));
        match outcome {
            Ok(engine) => {
                let running = self.engine();
                let (new, old) = (&engine.policy, &running.policy);
                if new.listener.addr != old.listener.addr
                    || new.admin_addr != old.admin_addr
                    || new.listener.plain_addr != old.listener.plain_addr
                {
                    tracing::warn!("listener addresses changed: they take effect after a restart");
                }
                crate::certificates::record(&self.metrics, &engine.policy);
                self.engine.store(Arc::new(engine));
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                self.metrics.last_reload_successful.set(1);
                self.metrics
                    .last_reload_timestamp
                    .set(crate::clock::unix_seconds() as i64);
                Ok(())
            }
            Err(errors) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                self.metrics.last_reload_successful.set(0);
                Err(errors)
            }
        }
    }
}
