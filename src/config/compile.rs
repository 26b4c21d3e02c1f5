//! From the TOML model to the [`Policy`]. Every check runs, so one `fapigate check` lists every
//! mistake in the file; each is reported with the key path it belongs to.

use super::files;
use super::model;
use super::units::{parse_duration, parse_size};
use crate::policy::path::PathTemplate;
use crate::policy::rar::{self, Comparison, DetailRequirement, JsonPointer, Operand, Rule};
use crate::policy::routes::{conflicts, AuthMode, Route, RouteTable};
use crate::policy::*;
use http::{HeaderName, Method};
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Collects errors as (key path, message).
#[derive(Default)]
struct Errors(Vec<(String, String)>);

impl Errors {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push((key.into(), message.into()));
    }

    /// Records the error of a fallible step and returns its value, if any.
    fn check<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.add(key, message)).ok()
    }
}

pub fn compile(file: model::File, base: &Path) -> Result<Policy, Vec<(String, String)>> {
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
    };
    let routes = routes(&file.route, &context, &mut errors);

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
        }),
        // Every `None` above was recorded as an error.
        _ => Err(vec![(String::new(), "configuration is incomplete".into())]),
    }
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("\"{text}\" is not an IP address and port, e.g. \"0.0.0.0:8443\""))
}

fn duration(errors: &mut Errors, key: &str, value: Option<&String>, default: &str) -> Duration {
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
        Some(tls) => listener_tls(tls, base, errors),
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
    Some(ListenerPolicy {
        addr: addr?,
        public_url: public_url?,
        tls,
        plain_addr,
        trusted_proxies,
    })
}

fn public_url(text: &str) -> Result<PublicUrl, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a URL"))?;
    if uri.scheme_str().map(str::to_ascii_lowercase).as_deref() != Some("https") {
        return Err(format!("\"{text}\" must be an https URL"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("\"{text}\" has no host"))?
        .to_ascii_lowercase();
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("\"{text}\" must not have a query or fragment"));
    }
    let authority = match uri.port_u16() {
        Some(443) | None => host,
        Some(port) => format!("{host}:{port}"),
    };
    Ok(PublicUrl {
        scheme: "https".into(),
        authority,
        base_path: uri.path().trim_end_matches('/').to_string(),
    })
}

