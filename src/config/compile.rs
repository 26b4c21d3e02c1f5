//! From the TOML model to the [`Policy`]. Every check runs, so one `fapigate check` lists every
//! mistake in the file; each is reported with the key path it belongs to.

use super::compile_routes::{routes, RouteContext};
use super::compile_state::state;
use super::compile_trust::{audit, clients, issuers, response_signing};
use super::files;
use super::model;
use super::units::parse_duration;
use crate::policy::routes::RouteTable;
use crate::policy::*;
use http::{HeaderName, HeaderValue};
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Collects errors as (key path, message).
#[derive(Default)]
pub(super) struct Errors(Vec<(String, String, bool)>);

impl Errors {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((key.into(), message.into(), false));
    }

    /// An error the same file may not repeat later (a name that does not resolve yet): a
    /// service manager may retry it.
    pub(super) fn add_transient(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((key.into(), message.into(), true));
    }

    /// Records the error of a fallible step and returns its value, if any.
    pub(super) fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.add(key, message)).ok()
    }
}

pub(super) fn compile(
    file: model::File,
    base: &Path,
) -> Result<Policy, Vec<(String, String, bool)>> {
    let mut errors = Errors::default();
    let listener = listener(&file.listener, base, &mut errors);
    let admin_addr = errors.check("admin.addr", socket_addr(&file.admin.addr));
    let server = server(file.server.as_ref(), &mut errors);
    let log = log(file.log.as_ref(), &mut errors);
    let profile = profile(&file.profile, base, &mut errors);
    let issuers = issuers(&file.issuer, base, &mut errors);
    let state = state(file.state.as_ref(), base, &mut errors);
    let response_signing = file
        .response_signing
        .as_ref()
        .and_then(|signing| response_signing(signing, base, &mut errors));
    let audit = file
        .audit
        .as_ref()
        .and_then(|a| audit(a, base, &mut errors));
    let clients = clients(&file.client, base, &mut errors);
    let upstreams = upstreams(&file.upstream, base, &mut errors);
    let forward = forward(file.forward.as_ref(), &mut errors);
    let context = RouteContext {
        upstreams: &upstreams,
        signing: response_signing.is_some(),
        clients: !clients.is_empty(),
        forwarded: forward
            .as_ref()
            .map(|f| f.owned_headers().map(Clone::clone).to_vec())
            .unwrap_or_default(),
    };
    let routes = routes(&file.route, &context, &mut errors);
    let rate_limits = super::compile_limits::rate_limits(
        &file.rate_limit,
        &routes,
        matches!(state.backend, crate::policy::StateBackend::Redis(_)),
        listener
            .as_ref()
            .and_then(|l| l.tls.as_ref())
            .is_some_and(|tls| tls.client_ca.is_some()),
        &mut errors,
    );

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    match (listener, admin_addr, profile, forward) {
        (Some(listener), Some(admin_addr), Some(profile), Some(forward)) => Ok(Policy {
            listener,
            admin_addr,
            server,
            log,
            profile,
            issuers,
            state,
            response_signing,
            audit,
            clients,
            upstreams,
            forward,
            routes: RouteTable::new(routes),
            rate_limits,
        }),
        // Every `None` above was recorded as an error.
        _ => Err(vec![(
            String::new(),
            "configuration is incomplete".into(),
            false,
        )]),
    }
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("\"{text}\" is not an IP address and port, e.g. \"0.0.0.0:8443\""))
}

/// `host:port` with a port number: what resolution cannot fix.
fn upstream_target(text: &str) -> Result<(), String> {
    let shape = || format!("\"{text}\" is not host:port, e.g. \"core.bank.internal:8080\"");
    let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(shape());
    }
    Ok(())
}

pub(super) fn duration(
    errors: &mut Errors,
    key: &str,
    value: Option<&String>,
    default: &str,
) -> Duration {
    let text = value.map(String::as_str).unwrap_or(default);
    errors
        .check(key, parse_duration(text))
        .unwrap_or(Duration::ZERO)
}

