//! Signing keys that never leave an HSM: the private key is found in a PKCS#11 token (an
//! RFC 7512 `pkcs11:` URI), each signature is made by the token, and the public key for the
//! JWKS is read from it. Ed25519 (CKM_EDDSA), P-256 (CKM_ECDSA over a SHA-256 digest made
//! here) and RSA (CKM_SHA512_RSA_PKCS_PSS for HTTP signatures, CKM_SHA256_RSA_PKCS_PSS for
//! JOSE).

use crate::policy::Pkcs11Uri;
use base64::Engine;
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use sha2::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HsmKind {
    Ed25519,
    P256,
    Rsa,
}

pub(crate) struct HsmKey {
    pub kind: HsmKind,
    /// The public half as a JWK without `kid`.
    pub public: serde_json::Value,
    /// One session, one signature at a time: a PKCS#11 session is not shared by threads.
    session: Mutex<Session>,
    key: ObjectHandle,
}

/// The OID of P-256 in DER (`CKA_EC_PARAMS`).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The keys opened by this process, by URI. A reload gets the same key and session back:
/// a second context would find the library initialised already, and dropping the first
/// would close its session, and logging out one session logs out every session of the
/// process on that token. So they live as long as the process.
static OPENED: OnceLock<Mutex<HashMap<String, Arc<HsmKey>>>> = OnceLock::new();

/// The loaded modules, by path, never dropped: dropping a context calls `C_Finalize`, which
/// would end every session of the process on that module (the live key's too).
static MODULES: OnceLock<Mutex<HashMap<std::path::PathBuf, Pkcs11>>> = OnceLock::new();

fn module(path: &std::path::Path) -> Result<Pkcs11, String> {
    let modules = MODULES.get_or_init(Default::default);
    let mut modules = modules.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    let context =
        Pkcs11::new(path).map_err(|e| format!("the PKCS#11 module {}: {e}", path.display()))?;
    match context.initialize(CInitializeArgs::OsThreads) {
        Ok(())
        | Err(cryptoki::error::Error::AlreadyInitialized)
        | Err(cryptoki::error::Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            // Kept even so: dropping it would finalise a library another key may use.
            modules.insert(path.to_path_buf(), context);
            return Err(format!("the PKCS#11 module did not initialise: {e}"));
        }
    }
    modules.insert(path.to_path_buf(), context.clone());
    Ok(context)
}

impl HsmKey {
    /// The key `uri` names: the one this process opened already, or [`HsmKey::open`]ed now.
    pub(crate) fn shared(uri: &Pkcs11Uri, pin: &str) -> Result<Arc<HsmKey>, String> {
        let opened = OPENED.get_or_init(Default::default);
        let mut opened = opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = opened.get(&uri.text) {
            return Ok(key.clone());
        }
        let key = Arc::new(HsmKey::open(uri, pin)?);
        opened.insert(uri.text.clone(), key.clone());
        Ok(key)
    }

