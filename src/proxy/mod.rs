//! The Pingora adapter: turns a Pingora session into [`RequestFacts`], asks
//! [`Enforcer::authenticate`] (the head) and [`Enforcer::conclude`] (with the body), and either writes the rendered rejection or proxies to the route's
//! upstream. No FAPI decision is made here.

mod answer;
pub(crate) mod body;
pub(crate) mod client_cert;
pub(crate) mod deadline;
pub(crate) mod framing;
pub(crate) mod headers;
pub(crate) mod listener_tls;
mod screen;
mod signed;
mod stamp;
pub(crate) mod tls;

use crate::enforce::{Enforcer, Engine};
use crate::gateway::Gateway;
use crate::interaction::{self, InteractionId};
use crate::policy::UpstreamPolicy;
use crate::reject::Rejection;
use crate::request::{RequestFacts, X5tS256};
use crate::telemetry::{access_log, access_log_enabled, AccessRecord, RouteSeries};
use answer::{builtin_document, refuse, respond, serve_document};
use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::ErrorType;
use screen::screen_head;
use stamp::{add_dpop_nonce, stamp};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

pub(crate) struct FapiProxy {
    gateway: Arc<Gateway>,
    /// Pooled HTTP/1.1 upstream connections for signed routes (the proxy path has Pingora's
    /// own).
    connector: pingora::connectors::http::v1::Connector,
    /// Pingora's form of each upstream's trust roots.
    roots: tls::RootsCache,
}

impl FapiProxy {
    /// `fapigate_upstream_errors_total{upstream,reason}`: what went wrong with which upstream.
    fn count_upstream_error(&self, ctx: &RequestContext, e: &Error) {
        let reason = match e.etype() {
            ErrorType::ConnectTimedout => "connect_timeout",
            ErrorType::ConnectRefused => "connect_refused",
            ErrorType::ConnectNoRoute | ErrorType::ConnectError => "connect_error",
            ErrorType::TLSHandshakeFailure | ErrorType::TLSHandshakeTimedout => "tls",
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
            ErrorType::ConnectionClosed => "closed",
            ErrorType::ReadError | ErrorType::WriteError => "io",
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error => "protocol",
            _ => "other",
        };
        let engine = ctx.engine.clone().unwrap_or_else(|| self.gateway.engine());
        let upstream = ctx
            .route
            .and_then(|r| engine.policy.routes.get(r))
            .map_or("none", |route| route.upstream.id.as_str());
        self.gateway
            .metrics
            .upstream_errors
            .with_label_values(&[upstream, reason])
            .inc();
    }

    pub(crate) fn new(gateway: Arc<Gateway>) -> Self {
        FapiProxy {
            gateway,
            connector: pingora::connectors::http::v1::Connector::new(None),
            roots: tls::RootsCache::default(),
        }
    }
}

/// What one request carries from phase to phase.
pub(crate) struct RequestContext {
    started: Instant,
    /// Unix time of the request, read once: token checks and the `Date` header use it.
    now: u64,
    engine: Option<Arc<Engine>>,
    interaction: Option<InteractionId>,
    trace: Option<crate::trace::Trace>,
    route: Option<usize>,
    rejection: Option<&'static str>,
    client_cert: Option<X5tS256>,
    peer: Option<IpAddr>,
    upstream_started: Option<Instant>,
    /// The address this attempt connects to, and those that failed before it.
    upstream_addr: Option<std::net::SocketAddr>,
    tried: Vec<std::net::SocketAddr>,
    connect_failed: bool,
    upstream_ms: Option<f64>,
    dpop_nonce: Option<String>,
    grant: Option<Arc<crate::grant::Grant>>,
    granted_detail: Option<serde_json::Value>,
    request_signature: Option<crate::signing::httpsig::VerifiedSignature>,
    /// Counts the request in `fapigate_requests_in_flight` until the context is dropped.
    _in_flight: InFlight,
}

/// One request in `fapigate_requests_in_flight`, whatever way it ends (answered, refused,
/// the client gone, a panic): the count goes down when Pingora drops the context.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn new(gauge: &prometheus::IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestContext {
    /// The route's metric series, or the unrouted one.
    fn series(&self) -> Option<&RouteSeries> {
        let engine = self.engine.as_ref()?;
        Some(
            self.route
                .and_then(|index| engine.series.get(index))
                .unwrap_or(&engine.unrouted),
        )
    }
}

