//! fapigate: a FAPI 2.0 / FAPI 1.0 Advanced resource-server gateway on Pingora.
//!
//! The FAPI core (`policy`, `credential`, `enforce`, `reject`, `interaction`) is sans-IO: plain
//! request facts in, an [`enforce::Admission`] or a typed [`reject::Rejection`] out. `proxy`
//! is the thin Pingora adapter around it; `server` wires the listeners, the admin endpoint and
//! the lifecycle (reload, drain).

pub mod admin;
pub mod audit;
pub mod binding;
pub mod clock;
pub mod config;
pub mod credential;
pub mod encoding;
pub mod enforce;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod grant;
pub mod interaction;
pub mod policy;
pub mod proxy;
pub mod reject;
pub mod request;
#[cfg(test)]
mod requirements;
pub mod server;
pub mod signing;
pub mod sockets;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod token;
