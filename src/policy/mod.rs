//! The compiled policy: what the gateway runs on. Built only by `config::compile` from a file
//! that passed every check, so nothing downstream re-validates: templates are parsed, addresses
//! resolved, durations typed, keys and certificates already read.

pub(crate) mod authorize;
pub(crate) mod consent;
pub(crate) mod decimal;
pub(crate) mod json;
pub(crate) mod limits;
mod operands;
pub(crate) mod path;
pub(crate) mod rar;
pub(crate) mod routes;

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use routes::RouteMatch;
pub(crate) use routes::RouteTable;

#[derive(Debug)]
pub struct Policy {
    pub listener: ListenerPolicy,
    pub admin_addr: SocketAddr,
    pub server: ServerPolicy,
    pub log: LogPolicy,
    pub profile: Profile,
    pub issuers: Vec<IssuerPolicy>,
    pub state: StatePolicy,
    pub response_signing: Option<ResponseSigningPolicy>,
    pub audit: Option<AuditPolicy>,
    pub clients: Vec<ClientPolicy>,
    pub upstreams: Vec<Arc<UpstreamPolicy>>,
    pub forward: ForwardPolicy,
    pub routes: RouteTable,
    pub rate_limits: Vec<limits::RateLimit>,
}

/// How long a body may take before `body_min_rate` applies (Kestrel's is 5 s).
pub(crate) const BODY_RATE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct ListenerPolicy {
    pub addr: SocketAddr,
    pub public_url: PublicUrl,
    pub tls: Option<TlsPolicy>,
    pub plain_addr: Option<SocketAddr>,
    pub trusted_proxies: Vec<IpNet>,
    /// The whole request body must arrive within this (408 after).
    pub body_timeout: Duration,
    /// Bytes per second a body must keep up after [`BODY_RATE_GRACE`] (408 below; 0: none).
    pub body_min_rate: u64,
    /// The whole request head must arrive within this of the connection opening or of the
    /// next request's first byte; the connection is closed after.
    pub header_timeout: Duration,
    /// A keep-alive connection waiting longer than this for its next request is closed.
    pub idle_timeout: Duration,
}

impl Policy {
    /// This deployment's prefix of keys in Redis: `[state] namespace`, or the `public_url`
    /// authority and path (two deployments with one Redis do not read each other's values).
    /// The claims some rule reads: the only ones a grant keeps (in memory, in Redis).
    pub fn claims_read(&self) -> std::collections::BTreeSet<String> {
        self.routes
            .iter()
            .flat_map(|route| route.operands())
            .filter_map(|operand| match operand {
                rar::Operand::Claim(pointer) => pointer.first().map(str::to_string),
                _ => None,
            })
            .collect()
    }

    pub fn state_namespace(&self) -> String {
        self.state.namespace.clone().unwrap_or_else(|| {
            let url = &self.listener.public_url;
            format!("{}{}", url.authority, url.base_path)
        })
    }
}

impl ListenerPolicy {
    /// RFC 9440 `Client-Cert` is believed only from these peers (CC-4).
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

/// The external URL clients use: `scheme://authority[/base]`, normalised per RFC 3986
/// §6.2.2/§6.2.3 (lowercase scheme and host, default port dropped, no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    pub scheme: String,
    pub authority: String,
    /// The authority as a header value: the upstream's `Host` and `X-Forwarded-Host`.
    pub host: http::HeaderValue,
    pub base_path: String,
}

