//! Signed routes. Pingora writes response headers as soon as the upstream's arrive, and a
//! signature covers the whole body, so these routes do not use the proxy path: the gateway
//! sends the request itself on a pooled connection, reads the whole response (bounded by
//! `max_body`), signs it and answers. One retry on a stale pooled connection, for an idempotent
//! request whose answer had not begun; 502 on upstream failure or an oversized body, 504 on
//! timeout.

use super::stamp::{add_dpop_nonce, stamp};
use super::{headers, RequestContext};
use crate::audit::Record;
use crate::enforce::Engine;
use crate::policy::routes::Route;
use crate::reject::Rejection;
use crate::signing::base::MessageView;
use crate::signing::httpsig::RequestBinding;
use crate::signing::signer::ResponseSigner;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use pingora::connectors::http::v1::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use std::time::Instant;

/// The upstream's answer, read whole.
struct Upstream {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum Failure {
    Timeout,
    Failed,
}

impl Failure {
    fn rejection(self) -> Rejection {
        match self {
            Failure::Timeout => Rejection::UpstreamTimeout,
            Failure::Failed => Rejection::UpstreamFailed,
        }
    }
}

fn classify(error: &pingora::Error) -> Failure {
    match error.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Failure::Timeout
        }
        _ => Failure::Failed,
    }
}

/// One signed exchange: the admitted request, the upstream address chosen for it.
pub(super) struct Exchange<'a> {
    pub connector: &'a Connector,
    pub engine: &'a Engine,
    pub route: &'a Route,
    pub peer: &'a HttpPeer,
}

