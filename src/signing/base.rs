//! The RFC 9421 signature base (§2.5): one line per covered component, then
//! `"@signature-params"`, built from a message and, for `;req` components of a response, the
//! request it answers (§2.4).

use http::HeaderMap;
use sfv::{BareItem, InnerList, Item, ListEntry, Parameters, SerializeValue};
use std::borrow::Cow;

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
        BareItem::String(text) => write_sf_string(out, text)?,
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

/// RFC 8941 §4.1.6: a quoted String; `None` for characters a String cannot hold.
pub(crate) fn write_sf_string(out: &mut String, text: &str) -> Option<()> {
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

/// One covered component: its identifier as it appears in the base and in `Signature-Input`
/// (`"@method";req`), and how its value is found.
#[derive(Debug, Clone)]
pub(crate) struct Component<'a> {
    pub identifier: Cow<'a, str>,
    /// The component name: a derived component (`@status`) or a lower-case field name.
    pub name: Cow<'a, str>,
    /// `;req`: taken from the request a response answers (§2.4).
    pub req: bool,
    /// `;key="member"`: one member of a Dictionary field (§2.1.2).
    pub key: Option<Cow<'a, str>>,
    /// `;sf`: the field re-serialised as a Structured Field (§2.1.1).
    pub sf: bool,
    /// `;bs`: each field line as a Byte Sequence (§2.1.3).
    pub bs: bool,
    /// The value when the caller already has it, e.g. the members of a request signature the
    /// gateway has just parsed and verified, or the normalised public authority.
    pub known: Option<&'a str>,
}

impl<'a> Component<'a> {
    /// A component of the signer's own fixed list: `identifier` is its serialisation.
    pub(crate) fn fixed(identifier: &'a str, name: &'a str, req: bool) -> Self {
        Component {
            identifier: Cow::Borrowed(identifier),
            name: Cow::Borrowed(name),
            req,
            key: None,
            sf: false,
            bs: false,
            known: None,
        }
    }

    /// A component as a `Signature-Input` lists it.
    pub(crate) fn from_item(item: &Item) -> Result<Component<'static>, BaseError> {
        let identifier = serialize_item(item)?;
        let Some(name) = item.bare_item.as_str() else {
            return Err(BaseError::BadComponent(identifier));
        };
        let flag = |param: &str| item.params.get(param).and_then(BareItem::as_bool) == Some(true);
        let key = match item.params.get("key") {
            None => None,
            Some(key) => match key.as_str() {
                Some(key) => Some(Cow::Owned(key.to_string())),
                None => return Err(BaseError::BadComponent(identifier)),
            },
        };
        Ok(Component {
            name: Cow::Owned(name.to_string()),
            req: flag("req"),
            key,
            sf: flag("sf"),
            bs: flag("bs"),
            known: None,
            identifier: Cow::Owned(identifier),
        })
    }
}

/// Builds the signature base for `list` over `message` (and `request` for `;req`).
pub fn signature_base(
    list: &InnerList,
    message: &MessageView<'_>,
    request: Option<&MessageView<'_>>,
) -> Result<String, BaseError> {
    let components = list
        .items
        .iter()
        .map(Component::from_item)
        .collect::<Result<Vec<_>, _>>()?;
    build_base(&components, &serialize_inner_list(list), message, request)
}