#[async_trait]
impl ProxyHttp for FapiProxy {
    // Boxed: Pingora keeps the context inside the request future it moves and boxes per
    // request, and a pointer is cheaper to move than the whole context.
    type CTX = Box<RequestContext>;

    fn new_ctx(&self) -> Self::CTX {
        Box::new(RequestContext {
            started: Instant::now(),
            now: crate::clock::unix_seconds(),
            engine: None,
            interaction: None,
            trace: None,
            route: None,
            rejection: None,
            client_cert: None,
            peer: None,
            upstream_started: None,
            upstream_addr: None,
            tried: Vec::new(),
            connect_failed: false,
            upstream_ms: None,
            dpop_nonce: None,
            grant: None,
            granted_detail: None,
            request_signature: None,
            _in_flight: InFlight::new(&self.gateway.metrics.requests_in_flight),
        })
    }

    /// No downstream modules. Pingora's default adds its response compression module, switched
    /// off but still run on every response; the gateway never compresses (a signature covers
    /// the exact bytes sent, and compressing secrets invites BREACH-style attacks), so the
    /// upstream's content coding passes through untouched either way.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// The request's phases in order. Each step either passes the request on or has answered
    /// it (`Ok(true)`): the head's own checks, the built-in documents, the FAPI checks of the
    /// head, the body, the decision, and the hand-off to the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        deadline::head_received(session);
        let engine = self.gateway.engine();
        ctx.engine = Some(Arc::clone(&engine));
        ctx.interaction = Some(interaction::resolve(
            session.req_header().headers.get(&interaction::HEADER_NAME),
        ));
        ctx.trace = Some(crate::trace::Trace::resolve(&session.req_header().headers));
        ctx.peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let policy = &engine.policy;

