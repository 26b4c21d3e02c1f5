//! Non-repudiation: RFC 9421 HTTP Message Signatures with RFC 9530 digests (the FAPI 2.0
//! HTTP Signatures profile), the UK and Brazil response formats, the gateway's keys, and the
//! audit trail. Pure functions over bytes and headers; the proxy feeds them.

pub(crate) mod base;
pub(crate) mod digest;
pub(crate) mod httpsig;
pub(crate) mod jws;
pub(crate) mod keys;
pub(crate) mod pkcs11;
pub(crate) mod signer;
