//! Response signing (RFC 9421, FAPI 2.0 HTTP Signatures): `signing::httpsig::sign_response`
//! (base construction, signature, field values) for a typical FAPI response (content-type,
//! content-digest, x-fapi-interaction-id) to a signed request (content-digest, signature);
//! the ed25519 signature alone; the base as a verifier builds it from `Signature-Input`; and
//! RFC 9530 Content-Digest of 1 KiB and 16 KiB bodies.
//!
//! `cargo bench --bench signing -- --warm-up-time 1 --measurement-time 3`
//!
//! Target: sign_response with ed25519 under 20 µs.
//!
//! `hsm/*`: the same signature made through PKCS#11 by a SoftHSM2 token (the key generated
//! in it), beside the same algorithm from a key file, when `softhsm2` and `opensc` are
//! installed (skipped otherwise).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fapigate::http_signatures::SigningKey;
use fapigate::http_signatures::{content_digest, verify_content_digest};
use fapigate::http_signatures::{sign_response, RequestBinding, VerifiedSignature};
use fapigate::http_signatures::{signature_base, MessageView};
use http::{HeaderMap, HeaderName, HeaderValue};
use sfv::ListEntry;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn body(len: usize) -> Vec<u8> {
    // JSON-ish bytes; the content does not matter to SHA-256.
    let unit = br#"{"accountId":"acc-1","amount":"100.00","currency":"EUR"},"#;
    unit.iter().copied().cycle().take(len).collect()
}

