//! Process wiring: the Pingora server with the proxy listeners, the admin listener and the
//! lifecycle task (readiness, SIGHUP reload). SIGTERM drains for `server.drain_delay`
//! (`/readyz` 503, still accepting), then Pingora's graceful shutdown closes the listeners and
//! requests in flight finish within `server.shutdown_grace`.

use crate::admin::AdminApp;
use crate::enforce::Engine;
use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::proxy::listener_tls::ListenerTls;
use crate::proxy::{tls, FapiProxy};
use crate::sockets::Sockets;
use crate::startup::StartError;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{ListenFds, RuntimeOpts, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Starts the gateway; returns only on a startup error (Pingora exits the process itself).
/// Once every listener answers, the bound addresses are logged and, with `ready_file`, written
/// there as JSON (a configured port 0 is reported as the port the kernel chose).
pub fn run(
    policy: Policy,
    config_path: PathBuf,
    ready_file: Option<PathBuf>,
) -> Result<(), StartError> {
    use StartError::{Configuration, Unavailable};
    let metrics =
        Arc::new(crate::telemetry::Metrics::new().map_err(|e| Unavailable(e.to_string()))?);
    let has_tls = policy.listener.tls.is_some();
    let listener_tls = match &policy.listener.tls {
        Some(tls_policy) => Some(ListenerTls::load(tls_policy).map_err(Configuration)?),
        None => None,
    };
    let tls_settings = match &listener_tls {
        Some(tls) => Some(tls.settings().map_err(Configuration)?),
        None => None,
    };
    crate::certificates::record(&metrics, &policy);
    let mut wanted = vec![policy.listener.addr, policy.admin_addr];
    wanted.extend(policy.listener.plain_addr);
    let sockets = Sockets::bind(&wanted).map_err(Unavailable)?;
    let bound = Bound {
        listener: sockets.bound()[0],
        admin: sockets.bound()[1],
        plain: sockets.bound().get(2).copied(),
    };
    let fds = sockets.into_listen_fds();

    let conf = ServerConf {
        threads: policy.server.threads,
        grace_period_seconds: Some(policy.server.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(policy.server.shutdown_timeout.as_secs().max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // What `fapigate check` also builds: its errors are the configuration's.
    let local = crate::binding::LocalState::new(&policy).map_err(Configuration)?;
    let engine = Engine::new(policy, metrics.clone(), &local)?;
    if let Some(redis) = &engine.redis {
        redis.check_at_start().map_err(Unavailable)?;
    }
    let gateway = Arc::new(Gateway::new(engine, local, config_path, metrics));

    let mut http =
        pingora::proxy::http_proxy(&server.configuration, FapiProxy::new(gateway.clone()));
    let idle = gateway.engine().policy.listener.idle_timeout;
    http.server_options = Some({
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(idle);
        options
    });
    let mut proxy = Service::new(
        "fapigate".to_string(),
        crate::proxy::deadline::Deadlines::new(http, gateway.clone()),
    );
    match tls_settings {
        Some(settings) => proxy.add_tls_with_settings(&bound.listener.to_string(), None, settings),
        None => proxy.add_tcp(&bound.listener.to_string()),
    }
    if let Some(plain) = bound.plain {
        proxy.add_tcp(&plain.to_string());
    }
    let mut admin = Service::new("fapigate admin".to_string(), AdminApp::new(gateway.clone()));
    admin.add_tcp(&bound.admin.to_string());

    let lifecycle = background_service(
        "fapigate lifecycle",
        Lifecycle {
            gateway: gateway.clone(),
            bound,
            tls: has_tls,
            listener_tls,
            ready_file,
        },
    );

    server.add_service(OnSockets::new(proxy, fds.clone()));
    server.add_service(OnSockets::new(admin, fds));
    server.add_service(lifecycle);
    tracing::info!(
        listener = %bound.listener,
        admin = %bound.admin,
        routes = gateway.engine().policy.routes.len(),
        "fapigate starting"
    );
    let drain = Drain {
        gateway: gateway.clone(),
        delay: gateway.engine().policy.server.drain_delay,
    };
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(drain),
    });
    crate::access_log::flush();
    std::process::exit(0)
}

/// Pingora's shutdown signals, with a drain before a graceful stop: on SIGTERM `/readyz`
/// answers 503 at once while the listeners keep accepting for `server.drain_delay` (a load
/// balancer or Kubernetes endpoint still sends for a while after the pod is told to stop);
/// then Pingora stops accepting and gives requests in flight `server.shutdown_grace`.
/// During the delay SIGINT stops at once and a second SIGTERM ends the delay; SIGQUIT is
/// Pingora's graceful upgrade.
struct Drain {
    gateway: Arc<Gateway>,
    delay: Duration,
}

#[async_trait]
impl pingora::server::ShutdownSignalWatch for Drain {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        use pingora::server::ShutdownSignal;
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut terminate), Ok(mut interrupt), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot listen for SIGTERM, SIGINT and SIGQUIT: stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = interrupt.recv() => return ShutdownSignal::FastShutdown,
            _ = terminate.recv() => {}
        }
        // Readiness stays down from here on, whatever reload or start-up probe follows.
        self.gateway.start_draining();
        tracing::info!(
            drain_delay_ms = self.delay.as_millis() as u64,
            "SIGTERM: /readyz answers 503; still accepting until the drain delay ends"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => ShutdownSignal::GracefulTerminate,
            _ = interrupt.recv() => ShutdownSignal::FastShutdown,
            _ = terminate.recv() => ShutdownSignal::GracefulTerminate,
        }
    }
}

