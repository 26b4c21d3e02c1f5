//! Stateless DPoP server nonces (RFC 9449 §8, §9; DPOP-8, DPOP-9, DPOP-11.3).
//!
//! A nonce is `base64url(period || HMAC-SHA256(key, period)[..16])` where `period` is the current
//! time divided by the period length: unpredictable without the key, 128 bits of MAC
//! (SP2-CRY-5), nothing stored. A nonce is accepted during its period and the next one. Replicas
//! that share the key accept each other's nonces.

use aws_lc_rs::hmac;
use base64::Engine;

const MAC_BYTES: usize = 16;

pub(crate) struct Nonces {
    key: hmac::Key,
    period_seconds: u64,
}

/// Whether a proof's nonce may be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// Issued for the current period.
    Current,
    /// Issued for the previous period: accepted, and a fresh nonce goes out with the response.
    Previous,
    /// Missing, forged or older: the client must retry with a fresh nonce.
    Refused,
}

impl Nonces {
    pub(crate) fn new(secret: &[u8], period_seconds: u64) -> Self {
        Nonces {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            period_seconds: period_seconds.max(1),
        }
    }

    fn period(&self, now: u64) -> u64 {
        now / self.period_seconds
    }

    fn for_period(&self, period: u64) -> String {
        let bytes = period.to_be_bytes();
        let tag = hmac::sign(&self.key, &bytes);
        let mut raw = Vec::with_capacity(8 + MAC_BYTES);
        raw.extend_from_slice(&bytes);
        raw.extend_from_slice(&tag.as_ref()[..MAC_BYTES]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub(crate) fn current(&self, now: u64) -> String {
        self.for_period(self.period(now))
    }

    pub(crate) fn check(&self, nonce: Option<&str>, now: u64) -> NonceCheck {
        let Some(raw) = nonce.and_then(|n| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(n)
                .ok()
        }) else {
            return NonceCheck::Refused;
        };
        if raw.len() != 8 + MAC_BYTES {
            return NonceCheck::Refused;
        }
        let mut period_bytes = [0u8; 8];
        period_bytes.copy_from_slice(&raw[..8]);
        let period = u64::from_be_bytes(period_bytes);
        let current = self.period(now);
        let tag = hmac::sign(&self.key, &period_bytes);
        // Constant-time comparison of the MAC.
        if aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..MAC_BYTES], &raw[8..])
            .is_err()
        {
            return NonceCheck::Refused;
        }
        if period == current {
            NonceCheck::Current
        } else if period + 1 == current {
            NonceCheck::Previous
        } else {
            NonceCheck::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpop_9_nonces_are_valid_for_two_periods() {
        let nonces = Nonces::new(b"k", 60);
        let nonce = nonces.current(1_000);
        assert_eq!(nonces.check(Some(&nonce), 1_000), NonceCheck::Current);
        assert_eq!(nonces.check(Some(&nonce), 1_000 + 60), NonceCheck::Previous);
        assert_eq!(nonces.check(Some(&nonce), 1_000 + 120), NonceCheck::Refused);
        assert!(nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn dpop_8_2_forged_or_foreign_nonces_are_refused() {
        let ours = Nonces::new(b"k", 60);
        let theirs = Nonces::new(b"other", 60);
        assert_eq!(
            ours.check(Some(&theirs.current(1_000)), 1_000),
            NonceCheck::Refused
        );
        assert_eq!(ours.check(None, 1_000), NonceCheck::Refused);
        assert_eq!(ours.check(Some("not-base64!"), 1_000), NonceCheck::Refused);
        let mut tampered = ours.current(1_000).into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            ours.check(Some(std::str::from_utf8(&tampered).unwrap()), 1_000),
            NonceCheck::Refused
        );
    }
}
