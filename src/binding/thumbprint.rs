//! RFC 7638 JWK thumbprints: base64url(SHA-256) of the required members, in lexicographic
//! order, with no whitespace. `jkt` in RFC 9449 §6.1.

use base64::Engine;
use sha2::Digest;

/// The thumbprint of a public JWK given as JSON, or `None` for an unsupported key type.
pub fn jkt(jwk: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    let kty = member("kty")?;
    let required: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, name) in required.iter().enumerate() {
        let value = member(name)?;
        if i > 0 {
            canonical.push(',');
        }
        // Members are base64url or short names: JSON string escaping is never needed, but do
        // it properly anyway so a hostile value cannot change the structure.
        canonical.push_str(&serde_json::Value::String((*name).into()).to_string());
        canonical.push(':');
        canonical.push_str(&serde_json::Value::String(value.into()).to_string());
    }
    canonical.push('}');
    Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(canonical.as_bytes())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_section_3_1_example() {
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            jkt(jwk.as_object().unwrap()).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn rfc9449_figure_7_example_ec_key() {
        // The public key of RFC 9449 §4.2 Figure 3; its jkt is given in §6.1.
        let jwk = serde_json::json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        });
        assert_eq!(
            jkt(jwk.as_object().unwrap()).as_deref(),
            Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
        );
    }

    #[test]
    fn unsupported_or_incomplete_keys_have_no_thumbprint() {
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(jkt(oct.as_object().unwrap()), None);
        let partial = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "abc"});
        assert_eq!(jkt(partial.as_object().unwrap()), None);
    }
}