    /// Opens the module, logs in to the token the URI names with `pin` and finds its private
    /// key and public half. Every failure names what to check; the PIN is never printed.
    pub(crate) fn open(uri: &Pkcs11Uri, pin: &str) -> Result<HsmKey, String> {
        let context = module(&uri.module)?;
        let slots = context
            .get_slots_with_token()
            .map_err(|e| format!("the PKCS#11 module lists no tokens: {e}"))?;
        let slot = slots
            .into_iter()
            .find(|slot| {
                context.get_token_info(*slot).is_ok_and(|info| {
                    uri.token
                        .as_deref()
                        .is_none_or(|t| info.label().trim_end() == t)
                        && uri
                            .serial
                            .as_deref()
                            .is_none_or(|s| info.serial_number().trim_end() == s)
                })
            })
            .ok_or_else(|| format!("no PKCS#11 token matches {}", uri.text))?;
        let session = context
            .open_ro_session(slot)
            .map_err(|e| format!("the PKCS#11 token did not open a session: {e}"))?;
        // A login holds for every session of the process on the token: a second key on it
        // finds the user logged in already.
        match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
            Ok(()) | Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                return Err(format!(
                    "the PKCS#11 login failed (check response_signing.pin_file): {e}"
                ))
            }
        }
        let find = |class: ObjectClass| -> Result<Option<ObjectHandle>, String> {
            let mut template = vec![Attribute::Class(class)];
            if let Some(label) = &uri.object {
                template.push(Attribute::Label(label.as_bytes().to_vec()));
            }
            if let Some(id) = &uri.id {
                template.push(Attribute::Id(id.clone()));
            }
            let found = session
                .find_objects(&template)
                .map_err(|e| format!("the PKCS#11 token could not be searched: {e}"))?;
            match found.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(*one)),
                _ => Err(format!("{} names more than one key in the token", uri.text)),
            }
        };
        let key = find(ObjectClass::PRIVATE_KEY)?
            .ok_or_else(|| format!("no private key in the token matches {}", uri.text))?;
        let public_key = find(ObjectClass::PUBLIC_KEY)?;
        let attributes = |object: ObjectHandle, types: &[AttributeType]| {
            session
                .get_attributes(object, types)
                .map_err(|e| format!("the PKCS#11 key's attributes: {e}"))
        };
        let kind = match attributes(key, &[AttributeType::KeyType])?.first() {
            Some(Attribute::KeyType(t)) if *t == KeyType::EC_EDWARDS => HsmKind::Ed25519,
            Some(Attribute::KeyType(t)) if *t == KeyType::EC => HsmKind::P256,
            Some(Attribute::KeyType(t)) if *t == KeyType::RSA => HsmKind::Rsa,
            _ => return Err("the PKCS#11 key is not an Ed25519, P-256 or RSA key".into()),
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let public = match kind {
            HsmKind::Ed25519 | HsmKind::P256 => {
                let object = public_key
                    .ok_or_else(|| format!("no public key in the token matches {}", uri.text))?;
                let values =
                    attributes(object, &[AttributeType::EcParams, AttributeType::EcPoint])?;
                let (mut params, mut point) = (Vec::new(), Vec::new());
                for value in values {
                    match value {
                        Attribute::EcParams(p) => params = p,
                        Attribute::EcPoint(p) => point = p,
                        _ => {}
                    }
                }
                let point = unwrap_octet_string(&point);
                match kind {
                    HsmKind::P256 if params == P256_OID && point.len() == 65 && point[0] == 4 => {
                        serde_json::json!({"kty": "EC", "crv": "P-256", "use": "sig",
                            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65])})
                    }
                    HsmKind::Ed25519 if point.len() == 32 => serde_json::json!({
                        "kty": "OKP", "crv": "Ed25519", "use": "sig", "x": b64.encode(point)}),
                    _ => return Err("the PKCS#11 key is an EC key of another curve".into()),
                }
            }
            HsmKind::Rsa => {
                let values = attributes(
                    key,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )?;
                let (mut n, mut e) = (Vec::new(), Vec::new());
                for value in values {
                    match value {
                        Attribute::Modulus(v) => n = v,
                        Attribute::PublicExponent(v) => e = v,
                        _ => {}
                    }
                }
                if crate::encoding::significant_bits(&n) < crate::encoding::MIN_RSA_BITS {
                    return Err("the PKCS#11 RSA key is shorter than 2048 bits".into());
                }
                serde_json::json!({"kty": "RSA", "use": "sig", "n": b64.encode(n), "e": b64.encode(e)})
            }
        };
        Ok(HsmKey {
            kind,
            public,
            session: Mutex::new(session),
            key,
        })
    }

    /// A signature by the token, in the fixed formats of RFC 9421 and JOSE (raw r||s for
    /// ECDSA, as PKCS#11 returns it).
    pub(crate) fn sign(&self, message: &[u8], jose: bool) -> Result<Vec<u8>, String> {
        let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let result = match self.kind {
            HsmKind::Ed25519 => session.sign(
                &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                self.key,
                message,
            ),
            HsmKind::P256 => {
                session.sign(&Mechanism::Ecdsa, self.key, &sha2::Sha256::digest(message))
            }
            HsmKind::Rsa if jose => session.sign(
                &Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32.into(),
                }),
                self.key,
                message,
            ),
            HsmKind::Rsa => session.sign(
                &Mechanism::Sha512RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA512,
                    mgf: PkcsMgfType::MGF1_SHA512,
                    s_len: 64.into(),
                }),
                self.key,
                message,
            ),
        };
        result.map_err(|e| format!("the HSM did not sign: {e}"))
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point; some tokens return the bare point.
fn unwrap_octet_string(value: &[u8]) -> &[u8] {
    // A bare Ed25519 key or uncompressed P-256 point has a length no wrapped one has.
    if value.len() == 32 || value.len() == 65 {
        return value;
    }
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        _ => value,
    }
}
