//! The entry points of the fuzz targets (`fuzz/`), one per parser that reads attacker bytes.
//!
//! Each takes arbitrary bytes and runs them through the same functions the gateway runs on a
//! request or a configuration file; none may panic, hang or grow without bound. The libFuzzer
//! targets call these, and so does `tests/fuzz_corpus.rs`, which replays every committed
//! corpus file on the stable toolchain, so a fixed finding can never come back unnoticed.
//!
//! Inputs with several parts (headers, a body) separate them with the byte 0xFF, which never
//! occurs in UTF-8 text: [`parts`].

mod fixture;

use fixture::fixture;
#[cfg(test)]
pub(crate) use fixture::{fixture_dir, POLICY};

/// A fuzz target: arbitrary bytes in, nothing out; it must not panic.
pub type Target = fn(&[u8]);

/// Every target, by the name of its folder under `fuzz/corpus/` and `fuzz/fuzz_targets/`.
pub const TARGETS: [(&str, Target); 9] = [
    ("path_routes", path_routes),
    ("credential", credential),
    ("jws_header", jws_header),
    ("dpop_proof", dpop_proof),
    ("http_signature", http_signature),
    ("client_cert", client_cert),
    ("json_body", json_body),
    ("config", config),
    ("audit_chain", audit_chain),
];

/// The fixed request time of the targets (2023-11-14T22:13:20Z); seeds put their `iat` and
/// `created` here.
pub const NOW: u64 = 1_700_000_000;

/// The listener's public URL in the fixture policy; seeds' `htu` and `@target-uri` use it.
pub const PUBLIC_URL: &str = "https://api.bank.example";

/// Splits `data` at each 0xFF into at most `n` parts (the last keeps the rest).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.iter().position(|&b| b == 0xFF) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// Request path normalisation and route matching (the raw path as the client sent it), and
/// path templates as the configuration compiler reads them.
pub fn path_routes(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some(raw) = text(rest) else { return };
    let methods = [
        http::Method::GET,
        http::Method::POST,
        http::Method::HEAD,
        http::Method::PUT,
        http::Method::DELETE,
    ];
    let method = &methods[usize::from(selector) % methods.len()];
    let fixture = fixture();
    let found = fixture.policy.routes.find(method, raw);
    if let crate::policy::RouteMatch::Found { route, params } = &found {
        assert!(fixture.policy.routes.get(*route).is_some());
        for (_, value) in params {
            // A captured parameter is one decoded segment: never a separator or a dot segment.
            assert!(
                !value.contains('/') && value != "." && value != "..",
                "{value:?}"
            );
        }
    }
    if let Ok(path) = crate::policy::path::NormalPath::parse(raw) {
        for template in fixture.policy.routes.iter().map(|r| &r.template) {
            let _ = template.captures(&path);
        }
    }
    if let Ok(template) = crate::policy::path::PathTemplate::parse(raw) {
        let _ = template.param_names().count();
        for route in fixture.policy.routes.iter() {
            let _ = template.overlaps(&route.template);
            let _ = template.same_shape(&route.template);
            let _ = template.specificity(&route.template);
        }
    }
}

/// Credential extraction: `Authorization` values (any number), a query and a form body.
pub fn credential(data: &[u8]) {
    let fields = parts(data, 6);
    let mut headers = http::HeaderMap::new();
    let (values, rest) = fields.split_at(fields.len().min(3));
    for value in values {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.append(http::header::AUTHORIZATION, value);
        }
    }
    let query = rest.first().and_then(|q| text(q));
    let form = rest.get(1).copied();
    if let Some(content_type) = rest.get(2).and_then(|t| text(t)) {
        let _ = crate::credential::is_form(Some(content_type));
    }
    let _ = crate::credential::extract(&headers, query);
    let _ = crate::credential::refuse_form_token(form);
}

/// JWS compact parsing and the header pre-checks every JWS we accept passes: access tokens,
/// DPoP proofs and signed introspection responses.
pub fn jws_header(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let _ = crate::token::jwt::looks_like_jwt(&token);
    let algs = [
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::PS256,
        jsonwebtoken::Algorithm::EdDSA,
    ];
    for typ in [&["at+jwt", "jwt"][..], &["token-introspection+jwt"][..]] {
        let _ = crate::token::jwt::checked_header(&token, &algs, typ);
    }
    let _ = crate::token::jwt::unverified_issuer(&token);
}

