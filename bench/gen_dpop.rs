//! Load-benchmark helper for the `dpop` scenario of `bench/load.sh`: mints one DPoP-bound
//! RFC 9068 access token and pre-signs DPoP proofs, so the load generator does no signing.
//!
//! Usage:
//!
//! ```text
//! gen-dpop keys DIR ISSUER AUDIENCE
//!     writes DIR/as.pk8 and DIR/dpop.pk8 (fresh P-256 keys, PKCS#8 DER, mode 600),
//!     DIR/jwks.json (the issuer's public JWKS, for `jwks_file`) and DIR/token (one ES256
//!     at+jwt: iss, aud, exp in 1 h, scope "accounts", cnf.jkt = the DPoP key's thumbprint)
//!     DIR/opaque (an opaque token) and DIR/introspection.json (the AS's RFC 7662 answer for
//!     it: active, the same claims, cnf.jkt), for the opaque-token scenario
//! gen-dpop mtls-token DIR CERT_DER
//!     writes DIR/mtls-token: the same at+jwt claims bound to the certificate CERT_DER
//!     (cnf.x5t#S256, RFC 8705), signed with DIR/as.pk8
//! gen-dpop proofs DIR HTU COUNT OUT [TOKEN_FILE]
//!     writes COUNT DPoP proofs to OUT, one per line: ES256, distinct jti, htm GET, htu HTU,
//!     iat now, ath = base64url(SHA-256(TOKEN_FILE, default DIR/token)); signed with
//!     DIR/dpop.pk8
//! ```

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine;
use sha2::Digest;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const AS_KID: &str = "bench-as-1";

fn b64url(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn new_key(path: &Path) -> Result<EcdsaKeyPair, String> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| "P-256 key generation failed".to_string())?;
    write_private(path, pkcs8.as_ref())?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| "P-256 key does not parse".to_string())
}

fn load_key(path: &Path) -> Result<EcdsaKeyPair, String> {
    let der = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .map_err(|_| format!("{}: not a P-256 PKCS#8 key", path.display()))
}

fn public_jwk(pair: &EcdsaKeyPair) -> serde_json::Value {
    let point = pair.public_key().as_ref();
    serde_json::json!({
        "kty": "EC", "crv": "P-256",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    })
}

/// A compact JWS over `header.claims`, ES256 (fixed-size r||s signature).
fn sign(pair: &EcdsaKeyPair, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    );
    let signature = pair
        .sign(&SystemRandom::new(), message.as_bytes())
        .expect("ECDSA signing");
    format!("{message}.{}", b64url(signature.as_ref()))
}

fn keys(dir: &Path, issuer: &str, audience: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let as_key = new_key(&dir.join("as.pk8"))?;
    let dpop_key = new_key(&dir.join("dpop.pk8"))?;

    let mut published = public_jwk(&as_key);
    published["kid"] = AS_KID.into();
    published["use"] = "sig".into();
    published["alg"] = "ES256".into();
    let jwks = serde_json::json!({ "keys": [published] });
    std::fs::write(dir.join("jwks.json"), format!("{jwks:#}\n"))
        .map_err(|e| format!("jwks.json: {e}"))?;

    let dpop_jwk = public_jwk(&dpop_key);
    let jkt = fapigate::stages::jkt(dpop_jwk.as_object().expect("object")).expect("EC thumbprint");
    let claims = token_claims(issuer, audience, serde_json::json!({"jkt": jkt}));
    let token = sign(&as_key, &token_header(), &claims);
    std::fs::write(dir.join("token"), &token).map_err(|e| format!("token: {e}"))?;

    // The opaque token means nothing by itself: the AS's answer (served to the gateway's
    // introspection call) carries what the JWT's payload carries, plus active.
    let mut answer = claims;
    answer["active"] = true.into();
    answer["token_type"] = "DPoP".into();
    std::fs::write(dir.join("introspection.json"), answer.to_string())
        .map_err(|e| format!("introspection.json: {e}"))?;
    let opaque = format!("bench-opaque-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.join("opaque"), opaque).map_err(|e| format!("opaque: {e}"))?;
    eprintln!("gen-dpop: keys and tokens in {} (jkt {jkt})", dir.display());
    Ok(())
}

fn token_header() -> serde_json::Value {
    serde_json::json!({"typ": "at+jwt", "alg": "ES256", "kid": AS_KID})
}

/// RFC 9068 claims for one hour, bound by `cnf`.
fn token_claims(issuer: &str, audience: &str, cnf: serde_json::Value) -> serde_json::Value {
    let iat = now();
    serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": "bench-user",
        "client_id": "bench-client",
        "scope": "accounts",
        "iat": iat,
        "exp": iat + 3600,
        "jti": uuid::Uuid::new_v4().to_string(),
        "cnf": cnf,
    })
}

