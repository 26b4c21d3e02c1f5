//! Hostile requests that play with time: a request held open must be judged at the moment of
//! the decision, and a request that has not proven who sent it never has its body waited for.

use crate::bank::*;

/// One raw HTTP/1.1 exchange on the gateway's plain listener; the response as text.
pub fn raw_exchange(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).to_string()
}

/// Sends `head` (request line and headers, ending in an empty line) over TLS at once, then
/// `body` one byte every `gap`, as a client holding a request open would; returns the
/// response as text.
fn trickle(bank: &Bank, head: &str, body: &[u8], gap: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", bank.gateway.port))
        .arg("-CAfile")
        .arg(bank.pki.ca())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(head.as_bytes()).unwrap();
    stdin.flush().unwrap();
    for byte in body {
        std::thread::sleep(gap);
        // The gateway may answer (and close) before the body is complete.
        if stdin
            .write_all(&[*byte])
            .and_then(|()| stdin.flush())
            .is_err()
        {
            break;
        }
    }
    let mut response = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut response)
        .unwrap();
    drop(stdin);
    let _ = client.wait();
    response
}

/// A `GET /accounts` with a DPoP token and proof and a form body of `length` bytes to follow.
fn form_request_head(port: u16, token: &str, proof: &str, length: usize) -> String {
    format!(
        "GET /accounts HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: DPoP {token}\r\n\
         DPoP: {proof}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
}

/// Requests with fresh proofs sent while a replay is held open.
const CONCURRENT: usize = 12;

fn held_open_replay(bank: &Bank) {
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    let first =
        crate::support::accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(&proof));
    assert_eq!(first.status, 200, "{first:?}");
    // The same token and proof again, the body held open far past the proof window (2 s + 1 s
    // skew): judged at the moment of the decision, the proof is too old.
    let body = b"x=12345678";
    let head = form_request_head(bank.gateway.port, &token, &proof, body.len());
    // Other clients keep the gateway and the replay store busy meanwhile: each fresh proof
    // is admitted once, none is taken for a replay.
    let (response, others) = std::thread::scope(|scope| {
        let others = scope.spawn(|| {
            (0..CONCURRENT)
                .map(|_| bank.dpop_get("/accounts", &token, &key, &[]).status)
                .collect::<Vec<_>>()
        });
        let response = trickle(bank, &head, body, std::time::Duration::from_millis(600));
        (response, others.join().unwrap())
    });
    assert_eq!(others, vec![200; CONCURRENT], "fresh proofs meanwhile");
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let expected = format!(
        "WWW-Authenticate: {}",
        dpop_challenge(
            "invalid_dpop_proof",
            "the DPoP proof iat is outside the acceptable window"
        )
    );
    let challenge = response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .unwrap_or_default();
    assert!(
        challenge
            .to_ascii_lowercase()
            .starts_with(&expected.to_ascii_lowercase()),
        "{response}"
    );
    assert_eq!(
        bank.upstream.requests_for("/accounts"),
        1 + CONCURRENT,
        "proxied a second time"
    );
}

#[test]
fn hostile_a_held_open_request_cannot_replay_a_used_proof_memory_store() {
    held_open_replay(&Bank::start(Options {
        // The body's pace alone must not be what refuses it here.
        body_min_rate: 0,
        dpop_proof_max_age: "2s",
        max_clock_skew: "1s",
        ..Options::default()
    }));
}

#[test]
fn hostile_a_held_open_request_cannot_replay_a_used_proof_redis_store() {
    let redis = crate::support::RedisServer::start();
    held_open_replay(&Bank::start(Options {
        body_min_rate: 0,
        dpop_proof_max_age: "2s",
        max_clock_skew: "1s",
        redis: Some(redis.url()),
        public_url: Some("https://api.bank.example"),
        ..Options::default()
    }));
}

#[test]
fn hostile_a_body_trickled_past_body_timeout_gets_408() {
    let bank = Bank::start(Options {
        body_timeout: "2s",
        ..Options::default()
    });
    trickled_form_gets_408(&bank, 400);
}

