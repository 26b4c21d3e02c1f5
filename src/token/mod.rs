//! The token stage: from an access token to a [`Grant`].
//!
//! JWTs (RFC 9068) are verified with the issuer's keys, chosen by the unverified `iss`; every
//! other token is opaque and introspected (RFC 7662 / RFC 9701) at the issuers that offer
//! introspection, in configuration order. Results are cached by SHA-256 of the token: a
//! validated JWT until it expires, an introspection result for at most `cache_max_ttl` (the
//! revocation delay the operator chooses, SP2-RS-3 / INT-3). Concurrent misses for one token
//! share a single verification or AS call.

pub(crate) mod introspection;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod outbound;
pub(crate) mod shared;

use crate::grant::Grant;
use crate::policy::{KeySet as KeySetPolicy, Policy};
use crate::state::Redis;
use crate::telemetry::Metrics;
use introspection::{Introspected, Introspector};
use jsonwebtoken::Algorithm;
use jwks::KeySet;
use jwt::JwtIssuer;
use shared::SharedVerdicts;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a token grants nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// The token is invalid, expired, revoked or not for us: 401 `invalid_token`.
    Invalid(&'static str),
    /// The AS could not be asked or its answer not verified: 503, never a pass (INT-2).
    Unavailable(&'static str),
}

#[derive(Clone)]
enum Verdict {
    Valid(Arc<Grant>),
    Inactive,
}

#[derive(Clone)]
struct Cached {
    verdict: Verdict,
    ttl: Duration,
    kind: Kind,
}

struct PerEntryTtl;

impl moka::Expiry<[u8; 32], Cached> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Cached,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jwt = 0,
    Opaque = 1,
}

fn kind_of(token: &str) -> Kind {
    if jwt::looks_like_jwt(token) {
        Kind::Jwt
    } else {
        Kind::Opaque
    }
}

/// The token metric series, resolved once rather than looked up by label per request.
struct Counters {
    /// [kind][miss, hit]
    cache: [[prometheus::IntCounter; 2]; 2],
    /// [kind][valid, invalid, unavailable]
    outcome: [[prometheus::IntCounter; 3]; 2],
}

impl Counters {
    fn new(metrics: &Metrics) -> Counters {
        let kinds = [Kind::Jwt, Kind::Opaque];
        Counters {
            cache: kinds.map(|k| {
                ["miss", "hit"].map(|r| metrics.token_cache.with_label_values(&[k.label(), r]))
            }),
            outcome: kinds.map(|k| {
                ["valid", "invalid", "unavailable"]
                    .map(|r| metrics.token_validations.with_label_values(&[k.label(), r]))
            }),
        }
    }
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Jwt => "jwt",
            Kind::Opaque => "opaque",
        }
    }
}

pub struct Tokens {
    jwt_issuers: Vec<JwtIssuer>,
    introspectors: Vec<Introspector>,
    algs: Vec<Algorithm>,
    skew: Duration,
    cache: moka::future::Cache<[u8; 32], Cached>,
    metrics: Arc<Metrics>,
    counters: Counters,
    /// Introspection results shared by replicas (in front: the local cache).
    shared: Option<SharedVerdicts>,
    /// The claims the policy's rules read; a grant keeps no other (data minimisation: the
    /// rest of a token's claims, an e-mail or a name, is neither cached nor shared).
    claims_read: std::collections::BTreeSet<String>,
}

impl Tokens {
    pub fn new(
        policy: &Policy,
        metrics: Arc<Metrics>,
        shared: Option<Arc<Redis>>,
    ) -> Result<Self, String> {
        let algs: Vec<Algorithm> = policy.profile.algs.iter().map(|a| a.jose()).collect();
        let skew = policy.profile.max_clock_skew;
        let mut jwt_issuers = Vec::new();
        let mut introspectors = Vec::new();
        for issuer in &policy.issuers {
            let keys = KeySet::from_policy(
                &issuer.id,
                &issuer.jwks,
                issuer.jwks_refresh,
                metrics.clone(),
            )
            .map_err(|e| format!("issuer \"{}\": {e}", issuer.id))?;
            let ca_file = match &issuer.jwks {
                KeySetPolicy::Url { ca_file, .. } => ca_file.as_deref(),
                KeySetPolicy::File(_) => None,
            };
            if let Some(intro) = &issuer.introspection {
                introspectors.push(
                    Introspector::new(
                        intro,
                        &issuer.issuer,
                        &issuer.audiences,
                        keys.clone(),
                        ca_file,
                        algs.clone(),
                        skew,
                    )
                    .map_err(|e| format!("issuer \"{}\" introspection: {e}", issuer.id))?,
                );
            }
            jwt_issuers.push(JwtIssuer {
                issuer: issuer.issuer.clone(),
                audiences: issuer.audiences.clone(),
                keys,
            });
        }
        // Without a verdict key, nothing Redis says about a token could be believed: verdicts
        // are then not shared, and each replica asks the AS itself.
        let shared = match (shared, &policy.state.verdict_key_file) {
            (Some(redis), Some(path)) => {
                let secret = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                Some(SharedVerdicts::new(
                    redis,
                    secret.trim_ascii(),
                    policy.state_namespace(),
                    metrics
                        .shared_state_rejected
                        .with_label_values(&["introspection_verdict"]),
                ))
            }
            _ => None,
        };
        Ok(Tokens {
            jwt_issuers,
            introspectors,
            algs,
            skew,
            cache: moka::future::Cache::builder()
                .max_capacity(policy.state.token_cache_entries)
                .expire_after(PerEntryTtl)
                .build(),
            counters: Counters::new(&metrics),
            metrics,
            shared,
            claims_read: policy.claims_read(),
        })
    }