fn listener_tls(tls: &model::ListenerTls, base: &Path, errors: &mut Errors) -> Option<TlsPolicy> {
    let cert = files::resolve(base, &tls.cert);
    let key = files::resolve(base, &tls.key);
    let certs = errors.check("listener.tls.cert", files::read_certificates(&cert));
    let private_key = errors.check("listener.tls.key", files::read_private_key(&key));
    if let (Some(certs), Some(private_key)) = (certs, private_key) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let built = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(certs, private_key)
                    .map_err(|e| format!("does not match the certificate ({e})"))
            });
        errors.check("listener.tls.key", built);
    }
    let client_cert = match tls.client_cert.as_deref().unwrap_or("request") {
        "request" => ClientCertMode::Request,
        "require" => ClientCertMode::Require,
        "off" => ClientCertMode::Off,
        other => {
            errors.add(
                "listener.tls.client_cert",
                format!("\"{other}\" is not one of \"request\", \"require\", \"off\""),
            );
            ClientCertMode::Request
        }
    };
    let client_ca = tls.client_ca.as_ref().map(|p| files::resolve(base, p));
    if let Some(path) = &client_ca {
        if client_cert == ClientCertMode::Off {
            errors.add(
                "listener.tls.client_ca",
                "is set but client_cert = \"off\" never asks for a certificate",
            );
        }
        errors.check("listener.tls.client_ca", files::read_certificates(path));
    }
    Some(TlsPolicy {
        cert,
        key,
        client_cert,
        client_ca,
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
                .check("profile.dpop_nonce_secret_file", files::read_secret(&path))
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

fn key_set(
    errors: &mut Errors,
    key: &str,
    url: Option<&String>,
    file: Option<&String>,
    ca_file: Option<&String>,
    base: &Path,
) -> Option<KeySet> {
    let ca_file = ca_file.map(|p| files::resolve(base, p));
    if let Some(path) = &ca_file {
        errors.check(&format!("{key}.ca_file"), files::read_certificates(path));
    }
    match (url, file) {
        (Some(url), None) => {
            errors.check(&format!("{key}.jwks_url"), files::check_outbound_url(url))?;
            Some(KeySet::Url {
                url: url.clone(),
                ca_file,
            })
        }
        (None, Some(file)) => {
            let path = files::resolve(base, file);
            errors.check(&format!("{key}.jwks_file"), files::read_jwks(&path))?;
            Some(KeySet::File(path))
        }
        (Some(_), Some(_)) => {
            errors.add(key, "set jwks_url or jwks_file, not both");
            None
        }
        (None, None) => {
            errors.add(key, "needs jwks_url or jwks_file");
            None
        }
    }
}

fn unique<'a>(errors: &mut Errors, seen: &mut HashSet<&'a str>, key: String, id: &'a str) {
    if id.is_empty() {
        errors.add(key, "must not be empty");
    } else if !seen.insert(id) {
        errors.add(key, format!("\"{id}\" is used twice"));
    }
}

fn issuers(issuers: &[model::Issuer], base: &Path, errors: &mut Errors) -> Vec<IssuerPolicy> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut compiled = Vec::new();
    for (i, issuer) in issuers.iter().enumerate() {
        let key = format!("issuer[{i}]");
        unique(errors, &mut ids, format!("{key}.id"), &issuer.id);
        unique(errors, &mut names, format!("{key}.issuer"), &issuer.issuer);
        let audiences = match &issuer.audience {
            model::OneOrMany::One(a) => vec![a.clone()],
            model::OneOrMany::Many(list) => list.clone(),
        };
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            errors.add(
                format!("{key}.audience"),
                "must name at least one non-empty audience",
            );
        }
        let jwks = key_set(
            errors,
            &key,
            issuer.jwks_url.as_ref(),
            issuer.jwks_file.as_ref(),
            issuer.ca_file.as_ref(),
            base,
        );
        let jwks_refresh = duration(
            errors,
            &format!("{key}.jwks_refresh"),
            issuer.jwks_refresh.as_ref(),
            "5m",
        );
        let introspection = issuer
            .introspection
            .as_ref()
            .and_then(|intro| introspection(intro, &format!("{key}.introspection"), base, errors));
        if let Some(jwks) = jwks {
            compiled.push(IssuerPolicy {
                id: issuer.id.clone(),
                issuer: issuer.issuer.clone(),
                audiences,
                jwks,
                jwks_refresh,
                introspection,
            });
        }
    }
    compiled
}

fn introspection(
    intro: &model::Introspection,
    key: &str,
    base: &Path,
    errors: &mut Errors,
) -> Option<IntrospectionPolicy> {
    errors.check(
        &format!("{key}.endpoint"),
        files::check_outbound_url(&intro.endpoint),
    );
    if intro.client_id.is_empty() {
        errors.add(format!("{key}.client_id"), "must not be empty");
    }
    let unused = |errors: &mut Errors, name: &str, set: bool| {
        if set {
            errors.add(
                format!("{key}.{name}"),
                format!("is not used with auth = \"{}\"", intro.auth),
            );
        }
    };
    let required = |errors: &mut Errors, name: &str, value: Option<&String>| {
        if value.is_none() {
            errors.add(
                format!("{key}.{name}"),
                format!("is required with auth = \"{}\"", intro.auth),
            );
        }
        value.map(|p| files::resolve(base, p))
    };
    let auth = match intro.auth.as_str() {
        "private_key_jwt" => {
            unused(errors, "cert", intro.cert.is_some());
            unused(errors, "secret_file", intro.secret_file.is_some());
            let path = required(errors, "key", intro.key.as_ref())?;
            errors.check(&format!("{key}.key"), files::read_signing_key(&path))?;
            IntrospectionAuth::PrivateKeyJwt {
                key: path,
                key_id: intro.key_id.clone(),
            }
        }
        "tls_client_auth" => {
            unused(errors, "secret_file", intro.secret_file.is_some());
            let cert = required(errors, "cert", intro.cert.as_ref());
            let private = required(errors, "key", intro.key.as_ref());
            let (cert, private) = (cert?, private?);
            errors.check(&format!("{key}.cert"), files::read_certificates(&cert))?;
            errors.check(&format!("{key}.key"), files::read_private_key(&private))?;
            IntrospectionAuth::TlsClientAuth { cert, key: private }
        }
        "client_secret_basic" => {
            unused(errors, "cert", intro.cert.is_some());
            unused(errors, "key", intro.key.is_some());
            let path = required(errors, "secret_file", intro.secret_file.as_ref())?;
            errors.check(&format!("{key}.secret_file"), files::read_secret(&path))?;
            IntrospectionAuth::ClientSecretBasic { secret_file: path }
        }
        other => {
            errors.add(
                format!("{key}.auth"),
                format!(
                    "\"{other}\" is not one of \"private_key_jwt\", \"tls_client_auth\", \"client_secret_basic\""
                ),
            );
            return None;
        }
    };
    Some(IntrospectionPolicy {
        endpoint: intro.endpoint.clone(),
        client_id: intro.client_id.clone(),
        auth,
        signed_response: intro.signed_response.unwrap_or(false),
        cache_max_ttl: duration(
            errors,
            &format!("{key}.cache_max_ttl"),
            intro.cache_max_ttl.as_ref(),
            "30s",
        ),
        timeout: duration(
            errors,
            &format!("{key}.timeout"),
            intro.timeout.as_ref(),
            "2s",
        ),
    })
}

