//! Small encodings and key-size rules every stage shares, kept out of the stages so that none
//! borrows them from another (the audit trail and the token cache used to take `hex` from the
//! Redis module).

use base64::Engine;

/// SP2-CRY-4: the smallest RSA key accepted or used.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// Lowercase hex, for hashes in keys, logs and the audit trail.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Lowercase hex of `bytes`, appended to `out` (by table: `core::fmt` per byte cost about a
/// microsecond on each request's trace ids).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

/// The size in bits of an RSA modulus given as a JWK `n` (base64url), leading zeros not
/// counted; `None` when it is not base64url.
pub(crate) fn rsa_modulus_bits(n: &str) -> Option<usize> {
    let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    Some(significant_bits(&modulus))
}

/// The bits of a big-endian unsigned integer, leading zeros not counted.
pub(crate) fn significant_bits(bytes: &[u8]) -> usize {
    let digits: Vec<&u8> = bytes.iter().skip_while(|b| **b == 0).collect();
    match digits.first() {
        None => 0,
        Some(top) => (digits.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// The scheme and authority of a URL normalised per RFC 3986 §6.2.2/§6.2.3: both in lower case,
/// the scheme's default port dropped. `None` for a scheme other than http(s) or no host.
pub(crate) fn normal_origin(uri: &http::Uri) -> Option<(String, String)> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = match uri.port_u16() {
        Some(port) if port != default_port => format!("{host}:{port}"),
        _ => host,
    };
    Some((scheme, authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), want);
    }

    #[test]
    fn sp2_cry_4_modulus_bits_ignore_leading_zeros() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut n = vec![0u8];
        n.extend([0xffu8; 256]);
        assert_eq!(rsa_modulus_bits(&b64.encode(&n)), Some(2048));
        assert_eq!(rsa_modulus_bits(&b64.encode([0xffu8; 255])), Some(2040));
        let mut short = vec![0x01u8];
        short.extend([0u8; 255]);
        assert_eq!(rsa_modulus_bits(&b64.encode(&short)), Some(2041));
        assert_eq!(rsa_modulus_bits("not base64!"), None);
    }
}
