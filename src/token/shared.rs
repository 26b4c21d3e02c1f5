//! Introspection verdicts shared by replicas through Redis. Redis is not trusted with them:
//! each value carries an HMAC-SHA256 under `[state] verdict_key_file`, a key that never goes
//! to Redis, over everything the verdict is believed for (the token's hash, the AS, this
//! gateway's audiences, the verdict and its expiry). Keys are prefixed with the deployment's
//! namespace, and the lifetime read back is capped by this gateway's own `cache_max_ttl` and
//! the token's `exp`. A value that fails any check is ignored (and counted): the AS is asked.

use super::introspection::Introspector;
use crate::encoding::hex;
use crate::grant::Grant;
use crate::state::Redis;
use aws_lc_rs::hmac;
use base64::Engine;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct SharedVerdicts {
    redis: Arc<Redis>,
    key: hmac::Key,
    namespace: String,
    rejected: prometheus::IntCounter,
}

/// What a value in Redis says, and for what it may be believed.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    /// Hex SHA-256 of the token.
    token: String,
    issuer: String,
    audiences: Vec<String>,
    /// `None`: the token is not active.
    grant: Option<Grant>,
    expires_at_ms: u64,
}

/// What a verdict is believed for: the AS that gave it and this gateway's view of that AS.
struct Scope<'a> {
    issuer: &'a str,
    audiences: &'a [String],
    max_ttl: Duration,
}

impl<'a> Scope<'a> {
    fn of(asked: &'a Introspector) -> Self {
        Scope {
            issuer: asked.issuer(),
            audiences: asked.audiences(),
            max_ttl: asked.cache_max_ttl,
        }
    }
}

