//! The binding stage: a token is accepted only from the party it is bound to.
//!
//! - `cnf.jkt` (RFC 9449): the `DPoP` scheme with a valid proof signed by that key, not
//!   replayed, carrying a server nonce when the profile requires one.
//! - `cnf.x5t#S256` (RFC 8705 §3): the `Bearer` scheme from the client holding that
//!   certificate on this TLS connection (or in `Client-Cert` from a trusted proxy).
//!
//! Decisions where the specs leave room: a token with no `cnf` is refused (SP2-RS-6); a token
//! bound both ways is refused as ambiguous; an mTLS-bound token presented under the `DPoP`
//! scheme is refused (IA-4: one sender constraint at a time, and the proof would bind nothing);
//! `fapi1-advanced` accepts mTLS-bound tokens only (FAPI1-ADV-3).

pub mod dpop;
pub(crate) mod nonce;
pub(crate) mod thumbprint;

use crate::credential::{Credential, Scheme};
use crate::grant::{Grant, SenderBinding};
use crate::policy::{Policy, ProfileKind};
use crate::request::RequestFacts;
use crate::state::replay::{FirstUse, MemoryReplayStore, ProofRecord, ReplayStore};
use crate::state::{Redis, RedisReplayStore};
use dpop::{DpopCheck, ProofContext, ValidProof};
use jsonwebtoken::Algorithm;
use nonce::{NonceCheck, Nonces};
use std::sync::Arc;
use std::time::Duration;

/// Why the binding stage refused a request; `reject` renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingError {
    /// The token's binding does not match how it was presented (`invalid_token`).
    Unbound {
        scheme: Scheme,
        description: &'static str,
    },
    /// A DPoP-bound token under `Bearer` (DPOP-7.2-1).
    Downgrade,
    /// A DPoP proof failed a check of RFC 9449 §4.3.
    Proof(DpopCheck),
    /// A nonce is required (DPOP-9): this one to retry with.
    NonceRequired { nonce: String },
    /// The key used its share of the replay store.
    ShareExhausted { retry_after: u64 },
    /// The replay store or the nonce key cannot answer: fail closed.
    StateUnavailable,
    /// The memory replay store is full (`replay_cache_entries` too small for the load).
    StoreFull,
}

/// Per-process state that must outlive configuration reloads: the replay records (a reload
/// must not make a used proof usable again) and the generated nonce key (nonces handed out
/// before a reload stay valid).
pub struct LocalState {
    replay: Arc<MemoryReplayStore>,
    /// Keys of proofs seen (what a header decides does not change with the configuration).
    proof_keys: Arc<dpop::ProofKeys>,
    nonce_secret: [u8; 32],
    window: Duration,
    capacity: u64,
    per_key: u64,
    /// The audit trail, one writer per file for the process's life.
    pub audit: crate::audit::Trails,
}

impl LocalState {
    pub fn new(policy: &Policy) -> Result<Arc<LocalState>, String> {
        let window = memory_window(&policy.profile);
        let capacity = policy.state.replay_cache_entries;
        let per_key = policy.state.replay_entries_per_key;
        let mut nonce_secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce_secret)
            .map_err(|_| "no randomness for the nonce key".to_string())?;
        Ok(Arc::new(LocalState {
            replay: Arc::new(MemoryReplayStore::new(capacity, per_key, window)),
            proof_keys: Arc::new(dpop::ProofKeys::new(PROOF_KEY_BYTES)),
            nonce_secret,
            window,
            capacity,
            per_key,
            audit: crate::audit::Trails::default(),
        }))
    }

    /// For `fapigate check`: the same, but no audit file is opened or locked (a running
    /// gateway holds it).
    pub fn for_check(policy: &Policy) -> Result<Arc<LocalState>, String> {
        let mut local =
            Arc::into_inner(LocalState::new(policy)?).ok_or("the local state is shared already")?;
        local.audit = crate::audit::Trails::dry();
        Ok(Arc::new(local))
    }
}