fn state(state: Option<&model::State>, base: &Path, errors: &mut Errors) -> StatePolicy {
    let backend = match state.and_then(|s| s.backend.as_deref()).unwrap_or("memory") {
        "memory" => StateBackend::Memory,
        "redis" => {
            let state = state.unwrap_or_else(|| unreachable_state());
            let from_file = state.redis_url_file.as_ref().and_then(|p| {
                let path = files::resolve(base, p);
                errors.check(
                    "state.redis_url_file",
                    files::refuse_world_readable(&path).and_then(|()| {
                        std::fs::read_to_string(&path)
                            .map(|s| s.trim().to_string())
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }),
                )
            });
            let cluster_nodes = state.redis_cluster_nodes.clone().unwrap_or_default();
            let url = match (&state.redis_url, from_file, cluster_nodes.is_empty()) {
                (Some(_), Some(_), _) => {
                    errors.add(
                        "state.redis_url_file",
                        "set redis_url or redis_url_file, not both",
                    );
                    String::new()
                }
                (Some(url), None, _) => url.clone(),
                (None, Some(url), _) => url,
                (None, None, false) => String::new(),
                (None, None, true) => {
                    errors.add(
                        "state.redis_url",
                        "backend = \"redis\" needs redis_url, redis_url_file or redis_cluster_nodes",
                    );
                    String::new()
                }
            };
            for (key, value) in std::iter::once(("state.redis_url".to_string(), &url))
                .filter(|(_, u)| !u.is_empty())
                .chain(
                    cluster_nodes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("state.redis_cluster_nodes[{i}]"), n)),
                )
            {
                if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
                    errors.add(key, "must start with redis:// or rediss://");
                }
            }
            StateBackend::Redis {
                url,
                cluster_nodes,
                timeout: duration(
                    errors,
                    "state.redis_timeout",
                    state.redis_timeout.as_ref(),
                    "500ms",
                ),
            }
        }
        other => {
            errors.add(
                "state.backend",
                format!("\"{other}\" is not one of \"memory\", \"redis\""),
            );
            StateBackend::Memory
        }
    };
    let entries = |errors: &mut Errors, name: &str, value: Option<u64>, default: u64| {
        let value = value.unwrap_or(default);
        if value == 0 {
            errors.add(format!("state.{name}"), "must be at least 1");
        }
        value
    };
    StatePolicy {
        backend,
        token_cache_entries: entries(
            errors,
            "token_cache_entries",
            state.and_then(|s| s.token_cache_entries),
            100_000,
        ),
        replay_cache_entries: entries(
            errors,
            "replay_cache_entries",
            state.and_then(|s| s.replay_cache_entries),
            1_000_000,
        ),
    }
}

/// `backend = "redis"` can only be read from a `[state]` table.
fn unreachable_state() -> &'static model::State {
    static EMPTY: model::State = model::State {
        backend: None,
        redis_url: None,
        redis_url_file: None,
        redis_cluster_nodes: None,
        redis_timeout: None,
        token_cache_entries: None,
        replay_cache_entries: None,
    };
    &EMPTY
}