        if let Err(rejection) = screen_head(session, policy) {
            return refuse(session, ctx, policy, rejection).await;
        }
        if client_cert::refused_on_tls(session) {
            let rejection = Rejection::InvalidRequest {
                description:
                    "the client certificate of this connection is revoked or no longer trusted",
            };
            return refuse(session, ctx, policy, rejection).await;
        }
        if let Some((content_type, document)) = builtin_document(session, &engine) {
            Box::pin(serve_document(session, ctx, content_type, document)).await?;
            return Ok(true);
        }
        // Judged from the head first: the body is read only for a request that passed.
        let from_header = match client_cert::from_tls(session) {
            Some(_) => None,
            None => client_cert::from_trusted_proxy(session, policy, ctx.peer),
        };
        let enforcer = Enforcer::new(&engine);
        let authenticated = {
            let head = facts(session, from_header.as_ref(), ctx.peer, None, ctx.now);
            ctx.client_cert = head.client_cert.map(|c| c.x5t_s256);
            Box::pin(enforcer.authenticate(&head)).await
        };
        let authenticated = match authenticated {
            Ok(authenticated) => authenticated,
            Err(refused) => {
                ctx.route = refused.route;
                return refuse(session, ctx, policy, refused.rejection).await;
            }
        };
        ctx.route = Some(authenticated.route);
        let Some(route) = policy.routes.get(authenticated.route) else {
            return Ok(false);
        };
        let body = match Box::pin(body::read(session, policy, route)).await {
            Ok(body) => body,
            Err(rejection) => return refuse(session, ctx, policy, rejection).await,
        };
        // The time is judged when the decision is made, not when the headers arrived: a body
        // held open must not let a proof, a nonce or a signature be judged as it was then.
        if body.is_some() {
            ctx.now = crate::clock::unix_seconds();
        }
        let decision = {
            let facts = facts(
                session,
                from_header.as_ref(),
                ctx.peer,
                body.as_ref(),
                ctx.now,
            );
            Box::pin(enforcer.conclude(authenticated, &facts)).await
        };
        let admission = match decision {
            Ok(admission) => admission,
            Err(refused) => {
                ctx.route = refused.route;
                return refuse(session, ctx, policy, refused.rejection).await;
            }
        };
        ctx.route = Some(admission.route);
        ctx.dpop_nonce = admission.dpop_nonce;
        ctx.grant = admission.grant;
        ctx.granted_detail = admission.granted_detail;
        ctx.request_signature = admission.request_signature;
        self.hand_off(session, ctx, &engine, route, body).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .engine
            .as_ref()
            .zip(ctx.route)
            .and_then(|(engine, index)| engine.policy.routes.get(index))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no admitted route"))?;
        let now = Instant::now();
        let addr = self
            .gateway
            .upstreams
            .choose_except(&route.upstream, now, &ctx.tried)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream has no address"))?;
        ctx.upstream_addr = Some(addr);
        let peer = self.peer_for(&route.upstream, addr)?;
        ctx.upstream_started = Some(now);
        Ok(Box::new(peer))
    }

    /// A connection that failed counts against its address (passive health) and, while
    /// another address is left, the request is tried there: nothing was sent yet.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (Some(addr), Some(engine), Some(index)) = (ctx.upstream_addr, &ctx.engine, ctx.route)
        else {
            return e;
        };
        let Some(route) = engine.policy.routes.get(index) else {
            return e;
        };
        let upstream = &route.upstream;
        ctx.tried.push(addr);
        ctx.connect_failed = true;
        self.count_upstream_error(ctx, &e);
        let upstreams = &self.gateway.upstreams;
        if upstreams.failed(upstream, addr, Instant::now()) == crate::upstreams::Failure::Ejected {
            self.gateway
                .metrics
                .upstream_ejections
                .with_label_values(&[&upstream.id])
                .inc();
            tracing::warn!(upstream = %upstream.id, address = %addr, "upstream address out after failed connections");
        }
        if upstreams.another_left(upstream, &ctx.tried) {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(addr) = ctx.upstream_addr {
            self.gateway.upstreams.connected(addr);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // The upstream's header has just arrived (this hook runs right after Pingora reads
        // it): its latency is taken here rather than in a hook of its own.
        if let Some(started) = ctx.upstream_started {
            ctx.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        let status = response.status;
        headers::edit_response(response, |headers| {
            headers::prepare_response(headers, status);
            add_dpop_nonce(headers, ctx)?;
            stamp(headers, ctx);
            Ok(())
        })
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        // A failed connection was counted when it failed (fail_to_connect).
        if e.esource() == &pingora::ErrorSource::Upstream && !ctx.connect_failed {
            self.count_upstream_error(ctx, e);
        }
        let rejection = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &pingora::ErrorSource::Upstream =>
            {
                Some(Rejection::UpstreamTimeout)
            }
            _ if e.esource() == &pingora::ErrorSource::Upstream => Some(Rejection::UpstreamFailed),
            // Pingora's upstream request policy refused the client's header fields (e.g. a
            // Connection header naming X-Forwarded-For): the gateway's own 400, stamped.
            ErrorType::InvalidHTTPHeader
                if e.esource() == &pingora::ErrorSource::Downstream
                    && session.response_written().is_none() =>
            {
                Some(Rejection::InvalidRequest {
                    description: "the request's header fields cannot be forwarded",
                })
            }
            _ => None,
        };
        let engine = ctx.engine.clone().unwrap_or_else(|| self.gateway.engine());
        let code = match rejection {
            Some(rejection) => {
                let status = rejection.status();
                if respond(session, ctx, &engine.policy, rejection)
                    .await
                    .is_err()
                {
                    0
                } else {
                    status
                }
            }
            None => {
                // Malformed requests and broken downstream connections: Pingora's own answer.
                let code = match e.etype() {
                    ErrorType::HTTPStatus(code) => *code,
                    ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => 0,
                    _ if e.esource() == &pingora::ErrorSource::Downstream => 400,
                    _ => 500,
                };
                if code > 0 {
                    let _ = session.respond_error(code).await;
                }
                code
            }
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        deadline::request_done(session);
        // No response written (the connection went away) is status 0 in metrics and logs.
        let (code, code_text) = match session.response_written() {
            Some(response) => (response.status.as_u16(), response.status.as_str()),
            None => (0, "0"),
        };
        let metrics = &self.gateway.metrics;
        let elapsed = ctx.started.elapsed().as_secs_f64();
        // A request that failed before request_filter ran has no engine of its own.
        let running;
        let series = match ctx.series() {
            Some(series) => series,
            None => {
                running = self.gateway.engine();
                &running.unrouted
            }
        };
        let route = series.route();
        metrics
            .requests
            .with_label_values(&[route, code_text])
            .inc();
        series.duration(metrics).observe(elapsed);
        if let Some(upstream_ms) = ctx.upstream_ms {
            series.upstream(metrics).observe(upstream_ms / 1000.0);
        }
        if let Some(reason) = ctx.rejection {
            metrics.rejections.with_label_values(&[route, reason]).inc();
        }
        let client_id = ctx.grant.as_ref().and_then(|g| g.client_id.as_deref());
        if let Some(client) = client_id {
            let engine = ctx.engine.clone().unwrap_or_else(|| self.gateway.engine());
            let label = if engine.named_clients.contains(client) {
                client
            } else {
                "other"
            };
            metrics
                .client_requests
                .with_label_values(&[label, code_text])
                .inc();
        }
        if !access_log_enabled() {
            return;
        }
        let header = session.req_header();
        let (interaction_id, origin) = match &ctx.interaction {
            Some(id) => (id.as_str(), id.origin.as_str()),
            None => ("", "none"),
        };
        access_log(&AccessRecord {
            interaction_id,
            interaction_id_origin: origin,
            route,
            method: header.method.as_str(),
            path: header.uri.path(),
            status: code,
            outcome: ctx
                .rejection
                .unwrap_or(if code == 0 { "aborted" } else { "proxied" }),
            upstream_ms: ctx.upstream_ms,
            total_ms: elapsed * 1000.0,
            client_cert: ctx.client_cert.map(|x5t| x5t.log_prefix()),
            peer: ctx.peer,
            client_id,
            trace: ctx.trace.as_ref(),
            request_bytes: session.body_bytes_read(),
            response_bytes: session.body_bytes_sent(),
            tls_version: session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .map(|tls| match tls.version.as_ref() {
                    // As RFC 8446 and the logs of other proxies name them.
                    "TLSv1_3" => "TLSv1.3",
                    "TLSv1_2" => "TLSv1.2",
                    other => other,
                }),
        });
    }
}

impl FapiProxy {
    /// An admitted request goes to its upstream: through Pingora's proxy path (`Ok(false)`),
    /// or, on a signed route, through the gateway's own exchange, answered here.
    async fn hand_off(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        engine: &Engine,
        route: &crate::policy::routes::Route,
        body: Option<body::RequestBody>,
    ) -> Result<bool> {
        // Edited once, here: Pingora copies this header for the upstream (and again for a
        // retry), and a signed exchange copies it for its own connection.
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some();
        headers::upstream_headers(session.req_header_mut(), ctx, tls)?;
        if !route.sign_response {
            return Ok(false);
        }
        let chosen = self
            .gateway
            .upstreams
            .choose(&route.upstream, Instant::now());
        let Some(Ok(peer)) = chosen.map(|addr| self.peer_for(&route.upstream, addr)) else {
            return refuse(session, ctx, &engine.policy, Rejection::UpstreamFailed).await;
        };
        let exchange = signed::Exchange {
            connector: &self.connector,
            engine,
            route,
            peer: &peer,
        };
        let bytes = body.map(|b| b.bytes).unwrap_or_default();
        if let Err(rejection) = Box::pin(exchange.run(session, ctx, bytes)).await {
            return refuse(session, ctx, &engine.policy, rejection).await;
        }
        Ok(true)
    }

    /// One address of an upstream with its timeouts and trust roots.
    fn peer_for(&self, upstream: &UpstreamPolicy, addr: std::net::SocketAddr) -> Result<HttpPeer> {
        let mut peer = HttpPeer::new(addr, upstream.tls, upstream.sni.clone());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.total_connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.read_timeout);
        peer.options.idle_timeout = Some(std::time::Duration::from_secs(60));
        // Pingora removes hop-by-hop headers from the copy it sends; no protocol upgrade (a
        // tunnel past the gateway's checks) is ever forwarded.
        peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        if let Some(roots) = &upstream.ca {
            let roots = self.roots.get(roots).ok_or_else(|| {
                Error::explain(ErrorType::InternalError, "unreadable upstream trust roots")
            })?;
            peer.options.ca = Some(roots);
        }
        Ok(peer)
    }
}

/// The facts the FAPI core judges: the head, the client certificate (from this connection or
/// a trusted proxy) and, once read, the body.
fn facts<'a>(
    session: &'a Session,
    from_header: Option<&'a crate::request::ClientCert>,
    peer: Option<std::net::IpAddr>,
    body: Option<&'a body::RequestBody>,
    now: u64,
) -> RequestFacts<'a> {
    let header = session.req_header();
    RequestFacts {
        method: &header.method,
        path: header.uri.path(),
        query: header.uri.query(),
        headers: &header.headers,
        client_cert: client_cert::from_tls(session).or(from_header),
        peer,
        body: body.and_then(|b| b.json.as_ref()),
        raw_body: body.map(|b| b.bytes.as_ref()),
        now,
    }
}
