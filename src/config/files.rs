//! Files and URLs named by the configuration, checked at load time so a bad path or a broken
//! key is a configuration error, never a failure on the first request.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

pub(super) fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| format!("{}: a certificate does not parse ({e})", path.display()))?;
    }
    Ok(certs)
}

/// Reads certificate revocation lists: PEM (`X509 CRL` blocks, any number) or one DER CRL.
/// Each must parse; its issuer and dates are read again for the expiry metric.
pub(crate) fn read_crls(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, String> {
    use rustls::pki_types::CertificateRevocationListDer;
    let bytes = read(path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: not a PEM CRL file ({e})", path.display()))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(format!("{}: holds no CRL", path.display()));
    }
    for crl in &crls {
        x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| format!("{}: a CRL does not parse ({e})", path.display()))?;
    }
    Ok(crls)
}

/// Reads a PEM private key. A key that other users can read is refused: the gateway's keys
/// are what makes its signatures and its TLS identity worth anything.
pub(crate) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    refuse_world_readable(path)?;
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: not a PEM private key ({e})", path.display()))
}

#[cfg(unix)]
pub(crate) fn refuse_world_readable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).map_err(|e| format!("{}: cannot read ({e})", path.display()))?;
    if metadata.permissions().mode() & 0o007 != 0 {
        return Err(format!(
            "{}: private key is accessible to other users (mode {:o}); chmod 600 it",
            path.display(),
            metadata.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn refuse_world_readable(_path: &Path) -> Result<(), String> {
    Ok(())
}

pub(super) fn read_jwks(path: &Path) -> Result<jsonwebtoken::jwk::JwkSet, String> {
    let bytes = read(path)?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a JWK set ({e})", path.display()))?;
    if set.keys.is_empty() {
        return Err(format!("{}: the JWK set has no keys", path.display()));
    }
    Ok(set)
}

pub(super) fn read_secret(path: &Path) -> Result<(), String> {
    read_key_material(path, 1)
}

/// A secret used as a MAC key: at least `min_bytes` once surrounding whitespace is trimmed.
pub(super) fn read_key_material(path: &Path, min_bytes: usize) -> Result<(), String> {
    refuse_world_readable(path)?;
    let bytes = read(path)?;
    let length = bytes.trim_ascii().len();
    if length == 0 {
        return Err(format!("{}: the secret file is empty", path.display()));
    }
    if length < min_bytes {
        return Err(format!(
            "{}: holds {length} bytes; a MAC key needs at least {min_bytes}",
            path.display()
        ));
    }
    Ok(())
}

/// Reads a signing key: a PEM private key, or a JWK file holding the private half.
pub(super) fn read_signing_key(path: &Path) -> Result<(), String> {
    if path.extension().is_some_and(|e| e == "json" || e == "jwk") {
        refuse_world_readable(path)?;
        let bytes = read(path)?;
        let jwk: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a JWK ({e})", path.display()))?;
        if jwk.get("d").is_none() {
            return Err(format!(
                "{}: the JWK holds no private key (\"d\")",
                path.display()
            ));
        }
        return Ok(());
    }
    read_private_key(path).map(|_| ())
}

/// The largest file the configuration may name (keys, certificates, key sets, secrets):
/// far above any real one, small enough that a wrong path cannot exhaust memory.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads a file the configuration names. Only regular files: a FIFO, a device such as
/// /dev/zero or a directory would block, never end, or mean nothing.
pub(super) fn read(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("{}: cannot read ({e})", path.display());
    let metadata = std::fs::metadata(path).map_err(cannot)?;
    if !metadata.is_file() {
        return Err(format!("{}: is not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: is larger than {} MiB",
            path.display(),
            MAX_FILE_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// Outbound URLs must be https, except on loopback addresses (tests and sidecars).
pub(super) fn check_outbound_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("\"{url}\" is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("\"{url}\" has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        Some("http") => Err(format!(
            "\"{url}\" must use https (plain http is allowed only on loopback addresses)"
        )),
        _ => Err(format!("\"{url}\" must be an https URL")),
    }
}

pub(super) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sp2_net_1_outbound_urls_are_https_except_loopback() {
        assert!(check_outbound_url("https://as.bank.example/jwks").is_ok());
        assert!(check_outbound_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_outbound_url("http://[::1]:8080/jwks").is_ok());
        assert!(check_outbound_url("http://as.bank.example/jwks").is_err());
        assert!(check_outbound_url("ftp://as.bank.example/jwks").is_err());
        assert!(check_outbound_url("not a url").is_err());
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let error = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(error, "/dev/zero: is not a regular file");
        let dir = std::env::temp_dir();
        assert!(read(&dir).unwrap_err().ends_with("is not a regular file"));
        let mut big = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut big, &vec![b'x'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        assert!(read(big.path())
            .unwrap_err()
            .ends_with("is larger than 4 MiB"));
    }
}
