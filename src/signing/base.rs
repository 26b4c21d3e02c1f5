//! The RFC 9421 signature base (§2.5): one line per covered component, then
//! `"@signature-params"`, built from a message and, for `;req` components of a response, the
//! request it answers (§2.4).

use http::HeaderMap;
use sfv::{BareItem, InnerList, Item, ListEntry, Parameters, SerializeValue};

/// What a message offers to the base: derived components and fields.
pub struct MessageView<'a> {
    pub method: Option<&'a str>,
    /// The full target URI: `scheme://authority/path?query`.
    pub target_uri: Option<&'a str>,
    pub status: Option<u16>,
    pub headers: &'a HeaderMap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseError {
    /// A covered component is not a string with known parameters.
    BadComponent(String),
    /// A covered component is absent from the message (§2.5: no base is produced).
    Missing(String),
    /// `;req` on a request, or a response component without its request.
    NoRequest,
    /// The same component is listed twice (§2).
    Duplicate(String),
}

/// The components and parameters of a signature, as they appear in `Signature-Input`.
pub fn signature_params(components: &[Item], params: Parameters) -> InnerList {
    InnerList::with_params(components.to_vec(), params)
}

/// `name` with parameters, e.g. `"@method";req`.
pub fn component(name: &str, params: &[(&str, BareItem)]) -> Item {
    let mut parameters = Parameters::new();
    for (key, value) in params {
        parameters.insert((*key).to_string(), value.clone());
    }
    Item::with_params(BareItem::String(name.to_string()), parameters)
}

/// Serialises an inner list with its parameters, as in `Signature-Input` after `label=`.
pub fn serialize_inner_list(list: &InnerList) -> String {
    let mut out = String::with_capacity(256);
    out.push('(');
    for (i, item) in list.items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if write_item(&mut out, item).is_none() {
            return fallback_inner_list(list);
        }
    }
    out.push(')');
    if write_params(&mut out, &list.params).is_none() {
        return fallback_inner_list(list);
    }
    out
}

fn fallback_inner_list(list: &InnerList) -> String {
    let mut dictionary = sfv::Dictionary::new();
    dictionary.insert("x".into(), ListEntry::InnerList(list.clone()));
    // Serialising a well-formed dictionary cannot fail; an empty string would then fail the
    // signature check instead of panicking.
    dictionary
        .serialize_value()
        .map(|s| s.trim_start_matches("x=").to_string())
        .unwrap_or_default()
}

/// RFC 8941 §4.1 serialisation of the bare items signatures use (strings, tokens,
/// integers, booleans, byte sequences); `None` for anything else, which takes the `sfv` path.
fn write_bare(out: &mut String, item: &BareItem) -> Option<()> {
    match item {
        BareItem::String(text) => {
            if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return None;
            }
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        BareItem::Integer(value) => out.push_str(&value.to_string()),
        BareItem::Boolean(value) => out.push_str(if *value { "?1" } else { "?0" }),
        BareItem::Token(token) => out.push_str(token),
        BareItem::ByteSeq(bytes) => {
            use base64::Engine;
            out.push(':');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push(':');
        }
        _ => return None,
    }
    Some(())
}

fn write_params(out: &mut String, params: &Parameters) -> Option<()> {
    for (key, value) in params {
        out.push(';');
        out.push_str(key);
        if *value != BareItem::Boolean(true) {
            out.push('=');
            write_bare(out, value)?;
        }
    }
    Some(())
}

fn write_item(out: &mut String, item: &Item) -> Option<()> {
    write_bare(out, &item.bare_item)?;
    write_params(out, &item.params)
}