fn listener(
    listener: &model::Listener,
    base: &Path,
    errors: &mut Errors,
) -> Option<ListenerPolicy> {
    let addr = errors.check("listener.addr", socket_addr(&listener.addr));
    let public_url = errors.check("listener.public_url", public_url(&listener.public_url));
    let plain_addr = listener
        .plain_addr
        .as_ref()
        .and_then(|a| errors.check("listener.plain_addr", socket_addr(a)));
    let tls = match &listener.tls {
        Some(tls) => super::compile_tls::listener_tls(tls, base, errors),
        None => {
            errors.add(
                "listener.tls",
                "is required: the gateway offers TLS endpoints only (SP2-NET-1); \
                 add plain_addr for an extra listener behind a TLS terminator",
            );
            None
        }
    };
    let mut trusted_proxies = Vec::new();
    if let Some(forwarded) = &listener.forwarded {
        for (i, text) in forwarded.trusted_proxies.iter().enumerate() {
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("\"{text}\" is not an IP address or CIDR block"));
            if let Some(net) =
                errors.check(&format!("listener.forwarded.trusted_proxies[{i}]"), parsed)
            {
                trusted_proxies.push(net);
            }
        }
    }
    let timeout = |errors: &mut Errors, name: &str, value: Option<&String>, default: &str| {
        let key = format!("listener.{name}");
        let parsed = duration(errors, &key, value, default);
        if parsed.is_zero() && value.map(|v| parse_duration(v)).is_some_and(|r| r.is_ok()) {
            errors.add(key, "must be longer than 0s");
        }
        parsed
    };
    let body_timeout = timeout(
        errors,
        "body_timeout",
        listener.body_timeout.as_ref(),
        "10s",
    );
    let header_timeout = timeout(
        errors,
        "header_timeout",
        listener.header_timeout.as_ref(),
        "10s",
    );
    let idle_timeout = timeout(
        errors,
        "idle_timeout",
        listener.idle_timeout.as_ref(),
        "30s",
    );
    // Pingora closes a connection that waits 60 s for its next request, whatever is set here.
    if idle_timeout > std::time::Duration::from_secs(60) {
        errors.add(
            "listener.idle_timeout",
            "must be at most 60s (the proxy engine closes idle connections after 60 s)",
        );
    }
    Some(ListenerPolicy {
        addr: addr?,
        public_url: public_url?,
        tls,
        plain_addr,
        trusted_proxies,
        body_timeout,
        body_min_rate: listener.body_min_rate.unwrap_or(240),
        header_timeout,
        idle_timeout,
    })
}

fn public_url(text: &str) -> Result<PublicUrl, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a URL"))?;
    if uri.scheme_str().map(str::to_ascii_lowercase).as_deref() != Some("https") {
        return Err(format!("\"{text}\" must be an https URL"));
    }
    let (_, authority) =
        crate::encoding::normal_origin(&uri).ok_or_else(|| format!("\"{text}\" has no host"))?;
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("\"{text}\" must not have a query or fragment"));
    }
    let host = HeaderValue::from_str(&authority)
        .map_err(|_| format!("\"{text}\" has a host that cannot be a Host header"))?;
    Ok(PublicUrl {
        scheme: "https".into(),
        host,
        authority,
        base_path: uri.path().trim_end_matches('/').to_string(),
    })
}

fn server(server: Option<&model::Server>, errors: &mut Errors) -> ServerPolicy {
    let threads = server.and_then(|s| s.threads).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        errors.add("server.threads", "must be at least 1");
    }
    ServerPolicy {
        threads: threads.max(1),
        shutdown_grace: duration(
            errors,
            "server.shutdown_grace",
            server.and_then(|s| s.shutdown_grace.as_ref()),
            "5s",
        ),
        shutdown_timeout: duration(
            errors,
            "server.shutdown_timeout",
            server.and_then(|s| s.shutdown_timeout.as_ref()),
            "5s",
        ),
        drain_delay: duration(
            errors,
            "server.drain_delay",
            server.and_then(|s| s.drain_delay.as_ref()),
            "5s",
        ),
    }
}

