//! The TOML file as written by operators: a faithful serde mirror of
//! `conf/fapigate.example.toml`. Nothing here is trusted yet; `compile` turns it into a
//! [`crate::policy::Policy`]. Every struct refuses unknown keys so a typo is an error, not a
//! silently ignored setting.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    pub listener: Listener,
    pub admin: Admin,
    pub profile: Profile,
    #[serde(default)]
    pub server: Option<Server>,
    #[serde(default)]
    pub issuer: Vec<Issuer>,
    #[serde(default)]
    pub state: Option<State>,
    #[serde(default)]
    pub response_signing: Option<ResponseSigning>,
    #[serde(default)]
    pub audit: Option<Audit>,
    #[serde(default)]
    pub client: Vec<Client>,
    #[serde(default)]
    pub upstream: Vec<Upstream>,
    #[serde(default)]
    pub forward: Option<Forward>,
    #[serde(default)]
    pub route: Vec<Route>,
    #[serde(default)]
    pub log: Option<Log>,
    #[serde(default)]
    pub rate_limit: Vec<RateLimit>,
    /// Route packs (files of `[[route]]` tables), relative to this file.
    #[serde(default)]
    pub include: Vec<String>,
    /// A pack's upstream name -> this file's `[[upstream]]` id.
    #[serde(default)]
    pub pack_upstreams: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub addr: String,
    pub public_url: String,
    pub tls: Option<ListenerTls>,
    pub forwarded: Option<Forwarded>,
    /// An extra plain-HTTP listener, for deployments behind a TLS terminator.
    pub plain_addr: Option<String>,
    /// How long a request body may take to arrive whole (`"10s"`).
    pub body_timeout: Option<String>,
    /// The slowest a request body the gateway reads may arrive, in bytes per second, after
    /// a grace of 2 s (240; 0: no minimum).
    pub body_min_rate: Option<u64>,
    /// How long a request head may take to arrive whole (`"10s"`).
    pub header_timeout: Option<String>,
    /// How long a keep-alive connection may wait for its next request (`"30s"`).
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerTls {
    pub cert: String,
    pub key: String,
    pub client_cert: Option<String>,
    pub client_ca: Option<String>,
    /// Revocation lists of the `client_ca` authorities (PEM or DER files).
    #[serde(default)]
    pub client_crl: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forwarded {
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub threads: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub drain_delay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Log {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    pub name: String,
    pub algs: Option<Vec<String>>,
    pub max_clock_skew: Option<String>,
    pub dpop_proof_max_age: Option<String>,
    pub dpop_nonce: Option<String>,
    /// The nonce MAC key, shared by replicas; generated per process when absent.
    pub dpop_nonce_secret_file: Option<String>,
    /// How old a request's HTTP message signature (`created`) may be.
    pub request_signature_max_age: Option<String>,
    pub interaction_id: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(crate) fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value.clone()],
            OneOrMany::Many(values) => values.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Issuer {
    pub id: String,
    pub issuer: String,
    pub audience: OneOrMany,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_refresh: Option<String>,
    pub ca_file: Option<String>,
    pub introspection: Option<Introspection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Introspection {
    pub endpoint: String,
    pub client_id: String,
    pub auth: String,
    pub key: Option<String>,
    pub key_id: Option<String>,
    pub cert: Option<String>,
    pub secret_file: Option<String>,
    pub signed_response: Option<bool>,
    pub cache_max_ttl: Option<String>,
    pub timeout: Option<String>,
    /// Introspection calls in flight at once (64); beyond, requests get 503.
    pub max_outstanding: Option<usize>,
    /// The prefix of this AS's opaque tokens: required when more than one issuer introspects.
    pub token_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub backend: Option<String>,
    pub redis_url: Option<String>,
    /// A file holding the Redis URL (with its password), e.g. a mounted Secret.
    pub redis_url_file: Option<String>,
    /// Redis Cluster seed nodes (`redis://host:port`); when set, cluster mode is used.
    pub redis_cluster_nodes: Option<Vec<String>>,
    /// Redis Sentinel nodes (`redis://` or `rediss://host:port`) and the name of the master
    /// they monitor.
    pub redis_sentinel_nodes: Option<Vec<String>>,
    pub redis_sentinel_master: Option<String>,
    /// The AUTH password (a file) and ACL user of the master Sentinel names or of the cluster
    /// nodes; a single `redis_url` carries its own.
    pub redis_password_file: Option<String>,
    pub redis_username: Option<String>,
    pub redis_timeout: Option<String>,
    /// How many replicas must hold a DPoP replay record (`WAIT`) before its proof is admitted:
    /// 1 with Sentinel, 0 otherwise.
    pub redis_replica_acks: Option<u32>,
    pub token_cache_entries: Option<u64>,
    pub replay_cache_entries: Option<u64>,
    /// The most replay records one DPoP key may hold (default 1/16 of the store).
    pub replay_entries_per_key: Option<u64>,
    /// PEM roots that `rediss://` servers must chain to (default: the system's roots).
    pub redis_ca_file: Option<String>,
    /// A client certificate and key for Redis servers that require one.
    pub redis_client_cert: Option<String>,
    pub redis_client_key: Option<String>,
    /// Allows plain `redis://` to a host that is not this machine.
    pub redis_insecure: Option<bool>,
    /// The MAC key of shared introspection verdicts (at least 32 bytes; never sent to Redis).
    pub verdict_key_file: Option<String>,
    /// The prefix of this deployment's keys in Redis (default: from `public_url`).
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseSigning {
    pub format: Option<String>,
    pub key: String,
    pub key_id: String,
    pub alg: String,
    pub max_body: Option<String>,
    pub jwks_path: Option<String>,
    /// Keys published in the JWKS besides the active one (the next key before it signs, the
    /// previous one while responses signed with it are still verified).
    #[serde(default)]
    pub additional_keys: Vec<PublishedKey>,
    /// `iss` of detached JWS (UK: the ASPSP's orgId) and JWT bodies (Brazil: organisationId).
    pub issuer: Option<String>,
    /// UK Open Banking `tan` (trust anchor) of detached JWS.
    pub trust_anchor: Option<String>,
    /// The user PIN of the PKCS#11 token when `key` is a `pkcs11:` URI.
    pub pin_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishedKey {
    pub key: String,
    pub key_id: String,
    pub alg: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Audit {
    pub path: String,
    pub fsync: Option<String>,
    /// The HMAC-SHA-256 key of every line (at least 32 bytes).
    pub key_file: Option<String>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_interval: Option<String>,
    pub queue: Option<u64>,
    /// `"wait"` (up to `wait_max`) or `"refuse"`.
    pub on_full: Option<String>,
    pub wait_max: Option<String>,
    /// A new file once this one holds this much (`"100MiB"`), and/or at each UTC day.
    pub rotate_size: Option<String>,
    pub rotate_daily: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Client {
    pub client_id: String,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub id: String,
    pub addrs: Vec<String>,
    pub tls: Option<bool>,
    pub sni: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    /// `"public_url"` (default) or `"upstream"`: what the upstream gets as `Host`.
    pub host_header: Option<String>,
    pub eject_after: Option<u32>,
    pub eject_for: Option<String>,
    pub resolve_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forward {
    pub subject_header: Option<String>,
    pub client_id_header: Option<String>,
    pub authorization_details_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub id: String,
    pub methods: Vec<String>,
    pub path: String,
    pub upstream: String,
    pub auth: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub authorization_details: Vec<DetailRequirement>,
    pub sign_response: Option<bool>,
    pub response_format: Option<String>,
    pub verify_request_signature: Option<bool>,
    pub acr_values: Option<Vec<String>>,
    pub max_auth_age: Option<String>,
    /// Whether the upstream receives the client's `Authorization` header (default false).
    pub forward_token: Option<bool>,
    /// The route's own rules: operand -> one comparison with another operand.
    #[serde(rename = "match", default)]
    pub rules: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// A scope shape such as `consent:{consent_id}`, captured as `{scope.consent_id}`.
    pub consent_scope: Option<String>,
    #[serde(default)]
    pub require_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DetailRequirement {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub datatypes: Vec<String>,
    /// JSON pointer into the detail -> one comparison.
    #[serde(rename = "match", default)]
    pub rules: BTreeMap<String, BTreeMap<String, toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimit {
    pub id: String,
    /// `client_id`, `certificate` or `peer_ip`.
    pub by: String,
    /// `"20/s"`, `"600/m"`, `"10000/h"`.
    pub rate: String,
    pub burst: Option<u64>,
    /// Route ids; default every route the key applies to.
    pub routes: Option<Vec<String>>,
    pub shared: Option<bool>,
    #[serde(default)]
    pub clients: BTreeMap<String, ClientRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientRate {
    pub rate: String,
    pub burst: Option<u64>,
}