/// Where RFC 9728 protected resource metadata is served on the listener.
pub(crate) const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl PublicUrl {
    /// The resource identifier (RFC 9728 `resource`).
    pub fn resource(&self) -> String {
        format!("{}://{}{}", self.scheme, self.authority, self.base_path)
    }

    /// The URL of a request path as a client addressed it (DPoP `htu`, RFC 9421 `@target-uri`).
    pub fn join(&self, path: &str) -> String {
        format!(
            "{}://{}{}{}",
            self.scheme, self.authority, self.base_path, path
        )
    }

    /// The request's whole target URI as the client addressed it, query included (RFC 9421
    /// `@target-uri`).
    pub fn target_uri(&self, path: &str, query: Option<&str>) -> String {
        let mut uri = self.join(path);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        uri
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Ask every client and accept any certificate, self-signed included (RFC 8705 §6.2).
    Request,
    /// Refuse the handshake without a certificate.
    Require,
    /// Never ask.
    Off,
}

#[derive(Debug)]
pub struct TlsPolicy {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: ClientCertMode,
    /// Trust roots for client certificates; `None` accepts any certificate whose holder proves
    /// possession of its key.
    pub client_ca: Option<PathBuf>,
    /// CRLs of those roots: a revoked client certificate fails the handshake.
    pub client_crl: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerPolicy {
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `/readyz` says 503 while the listeners still accept, so that
    /// load balancers stop sending before the gateway stops listening.
    pub drain_delay: Duration,
}

#[derive(Debug, Clone)]
pub struct LogPolicy {
    pub json: bool,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// FAPI 2.0 Security Profile: DPoP- or mTLS-bound tokens.
    Fapi2,
    /// FAPI 1.0 Advanced: mTLS-bound tokens only.
    Fapi1Advanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    PS256,
    ES256,
    EdDSA,
}

impl Alg {
    /// The same algorithm for the JOSE library (tokens, proofs, introspection responses).
    pub(crate) fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::PS256 => jsonwebtoken::Algorithm::PS256,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    pub fn parse(name: &str) -> Option<Alg> {
        match name {
            "PS256" => Some(Alg::PS256),
            "ES256" => Some(Alg::ES256),
            "EdDSA" => Some(Alg::EdDSA),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::PS256 => "PS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub kind: ProfileKind,
    pub algs: Vec<Alg>,
    pub max_clock_skew: Duration,
    pub dpop_proof_max_age: Duration,
    pub dpop_nonce_required: bool,
    pub dpop_nonce_secret_file: Option<PathBuf>,
    pub request_signature_max_age: Duration,
    pub interaction_id: bool,
}

impl Profile {
    /// The `algs` challenge parameter: the profile's algorithms, space separated.
    pub fn algs_parameter(&self) -> String {
        let names: Vec<&str> = self.algs.iter().map(|a| a.name()).collect();
        names.join(" ")
    }
}

#[derive(Debug)]
pub enum KeySet {
    Url {
        url: String,
        ca_file: Option<PathBuf>,
    },
    File(PathBuf),
}

#[derive(Debug)]
pub struct IssuerPolicy {
    pub id: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: KeySet,
    pub jwks_refresh: Duration,
    pub introspection: Option<IntrospectionPolicy>,
}

#[derive(Debug)]
pub enum IntrospectionAuth {
    PrivateKeyJwt {
        key: PathBuf,
        key_id: Option<String>,
    },
    TlsClientAuth {
        cert: PathBuf,
        key: PathBuf,
    },
    ClientSecretBasic {
        secret_file: PathBuf,
    },
}

#[derive(Debug)]
pub struct IntrospectionPolicy {
    pub endpoint: String,
    pub client_id: String,
    pub auth: IntrospectionAuth,
    pub signed_response: bool,
    pub cache_max_ttl: Duration,
    pub timeout: Duration,
    /// Introspection calls in flight at once; beyond, 503 with `Retry-After`.
    pub max_outstanding: usize,
    /// Opaque tokens this AS issues start with it; the only tokens sent to it when set.
    pub token_prefix: Option<String>,
}

#[derive(Debug)]
pub enum StateBackend {
    Memory,
    Redis(Box<RedisPolicy>),
}

/// How the gateway reaches Redis: one of a node URL, cluster nodes or Sentinel.
#[derive(Debug)]
pub struct RedisPolicy {
    pub url: String,
    pub cluster_nodes: Vec<String>,
    pub timeout: Duration,
    pub tls: RedisTls,
    /// Redis Sentinel: the master is looked up, and looked up again after a failover.
    pub sentinel: Option<SentinelPolicy>,
    /// AUTH for the master Sentinel names or for the cluster nodes.
    pub auth: Option<RedisAuth>,
    /// Replicas that must acknowledge a replay record before its proof is admitted.
    pub replica_acks: u32,
}

/// A Redis user and password (`AUTH`); the password is never printed.
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug)]
pub struct SentinelPolicy {
    /// `redis://` or `rediss://host:port` of the sentinels.
    pub nodes: Vec<String>,
    /// The monitored master's name.
    pub master: String,
    /// `rediss://` sentinels: the sentinels and the master they name are reached over TLS.
    pub tls: bool,
}

/// How `rediss://` nodes are verified and what the gateway presents to them.
#[derive(Debug, Default)]
pub struct RedisTls {
    /// PEM roots; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM files).
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug)]
pub struct StatePolicy {
    pub backend: StateBackend,
    pub token_cache_entries: u64,
    pub replay_cache_entries: u64,
    /// The most records one DPoP key may hold at a time, in either store.
    pub replay_entries_per_key: u64,
    /// The MAC key of shared introspection verdicts; without one, verdicts are not shared.
    pub verdict_key_file: Option<PathBuf>,
    /// This deployment's prefix in Redis; `None`: derived from `public_url`.
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    HttpSignature,
    JwsDetached,
    Jwt,
}

impl ResponseFormat {
    /// Every format: a new one is added here and in the matches the compiler then names.
    pub const ALL: [ResponseFormat; 3] = [
        ResponseFormat::HttpSignature,
        ResponseFormat::JwsDetached,
        ResponseFormat::Jwt,
    ];

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ResponseFormat::HttpSignature => "http-signature",
            ResponseFormat::JwsDetached => "jws-detached",
            ResponseFormat::Jwt => "jwt",
        }
    }

    /// The `response_signing.alg` values it signs with.
    pub fn algs(self) -> &'static [&'static str] {
        match self {
            ResponseFormat::HttpSignature => &["ed25519", "ecdsa-p256-sha256", "rsa-pss-sha512"],
            ResponseFormat::JwsDetached | ResponseFormat::Jwt => &["PS256", "ES256"],
        }
    }

    pub fn parse(name: &str) -> Option<ResponseFormat> {
        ResponseFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// `"\"x\" is not one of \"http-signature\", …"`, for configuration errors.
    pub fn unknown(name: &str) -> String {
        let names: Vec<String> = ResponseFormat::ALL
            .iter()
            .map(|f| format!("\"{}\"", f.name()))
            .collect();
        format!("\"{name}\" is not one of {}", names.join(", "))
    }
}