fn log(log: Option<&model::Log>, errors: &mut Errors) -> LogPolicy {
    let json = match log.and_then(|l| l.format.as_deref()).unwrap_or("json") {
        "json" => true,
        "plain" => false,
        other => {
            errors.add(
                "log.format",
                format!("\"{other}\" is not one of \"json\", \"plain\""),
            );
            true
        }
    };
    let level = log
        .and_then(|l| l.level.clone())
        .unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errors.add(
            "log.level",
            format!("\"{level}\" is not a level or filter (e.g. \"info\", \"fapigate=debug\")"),
        );
    }
    LogPolicy { json, level }
}

fn profile(profile: &model::Profile, base: &Path, errors: &mut Errors) -> Option<Profile> {
    let kind = match profile.name.as_str() {
        "fapi2" => Some(ProfileKind::Fapi2),
        "fapi1-advanced" => Some(ProfileKind::Fapi1Advanced),
        other => {
            errors.add(
                "profile.name",
                format!("\"{other}\" is not one of \"fapi2\", \"fapi1-advanced\""),
            );
            None
        }
    };
    let mut algs = Vec::new();
    match &profile.algs {
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                match Alg::parse(name) {
                    Some(alg) if !algs.contains(&alg) => algs.push(alg),
                    Some(_) => errors.add(format!("profile.algs[{i}]"), format!("\"{name}\" is listed twice")),
                    None => errors.add(
                        format!("profile.algs[{i}]"),
                        format!("\"{name}\" is not allowed by FAPI (SP2-CRY-2): use PS256, ES256 or EdDSA"),
                    ),
                }
            }
            if names.is_empty() {
                errors.add("profile.algs", "must list at least one algorithm");
            }
        }
        None => algs = vec![Alg::ES256, Alg::PS256, Alg::EdDSA],
    }
    let dpop_nonce_required = match profile.dpop_nonce.as_deref().unwrap_or("off") {
        "off" => false,
        "required" => true,
        other => {
            errors.add(
                "profile.dpop_nonce",
                format!("\"{other}\" is not one of \"off\", \"required\""),
            );
            false
        }
    };
    let max_clock_skew = duration(
        errors,
        "profile.max_clock_skew",
        profile.max_clock_skew.as_ref(),
        "10s",
    );
    if max_clock_skew > Duration::from_secs(60) {
        errors.add(
            "profile.max_clock_skew",
            "must not exceed 60s (SP2-CLK-1 rejects iat more than 60 s in the future)",
        );
    }
    let dpop_proof_max_age = duration(
        errors,
        "profile.dpop_proof_max_age",
        profile.dpop_proof_max_age.as_ref(),
        "60s",
    );
    if dpop_proof_max_age.is_zero() {
        errors.add("profile.dpop_proof_max_age", "must be more than zero");
    }
    Some(Profile {
        kind: kind?,
        algs,
        max_clock_skew,
        dpop_proof_max_age,
        dpop_nonce_required,
        dpop_nonce_secret_file: profile.dpop_nonce_secret_file.as_ref().and_then(|p| {
            let path = files::resolve(base, p);
            errors
                .check(
                    "profile.dpop_nonce_secret_file",
                    files::read_key_material(&path, 32),
                )
                .map(|()| path)
        }),
        request_signature_max_age: duration(
            errors,
            "profile.request_signature_max_age",
            profile.request_signature_max_age.as_ref(),
            "60s",
        ),
        interaction_id: profile.interaction_id.unwrap_or(true),
    })
}

pub(super) fn unique<'a>(
    errors: &mut Errors,
    seen: &mut HashSet<&'a str>,
    key: String,
    id: &'a str,
) {
    if id.is_empty() {
        errors.add(key, "must not be empty");
    } else if !seen.insert(id) {
        errors.add(key, format!("\"{id}\" is used twice"));
    }
}

