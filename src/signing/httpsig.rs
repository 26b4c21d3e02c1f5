//! The FAPI 2.0 HTTP Signatures profile of RFC 9421: verifying signed requests
//! (HS2-REQ-RS-1..8) and signing responses (HS2-RESP-RS-1..8).

use super::base::{
    build_base, serialize_inner_list, serialize_item, signature_base, write_sf_string, Component,
    MessageView,
};
use super::digest::verify_content_digest;
use super::keys::{verify_with, HttpSigAlg, SigningKey};
use super::signer::SignError;
use crate::token::jwks::KeySet;
use base64::Engine;
use sfv::{BareItem, InnerList, ListEntry};
use std::borrow::Cow;
use std::sync::Arc;

pub const REQUEST_TAG: &str = "fapi-2-request";
pub const RESPONSE_TAG: &str = "fapi-2-response";

/// Why a request signature was refused (HS2-REQ-RS-3: always 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestSigError {
    Missing,
    Malformed,
    /// HS2-REQ-RS-4.
    NoFapiTag,
    /// HS2-REQ-RS-5/7/8: a required component is not covered.
    NotCovered(&'static str),
    /// HS2-REQ-RS-6.
    Created,
    Expired,
    UnknownKey,
    KeysUnavailable,
    Invalid,
    /// HS2-REQ-RS-8: the body does not match its Content-Digest.
    Digest,
}

impl RequestSigError {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            RequestSigError::Missing => "the request has no HTTP message signature",
            RequestSigError::Malformed => "the HTTP message signature headers are malformed",
            RequestSigError::NoFapiTag => "no signature has tag=\"fapi-2-request\"",
            RequestSigError::NotCovered("@method") => "the signature does not cover @method",
            RequestSigError::NotCovered("@target-uri") => {
                "the signature does not cover @target-uri"
            }
            RequestSigError::NotCovered("authorization") => {
                "the signature does not cover authorization"
            }
            RequestSigError::NotCovered("dpop") => "the signature does not cover dpop",
            RequestSigError::NotCovered(_) => "the signature does not cover content-digest",
            RequestSigError::Created => {
                "the signature created time is missing or outside the accepted window"
            }
            RequestSigError::Expired => "the signature has expired",
            RequestSigError::UnknownKey => "the signature keyid is not a key of this client",
            RequestSigError::KeysUnavailable => "the client's keys cannot be fetched",
            RequestSigError::Invalid => "invalid HTTP message signature",
            RequestSigError::Digest => "the request body does not match its Content-Digest",
        }
    }
}

/// The request as the verifier sees it.
pub(crate) struct SignedRequest<'a> {
    pub message: MessageView<'a>,
    pub body: Option<&'a [u8]>,
    pub now: u64,
    pub max_age: u64,
    /// How far in the future `created` may be (`profile.max_clock_skew`).
    pub max_skew: u64,
}

fn header<'a>(
    message: &'a MessageView<'_>,
    name: &str,
) -> Result<Option<&'a str>, RequestSigError> {
    let mut values = message.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(RequestSigError::Malformed);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| RequestSigError::Malformed)
}

/// A verified request signature, as the response signature binds to it (HS2-RESP-RS-3): its
/// label and its members of `Signature-Input` and `Signature`, serialised as the `;key`
/// components of RFC 9421 §2.1.2 would take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    pub label: String,
    pub input: String,
    pub signature: String,
}

impl VerifiedSignature {
    fn new(label: &str, input: &InnerList, signature: &sfv::Item) -> Result<Self, RequestSigError> {
        Ok(VerifiedSignature {
            label: label.to_string(),
            input: serialize_inner_list(input),
            signature: serialize_item(signature).map_err(|_| RequestSigError::Malformed)?,
        })
    }

