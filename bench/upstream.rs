//! Load-benchmark upstream: a tiny HTTP/1.1 keep-alive server that answers every request with
//! the same 200 JSON response, so the proxy in front of it is what gets measured.
//!
//! Usage: `bench-upstream LISTEN_ADDR` (worker threads from `BENCH_UPSTREAM_THREADS`, default 1).
//! Requests are read up to the blank line; a `content-length` body is read and discarded. A
//! chunked request body is answered with 501 and the connection closed.

use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &str = r#"{"status":"ok","service":"bench-upstream","version":"1.0.0","checks":{"db":"up","cache":"up","queue":"up"}}"#;
const MAX_HEAD: usize = 64 * 1024;

fn response(status: &str, body: &str, close: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

/// What the request head says about framing and the connection.
struct Head {
    len: usize,
    body: usize,
    close: bool,
}

enum Parsed {
    Incomplete,
    Ok(Head),
    Bad(&'static str),
}

fn parse_head(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parsed::Bad("431 Request Header Fields Too Large")
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Bad("400 Bad Request");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line.ends_with("HTTP/1.0");
    if !(http10 || request_line.ends_with("HTTP/1.1")) {
        return Parsed::Bad("400 Bad Request");
    }
    let mut body = 0usize;
    let mut close = http10;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad("400 Bad Request");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => body = n,
                Err(_) => return Parsed::Bad("400 Bad Request"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad("501 Not Implemented");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        }
    }
    Parsed::Ok(Head {
        len: end + 4,
        body,
        close,
    })
}

async fn serve(mut stream: TcpStream, ok: &[u8]) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // Read until a whole head is buffered.
        let head = loop {
            match parse_head(&buf) {
                Parsed::Ok(head) => break head,
                Parsed::Bad(status) => {
                    stream.write_all(&response(status, "", true)).await?;
                    return Ok(());
                }
                Parsed::Incomplete => {}
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(()); // peer closed (normally between requests)
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        // Consume the head and the declared body, keeping any bytes that follow.
        let mut remaining = head.body;
        let buffered = (buf.len() - head.len).min(remaining);
        remaining -= buffered;
        buf.drain(..head.len + buffered);
        while remaining > 0 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            let used = n.min(remaining);
            remaining -= used;
            buf.extend_from_slice(&chunk[used..n]);
        }
        if head.close {
            stream.write_all(&response("200 OK", BODY, true)).await?;
            return stream.shutdown().await;
        }
        stream.write_all(ok).await?;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen] = args.as_slice() else {
        eprintln!("usage: bench-upstream LISTEN_ADDR");
        return ExitCode::from(2);
    };
    let addr: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("bench-upstream: bad LISTEN_ADDR {listen:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = std::env::var("BENCH_UPSTREAM_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
    .enable_all()
    .build()
    .expect("tokio runtime");

    runtime.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("bench-upstream: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("bench-upstream: listening on {addr}, {threads} thread(s)");
        let ok: &'static [u8] = Box::leak(response("200 OK", BODY, false).into_boxed_slice());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(async move {
                        let _ = serve(stream, ok).await;
                    });
                }
                Err(e) => {
                    eprintln!("bench-upstream: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    })
}
