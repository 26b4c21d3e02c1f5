//! End-to-end tests: the real `fapigate` binary, real TLS with client certificates, a real
//! HTTP upstream, a real authorization server (oidc-provider, `tests/as`), curl and openssl as
//! clients, all on 127.0.0.1. One test binary, so the gateway is built once.

mod audit_trail;
mod authorization;
mod bank;
mod binding;
mod certificates;
mod cli;
mod config_check;
mod deploy;
mod deploy_serving;
mod ecosystems;
mod evidence;
mod hostile;
mod hostile_timing;
mod hsm;
mod lifecycle;
mod observability;
mod openapi;
mod proxying;
mod rate_limits;
mod redis_chaos;
mod redis_cluster;
mod redis_sentinel;
mod redis_tcp;
mod redis_tls;
mod shared_state;
mod signing;
mod support;
mod tls;
mod tokens;
mod upstream_health;