    /// The members labelled `label` of the message's `Signature-Input` and `Signature`.
    pub fn find(label: &str, message: &MessageView<'_>) -> Option<Self> {
        let (input, signature) = (
            header(message, "signature-input").ok()??,
            header(message, "signature").ok()??,
        );
        let inputs = sfv::Parser::parse_dictionary(input.as_bytes()).ok()?;
        let signatures = sfv::Parser::parse_dictionary(signature.as_bytes()).ok()?;
        match (inputs.get(label)?, signatures.get(label)?) {
            (ListEntry::InnerList(list), ListEntry::Item(item)) => {
                VerifiedSignature::new(label, list, item).ok()
            }
            _ => None,
        }
    }
}

/// Verifies every `fapi-2-request` signature; returns the (first) one.
pub(crate) async fn verify_request(
    request: &SignedRequest<'_>,
    keys: &Arc<KeySet>,
) -> Result<VerifiedSignature, RequestSigError> {
    let message = &request.message;
    let (Some(input), Some(signatures)) = (
        header(message, "signature-input")?,
        header(message, "signature")?,
    ) else {
        return Err(RequestSigError::Missing);
    };
    let inputs =
        sfv::Parser::parse_dictionary(input.as_bytes()).map_err(|_| RequestSigError::Malformed)?;
    let signatures = sfv::Parser::parse_dictionary(signatures.as_bytes())
        .map_err(|_| RequestSigError::Malformed)?;
    let mut verified = None;
    for (label, entry) in &inputs {
        let ListEntry::InnerList(list) = entry else {
            return Err(RequestSigError::Malformed);
        };
        if list.params.get("tag").and_then(BareItem::as_str) != Some(REQUEST_TAG) {
            continue;
        }
        let Some(ListEntry::Item(item)) = signatures.get(label) else {
            return Err(RequestSigError::Malformed);
        };
        let signature = item
            .bare_item
            .as_byte_seq()
            .ok_or(RequestSigError::Malformed)?;
        verify_one(request, list, signature, keys).await?;
        if verified.is_none() {
            verified = Some(VerifiedSignature::new(label, list, item)?);
        }
    }
    verified.ok_or(RequestSigError::NoFapiTag)
}

async fn verify_one(
    request: &SignedRequest<'_>,
    list: &InnerList,
    signature: &[u8],
    keys: &Arc<KeySet>,
) -> Result<(), RequestSigError> {
    let covers = |name: &str| {
        list.items
            .iter()
            .any(|item| item.bare_item.as_str() == Some(name) && item.params.is_empty())
    };
    for required in ["@method", "@target-uri", "authorization"] {
        if !covers(required) {
            return Err(RequestSigError::NotCovered(required));
        }
    }
    if request.message.headers.contains_key("dpop") && !covers("dpop") {
        return Err(RequestSigError::NotCovered("dpop"));
    }
    let has_body = request.body.is_some_and(|b| !b.is_empty());
    if has_body && !covers("content-digest") {
        return Err(RequestSigError::NotCovered("content-digest"));
    }
    let created = list
        .params
        .get("created")
        .and_then(BareItem::as_int)
        .ok_or(RequestSigError::Created)?;
    let created = u64::try_from(created).map_err(|_| RequestSigError::Created)?;
    if created > request.now + request.max_skew
        || request.now.saturating_sub(created) > request.max_age
    {
        return Err(RequestSigError::Created);
    }
    if let Some(expires) = list.params.get("expires").and_then(BareItem::as_int) {
        if expires < request.now as i64 {
            return Err(RequestSigError::Expired);
        }
    }
    let keyid = list
        .params
        .get("keyid")
        .and_then(BareItem::as_str)
        .ok_or(RequestSigError::UnknownKey)?;
    let named = list.params.get("alg").and_then(BareItem::as_str);
    let algs: Vec<HttpSigAlg> = match named {
        Some(name) => vec![HttpSigAlg::parse(name).ok_or(RequestSigError::Invalid)?],
        None => vec![
            HttpSigAlg::Ed25519,
            HttpSigAlg::EcdsaP256Sha256,
            HttpSigAlg::RsaPssSha512,
        ],
    };
    let base =
        signature_base(list, &request.message, None).map_err(|_| RequestSigError::Invalid)?;
    let mut found_key = false;
    for alg in algs {
        match keys.key_for(Some(keyid), alg.jose()).await {
            Ok(key) => {
                found_key = true;
                if verify_with(alg, &key, base.as_bytes(), signature) {
                    if has_body {
                        let digest = header(&request.message, "content-digest")?
                            .ok_or(RequestSigError::Digest)?;
                        verify_content_digest(digest, request.body.unwrap_or_default())
                            .map_err(|_| RequestSigError::Digest)?;
                    }
                    return Ok(());
                }
            }
            Err(crate::token::TokenError::Unavailable(_)) => {
                return Err(RequestSigError::KeysUnavailable)
            }
            Err(crate::token::TokenError::Invalid(_)) => {}
        }
    }
    Err(if found_key {
        RequestSigError::Invalid
    } else {
        RequestSigError::UnknownKey
    })
}

