//! Who the gateway trusts and what it keeps: issuers and introspection, clients that sign,
//! shared state, response signing and the audit trail.

use super::compile::{duration, unique, Errors};
use super::files;
use super::model;
use super::units::parse_size;
use crate::policy::*;
use std::collections::HashSet;
use std::path::Path;

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

pub(super) fn issuers(
    issuers: &[model::Issuer],
    base: &Path,
    errors: &mut Errors,
) -> Vec<IssuerPolicy> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut compiled = Vec::new();
    for (i, issuer) in issuers.iter().enumerate() {
        let key = format!("issuer[{i}]");
        unique(errors, &mut ids, format!("{key}.id"), &issuer.id);
        unique(errors, &mut names, format!("{key}.issuer"), &issuer.issuer);
        let audiences = issuer.audience.to_vec();
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
    introspection_prefixes(&compiled, errors);
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
        max_outstanding: match intro.max_outstanding {
            Some(0) => {
                errors.add(format!("{key}.max_outstanding"), "must be at least 1");
                1
            }
            Some(n) => n,
            None => 64,
        },
        token_prefix: match intro.token_prefix.as_deref() {
            Some("") => {
                errors.add(format!("{key}.token_prefix"), "must not be empty");
                None
            }
            prefix => prefix.map(str::to_string),
        },
    })
}

/// Each opaque token goes to one AS, never to every AS in turn (an unknown token would cost
/// one call per AS): with more than one issuer that introspects, each names the prefix of its
/// tokens, and no prefix is the start of another.
fn introspection_prefixes(issuers: &[IssuerPolicy], errors: &mut Errors) {
    let introspecting: Vec<(usize, Option<&str>)> = issuers
        .iter()
        .enumerate()
        .filter_map(|(i, issuer)| {
            let intro = issuer.introspection.as_ref()?;
            Some((i, intro.token_prefix.as_deref()))
        })
        .collect();
    if introspecting.len() < 2 {
        return;
    }
    for (n, &(i, prefix)) in introspecting.iter().enumerate() {
        let key = format!("issuer[{i}].introspection.token_prefix");
        let Some(prefix) = prefix else {
            errors.add(
                key,
                "is required when more than one issuer introspects: each opaque token is sent \
                 to the one AS whose prefix it carries",
            );
            continue;
        };
        for &(j, other) in &introspecting[..n] {
            if other.is_some_and(|other| other.starts_with(prefix) || prefix.starts_with(other)) {
                errors.add(
                    key.clone(),
                    format!("overlaps the token_prefix of issuer[{j}]"),
                );
            }
        }
    }
}

pub(super) fn response_signing(
    signing: &model::ResponseSigning,
    base: &Path,
    errors: &mut Errors,
) -> Option<ResponseSigningPolicy> {
    let format_name = signing.format.as_deref().unwrap_or("http-signature");
    let format = ResponseFormat::parse(format_name);
    if format.is_none() {
        errors.add(
            "response_signing.format",
            ResponseFormat::unknown(format_name),
        );
    }
    let allowed: &[&str] = format.map_or(&[], ResponseFormat::algs);
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
    let hsm = if signing.key.starts_with("pkcs11:") {
        let uri = errors.check(
            "response_signing.key",
            super::pkcs11_uri::parse(&signing.key, base),
        );
        let pin = match &signing.pin_file {
            Some(pin) => {
                let path = files::resolve(base, pin);
                errors
                    .check(
                        "response_signing.pin_file",
                        files::read_key_material(&path, 1),
                    )
                    .map(|()| path)
            }
            None => {
                errors.add(
                    "response_signing.pin_file",
                    "is required when the key is a pkcs11: URI",
                );
                None
            }
        };
        uri.zip(pin)
    } else {
        if signing.pin_file.is_some() {
            errors.add(
                "response_signing.pin_file",
                "is used only when the key is a pkcs11: URI",
            );
        }
        errors.check(
            "response_signing.key",
            files::read_signing_key(&files::resolve(base, &signing.key)),
        );
        None
    };
    let key = files::resolve(base, &signing.key);
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
        hsm,
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

pub(super) fn audit(audit: &model::Audit, base: &Path, errors: &mut Errors) -> Option<AuditPolicy> {
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
    let key_file = audit.key_file.as_ref().and_then(|p| {
        let path = files::resolve(base, p);
        errors
            .check("audit.key_file", files::read_key_material(&path, 32))
            .map(|()| path)
    });
    let checkpoint_every = audit.checkpoint_every.unwrap_or(1000);
    if checkpoint_every == 0 {
        errors.add("audit.checkpoint_every", "must be at least 1");
    }
    let checkpoint_interval = duration(
        errors,
        "audit.checkpoint_interval",
        audit.checkpoint_interval.as_ref(),
        "60s",
    );
    if checkpoint_interval.is_zero() {
        errors.add("audit.checkpoint_interval", "must be more than 0s");
    }
    let queue = audit.queue.unwrap_or(1024);
    if !(1..=1_000_000).contains(&queue) {
        errors.add("audit.queue", "must be 1 to 1000000");
    }
    let wait_max = duration(errors, "audit.wait_max", audit.wait_max.as_ref(), "1s");
    let on_full = match audit.on_full.as_deref().unwrap_or("wait") {
        "wait" => OnFull::Wait(wait_max),
        "refuse" => {
            if audit.wait_max.is_some() {
                errors.add("audit.wait_max", "is used only with on_full = \"wait\"");
            }
            OnFull::Refuse
        }
        other => {
            errors.add(
                "audit.on_full",
                format!("\"{other}\" is not one of \"wait\", \"refuse\""),
            );
            OnFull::Refuse
        }
    };
    let rotate_size = audit
        .rotate_size
        .as_deref()
        .and_then(|s| errors.check("audit.rotate_size", parse_size(s)));
    if rotate_size.is_some_and(|s| s < 64 * 1024) {
        errors.add("audit.rotate_size", "must be at least 64KiB");
    }
    Some(AuditPolicy {
        rotate_size,
        rotate_daily: audit.rotate_daily.unwrap_or(false),
        path,
        fsync,
        key_file,
        checkpoint_every,
        checkpoint_interval,
        queue: queue as usize,
        on_full,
    })
}

pub(super) fn clients(
    clients: &[model::Client],
    base: &Path,
    errors: &mut Errors,
) -> Vec<ClientPolicy> {
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