/// Builds the signature base from components and the serialised `@signature-params` value
/// (the inner list exactly as `Signature-Input` carries it).
pub(crate) fn build_base(
    components: &[Component<'_>],
    signature_params: &str,
    message: &MessageView<'_>,
    request: Option<&MessageView<'_>>,
) -> Result<String, BaseError> {
    let mut base = String::with_capacity(512 + signature_params.len());
    for (index, component) in components.iter().enumerate() {
        let identifier = &component.identifier;
        if components[..index]
            .iter()
            .any(|earlier| earlier.identifier == *identifier)
        {
            return Err(BaseError::Duplicate(identifier.to_string()));
        }
        let source = if component.req {
            if message.status.is_none() {
                return Err(BaseError::NoRequest);
            }
            request.ok_or(BaseError::NoRequest)?
        } else {
            message
        };
        base.push_str(identifier);
        base.push_str(": ");
        match component.known {
            Some(value) => base.push_str(value),
            None => append_value(&mut base, component, source)?,
        }
        base.push('\n');
    }
    base.push_str("\"@signature-params\": ");
    base.push_str(signature_params);
    Ok(base)
}

pub(crate) fn serialize_item(item: &Item) -> Result<String, BaseError> {
    let mut out = String::with_capacity(32);
    if write_item(&mut out, item).is_some() {
        return Ok(out);
    }
    let list: sfv::List = vec![ListEntry::Item(item.clone())];
    list.serialize_value()
        .map_err(|e| BaseError::BadComponent(e.to_string()))
}

/// Appends the component's value (§2.1, §2.2) to `out`.
fn append_value(
    out: &mut String,
    component: &Component<'_>,
    message: &MessageView<'_>,
) -> Result<(), BaseError> {
    let identifier = &component.identifier;
    let missing = || BaseError::Missing(identifier.to_string());
    let bad = || BaseError::BadComponent(identifier.to_string());
    let name: &str = &component.name;
    if let Some(derived) = name.strip_prefix('@') {
        let uri = || -> Result<http::Uri, BaseError> {
            message
                .target_uri
                .and_then(|u| u.parse().ok())
                .ok_or_else(missing)
        };
        match derived {
            "method" => out.push_str(message.method.ok_or_else(missing)?),
            "target-uri" => out.push_str(message.target_uri.ok_or_else(missing)?),
            "authority" => {
                let uri = uri()?;
                let host = uri.host().ok_or_else(missing)?;
                let default = if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                };
                out.push_str(&host.to_ascii_lowercase());
                if let Some(port) = uri.port_u16().filter(|port| *port != default) {
                    out.push(':');
                    out.push_str(&port.to_string());
                }
            }
            "scheme" => out.push_str(
                &uri()?
                    .scheme_str()
                    .ok_or_else(missing)?
                    .to_ascii_lowercase(),
            ),
            "path" => {
                let uri = uri()?;
                out.push_str(if uri.path().is_empty() {
                    "/"
                } else {
                    uri.path()
                });
            }
            "query" => {
                out.push('?');
                out.push_str(uri()?.query().unwrap_or(""));
            }
            "status" => {
                let status = message.status.ok_or_else(missing)?;
                if !(100..=999).contains(&status) {
                    return Err(bad());
                }
                out.push_str(&status.to_string());
            }
            _ => return Err(bad()),
        }
        return Ok(());
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad());
    }
    let mut values = message.headers.get_all(name).iter();
    let first = values.next().ok_or_else(missing)?;
    let first = first.to_str().map_err(|_| bad())?.trim();
    let plain = component.key.is_none() && !component.sf && !component.bs;
    let mut rest = values.peekable();
    if plain && rest.peek().is_none() {
        out.push_str(first);
        return Ok(());
    }
    let mut lines: Vec<&str> = vec![first];
    for value in rest {
        lines.push(value.to_str().map_err(|_| bad())?.trim());
    }
    let joined = lines.join(", ");
    if let Some(key) = &component.key {
        let dictionary = sfv::Parser::parse_dictionary(joined.as_bytes()).map_err(|_| bad())?;
        let member = dictionary.get(key.as_ref()).ok_or_else(missing)?;
        let single: sfv::List = vec![member.clone()];
        out.push_str(&single.serialize_value().map_err(|_| bad())?);
        return Ok(());
    }
    if component.sf {
        out.push_str(&reserialize(&joined).ok_or_else(bad)?);
        return Ok(());
    }
    if component.bs {
        use base64::Engine;
        for (index, line) in lines.iter().enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            out.push(':');
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(line));
            out.push(':');
        }
        return Ok(());
    }
    out.push_str(&joined);
    Ok(())
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
