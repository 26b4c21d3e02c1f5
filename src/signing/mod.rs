//! Non-repudiation: RFC 9421 HTTP Message Signatures with RFC 9530 digests (the FAPI 2.0
//! HTTP Signatures profile), the UK and Brazil response formats, the gateway's keys, and the
//! audit trail. Pure functions over bytes and headers; the proxy feeds them.

pub mod base;
pub mod digest;
pub mod httpsig;
pub mod jws;
pub mod keys;
pub mod pkcs11;
pub mod signer;