impl LocalState {
    /// The memory replay store's records and capacity (`fapigate_replay_store_*`).
    pub(crate) fn replay_fill(&self) -> (u64, u64) {
        self.replay.fill()
    }
}

/// How long the memory store keeps a record at least: the longest a record must live (a proof
/// whose iat is `max_clock_skew` ahead stays acceptable for the whole window after it), plus
/// the second the proof's iat was rounded to.
fn memory_window(profile: &crate::policy::Profile) -> Duration {
    profile.dpop_proof_max_age + profile.max_clock_skew * 2 + Duration::from_secs(1)
}

/// The proof headers (and keys) kept: some thousands of clients' keys.
const PROOF_KEY_BYTES: u64 = 4 << 20;

pub struct Binder {
    replay: Arc<dyn ReplayStore>,
    proof_keys: Arc<dpop::ProofKeys>,
    nonces: Option<NonceKey>,
    algs: Vec<Algorithm>,
    /// How old a proof's `iat` may be (`dpop_proof_max_age`).
    max_age: Duration,
    /// How long after its `iat` a proof can still be accepted by anyone: the max age plus the
    /// skew a future `iat` was allowed.
    window: Duration,
}

/// Where the nonce MAC key comes from: a file or this process (one replica), or Redis, so
/// a nonce minted by one replica is accepted by every other.
enum NonceKey {
    Fixed(Nonces),
    Shared {
        redis: Arc<Redis>,
        /// `fapigate:<namespace>:dpop:nonce-key`: one key per deployment.
        name: String,
        slot: u64,
        loaded: tokio::sync::OnceCell<Nonces>,
    },
}

impl NonceKey {
    async fn get(&self) -> Result<&Nonces, BindingError> {
        match self {
            NonceKey::Fixed(nonces) => Ok(nonces),
            NonceKey::Shared {
                redis,
                name,
                slot,
                loaded,
            } => {
                loaded
                    .get_or_try_init(|| async {
                        let mut fresh = [0u8; 32];
                        aws_lc_rs::rand::fill(&mut fresh)
                            .map_err(|_| BindingError::StateUnavailable)?;
                        // The first replica to ask sets the key; everyone then reads the same one.
                        redis
                            .set_new_forever(name, &fresh)
                            .await
                            .map_err(|_| BindingError::StateUnavailable)?;
                        let key = redis
                            .get(name)
                            .await
                            .map_err(|_| BindingError::StateUnavailable)?
                            .ok_or(BindingError::StateUnavailable)?;
                        Ok(Nonces::new(&key, *slot))
                    })
                    .await
            }
        }
    }
}

/// A request bound to its token, as judged from its head: what [`Binder::record`] needs to
/// judge the proof again at the moment of the decision and use it up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Bound {
    /// A fresh `DPoP-Nonce` when the client's nonce is from the previous slot (RFC 9449 §8.2).
    pub fresh_nonce: Option<String>,
    proof: Option<BoundProof>,
    /// The time the head was judged at.
    judged_at: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct BoundProof {
    jkt: String,
    iat: u64,
    nonce: Option<String>,
    /// The replay-store key.
    jti_hash: [u8; 32],
}

