//! fapigate: a FAPI 2.0 / FAPI 1.0 Advanced resource-server gateway on Pingora.
//!
//! The FAPI core (`policy`, `credential`, `token`, `binding`, `signing`, `enforce`, `reject`)
//! decides from plain request facts plus injected stores and a clock: an
//! `enforce::Admission` or a typed `reject::Rejection`. `proxy` is the thin Pingora adapter
//! around it; `server` wires the listeners, the admin endpoint and the lifecycle (reload,
//! drain).
//!
//! The modules are private. What the binary, the benches, the quickstart and the tests use is
//! the list below; everything else is `pub(crate)` at most, which `unreachable_pub` keeps so.
#![warn(unreachable_pub)]

mod access_log;
mod admin;
mod audit;
mod binding;
mod certificates;
mod clock;
mod config;
mod credential;
mod encoding;
mod enforce;
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod gateway_headers;
mod grant;
mod interaction;
mod limiter;
mod notify;
mod openapi;
mod policy;
mod proxy;
mod reject;
mod request;
#[cfg(test)]
mod requirements;
mod server;
mod signing;
mod sockets;
mod startup;
mod state;
mod telemetry;
mod tls;
mod token;
mod trace;
mod upstreams;

// Running the gateway: `fapigate check | jwks | run | healthcheck` (src/main.rs,
// deploy/quickstart.rs).
pub use admin::healthcheck;
pub use binding::LocalState;
pub use config::{
    load as load_config, load_str as load_config_str, read_certificates, ConfigErrors,
};
pub use enforce::Engine;
// `fapigate routes --from-openapi`.
pub use openapi::draft_routes;
pub use policy::{Pkcs11Uri, Policy};
pub use server::run;

/// What `fapigate check` warns about in a valid configuration: a certificate that expires
/// within 30 days (or a CRL due for its next update), a listener certificate whose names do
/// not cover the `public_url` host.
pub fn certificate_warnings(policy: &Policy) -> Vec<String> {
    certificates::warnings(policy, clock::unix_seconds())
}
pub use signing::signer::ResponseSigner;
pub use startup::StartError;
pub use telemetry::{init_logging, Metrics};
pub use tls::{fapi_crypto_provider, install_crypto_provider};

/// `fapigate audit verify`: the audit trail's line format and its verifier.
pub mod audit_trail {
    pub use crate::audit::chain::{hash_line, verify, verify_files, Checks, MacKey, Verified};
    pub use crate::audit::head_file_path;
}

/// RFC 9421 HTTP Message Signatures and RFC 9530 digests as the gateway computes them, for
/// the benches and the quickstart's own check of a signed answer.
pub mod http_signatures {
    pub use crate::signing::base::{
        component, serialize_inner_list, signature_base, signature_params, MessageView,
    };
    pub use crate::signing::digest::{content_digest, verify_content_digest};
    pub use crate::signing::httpsig::{
        sign_response, RequestBinding, VerifiedSignature, REQUEST_TAG, RESPONSE_TAG,
    };
    pub use crate::signing::keys::{verify_with, HttpSigAlg, SigningKey};
}

/// The FAPI stages one by one, for the benches that time them and the tests that build
/// their inputs.
pub mod stages {
    pub use crate::binding::thumbprint::jkt;
    pub use crate::binding::{dpop, Binder, Bound};
    pub use crate::credential::{Credential, Scheme};
    pub use crate::grant::{Confirmation, Grant};
    pub use crate::policy::authorize::{authorize, RequestView};
    pub use crate::policy::RouteMatch;
    pub use crate::reject::Rejection;
    pub use crate::request::{RequestFacts, X5tS256};
    pub use crate::state::replay::{FirstUse, MemoryReplayStore, ProofRecord, ReplayStore};
    pub use crate::token::jwks::KeySet;
    pub use crate::token::jwt::{looks_like_jwt, verify_access_token, JwtIssuer};
    pub use crate::token::Tokens;
}
