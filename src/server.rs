//! Process wiring: the Pingora server with the proxy listeners, the admin listener and the
//! lifecycle task (readiness, SIGHUP reload). SIGTERM is Pingora's graceful shutdown: the
//! listeners close, requests in flight finish within `server.shutdown_grace`.

use crate::admin::AdminApp;
use crate::enforce::Engine;
use crate::gateway::Gateway;
use crate::policy::Policy;
use crate::proxy::{tls, FapiProxy};
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Starts the gateway; returns only on a startup error (Pingora exits the process itself).
pub fn run(policy: Policy, config_path: PathBuf) -> Result<(), String> {
    let metrics = Arc::new(crate::telemetry::Metrics::new().map_err(|e| e.to_string())?);
    let has_tls = policy.listener.tls.is_some();
    let tls_settings = match &policy.listener.tls {
        Some(tls_policy) => Some(tls::listener_settings(tls_policy)?),
        None => None,
    };
    let mut addrs = vec![policy.listener.addr, policy.admin_addr];
    addrs.extend(policy.listener.plain_addr);
    for addr in &addrs {
        // Binding once here turns "address in use" into a clear error before anything starts.
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }

    let conf = ServerConf {
        threads: policy.server.threads,
        grace_period_seconds: Some(policy.server.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(policy.server.shutdown_timeout.as_secs().max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listener = (
        policy.listener.addr,
        policy.listener.plain_addr,
        policy.admin_addr,
    );
    let local = crate::binding::LocalState::new(&policy)?;
    let engine = Engine::new(policy, metrics.clone(), &local)?;
    let gateway = Arc::new(Gateway::new(engine, local, config_path, metrics));

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        FapiProxy::new(gateway.clone()),
        "fapigate",
    );
    match tls_settings {
        Some(settings) => proxy.add_tls_with_settings(&listener.0.to_string(), None, settings),
        None => proxy.add_tcp(&listener.0.to_string()),
    }
    if let Some(plain) = listener.1 {
        proxy.add_tcp(&plain.to_string());
    }
    let mut admin = Service::new("fapigate admin".to_string(), AdminApp::new(gateway.clone()));
    admin.add_tcp(&listener.2.to_string());

    let probe: Vec<SocketAddr> = [Some(listener.0), listener.1, Some(listener.2)]
        .into_iter()
        .flatten()
        .map(loopback_for)
        .collect();
    let lifecycle = background_service(
        "fapigate lifecycle",
        Lifecycle {
            gateway: gateway.clone(),
            probe,
            tls: has_tls,
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(lifecycle);
    tracing::info!(
        listener = %listener.0,
        admin = %listener.2,
        routes = gateway.engine().policy.routes.len(),
        "fapigate starting"
    );
    server.run_forever()
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
    /// The listener first, then the plain listener and the admin listener.
    probe: Vec<SocketAddr>,
    tls: bool,
}

/// Whether `addr` accepts a connection (and, for `tls`, completes a handshake).
async fn probe(addr: SocketAddr, tls: bool) -> bool {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if !tls {
        return true;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(tls::fapi_crypto_provider()))
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
        for (index, addr) in self.probe.iter().enumerate() {
            let tls = index == 0 && self.tls;
            while !probe(*addr, tls).await {
                if *shutdown.borrow() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.gateway.set_ready(true);
        tracing::info!("fapigate ready");
        let mut health = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = health.tick() => {
                    if let Some(redis) = self.gateway.engine().redis.clone() {
                        self.gateway.set_state_ok(redis.ping().await);
                    } else {
                        self.gateway.set_state_ok(true);
                    }
                }
                Some(()) = async { match hangup.as_mut() { Some(s) => s.recv().await, None => None } } => {
                    match self.gateway.reload() {
                        Ok(()) => tracing::info!(routes = self.gateway.engine().policy.routes.len(), "configuration reloaded"),
                        Err(errors) => tracing::error!(errors = %errors, "configuration reload refused; the running policy stays"),
                    }
                }
                _ = shutdown.changed() => {
                    self.gateway.set_ready(false);
                    tracing::info!("shutting down: draining requests in flight");
                    return;
                }
            }
        }
    }
}
