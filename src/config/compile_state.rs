//! `[state]`: where the state shared between replicas lives, and how the gateway reaches it.

use super::compile::{duration, Errors};
use super::files;
use super::model;
use crate::policy::*;
use std::path::Path;

pub(super) fn state(state: Option<&model::State>, base: &Path, errors: &mut Errors) -> StatePolicy {
    let backend = match state.and_then(|s| s.backend.as_deref()).unwrap_or("memory") {
        "memory" => StateBackend::Memory,
        "redis" => {
            let state = state.unwrap_or_else(|| unreachable_state());
            let from_file = state.redis_url_file.as_ref().and_then(|p| {
                let path = files::resolve(base, p);
                errors.check("state.redis_url_file", secret_text(&path))
            });
            let cluster_nodes = state.redis_cluster_nodes.clone().unwrap_or_default();
            let sentinel = sentinel(state, errors);
            let url = match (
                &state.redis_url,
                from_file,
                cluster_nodes.is_empty() && sentinel.is_none(),
            ) {
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
                        "backend = \"redis\" needs redis_url, redis_url_file, \
                         redis_cluster_nodes or redis_sentinel_nodes",
                    );
                    String::new()
                }
            };
            let ways = [
                !url.is_empty(),
                !cluster_nodes.is_empty(),
                sentinel.is_some(),
            ];
            if ways.iter().filter(|w| **w).count() > 1 {
                errors.add(
                    "state.redis_url",
                    "set one of redis_url (or redis_url_file), redis_cluster_nodes and \
                     redis_sentinel_nodes",
                );
            }
            // A node may also be a local socket (a Redis beside the gateway); cluster nodes
            // announce each other by TCP address, so they are TCP only.
            const NODE_SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
            if !url.is_empty() && !NODE_SCHEMES.iter().any(|s| url.starts_with(s)) {
                errors.add(
                    "state.redis_url",
                    "must start with redis://, rediss://, redis+unix:// or unix://",
                );
            }
            for (i, node) in cluster_nodes.iter().enumerate() {
                if !NODE_SCHEMES[..2].iter().any(|s| node.starts_with(s)) {
                    errors.add(
                        format!("state.redis_cluster_nodes[{i}]"),
                        "must start with redis:// or rediss://",
                    );
                }
            }
            let mut urls: Vec<(String, &str)> = cluster_nodes
                .iter()
                .enumerate()
                .map(|(i, node)| (format!("state.redis_cluster_nodes[{i}]"), node.as_str()))
                .collect();
            if !url.is_empty() {
                urls.push(("state.redis_url".to_string(), url.as_str()));
            }
            if let Some(sentinel) = &sentinel {
                for (i, node) in sentinel.nodes.iter().enumerate() {
                    urls.push((format!("state.redis_sentinel_nodes[{i}]"), node.as_str()));
                }
            }
            let tls = redis_tls(state, &urls, base, errors);
            // A sentinel on this machine may still name a master anywhere: with redis://
            // sentinels that master is reached in clear, its password and all.
            if sentinel.as_ref().is_some_and(|s| !s.tls) && !state.redis_insecure.unwrap_or(false) {
                errors.add(
                    "state.redis_sentinel_nodes",
                    "redis:// sentinels mean the master they name is reached without TLS, \
                     wherever it is: use rediss://, or set redis_insecure = true",
                );
            }
            let auth = redis_auth(state, !url.is_empty(), base, errors);
            // Replication is asynchronous: in a failover, the new master may lack a record the
            // old one acknowledged, and a used proof would pass there. Sentinel means replicas.
            let replica_acks = state
                .redis_replica_acks
                .unwrap_or(u32::from(sentinel.is_some()));
            StateBackend::Redis(Box::new(RedisPolicy {
                replica_acks,
                tls,
                sentinel,
                auth,
                url,
                cluster_nodes,
                timeout: duration(
                    errors,
                    "state.redis_timeout",
                    state.redis_timeout.as_ref(),
                    "500ms",
                ),
            }))
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
    let replay_cache_entries = entries(
        errors,
        "replay_cache_entries",
        state.and_then(|s| s.replay_cache_entries),
        1_000_000,
    );
    let replay_entries_per_key = entries(
        errors,
        "replay_entries_per_key",
        state.and_then(|s| s.replay_entries_per_key),
        (replay_cache_entries / 16).max(1),
    );
    if replay_entries_per_key > replay_cache_entries {
        errors.add(
            "state.replay_entries_per_key",
            "must not exceed replay_cache_entries",
        );
    }
    StatePolicy {
        backend,
        token_cache_entries: entries(
            errors,
            "token_cache_entries",
            state.and_then(|s| s.token_cache_entries),
            100_000,
        ),
        replay_cache_entries,
        replay_entries_per_key,
        verdict_key_file: state
            .and_then(|s| s.verdict_key_file.as_ref())
            .and_then(|p| {
                let path = files::resolve(base, p);
                errors
                    .check(
                        "state.verdict_key_file",
                        files::read_key_material(&path, 32),
                    )
                    .map(|()| path)
            }),
        namespace: state.and_then(|s| s.namespace.as_ref()).and_then(|ns| {
            let fine = !ns.is_empty()
                && ns.len() <= 64
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
            if !fine {
                errors.add(
                    "state.namespace",
                    "must be 1 to 64 characters of A-Z, a-z, 0-9 and . _ : / -",
                );
            }
            fine.then(|| ns.clone())
        }),
    }
}

