//! How the Redis client is built from `[state]` (TLS roots, client certificate, Sentinel and
//! its passwords), and why a connection failed: unreachable, or a certificate not trusted.

use crate::policy::{RedisAuth, RedisTls, SentinelPolicy};

#[derive(Debug)]
pub(super) enum ConnectError {
    Unreachable(String),
    /// The TLS handshake failed on a certificate: ours or the server's is not trusted.
    Untrusted(String),
    /// Redis may evict keys (`maxmemory-policy` other than `noeviction`).
    Evicting(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Unreachable(e)
            | ConnectError::Untrusted(e)
            | ConnectError::Evicting(e) => f.write_str(e),
        }
    }
}

pub(super) fn classify(error: &redis::RedisError) -> ConnectError {
    match certificate_error(error) {
        Some(tls) => ConnectError::Untrusted(format!("{error}: {tls}")),
        None => ConnectError::Unreachable(error.to_string()),
    }
}

/// The rustls error under a failed connection, when a certificate was not trusted (by us or
/// by the server).
fn certificate_error(error: &redis::RedisError) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let inner = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(current), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return matches!(
                    tls,
                    rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented
                        | rustls::Error::AlertReceived(_)
                )
                .then(|| tls.to_string());
            }
        }
        cause = current.source();
    }
    None
}

/// A client that asks the sentinels for the master and connects to it: over TLS, verified
/// with `tls`, when the sentinels are `rediss://`; with `auth` when the master requires it.
/// A sentinel's own user and password come from its URL (the first that names one).
pub(super) fn sentinel_client(
    sentinel: &SentinelPolicy,
    auth: Option<&RedisAuth>,
    tls: &RedisTls,
) -> Result<redis::sentinel::SentinelClient, String> {
    use redis::IntoConnectionInfo;
    let error = |e: redis::RedisError| format!("redis_sentinel_nodes: {e}");
    let nodes = sentinel
        .nodes
        .iter()
        .map(|node| node.as_str().into_connection_info().map_err(error))
        .collect::<Result<Vec<_>, _>>()?;
    let own_auth = nodes
        .iter()
        .find(|n| n.redis.password.is_some())
        .map(|n| n.redis.clone());
    let mut builder = redis::sentinel::SentinelClientBuilder::new(
        nodes.into_iter().map(|n| n.addr),
        sentinel.master.clone(),
        redis::sentinel::SentinelServerType::Master,
    )
    .map_err(error)?;
    if let Some(own) = own_auth {
        if let Some(password) = own.password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some(user) = own.username {
            builder = builder.set_client_to_sentinel_username(user);
        }
    }
    if sentinel.tls {
        builder = builder
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_certificates(certificates(tls)?)
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(certificates(tls)?);
    }
    if let Some(auth) = auth {
        builder = builder.set_client_to_redis_password(auth.password.clone());
        if let Some(user) = &auth.username {
            builder = builder.set_client_to_redis_username(user.clone());
        }
    }
    builder.build().map_err(error)
}

/// The roots and client certificate of `[state]`, as the Redis client takes them.
pub(super) fn certificates(tls: &RedisTls) -> Result<redis::TlsCertificates, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    let client_tls = match &tls.client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        None => None,
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}