/// The addresses the listeners are bound to.
#[derive(Clone, Copy)]
struct Bound {
    listener: SocketAddr,
    admin: SocketAddr,
    plain: Option<SocketAddr>,
}

impl Bound {
    /// The listener first (TLS when configured), then the plain listener and the admin one.
    fn probes(&self) -> impl Iterator<Item = (SocketAddr, bool)> + '_ {
        [
            (Some(self.listener), true),
            (self.plain, false),
            (Some(self.admin), false),
        ]
        .into_iter()
        .filter_map(|(addr, first)| addr.map(|a| (loopback_for(a), first)))
    }

    fn json(&self) -> String {
        serde_json::json!({
            "listener": self.listener.to_string(),
            "plain": self.plain.map(|a| a.to_string()),
            "admin": self.admin.to_string(),
            "pid": std::process::id(),
        })
        .to_string()
    }
}

/// A Pingora listening service that takes its sockets from the table [`Sockets`] filled,
/// instead of binding them itself.
struct OnSockets<S> {
    service: S,
    fds: ListenFds,
}

impl<S> OnSockets<S> {
    fn new(service: S, fds: ListenFds) -> Self {
        OnSockets { service, fds }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for OnSockets<S> {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        self.service
            .start_service(
                Some(self.fds.clone()),
                shutdown,
                listeners_per_fd,
                ready_notifier,
            )
            .await
    }

    fn name(&self) -> &str {
        self.service.name()
    }

    fn threads(&self) -> Option<usize> {
        self.service.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.service.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.service.listen_addresses()
    }
}

/// Writes `text` to `path` whole: a reader sees the file complete or not at all.
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

/// A wildcard listen address is probed on loopback.
fn loopback_for(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

struct Lifecycle {
    gateway: Arc<Gateway>,
    bound: Bound,
    tls: bool,
    /// The listener's certificate, key, client CAs and CRLs, reloaded live.
    listener_tls: Option<Arc<ListenerTls>>,
    ready_file: Option<PathBuf>,
}

/// How often the listener's TLS files are looked at for a change on disk.
const TLS_WATCH: Duration = Duration::from_secs(2);

impl Lifecycle {
    /// Serves the TLS files `policy` names from the next handshake, or says why not.
    fn reload_tls(&self, policy: &Policy) -> Result<(), String> {
        let (Some(tls), Some(tls_policy)) = (&self.listener_tls, &policy.listener.tls) else {
            return Ok(());
        };
        let outcome = tls.reload(tls_policy);
        let result = if outcome.is_ok() { "ok" } else { "error" };
        self.gateway
            .metrics
            .tls_reloads
            .with_label_values(&[result])
            .inc();
        outcome
    }

    /// Names of upstreams whose `resolve_every` has passed are resolved again (a legacy core
    /// behind DNS failover moves without a restart).
    async fn resolve_upstreams(&self) {
        let engine = self.gateway.engine();
        let now = std::time::Instant::now();
        for upstream in &engine.policy.upstreams {
            if !self.gateway.upstreams.due(upstream, now) {
                continue;
            }
            let found = crate::upstreams::resolve(&upstream.targets).await;
            if self.gateway.upstreams.store(upstream, found, now) {
                let addrs: Vec<String> = self
                    .gateway
                    .upstreams
                    .addresses(upstream)
                    .iter()
                    .map(|a| a.to_string())
                    .collect();
                tracing::info!(upstream = %upstream.id, addresses = %addrs.join(","), "upstream names resolved to new addresses");
            }
        }
    }

    /// A change on disk (no SIGHUP): only the TLS files are read again.
    fn watch_tls(&self) {
        let engine = self.gateway.engine();
        let (Some(tls), Some(tls_policy)) = (&self.listener_tls, &engine.policy.listener.tls)
        else {
            return;
        };
        if !tls.changed_on_disk(tls_policy) {
            return;
        }
        match self.reload_tls(&engine.policy) {
            Ok(()) => {
                crate::certificates::record(&self.gateway.metrics, &engine.policy);
                tracing::info!("listener TLS files changed on disk: reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "listener TLS files changed on disk but do not load; the serving ones stay")
            }
        }
    }
}

/// Whether `addr` accepts a connection (and, for `tls`, completes a handshake).
async fn probe(addr: SocketAddr, tls: bool) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if !tls {
        return true;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::fapi_crypto_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(tls::ProbeVerifier::new()))
                    .with_no_client_auth()
            });
    let Ok(config) = config else { return false };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    match tokio::time::timeout(Duration::from_secs(2), connector.connect(name, stream)).await {
        Ok(Ok(mut stream)) => {
            use tokio::io::AsyncWriteExt;
            let _ = stream.shutdown().await;
            true
        }
        _ => false,
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: reload is unavailable");
                None
            }
        };
        // Ready once every listener accepts connections (the TLS one: completes a handshake,
        // so the probe is not an aborted connection in the logs).
        for (addr, first) in self.bound.probes() {
            while !probe(addr, first && self.tls).await {
                if *shutdown.borrow() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Redis is connected before the gateway says ready: otherwise the first requests race
        // the first health check's connection attempt and get 503 while it runs (requests do
        // not queue behind an attempt). Redis down stays no reason to be unready.
        if let Some(redis) = self.gateway.engine().redis.clone() {
            self.gateway.set_state_ok(redis.ping().await);
        }
        self.gateway.announce_ready();
        if let Some(path) = &self.ready_file {
            if let Err(e) = write_atomically(path, &self.bound.json()) {
                tracing::error!(file = %path.display(), error = %e, "cannot write the ready file");
            }
        }
        tracing::info!(
            listener = %self.bound.listener,
            plain = self.bound.plain.map(|a| a.to_string()),
            admin = %self.bound.admin,
            "fapigate ready"
        );
        let mut health = tokio::time::interval(Duration::from_secs(1));
        let mut watch = tokio::time::interval(TLS_WATCH);
        loop {
            tokio::select! {
                _ = watch.tick() => self.watch_tls(),
                _ = health.tick() => {
                    self.resolve_upstreams().await;
                    if let Some(redis) = self.gateway.engine().redis.clone() {
                        self.gateway.set_state_ok(redis.ping().await);
                    } else {
                        self.gateway.set_state_ok(true);
                    }
                }
                Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => None } } => {
                    if self.gateway.is_draining() {
                        tracing::warn!("SIGHUP during the drain: not reloaded");
                        continue;
                    }
                    crate::notify::reloading();
                    match self.gateway.reload(|policy| self.reload_tls(policy)) {
                        Ok(()) => tracing::info!(routes = self.gateway.engine().policy.routes.len(), "configuration reloaded"),
                        Err(errors) => tracing::error!(errors = %errors, "configuration reload refused; the running policy stays"),
                    }
                    self.gateway.announce_ready();
                }
                _ = shutdown.changed() => {
                    self.gateway.start_draining();
                    tracing::info!("shutting down: draining requests in flight");
                    return;
                }
            }
        }
    }
}