/// What the response signature binds to (HS2-RESP-RS-2/3).
pub struct RequestBinding<'a> {
    pub message: MessageView<'a>,
    /// The request's verified `fapi-2-request` signature.
    pub signature: Option<&'a VerifiedSignature>,
    /// `@authority` of the request, when known without parsing its target URI (the
    /// normalised authority of `public_url`).
    pub authority: Option<&'a str>,
}

/// Signs a response; returns the `Signature-Input` and `Signature` field values.
///
/// The component list is the profile's fixed one, so its identifiers are written as text
/// rather than built and serialised as Structured Field items per response.
pub fn sign_response(
    key: &SigningKey,
    response: &MessageView<'_>,
    request: &RequestBinding<'_>,
    created: u64,
) -> Result<(String, String), SignError> {
    let present = |message: &MessageView<'_>, name: &str| message.headers.contains_key(name);
    let mut components = Vec::with_capacity(10);
    components.push(Component::fixed("\"@status\"", "@status", false));
    for (identifier, name) in [
        ("\"content-type\"", "content-type"),
        ("\"content-digest\"", "content-digest"),
        ("\"x-fapi-interaction-id\"", "x-fapi-interaction-id"),
    ] {
        if present(response, name) {
            components.push(Component::fixed(identifier, name, false));
        }
    }
    components.push(Component::fixed("\"@method\";req", "@method", true));
    components.push(Component::fixed("\"@target-uri\";req", "@target-uri", true));
    let mut authority = Component::fixed("\"@authority\";req", "@authority", true);
    authority.known = request.authority;
    components.push(authority);
    if present(&request.message, "content-digest") {
        components.push(Component::fixed(
            "\"content-digest\";req",
            "content-digest",
            true,
        ));
    }
    if let Some(signed) = request.signature {
        for (name, value) in [
            ("signature", &signed.signature),
            ("signature-input", &signed.input),
        ] {
            let mut identifier = format!("\"{name}\";req;key=");
            write_sf_string(&mut identifier, &signed.label).ok_or_else(|| {
                SignError::Body("the request signature label is not a Structured Field key".into())
            })?;
            components.push(Component {
                identifier: Cow::Owned(identifier),
                name: Cow::Borrowed(name),
                req: true,
                key: Some(Cow::Borrowed(signed.label.as_str())),
                sf: false,
                bs: false,
                known: Some(value.as_str()),
            });
        }
    }
    let mut params = String::with_capacity(256);
    params.push('(');
    for (index, component) in components.iter().enumerate() {
        if index > 0 {
            params.push(' ');
        }
        params.push_str(&component.identifier);
    }
    params.push_str(");created=");
    params.push_str(&created.to_string());
    params.push_str(";keyid=");
    write_sf_string(&mut params, &key.key_id)
        .ok_or_else(|| SignError::Key("the keyid is not a Structured Field string".into()))?;
    params.push_str(";tag=\"");
    params.push_str(RESPONSE_TAG);
    params.push('"');
    let base = build_base(&components, &params, response, Some(&request.message))
        .map_err(|e| SignError::Body(format!("signature base: {e:?}")))?;
    let signature = key.sign(base.as_bytes(), false).map_err(SignError::Key)?;
    let mut value = String::with_capacity(8 + signature.len() * 4 / 3 + 4);
    value.push_str("sig1=:");
    base64::engine::general_purpose::STANDARD.encode_string(&signature, &mut value);
    value.push(':');
    params.insert_str(0, "sig1=");
    Ok((params, value))
}

