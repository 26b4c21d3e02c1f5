//! `[[rate_limit]]`: per-client limits, checked against the routes they name.

use super::compile::{unique, Errors};
use super::model;
use crate::policy::limits::{LimitKey, Rate, RateLimit};
use crate::policy::routes::{AuthMode, Route};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// `"20/s"`, `"600/m"`, `"10000/h"`: at least one request per period.
fn parse_rate(text: &str, burst: Option<u64>) -> Result<Rate, String> {
    let shape = || format!("\"{text}\" is not a rate such as \"20/s\", \"600/m\" or \"10000/h\"");
    let (count, unit) = text.split_once('/').ok_or_else(shape)?;
    let requests = count.trim().parse::<u64>().map_err(|_| shape())?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(shape()),
    };
    if requests == 0 || requests > 1_000_000 {
        return Err(format!(
            "\"{text}\": between 1 and 1000000 requests per period"
        ));
    }
    let burst = burst.unwrap_or(requests);
    if burst == 0 || burst > 1_000_000 {
        return Err("burst must be between 1 and 1000000".into());
    }
    Ok(Rate {
        requests,
        period,
        burst,
    })
}

pub(super) fn rate_limits(
    limits: &[model::RateLimit],
    routes: &[Route],
    redis: bool,
    client_ca: bool,
    errors: &mut Errors,
) -> Vec<RateLimit> {
    let mut ids = HashSet::new();
    let mut compiled = Vec::new();
    for (i, limit) in limits.iter().enumerate() {
        let key = format!("rate_limit[{i}]");
        unique(errors, &mut ids, format!("{key}.id"), &limit.id);
        // It names Redis keys and error descriptions: a plain name.
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if limit.id.len() > 64 || !limit.id.bytes().all(plain) {
            errors.add(
                format!("{key}.id"),
                "must be at most 64 letters, digits, '-', '_' or '.'",
            );
        }
        let Some(by) = LimitKey::parse(&limit.by) else {
            errors.add(
                format!("{key}.by"),
                format!(
                    "\"{}\" is not one of client_id, certificate, peer_ip",
                    limit.by
                ),
            );
            continue;
        };
        let rate = errors.check(&format!("{key}.rate"), parse_rate(&limit.rate, limit.burst));
        let keyed = |route: &Route| by != LimitKey::ClientId || route.auth == AuthMode::Token;
        let applies: Vec<usize> = match &limit.routes {
            None => (0..routes.len()).filter(|&r| keyed(&routes[r])).collect(),
            Some(names) => {
                let mut found = Vec::new();
                for (j, name) in names.iter().enumerate() {
                    match routes.iter().position(|r| &r.id == name) {
                        None => errors.add(
                            format!("{key}.routes[{j}]"),
                            format!("route \"{name}\" is not defined"),
                        ),
                        Some(r) if !keyed(&routes[r]) => errors.add(
                            format!("{key}.routes[{j}]"),
                            format!("route \"{name}\" has auth = \"none\": it has no client_id to count by"),
                        ),
                        Some(r) => found.push(r),
                    }
                }
                found
            }
        };
        if by == LimitKey::Certificate && !client_ca {
            errors.add(
                format!("{key}.by"),
                "\"certificate\" needs listener.tls.client_ca: self-signed certificates are free to make, one per request",
            );
        }
        let shared = limit.shared.unwrap_or(false);
        if shared && !redis {
            errors.add(
                format!("{key}.shared"),
                "needs [state] backend = \"redis\" to count across replicas",
            );
        }
        if by != LimitKey::ClientId && !limit.clients.is_empty() {
            errors.add(
                format!("{key}.clients"),
                "per-client rates need by = \"client_id\"",
            );
        }
        let mut clients = BTreeMap::new();
        for (client, override_rate) in &limit.clients {
            let parsed = errors.check(
                &format!("{key}.clients.{client}.rate"),
                parse_rate(&override_rate.rate, override_rate.burst),
            );
            if let Some(parsed) = parsed {
                clients.insert(client.clone(), parsed);
            }
        }
        if let Some(rate) = rate {
            compiled.push(RateLimit {
                id: limit.id.clone(),
                key: by,
                routes: applies,
                rate,
                clients,
                shared,
            });
        }
    }
    compiled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_have_a_unit_and_a_burst() {
        let r = parse_rate("20/s", None).unwrap();
        assert_eq!(
            (r.requests, r.period, r.burst),
            (20, Duration::from_secs(1), 20)
        );
        assert_eq!(r.emission_us(), 50_000);
        assert_eq!(r.tolerance_us(), 19 * 50_000);
        assert_eq!(parse_rate("600/m", Some(5)).unwrap().burst, 5);
        for bad in ["20", "20/d", "0/s", "x/s", "20/ s/"] {
            assert!(parse_rate(bad, None).is_err(), "{bad}");
        }
        assert!(parse_rate("1/s", Some(0)).is_err());
    }

    fn errors(extra: &str) -> Vec<(String, String)> {
        use crate::fuzzing::{fixture_dir, POLICY};
        match crate::config::load_str(&format!("{POLICY}{extra}"), fixture_dir()) {
            Ok(_) => vec![],
            Err(errors) => errors.into_iter().map(|e| (e.key, e.message)).collect(),
        }
    }

    #[test]
    fn check_names_what_a_limit_cannot_count() {
        let limit = |body: &str| format!("\n[[rate_limit]]\nid = \"l\"\nrate = \"5/s\"\n{body}");
        assert_eq!(errors(&limit("by = \"client_id\"\n")), vec![]);
        assert_eq!(
            errors(&limit("by = \"client_id\"\nroutes = [\"status\"]\n")),
            vec![(
                "rate_limit[0].routes[0]".into(),
                "route \"status\" has auth = \"none\": it has no client_id to count by".into()
            )]
        );
        assert_eq!(
            errors(&limit("by = \"peer_ip\"\nroutes = [\"nope\"]\n")),
            vec![(
                "rate_limit[0].routes[0]".into(),
                "route \"nope\" is not defined".into()
            )]
        );
        assert_eq!(
            errors(&limit("by = \"client_id\"\nshared = true\n")),
            vec![(
                "rate_limit[0].shared".into(),
                "needs [state] backend = \"redis\" to count across replicas".into()
            )]
        );
        assert_eq!(
            errors(&limit("by = \"certificate\"\n")),
            vec![(
                "rate_limit[0].by".into(),
                "\"certificate\" needs listener.tls.client_ca: self-signed certificates are free to make, one per request".into()
            )]
        );
        assert_eq!(
            errors(&limit("by = \"peer_ip\"\n").replace("id = \"l\"", "id = \"a:b\"")),
            vec![(
                "rate_limit[0].id".into(),
                "must be at most 64 letters, digits, '-', '_' or '.'".into()
            )]
        );
        assert_eq!(
            errors(&limit("by = \"tpp\"\n")),
            vec![(
                "rate_limit[0].by".into(),
                "\"tpp\" is not one of client_id, certificate, peer_ip".into()
            )]
        );
        assert_eq!(
            errors(&limit(
                "by = \"peer_ip\"\n[rate_limit.clients]\ntpp = { rate = \"1/s\" }\n"
            )),
            vec![(
                "rate_limit[0].clients".into(),
                "per-client rates need by = \"client_id\"".into()
            )]
        );
    }
}
