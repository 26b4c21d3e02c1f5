//! `x-fapi-interaction-id` (FAPI 1.0 Part 1 §6.2.1-11/12, FAPI 2.0 Implementation Advice
//! §2.2.1): echo the client's value, or mint an RFC 4122 UUID.
//!
//! Decision: the header is defined as a UUID. A value that is not a UUID in its hyphenated
//! form (36 characters) is not echoed and not forwarded; the gateway mints a fresh UUID for
//! the exchange and logs that it replaced the client's value (never the value itself, which
//! could carry anything into log pipelines). The request is not refused: correlation is an
//! operational aid, not a security control.

use http::{HeaderName, HeaderValue};

pub(crate) const HEADER: &str = "x-fapi-interaction-id";
pub(crate) static HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The client's UUID, echoed as sent.
    Echoed,
    /// The client sent none.
    Minted,
    /// The client's value was not a UUID and was replaced.
    Replaced,
}

impl Origin {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Origin::Echoed => "echoed",
            Origin::Minted => "minted",
            Origin::Replaced => "replaced",
        }
    }
}

/// The exchange's interaction id, kept as the header value it is sent as (both ways).
#[derive(Debug, Clone)]
pub(crate) struct InteractionId {
    pub value: HeaderValue,
    pub origin: Origin,
}

impl InteractionId {
    /// The id as text: always a UUID, so always ASCII.
    pub(crate) fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or_default()
    }
}

pub(crate) fn resolve(sent: Option<&HeaderValue>) -> InteractionId {
    match sent {
        None => InteractionId {
            value: minted(),
            origin: Origin::Minted,
        },
        Some(value)
            if value.len() == 36
                && value
                    .to_str()
                    .is_ok_and(|text| uuid::Uuid::try_parse(text).is_ok()) =>
        {
            InteractionId {
                value: value.clone(),
                origin: Origin::Echoed,
            }
        }
        Some(_) => InteractionId {
            value: minted(),
            origin: Origin::Replaced,
        },
    }
}

fn minted() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value. One allocation that clones share (the
    // value goes upstream and into the response); a value copied from a slice would allocate
    // again on its first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fapi1_rs_11_a_uuid_is_echoed_as_sent() {
        let sent = HeaderValue::from_static("C7A5F7B4-1A2B-4C3D-8E9F-0123456789AB");
        let id = resolve(Some(&sent));
        assert_eq!(id.as_str(), "C7A5F7B4-1A2B-4C3D-8E9F-0123456789AB");
        assert_eq!(id.origin, Origin::Echoed);
    }

    #[test]
    fn fapi1_rs_11_a_missing_id_is_minted_as_uuid_v4() {
        let id = resolve(None);
        assert_eq!(id.origin, Origin::Minted);
        let parsed = uuid::Uuid::try_parse(id.as_str()).unwrap();
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
            assert_ne!(id.as_str(), bad);
            assert!(uuid::Uuid::try_parse(id.as_str()).is_ok());
        }
    }
}