/// DPoP proof verification past the signature: the input is the proof's header and claims
/// (JSON text, any bytes), which the target signs with the fixture key, so every check after
/// the signature (RFC 9449 §4.3) sees attacker-chosen claims. A header whose `jwk` is not the
/// fixture key's ends at the signature check, as it would on the wire. The last part is also
/// read as a whole proof as sent.
pub fn dpop_proof(data: &[u8]) {
    let fields = parts(data, 3);
    if let [header, claims, ..] = fields[..] {
        let _ = crate::binding::dpop::verify(&signed_proof(header, claims), &proof_context());
    }
    if let Some(whole) = fields.last().and_then(|f| text(f)) {
        let _ = crate::binding::dpop::verify(whole, &proof_context());
        let _ = crate::binding::dpop::normalise_htu(whole);
    }
}

/// A compact JWS of `header` and `claims` (any bytes) signed by the fixture key.
fn signed_proof(header: &[u8], claims: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let signature = fixture().key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64.encode(signature.as_ref()))
}

/// SHA-256 of `token`, the access token of [`proof_context`].
static FUZZ_TOKEN_SHA256: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(|| {
    use sha2::Digest;
    sha2::Sha256::digest(b"token").into()
});

/// A `GET {PUBLIC_URL}/accounts` with the access token `token`, at [`NOW`].
fn proof_context() -> crate::binding::dpop::ProofContext<'static> {
    crate::binding::dpop::ProofContext {
        method: "GET",
        target_uri: "https://api.bank.example/accounts",
        access_token_sha256: &FUZZ_TOKEN_SHA256,
        now: NOW,
        algs: &[
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::PS256,
            jsonwebtoken::Algorithm::EdDSA,
        ],
        max_clock_skew: std::time::Duration::from_secs(10),
        max_age: std::time::Duration::from_secs(60),
        keys: None,
    }
}

/// `Signature-Input`, `Signature` and `Content-Digest` parsing, the RFC 9421 signature base
/// over the request, and request-signature verification against the fixture key. With the
/// first byte odd, the target signs the base of the first `Signature-Input` member itself, so
/// the checks after the signature (created, digest) see attacker-chosen values.
pub fn http_signature(data: &[u8]) {
    let _ = verify_signed_request(data);
}

fn verify_signed_request(
    data: &[u8],
) -> Option<
    Result<crate::signing::httpsig::VerifiedSignature, crate::signing::httpsig::RequestSigError>,
> {
    let (&flags, rest) = data.split_first()?;
    let fields = parts(rest, 6);
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("signature-input", field(0)),
        ("signature", field(1)),
        ("content-digest", field(2)),
        ("authorization", field(4)),
    ] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            if !value.is_empty() {
                headers.insert(name, value);
            }
        }
    }
    let body = field(3);
    if let Some(digest) = text(field(2)) {
        let _ = crate::signing::digest::verify_content_digest(digest, body);
    }
    let target_uri = format!(
        "{PUBLIC_URL}/payments?{}",
        String::from_utf8_lossy(field(5))
    );
    fn view<'a>(
        target_uri: &'a str,
        headers: &'a http::HeaderMap,
    ) -> crate::signing::base::MessageView<'a> {
        crate::signing::base::MessageView {
            method: Some("POST"),
            target_uri: Some(target_uri),
            status: None,
            headers,
        }
    }
    if flags & 1 == 1 {
        if let Some((label, base)) = first_signature_base(&view(&target_uri, &headers)) {
            use base64::Engine;
            let signature = fixture().key.sign(base.as_bytes());
            let value = format!(
                "{label}=:{}:",
                base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
            );
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert("signature", value);
            }
        }
    }
    let message = view(&target_uri, &headers);
    let _ = crate::signing::httpsig::VerifiedSignature::find("sig", &message);
    let request = crate::signing::httpsig::SignedRequest {
        message,
        body: Some(body),
        now: NOW,
        max_age: 300,
        max_skew: 10,
    };
    let fixture = fixture();
    Some(
        fixture
            .runtime
            .block_on(crate::signing::httpsig::verify_request(
                &request,
                &fixture.client_keys,
            )),
    )
}

