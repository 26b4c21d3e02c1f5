//! DPoP: the stateless proof check (`binding::dpop::verify`) for ES256, PS256 and EdDSA proofs
//! next to the bare signature verification of the same proof (`jsonwebtoken::crypto::verify`
//! with a ready key), and the whole binding stage (`Binder::bind`: proof check, key binding
//! and the replay store) with a fresh proof per iteration.
//!
//! `cargo bench --bench dpop -- --warm-up-time 1 --measurement-time 3`
//!
//! Target: DPoP check <= signature verification + 10 µs. After the criterion groups the bench
//! prints both (medians of its own short timing loop) and the difference.
// The binding stage's future holds the Redis client's TLS connection types: deeper than
// the default limit lets rustc lay out.
#![recursion_limit = "256"]

#[path = "support.rs"]
mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fapigate::stages::dpop::{self, ProofContext};
use fapigate::stages::Binder;
use fapigate::stages::RequestFacts;
use fapigate::stages::{Confirmation, Grant};
use fapigate::stages::{Credential, Scheme};
use http::{HeaderMap, HeaderValue, Method};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::Digest;
use std::time::{Duration, Instant};
use support::*;

const PATH: &str = "/accounts/acc-1/balances";
const ALGS: [Algorithm; 3] = [Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

/// Median time of one call of `a`, of `b`, and of their difference, over 21 interleaved
/// rounds of `per_round` calls each (interleaving keeps a noisy neighbour from landing on
/// only one side of the comparison).
fn paired_medians<A: FnMut(), B: FnMut()>(
    per_round: u32,
    mut a: A,
    mut b: B,
) -> (Duration, Duration, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..per_round {
            f();
        }
        start.elapsed() / per_round
    };
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut diffs = Vec::new();
    for _ in 0..21 {
        let x = time(&mut a);
        let y = time(&mut b);
        diffs.push(micros(x) - micros(y));
        xs.push(x);
        ys.push(y);
    }
    xs.sort();
    ys.sort();
    diffs.sort_by(f64::total_cmp);
    (xs[10], ys[10], diffs[10])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn dpop(c: &mut Criterion) {
    let now = now();
    let target_uri = format!("{PUBLIC_URL}{PATH}");
    let as_key = es256_key("as");
    let keys = [es256_key("c-es"), ps256_key("c-ps"), eddsa_key("c-ed")];

    // `cargo test --all-targets` runs each benchmark once, without `--bench`: skip the extra
    // timing loops then.
    let benchmarking = std::env::args().any(|a| a == "--bench");

    // Stateless check vs bare signature, per algorithm.
    let mut comparison = Vec::new();
    let mut group = c.benchmark_group("dpop");
    for key in &keys {
        let alg = alg_name(key.alg);
        let token = access_token(&as_key, &key.jkt(), "at-1", now);
        let token_sha256: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let context = ProofContext {
            method: "GET",
            target_uri: &target_uri,
            access_token_sha256: &token_sha256,
            now,
            algs: &ALGS,
            max_clock_skew: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
            keys: None,
        };
        let proof = dpop_proof(key, "jti-1", "GET", &target_uri, &token, now);
        // As the gateway runs it: the client's key known from its earlier proofs.
        let proof_keys = dpop::ProofKeys::new(1 << 20);
        let known = ProofContext {
            keys: Some(&proof_keys),
            ..context
        };
        dpop::verify(&proof, &known).expect("the proof is valid");
        let valid = dpop::verify(&proof, &context).expect("the proof is valid");
        assert_eq!(valid.jkt, key.jkt());
        let decoding =
            DecodingKey::from_jwk(&serde_json::from_value(key.public_jwk.clone()).unwrap())
                .unwrap();
        let (message, signature) = proof.rsplit_once('.').unwrap();
        let bare = || {
            assert!(jsonwebtoken::crypto::verify(
                black_box(signature),
                black_box(message.as_bytes()),
                &decoding,
                key.alg
            )
            .unwrap())
        };
        let full = || dpop::verify(black_box(&proof), &context).unwrap();

        group.bench_function(format!("verify/{alg}"), |b| b.iter(full));
        group.bench_function(format!("signature_only/{alg}"), |b| b.iter(bare));
        group.bench_function(format!("verify_known_key/{alg}"), |b| {
            b.iter(|| dpop::verify(black_box(&proof), &known).unwrap())
        });
        if !benchmarking {
            continue;
        }
        let (full_median, bare_median, overhead) = paired_medians(500, || drop(full()), bare);
        comparison.push((alg, proof.len(), full_median, bare_median, overhead));
    }

    // The binding stage with the replay store: every iteration needs a proof never seen
    // before, made (untimed) before each sample. PS256 is left out: making 10^4..10^5 RSA
    // signatures per sample would take minutes; its verification cost is covered above.
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(dir.path(), "");
    let local = fapigate::LocalState::new(&policy).unwrap();
    let binder = Binder::new(&policy, None, &local).unwrap();
    let rt = runtime();
    let mut serial = 0u64;
    for key in keys.iter().filter(|k| k.alg != Algorithm::PS256) {
        let alg = alg_name(key.alg);
        let token = access_token(&as_key, &key.jkt(), "at-1", now);
        let credential = Credential::new(Scheme::Dpop, token.clone());
        let grant = Grant {
            issuer: ISSUER.into(),
            subject: Some("alice".into()),
            client_id: Some("tpp-001".into()),
            scopes: vec!["accounts".into()],
            authorization_details: vec![],
            cnf: Confirmation {
                jkt: Some(key.jkt()),
                x5t_s256: None,
            },
            expires_at: Some(now + 3600),
            issued_at: Some(now),
            acr: None,
            auth_time: None,
            token_id: Some("at-1".into()),
            token_type: None,
            claims: Default::default(),
        };
        let mut fresh_headers = |count: u64| -> Vec<HeaderMap> {
            (0..count)
                .map(|_| {
                    serial += 1;
                    let proof = dpop_proof(
                        key,
                        &format!("jti-{serial}"),
                        "GET",
                        &target_uri,
                        &token,
                        now,
                    );
                    let mut headers = HeaderMap::new();
                    headers.insert("dpop", HeaderValue::from_str(&proof).unwrap());
                    headers
                })
                .collect()
        };
        let bind_all = |all: &[HeaderMap]| {
            rt.block_on(async {
                let start = Instant::now();
                for headers in all {
                    let facts = RequestFacts {
                        method: &Method::GET,
                        path: PATH,
                        query: None,
                        headers,
                        client_cert: None,
                        peer: None,
                        body: None,
                        raw_body: None,
                        now,
                    };
                    black_box(
                        bind_and_record(&binder, &policy, &credential, &grant, &facts)
                            .await
                            .expect("bound"),
                    );
                }
                start.elapsed()
            })
        };
        // A replayed proof must be refused: the store is really in the path.
        let once = fresh_headers(1);
        bind_all(&once);
        let replay = rt.block_on(bind_and_record(
            &binder,
            &policy,
            &credential,
            &grant,
            &RequestFacts {
                method: &Method::GET,
                path: PATH,
                query: None,
                headers: &once[0],
                client_cert: None,
                peer: None,
                body: None,
                raw_body: None,
                now,
            },
        ));
        assert!(replay.is_err(), "a replayed proof is refused");

        group.bench_function(format!("binder_bind_fresh_proof/{alg}"), |b| {
            b.iter_custom(|iters| {
                let all = fresh_headers(iters);
                bind_all(&all)
            })
        });
    }
    group.finish();

    if !benchmarking {
        return;
    }
    println!();
    println!(
        "DPoP check vs bare signature verification (medians of 21 interleaved rounds of 500 calls):"
    );
    println!(
        "  {:<6} {:>7} {:>12} {:>12} {:>10}  target: overhead <= 10 us",
        "alg", "proof B", "verify us", "sig only us", "overhead"
    );
    for (alg, len, full, bare, overhead) in comparison {
        println!(
            "  {alg:<6} {len:>7} {:>12.2} {:>12.2} {:>10.2}  {}",
            micros(full),
            micros(bare),
            overhead,
            if overhead <= 10.0 { "MET" } else { "MISSED" }
        );
    }
}

criterion_group!(benches, dpop);
criterion_main!(benches);

/// What admission does with a proof: the stateless checks, the binding to the token, and the
/// replay record.
async fn bind_and_record(
    binder: &fapigate::stages::Binder,
    policy: &fapigate::Policy,
    credential: &fapigate::stages::Credential,
    grant: &fapigate::stages::Grant,
    facts: &RequestFacts<'_>,
) -> Result<fapigate::stages::Bound, fapigate::stages::Rejection> {
    let proof = binder.proof(policy, credential, facts)?;
    let mut bound = binder.bind(policy, credential, grant, proof, facts).await?;
    binder.record(&mut bound, facts.now).await?;
    Ok(bound)
}
