//! Time limits on the client side of an HTTP/1 connection, which Pingora only sets per read
//! (60 s each, so a head trickled in a byte at a time holds a connection for ever):
//!
//! - a request head must arrive whole within `listener.header_timeout` of the connection
//!   opening, or of the first byte of a later request on it;
//! - a keep-alive connection waiting for its next request is closed after
//!   `listener.idle_timeout`.
//!
//! The connection's stream is wrapped ([`TimedStream`]); the proxy marks the moments a head is
//! complete and a request is done ([`head_received`], [`request_done`]). HTTP/2 connections
//! are not wrapped: their idle limit is Pingora's `h2_idle_timeout`.

use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
    ALPN,
};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The serving app with deadlines on its HTTP/1 connections.
pub(crate) struct Deadlines<A> {
    inner: Arc<A>,
    gateway: Arc<Gateway>,
}

impl<A> Deadlines<A> {
    pub(crate) fn new(inner: A, gateway: Arc<Gateway>) -> Self {
        Deadlines {
            inner: Arc::new(inner),
            gateway,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Deadlines<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.inner.process_new(stream, shutdown).await;
        }
        let listener = &self.gateway.engine().policy.listener;
        let timed = TimedStream::new(
            stream,
            listener.header_timeout,
            listener.idle_timeout,
            self.gateway.clone(),
        );
        self.inner.process_new(Box::new(timed), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Where a connection is between requests.
const HEAD: u8 = 0;
const IN_REQUEST: u8 = 1;
const IDLE: u8 = 2;

/// A client stream whose reads fail once the current deadline has passed.
pub(crate) struct TimedStream {
    inner: Stream,
    opened: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    phase: AtomicU8,
    /// Milliseconds after `opened` by which the current phase must end (HEAD and IDLE).
    deadline_ms: AtomicU64,
    /// Armed for the deadline it was made for.
    timer: Option<(u64, Pin<Box<Sleep>>)>,
    gateway: Arc<Gateway>,
}

impl std::fmt::Debug for TimedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl TimedStream {
    fn new(inner: Stream, header: Duration, idle: Duration, gateway: Arc<Gateway>) -> Self {
        TimedStream {
            inner,
            opened: Instant::now(),
            header_timeout: header,
            idle_timeout: idle,
            phase: AtomicU8::new(HEAD),
            deadline_ms: AtomicU64::new(millis(header)),
            timer: None,
            gateway,
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.opened.elapsed())
    }

    fn enter(&self, phase: u8, within: Duration) {
        self.deadline_ms
            .store(self.now_ms() + millis(within), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
    }

    /// The deadline of the current phase, if it has one.
    fn deadline(&self) -> Option<(u8, u64)> {
        let phase = self.phase.load(Ordering::Acquire);
        (phase != IN_REQUEST).then(|| (phase, self.deadline_ms.load(Ordering::Relaxed)))
    }

    fn expired(&self, phase: u8) -> io::Error {
        let reason = if phase == IDLE {
            "idle_timeout"
        } else {
            "header_timeout"
        };
        // A head cut off is counted like any refusal; an idle connection closing is normal.
        if phase == HEAD {
            self.gateway
                .metrics
                .rejections
                .with_label_values(&["none", reason])
                .inc();
        }
        io::Error::new(io::ErrorKind::TimedOut, reason)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The proxy read a whole request head: the head deadline no longer applies.
pub(crate) fn head_received(session: &Session) {
    if let Some(timed) = timed(session) {
        timed.phase.store(IN_REQUEST, Ordering::Release);
    }
}

/// The request is answered: the connection may now wait `idle_timeout` for the next one.
pub(crate) fn request_done(session: &Session) {
    if let Some(timed) = timed(session) {
        timed.enter(IDLE, timed.idle_timeout);
    }
}

fn timed(session: &Session) -> Option<&TimedStream> {
    session
        .as_downstream()
        .stream()?
        .as_any()
        .downcast_ref::<TimedStream>()
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = this.deadline();
        if let Some((phase, at)) = deadline {
            if this.now_ms() >= at {
                return Poll::Ready(Err(this.expired(phase)));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                // The next request's first byte: its head has `header_timeout` from here.
                if deadline.is_some_and(|(phase, _)| phase == IDLE) && buf.filled().len() > before {
                    this.enter(HEAD, this.header_timeout);
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some((phase, at)) = deadline else {
                    return Poll::Pending;
                };
                if this.timer.as_ref().is_none_or(|(armed, _)| *armed != at) {
                    let when = this.opened + Duration::from_millis(at);
                    this.timer = Some((at, Box::pin(tokio::time::sleep_until(when))));
                }
                match this
                    .timer
                    .as_mut()
                    .map(|(_, sleep)| sleep.as_mut().poll(cx))
                {
                    Some(Poll::Ready(())) => Poll::Ready(Err(this.expired(phase))),
                    _ => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TimedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for TimedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for TimedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for TimedStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for TimedStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for TimedStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for TimedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
