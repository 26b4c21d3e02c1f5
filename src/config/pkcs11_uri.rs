//! RFC 7512 `pkcs11:` URIs, as `response_signing.key` names a key in an HSM:
//! `pkcs11:token=fapigate;object=rs-1?module-path=/usr/lib/softhsm/libsofthsm2.so`.
//! Path attributes (`token`, `serial`, `object`, `id`) select the key; the query attribute
//! `module-path` names the PKCS#11 library. The PIN is never in the URI (`pin-value` is
//! refused): it comes from `response_signing.pin_file`.

use super::files;
use crate::policy::Pkcs11Uri;
use std::path::Path;

pub(super) fn parse(text: &str, base: &Path) -> Result<Pkcs11Uri, String> {
    let rest = text.strip_prefix("pkcs11:").ok_or("is not a pkcs11: URI")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut uri = Pkcs11Uri {
        text: text.to_string(),
        module: Default::default(),
        token: None,
        serial: None,
        object: None,
        id: None,
    };
    for attribute in path.split(';').filter(|a| !a.is_empty()) {
        let (name, value) = attribute
            .split_once('=')
            .ok_or_else(|| format!("the attribute \"{attribute}\" has no value"))?;
        let bytes = decode(value)?;
        let text = || {
            String::from_utf8(bytes.clone())
                .map_err(|_| format!("the {name} attribute is not UTF-8 text"))
        };
        match name {
            "token" => uri.token = Some(text()?),
            "serial" => uri.serial = Some(text()?),
            "object" => uri.object = Some(text()?),
            "id" => uri.id = Some(bytes),
            // What else RFC 7512 allows (manufacturer, model, type...) does not narrow
            // the search here: refused rather than ignored.
            other => return Err(format!("the path attribute \"{other}\" is not supported")),
        }
    }
    for attribute in query.split('&').filter(|a| !a.is_empty()) {
        let (name, value) = attribute
            .split_once('=')
            .ok_or_else(|| format!("the attribute \"{attribute}\" has no value"))?;
        match name {
            "module-path" => {
                let path = String::from_utf8(decode(value)?)
                    .map_err(|_| "module-path is not UTF-8 text".to_string())?;
                uri.module = files::resolve(base, &path);
            }
            "pin-value" | "pin-source" => {
                return Err(format!(
                    "{name} is not accepted: the PIN comes from response_signing.pin_file"
                ))
            }
            other => return Err(format!("the query attribute \"{other}\" is not supported")),
        }
    }
    if uri.module.as_os_str().is_empty() {
        return Err("names no module-path (the PKCS#11 library of the HSM)".into());
    }
    if !uri.module.is_file() {
        return Err(format!(
            "module-path {} is not a file",
            uri.module.display()
        ));
    }
    if uri.object.is_none() && uri.id.is_none() {
        return Err("names neither object nor id: which key is meant?".into());
    }
    Ok(uri)
}

/// RFC 3986 percent-decoding.
fn decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("\"{value}\" has a malformed %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7512_uris_name_the_token_the_key_and_the_module() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("libtoken.so");
        std::fs::write(&module, b"").unwrap();
        let text = format!(
            "pkcs11:token=bank%20hsm;object=rs-1;id=%01%02?module-path={}",
            module.display()
        );
        let uri = parse(&text, dir.path()).unwrap();
        assert_eq!(uri.token.as_deref(), Some("bank hsm"));
        assert_eq!(uri.object.as_deref(), Some("rs-1"));
        assert_eq!(uri.id, Some(vec![1, 2]));
        assert_eq!(uri.module, module);

        for (bad, why) in [
            ("pkcs11:object=a", "names no module-path"),
            (
                "pkcs11:token=t?module-path=libtoken.so",
                "names neither object nor id",
            ),
            (
                "pkcs11:object=a?module-path=libtoken.so&pin-value=1234",
                "pin-value is not accepted",
            ),
            (
                "pkcs11:object=%zz?module-path=libtoken.so",
                "malformed %-escape",
            ),
            (
                "pkcs11:model=x;object=a?module-path=libtoken.so",
                "\"model\" is not supported",
            ),
            ("pkcs11:object=a?module-path=missing.so", "is not a file"),
        ] {
            let error = parse(bad, dir.path()).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