#[derive(Debug)]
pub struct ResponseSigningPolicy {
    pub format: ResponseFormat,
    /// A key file; unused when `hsm` names the key.
    pub key: PathBuf,
    /// The key in a PKCS#11 token, and the file holding the token's user PIN.
    pub hsm: Option<(Pkcs11Uri, PathBuf)>,
    pub key_id: String,
    pub alg: String,
    pub max_body: u64,
    pub jwks_path: String,
    pub additional_keys: Vec<(PathBuf, String, String)>,
    pub issuer: String,
    pub trust_anchor: String,
}

/// An RFC 7512 `pkcs11:` URI: which token and object, and the module that reaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// As written, for messages.
    pub text: String,
    pub module: PathBuf,
    pub token: Option<String>,
    pub serial: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    EveryRecord,
    Interval,
}

#[derive(Debug)]
pub struct AuditPolicy {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    /// The HMAC key of every line (`audit.key_file`).
    pub key_file: Option<PathBuf>,
    /// A signed checkpoint after this many records, or this long after the last one.
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// Records waiting for the writer, at most.
    pub queue: usize,
    pub on_full: OnFull,
    /// A new file (the old one renamed with its time) past this size, and at each UTC day.
    pub rotate_size: Option<u64>,
    pub rotate_daily: bool,
}

/// What a signed request does when the audit queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Waits for a place this long at most, then 503.
    Wait(Duration),
    /// 503 at once.
    Refuse,
}

#[derive(Debug)]
pub struct ClientPolicy {
    pub client_id: String,
    pub jwks: KeySet,
}

/// Trust roots for one upstream's TLS, as read from `ca_file`.
pub(crate) type TrustRoots = Arc<[rustls::pki_types::CertificateDer<'static>]>;

#[derive(Debug)]
pub struct UpstreamPolicy {
    pub id: String,
    /// One address per `addrs` entry: the first its name resolved to at load.
    pub addrs: Vec<SocketAddr>,
    /// The `addrs` entries as written (`host:port`), resolved again every `resolve_every`.
    pub targets: Vec<String>,
    pub health: UpstreamHealth,
    pub tls: bool,
    pub sni: String,
    /// Trust roots from `ca_file`; `None` uses the system roots.
    pub ca: Option<TrustRoots>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// The `Host` the upstream gets: `None` is the `public_url` authority (what clients
    /// address), `Some` the upstream's own address (`host_header = "upstream"`).
    pub host: Option<http::HeaderValue>,
}

/// Passive health and re-resolution of an upstream's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// Consecutive failed connections that take an address out (0: never).
    pub eject_after: u32,
    /// How long an address stays out before it is tried again.
    pub eject_for: Duration,
    /// How often names are resolved again (zero: never).
    pub resolve_every: Duration,
}

impl Default for UpstreamHealth {
    fn default() -> Self {
        UpstreamHealth {
            eject_after: 3,
            eject_for: Duration::from_secs(10),
            resolve_every: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ForwardPolicy {
    pub subject_header: http::HeaderName,
    pub client_id_header: http::HeaderName,
    pub authorization_details_header: http::HeaderName,
}

impl ForwardPolicy {
    /// Headers the gateway alone may set towards the upstream; incoming copies are removed.
    pub fn owned_headers(&self) -> [&http::HeaderName; 3] {
        [
            &self.subject_header,
            &self.client_id_header,
            &self.authorization_details_header,
        ]
    }
}