    /// Validates a request's token at time `now` (Unix seconds), cached by the SHA-256 the
    /// credential took of it.
    pub async fn validate(
        &self,
        credential: &crate::credential::Credential,
        now: u64,
    ) -> Result<Arc<Grant>, TokenError> {
        let (token, key) = (credential.token(), *credential.sha256());
        let entry = self
            .cache
            .entry(key)
            // A small future for moka to hold; the verification itself is built only on a miss.
            .or_try_insert_with(async {
                Box::pin(self.validate_uncached(token, &key, kind_of(token), now)).await
            })
            .await
            .map_err(|e| *e);
        // The kind rides in the cache entry: a hit does not look at the token again.
        let (kind, hit) = match &entry {
            Ok(entry) => (entry.value().kind, !entry.is_fresh()),
            Err(_) => (kind_of(token), false),
        };
        self.counters.cache[kind as usize][usize::from(hit)].inc();
        let result = entry.and_then(|entry| match entry.into_value().verdict {
            Verdict::Valid(grant) => self.unexpired(&grant, now).map(|()| grant),
            Verdict::Inactive => Err(TokenError::Invalid("the access token is not active")),
        });
        let outcome = match &result {
            Ok(_) => 0,
            Err(TokenError::Invalid(_)) => 1,
            Err(TokenError::Unavailable(_)) => 2,
        };
        self.counters.outcome[kind as usize][outcome].inc();
        result
    }

    /// A validated grant is still in force at `now` (judged again at the moment of the decision
    /// when a body was read after the token was validated).
    pub fn unexpired(&self, grant: &Grant, now: u64) -> Result<(), TokenError> {
        if grant
            .expires_at
            .is_some_and(|exp| exp + self.skew.as_secs() < now)
        {
            return Err(TokenError::Invalid("the access token has expired"));
        }
        Ok(())
    }

    async fn validate_uncached(
        &self,
        token: &str,
        key: &[u8; 32],
        kind: Kind,
        now: u64,
    ) -> Result<Cached, TokenError> {
        match kind {
            Kind::Jwt => {
                let iss = jwt::unverified_issuer(token)
                    .ok_or(TokenError::Invalid("the access token has no issuer"))?;
                let issuer = self.jwt_issuers.iter().find(|i| i.issuer == iss).ok_or(
                    TokenError::Invalid("the access token's issuer is not trusted"),
                )?;
                let (mut grant, ttl) =
                    jwt::verify_access_token(token, issuer, &self.algs, self.skew, now).await?;
                self.keep_read_claims(&mut grant);
                Ok(Cached {
                    verdict: Verdict::Valid(Arc::new(grant)),
                    ttl,
                    kind,
                })
            }
            Kind::Opaque => {
                if self.introspectors.is_empty() {
                    return Err(TokenError::Invalid("opaque access tokens are not accepted"));
                }
                let introspector = self.introspector_for(token).ok_or(TokenError::Invalid(
                    "the access token is not from a known authorization server",
                ))?;
                if let Some(shared) = &self.shared {
                    if let Some(believed) = shared.lookup(key, introspector).await {
                        return Ok(Cached {
                            verdict: match believed.grant {
                                Some(grant) => Verdict::Valid(Arc::new(grant)),
                                None => Verdict::Inactive,
                            },
                            ttl: believed.ttl,
                            kind: Kind::Opaque,
                        });
                    }
                }
                let result = self.introspect(introspector, token, now).await;
                if let (Ok(cached), Some(shared)) = (&result, &self.shared) {
                    let grant = match &cached.verdict {
                        Verdict::Valid(grant) => Some(&**grant),
                        Verdict::Inactive => None,
                    };
                    shared.store(key, introspector, grant, cached.ttl).await;
                }
                result
            }
        }
    }

    fn keep_read_claims(&self, grant: &mut Grant) {
        grant
            .claims
            .retain(|name, _| self.claims_read.contains(name));
    }

    /// The one AS an opaque token can be from: the one whose `token_prefix` it starts with,
    /// or the only one that introspects (whose prefix, if set, it must carry).
    fn introspector_for(&self, token: &str) -> Option<&Introspector> {
        let carries = |i: &&Introspector| i.token_prefix().is_some_and(|p| token.starts_with(p));
        match self.introspectors.as_slice() {
            [only] if only.token_prefix().is_none() => Some(only),
            several => several.iter().find(carries),
        }
    }

    async fn introspect(
        &self,
        introspector: &Introspector,
        token: &str,
        now: u64,
    ) -> Result<Cached, TokenError> {
        let (verdict, ttl) = match introspector.introspect(token, now, &self.metrics).await? {
            Introspected::Active(mut grant, ttl) => {
                self.keep_read_claims(&mut grant);
                (Verdict::Valid(Arc::new(*grant)), ttl)
            }
            Introspected::Inactive(ttl) => (Verdict::Inactive, ttl),
        };
        Ok(Cached {
            verdict,
            ttl,
            kind: Kind::Opaque,
        })
    }
}
