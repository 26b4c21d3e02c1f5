//! Which address of an upstream a request goes to: round robin over the addresses that are
//! not out, names resolved again while the gateway runs (a legacy core behind DNS failover
//! is reachable without a restart), and passive health: `eject_after` consecutive failed
//! connections take an address out for `eject_for`, then it is tried again. When every
//! address is out, all are tried (an upstream is never refused by the gateway alone).
//! Kept across reloads, keyed by address.

use crate::policy::UpstreamPolicy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    failures: u32,
    out_until: Option<Instant>,
}

/// The addresses an upstream's names resolved to, and when.
type Resolved = (Arc<[SocketAddr]>, Instant);

#[derive(Default)]
pub(crate) struct Upstreams {
    /// Upstream id -> the addresses its names resolved to last (absent: the policy's).
    resolved: Mutex<HashMap<String, Resolved>>,
    health: Mutex<HashMap<SocketAddr, Health>>,
    turn: AtomicUsize,
}

/// What a failed connection did to its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Counted,
    /// This failure took the address out.
    Ejected,
}

impl Upstreams {
    /// The addresses `upstream` has now.
    pub(crate) fn addresses(&self, upstream: &UpstreamPolicy) -> Arc<[SocketAddr]> {
        match self.resolved.lock().get(&upstream.id) {
            Some((addrs, _)) if !addrs.is_empty() => addrs.clone(),
            _ => upstream.addrs.clone().into(),
        }
    }

    /// The next address, round robin over those not out (over all when all are).
    pub(crate) fn choose(&self, upstream: &UpstreamPolicy, now: Instant) -> Option<SocketAddr> {
        self.choose_except(upstream, now, &[])
    }

    /// As [`choose`](Self::choose), avoiding `tried` while another address is left (a retry
    /// after a failed connection).
    pub(crate) fn choose_except(
        &self,
        upstream: &UpstreamPolicy,
        now: Instant,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        let addrs = self.addresses(upstream);
        let turn = match addrs.len() {
            0 | 1 => 0,
            _ => self.turn.fetch_add(1, Ordering::Relaxed),
        };
        let health = self.health.lock();
        let is_in = |addr: &SocketAddr| {
            health
                .get(addr)
                .and_then(|h| h.out_until)
                .is_none_or(|until| now >= until)
        };
        let up: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| is_in(a) && !tried.contains(a))
            .collect();
        let pool: Vec<SocketAddr> = if up.is_empty() {
            addrs
                .iter()
                .copied()
                .filter(|a| !tried.contains(a))
                .collect()
        } else {
            up
        };
        let pool = if pool.is_empty() {
            addrs.to_vec()
        } else {
            pool
        };
        pool.get(turn % pool.len().max(1)).copied()
    }

    /// Whether another address than those `tried` could be tried now.
    pub(crate) fn another_left(&self, upstream: &UpstreamPolicy, tried: &[SocketAddr]) -> bool {
        self.addresses(upstream).iter().any(|a| !tried.contains(a))
    }

    pub(crate) fn failed(
        &self,
        upstream: &UpstreamPolicy,
        addr: SocketAddr,
        now: Instant,
    ) -> Failure {
        let mut health = self.health.lock();
        let entry = health.entry(addr).or_default();
        entry.failures = entry.failures.saturating_add(1);
        let limit = upstream.health.eject_after;
        if limit > 0 && entry.failures >= limit && entry.out_until.is_none_or(|u| now >= u) {
            entry.out_until = Some(now + upstream.health.eject_for);
            entry.failures = 0;
            return Failure::Ejected;
        }
        Failure::Counted
    }

    pub(crate) fn connected(&self, addr: SocketAddr) {
        let mut health = self.health.lock();
        if let Some(entry) = health.get_mut(&addr) {
            *entry = Health::default();
        }
    }

    /// Whether `addr` is out now.
    pub(crate) fn is_out(&self, addr: SocketAddr, now: Instant) -> bool {
        self.health
            .lock()
            .get(&addr)
            .and_then(|h| h.out_until)
            .is_some_and(|until| now < until)
    }

    /// Names of `upstream` due to be resolved again.
    pub(crate) fn due(&self, upstream: &UpstreamPolicy, now: Instant) -> bool {
        let every = upstream.health.resolve_every;
        if every.is_zero()
            || upstream
                .targets
                .iter()
                .all(|t| t.parse::<SocketAddr>().is_ok())
        {
            return false;
        }
        self.resolved
            .lock()
            .get(&upstream.id)
            .is_none_or(|(_, at)| now.duration_since(*at) >= every)
    }

    /// Stores what the names resolved to; a name that did not resolve keeps the address it
    /// had (a DNS outage takes no address away).
    pub(crate) fn store(
        &self,
        upstream: &UpstreamPolicy,
        found: Vec<Option<SocketAddr>>,
        now: Instant,
    ) -> bool {
        let before = self.addresses(upstream);
        let addrs: Vec<SocketAddr> = found
            .iter()
            .enumerate()
            .filter_map(|(i, addr)| {
                addr.or_else(|| before.get(i).copied())
                    .or_else(|| upstream.addrs.get(i).copied())
            })
            .collect();
        let changed = *before != addrs[..];
        self.resolved
            .lock()
            .insert(upstream.id.clone(), (addrs.into(), now));
        changed
    }
}