fn response_signing(
    signing: &model::ResponseSigning,
    base: &Path,
    errors: &mut Errors,
) -> Option<ResponseSigningPolicy> {
    let format_name = signing.format.as_deref().unwrap_or("http-signature");
    let format = ResponseFormat::parse(format_name);
    if format.is_none() {
        errors.add(
            "response_signing.format",
            format!(
                "\"{format_name}\" is not one of \"http-signature\", \"jws-detached\", \"jwt\""
            ),
        );
    }
    let allowed: &[&str] = match format {
        Some(ResponseFormat::HttpSignature) => &["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"],
        Some(_) => &["PS256", "ES256"],
        None => &[],
    };
    if format.is_some() && !allowed.contains(&signing.alg.as_str()) {
        errors.add(
            "response_signing.alg",
            format!(
                "\"{}\" is not usable with format \"{format_name}\" (use one of {})",
                signing.alg,
                allowed.join(", ")
            ),
        );
    }
    let key = files::resolve(base, &signing.key);
    errors.check("response_signing.key", files::read_signing_key(&key));
    if signing.key_id.is_empty() {
        errors.add("response_signing.key_id", "must not be empty");
    }
    let max_body = signing
        .max_body
        .as_deref()
        .map(|s| errors.check("response_signing.max_body", parse_size(s)))
        .unwrap_or(Some(1 << 20))
        .unwrap_or(0);
    let jwks_path = signing
        .jwks_path
        .clone()
        .unwrap_or_else(|| "/.well-known/jwks.json".into());
    if !jwks_path.starts_with('/') {
        errors.add("response_signing.jwks_path", "must start with /");
    }
    let mut additional_keys = Vec::new();
    for (i, published) in signing.additional_keys.iter().enumerate() {
        let path = files::resolve(base, &published.key);
        let key = format!("response_signing.additional_keys[{i}]");
        errors.check(&format!("{key}.key"), files::read_signing_key(&path));
        if published.key_id == signing.key_id {
            errors.add(
                format!("{key}.key_id"),
                "repeats the active key_id (SP2-CRY-6: no duplicate kid)",
            );
        }
        additional_keys.push((path, published.key_id.clone(), published.alg.clone()));
    }
    Some(ResponseSigningPolicy {
        additional_keys,
        issuer: signing
            .issuer
            .clone()
            .unwrap_or_else(|| signing.key_id.clone()),
        trust_anchor: signing
            .trust_anchor
            .clone()
            .unwrap_or_else(|| "openbanking.org.uk".into()),
        format: format?,
        key,
        key_id: signing.key_id.clone(),
        alg: signing.alg.clone(),
        max_body,
        jwks_path,
    })
}

fn audit(audit: &model::Audit, base: &Path, errors: &mut Errors) -> Option<AuditPolicy> {
    let path = files::resolve(base, &audit.path);
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(folder) = folder {
        if !folder.is_dir() {
            errors.add(
                "audit.path",
                format!("the folder {} does not exist", folder.display()),
            );
        }
    }
    let fsync = match audit.fsync.as_deref().unwrap_or("every-record") {
        "every-record" => FsyncPolicy::EveryRecord,
        "interval" => FsyncPolicy::Interval,
        other => {
            errors.add(
                "audit.fsync",
                format!("\"{other}\" is not one of \"every-record\", \"interval\""),
            );
            return None;
        }
    };
    Some(AuditPolicy { path, fsync })
}

