//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers)
//! and `/readyz` (listeners bound and a policy loaded). Bind it to a private address.

use crate::gateway::Gateway;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub(crate) struct AdminApp {
    gateway: Arc<Gateway>,
}

impl AdminApp {
    pub(crate) fn new(gateway: Arc<Gateway>) -> Self {
        AdminApp { gateway }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    let length = response.body().len().to_string();
    if let Ok(value) = http::HeaderValue::from_str(&length) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, value);
    }
    response
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        if header.method != http::Method::GET && header.method != http::Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        match header.uri.path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.gateway.render_metrics(),
            ),
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.gateway.is_ready() => {
                reply(StatusCode::OK, "text/plain", b"ready\n".to_vec())
            }
            "/readyz" => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"not ready\n".to_vec(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

/// `fapigate healthcheck`: asks this gateway's admin listener whether it is ready, for a
/// container `HEALTHCHECK` in an image without curl. `Ok` when `/readyz` answers 200. Only
/// `admin.addr` is read from the file: a probe every few seconds must not resolve upstream
/// names or read key files, and a file being edited does not make a running gateway unhealthy.
pub fn healthcheck(config: &std::path::Path) -> Result<(), String> {
    use std::io::{Read, Write};
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: not TOML: {e}", config.display()))?;
    let addr = table
        .get("admin")
        .and_then(|admin| admin.get("addr"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{}: no admin.addr", config.display()))?;
    let mut addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| format!("{}: admin.addr \"{addr}\" is not ip:port", config.display()))?;
    if addr.port() == 0 {
        return Err(
            "admin.addr has port 0: the healthcheck needs the admin listener's port".into(),
        );
    }
    // A listener on every address answers on loopback too.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = std::time::Duration::from_secs(2);
    let failed = |e: std::io::Error| format!("{addr}: {e}");
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(failed)?;
    // The status line is all that is needed.
    let mut head = Vec::new();
    let mut chunk = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        match stream.read(&mut chunk).map_err(failed)? {
            0 => break,
            n => head.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("");
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("{addr}: not ready ({status_line})")),
    }
}