#[cfg(test)]
mod tests {
    use super::super::base::tests::{
        headers, parse_list, test_request_headers, REQUEST_DIGEST, TEST_URI,
    };
    use super::super::keys::tests::{ED25519_JWK, P256_PUBLIC_JWK};
    use super::*;

    /// The RFC 9421 B.1.4 Ed25519 key, loaded the way the gateway loads key files.
    fn rfc_ed25519_key(key_id: &str) -> SigningKey {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ed25519.json");
        std::fs::write(&path, ED25519_JWK).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        SigningKey::load(&path, key_id).unwrap()
    }

    fn p256_public() -> jsonwebtoken::DecodingKey {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(P256_PUBLIC_JWK).unwrap();
        jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap()
    }

    #[test]
    fn rfc9421_b_2_6_ed25519_signature_is_reproduced_byte_for_byte() {
        let key = rfc_ed25519_key("test-key-ed25519");
        let request_headers = test_request_headers();
        let request = MessageView {
            method: Some("POST"),
            target_uri: Some(TEST_URI),
            status: None,
            headers: &request_headers,
        };
        let list = parse_list(
            r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
        );
        let base = signature_base(&list, &request, None).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .encode(key.sign(base.as_bytes(), false).unwrap()),
            "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
        );
    }

    #[test]
    fn rfc9421_b_2_4_ecdsa_p256_response_signature_verifies() {
        let response_headers = headers(&[
            ("content-type", "application/json"),
            ("content-digest", "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"),
            ("content-length", "23"),
        ]);
        let response = MessageView {
            method: None,
            target_uri: None,
            status: Some(200),
            headers: &response_headers,
        };
        let list = parse_list(
            r#"sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256""#,
        );
        let base = signature_base(&list, &response, None).unwrap();
        let signature = base64::engine::general_purpose::STANDARD
            .decode("wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==")
            .unwrap();
        assert!(verify_with(
            HttpSigAlg::EcdsaP256Sha256,
            &p256_public(),
            base.as_bytes(),
            &signature
        ));
        assert!(!verify_with(
            HttpSigAlg::EcdsaP256Sha256,
            &p256_public(),
            b"another base",
            &signature
        ));
    }

    #[test]
    fn rfc9421_2_4_req_example_base_and_signature_verify() {
        let request_headers = test_request_headers();
        let request = MessageView {
            method: Some("POST"),
            target_uri: Some(TEST_URI),
            status: None,
            headers: &request_headers,
        };
        let response_headers = headers(&[
            ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("content-type", "application/json"),
            ("content-length", "62"),
            ("content-digest", "sha-512=:0Y6iCBzGg5rZtoXS95Ijz03mslf6KAMCloESHObfwnHJDbkkWWQz6PhhU9kxsTbARtY2PTBOzq24uJFpHsMuAg==:"),
        ]);
        let response = MessageView {
            method: None,
            target_uri: None,
            status: Some(503),
            headers: &response_headers,
        };
        let list = parse_list(
            r#"reqres=("@status" "content-digest" "content-type" "@authority";req "@method";req "@path";req "content-digest";req);created=1618884479;keyid="test-key-ecc-p256""#,
        );
        let base = signature_base(&list, &response, Some(&request)).unwrap();
        let expected = format!(
            "\"@status\": 503\n\"content-digest\": sha-512=:0Y6iCBzGg5rZtoXS95Ijz03mslf6KAMCloESHObfwnHJDbkkWWQz6PhhU9kxsTbARtY2PTBOzq24uJFpHsMuAg==:\n\"content-type\": application/json\n\"@authority\";req: example.com\n\"@method\";req: POST\n\"@path\";req: /foo\n\"content-digest\";req: {REQUEST_DIGEST}\n\"@signature-params\": (\"@status\" \"content-digest\" \"content-type\" \"@authority\";req \"@method\";req \"@path\";req \"content-digest\";req);created=1618884479;keyid=\"test-key-ecc-p256\""
        );
        assert_eq!(base, expected);
        let signature = base64::engine::general_purpose::STANDARD
            .decode("dMT/A/76ehrdBTD/2Xx8QuKV6FoyzEP/I9hdzKN8LQJLNgzU4W767HK05rx1i8meNQQgQPgQp8wq2ive3tV5Ag==")
            .unwrap();
        assert!(verify_with(
            HttpSigAlg::EcdsaP256Sha256,
            &p256_public(),
            base.as_bytes(),
            &signature
        ));
        super::super::digest::verify_content_digest(
            "sha-512=:0Y6iCBzGg5rZtoXS95Ijz03mslf6KAMCloESHObfwnHJDbkkWWQz6PhhU9kxsTbARtY2PTBOzq24uJFpHsMuAg==:",
            br#"{"busy": true, "message": "Your call is very important to us"}"#,
        )
        .unwrap();
    }

    #[test]
    fn hs2_resp_rs_responses_cover_the_profile_components() {
        let key = rfc_ed25519_key("rs-1");
        let request_headers = headers(&[
            (
                "content-digest",
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            ),
            (
                "signature-input",
                "client=(\"@method\");created=1;tag=\"fapi-2-request\"",
            ),
            ("signature", "client=:AAAA:"),
        ]);
        let response_headers = headers(&[
            ("content-type", "application/json"),
            (
                "content-digest",
                "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
            ),
            (
                "x-fapi-interaction-id",
                "6a0b2c1e-4f5d-4e8a-9b7c-0d1e2f3a4b5c",
            ),
        ]);
        let response = MessageView {
            method: None,
            target_uri: None,
            status: Some(201),
            headers: &response_headers,
        };
        let request = || MessageView {
            method: Some("POST"),
            target_uri: Some("https://api.bank.example/payments"),
            status: None,
            headers: &request_headers,
        };
        let verified = VerifiedSignature::find("client", &request()).unwrap();
        assert_eq!(
            verified.input,
            "(\"@method\");created=1;tag=\"fapi-2-request\""
        );
        assert_eq!(verified.signature, ":AAAA:");
        let public: jsonwebtoken::jwk::Jwk = serde_json::from_str(ED25519_JWK).unwrap();
        let public = jsonwebtoken::DecodingKey::from_jwk(&public).unwrap();
        // The known authority and the one derived from the target URI sign the same base.
        for authority in [None, Some("api.bank.example")] {
            let binding = RequestBinding {
                message: request(),
                signature: Some(&verified),
                authority,
            };
            let (input, signature) =
                sign_response(&key, &response, &binding, 1_700_000_000).unwrap();
            assert_eq!(
                input,
                "sig1=(\"@status\" \"content-type\" \"content-digest\" \"x-fapi-interaction-id\" \"@method\";req \"@target-uri\";req \"@authority\";req \"content-digest\";req \"signature\";req;key=\"client\" \"signature-input\";req;key=\"client\");created=1700000000;keyid=\"rs-1\";tag=\"fapi-2-response\""
            );
            // A verifier rebuilding the base from Signature-Input, extracting the `;key`
            // members itself, accepts the signature.
            let base = signature_base(&parse_list(&input), &response, Some(&request())).unwrap();
            let signature = signature
                .strip_prefix("sig1=:")
                .and_then(|s| s.strip_suffix(':'))
                .unwrap();
            let signature = base64::engine::general_purpose::STANDARD
                .decode(signature)
                .unwrap();
            assert!(verify_with(
                HttpSigAlg::Ed25519,
                &public,
                base.as_bytes(),
                &signature
            ));
        }
    }
}