impl Binder {
    pub fn new(
        policy: &Policy,
        redis: Option<Arc<Redis>>,
        local: &LocalState,
    ) -> Result<Self, String> {
        let profile = &policy.profile;
        let window = profile.dpop_proof_max_age + profile.max_clock_skew;
        if redis.is_none()
            && (memory_window(profile) != local.window
                || policy.state.replay_cache_entries != local.capacity
                || policy.state.replay_entries_per_key != local.per_key)
        {
            tracing::warn!(
                "a changed proof window, replay_cache_entries or replay_entries_per_key \
                 takes effect after a restart"
            );
        }
        let nonces = if profile.dpop_nonce_required {
            let slot = profile.dpop_proof_max_age.as_secs();
            Some(match (&profile.dpop_nonce_secret_file, &redis) {
                (Some(path), _) => {
                    let secret =
                        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                    NonceKey::Fixed(Nonces::new(secret.trim_ascii(), slot))
                }
                (None, Some(redis)) => NonceKey::Shared {
                    redis: redis.clone(),
                    name: format!("fapigate:{}:dpop:nonce-key", policy.state_namespace()),
                    slot,
                    loaded: tokio::sync::OnceCell::new(),
                },
                (None, None) => NonceKey::Fixed(Nonces::new(&local.nonce_secret, slot)),
            })
        } else {
            None
        };
        let replay: Arc<dyn ReplayStore> = match redis {
            Some(redis) => Arc::new(RedisReplayStore {
                redis,
                per_key: policy.state.replay_entries_per_key,
                epoch: memory_window(profile),
            }),
            None => local.replay.clone(),
        };
        Ok(Binder {
            proof_keys: Arc::clone(&local.proof_keys),
            replay,
            nonces,
            algs: profile.algs.iter().map(|a| a.jose()).collect(),
            max_age: profile.dpop_proof_max_age,
            window,
        })
    }

    pub async fn bind(
        &self,
        policy: &Policy,
        credential: &Credential,
        grant: &Grant,
        proof: Option<ValidProof>,
        facts: &RequestFacts<'_>,
    ) -> Result<Bound, BindingError> {
        let invalid = |scheme, description| BindingError::Unbound {
            scheme,
            description,
        };
        match grant.cnf.binding() {
            SenderBinding::Unbound => Err(invalid(
                credential.scheme,
                "the access token is not sender-constrained",
            )),
            SenderBinding::Both => Err(invalid(
                credential.scheme,
                "the access token is bound to both a DPoP key and a certificate",
            )),
            SenderBinding::Dpop { jkt } => {
                if policy.profile.kind == ProfileKind::Fapi1Advanced {
                    return Err(invalid(
                        credential.scheme,
                        "DPoP-bound access tokens are not accepted by this resource server",
                    ));
                }
                if credential.scheme == Scheme::Bearer {
                    return Err(BindingError::Downgrade);
                }
                if grant
                    .token_type
                    .as_deref()
                    .is_some_and(|t| !t.eq_ignore_ascii_case("DPoP"))
                {
                    return Err(invalid(
                        Scheme::Dpop,
                        "the access token is not a DPoP token",
                    ));
                }
                let proof = proof.ok_or(BindingError::Proof(DpopCheck::Missing))?;
                self.dpop(proof, jkt, facts).await
            }
            SenderBinding::Mtls { x5t_s256: x5t } => {
                if credential.scheme == Scheme::Dpop {
                    return Err(invalid(
                        Scheme::Dpop,
                        "the access token is certificate-bound: present it with the Bearer scheme",
                    ));
                }
                match facts.client_cert {
                    None => Err(invalid(
                        Scheme::Bearer,
                        "no client certificate was presented",
                    )),
                    Some(cert) if cert.x5t_s256.encoded() != x5t => Err(invalid(
                        Scheme::Bearer,
                        "the client certificate does not match the access token",
                    )),
                    Some(_) => Ok(Bound::default()),
                }
            }
        }
    }