/// A verdict read back and believed.
pub(crate) struct Believed {
    pub grant: Option<Grant>,
    pub ttl: Duration,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl SharedVerdicts {
    pub(crate) fn new(
        redis: Arc<Redis>,
        secret: &[u8],
        namespace: String,
        rejected: prometheus::IntCounter,
    ) -> Self {
        SharedVerdicts {
            redis,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            namespace,
            rejected,
        }
    }

    fn redis_key(&self, token_hash: &[u8; 32]) -> String {
        format!(
            "fapigate:{}:introspection:{}",
            self.namespace,
            hex(token_hash)
        )
    }

    /// The shared verdict on a token, if there is one this gateway may believe.
    pub(crate) async fn lookup(
        &self,
        token_hash: &[u8; 32],
        asked: &Introspector,
    ) -> Option<Believed> {
        let bytes = self.redis.get(&self.redis_key(token_hash)).await.ok()??;
        let now = crate::clock::unix_millis();
        let believed = self.believe(&bytes, token_hash, &Scope::of(asked), now);
        if believed.is_none() {
            self.rejected.inc();
            tracing::warn!(
                token = %&hex(token_hash)[..12],
                "a shared introspection verdict failed its checks; asking the AS"
            );
        }
        believed
    }

    fn believe(
        &self,
        value: &[u8],
        token_hash: &[u8; 32],
        scope: &Scope<'_>,
        now_ms: u64,
    ) -> Option<Believed> {
        let dot = value.iter().position(|b| *b == b'.')?;
        let (mac, payload) = (&value[..dot], &value[dot + 1..]);
        let mac = B64.decode(mac).ok()?;
        hmac::verify(&self.key, payload, &mac).ok()?;
        let payload: Payload = serde_json::from_slice(payload).ok()?;
        if payload.token != hex(token_hash)
            || payload.issuer != scope.issuer
            || payload.audiences != scope.audiences
        {
            return None;
        }
        let mut until_ms = payload.expires_at_ms;
        if let Some(exp) = payload.grant.as_ref().and_then(|g| g.expires_at) {
            until_ms = until_ms.min(exp.saturating_mul(1000));
        }
        let ttl = Duration::from_millis(until_ms.checked_sub(now_ms)?).min(scope.max_ttl);
        Some(Believed {
            grant: payload.grant,
            ttl,
        })
    }

    /// Shares a verdict for `ttl`. A Redis that cannot store only costs the other replicas an
    /// AS call.
    pub(crate) async fn store(
        &self,
        token_hash: &[u8; 32],
        asked: &Introspector,
        grant: Option<&Grant>,
        ttl: Duration,
    ) {
        let now = crate::clock::unix_millis();
        let value = self.seal(token_hash, &Scope::of(asked), grant, ttl, now);
        if let Some(value) = value {
            let _ = self
                .redis
                .set(&self.redis_key(token_hash), &value, ttl)
                .await;
        }
    }

    fn seal(
        &self,
        token_hash: &[u8; 32],
        scope: &Scope<'_>,
        grant: Option<&Grant>,
        ttl: Duration,
        now_ms: u64,
    ) -> Option<Vec<u8>> {
        let payload = Payload {
            token: hex(token_hash),
            issuer: scope.issuer.to_string(),
            audiences: scope.audiences.to_vec(),
            grant: grant.cloned(),
            expires_at_ms: now_ms + u64::try_from(ttl.as_millis()).ok()?,
        };
        let payload = serde_json::to_vec(&payload).ok()?;
        let mac = hmac::sign(&self.key, &payload);
        let mut value = B64.encode(mac.as_ref()).into_bytes();
        value.push(b'.');
        value.extend_from_slice(&payload);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn verdicts(secret: &[u8]) -> SharedVerdicts {
        let redis = Redis::new(&crate::policy::RedisPolicy {
            url: "redis://127.0.0.1:1".into(),
            cluster_nodes: Vec::new(),
            timeout: Duration::from_millis(10),
            tls: Default::default(),
            sentinel: None,
            auth: None,
            replica_acks: 0,
        })
        .unwrap();
        let counter = prometheus::IntCounter::new("t", "t").unwrap();
        SharedVerdicts::new(Arc::new(redis), secret, "test".into(), counter)
    }

    fn grant(scopes: &[&str], exp: Option<u64>) -> Grant {
        Grant {
            issuer: "https://as".into(),
            subject: Some("psu".into()),
            client_id: Some("tpp".into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            authorization_details: vec![],
            cnf: Default::default(),
            expires_at: exp,
            issued_at: None,
            acr: None,
            auth_time: None,
            token_id: None,
            token_type: None,
            claims: Default::default(),
        }
    }

    /// Issue 14 §2: a verdict is believed only as sealed, for the token, AS and audiences it
    /// was sealed for, and never longer than this gateway's cache limit or the token's exp.
    #[test]
    fn a_shared_verdict_is_believed_only_as_sealed_and_for_its_scope() {
        let store = verdicts(&[7; 32]);
        let audiences = vec!["https://api.bank.example".to_string()];
        let scope = Scope {
            issuer: "https://as",
            audiences: &audiences,
            max_ttl: Duration::from_secs(30),
        };
        let token = [1u8; 32];
        let exp = NOW / 1000 + 20;
        let sealed = store
            .seal(
                &token,
                &scope,
                Some(&grant(&["accounts"], Some(exp))),
                Duration::from_secs(60),
                NOW,
            )
            .unwrap();
        let believed = store.believe(&sealed, &token, &scope, NOW).unwrap();
        assert_eq!(believed.grant.unwrap().scopes, ["accounts"]);
        assert_eq!(believed.ttl, Duration::from_secs(20), "capped by exp");

        // A scope added to the stored JSON: the MAC no longer holds.
        let text = String::from_utf8(sealed.clone()).unwrap();
        let forged = text.replace("[\"accounts\"]", "[\"accounts\",\"payments\"]");
        assert_ne!(forged, text);
        assert!(store
            .believe(forged.as_bytes(), &token, &scope, NOW)
            .is_none());
        // The same value under another token's key, or read by another AS or audience.
        assert!(store.believe(&sealed, &[2u8; 32], &scope, NOW).is_none());
        let other = vec!["https://other.bank.example".to_string()];
        let elsewhere = Scope {
            audiences: &other,
            ..scope
        };
        assert!(store.believe(&sealed, &token, &elsewhere, NOW).is_none());
        // Sealed under another key, or expired.
        assert!(verdicts(&[8; 32])
            .believe(&sealed, &token, &scope, NOW)
            .is_none());
        assert!(store
            .believe(&sealed, &token, &scope, NOW + 60_001)
            .is_none());
        for garbage in [&b""[..], b"no-dot", b"!!.{}", b"."] {
            assert!(store.believe(garbage, &token, &scope, NOW).is_none());
        }
        // An inactive verdict, capped by this gateway's cache_max_ttl.
        let inactive = store
            .seal(&token, &scope, None, Duration::from_secs(300), NOW)
            .unwrap();
        let believed = store.believe(&inactive, &token, &scope, NOW).unwrap();
        assert!(believed.grant.is_none());
        assert_eq!(believed.ttl, Duration::from_secs(30));
    }
}
