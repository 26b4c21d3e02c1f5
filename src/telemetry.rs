//! Metric families, log setup and the access log. Metrics are registered once per process;
//! the access log is one structured line per request and never holds a token, proof, key or
//! secret: only short hashes and the interaction id.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub rejections: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub access_log_dropped: prometheus::IntCounter,
    pub upstream_errors: IntCounterVec,
    pub upstream_ejections: IntCounterVec,
    pub upstream_address_up: IntGaugeVec,
    pub client_requests: IntCounterVec,
    pub certificate_expiry: IntGaugeVec,
    pub tls_reloads: IntCounterVec,
    pub rate_limit_fallbacks: IntCounterVec,
    pub reloads: IntCounterVec,
    /// Whether the last reload took (1) or was refused (0); 1 before any.
    pub last_reload_successful: IntGauge,
    /// When the running configuration was loaded, Unix seconds.
    pub last_reload_timestamp: IntGauge,
    pub audit_records: IntCounter,
    pub audit_checkpoints: IntCounter,
    pub ready: IntGauge,
    pub token_validations: IntCounterVec,
    pub token_cache: IntCounterVec,
    pub introspection_duration: Histogram,
    pub introspection_failures: IntCounterVec,
    pub jwks_refreshes: IntCounterVec,
    /// Shared-state values not believed (a MAC that fails, another deployment's scope).
    pub shared_state_rejected: IntCounterVec,
    /// Whether Redis answered the last health check (1) or not (0).
    pub shared_state_up: IntGauge,
    pub requests_in_flight: IntGauge,
    pub replay_store_entries: IntGauge,
    pub replay_store_capacity: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "fapigate_requests_total",
                "Requests answered, by route and status",
            ),
            &["route", "status"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "fapigate_request_duration_seconds",
                "Time from request header to the end of the response, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "fapigate_upstream_duration_seconds",
                "Time from sending to the upstream to its response header, by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new(
                "fapigate_rejections_total",
                "Requests refused by the gateway, by route and reason",
            ),
            &["route", "reason"],
        )?;
        let access_log_dropped = prometheus::IntCounter::new(
            "fapigate_access_log_dropped_total",
            "Access lines dropped because the log writer could not keep up (a worker never waits for it)",
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "fapigate_upstream_errors_total",
                "Upstream failures, by upstream and reason (connect_refused, connect_timeout, timeout, tls, closed, io, protocol, ...)",
            ),
            &["upstream", "reason"],
        )?;
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "fapigate_upstream_ejections_total",
                "Upstream addresses taken out after eject_after consecutive failed connections, by upstream",
            ),
            &["upstream"],
        )?;
        let upstream_address_up = IntGaugeVec::new(
            Opts::new(
                "fapigate_upstream_address_up",
                "Whether each upstream address is in the rotation (0 while it is out), by upstream and address",
            ),
            &["upstream", "address"],
        )?;
        let client_requests = IntCounterVec::new(
            Opts::new(
                "fapigate_client_requests_total",
                "Requests with a token, by client and status (clients named in [[client]] or a [[rate_limit]]'s clients; others are \"other\")",
            ),
            &["client", "status"],
        )?;
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "fapigate_certificate_expiry_timestamp_seconds",
                "When each certificate the gateway holds expires (a CRL: its next update), Unix seconds",
            ),
            &["kind", "subject"],
        )?;
        let tls_reloads = IntCounterVec::new(
            Opts::new(
                "fapigate_tls_reloads_total",
                "Listener certificate, key, client CA and CRL reloads (SIGHUP or a change on disk), by result",
            ),
            &["result"],
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "fapigate_rate_limited_total",
                "Requests refused by a [[rate_limit]], by limit and client (clients named in [[client]] or the limit's clients; others are \"other\")",
            ),
            &["limit", "client"],
        )?;
        let rate_limit_fallbacks = IntCounterVec::new(
            Opts::new(
                "fapigate_rate_limit_fallbacks_total",
                "Shared rate-limit checks Redis could not answer, decided by this replica's own cell instead",
            ),
            &["limit"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "fapigate_config_reloads_total",
                "Configuration reloads, by result",
            ),
            &["result"],
        )?;
        let last_reload_successful = IntGauge::new(
            "fapigate_config_last_reload_successful",
            "Whether the last configuration reload took (1) or was refused (0)",
        )?;
        last_reload_successful.set(1);
        let last_reload_timestamp = IntGauge::new(
            "fapigate_config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (start or reload), Unix seconds",
        )?;
        last_reload_timestamp.set(crate::clock::unix_seconds() as i64);
        // The constant 1 whose labels say what runs, for joins and `count by (revision)`.
        let build_info = IntGaugeVec::new(
            Opts::new(
                "fapigate_build_info",
                "The version and commit of this build",
            ),
            &["version", "revision"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("FAPIGATE_REVISION")])
            .set(1);
        let requests_in_flight = IntGauge::new(
            "fapigate_requests_in_flight",
            "Requests whose head has arrived and whose answer is not finished",
        )?;
        let replay_store_entries = IntGauge::new(
            "fapigate_replay_store_entries",
            "DPoP proofs the memory replay store holds (a full store refuses with 503)",
        )?;
        let replay_store_capacity = IntGauge::new(
            "fapigate_replay_store_capacity",
            "The most DPoP proofs the memory replay store holds",
        )?;
        let audit_records = IntCounter::new(
            "fapigate_audit_records_total",
            "Signed exchanges written to the audit trail",
        )?;
        let audit_checkpoints = IntCounter::new(
            "fapigate_audit_checkpoints_total",
            "Signed checkpoints written to the audit trail (each logs the head to hold)",
        )?;
        let ready = IntGauge::new(
            "fapigate_ready",
            "1 once listeners are bound and a policy is loaded",
        )?;
        let token_validations = IntCounterVec::new(
            Opts::new(
                "fapigate_token_validations_total",
                "Access-token validations, by kind (jwt, opaque) and result (valid, invalid, unavailable)",
            ),
            &["kind", "result"],
        )?;
        let token_cache = IntCounterVec::new(
            Opts::new(
                "fapigate_token_cache_total",
                "Token cache lookups, by kind and result (hit, miss)",
            ),
            &["kind", "result"],
        )?;
        let introspection_duration = Histogram::with_opts(
            HistogramOpts::new(
                "fapigate_introspection_duration_seconds",
                "Time of one introspection call to the AS",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let introspection_failures = IntCounterVec::new(
            Opts::new(
                "fapigate_introspection_failures_total",
                "Introspection calls that gave no usable answer, by reason",
            ),
            &["reason"],
        )?;
        let jwks_refreshes = IntCounterVec::new(
            Opts::new(
                "fapigate_jwks_refreshes_total",
                "JWKS fetches, by key set and result",
            ),
            &["key_set", "result"],
        )?;
        let shared_state_rejected = IntCounterVec::new(
            Opts::new(
                "fapigate_shared_state_rejected_total",
                "Values read from the shared state that were not believed, by kind",
            ),
            &["kind"],
        )?;
        let shared_state_up = IntGauge::new(
            "fapigate_shared_state_up",
            "1 when the shared state (Redis) answered the last health check",
        )?;
        registry.register(Box::new(shared_state_rejected.clone()))?;
        registry.register(Box::new(shared_state_up.clone()))?;
        registry.register(Box::new(token_validations.clone()))?;
        registry.register(Box::new(token_cache.clone()))?;
        registry.register(Box::new(introspection_duration.clone()))?;
        registry.register(Box::new(introspection_failures.clone()))?;
        registry.register(Box::new(jwks_refreshes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(upstream_ejections.clone()))?;
        registry.register(Box::new(upstream_address_up.clone()))?;
        registry.register(Box::new(client_requests.clone()))?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        registry.register(Box::new(tls_reloads.clone()))?;
        registry.register(Box::new(rate_limit_fallbacks.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload_successful.clone()))?;
        registry.register(Box::new(last_reload_timestamp.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(requests_in_flight.clone()))?;
        registry.register(Box::new(replay_store_entries.clone()))?;
        registry.register(Box::new(replay_store_capacity.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        registry.register(Box::new(audit_records.clone()))?;
        registry.register(Box::new(audit_checkpoints.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            rejections,
            rate_limited,
            upstream_errors,
            access_log_dropped,
            upstream_ejections,
            upstream_address_up,
            client_requests,
            certificate_expiry,
            tls_reloads,
            rate_limit_fallbacks,
            reloads,
            last_reload_successful,
            last_reload_timestamp,
            audit_records,
            audit_checkpoints,
            ready,
            token_validations,
            token_cache,
            introspection_duration,
            introspection_failures,
            jwks_refreshes,
            shared_state_rejected,
            shared_state_up,
            requests_in_flight,
            replay_store_entries,
            replay_store_capacity,
        })
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// A route's latency series, looked up once per policy rather than on every request (a label
/// lookup hashes the labels and takes a lock). Created on first use, so a route that never
/// reached its upstream has no upstream series.
pub struct RouteSeries {
    route: String,
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
}

impl RouteSeries {
    pub fn new(route: &str) -> Self {
        RouteSeries {
            route: route.to_string(),
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
        }
    }

    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn duration(&self, metrics: &Metrics) -> &Histogram {
        self.duration
            .get_or_init(|| metrics.request_duration.with_label_values(&[&self.route]))
    }

    pub fn upstream(&self, metrics: &Metrics) -> &Histogram {
        self.upstream
            .get_or_init(|| metrics.upstream_duration.with_label_values(&[&self.route]))
    }
}

/// Installs the global tracing subscriber (JSON or plain lines on stdout).
pub fn init_logging(json: bool, level: &str) {
    let text = std::env::var("FAPIGATE_LOG").unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&text)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = cap_dependencies(filter, &text);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    crate::access_log::use_fast_json(json);
    // A second initialisation (tests, reload) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Crates whose debug output carries what the gateway must never log (request headers with
/// tokens and proofs, TLS secrets, Redis commands with keys and values).
const CAPPED_CRATES: [&str; 11] = [
    "pingora",
    "pingora_core",
    "pingora_proxy",
    "pingora_pool",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tokio_rustls",
    "redis",
];

/// A filter more verbose than `info` still logs the crates above at `info` at most, unless
/// the filter names them itself (an operator debugging Pingora asks for it by name).
fn cap_dependencies(
    mut filter: tracing_subscriber::EnvFilter,
    text: &str,
) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::filter::LevelFilter;
    if filter
        .max_level_hint()
        .is_none_or(|max| max <= LevelFilter::INFO)
    {
        return filter;
    }
    for name in CAPPED_CRATES {
        let named = text
            .split(',')
            .any(|directive| directive.trim().split(['=', '[', ':']).next() == Some(name));
        if !named {
            if let Ok(directive) = format!("{name}=info").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    filter
}

/// One access-log line.
pub(crate) struct AccessRecord<'a> {
    pub interaction_id: &'a str,
    pub interaction_id_origin: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub outcome: &'a str,
    pub upstream_ms: Option<f64>,
    pub total_ms: f64,
    pub client_cert: Option<String>,
    pub peer: Option<std::net::IpAddr>,
    /// The token's client (the TPP).
    pub client_id: Option<&'a str>,
    pub trace: Option<&'a crate::trace::Trace>,
    pub request_bytes: usize,
    pub response_bytes: usize,
    pub tls_version: Option<&'a str>,
}

/// Whether access-log lines are written at all: the record is not assembled otherwise.
pub(crate) fn access_log_enabled() -> bool {
    tracing::enabled!(target: "fapigate::access", tracing::Level::INFO)
}

pub(crate) fn access_log(record: &AccessRecord<'_>) {
    if crate::access_log::fast_json() {
        crate::access_log::write(record);
        return;
    }
    tracing::info!(
        target: "fapigate::access",
        interaction_id = record.interaction_id,
        interaction_id_origin = record.interaction_id_origin,
        route = record.route,
        method = record.method,
        path = record.path,
        status = record.status,
        outcome = record.outcome,
        upstream_ms = record.upstream_ms,
        total_ms = record.total_ms,
        client_cert_x5t = record.client_cert.as_deref(),
        peer = record.peer.map(|ip| ip.to_string()).as_deref(),
        client_id = record.client_id,
        trace_id = record.trace.map(|t| t.trace_id()),
        span_id = record.trace.map(|t| t.span_id()),
        request_bytes = record.request_bytes,
        response_bytes = record.response_bytes,
        tls_version = record.tls_version,
        "access"
    );
}

#[cfg(test)]
mod log_filter_tests {
    use super::*;

    fn capped(text: &str) -> String {
        cap_dependencies(tracing_subscriber::EnvFilter::new(text), text).to_string()
    }

    #[test]
    fn hi_logs_dependencies_stay_at_info_when_the_gateway_logs_debug() {
        let debug = capped("debug");
        for name in CAPPED_CRATES {
            assert!(debug.contains(&format!("{name}=info")), "{name}: {debug}");
        }
        // Asked for by name: the operator gets it.
        let named = capped("debug,pingora_core=debug");
        assert!(named.contains("pingora_core=debug"), "{named}");
        assert!(!named.contains("pingora_core=info"), "{named}");
        // Not more verbose than info: nothing is added.
        assert_eq!(capped("warn"), "warn");
        assert_eq!(capped("info"), "info");
    }
}