/// The trimmed text of a file that holds a secret (a URL with its password, a password):
/// refused when others may read it, when it is not text, or when it is empty.
fn secret_text(path: &Path) -> Result<String, String> {
    files::refuse_world_readable(path)?;
    let text = String::from_utf8(files::read(path)?)
        .map_err(|_| format!("{}: is not UTF-8 text", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{}: is empty", path.display()));
    }
    Ok(text.to_string())
}

/// `backend = "redis"` can only be read from a `[state]` table.
fn unreachable_state() -> &'static model::State {
    static EMPTY: model::State = model::State {
        backend: None,
        redis_url: None,
        redis_url_file: None,
        redis_cluster_nodes: None,
        redis_sentinel_nodes: None,
        redis_sentinel_master: None,
        redis_password_file: None,
        redis_username: None,
        redis_timeout: None,
        redis_replica_acks: None,
        token_cache_entries: None,
        replay_cache_entries: None,
        replay_entries_per_key: None,
        redis_ca_file: None,
        redis_client_cert: None,
        redis_client_key: None,
        redis_insecure: None,
        verdict_key_file: None,
        namespace: None,
    };
    &EMPTY
}

/// TLS to Redis: every `rediss://` node is verified against `redis_ca_file` (or the system's
/// roots), with a client certificate when one is named. A plain `redis://` node that is not
/// on this machine would carry the password, the nonce key and every verdict in clear: it is
/// refused unless `redis_insecure = true` says so.
fn redis_tls(
    state: &model::State,
    urls: &[(String, &str)],
    base: &Path,
    errors: &mut Errors,
) -> RedisTls {
    let insecure = state.redis_insecure.unwrap_or(false);
    let any_tls = urls.iter().any(|(_, url)| url.starts_with("rediss://"));
    for (key, url) in urls {
        if !url.starts_with("redis://") {
            continue;
        }
        match redis_host(url) {
            None => errors.add(key.clone(), "is not a Redis URL with a host"),
            Some(host) if !insecure && !is_loopback(&host) => errors.add(
                key.clone(),
                format!(
                    "reaches {host} without TLS: use rediss://, or set redis_insecure = true \
                     to send the password and shared state in clear"
                ),
            ),
            Some(_) => {}
        }
    }
    let file = |errors: &mut Errors, name: &str, value: &Option<String>| {
        let path = value.as_ref().map(|p| files::resolve(base, p))?;
        if !any_tls {
            errors.add(format!("state.{name}"), "is used only with rediss:// URLs");
        }
        Some(path)
    };
    let ca_file = file(errors, "redis_ca_file", &state.redis_ca_file);
    if let Some(path) = &ca_file {
        errors.check("state.redis_ca_file", files::read_certificates(path));
    }
    let client_cert = file(errors, "redis_client_cert", &state.redis_client_cert);
    let client_key = file(errors, "redis_client_key", &state.redis_client_key);
    let client = match (client_cert, client_key) {
        (Some(cert), Some(key)) => {
            errors.check("state.redis_client_cert", files::read_certificates(&cert));
            errors.check("state.redis_client_key", files::read_private_key(&key));
            Some((cert, key))
        }
        (None, None) => None,
        (Some(_), None) => {
            errors.add(
                "state.redis_client_key",
                "is required with redis_client_cert",
            );
            None
        }
        (None, Some(_)) => {
            errors.add(
                "state.redis_client_cert",
                "is required with redis_client_key",
            );
            None
        }
    };
    RedisTls { ca_file, client }
}