/// The label and signature base of the first member of `Signature-Input`.
fn first_signature_base(
    message: &crate::signing::base::MessageView<'_>,
) -> Option<(String, String)> {
    let input = message.headers.get("signature-input")?.to_str().ok()?;
    let inputs = sfv::Parser::parse_dictionary(input.as_bytes()).ok()?;
    let (label, entry) = inputs.iter().next()?;
    let sfv::ListEntry::InnerList(list) = entry else {
        return None;
    };
    let base = crate::signing::base::signature_base(list, message, None).ok()?;
    Some((label.to_string(), base))
}

/// The RFC 9440 `Client-Cert` header value, and a DER certificate as the TLS handshake hands
/// it over (thumbprint and parse).
pub fn client_cert(data: &[u8]) {
    if let Some(value) = text(data) {
        if let Some(der) = crate::request::parse_client_cert(value) {
            let _ = crate::request::X5tS256::of_der(&der).encoded();
        }
    }
    let _ = x509_parser::parse_x509_certificate(data);
    let _ = crate::request::ClientCert::new(data.to_vec(), crate::request::CertSource::Tls);
}

/// The JSON request body as RAR body rules read it: parsed strictly (and, where accepted, to
/// the same value serde_json reads), then authorised against the
/// fixture's payment route (JSON pointers into body and detail, exact decimals), plus pointer
/// and decimal parsing of the same text.
pub fn json_body(data: &[u8]) {
    let fixture = fixture();
    let strict = crate::policy::json::parse(data);
    if let Ok(loose) = serde_json::from_slice::<serde_json::Value>(data) {
        // What the strict reader accepts, serde_json reads to the same value.
        if let Ok(strict) = &strict {
            assert!(alike(strict, &loose), "{strict} / {loose}");
        }
    }
    if let Ok(body) = strict {
        let Some(route) = fixture.policy.routes.iter().find(|r| r.id == "payments") else {
            return;
        };
        let headers = http::HeaderMap::new();
        let request = crate::policy::authorize::RequestView {
            url: "https://api.bank.example/payments",
            params: &[],
            body: Some(&body),
            headers: &headers,
            now: NOW,
        };
        let _ = crate::policy::authorize::authorize(route, &fixture.payment_grant, &request);
        if let Some(detail) = body.get("authorization_details") {
            // The body as the grant's detail: the token side of every rule.
            let grant = crate::grant::Grant {
                authorization_details: vec![detail.clone()],
                ..fixture.payment_grant.clone()
            };
            let _ = crate::policy::authorize::authorize(route, &grant, &request);
        }
        let _ = crate::policy::decimal::Decimal::from_json(&body);
    }
    if let Some(text) = text(data) {
        if let Ok(pointer) = crate::policy::rar::JsonPointer::parse(text) {
            let _ = pointer.resolve(&fixture.payment_grant.authorization_details[0]);
        }
        let _ = crate::policy::decimal::Decimal::parse(text);
    }
}

/// Equal, but for the last bit of a double (serde_json's own float parsing is not always
/// correctly rounded) and the sign of zero.
fn alike(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if !x.is_f64() && !y.is_f64() => x == y,
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| alike(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| alike(v, w)))
        }
        _ => a == b,
    }
}

/// The TOML configuration compiler, as `fapigate check` runs it, on arbitrary bytes. Relative
/// paths resolve in the fixture folder (which holds `tls/server.crt`, `tls/server.key`,
/// `keys/jwks.json` and `keys/signing.key`).
pub fn config(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let _ = crate::config::load_str(&source, &fixture().dir);
}