fn bench_signing(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let ed25519 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed25519 = SigningKey::from_pkcs8_der(ed25519.as_ref(), "rs-2026-11").unwrap();
    let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let p256 = SigningKey::from_pkcs8_der(p256.as_ref(), "rs-2026-11-ec").unwrap();

    // A signed payment request as a TPP sends it.
    let request_body = br#"{"instructedAmount":{"currency":"EUR","amount":"100.00"},"creditorAccount":{"iban":"DE02100100109307118603"},"creditorName":"Merchant A","remittanceInformation":"invoice 42"}"#;
    let client_signature =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 64]);
    let signature_input = r#"client=("@method" "@target-uri" "authorization" "dpop" "content-digest");created=1700000000;keyid="tpp-001-sig";tag="fapi-2-request""#;
    let request_headers = headers(&[
        ("host", "api.bank.example"),
        ("authorization", &format!("DPoP {}", "a".repeat(900))),
        ("dpop", &"b".repeat(600)),
        ("content-type", "application/json"),
        ("content-length", &request_body.len().to_string()),
        ("content-digest", &content_digest(request_body)),
        (
            "x-fapi-interaction-id",
            "6a0b2c1e-4f5d-4e8a-9b7c-0d1e2f3a4b5c",
        ),
        ("signature-input", signature_input),
        ("signature", &format!("client=:{client_signature}:")),
    ]);
    // The upstream's 201 response.
    let response_body = br#"{"paymentId":"pmt-7781","status":"AcceptedSettlementInProcess","instructedAmount":{"currency":"EUR","amount":"100.00"}}"#;
    let response_headers = headers(&[
        ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("content-type", "application/json"),
        ("content-length", &response_body.len().to_string()),
        ("content-digest", &content_digest(response_body)),
        (
            "x-fapi-interaction-id",
            "6a0b2c1e-4f5d-4e8a-9b7c-0d1e2f3a4b5c",
        ),
        ("cache-control", "no-store"),
    ]);
    let response = MessageView {
        method: None,
        target_uri: None,
        status: Some(201),
        headers: &response_headers,
    };
    let request_message = || MessageView {
        method: Some("POST"),
        target_uri: Some("https://api.bank.example/payments"),
        status: None,
        headers: &request_headers,
    };
    // As the gateway has it when it signs: the request signature's members from verifying it,
    // and the authority of `public_url`.
    let verified = VerifiedSignature::find("client", &request_message()).unwrap();
    let request = RequestBinding {
        message: request_message(),
        signature: Some(&verified),
        authority: Some("api.bank.example"),
    };
    let created = 1_700_000_000;

    let (input, _) = sign_response(&ed25519, &response, &request, created).unwrap();
    println!("Signature-Input: {input}");
    let list = match sfv::Parser::parse_dictionary(input.as_bytes())
        .unwrap()
        .get("sig1")
        .unwrap()
    {
        ListEntry::InnerList(list) => list.clone(),
        ListEntry::Item(_) => unreachable!("an inner list"),
    };
    let base = signature_base(&list, &response, Some(&request.message)).unwrap();
    println!("signature base: {} bytes", base.len());

    let mut group = c.benchmark_group("signing");
    group.bench_function("sign_response/ed25519", |b| {
        b.iter(|| {
            sign_response(&ed25519, black_box(&response), black_box(&request), created).unwrap()
        })
    });
    group.bench_function("sign_response/ecdsa-p256-sha256", |b| {
        b.iter(|| sign_response(&p256, black_box(&response), black_box(&request), created).unwrap())
    });
    // What a verifier does: the base from a parsed Signature-Input, `;key` members included.
    group.bench_function("part/signature_base_from_input", |b| {
        b.iter(|| {
            signature_base(
                black_box(&list),
                black_box(&response),
                Some(&request.message),
            )
            .unwrap()
        })
    });
    group.bench_function("part/ed25519_sign_base", |b| {
        b.iter(|| ed25519.sign(black_box(base.as_bytes()), false).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("content_digest");
    for (label, len) in [("1KiB", 1024usize), ("16KiB", 16 * 1024)] {
        let bytes = body(len);
        let header = content_digest(&bytes);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(
            BenchmarkId::new("create_sha256", label),
            &bytes,
            |b, bytes| b.iter(|| content_digest(black_box(bytes))),
        );
        group.bench_with_input(
            BenchmarkId::new("verify_sha256", label),
            &bytes,
            |b, bytes| {
                b.iter(|| verify_content_digest(black_box(&header), black_box(bytes)).unwrap())
            },
        );
    }
    group.finish();
}

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token in `dir` with keys `ed` (Ed25519) and `p256`; false when SoftHSM2 or
/// pkcs11-tool is missing.
fn softhsm_token(dir: &std::path::Path) -> bool {
    if !std::path::Path::new(SOFTHSM).exists() {
        return false;
    }
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    // Read by the module when it is loaded, below, in this single-threaded set-up.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let run = |tool: &str, args: &[&str]| {
        std::process::Command::new(tool)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    run(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ],
    ) && [("EC:edwards25519", "ed"), ("EC:prime256v1", "p256")]
        .iter()
        .all(|(kind, label)| {
            run(
                "pkcs11-tool",
                &[
                    "--module",
                    SOFTHSM,
                    "--token-label",
                    "bench",
                    "--login",
                    "--pin",
                    "1234",
                    "--keypairgen",
                    "--key-type",
                    kind,
                    "--label",
                    label,
                ],
            )
        })
}

fn bench_hsm(c: &mut Criterion) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    if !softhsm_token(dir.path()) {
        println!("hsm: skipped (softhsm2 and opensc are not installed)");
        return;
    }
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uri = |object: &str| fapigate::Pkcs11Uri {
        text: format!("pkcs11:token=bench;object={object}"),
        module: SOFTHSM.into(),
        token: Some("bench".into()),
        serial: None,
        object: Some(object.into()),
        id: None,
    };
    let message = vec![7u8; 400];
    let rng = SystemRandom::new();
    let ed_file = SigningKey::from_pkcs8_der(
        Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref(),
        "file",
    )
    .unwrap();
    let p256_file = SigningKey::from_pkcs8_der(
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref(),
        "file",
    )
    .unwrap();
    let mut group = c.benchmark_group("hsm");
    for (label, object, file) in [
        ("ed25519", "ed", &ed_file),
        ("ecdsa-p256", "p256", &p256_file),
    ] {
        let hsm = SigningKey::from_hsm(&uri(object), &pin, "hsm").unwrap();
        group.bench_function(format!("pkcs11_softhsm2/{label}"), |b| {
            b.iter(|| hsm.sign(black_box(&message), false).unwrap())
        });
        group.bench_function(format!("key_file/{label}"), |b| {
            b.iter(|| file.sign(black_box(&message), false).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_signing, bench_hsm);
criterion_main!(benches);
