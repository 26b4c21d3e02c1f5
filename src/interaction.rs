//! `x-fapi-interaction-id` (FAPI 1.0 Part 1 §6.2.1-11/12, FAPI 2.0 Implementation Advice
//! §2.2.1): echo the client's value, or mint an RFC 4122 UUID.
//!
//! Decision: the header is defined as a UUID. A value that is not a UUID in its hyphenated
//! form (36 characters) is not echoed and not forwarded; the gateway mints a fresh UUID for
//! the exchange and logs that it replaced the client's value (never the value itself, which
//! could carry anything into log pipelines). The request is not refused: correlation is an
//! operational aid, not a security control.

use http::HeaderValue;

pub const HEADER: &str = "x-fapi-interaction-id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The client's UUID, echoed as sent.
    Echoed,
    /// The client sent none.
    Minted,
    /// The client's value was not a UUID and was replaced.
    Replaced,
}

#[derive(Debug, Clone)]
pub struct InteractionId {
    pub value: String,
    pub origin: Origin,
}

pub fn resolve(sent: Option<&HeaderValue>) -> InteractionId {
    let minted = || uuid::Uuid::new_v4().hyphenated().to_string();
    match sent.map(|v| v.to_str()) {
        None => InteractionId {
            value: minted(),
            origin: Origin::Minted,
        },
        Some(Ok(text)) if text.len() == 36 && uuid::Uuid::try_parse(text).is_ok() => {
            InteractionId {
                value: text.to_string(),
                origin: Origin::Echoed,
            }
        }
        Some(_) => InteractionId {
            value: minted(),
            origin: Origin::Replaced,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fapi1_rs_11_a_uuid_is_echoed_as_sent() {
        let sent = HeaderValue::from_static("C7A5F7B4-1A2B-4C3D-8E9F-0123456789AB");
        let id = resolve(Some(&sent));
        assert_eq!(id.value, "C7A5F7B4-1A2B-4C3D-8E9F-0123456789AB");
        assert_eq!(id.origin, Origin::Echoed);
    }

    #[test]
    fn fapi1_rs_11_a_missing_id_is_minted_as_uuid_v4() {
        let id = resolve(None);
        assert_eq!(id.origin, Origin::Minted);
        let parsed = uuid::Uuid::try_parse(&id.value).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn a_value_that_is_not_a_uuid_is_replaced() {
        for bad in [
            "hello",
            "c7a5f7b41a2b4c3d8e9f0123456789ab",
            "{c7a5f7b4-1a2b-4c3d-8e9f-0123456789ab}",
            "c7a5f7b4-1a2b-4c3d-8e9f-0123456789ab\r\nx: y",
        ] {
            let sent =
                HeaderValue::from_bytes(bad.as_bytes()).unwrap_or(HeaderValue::from_static("x"));
            let id = resolve(Some(&sent));
            assert_eq!(id.origin, Origin::Replaced, "{bad}");
            assert_ne!(id.value, bad);
        }
    }
}
