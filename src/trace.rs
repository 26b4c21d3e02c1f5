//! W3C Trace Context (`traceparent`): the trace a request belongs to, continued from the
//! client's header when it sends a valid one, begun here when it does not. The gateway is a
//! participant: the upstream receives the same trace id with the gateway's own span id as its
//! parent, and the access log names both.

use http::HeaderValue;

pub(crate) const HEADER: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trace {
    pub trace_id: [u8; 16],
    /// This gateway's span: the upstream's parent.
    pub span_id: [u8; 8],
    pub flags: u8,
    /// Whether the client's `traceparent` was continued.
    pub continued: bool,
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// W3C Trace Context §3.2: `version-traceid-parentid-flags`, lowercase hex, version 00 (a
/// later version is read by its first four fields), trace and parent ids not all zero.
fn parse(value: &str) -> Option<([u8; 16], u8)> {
    let mut parts = value.trim().split('-');
    let version = hex_bytes::<1>(parts.next()?)?[0];
    let trace_id = hex_bytes::<16>(parts.next()?)?;
    let parent_id = hex_bytes::<8>(parts.next()?)?;
    let flags = hex_bytes::<1>(parts.next()?)?[0];
    let valid = version != 0xff
        && (version != 0 || parts.next().is_none())
        && trace_id != [0; 16]
        && parent_id != [0; 8];
    valid.then_some((trace_id, flags))
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let bytes = uuid::Uuid::new_v4();
    out.copy_from_slice(&bytes.as_bytes()[..N]);
    out
}

impl Trace {
    /// Continues the client's trace (one valid `traceparent` field), or begins one.
    pub(crate) fn resolve(headers: &http::HeaderMap) -> Trace {
        let mut values = headers.get_all(HEADER).iter();
        let received = match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().and_then(parse),
            _ => None,
        };
        let mut span_id = random::<8>();
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        match received {
            Some((trace_id, flags)) => Trace {
                trace_id,
                span_id,
                flags,
                continued: true,
            },
            None => Trace {
                trace_id: random::<16>(),
                span_id,
                flags: 0,
                continued: false,
            },
        }
    }

    pub(crate) fn trace_id(&self) -> String {
        crate::encoding::hex(&self.trace_id)
    }

    pub(crate) fn span_id(&self) -> String {
        crate::encoding::hex(&self.span_id)
    }

    /// The `traceparent` the upstream receives (version 00, the gateway's span as parent).
    pub(crate) fn header(&self) -> HeaderValue {
        use crate::encoding::push_hex;
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        push_hex(&mut text, &self.trace_id);
        text.push('-');
        push_hex(&mut text, &self.span_id);
        text.push('-');
        push_hex(&mut text, &[self.flags]);
        HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for v in values {
            map.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_the_gateways_span() {
        let received = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = Trace::resolve(&headers(&[received]));
        assert!(trace.continued);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");
        let sent = trace.header();
        let sent = sent.to_str().unwrap();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
        assert_eq!(sent.len(), received.len());
    }

    #[test]
    fn an_invalid_or_repeated_traceparent_begins_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let trace = Trace::resolve(&headers(&[bad]));
            assert!(!trace.continued, "{bad}");
            assert_eq!(trace.flags, 0);
        }
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(
            !Trace::resolve(&headers(&[good, good])).continued,
            "sent twice"
        );
        // A later version is read by its first four fields.
        assert!(Trace::resolve(&headers(&[&format!("01{}-future", &good[2..])])).continued);
        assert!(!Trace::resolve(&headers(&[])).continued);
    }
}