/// Builds the signature base for `list` over `message` (and `request` for `;req`).
pub fn signature_base(
    list: &InnerList,
    message: &MessageView<'_>,
    request: Option<&MessageView<'_>>,
) -> Result<String, BaseError> {
    let mut base = String::new();
    let mut seen: Vec<String> = Vec::new();
    for item in &list.items {
        let identifier = serialize_item(item)?;
        if seen.contains(&identifier) {
            return Err(BaseError::Duplicate(identifier));
        }
        let name = item
            .bare_item
            .as_str()
            .ok_or_else(|| BaseError::BadComponent(identifier.clone()))?;
        let wants_request = item.params.get("req").and_then(BareItem::as_bool) == Some(true);
        let source = if wants_request {
            if message.status.is_none() {
                return Err(BaseError::NoRequest);
            }
            request.ok_or(BaseError::NoRequest)?
        } else {
            message
        };
        let value = component_value(name, item, source, &identifier)?;
        base.push_str(&identifier);
        base.push_str(": ");
        base.push_str(&value);
        base.push('\n');
        seen.push(identifier);
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(&serialize_inner_list(list));
    Ok(base)
}

fn serialize_item(item: &Item) -> Result<String, BaseError> {
    let mut out = String::with_capacity(32);
    if write_item(&mut out, item).is_some() {
        return Ok(out);
    }
    let list: sfv::List = vec![ListEntry::Item(item.clone())];
    list.serialize_value()
        .map_err(|e| BaseError::BadComponent(e.to_string()))
}

fn component_value(
    name: &str,
    item: &Item,
    message: &MessageView<'_>,
    identifier: &str,
) -> Result<String, BaseError> {
    let missing = || BaseError::Missing(identifier.to_string());
    if let Some(derived) = name.strip_prefix('@') {
        let uri = || -> Result<http::Uri, BaseError> {
            message
                .target_uri
                .and_then(|u| u.parse().ok())
                .ok_or_else(missing)
        };
        return match derived {
            "method" => message.method.map(str::to_string).ok_or_else(missing),
            "target-uri" => message.target_uri.map(str::to_string).ok_or_else(missing),
            "authority" => {
                let uri = uri()?;
                let host = uri.host().ok_or_else(missing)?.to_ascii_lowercase();
                let default = if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                };
                Ok(match uri.port_u16() {
                    Some(port) if port != default => format!("{host}:{port}"),
                    _ => host,
                })
            }
            "scheme" => Ok(uri()?
                .scheme_str()
                .ok_or_else(missing)?
                .to_ascii_lowercase()),
            "path" => {
                let uri = uri()?;
                Ok(if uri.path().is_empty() {
                    "/".into()
                } else {
                    uri.path().into()
                })
            }
            "query" => Ok(format!("?{}", uri()?.query().unwrap_or(""))),
            "status" => message
                .status
                .map(|s| format!("{s:03}"))
                .ok_or_else(missing),
            _ => Err(BaseError::BadComponent(identifier.to_string())),
        };
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(BaseError::BadComponent(identifier.to_string()));
    }
    let bad = || BaseError::BadComponent(identifier.to_string());
    let mut values = message.headers.get_all(name).iter();
    let first = values.next().ok_or_else(missing)?;
    let first = first.to_str().map_err(|_| bad())?.trim();
    let plain = item.params.is_empty();
    let mut lines: Vec<&str> = vec![first];
    for value in values {
        lines.push(value.to_str().map_err(|_| bad())?.trim());
    }
    if plain && lines.len() == 1 {
        return Ok(first.to_string());
    }
    let joined = lines.join(", ");
    if let Some(key) = item.params.get("key") {
        let key = key
            .as_str()
            .ok_or_else(|| BaseError::BadComponent(identifier.to_string()))?;
        let dictionary = sfv::Parser::parse_dictionary(joined.as_bytes())
            .map_err(|_| BaseError::BadComponent(identifier.to_string()))?;
        let member = dictionary.get(key).ok_or_else(missing)?;
        let single: sfv::List = vec![member.clone()];
        return single
            .serialize_value()
            .map_err(|_| BaseError::BadComponent(identifier.to_string()));
    }
    if item.params.get("sf").and_then(BareItem::as_bool) == Some(true) {
        return reserialize(&joined).ok_or_else(|| BaseError::BadComponent(identifier.to_string()));
    }
    if item.params.get("bs").and_then(BareItem::as_bool) == Some(true) {
        use base64::Engine;
        let wrapped: Vec<String> = lines
            .iter()
            .map(|line| {
                format!(
                    ":{}:",
                    base64::engine::general_purpose::STANDARD.encode(line)
                )
            })
            .collect();
        return Ok(wrapped.join(", "));
    }
    Ok(joined)
}

