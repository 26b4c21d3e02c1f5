//! The gateway's signing keys (RFC 9421 §3.3 algorithms and the JOSE ones for detached JWS
//! and JWT bodies) and their public JWKS (SP2-CRY-6). Keys come from PKCS#8 PEM files or, for
//! Ed25519 and P-256, from JWK files holding `d`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::Engine;
use std::path::Path;

/// RFC 9421 §3.3 algorithms the gateway signs and verifies with (never `hmac-sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpSigAlg {
    Ed25519,
    EcdsaP256Sha256,
    RsaPssSha512,
}

impl HttpSigAlg {
    pub fn parse(name: &str) -> Option<HttpSigAlg> {
        match name {
            "ed25519" => Some(HttpSigAlg::Ed25519),
            "ecdsa-p256-sha256" => Some(HttpSigAlg::EcdsaP256Sha256),
            "rsa-pss-sha512" => Some(HttpSigAlg::RsaPssSha512),
            _ => None,
        }
    }

    /// The JOSE algorithm that verifies the same signature bytes.
    pub fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            HttpSigAlg::Ed25519 => jsonwebtoken::Algorithm::EdDSA,
            HttpSigAlg::EcdsaP256Sha256 => jsonwebtoken::Algorithm::ES256,
            HttpSigAlg::RsaPssSha512 => jsonwebtoken::Algorithm::PS512,
        }
    }
}

enum Pair {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    /// In a PKCS#11 token: it signs, the gateway never holds the private key.
    Hsm(std::sync::Arc<super::pkcs11::HsmKey>),
}

pub struct SigningKey {
    pub key_id: String,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, {})", self.key_id, self.kty())
    }
}

impl SigningKey {
    pub fn load(path: &Path, key_id: &str) -> Result<SigningKey, String> {
        crate::config::refuse_world_readable(path)?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let pair = if path.extension().is_some_and(|e| e == "json" || e == "jwk") {
            pair_from_jwk(&bytes)
        } else {
            pair_from_pem(&bytes)
        }
        .ok_or_else(|| {
            format!(
                "{}: not an Ed25519, P-256 or RSA private key",
                path.display()
            )
        })?;
        Ok(SigningKey {
            key_id: key_id.to_string(),
            pair,
        })
    }

    /// The key an RFC 7512 URI names in a PKCS#11 token, logged in with the PIN in
    /// `pin_file`.
    pub fn from_hsm(
        uri: &crate::policy::Pkcs11Uri,
        pin_file: &Path,
        key_id: &str,
    ) -> Result<SigningKey, String> {
        crate::config::refuse_world_readable(pin_file)?;
        let pin = std::fs::read_to_string(pin_file)
            .map_err(|e| format!("{}: {e}", pin_file.display()))?;
        let key = super::pkcs11::HsmKey::shared(uri, pin.trim())?;
        let key = SigningKey {
            key_id: key_id.to_string(),
            pair: Pair::Hsm(key),
        };
        key.check_pair()?;
        Ok(key)
    }

    pub fn from_pkcs8_der(der: &[u8], key_id: &str) -> Option<SigningKey> {
        pair_from_der(der).map(|pair| SigningKey {
            key_id: key_id.to_string(),
            pair,
        })
    }

    fn kty(&self) -> &'static str {
        match &self.pair {
            Pair::Ed25519(_) => "OKP",
            Pair::P256(_) => "EC",
            Pair::Rsa(_) => "RSA",
            Pair::Hsm(key) => match key.kind {
                super::pkcs11::HsmKind::Ed25519 => "OKP",
                super::pkcs11::HsmKind::P256 => "EC",
                super::pkcs11::HsmKind::Rsa => "RSA",
            },
        }
    }

    /// Signs once and verifies with the public key it publishes: a token whose public object
    /// does not belong to its private key is found at start-up, not by every verifier.
    fn check_pair(&self) -> Result<(), String> {
        let alg = match self.kty() {
            "OKP" => HttpSigAlg::Ed25519,
            "EC" => HttpSigAlg::EcdsaP256Sha256,
            _ => HttpSigAlg::RsaPssSha512,
        };
        let message = b"fapigate: does the published key verify this key's signature?";
        let signature = self.sign(message, false)?;
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(self.public_jwk())
            .map_err(|e| format!("the key's public JWK: {e}"))?;
        let public = jsonwebtoken::DecodingKey::from_jwk(&jwk)
            .map_err(|e| format!("the key's public JWK: {e}"))?;
        if verify_with(alg, &public, message, &signature) {
            Ok(())
        } else {
            Err("the token's public key does not verify its private key's signature".into())
        }
    }

    /// The JOSE algorithm this key signs JWS with (SP2-CRY-2: EdDSA, ES256 or PS256): the
    /// key type decides it, so a JWS never names an algorithm its key cannot make.
    pub fn jose_alg(&self) -> &'static str {
        match self.kty() {
            "OKP" => "EdDSA",
            "EC" => "ES256",
            _ => "PS256",
        }
    }

    /// Whether this key can produce signatures of `alg` (an RFC 9421 or JOSE name).
    pub fn supports(&self, alg: &str) -> bool {
        matches!(
            (self.kty(), alg),
            ("OKP", "ed25519" | "EdDSA")
                | ("EC", "ecdsa-p256-sha256" | "ES256")
                | ("RSA", "rsa-pss-sha512" | "PS256")
        )
    }

    /// Signs with the algorithm the key type implies; RSA uses PSS with SHA-512 for HTTP
    /// signatures and SHA-256 for JWS (`jose`).
    pub fn sign(&self, message: &[u8], jose: bool) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Pair::P256(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_string()),
            Pair::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = if jose {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PSS_SHA512
                };
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut out)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(out)
            }
            Pair::Hsm(key) => key.sign(message, jose),
        }
    }

    /// The public half as a JWK (no private members). No `alg` member: the same key serves
    /// RFC 9421 (`ed25519`, ...) and JOSE (`EdDSA`, ...) names, and a JOSE library would
    /// refuse a JWS whose algorithm differs from the key's `alg`.
    pub fn public_jwk(&self) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        match &self.pair {
            Pair::Ed25519(pair) => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": self.key_id, "use": "sig",
                "x": b64.encode(pair.public_key().as_ref()),
            }),
            Pair::P256(pair) => {
                let point = pair.public_key().as_ref();
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "kid": self.key_id, "use": "sig",
                    "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
                })
            }
            Pair::Rsa(pair) => {
                let public = pair.public_key();
                let (n, e) = rsa_components(public.as_ref()).unwrap_or_default();
                serde_json::json!({
                    "kty": "RSA", "kid": self.key_id, "use": "sig",
                    "n": b64.encode(n), "e": b64.encode(e),
                })
            }
            Pair::Hsm(key) => {
                let mut jwk = key.public.clone();
                jwk["kid"] = self.key_id.clone().into();
                jwk
            }
        }
    }
}