fn upstreams(
    upstreams: &[model::Upstream],
    base: &Path,
    errors: &mut Errors,
) -> Vec<Arc<UpstreamPolicy>> {
    let mut ids = HashSet::new();
    let mut compiled = Vec::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        let key = format!("upstream[{i}]");
        unique(errors, &mut ids, format!("{key}.id"), &upstream.id);
        if upstream.addrs.is_empty() {
            errors.add(format!("{key}.addrs"), "must list at least one host:port");
        }
        let mut addrs = Vec::new();
        for (j, text) in upstream.addrs.iter().enumerate() {
            let key = format!("{key}.addrs[{j}]");
            // A literal address that does not parse is the file's mistake; a name that does not
            // resolve (DNS not up yet at boot) may resolve on a retry.
            if let Err(e) = upstream_target(text) {
                errors.add(key, e);
                continue;
            }
            let resolved = text
                .to_socket_addrs()
                .map_err(|e| format!("\"{text}\" does not resolve to host:port ({e})"))
                .and_then(|mut found| {
                    found
                        .next()
                        .ok_or_else(|| format!("\"{text}\" resolves to no address"))
                });
            match resolved {
                Ok(addr) => addrs.push(addr),
                Err(e) => errors.add_transient(key, e),
            }
        }
        let ca = upstream.ca_file.as_ref().and_then(|p| {
            let certs = errors.check(
                &format!("{key}.ca_file"),
                files::read_certificates(&files::resolve(base, p)),
            )?;
            Some(TrustRoots::from(certs))
        });
        let sni = upstream.sni.clone().unwrap_or_else(|| {
            upstream
                .addrs
                .first()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        });
        let host = match upstream.host_header.as_deref() {
            None | Some("public_url") => None,
            Some("upstream") => upstream
                .addrs
                .first()
                .and_then(|a| HeaderValue::from_str(a).ok()),
            Some(other) => {
                errors.add(
                    format!("{key}.host_header"),
                    format!("\"{other}\" is not \"public_url\" or \"upstream\""),
                );
                None
            }
        };
        if upstream.tls == Some(true) && sni.is_empty() {
            errors.add(
                format!("{key}.sni"),
                "must name the upstream's TLS server name (an empty name would verify nothing)",
            );
        }
        let defaults = crate::policy::UpstreamHealth::default();
        let health = crate::policy::UpstreamHealth {
            eject_after: upstream.eject_after.unwrap_or(defaults.eject_after),
            eject_for: duration(
                errors,
                &format!("{key}.eject_for"),
                upstream.eject_for.as_ref(),
                "10s",
            ),
            resolve_every: duration(
                errors,
                &format!("{key}.resolve_every"),
                upstream.resolve_every.as_ref(),
                "30s",
            ),
        };
        compiled.push(Arc::new(UpstreamPolicy {
            id: upstream.id.clone(),
            host,
            addrs,
            targets: upstream.addrs.clone(),
            health,
            tls: upstream.tls.unwrap_or(false),
            sni,
            ca,
            connect_timeout: duration(
                errors,
                &format!("{key}.connect_timeout"),
                upstream.connect_timeout.as_ref(),
                "2s",
            ),
            read_timeout: duration(
                errors,
                &format!("{key}.read_timeout"),
                upstream.read_timeout.as_ref(),
                "30s",
            ),
        }));
    }
    compiled
}

fn forward(forward: Option<&model::Forward>, errors: &mut Errors) -> Option<ForwardPolicy> {
    let mut header = |name: &str, value: Option<&String>, default: &str| {
        let text = value.map(String::as_str).unwrap_or(default);
        errors.check(
            &format!("forward.{name}"),
            HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| format!("\"{text}\" is not a valid header name")),
        )
    };
    let subject = header(
        "subject_header",
        forward.and_then(|f| f.subject_header.as_ref()),
        "x-fapi-subject",
    );
    let client_id = header(
        "client_id_header",
        forward.and_then(|f| f.client_id_header.as_ref()),
        "x-fapi-client-id",
    );
    let details = header(
        "authorization_details_header",
        forward.and_then(|f| f.authorization_details_header.as_ref()),
        "x-fapi-authorization-details",
    );
    Some(ForwardPolicy {
        subject_header: subject?,
        client_id_header: client_id?,
        authorization_details_header: details?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_normalised_rfc3986_6_2_2() {
        let url = public_url("HTTPS://API.Bank.Example:443/").unwrap();
        assert_eq!(url.join("/accounts"), "https://api.bank.example/accounts");
        let url = public_url("https://api.bank.example:8443/open-banking/v3").unwrap();
        assert_eq!(
            url.join("/accounts"),
            "https://api.bank.example:8443/open-banking/v3/accounts"
        );
        assert!(public_url("http://api.bank.example").is_err());
        assert!(public_url("https://api.bank.example/?x=1").is_err());
    }
}
