//! Issue 16 item 6: an upstream address that dies is taken out (passive health) and the
//! requests meant for it are tried at another address (nothing was sent yet), so clients see
//! no error; when it comes back it is tried again after `eject_for`.

use crate::support::*;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A one-answer HTTP server on a port it can leave and take again.
struct Backend {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn on(listener: TcpListener, served: Arc<AtomicUsize>) -> Backend {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, counting) = (stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head);
                counting.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        });
        Backend {
            addr,
            served,
            stop,
            thread: Some(thread),
        }
    }

    fn start() -> Backend {
        Backend::on(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            Arc::new(AtomicUsize::new(0)),
        )
    }

    /// Stops accepting and closes the port: connections are refused.
    fn die(mut self) -> (SocketAddr, Arc<AtomicUsize>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        (self.addr, self.served.clone())
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

#[test]
fn ops_an_upstream_address_that_dies_is_taken_out_and_comes_back() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let (a, b) = (Backend::start(), Backend::start());
    let socket = Reserved::new();
    let port = socket.port();
    let (a_addr, b_addr) = (a.addr, b.addr);
    let gateway = Gateway::launch(dir.path(), socket, |admin, plain| {
        let text = config_text(port, admin, plain, b_addr, "");
        let one = format!("addrs = [\"{b_addr}\"]");
        assert!(text.contains(&one));
        text.replace(
            &one,
            &format!("addrs = [\"{a_addr}\", \"{b_addr}\"]\neject_after = 1\neject_for = \"1s\""),
        )
    });
    let get = || curl_tls(&gateway, &pki, "/status", &[]).status;
    for _ in 0..4 {
        assert_eq!(get(), 200);
    }
    assert!(a.served() >= 1 && b.served() >= 1, "round robin over both");

    // A dies: its turn is tried at B, no client sees an error, and A is taken out.
    let (a_addr_again, a_served) = a.die();
    let before = b.served();
    for _ in 0..6 {
        assert_eq!(get(), 200, "retried at the other address");
    }
    assert_eq!(b.served() - before, 6);
    let metrics = metrics_showing(
        gateway.admin_port,
        &format!("fapigate_upstream_address_up{{address=\"{a_addr}\",upstream=\"core\"}} 0"),
    );
    assert!(
        metrics.contains("fapigate_upstream_ejections_total{upstream=\"core\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "fapigate_upstream_errors_total{reason=\"connect_refused\",upstream=\"core\"}"
        ),
        "{metrics}"
    );

    // A comes back on its port: after eject_for it is tried again and serves.
    let a = Backend::on(TcpListener::bind(a_addr_again).unwrap(), a_served);
    let served = a.served();
    assert!(
        wait_for(|| get() == 200 && a.served() > served),
        "the address is back in the rotation"
    );
    metrics_showing(
        gateway.admin_port,
        &format!("fapigate_upstream_address_up{{address=\"{a_addr}\",upstream=\"core\"}} 1"),
    );
    drop(a.die());
    drop(b.die());
}