fn mtls_token(dir: &Path, cert_der: &Path) -> Result<(), String> {
    let as_key = load_key(&dir.join("as.pk8"))?;
    let der = std::fs::read(cert_der).map_err(|e| format!("{}: {e}", cert_der.display()))?;
    let claims = std::fs::read(dir.join("introspection.json"))
        .map_err(|e| format!("introspection.json: {e}"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&claims).map_err(|e| format!("introspection.json: {e}"))?;
    let (Some(issuer), Some(audience)) = (claims["iss"].as_str(), claims["aud"].as_str()) else {
        return Err("introspection.json: no iss or aud".into());
    };
    let x5t = b64url(sha2::Sha256::digest(&der));
    let claims = token_claims(issuer, audience, serde_json::json!({"x5t#S256": x5t}));
    let token = sign(&as_key, &token_header(), &claims);
    std::fs::write(dir.join("mtls-token"), token).map_err(|e| format!("mtls-token: {e}"))?;
    eprintln!(
        "gen-dpop: mTLS-bound token in {} (x5t#S256 {x5t})",
        dir.display()
    );
    Ok(())
}

fn proofs(dir: &Path, htu: &str, count: usize, out: &Path, token: &Path) -> Result<(), String> {
    let dpop_key = load_key(&dir.join("dpop.pk8"))?;
    let token = std::fs::read_to_string(token).map_err(|e| format!("{}: {e}", token.display()))?;
    let ath = b64url(sha2::Sha256::digest(token.trim().as_bytes()));
    let header =
        serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(&dpop_key)});
    // Header and everything but jti/iat are the same on every line: encode the header once.
    let header_b64 = b64url(header.to_string());
    let rng = SystemRandom::new();
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    let started = std::time::Instant::now();
    for i in 0..count {
        let claims = serde_json::json!({
            "jti": format!("{prefix}-{i}"),
            "htm": "GET",
            "htu": htu,
            "iat": now(),
            "ath": ath,
        });
        let message = format!("{header_b64}.{}", b64url(claims.to_string()));
        let signature = dpop_key
            .sign(&rng, message.as_bytes())
            .map_err(|_| "ECDSA signing failed".to_string())?;
        writeln!(writer, "{message}.{}", b64url(signature.as_ref()))
            .map_err(|e| format!("{}: {e}", out.display()))?;
    }
    writer
        .flush()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "gen-dpop: {count} proofs for GET {htu} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [_, "keys", dir, issuer, audience] => keys(Path::new(dir), issuer, audience),
        [_, "mtls-token", dir, cert_der] => mtls_token(Path::new(dir), Path::new(cert_der)),
        [_, "proofs", dir, htu, count, out, token @ ..] if token.len() <= 1 => {
            let token = token
                .first()
                .map_or_else(|| Path::new(dir).join("token"), Into::into);
            match count.parse::<usize>() {
                Ok(n) if n > 0 => proofs(Path::new(dir), htu, n, Path::new(out), &token),
                _ => Err(format!("COUNT must be a positive integer, got {count:?}")),
            }
        }
        _ => {
            eprintln!(
                "usage: gen-dpop keys DIR ISSUER AUDIENCE\n       gen-dpop mtls-token DIR CERT_DER\n       gen-dpop proofs DIR HTU COUNT OUT [TOKEN_FILE]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-dpop: {e}");
            ExitCode::FAILURE
        }
    }
}
