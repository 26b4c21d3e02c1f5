//! Rate limits as GCRA cells (the generic cell rate algorithm, as redis-cell and Envoy's
//! limiters use it): one number per client, its theoretical arrival time (TAT). A request is
//! admitted when it comes no earlier than TAT minus the tolerance; the TAT then moves one
//! emission interval on. Exact per key, unlike a shared count-min estimator (pingora-limits'
//! `Rate`), where a busy client's hash collisions would throttle another.
//!
//! Local cells live in a bounded cache; shared ones in Redis, advanced by one script on
//! Redis's own clock, so replicas agree whatever their clocks. When Redis cannot answer, the
//! local cell decides: each replica then holds the client to the whole rate (bounded, never
//! unlimited), and `fapigate_rate_limit_fallbacks_total` counts it.

use super::Redis;
use crate::policy::limits::Rate;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One step of a cell: `Ok(new TAT)` when admitted at `now`, `Err(wait)` otherwise (µs).
pub(crate) fn gcra(rate: &Rate, tat: u64, now: u64) -> Result<u64, u64> {
    let tat = tat.max(now);
    let allowed_from = tat.saturating_sub(rate.tolerance_us());
    if now < allowed_from {
        return Err(allowed_from - now);
    }
    Ok(tat.saturating_add(rate.emission_us()))
}

/// Admitted, or the time after which the same request may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Yes,
    After(Duration),
}

/// The cells of one limit on this replica: at most `capacity` clients, a cell forgotten once
/// it has been idle for its whole tolerance (it would start full again anyway).
pub(crate) struct LocalCells {
    cells: moka::sync::Cache<String, Arc<AtomicU64>>,
}

impl LocalCells {
    pub(crate) fn new(capacity: u64, longest: &Rate) -> Self {
        let idle =
            Duration::from_micros(longest.tolerance_us().saturating_add(longest.emission_us()));
        LocalCells {
            cells: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle.max(Duration::from_secs(1)))
                .build(),
        }
    }

    pub(crate) fn admit(&self, key: &str, rate: &Rate, now: u64) -> Admit {
        let cell = self
            .cells
            .get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        let mut tat = cell.load(Ordering::Acquire);
        loop {
            match gcra(rate, tat, now) {
                Err(wait) => return Admit::After(Duration::from_micros(wait)),
                Ok(next) => {
                    match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => return Admit::Yes,
                        Err(current) => tat = current,
                    }
                }
            }
        }
    }
}

/// The GCRA step in Redis, on Redis's clock (TIME). KEYS: the cell; ARGV: the emission
/// interval and the tolerance (µs). Returns -1 when admitted, else the wait in µs.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allowed_from = tat - tonumber(ARGV[2])
if now < allowed_from then return allowed_from - now end
local next = tat + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.floor((next - now) / 1000) + 1)
return -1
"#;

pub(crate) async fn admit_shared(
    redis: &Arc<Redis>,
    key: &str,
    rate: &Rate,
) -> Result<Admit, super::replay::StoreUnavailable> {
    let mut command = redis::cmd("EVAL");
    command
        .arg(ADMIT)
        .arg(1)
        .arg(key)
        .arg(rate.emission_us())
        .arg(rate.tolerance_us());
    let wait: i64 = redis.run(command).await?;
    Ok(match u64::try_from(wait) {
        Ok(wait) => Admit::After(Duration::from_micros(wait)),
        Err(_) => Admit::Yes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(requests: u64, period: u64, burst: u64) -> Rate {
        Rate {
            requests,
            period: Duration::from_secs(period),
            burst,
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let r = rate(10, 1, 3);
        let cells = LocalCells::new(10, &r);
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(cells.admit("tpp", &r, t0), Admit::Yes);
        }
        assert_eq!(
            cells.admit("tpp", &r, t0),
            Admit::After(Duration::from_millis(100))
        );
        // Another client has its own cell.
        assert_eq!(cells.admit("other", &r, t0), Admit::Yes);
        // One emission interval later, one more.
        assert_eq!(cells.admit("tpp", &r, t0 + 100_000), Admit::Yes);
        assert!(matches!(
            cells.admit("tpp", &r, t0 + 100_000),
            Admit::After(_)
        ));
        // Idle for the whole tolerance: the burst is back.
        let later = t0 + 10_000_000;
        for _ in 0..3 {
            assert_eq!(cells.admit("tpp", &r, later), Admit::Yes);
        }
    }

    #[test]
    fn a_clock_that_goes_back_only_delays() {
        let r = rate(1, 60, 1);
        let t0 = 5_000_000_000;
        let tat = gcra(&r, 0, t0).unwrap();
        assert!(gcra(&r, tat, t0 - 1_000_000).is_err());
        assert!(gcra(&r, tat, t0 + 60_000_000).is_ok());
    }
}