fn pair_from_pem(bytes: &[u8]) -> Option<Pair> {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(bytes).ok()?;
    match key {
        rustls::pki_types::PrivateKeyDer::Pkcs8(der) => pair_from_der(der.secret_pkcs8_der()),
        rustls::pki_types::PrivateKeyDer::Pkcs1(der) => {
            RsaKeyPair::from_der(der.secret_pkcs1_der())
                .ok()
                .map(Pair::Rsa)
        }
        rustls::pki_types::PrivateKeyDer::Sec1(der) => EcdsaKeyPair::from_private_key_der(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_sec1_der(),
        )
        .ok()
        .map(Pair::P256),
        _ => None,
    }
}

fn pair_from_der(der: &[u8]) -> Option<Pair> {
    if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        return Some(Pair::Ed25519(pair));
    }
    if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der) {
        return Some(Pair::P256(pair));
    }
    RsaKeyPair::from_pkcs8(der).ok().map(Pair::Rsa)
}

fn pair_from_jwk(bytes: &[u8]) -> Option<Pair> {
    let jwk: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let member = |name: &str| jwk.get(name)?.as_str().and_then(|s| b64.decode(s).ok());
    match (
        jwk.get("kty")?.as_str()?,
        jwk.get("crv").and_then(|c| c.as_str()),
    ) {
        ("OKP", Some("Ed25519")) => {
            Ed25519KeyPair::from_seed_and_public_key(&member("d")?, &member("x")?)
                .ok()
                .map(Pair::Ed25519)
        }
        ("EC", Some("P-256")) => {
            let mut point = vec![4u8];
            point.extend(member("x")?);
            point.extend(member("y")?);
            EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &member("d")?,
                &point,
            )
            .ok()
            .map(Pair::P256)
        }
        _ => None,
    }
}

/// Reads n and e from a DER RSAPublicKey (SEQUENCE { INTEGER n, INTEGER e }).
fn rsa_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let count = (first & 0x7f) as usize;
            let (bytes, rest) = rest.split_at_checked(count)?;
            (
                bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize),
                rest,
            )
        };
        let (value, rest) = rest.split_at_checked(len)?;
        Some((tag, value, rest))
    }
    let (_, sequence, _) = read(der)?;
    let (_, n, rest) = read(sequence)?;
    let (_, e, _) = read(rest)?;
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    Some((strip(n), strip(e)))
}

/// Verifies an RFC 9421 signature with a public JWK-derived key (`jsonwebtoken` key material).
pub fn verify_with(
    alg: HttpSigAlg,
    key: &jsonwebtoken::DecodingKey,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature);
    jsonwebtoken::crypto::verify(&encoded, message, key, alg.jose()).unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const ED25519_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","d":"n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU","x":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}"#;
    pub(crate) const P256_PUBLIC_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA","y":"Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0"}"#;

    #[test]
    fn rfc9421_b_1_4_ed25519_key_from_jwk() {
        let pair = pair_from_jwk(ED25519_JWK.as_bytes()).expect("B.1.4 key");
        let key = SigningKey {
            key_id: "test-key-ed25519".into(),
            pair,
        };
        assert_eq!(
            key.public_jwk()["x"],
            "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
        );
    }

    #[test]
    fn rsa_public_components_round_trip() {
        let rng = SystemRandom::new();
        let _ = rng;
        // A DER RSAPublicKey with n = 0x00c5 and e = 0x010001.
        let der = [
            0x30, 0x09, 0x02, 0x02, 0x00, 0xc5, 0x02, 0x03, 0x01, 0x00, 0x01,
        ];
        assert_eq!(rsa_components(&der), Some((vec![0xc5], vec![1, 0, 1])));
    }
}
