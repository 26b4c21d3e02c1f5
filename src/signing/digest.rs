//! RFC 9530 `Content-Digest`: created with sha-256, checked with sha-256 or sha-512. The
//! deprecated algorithms (md5, sha, unixsum, unixcksum, adler, crc32c) never count (DIG-5).

use aws_lc_rs::digest::{digest, SHA256, SHA512};
use base64::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestError {
    /// The header is not a Structured Field Dictionary of byte sequences.
    Malformed,
    /// No sha-256 or sha-512 member.
    NoUsableAlgorithm,
    /// A sha-256/sha-512 member does not match the content.
    Mismatch,
}

/// `sha-256=:<base64>:` of the content.
pub fn content_digest(body: &[u8]) -> String {
    let mut value = String::with_capacity(55);
    value.push_str("sha-256=:");
    base64::engine::general_purpose::STANDARD
        .encode_string(digest(&SHA256, body).as_ref(), &mut value);
    value.push(':');
    value
}

/// Recomputes every active algorithm the header names and compares (HS2-REQ-RS-8).
pub fn verify_content_digest(header: &str, body: &[u8]) -> Result<(), DigestError> {
    let dictionary =
        sfv::Parser::parse_dictionary(header.as_bytes()).map_err(|_| DigestError::Malformed)?;
    let mut checked = 0;
    for (name, entry) in &dictionary {
        let sfv::ListEntry::Item(item) = entry else {
            return Err(DigestError::Malformed);
        };
        let Some(value) = item.bare_item.as_byte_seq() else {
            return Err(DigestError::Malformed);
        };
        let expected = match name.as_str() {
            "sha-256" => digest(&SHA256, body),
            "sha-512" => digest(&SHA512, body),
            _ => continue,
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), value).is_err() {
            return Err(DigestError::Mismatch);
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(DigestError::NoUsableAlgorithm);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &[u8] = br#"{"hello": "world"}"#;

    #[test]
    fn rfc9530_sha_256_example() {
        assert_eq!(
            content_digest(HELLO),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
    }

    #[test]
    fn rfc9530_and_rfc9421_sha_512_examples_verify() {
        let header = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        assert_eq!(verify_content_digest(header, HELLO), Ok(()));
        let both = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        assert_eq!(verify_content_digest(both, HELLO), Ok(()));
        assert_eq!(
            verify_content_digest(header, br#"{"hello": "World"}"#),
            Err(DigestError::Mismatch)
        );
    }

    #[test]
    fn dig_5_deprecated_algorithms_do_not_count() {
        assert_eq!(
            verify_content_digest("md5=:HUXZLQLMuI/KZ5KDcJPcOA==:", HELLO),
            Err(DigestError::NoUsableAlgorithm)
        );
        assert_eq!(
            verify_content_digest("not a dictionary(", HELLO),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            verify_content_digest("sha-256=1", HELLO),
            Err(DigestError::Malformed)
        );
    }
}