/// `redis_password_file` (and `redis_username`): the AUTH of the master Sentinel names or of
/// the cluster nodes, kept out of this file. A single URL carries its own password, so there
/// it would be a second source of the same secret.
fn redis_auth(
    state: &model::State,
    single_url: bool,
    base: &Path,
    errors: &mut Errors,
) -> Option<RedisAuth> {
    let Some(file) = &state.redis_password_file else {
        if state.redis_username.is_some() {
            errors.add(
                "state.redis_username",
                "is used only with redis_password_file",
            );
        }
        return None;
    };
    if single_url {
        errors.add(
            "state.redis_password_file",
            "is for redis_sentinel_nodes and redis_cluster_nodes: a single Redis takes its \
             password in the URL (redis_url_file keeps it out of this file)",
        );
        return None;
    }
    let path = files::resolve(base, file);
    let password = errors.check("state.redis_password_file", secret_text(&path))?;
    if state.redis_username.as_deref() == Some("") {
        errors.add("state.redis_username", "must not be empty");
    }
    Some(RedisAuth {
        username: state.redis_username.clone(),
        password,
    })
}

/// `redis_sentinel_nodes` with `redis_sentinel_master`: `redis://` sentinels, or `rediss://`
/// ones, and then the master they name is reached over TLS too (verified like every
/// `rediss://` node). A sentinel's own password is in its URL.
fn sentinel(state: &model::State, errors: &mut Errors) -> Option<SentinelPolicy> {
    let nodes = state.redis_sentinel_nodes.clone().unwrap_or_default();
    match (nodes.is_empty(), &state.redis_sentinel_master) {
        (true, None) => None,
        (true, Some(_)) => {
            errors.add(
                "state.redis_sentinel_nodes",
                "is required with redis_sentinel_master",
            );
            None
        }
        (false, None) => {
            errors.add(
                "state.redis_sentinel_master",
                "is required with redis_sentinel_nodes",
            );
            None
        }
        (false, Some(master)) => {
            let tls = nodes.first().is_some_and(|n| n.starts_with("rediss://"));
            let scheme = if tls { "rediss://" } else { "redis://" };
            for (i, node) in nodes.iter().enumerate() {
                if !node.starts_with(scheme) {
                    errors.add(
                        format!("state.redis_sentinel_nodes[{i}]"),
                        if node.starts_with("redis://") || node.starts_with("rediss://") {
                            "every sentinel must use the same scheme: all redis:// or all \
                             rediss://"
                        } else {
                            "must start with redis:// or rediss://"
                        },
                    );
                }
            }
            if master.is_empty() {
                errors.add("state.redis_sentinel_master", "must not be empty");
            }
            Some(SentinelPolicy {
                nodes,
                master: master.clone(),
                tls,
            })
        }
    }
}

/// The host of a `redis://` or `rediss://` URL, without user information or port.
fn redis_host(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
