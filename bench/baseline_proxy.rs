//! Load-benchmark reference: the thinnest plain-HTTP Pingora proxy, forwarding every request
//! unchanged to one upstream. fapigate is measured against it by `bench/load.sh`.
//!
//! Usage: `baseline-proxy LISTEN_ADDR UPSTREAM_ADDR` (worker threads from `BENCH_THREADS`,
//! default 1).

use async_trait::async_trait;
use pingora::proxy::{http_proxy_service_with_name, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        // Same pooling horizon as fapigate's upstream peers, so both keep connections alike.
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() -> ExitCode {
    fapigate::install_crypto_provider();

    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = match args.as_slice() {
        [_, listen, upstream] => (listen, upstream),
        _ => {
            eprintln!("usage: baseline-proxy LISTEN_ADDR UPSTREAM_ADDR");
            return ExitCode::from(2);
        }
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("baseline-proxy: bad LISTEN_ADDR {listen:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let upstream: SocketAddr = match upstream.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("baseline-proxy: bad UPSTREAM_ADDR {upstream:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = match std::env::var("BENCH_THREADS") {
        Ok(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("baseline-proxy: BENCH_THREADS must be a positive integer, got {text:?}");
                return ExitCode::from(2);
            }
        },
        Err(_) => 1,
    };
    if let Err(e) = std::net::TcpListener::bind(listen) {
        eprintln!("baseline-proxy: cannot listen on {listen}: {e}");
        return ExitCode::FAILURE;
    }

    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        PassThrough { upstream },
        "baseline-proxy",
    );
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    eprintln!("baseline-proxy: {listen} -> {upstream}, {threads} thread(s)");
    server.run_forever()
}