impl Exchange<'_> {
    /// Reserves the audit record, fetches the upstream's answer, signs it, records it and
    /// answers; returns the rejection to render when it could not produce a response.
    pub(super) async fn run(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        body: Bytes,
    ) -> Result<(), Rejection> {
        let signer = self
            .engine
            .signer
            .as_ref()
            .ok_or(Rejection::UpstreamFailed)?;
        // A place for the record before the upstream acts: a full trail refuses now (503),
        // never after a payment was made.
        let slot = match &self.engine.audit {
            Some(audit) => Some(audit.reserve().await.map_err(|error| {
                tracing::error!(%error, route = %self.route.id, "signed request refused: the audit trail cannot take it");
                Rejection::EvidenceUnavailable
            })?),
            None => None,
        };
        let started = Instant::now();
        let upstream = self.fetch(session, &body, signer.max_body as usize).await?;
        ctx.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let now = crate::clock::unix_seconds();
        let signed = self.sign(session, ctx, signer, upstream, now)?;
        if let Some(slot) = slot {
            // The upstream has acted, but a signed response never leaves without its record:
            // the client gets 502 and the failure is loud.
            let sent_digest = crate::signing::digest::content_digest(&signed.body);
            let record = self.record(session, ctx, &signed, &sent_digest, now);
            if let Err(error) = slot.record(&record).await {
                tracing::error!(%error, route = %self.route.id, interaction_id = record.interaction_id,
                    "signed response withheld: its audit record was not written");
                return Err(Rejection::EvidenceFailed);
            }
        }
        respond(session, ctx, signed).await;
        Ok(())
    }

    /// The upstream's whole answer. RFC 9110 §9.2.2: only an idempotent request is sent
    /// again, and only when a pooled connection failed before any of the answer arrived (a
    /// payment is never made twice).
    async fn fetch(
        &self,
        session: &Session,
        body: &Bytes,
        limit: usize,
    ) -> Result<Upstream, Rejection> {
        let is_head = session.req_header().method == Method::HEAD;
        let idempotent = session.req_header().method.is_idempotent();
        for attempt in 0..2 {
            // The client's header, already edited for the upstream when it was admitted;
            // this connection is the gateway's own, so hop-by-hop headers and framing are
            // handled here. Built per attempt (a retry is rare).
            let request = outbound_header(session, body);
            match send(self.connector, self.peer, request, body, limit, is_head).await {
                Ok(upstream) => return Ok(upstream),
                Err((retryable, Failure::Failed)) if retryable && idempotent && attempt == 0 => {
                    continue
                }
                Err((_, failure)) => return Err(failure.rejection()),
            }
        }
        Err(Rejection::UpstreamFailed)
    }

    /// The upstream's answer as the client gets it: its headers less hop-by-hop ones (and
    /// those its Connection names), its framing, and any digest or signature of its own (the
    /// client must see only what the gateway computed over the bytes it sends, and the audit
    /// record only what was signed), then signed over the request it answers.
    fn sign(
        &self,
        session: &Session,
        ctx: &RequestContext,
        signer: &ResponseSigner,
        upstream: Upstream,
        now: u64,
    ) -> Result<Signed, Rejection> {
        let Upstream {
            status,
            mut headers,
            mut body,
        } = upstream;
        let status = http::StatusCode::from_u16(status).map_err(|_| Rejection::UpstreamFailed)?;
        headers::strip_hop_by_hop(&mut headers);
        headers::remove_where(&mut headers, |name| {
            *name == http::header::CONTENT_LENGTH || is_upstream_evidence(name.as_str())
        });
        stamp(&mut headers, ctx);
        let format = self.route.response_format.unwrap_or(signer.default_format);
        let request_header = session.req_header();
        let public_url = &self.engine.policy.listener.public_url;
        let target_uri =
            public_url.target_uri(request_header.uri.path(), request_header.uri.query());
        let binding = RequestBinding {
            message: MessageView {
                method: Some(request_header.method.as_str()),
                target_uri: Some(&target_uri),
                status: None,
                headers: &request_header.headers,
            },
            signature: ctx.request_signature.as_ref(),
            authority: Some(&public_url.authority),
        };
        let client_id = ctx.grant.as_ref().and_then(|g| g.client_id.as_deref());
        signer
            .sign(
                format,
                status.as_u16(),
                &mut headers,
                &mut body,
                &binding,
                client_id,
                now,
            )
            .map_err(|error| {
                tracing::error!(%error, route = %self.route.id, "response signing failed");
                Rejection::from(error)
            })?;
        Ok(Signed {
            status,
            headers,
            body,
            no_body: bodiless(request_header.method == Method::HEAD, status.as_u16()),
        })
    }

    /// The audit record of a signed exchange: what was asked, under which signature, and the
    /// digest of the bytes sent, whatever the format.
    fn record<'r>(
        &'r self,
        session: &'r Session,
        ctx: &'r RequestContext,
        signed: &'r Signed,
        sent_digest: &'r str,
        now: u64,
    ) -> Record<'r> {
        let request = &session.req_header().headers;
        Record {
            time: now,
            interaction_id: ctx.interaction.as_ref().map(|i| i.as_str()).unwrap_or(""),
            route: &self.route.id,
            client_id: ctx.grant.as_ref().and_then(|g| g.client_id.as_deref()),
            request_digest: text("content-digest", request),
            request_signature_input: text("signature-input", request),
            request_signature: text("signature", request),
            response_status: signed.status.as_u16(),
            response_digest: Some(sent_digest),
            response_signature_input: text("signature-input", &signed.headers),
            response_signature: text("signature", &signed.headers)
                .or_else(|| text("x-jws-signature", &signed.headers)),
        }
    }
}

/// A signed answer, ready to send.
struct Signed {
    status: http::StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// HEAD, 204 or 304: no body whatever the framing says.
    no_body: bool,
}

