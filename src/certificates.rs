//! The certificates the gateway holds, read for what on-call needs to know before they bite:
//! when each expires (`fapigate_certificate_expiry_timestamp_seconds{kind,subject}`) and,
//! for `fapigate check`, what will soon go wrong (an expiry within 30 days, a listener
//! certificate whose names do not cover the `public_url` host).

use crate::policy::Policy;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

/// Warn this long before a certificate expires.
const WARN_BEFORE: u64 = 30 * 24 * 3600;

/// One certificate (or CRL: its next update) and when it stops being good, Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expiry {
    pub kind: &'static str,
    pub subject: String,
    pub not_after: i64,
}

fn of_der(kind: &'static str, der: &[u8]) -> Option<Expiry> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(Expiry {
        kind,
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Every certificate the policy names: the listener's chain, the client CAs, the CRLs' next
/// updates, the upstreams' roots.
pub(crate) fn expiries(policy: &Policy) -> Vec<Expiry> {
    let mut found = Vec::new();
    if let Some(tls) = &policy.listener.tls {
        let read = |path| crate::config::read_certificates(path).unwrap_or_default();
        found.extend(read(&tls.cert).iter().filter_map(|c| of_der("listener", c)));
        if let Some(ca) = &tls.client_ca {
            found.extend(read(ca).iter().filter_map(|c| of_der("client_ca", c)));
        }
        for path in &tls.client_crl {
            for crl in crate::config::read_crls(path).unwrap_or_default() {
                let Ok((_, list)) = CertificateRevocationList::from_der(crl.as_ref()) else {
                    continue;
                };
                if let Some(next) = list.next_update() {
                    found.push(Expiry {
                        kind: "client_crl",
                        subject: list.issuer().to_string(),
                        not_after: next.timestamp(),
                    });
                }
            }
        }
    }
    for upstream in &policy.upstreams {
        if let Some(roots) = &upstream.ca {
            found.extend(roots.iter().filter_map(|c| of_der("upstream_ca", c)));
        }
    }
    found
}

/// Sets `fapigate_certificate_expiry_timestamp_seconds` to what `policy` holds now.
pub(crate) fn record(metrics: &crate::telemetry::Metrics, policy: &Policy) {
    metrics.certificate_expiry.reset();
    for expiry in expiries(policy) {
        metrics
            .certificate_expiry
            .with_label_values(&[expiry.kind, &expiry.subject])
            .set(expiry.not_after);
    }
}

/// What `fapigate check` warns about (the file is still accepted).
pub(crate) fn warnings(policy: &Policy, now: u64) -> Vec<String> {
    let mut warnings: Vec<String> = expiries(policy)
        .iter()
        .filter_map(|expiry| expiry_warning(expiry, now))
        .collect();
    if let Some(tls) = &policy.listener.tls {
        let host = policy
            .listener
            .public_url
            .authority
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(policy.listener.public_url.authority.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Some(leaf) = crate::config::read_certificates(&tls.cert)
            .ok()
            .and_then(|chain| chain.into_iter().next())
        {
            if !covers(leaf.as_ref(), host) {
                warnings.push(format!(
                    "listener.tls.cert: its subject alternative names do not cover the public_url host {host}"
                ));
            }
        }
    }
    warnings
}

fn expiry_warning(expiry: &Expiry, now: u64) -> Option<String> {
    let left = expiry.not_after - now as i64;
    // A CRL's next update is usually days away by design: only a late one is news.
    let warn_before = if expiry.kind == "client_crl" {
        86_400
    } else {
        WARN_BEFORE as i64
    };
    let what = match expiry.kind {
        "client_crl" => "its next update is due",
        _ => "it expires",
    };
    let (kind, subject) = (expiry.kind, &expiry.subject);
    if left < 0 {
        Some(format!(
            "{kind} {subject}: {what} {} days ago",
            -left / 86_400
        ))
    } else if left < warn_before {
        Some(format!(
            "{kind} {subject}: {what} in {} days",
            left / 86_400
        ))
    } else {
        None
    }
}

/// Whether a certificate's DNS or IP names cover `host` (a `*.` wildcard covers one label).
fn covers(der: &[u8], host: &str) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return false;
    };
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    names.value.general_names.iter().any(|name| match name {
        GeneralName::DNSName(dns) => {
            let dns = dns.to_ascii_lowercase();
            let host = host.to_ascii_lowercase();
            match dns.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => dns == host,
            }
        }
        GeneralName::IPAddress(bytes) => match (ip, bytes.len()) {
            (Some(std::net::IpAddr::V4(v4)), 4) => v4.octets() == bytes[..],
            (Some(std::net::IpAddr::V6(v6)), 16) => v6.octets() == bytes[..],
            _ => false,
        },
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_within_30_days_is_warned_about() {
        let expiry = |kind, not_after| Expiry {
            kind,
            subject: "CN=api".into(),
            not_after,
        };
        let now = 1_800_000_000;
        let day = 86_400;
        assert_eq!(
            expiry_warning(&expiry("listener", now as i64 + 31 * day), now),
            None
        );
        assert_eq!(
            expiry_warning(&expiry("listener", now as i64 + 10 * day), now).as_deref(),
            Some("listener CN=api: it expires in 10 days")
        );
        assert_eq!(
            expiry_warning(&expiry("client_crl", now as i64 - 2 * day), now).as_deref(),
            Some("client_crl CN=api: its next update is due 2 days ago")
        );
        assert_eq!(
            expiry_warning(&expiry("client_crl", now as i64 + 3 * day), now),
            None,
            "a CRL's next update days away is normal"
        );
    }

    #[test]
    fn names_cover_the_host_and_one_wildcard_label() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![
            "api.bank.example".to_string(),
            "*.open.bank.example".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap()
        .self_signed(&key)
        .unwrap();
        let der = cert.der();
        assert!(covers(der, "api.bank.example"));
        assert!(covers(der, "API.bank.example"));
        assert!(covers(der, "x.open.bank.example"));
        assert!(!covers(der, "a.b.open.bank.example"));
        assert!(!covers(der, "open.bank.example"));
        assert!(covers(der, "127.0.0.1"));
        assert!(!covers(der, "other.bank.example"));
    }
}
