//! Issue 14 §5: two gateways share a real Redis through a TCP proxy this test controls. While
//! DPoP traffic runs (every proof sent to both gateways at once), the proxy passes, stalls,
//! resets and refuses Redis connections on a fixed schedule. Afterwards: no proof was admitted
//! twice, every request was answered, and the gateways' memory stayed flat.

use crate::bank::*;
use crate::support::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASS: u8 = 0;
/// Connections stay open, no byte moves.
const STALL: u8 = 1;
/// New connections are accepted and closed at once.
const REFUSE: u8 = 2;
/// New connections reach Redis only after `LATE_BY`.
const LATE: u8 = 3;
const LATE_BY: Duration = Duration::from_secs(1);

/// A TCP proxy to `target` whose behaviour the test switches.
struct ChaosProxy {
    port: u16,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl ChaosProxy {
    fn start(target: u16) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, o, s) = (mode.clone(), open.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                match m.load(Ordering::Relaxed) {
                    REFUSE => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    LATE => {
                        let (m, o) = (m.clone(), o.clone());
                        std::thread::spawn(move || {
                            std::thread::sleep(LATE_BY);
                            relay(client, target, m, &o);
                        });
                    }
                    _ => relay(client, target, m.clone(), &o),
                }
            }
        });
        ChaosProxy {
            port,
            mode,
            open,
            stop,
        }
    }

    /// Cuts every connection open through the proxy.
    fn reset(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A Redis server of its own behind a `ChaosProxy`; the server stops when this is dropped.
struct ProxiedRedis {
    proxy: ChaosProxy,
    server: Child,
    _dir: tempfile::TempDir,
}

impl ProxiedRedis {
    fn start() -> ProxiedRedis {
        let dir = tempfile::tempdir().unwrap();
        let (server, port) =
            crate::redis_tcp::start_on_free_ports(&dir.path().join("redis"), |free| {
                let port = free();
                (port, vec!["--port".into(), port.to_string()])
            });
        ProxiedRedis {
            proxy: ChaosProxy::start(port),
            server,
            _dir: dir,
        }
    }

    /// The proxy's URL, for the gateways.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for ProxiedRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Connects `client` to Redis at `target` and copies both ways, stalling while `mode` says so.
fn relay(client: TcpStream, target: u16, mode: Arc<AtomicU8>, open: &Mutex<Vec<TcpStream>>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    if let (Ok(c), Ok(sv)) = (client.try_clone(), server.try_clone()) {
        open.lock().unwrap().extend([c, sv]);
    }
    for (mut from, mut to) in [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ] {
        let mode = mode.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                while mode.load(Ordering::Relaxed) == STALL {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.reset();
    }
}

/// Three clients send fresh proofs, each to `a` and `b` at once, until `faults` returns;
/// the two statuses of every proof.
pub fn under_load(bank: &Bank, b: &Gateway, faults: impl FnOnce()) -> Vec<(u16, u16)> {
    let done = AtomicBool::new(false);
    let outcomes: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let (token, key) = bank.dpop_token("tpp", "ES256", None);
                while !done.load(Ordering::Relaxed) {
                    let proof = bank
                        .auth
                        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
                    let (first, second) = std::thread::scope(|both| {
                        let first = both.spawn(|| {
                            accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(&proof))
                        });
                        let second = both
                            .spawn(|| accounts_with(b, &bank.pki, "DPoP", &token, Some(&proof)));
                        (first.join().unwrap().status, second.join().unwrap().status)
                    });
                    outcomes.lock().unwrap().push((first, second));
                }
            });
        }
        faults();
        done.store(true, Ordering::Relaxed);
    });
    outcomes.into_inner().unwrap()
}

/// How many proofs both gateways admitted: a replay accepted.
pub fn admitted_twice(outcomes: &[(u16, u16)]) -> usize {
    outcomes
        .iter()
        .filter(|(a, b)| *a == 200 && *b == 200)
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// How long the faults go on: 20 s in the suite, `FAPIGATE_CHAOS_SECONDS` for a longer run
/// (`bench/chaos.sh` runs 60 s).
fn chaos_seconds() -> Duration {
    let seconds = std::env::var("FAPIGATE_CHAOS_SECONDS")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("FAPIGATE_CHAOS_SECONDS: whole seconds")
        })
        .unwrap_or(20);
    Duration::from_secs(seconds)
}

#[test]
fn dpop_11_1_2_no_replay_is_accepted_while_redis_stalls_resets_and_refuses() {
    let redis = ProxiedRedis::start();
    let proxy = &redis.proxy;
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        public_url: Some("https://api.bank.test"),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let pids = [bank.gateway.child.id(), replica.child.id()];
    let rss_before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    let outcomes = under_load(&bank, &replica, || {
        // The schedule: pass, stall, reset and refuse for chaos_seconds(), then a clean pass.
        let started = Instant::now();
        let mut step = 0;
        while started.elapsed() < chaos_seconds() {
            match step % 4 {
                0 => proxy.mode.store(PASS, Ordering::Relaxed),
                1 => proxy.mode.store(STALL, Ordering::Relaxed),
                2 => {
                    proxy.mode.store(PASS, Ordering::Relaxed);
                    proxy.reset();
                }
                _ => {
                    proxy.mode.store(REFUSE, Ordering::Relaxed);
                    proxy.reset();
                }
            }
            step += 1;
            std::thread::sleep(Duration::from_millis(1500));
        }
        proxy.mode.store(PASS, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs(2));
    });
    let admitted_twice = admitted_twice(&outcomes);
    let unanswered = outcomes.iter().filter(|(a, b)| *a == 0 || *b == 0).count();
    let admitted = outcomes
        .iter()
        .filter(|(a, b)| *a == 200 || *b == 200)
        .count();
    let refused = outcomes
        .iter()
        .flat_map(|(a, b)| [a, b])
        .filter(|s| **s == 503)
        .count();
    let rss_after: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    println!(
        "chaos: {} proofs sent to both gateways, {admitted} admitted once, {refused} answers 503, \
         {admitted_twice} admitted twice, {unanswered} unanswered; RSS KiB before {rss_before:?} \
         after {rss_after:?}",
        outcomes.len()
    );
    assert_eq!(admitted_twice, 0, "a replay was accepted");
    assert_eq!(unanswered, 0, "a request hung past curl's 10 s");
    assert!(admitted > 0 && refused > 0, "the schedule did not bite");
    for (before, after) in rss_before.iter().zip(&rss_after) {
        assert!(
            after < &(before + 64 * 1024),
            "memory grew: {before} -> {after} KiB"
        );
    }
    for (a, b) in &outcomes {
        for status in [a, b] {
            assert!([200, 401, 503].contains(status), "unexpected {status}");
        }
    }
}

/// A gateway says ready only once its Redis connection is made: a request sent while the
/// first connection attempt runs would get 503 (requests do not queue behind an attempt).
/// Redis answers each new connection a second late here, so without that order the first
/// proof after ready gets 503 (CI saw it through Sentinel over TLS).
#[test]
fn dpop_11_1_2_the_first_proof_after_ready_finds_redis_connected() {
    let redis = ProxiedRedis::start();
    let proxy = &redis.proxy;
    proxy.mode.store(LATE, Ordering::Relaxed);
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        state_extra: "redis_timeout = \"5s\"\n".into(),
        ..Options::default()
    });
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let first = bank.dpop_get("/accounts", &token, &key, &[]);
    assert_eq!(first.status, 200, "{first:?}");
    bank.metrics_showing("fapigate_shared_state_up 1");
}