    /// RFC 9449 §4.3 checks that need no grant, for a `DPoP` credential: run before the token
    /// is validated, so a request without a valid proof for its token never reaches the AS.
    pub fn proof(
        &self,
        policy: &Policy,
        credential: &Credential,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<ValidProof>, BindingError> {
        if credential.scheme != Scheme::Dpop {
            return Ok(None);
        }
        let mut proofs = facts.headers.get_all("dpop").iter();
        let proof = proofs
            .next()
            .ok_or(BindingError::Proof(DpopCheck::Missing))?;
        if proofs.next().is_some() {
            return Err(BindingError::Proof(DpopCheck::Multiple));
        }
        let proof = proof
            .to_str()
            .map_err(|_| BindingError::Proof(DpopCheck::Malformed))?;
        let target_uri = policy.listener.public_url.join(facts.path);
        let context = ProofContext {
            method: facts.method.as_str(),
            target_uri: &target_uri,
            access_token_sha256: credential.sha256(),
            now: facts.now,
            algs: &self.algs,
            max_clock_skew: policy.profile.max_clock_skew,
            max_age: policy.profile.dpop_proof_max_age,
            keys: Some(&self.proof_keys),
        };
        dpop::verify(proof, &context)
            .map(Some)
            .map_err(BindingError::Proof)
    }

    async fn dpop(
        &self,
        valid: ValidProof,
        bound_jkt: &str,
        facts: &RequestFacts<'_>,
    ) -> Result<Bound, BindingError> {
        if valid.jkt != bound_jkt {
            return Err(BindingError::Unbound {
                scheme: Scheme::Dpop,
                description: DpopCheck::KeyBinding.describe(),
            });
        }
        // Checked from the head already: a client without a current nonce is told before it
        // sends a body.
        let fresh_nonce = self.nonce(valid.nonce.as_deref(), facts.now).await?;
        Ok(Bound {
            fresh_nonce,
            proof: Some(BoundProof {
                jkt: valid.jkt,
                iat: valid.iat,
                nonce: valid.nonce,
                jti_hash: valid.jti_hash,
            }),
            judged_at: facts.now,
        })
    }

    /// RFC 9449 §8: the proof's nonce at time `now`; `Some` is a fresh nonce for the response.
    async fn nonce(&self, nonce: Option<&str>, now: u64) -> Result<Option<String>, BindingError> {
        let Some(key) = &self.nonces else {
            return Ok(None);
        };
        let nonces = key.get().await?;
        match nonces.check(nonce, now) {
            NonceCheck::Current => Ok(None),
            NonceCheck::Previous => Ok(Some(nonces.current(now))),
            NonceCheck::Refused => Err(BindingError::NonceRequired {
                nonce: nonces.current(now),
            }),
        }
    }

    /// Judges the proof again at `now`, the moment of the decision (a body read in between
    /// must not let a proof or a nonce be judged as it was when the head arrived), then writes
    /// its replay record: the last step of admission, so a request refused for any other
    /// reason never takes room in the store (DPOP-11.1-2/3).
    pub async fn record(&self, bound: &mut Bound, now: u64) -> Result<(), BindingError> {
        let Some(proof) = &bound.proof else {
            return Ok(());
        };
        if now != bound.judged_at {
            if proof.iat < now.saturating_sub(self.max_age.as_secs()) {
                return Err(BindingError::Proof(DpopCheck::Iat));
            }
            bound.fresh_nonce = self.nonce(proof.nonce.as_deref(), now).await?;
        }
        // The record lives as long as the proof could be accepted by anyone (RFC 9449 §11.1):
        // until its iat ages past the window, with the skew a future iat was allowed, so
        // freshness and replay state never drift apart.
        let acceptable_until = proof.iat + self.window.as_secs() + 1;
        let ttl = Duration::from_secs(acceptable_until.saturating_sub(now).max(1));
        let record = ProofRecord {
            jkt: &proof.jkt,
            key: proof.jti_hash,
        };
        match self.replay.first_use(record, ttl).await {
            Ok(FirstUse::First) => Ok(()),
            Ok(FirstUse::Replayed) => Err(BindingError::Proof(DpopCheck::Replay)),
            Ok(FirstUse::OverShare) => Err(BindingError::ShareExhausted {
                retry_after: self.window.as_secs().max(1),
            }),
            Ok(FirstUse::Full) => Err(BindingError::StoreFull),
            Err(_) => Err(BindingError::StateUnavailable),
        }
    }
}