/// A request whose head does not pass is answered without waiting for its body: the body
/// (declared, never sent) would otherwise hold the connection until `body_timeout`.
#[test]
fn hostile_an_unauthenticated_request_never_has_its_body_waited_for() {
    let bank = Bank::start(Options {
        body_timeout: "60s",
        ..Options::default()
    });
    let (token, _) = bank.dpop_token("tpp", "ES256", None);
    let port = bank.gateway.plain_port;
    let head = |authorization: &str| {
        format!(
            "POST /payments HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
    };
    // No credential at all, and a valid token without its proof.
    let none = raw_exchange(port, &head(""));
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    let metadata = bank.url("/.well-known/oauth-protected-resource");
    let expected = format!(
        "www-authenticate: Bearer resource_metadata=\"{metadata}\", \
         DPoP algs=\"ES256 PS256 EdDSA\", resource_metadata=\"{metadata}\"\r\n"
    );
    assert!(none.contains(&expected), "{none}");
    let unproven = raw_exchange(port, &head(&format!("Authorization: DPoP {token}\r\n")));
    assert!(unproven.starts_with("HTTP/1.1 401"), "{unproven}");
    let expected = dpop_challenge("invalid_dpop_proof", "a DPoP proof is required");
    assert!(
        unproven
            .to_ascii_lowercase()
            .contains(&format!("www-authenticate: {expected}").to_ascii_lowercase()),
        "{unproven}"
    );
    bank.metrics_showing(
        "fapigate_rejections_total{reason=\"no_credentials\",route=\"payments\"} 1",
    );
    assert_eq!(bank.upstream.requests_for("/payments"), 0);
}

/// BEARER-2.3 (RFC 6750 §2): a token in a form body is refused even beside a valid header
/// token; the form is read only once the header token and its proof have passed.
#[test]
fn hostile_bearer_2_3_a_form_token_beside_a_valid_header_token_is_refused() {
    let bank = Bank::start(Options::default());
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let response = bank.dpop_get(
        "/accounts",
        &token,
        &key,
        &[
            "-X",
            "GET",
            "-H",
            "content-type: application/x-www-form-urlencoded",
            "--data",
            "x=1&access_token=abc",
        ],
    );
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(response.json()["error"], "invalid_request");
    assert_eq!(
        response.json()["error_description"],
        "access tokens are accepted in the Authorization header only"
    );
    assert_eq!(bank.upstream.requests_for("/accounts"), 0);
}

/// One response read from a raw HTTP/1.1 connection (head and a `Content-Length` body), or
/// `None` when the connection closed first.
fn read_response(stream: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => bytes.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&bytes).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// Whether the peer has closed `stream` (a read returns end of file or a reset).
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        // This client's own read timeout is not the peer closing.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn connect(port: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Issue 13 §8: a request head trickled in (each byte well within Pingora's 60 s per-read
/// limit) is cut off once `header_timeout` has passed, and never reaches the upstream.
#[test]
fn hostile_a_request_head_trickled_past_header_timeout_is_cut_off() {
    use std::io::Write;
    let bank = Bank::start(Options {
        header_timeout: "1s",
        ..Options::default()
    });
    let mut stream = connect(bank.gateway.plain_port);
    let head = b"GET /status HTTP/1.1\r\nHost: bank\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
    // Sent over far more than 1 s; the gateway closes the connection before the head ends.
    let mut cut_off = false;
    for byte in head {
        if stream.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !cut_off {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let answer = read_response(&mut stream);
        assert_eq!(answer, None, "the trickled head was answered");
    }
    bank.metrics_showing("fapigate_rejections_total{reason=\"header_timeout\",route=\"none\"} 1");
    assert_eq!(bank.upstream.requests_for("/status"), 0);
}

/// Issue 13 §8: a keep-alive connection serves requests that follow one another, and is
/// closed once it has waited `idle_timeout` for the next (Pingora alone waits 60 s).
#[test]
fn hostile_an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    use std::io::Write;
    let bank = Bank::start(Options {
        header_timeout: "1s",
        idle_timeout: "1s",
        ..Options::default()
    });
    let mut stream = connect(bank.gateway.plain_port);
    let request = b"GET /status HTTP/1.1\r\nHost: bank\r\n\r\n";
    for _ in 0..3 {
        stream.write_all(request).unwrap();
        let response = read_response(&mut stream).expect("answered on the kept-alive connection");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    // Nothing more is sent: the gateway closes the connection well before the 20 s read
    // timeout of this client.
    assert!(
        closed_by_peer(&mut stream),
        "the idle connection stayed open"
    );
    assert_eq!(bank.upstream.requests_for("/status"), 3);
}

/// Issue 13 §1: past a 2 s grace, a body must keep up `body_min_rate` (240 bytes/s): ten bytes
/// trickled over six seconds are cut off long before the 30 s `body_timeout`.
#[test]
fn hostile_a_body_slower_than_body_min_rate_gets_408() {
    let bank = Bank::start(Options {
        body_timeout: "30s",
        ..Options::default()
    });
    trickled_form_gets_408(&bank, 600);
}

/// A form body for a fresh, valid proof, trickled a byte every `gap_ms`: 408, not proxied.
fn trickled_form_gets_408(bank: &Bank, gap_ms: u64) {
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    let body = b"x=12345678";
    let head = form_request_head(bank.gateway.port, &token, &proof, body.len());
    let response = trickle(bank, &head, body, std::time::Duration::from_millis(gap_ms));
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.contains("the request body did not arrive in time"),
        "{response}"
    );
    assert_eq!(bank.upstream.requests_for("/accounts"), 0);
}