/// `fapigate audit verify` on arbitrary bytes as an audit file, with a MAC key, a JWKS and an
/// exported head, as an auditor runs it on a file anyone with disk access could have written.
pub fn audit_chain(data: &[u8]) {
    use crate::audit::chain;
    static JWKS: std::sync::OnceLock<Option<jsonwebtoken::jwk::JwkSet>> =
        std::sync::OnceLock::new();
    let jwks = JWKS.get_or_init(|| {
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "rs-1",
            "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"});
        serde_json::from_value(serde_json::json!({ "keys": [jwk] })).ok()
    });
    let key = chain::MacKey::new(b"the fuzz target's audit MAC key, 32+ bytes");
    let checks = chain::Checks {
        key: Some(&key),
        jwks: jwks.as_ref(),
        head: Some(chain::GENESIS),
    };
    let _ = chain::verify_lines(data, &checks, None, Some(2));
    let _ = chain::verify_lines(data, &chain::Checks::default(), Some(chain::GENESIS), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms2_priv_an_audit_chain_seed_passes_every_check_so_the_target_reaches_them_all() {
        use crate::audit::chain;
        let folder =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/audit_chain");
        let key = chain::MacKey::new(b"the fuzz target's audit MAC key, 32+ bytes");
        let checks = chain::Checks {
            key: Some(&key),
            ..chain::Checks::default()
        };
        let passing = std::fs::read_dir(folder)
            .unwrap()
            .flatten()
            .filter_map(|entry| std::fs::read(entry.path()).ok())
            .filter_map(|bytes| chain::verify_lines(&bytes[..], &checks, None, None).ok())
            .filter(|lines| lines.verified.records >= 2)
            .count();
        assert!(passing >= 1, "no seed carries valid MACs");
    }

    #[test]
    fn parts_split_at_0xff_into_at_most_n() {
        assert_eq!(parts(b"a\xFFb\xFFc", 2), vec![&b"a"[..], &b"b\xFFc"[..]]);
        assert_eq!(parts(b"abc", 3), vec![&b"abc"[..]]);
        assert_eq!(parts(b"", 2), vec![&b""[..]]);
    }

    /// The public half of the fixture key, as seeds put it into a proof's `jwk`.
    fn fixture_jwk() -> serde_json::Value {
        use base64::Engine;
        let public = aws_lc_rs::signature::KeyPair::public_key(&fixture().key);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_ref());
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x})
    }

    #[test]
    fn a_proof_the_target_signs_reaches_every_claim_check() {
        use base64::Engine;
        use sha2::Digest;
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": fixture_jwk()});
        let ath =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(b"token"));
        let claims = |iat: u64| {
            serde_json::json!({"jti": "j1", "htm": "GET", "iat": iat, "ath": ath,
                "htu": "https://api.bank.example/accounts"})
            .to_string()
        };
        let header = header.to_string();
        let verify = |claims: String| {
            crate::binding::dpop::verify(
                &signed_proof(header.as_bytes(), claims.as_bytes()),
                &proof_context(),
            )
        };
        assert!(verify(claims(NOW)).is_ok());
        assert_eq!(
            verify(claims(NOW - 61)),
            Err(crate::binding::dpop::DpopCheck::Iat)
        );
    }

    #[test]
    fn a_request_the_target_signs_reaches_the_digest_check() {
        let body = br#"{"a":1}"#;
        let input = format!(
            "sig=(\"@method\" \"@target-uri\" \"authorization\" \"content-digest\");\
             created={NOW};keyid=\"fuzz\";tag=\"fapi-2-request\""
        );
        // The target's input: flags (sign it), then the parts separated by 0xFF.
        let data = |input: &str, digest: &str| {
            let fields: [&[u8]; 6] = [
                input.as_bytes(),
                b"sig=:c2ln:",
                digest.as_bytes(),
                body,
                b"DPoP tok",
                b"",
            ];
            let mut data = vec![1u8];
            data.extend(fields.join(&0xFF));
            data
        };
        let request = |digest: &str| verify_signed_request(&data(&input, digest));
        let good = crate::signing::digest::content_digest(body);
        // `created` at most max_clock_skew (10 s here) ahead.
        for (created, ok) in [(NOW + 10, true), (NOW + 11, false)] {
            let ahead = input.replace(&format!("created={NOW}"), &format!("created={created}"));
            let outcome = verify_signed_request(&data(&ahead, &good));
            if ok {
                assert!(matches!(outcome, Some(Ok(_))), "{outcome:?}");
            } else {
                assert_eq!(
                    outcome,
                    Some(Err(crate::signing::httpsig::RequestSigError::Created))
                );
            }
        }
        assert!(
            matches!(request(&good), Some(Ok(_))),
            "{:?}",
            request(&good)
        );
        assert_eq!(
            request(&crate::signing::digest::content_digest(b"other")),
            Some(Err(crate::signing::httpsig::RequestSigError::Digest))
        );
    }

    #[test]
    fn the_fixture_compiles_and_every_target_takes_empty_input() {
        assert!(fixture().policy.routes.len() >= 5);
        for (_, target) in TARGETS {
            target(b"");
            target(b"\xFF\xFF\xFF\xFF\xFF\xFF");
        }
    }
}