fn clients(clients: &[model::Client], base: &Path, errors: &mut Errors) -> Vec<ClientPolicy> {
    let mut ids = HashSet::new();
    let mut compiled = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let key = format!("client[{i}]");
        unique(
            errors,
            &mut ids,
            format!("{key}.client_id"),
            &client.client_id,
        );
        if let Some(jwks) = key_set(
            errors,
            &key,
            client.jwks_url.as_ref(),
            client.jwks_file.as_ref(),
            client.ca_file.as_ref(),
            base,
        ) {
            compiled.push(ClientPolicy {
                client_id: client.client_id.clone(),
                jwks,
            });
        }
    }
    compiled
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
            let resolved = text
                .to_socket_addrs()
                .map_err(|e| format!("\"{text}\" does not resolve to host:port ({e})"))
                .and_then(|mut found| {
                    found
                        .next()
                        .ok_or_else(|| format!("\"{text}\" resolves to no address"))
                });
            if let Some(addr) = errors.check(&format!("{key}.addrs[{j}]"), resolved) {
                addrs.push(addr);
            }
        }
        let ca = upstream.ca_file.as_ref().and_then(|p| {
            let certs = errors.check(
                &format!("{key}.ca_file"),
                files::read_certificates(&files::resolve(base, p)),
            )?;
            Some(crate::proxy::tls::upstream_roots(certs))
        });
        let sni = upstream.sni.clone().unwrap_or_else(|| {
            upstream
                .addrs
                .first()
                .and_then(|a| a.rsplit_once(':'))
                .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        });
        compiled.push(Arc::new(UpstreamPolicy {
            id: upstream.id.clone(),
            addrs,
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

struct RouteContext<'a> {
    upstreams: &'a [Arc<UpstreamPolicy>],
    signing: bool,
    clients: bool,
}

const KNOWN_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

fn routes(routes: &[model::Route], context: &RouteContext<'_>, errors: &mut Errors) -> Vec<Route> {
    let mut ids = HashSet::new();
    let mut compiled: Vec<(usize, Route)> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let key = format!("route[{i}]");
        unique(errors, &mut ids, format!("{key}.id"), &route.id);
        if let Some(compiled_route) = one_route(route, &key, context, errors) {
            for (j, earlier) in &compiled {
                if conflicts(earlier, &compiled_route) {
                    errors.add(
                        format!("{key}.path"),
                        format!(
                            "route \"{}\" ({}) could match the same requests as route[{j}] \"{}\" ({}); a request must match at most one route",
                            compiled_route.id, compiled_route.template, earlier.id, earlier.template
                        ),
                    );
                }
            }
            compiled.push((i, compiled_route));
        }
    }
    compiled.into_iter().map(|(_, route)| route).collect()
}

fn one_route(
    route: &model::Route,
    key: &str,
    context: &RouteContext<'_>,
    errors: &mut Errors,
) -> Option<Route> {
    let template = errors.check(&format!("{key}.path"), PathTemplate::parse(&route.path));
    let mut methods = Vec::new();
    if route.methods.is_empty() {
        errors.add(format!("{key}.methods"), "must list at least one method");
    }
    for (j, name) in route.methods.iter().enumerate() {
        match KNOWN_METHODS.iter().find(|m| m.as_str() == name) {
            Some(m) if methods.contains(m) => errors.add(
                format!("{key}.methods[{j}]"),
                format!("\"{name}\" is listed twice"),
            ),
            Some(m) => methods.push(m.clone()),
            None => errors.add(
                format!("{key}.methods[{j}]"),
                format!("\"{name}\" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            ),
        }
    }
    let upstream = context
        .upstreams
        .iter()
        .find(|u| u.id == route.upstream)
        .cloned();
    if upstream.is_none() {
        errors.add(
            format!("{key}.upstream"),
            format!(
                "route \"{}\": upstream \"{}\" is not defined",
                route.id, route.upstream
            ),
        );
    }
    let auth = match route.auth.as_deref().unwrap_or("token") {
        "token" => AuthMode::Token,
        "none" => AuthMode::None,
        other => {
            errors.add(
                format!("{key}.auth"),
                format!("\"{other}\" is not one of \"token\", \"none\""),
            );
            AuthMode::Token
        }
    };
    if auth == AuthMode::None {
        let token_only = [
            ("scopes", !route.scopes.is_empty()),
            (
                "authorization_details",
                !route.authorization_details.is_empty(),
            ),
            (
                "verify_request_signature",
                route.verify_request_signature == Some(true),
            ),
            ("acr_values", route.acr_values.is_some()),
            ("max_auth_age", route.max_auth_age.is_some()),
        ];
        for (name, set) in token_only {
            if set {
                errors.add(
                    format!("{key}.{name}"),
                    format!("route \"{}\" has auth = \"none\": it asks for no token, so {name} cannot apply", route.id),
                );
            }
        }
    }
    let sign_response = route.sign_response.unwrap_or(false);
    if sign_response && !context.signing {
        errors.add(
            format!("{key}.sign_response"),
            "needs a [response_signing] section",
        );
    }
    let response_format = route.response_format.as_deref().and_then(|name| {
        let format = ResponseFormat::parse(name);
        if format.is_none() {
            errors.add(
                format!("{key}.response_format"),
                format!("\"{name}\" is not one of \"http-signature\", \"jws-detached\", \"jwt\""),
            );
        } else if !sign_response {
            errors.add(
                format!("{key}.response_format"),
                "needs sign_response = true",
            );
        }
        format
    });
    let verify_request_signature = route.verify_request_signature.unwrap_or(false);
    if verify_request_signature && !context.clients {
        errors.add(
            format!("{key}.verify_request_signature"),
            "needs at least one [[client]] with the keys of the clients that sign",
        );
    }
    let acr_values = route.acr_values.clone().unwrap_or_default();
    if route.acr_values.is_some() && acr_values.is_empty() {
        errors.add(
            format!("{key}.acr_values"),
            "must list at least one value when set",
        );
    }
    let max_auth_age = route
        .max_auth_age
        .as_deref()
        .and_then(|text| errors.check(&format!("{key}.max_auth_age"), parse_duration(text)));
    let has_body = methods
        .iter()
        .any(|m| [Method::POST, Method::PUT, Method::PATCH].contains(m));
    let mut details = Vec::new();
    for (j, requirement) in route.authorization_details.iter().enumerate() {
        let detail_key = format!("{key}.authorization_details[{j}]");
        if let Some(detail) =
            detail_requirement(requirement, &detail_key, template.as_ref(), errors)
        {
            if detail.reads_body() && !has_body {
                errors.add(
                    format!("{detail_key}.match"),
                    format!(
                        "route \"{}\" compares with {{body/...}} but none of its methods carries a body",
                        route.id
                    ),
                );
            }
            details.push(detail);
        }
    }
    Some(Route {
        id: route.id.clone(),
        methods,
        template: template?,
        upstream: upstream?,
        auth,
        scopes: route.scopes.clone(),
        authorization_details: details,
        sign_response,
        response_format,
        verify_request_signature,
        acr_values,
        max_auth_age,
    })
}

fn detail_requirement(
    requirement: &model::DetailRequirement,
    key: &str,
    template: Option<&PathTemplate>,
    errors: &mut Errors,
) -> Option<DetailRequirement> {
    if requirement.kind.is_empty() {
        errors.add(format!("{key}.type"), "must not be empty");
    }
    let mut rules = Vec::new();
    for (pointer, comparisons) in &requirement.rules {
        let rule_key = format!("{key}.match.\"{pointer}\"");
        let field = errors.check(&rule_key, JsonPointer::parse(pointer));
        if comparisons.len() != 1 {
            errors.add(
                &rule_key,
                "must hold exactly one of equals, contains, at_least, at_most",
            );
            continue;
        }
        for (name, value) in comparisons {
            let Some(comparison) = Comparison::parse(name) else {
                errors.add(
                    format!("{rule_key}.{name}"),
                    format!("\"{name}\" is not one of equals, contains, at_least, at_most"),
                );
                continue;
            };
            let operand = errors.check(&format!("{rule_key}.{name}"), rar::parse_operand(value));
            match &operand {
                Some(Operand::PathParam(param))
                    if template.is_some_and(|t| !t.param_names().any(|n| n == param)) =>
                {
                    errors.add(
                        format!("{rule_key}.{name}"),
                        format!("{{path.{param}}} is not a parameter of the route's path"),
                    );
                }
                Some(Operand::Literal(value))
                    if matches!(comparison, Comparison::AtLeast | Comparison::AtMost)
                        && !is_decimal(value) =>
                {
                    errors.add(
                        format!("{rule_key}.{name}"),
                        "compares decimals: write the amount as a string such as \"100.00\"",
                    );
                }
                _ => {}
            }
            if let (Some(field), Some(operand)) = (field.clone(), operand) {
                rules.push(Rule {
                    field,
                    comparison,
                    operand,
                });
            }
        }
    }
    Some(DetailRequirement {
        kind: requirement.kind.clone(),
        actions: requirement.actions.clone(),
        locations: requirement.locations.clone(),
        datatypes: requirement.datatypes.clone(),
        rules,
    })
}

fn is_decimal(value: &serde_json::Value) -> bool {
    crate::policy::decimal::Decimal::from_json(value).is_some()
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

    #[test]
    fn decimals_are_plain_digits() {
        for good in ["100", "100.00", "-1.5", "0.1"] {
            assert!(is_decimal(&serde_json::json!(good)), "{good}");
        }
        for bad in ["1e3", "100.", ".5", "abc", ""] {
            assert!(!is_decimal(&serde_json::json!(bad)), "{bad}");
        }
    }
}