/// Resolves each target to its first address (`None` when it does not resolve now).
pub(crate) async fn resolve(targets: &[String]) -> Vec<Option<SocketAddr>> {
    let mut found = Vec::with_capacity(targets.len());
    for target in targets {
        let first = match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host(target.as_str()),
        )
        .await
        {
            Ok(Ok(mut addrs)) => addrs.next(),
            _ => None,
        };
        found.push(first);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::UpstreamHealth;

    fn upstream(addrs: &[&str]) -> UpstreamPolicy {
        UpstreamPolicy {
            id: "core".into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            targets: addrs.iter().map(|a| a.to_string()).collect(),
            health: UpstreamHealth {
                eject_after: 2,
                eject_for: Duration::from_secs(10),
                resolve_every: Duration::from_secs(30),
            },
            tls: false,
            sni: String::new(),
            ca: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            host: None,
        }
    }

    #[test]
    fn consecutive_failures_take_an_address_out_for_a_while() {
        let u = upstream(&["127.0.0.1:1", "127.0.0.1:2"]);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let state = Upstreams::default();
        let t0 = Instant::now();
        assert_eq!(state.failed(&u, a, t0), Failure::Counted);
        assert_eq!(state.failed(&u, a, t0), Failure::Ejected);
        for _ in 0..4 {
            assert_eq!(state.choose(&u, t0), Some(b), "only b while a is out");
        }
        let back = t0 + Duration::from_secs(10);
        let chosen: Vec<_> = (0..4).map(|_| state.choose(&u, back)).collect();
        assert!(chosen.contains(&Some(a)), "a is tried again: {chosen:?}");
        // A success clears the count: one failure later, it is not out.
        state.connected(a);
        assert_eq!(state.failed(&u, a, back), Failure::Counted);
        assert!(!state.is_out(a, back));
    }

    #[test]
    fn when_every_address_is_out_all_are_tried_and_a_retry_avoids_the_tried() {
        let u = upstream(&["127.0.0.1:1", "127.0.0.1:2"]);
        let (a, b): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let state = Upstreams::default();
        let t0 = Instant::now();
        for addr in [a, a, b, b] {
            state.failed(&u, addr, t0);
        }
        assert!(state.choose(&u, t0).is_some());
        assert_eq!(state.choose_except(&u, t0, &[a]), Some(b));
        assert!(!state.another_left(&u, &[a, b]));
    }

    #[test]
    fn a_name_that_stops_resolving_keeps_its_address() {
        let u = upstream(&["127.0.0.1:1"]);
        let state = Upstreams::default();
        let t0 = Instant::now();
        let moved: SocketAddr = "127.0.0.9:1".parse().unwrap();
        assert!(state.store(&u, vec![Some(moved)], t0));
        assert_eq!(&*state.addresses(&u), &[moved]);
        assert!(!state.store(&u, vec![None], t0));
        assert_eq!(
            &*state.addresses(&u),
            &[moved],
            "a DNS outage takes nothing away"
        );
    }
}
