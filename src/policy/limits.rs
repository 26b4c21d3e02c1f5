//! `[[rate_limit]]`, compiled: per-client fair-usage limits (the per-TPP limits open-banking
//! ecosystems expect), each a rate with a burst, keyed by what identifies the caller.

use std::collections::BTreeMap;
use std::time::Duration;

/// What a limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The token's `client_id` (the TPP): routes that ask for a token.
    ClientId,
    /// The SHA-256 thumbprint of the client certificate the connection presented.
    Certificate,
    /// The connection's peer address: any route, `auth = "none"` ones included.
    PeerIp,
}

impl LimitKey {
    pub fn name(self) -> &'static str {
        match self {
            LimitKey::ClientId => "client_id",
            LimitKey::Certificate => "certificate",
            LimitKey::PeerIp => "peer_ip",
        }
    }

    pub fn parse(name: &str) -> Option<LimitKey> {
        [LimitKey::ClientId, LimitKey::Certificate, LimitKey::PeerIp]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// `requests` per `period`, up to `burst` at once: a GCRA cell's emission interval and
/// tolerance, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u64,
    pub period: Duration,
    pub burst: u64,
}

impl Rate {
    /// Microseconds between two requests at the sustained rate.
    pub fn emission_us(&self) -> u64 {
        (self.period.as_micros() as u64 / self.requests.max(1)).max(1)
    }

    /// How far ahead of the sustained rate a client may run: `burst - 1` emissions.
    pub fn tolerance_us(&self) -> u64 {
        self.emission_us()
            .saturating_mul(self.burst.saturating_sub(1))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub id: String,
    pub key: LimitKey,
    /// Indexes of the routes it applies to (the compiler resolves `routes` or the default).
    pub routes: Vec<usize>,
    pub rate: Rate,
    /// Per-client rates (`by = "client_id"` only).
    pub clients: BTreeMap<String, Rate>,
    /// Counted in Redis, across replicas (`[state] backend = "redis"`).
    pub shared: bool,
}

impl RateLimit {
    pub fn rate_for(&self, client: Option<&str>) -> Rate {
        client
            .and_then(|c| self.clients.get(c))
            .copied()
            .unwrap_or(self.rate)
    }
}
