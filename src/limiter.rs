//! Applies `[[rate_limit]]` to a request: which limits cover its route, what key each counts
//! by, and the cell's answer, locally or in Redis. A limited request is refused with 429 and
//! `Retry-After` before its DPoP proof is recorded (the proof is not used up); limits checked
//! before the one that refused have counted it.

use crate::policy::limits::{LimitKey, RateLimit};
use crate::policy::Policy;
use crate::reject::Rejection;
use crate::state::rate_limit::{admit_shared, Admit, LocalCells};
use crate::state::Redis;
use crate::telemetry::Metrics;
use std::net::IpAddr;
use std::sync::Arc;

/// Clients kept per limit on one replica (moka's TinyLFU decides which to forget).
const CELLS_PER_LIMIT: u64 = 100_000;

/// What identifies the caller, as far as it is known at the point of the check.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub client_id: Option<&'a str>,
    /// The token's issuer and what it is bound to: a client is counted per issuer (two ASes
    /// may each have a `tpp-001`), and a token without `client_id` by its key or certificate.
    pub issuer: Option<&'a str>,
    pub bound_to: Option<&'a str>,
    pub certificate: Option<&'a crate::request::X5tS256>,
    pub peer: Option<IpAddr>,
}

/// An IPv4 address, or the /64 of an IPv6 one: a host given a /64 has all of it to rotate
/// through, so its addresses count as one.
fn peer_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

struct Applied {
    limit: RateLimit,
    cells: LocalCells,
}

pub(crate) struct Limiter {
    limits: Vec<Applied>,
    /// The `client` label values (named clients); others count as "other".
    named: std::collections::HashSet<String>,
    redis: Option<Arc<Redis>>,
    namespace: String,
    /// Microseconds (the Unix clock in service; a fixed one in tests).
    clock: fn() -> u64,
}

impl Limiter {
    pub(crate) fn new(
        policy: &Policy,
        redis: Option<Arc<Redis>>,
        named: std::collections::HashSet<String>,
    ) -> Limiter {
        let limits = policy
            .rate_limits
            .iter()
            .map(|limit| {
                let longest = limit
                    .clients
                    .values()
                    .chain(std::iter::once(&limit.rate))
                    .max_by_key(|r| r.tolerance_us().saturating_add(r.emission_us()))
                    .copied()
                    .unwrap_or(limit.rate);
                Applied {
                    limit: limit.clone(),
                    cells: LocalCells::new(CELLS_PER_LIMIT, &longest),
                }
            })
            .collect();
        Limiter {
            limits,
            named,
            redis,
            namespace: policy.state_namespace(),
            clock: crate::clock::unix_micros,
        }
    }

    /// Every limit over `route` whose key `caller` holds; the first that refuses answers.
    pub(crate) async fn admit(
        &self,
        route: usize,
        caller: &Caller<'_>,
        metrics: &Metrics,
    ) -> Result<(), Rejection> {
        for applied in &self.limits {
            let limit = &applied.limit;
            if !limit.routes.contains(&route) {
                continue;
            }
            let key = match limit.key {
                LimitKey::ClientId => match (caller.client_id, caller.bound_to) {
                    (Some(id), _) => Some(format!("{} {id}", caller.issuer.unwrap_or(""))),
                    (None, Some(key)) => Some(format!("cnf {key}")),
                    (None, None) => caller.issuer.map(|iss| format!("{iss} unknown")),
                },
                LimitKey::Certificate => caller.certificate.map(|x5t| x5t.encoded()),
                LimitKey::PeerIp => caller.peer.map(peer_key),
            };
            let Some(key) = key else { continue };
            let rate = limit.rate_for(caller.client_id);
            let shared = match (&self.redis, limit.shared) {
                (Some(redis), true) => {
                    // One hash tag per cell: a cluster keeps it on one master.
                    let cell = format!("fapigate:{}:rl:{{{}:{key}}}", self.namespace, limit.id);
                    match admit_shared(redis, &cell, &rate).await {
                        Ok(admit) => Some(admit),
                        Err(_) => {
                            metrics
                                .rate_limit_fallbacks
                                .with_label_values(&[&limit.id])
                                .inc();
                            None
                        }
                    }
                }
                _ => None,
            };
            let admit = match shared {
                Some(admit) => admit,
                None => applied.cells.admit(&key, &rate, (self.clock)()),
            };
            if let Admit::After(wait) = admit {
                let client = match caller.client_id {
                    Some(id) if self.named.contains(id) => id,
                    _ => "other",
                };
                metrics
                    .rate_limited
                    .with_label_values(&[&limit.id, client])
                    .inc();
                // Whole seconds, rounded up: never an invitation to come back too early.
                let retry_after = wait.as_micros().div_ceil(1_000_000).max(1) as u64;
                return Err(Rejection::RateLimited {
                    retry_after,
                    description: format!(
                        "rate limit {} ({} per {} s, burst {}) reached; retry after {retry_after} s",
                        limit.id,
                        rate.requests,
                        rate.period.as_secs(),
                        rate.burst
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_peer_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_eq!(peer_key(a), "2001:db8:1:2::/64");
        assert_eq!(peer_key("::ffff:192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(peer_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