/// `;sf`: strict re-serialisation as a Dictionary, else a List.
fn reserialize(value: &str) -> Option<String> {
    if let Ok(dictionary) = sfv::Parser::parse_dictionary(value.as_bytes()) {
        return dictionary.serialize_value().ok();
    }
    sfv::Parser::parse_list(value.as_bytes())
        .ok()
        .and_then(|list| list.serialize_value().ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    pub(crate) fn parse_list(input: &str) -> InnerList {
        let dictionary = sfv::Parser::parse_dictionary(input.as_bytes()).unwrap();
        match dictionary.values().next().unwrap() {
            ListEntry::InnerList(list) => list.clone(),
            ListEntry::Item(_) => panic!("not an inner list"),
        }
    }

    pub(crate) const REQUEST_DIGEST: &str = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";

    pub(crate) fn test_request_headers() -> HeaderMap {
        headers(&[
            ("host", "example.com"),
            ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
            ("content-type", "application/json"),
            ("content-digest", REQUEST_DIGEST),
            ("content-length", "18"),
        ])
    }

    pub(crate) const TEST_URI: &str = "https://example.com/foo?param=Value&Pet=dog";

    #[test]
    fn rfc9421_b_2_6_base() {
        let request_headers = test_request_headers();
        let request = MessageView {
            method: Some("POST"),
            target_uri: Some(TEST_URI),
            status: None,
            headers: &request_headers,
        };
        let list = parse_list(
            r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
        );
        let expected = "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@method\": POST\n\"@path\": /foo\n\"@authority\": example.com\n\"content-type\": application/json\n\"content-length\": 18\n\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\");created=1618884473;keyid=\"test-key-ed25519\"";
        assert_eq!(signature_base(&list, &request, None).unwrap(), expected);
    }

    #[test]
    fn rfc9421_b_2_4_response_base() {
        let response_headers = headers(&[
            ("date", "Tue, 20 Apr 2021 02:07:56 GMT"),
            ("content-type", "application/json"),
            ("content-digest", "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:"),
            ("content-length", "23"),
        ]);
        let response = MessageView {
            method: None,
            target_uri: None,
            status: Some(200),
            headers: &response_headers,
        };
        let list = parse_list(
            r#"sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256""#,
        );
        let expected = "\"@status\": 200\n\"content-type\": application/json\n\"content-digest\": sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:\n\"content-length\": 23\n\"@signature-params\": (\"@status\" \"content-type\" \"content-digest\" \"content-length\");created=1618884473;keyid=\"test-key-ecc-p256\"";
        assert_eq!(signature_base(&list, &response, None).unwrap(), expected);
    }

    #[test]
    fn sig_2_missing_fields_duplicates_and_req_on_requests_fail() {
        let request_headers = test_request_headers();
        let request = MessageView {
            method: Some("POST"),
            target_uri: Some(TEST_URI),
            status: None,
            headers: &request_headers,
        };
        let missing = parse_list(r#"s=("x-absent")"#);
        assert!(matches!(
            signature_base(&missing, &request, None),
            Err(BaseError::Missing(_))
        ));
        let twice = parse_list(r#"s=("@method" "@method")"#);
        assert!(matches!(
            signature_base(&twice, &request, None),
            Err(BaseError::Duplicate(_))
        ));
        let req = parse_list(r#"s=("@method";req)"#);
        assert_eq!(
            signature_base(&req, &request, None),
            Err(BaseError::NoRequest)
        );
    }

    #[test]
    fn sig_2_2_derived_components_and_key_parameter() {
        let request_headers = headers(&[("signature", "sig1=:AAAA:, sig2=:BBBB:")]);
        let request = MessageView {
            method: Some("GET"),
            target_uri: Some("HTTPS://Example.COM:443/a%20b?q=1"),
            status: None,
            headers: &request_headers,
        };
        let list =
            parse_list(r#"s=("@authority" "@scheme" "@path" "@query" "signature";key="sig2")"#);
        let base = signature_base(&list, &request, None).unwrap();
        assert!(base.starts_with("\"@authority\": example.com\n\"@scheme\": https\n\"@path\": /a%20b\n\"@query\": ?q=1\n\"signature\";key=\"sig2\": :BBBB:\n"), "{base}");
    }
}
