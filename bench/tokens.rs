//! The token stage: `Tokens::validate` on a cache hit (JWT and opaque), and uncached JWT
//! verification (`token::jwt::verify_access_token`) for ES256, PS256 and EdDSA.
//!
//! `cargo bench --bench tokens -- --warm-up-time 1 --measurement-time 3`
//!
//! The opaque hit path needs one real introspection to fill the cache (the cache is private):
//! a stub AS on a loopback socket answers it once; the bench checks it was called only once.

#[path = "support.rs"]
mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fapigate::stages::KeySet;
use fapigate::stages::Tokens;
use fapigate::stages::{verify_access_token, JwtIssuer};
use fapigate::stages::{Credential, Scheme};
use fapigate::Metrics;
use jsonwebtoken::Algorithm;
use sha2::Digest;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A loopback "AS" that answers every introspection request with `body`, counting calls.
fn stub_introspection(body: String) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counter = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&chunk[..n]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, calls)
}

/// Runs `iters` awaits of `f` inside one `block_on` and returns their total time; every
/// result must be `Ok`.
/// Tokens::validate as a request runs it: the credential (and its token's SHA-256) taken from
/// the Authorization header first.
async fn validate(
    tokens: &Tokens,
    token: &str,
    now: u64,
) -> Result<std::sync::Arc<fapigate::stages::Grant>, String> {
    let credential = Credential::new(Scheme::Bearer, token.to_string());
    tokens
        .validate(&credential, now)
        .await
        .map_err(|e| format!("{e:?}"))
}

fn timed_loop<F, Fut, T, E>(rt: &tokio::runtime::Runtime, iters: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f().await.unwrap());
        }
        start.elapsed()
    })
}

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = now();
    let as_keys = [es256_key("as-es"), ps256_key("as-ps"), eddsa_key("as-ed")];
    let client_key = es256_key("client");
    let jkt = client_key.jkt();
    let jwks = serde_json::json!({
        "keys": as_keys.iter().map(TestKey::published_jwk).collect::<Vec<_>>()
    });
    std::fs::write(dir.path().join("as-jwks.json"), jwks.to_string()).unwrap();
    write_private(&dir.path().join("introspection-secret"), "s3cret\n");
    let introspection_answer = serde_json::json!({
        "active": true, "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "client_id": "tpp-001",
        "scope": "accounts payments", "iat": now, "exp": now + 3600, "token_type": "DPoP",
        "cnf": {"jkt": jkt},
        "authorization_details": [{"type": "account_information",
            "actions": ["read_balances"], "accounts": ["acc-1", "acc-2"]}],
    })
    .to_string();
    let (as_addr, as_calls) = stub_introspection(introspection_answer);
    let policy = policy(
        dir.path(),
        &format!(
            r#"
[[issuer]]
id = "bank-as"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "as-jwks.json"

[issuer.introspection]
endpoint = "http://{as_addr}/introspect"
client_id = "fapigate"
auth = "client_secret_basic"
secret_file = "introspection-secret"
signed_response = false
cache_max_ttl = "5m"
timeout = "2s"
"#
        ),
    );
    let metrics = Arc::new(Metrics::new().unwrap());
    let rt = runtime();

    // (a) and (c): the cache-hit path of Tokens::validate.
    let tokens = Tokens::new(&policy, metrics.clone(), None).unwrap();
    let jwt = access_token(&as_keys[0], &jkt, "at-cached", now);
    let opaque = b64url(sha2::Sha256::digest(b"an opaque access token"));
    rt.block_on(validate(&tokens, &jwt, now))
        .expect("the JWT validates");
    rt.block_on(validate(&tokens, &opaque, now))
        .expect("the opaque token is introspected as active");
    assert_eq!(as_calls.load(Ordering::SeqCst), 1);
    println!(
        "access token: {} bytes; opaque token: {} bytes",
        jwt.len(),
        opaque.len()
    );

    let mut group = c.benchmark_group("tokens/cached");
    group.bench_function("validate_hit/jwt_es256", |b| {
        b.iter_custom(|iters| timed_loop(&rt, iters, || validate(&tokens, black_box(&jwt), now)))
    });
    group.bench_function("validate_hit/opaque", |b| {
        b.iter_custom(|iters| timed_loop(&rt, iters, || validate(&tokens, black_box(&opaque), now)))
    });
    // Parts of the hit path, to see where its time goes.
    group.bench_function("part/sha256_of_jwt", |b| {
        b.iter(|| -> [u8; 32] { sha2::Sha256::digest(black_box(&jwt).as_bytes()).into() })
    });
    group.bench_function("part/looks_like_jwt", |b| {
        b.iter(|| fapigate::stages::looks_like_jwt(black_box(&jwt)))
    });
    group.bench_function("part/metrics_counter_inc", |b| {
        b.iter(|| {
            metrics
                .token_cache
                .with_label_values(&[black_box("jwt"), "hit"])
                .inc()
        })
    });
    group.finish();
    assert_eq!(
        as_calls.load(Ordering::SeqCst),
        1,
        "the opaque hit bench must not call the AS"
    );

    // (b) uncached JWT verification, per algorithm.
    let issuer_policy = &policy.issuers[0];
    let issuer = JwtIssuer {
        issuer: issuer_policy.issuer.clone(),
        audiences: issuer_policy.audiences.clone(),
        keys: KeySet::from_policy(
            &issuer_policy.id,
            &issuer_policy.jwks,
            issuer_policy.jwks_refresh,
            metrics.clone(),
        )
        .unwrap(),
    };
    let algs = [Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];
    let skew = Duration::from_secs(10);
    let mut group = c.benchmark_group("tokens/uncached");
    for key in &as_keys {
        let token = access_token(key, &jkt, "at-uncached", now);
        rt.block_on(verify_access_token(&token, &issuer, &algs, skew, now))
            .expect("verifies");
        group.bench_function(format!("verify_access_token/{}", alg_name(key.alg)), |b| {
            b.iter_custom(|iters| {
                timed_loop(&rt, iters, || {
                    verify_access_token(black_box(&token), &issuer, &algs, skew, now)
                })
            })
        });
        // The bare signature check inside it, for comparison.
        let decoding = jsonwebtoken::DecodingKey::from_jwk(
            &serde_json::from_value(key.public_jwk.clone()).unwrap(),
        )
        .unwrap();
        let (message, signature) = token.rsplit_once('.').unwrap();
        group.bench_function(format!("signature_only/{}", alg_name(key.alg)), |b| {
            b.iter(|| {
                assert!(jsonwebtoken::crypto::verify(
                    black_box(signature),
                    black_box(message.as_bytes()),
                    &decoding,
                    key.alg
                )
                .unwrap())
            })
        });
    }
    // A cache miss end to end (verification + cache insert), distinct tokens each time.
    let miss_tokens = Tokens::new(&policy, metrics.clone(), None).unwrap();
    let serial = AtomicU64::new(0);
    group.bench_function("validate_miss/ES256", |b| {
        b.iter_custom(|iters| {
            let fresh: Vec<String> = (0..iters)
                .map(|_| {
                    let n = serial.fetch_add(1, Ordering::Relaxed);
                    access_token(&as_keys[0], &jkt, &format!("at-{n}"), now)
                })
                .collect();
            let mut next = fresh.iter();
            timed_loop(&rt, iters, || {
                validate(&miss_tokens, next.next().unwrap(), now)
            })
        })
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
