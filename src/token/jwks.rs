//! An issuer's signing keys (JWKS), from a URL or a file.
//!
//! Keys are parsed once and kept per `kid`. The set is refreshed when it is older than
//! `jwks_refresh` (in the background: requests keep using the current keys) and at once when a
//! token names an unknown `kid`, at most once per [`MIN_REFETCH`] so random `kid`s cannot
//! hammer the AS; concurrent refreshes are coalesced into one fetch. When the issuer cannot be
//! reached, the last good set stays in use.

use super::TokenError;
use crate::telemetry::Metrics;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shortest time between two fetches triggered by unknown `kid`s.
pub(crate) const MIN_REFETCH: Duration = Duration::from_secs(5);

pub enum Source {
    File(PathBuf),
    Url {
        url: String,
        client: reqwest::Client,
    },
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    fits: fn(Algorithm) -> bool,
    key: Arc<DecodingKey>,
}

#[derive(Default)]
struct Keys {
    keys: Vec<Key>,
    fetched_at: Option<Instant>,
}

pub struct KeySet {
    label: String,
    source: Source,
    refresh_every: Duration,
    keys: ArcSwap<Keys>,
    last_attempt: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

enum Fetch {
    Done,
    Failed,
    TooSoon,
}

impl KeySet {
    pub fn new(
        label: &str,
        source: Source,
        refresh_every: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        KeySet {
            label: label.to_string(),
            source,
            refresh_every,
            keys: ArcSwap::from_pointee(Keys::default()),
            last_attempt: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// A key set as the configuration describes it; file sources are read now.
    pub fn from_policy(
        label: &str,
        policy: &crate::policy::KeySet,
        refresh_every: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<KeySet>, String> {
        let source = match policy {
            crate::policy::KeySet::File(path) => Source::File(path.clone()),
            crate::policy::KeySet::Url { url, ca_file } => Source::Url {
                url: url.clone(),
                client: super::outbound::client(ca_file.as_deref(), None, Duration::from_secs(5))?,
            },
        };
        let keys = Arc::new(KeySet::new(label, source, refresh_every, metrics));
        keys.load_file_now()?;
        Ok(keys)
    }

    /// Loads a file source now, so a broken file is a startup error.
    pub fn load_file_now(&self) -> Result<(), String> {
        if let Source::File(path) = &self.source {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.install(&bytes)?;
        }
        Ok(())
    }

    /// The verification key for a JWS header (SP2-CRY-7: `kid`, then `kty`/`crv`/`alg`).
    pub async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, TokenError> {
        if let Some(key) = self.find(kid, alg) {
            self.refresh_in_background_if_stale();
            return Ok(key);
        }
        match self.fetch(true).await {
            Fetch::Done | Fetch::TooSoon => self.find(kid, alg).ok_or(TokenError::Invalid(
                "the signing key is not one of the issuer's keys",
            )),
            Fetch::Failed => self.find(kid, alg).ok_or(TokenError::Unavailable(
                "the issuer's keys cannot be fetched",
            )),
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let keys = self.keys.load();
        keys.keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .find(|k| (k.fits)(alg) && k.alg.is_none_or(|a| a == alg))
            .map(|k| k.key.clone())
    }

    fn refresh_in_background_if_stale(self: &Arc<Self>) {
        let stale = self
            .keys
            .load()
            .fetched_at
            .is_some_and(|at| at.elapsed() >= self.refresh_every);
        if stale && matches!(self.source, Source::Url { .. }) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let this = self.clone();
                runtime.spawn(async move {
                    this.fetch(false).await;
                });
            }
        }
    }

    /// One fetch at a time; `rate_limited` fetches (unknown kid) wait for [`MIN_REFETCH`].
    async fn fetch(&self, rate_limited: bool) -> Fetch {
        let started = Instant::now();
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = *last {
                // Someone fetched while we waited for the lock: use their result.
                if at >= started {
                    return Fetch::Done;
                }
                if rate_limited && at.elapsed() < MIN_REFETCH {
                    return Fetch::TooSoon;
                }
                if !rate_limited
                    && self
                        .keys
                        .load()
                        .fetched_at
                        .is_some_and(|f| f.elapsed() < self.refresh_every)
                {
                    return Fetch::Done;
                }
            }
            *last = Some(Instant::now());
        }
        let result = match &self.source {
            Source::File(path) => std::fs::read(path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|bytes| self.install(&bytes)),
            Source::Url { url, client } => match client.get(url).send().await {
                Ok(response) if response.status().is_success() => {
                    match super::outbound::bounded_body(response).await {
                        Ok(bytes) => self.install(&bytes),
                        Err(e) => Err(format!("reading {url}: {e:?}")),
                    }
                }
                Ok(response) => Err(format!("{url} answered {}", response.status())),
                Err(e) => Err(format!("{url}: {e}")),
            },
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .jwks_refreshes
            .with_label_values(&[self.label.as_str(), outcome])
            .inc();
        match result {
            Ok(()) => Fetch::Done,
            Err(error) => {
                tracing::warn!(key_set = %self.label, %error, "JWKS refresh failed; keeping the last good keys");
                Fetch::Failed
            }
        }
    }

    fn install(&self, bytes: &[u8]) -> Result<(), String> {
        let set: JwkSet =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWK set: {e}"))?;
        let keys: Vec<Key> = set.keys.iter().filter_map(parse_key).collect();
        if keys.is_empty() {
            return Err("no usable verification key in the set".into());
        }
        self.keys.store(Arc::new(Keys {
            keys,
            fetched_at: Some(Instant::now()),
        }));
        Ok(())
    }
}

/// A JWK this gateway can verify with (SP2-CRY-2/4), or `None`.
fn parse_key(jwk: &Jwk) -> Option<Key> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
    {
        return None;
    }
    let fits: fn(Algorithm) -> bool = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            |a| a == Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            |a| a == Algorithm::EdDSA
        }
        AlgorithmParameters::RSA(rsa) => {
            if crate::encoding::rsa_modulus_bits(&rsa.n)? < crate::encoding::MIN_RSA_BITS {
                return None;
            }
            // PS512 verifies RFC 9421 rsa-pss-sha512 request signatures of clients.
            |a| a == Algorithm::PS256 || a == Algorithm::PS512
        }
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        Some(jsonwebtoken::jwk::KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(jsonwebtoken::jwk::KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(jsonwebtoken::jwk::KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(jsonwebtoken::jwk::KeyAlgorithm::PS512) => Some(Algorithm::PS512),
        Some(_) => return None,
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        fits,
        key: Arc::new(key),
    })
}
