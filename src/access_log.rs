//! The JSON access line, written without `tracing`'s per-field formatting: serialised straight
//! into a buffer the worker thread reuses, then handed to one writer thread through a bounded
//! queue. A full queue (stdout slower than the requests, a log collector that stalls) drops
//! the line and counts it (`fapigate_access_log_dropped_total`) rather than block a worker.
//! The line has the shape `tracing`'s JSON lines have (flattened fields), so one parser reads
//! both.

use crate::telemetry::AccessRecord;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Lines waiting for the writer; beyond, lines are dropped.
const QUEUE: usize = 16_384;
/// A write to stdout is at most this (a pipe keeps writes up to PIPE_BUF whole, so lines of
/// the writer and of `tracing` never interleave).
const WRITE_MAX: usize = 4096;

static JSON: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUE_TX: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();

/// Access lines take this path when the log is JSON (`init_logging`).
pub(crate) fn use_fast_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

pub(crate) fn fast_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Lines dropped since the last call (for the metric, added at scrape time).
pub(crate) fn take_dropped() -> u64 {
    DROPPED.swap(0, Ordering::Relaxed)
}

fn queue() -> &'static SyncSender<Vec<u8>> {
    QUEUE_TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("fapigate-access".into())
            .spawn(move || write_lines(rx));
        if spawned.is_err() {
            // No writer: every line is dropped (and counted), none blocks.
            tracing::error!("cannot start the access-log writer: access lines are dropped");
        }
        tx
    })
}

fn write_lines(rx: Receiver<Vec<u8>>) {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_MAX);
    let stdout = std::io::stdout();
    let flush = |batch: &mut Vec<u8>| {
        if !batch.is_empty() {
            let _ = stdout.lock().write_all(batch);
            batch.clear();
        }
    };
    while let Ok(line) = rx.recv() {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            if batch.len() + line.len() > WRITE_MAX {
                flush(&mut batch);
            }
            if line.len() >= WRITE_MAX {
                let _ = stdout.lock().write_all(&line);
            } else {
                batch.extend_from_slice(&line);
            }
            next = rx.try_recv().ok();
        }
        flush(&mut batch);
    }
}

thread_local! {
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// The formatted second, reused by every line of that second on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Queues the line of `record`.
pub(crate) fn write(record: &AccessRecord<'_>) {
    let line = BUFFER.with(|buffer| {
        let mut out = buffer.borrow_mut();
        out.clear();
        render(&mut out, record);
        out.as_bytes().to_vec()
    });
    match queue().try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn render(out: &mut String, record: &AccessRecord<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    out.push_str("{\"timestamp\":\"");
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != now.as_secs() {
            second.1.clear();
            date_time(&mut second.1, now.as_secs());
            second.0 = now.as_secs();
        }
        out.push_str(&second.1);
    });
    let _ = write!(out, ".{:06}Z\"", now.subsec_micros());
    out.push_str(",\"level\":\"INFO\",\"message\":\"access\",\"target\":\"fapigate::access\"");
    text(out, "interaction_id", Some(record.interaction_id));
    text(out, "interaction_id_origin", Some(record.interaction_id_origin));
    text(out, "route", Some(record.route));
    text(out, "method", Some(record.method));
    text(out, "path", Some(record.path));
    let _ = write!(out, ",\"status\":{}", record.status);
    text(out, "outcome", Some(record.outcome));
    if let Some(ms) = record.upstream_ms {
        let _ = write!(out, ",\"upstream_ms\":{ms}");
    }
    let _ = write!(out, ",\"total_ms\":{}", record.total_ms);
    text(out, "client_cert_x5t", record.client_cert.as_deref());
    text(out, "peer", record.peer.as_deref());
    text(out, "client_id", record.client_id);
    if let Some(trace) = record.trace {
        text(out, "trace_id", Some(&trace.trace_id()));
        text(out, "span_id", Some(&trace.span_id()));
    }
    let _ = write!(
        out,
        ",\"request_bytes\":{},\"response_bytes\":{}",
        record.request_bytes, record.response_bytes
    );
    text(out, "tls_version", record.tls_version);
    out.push_str("}\n");
}

/// `,"name":"value"` with the value escaped as JSON (RFC 8259 §7); nothing for `None`.
fn text(out: &mut String, name: &str, value: Option<&str>) {
    let Some(value) = value else { return };
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second, UTC (days to civil date: H. Hinnant's algorithm).
fn date_time(out: &mut String, seconds: u64) {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        let mut out = String::new();
        date_time(&mut out, 0);
        assert_eq!(out, "1970-01-01T00:00:00");
        out.clear();
        date_time(&mut out, 1_700_000_000);
        assert_eq!(out, "2023-11-14T22:13:20");
        out.clear();
        date_time(&mut out, 951_782_400); // 2000-02-29, a leap day of a century year
        assert_eq!(out, "2000-02-29T00:00:00");
    }

    #[test]
    fn the_line_is_json_with_every_field_escaped() {
        let trace = crate::trace::Trace::resolve(&http::HeaderMap::new());
        let record = AccessRecord {
            interaction_id: "id\"1",
            interaction_id_origin: "echoed",
            route: "accounts",
            method: "GET",
            path: "/a\\b\u{1}\n",
            status: 200,
            outcome: "proxied",
            upstream_ms: Some(1.5),
            total_ms: 2.25,
            client_cert: None,
            peer: Some("127.0.0.1".into()),
            client_id: Some("tpp"),
            trace: Some(&trace),
            request_bytes: 3,
            response_bytes: 466,
            tls_version: Some("TLSv1.3"),
        };
        let mut out = String::new();
        render(&mut out, &record);
        assert!(out.ends_with("}\n"));
        let line: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(line["message"], "access");
        assert_eq!(line["interaction_id"], "id\"1");
        assert_eq!(line["path"], "/a\\b\u{1}\n");
        assert_eq!(line["status"], 200);
        assert_eq!(line["upstream_ms"], 1.5);
        assert_eq!(line["total_ms"], 2.25);
        assert!(line.get("client_cert_x5t").is_none());
        assert_eq!(line["trace_id"], trace.trace_id());
        assert_eq!(line["response_bytes"], 466);
        assert_eq!(line["tls_version"], "TLSv1.3");
        let stamp = line["timestamp"].as_str().unwrap();
        assert_eq!(stamp.len(), "2026-12-03T06:37:34.140550Z".len(), "{stamp}");
    }
}