/// The request header for the gateway's own upstream connection.
fn outbound_header(session: &Session, body: &Bytes) -> RequestHeader {
    let mut request = session.req_header().clone();
    headers::edit_request(&mut request, |headers| {
        headers::strip_hop_by_hop(headers);
        headers.remove(http::header::EXPECT);
        if !body.is_empty() || headers.contains_key(http::header::CONTENT_LENGTH) {
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
    });
    request
}

/// Writes the signed answer. It is committed from here on: a write failure is a broken
/// client connection, logged, not answered.
async fn respond(session: &mut Session, ctx: &RequestContext, signed: Signed) {
    let Signed {
        status,
        mut headers,
        body,
        no_body,
    } = signed;
    if !no_body {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    // A nonce the gateway minted is always a valid value; if not, the answer goes without.
    let _ = add_dpop_nonce(&mut headers, ctx);
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = headers;
    let response = ResponseHeader::from(parts);
    let write = async {
        session
            .write_response_header(Box::new(response), no_body)
            .await?;
        if !no_body {
            session
                .write_response_body(Some(Bytes::from(body)), true)
                .await?;
        }
        Ok::<(), Box<pingora::Error>>(())
    };
    if let Err(error) = write.await {
        tracing::debug!(%error, "client went away during a signed response");
    }
}

/// Fields that would pass for the gateway's evidence: digests (RFC 9530, and RFC 3230's
/// `Digest`) and signatures
/// (RFC 9421, UK Open Banking's detached JWS). Only the gateway sets them on a signed route.
fn is_upstream_evidence(name: &str) -> bool {
    matches!(
        name,
        "content-digest"
            | "repr-digest"
            | "want-content-digest"
            | "want-repr-digest"
            | "signature"
            | "signature-input"
            | "x-jws-signature"
            | "digest"
            | "want-digest"
    )
}

/// An answer that has no body whatever its framing says (RFC 9110 §6.4.1).
fn bodiless(is_head: bool, status: u16) -> bool {
    is_head || status == 204 || status == 304
}

fn text<'a>(name: &str, map: &'a HeaderMap) -> Option<&'a str> {
    map.get(name).and_then(|v| v.to_str().ok())
}

/// One attempt: (may it be retried, what failed) on error. Pingora marks as retryable on a
/// reused connection only a failure before any byte of the response header was read.
async fn send(
    connector: &Connector,
    peer: &pingora::upstreams::peer::HttpPeer,
    request: RequestHeader,
    body: &Bytes,
    limit: usize,
    is_head: bool,
) -> Result<Upstream, (bool, Failure)> {
    let (mut session, reused) = match connector.reused_http_session(peer).await {
        Some(session) => (session, true),
        // A new connection (TCP, perhaps TLS) is rare; its large future is boxed so that it
        // does not enlarge, and get copied with, every exchange's.
        None => Box::pin(connector.get_http_session(peer))
            .await
            .map_err(|e| (false, classify(&e)))?,
    };
    let fail = |mut e: Box<pingora::Error>| {
        e.retry.decide_reuse(reused);
        (e.retry(), classify(&e))
    };
    session.read_timeout = peer.options.read_timeout;
    session.write_timeout = peer.options.write_timeout;
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(fail)?;
    if !body.is_empty() {
        session.write_body(body).await.map_err(fail)?;
    }
    session.finish_body().await.map_err(fail)?;
    session.read_response().await.map_err(fail)?;
    let header = session.resp_header().ok_or((false, Failure::Failed))?;
    let status = header.status.as_u16();
    let headers = header.headers.clone();
    let mut collected = Vec::new();
    if !bodiless(is_head, status) {
        let announced = header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        collected.reserve(announced.min(limit));
        while let Some(chunk) = session.read_body_ref().await.map_err(fail)? {
            if collected.len() + chunk.len() > limit {
                tracing::warn!(
                    limit,
                    "upstream response of a signed route exceeds max_body"
                );
                return Err((false, Failure::Failed));
            }
            collected.extend_from_slice(chunk);
        }
    }
    if session.is_body_done() {
        connector
            .release_http_session(session, peer, peer.options.idle_timeout)
            .await;
    }
    Ok(Upstream {
        status,
        headers,
        body: collected,
    })
}
