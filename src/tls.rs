//! The FAPI TLS crypto provider (SP2-NET-1..6, FAPI1-ADV-4): TLS 1.3, and TLS 1.2 with the
//! BCP 195 suites only. The listener and every outbound client (upstreams, the authorization
//! server, Redis) use it.

use rustls::crypto::CryptoProvider;

/// The rustls provider restricted to the FAPI cipher suites.
pub fn fapi_crypto_provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    }
}

/// Makes it the process-wide default. Pingora installs its own default only when none is
/// set, so this must run first thing in `main`; outbound connections made without an explicit
/// provider get it too.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (a second call in tests): keep it.
    let _ = fapi_crypto_provider().install_default();
}
