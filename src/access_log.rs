//! The JSON access line, written without `tracing`'s per-field formatting: serialised straight
//! into a buffer the worker thread reuses, then appended to one pending batch that a writer
//! thread empties every few milliseconds (no wake-up per line). A batch that reached its bound
//! (stdout slower than the requests, a log collector that stalls) drops the line and counts it
//! (`fapigate_access_log_dropped_total`) rather than block a worker. The line has the shape
//! `tracing`'s JSON lines have (flattened fields), so one parser reads both.

use crate::telemetry::AccessRecord;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The most bytes waiting for the writer; beyond, lines are dropped.
const PENDING_MAX: usize = 8 << 20;
/// How often the writer empties the batch.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// A write to a pipe or socket is at most this, cut at line ends: a pipe keeps writes up to
/// PIPE_BUF whole, so lines of other processes sharing it never cut into ours (this process's
/// own writers all go through std's locked stdout). A file takes the batch in one write: a
/// write per 4 KiB cost about half a microsecond per line.
const PIPE_WRITE_MAX: usize = 4096;

static JSON: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Held while a batch is taken and written, so that `flush` waits for one in flight.
static WRITING: Mutex<()> = Mutex::new(());
static WRITER: OnceLock<()> = OnceLock::new();
static WRITE_MAX: OnceLock<usize> = OnceLock::new();

/// The largest write to stdout: a batch whole for a regular file, PIPE_BUF otherwise.
fn write_max() -> usize {
    *WRITE_MAX.get_or_init(|| {
        use std::os::fd::AsFd as _;
        let regular = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|file| file.metadata())
            .is_ok_and(|meta| meta.file_type().is_file());
        if regular {
            usize::MAX
        } else {
            PIPE_WRITE_MAX
        }
    })
}

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

fn start_writer() {
    WRITER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("fapigate-access".into())
            .spawn(write_batches);
        if spawned.is_err() {
            tracing::error!("cannot start the access-log writer: access lines are dropped");
        }
    });
}

fn write_batches() {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        std::thread::sleep(FLUSH_EVERY);
        write_pending(&mut batch);
    }
}

/// Writes what is pending now (the writer's turn, and once more before the process exits).
pub(crate) fn flush() {
    write_pending(&mut Vec::new());
}

fn write_pending(batch: &mut Vec<u8>) {
    let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    {
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *pending, batch);
    }
    {
        let stdout = std::io::stdout();
        let write_max = write_max();
        let mut rest: &[u8] = batch;
        while !rest.is_empty() {
            let cut = if rest.len() <= write_max {
                rest.len()
            } else {
                // The last line end within write_max, or a whole over-long line.
                match rest[..write_max].iter().rposition(|b| *b == b'\n') {
                    Some(end) => end + 1,
                    None => rest
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(rest.len(), |end| end + 1),
                }
            };
            if stdout.lock().write_all(&rest[..cut]).is_err() {
                // Lines that could not be written are lines dropped (EPIPE, ENOSPC).
                let lines = rest[..cut].iter().filter(|b| **b == b'\n').count();
                DROPPED.fetch_add(lines as u64, Ordering::Relaxed);
            }
            rest = &rest[cut..];
        }
    }
    batch.clear();
    // A burst's capacity is given back rather than kept for good.
    if batch.capacity() > 1 << 20 {
        batch.shrink_to(1 << 20);
    }
}

thread_local! {
    static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(512));
    /// The formatted second, reused by every line of that second on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Adds the line of `record` to the pending batch.
pub(crate) fn write(record: &AccessRecord<'_>) {
    start_writer();
    BUFFER.with(|buffer| {
        let mut out = buffer.borrow_mut();
        out.clear();
        render(&mut out, record);
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() + out.len() > PENDING_MAX {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.extend_from_slice(out.as_bytes());
        }
    });
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
    out.push('.');
    padded(out, u64::from(now.subsec_micros()), 6);
    out.push_str("Z\"");
    out.push_str(",\"level\":\"INFO\",\"message\":\"access\",\"target\":\"fapigate::access\"");
    text(out, "interaction_id", Some(record.interaction_id));
    text(
        out,
        "interaction_id_origin",
        Some(record.interaction_id_origin),
    );
    text(out, "route", Some(record.route));
    text(out, "method", Some(record.method));
    text(out, "path", Some(record.path));
    out.push_str(",\"status\":");
    number(out, u64::from(record.status));
    text(out, "outcome", Some(record.outcome));
    if let Some(ms) = record.upstream_ms {
        millis(out, "upstream_ms", ms);
    }
    millis(out, "total_ms", record.total_ms);
    text(out, "client_cert_x5t", record.client_cert.as_deref());
    match record.peer {
        Some(std::net::IpAddr::V4(v4)) => {
            out.push_str(",\"peer\":\"");
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                number(out, u64::from(*octet));
            }
            out.push('"');
        }
        Some(peer) => {
            let _ = write!(out, ",\"peer\":\"{peer}\"");
        }
        None => {}
    }
    text(out, "client_id", record.client_id);
    if let Some(trace) = record.trace {
        out.push_str(",\"trace_id\":\"");
        crate::encoding::push_hex(out, &trace.trace_id);
        out.push_str("\",\"span_id\":\"");
        crate::encoding::push_hex(out, &trace.span_id);
        out.push('"');
    }
    out.push_str(",\"request_bytes\":");
    number(out, record.request_bytes as u64);
    out.push_str(",\"response_bytes\":");
    number(out, record.response_bytes as u64);
    text(out, "tls_version", record.tls_version);
    out.push_str("}\n");
}

/// Milliseconds to the microsecond, without float formatting: `,"name":12.345`.
fn millis(out: &mut String, name: &str, ms: f64) {
    let micros = (ms * 1000.0).round().max(0.0) as u64;
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    number(out, micros / 1000);
    out.push('.');
    padded(out, micros % 1000, 3);
}

/// Decimal digits without `core::fmt` (it costs more than the rest of the line).
fn number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in &digits[at..] {
        out.push(char::from(*d));
    }
}

/// `n` in exactly `width` digits, zeros in front (`n` below 10^width).
fn padded(out: &mut String, n: u64, width: u32) {
    let mut divisor = 10u64.pow(width.saturating_sub(1));
    while divisor > 0 {
        out.push(char::from(b'0' + ((n / divisor) % 10) as u8));
        divisor /= 10;
    }
}

/// `,"name":"value"` with the value escaped as JSON (RFC 8259 §7); nothing for `None`.
fn text(out: &mut String, name: &str, value: Option<&str>) {
    let Some(value) = value else { return };
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":\"");
    // Runs of bytes that need no escape are copied whole (a value is mostly such a run); every
    // byte escaped is ASCII, so a run always ends on a character boundary.
    let mut run = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&value[run..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        run = at + 1;
    }
    out.push_str(&value[run..]);
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
    fn numbers_are_decimal_digits() {
        let mut out = String::new();
        for n in [0u64, 7, 10, 200, 65_535, u64::MAX] {
            out.clear();
            number(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        out.clear();
        padded(&mut out, 42, 6);
        assert_eq!(out, "000042");
        out.clear();
        millis(&mut out, "t", 12.3456);
        assert_eq!(out, ",\"t\":12.346");
    }

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
            path: "/a\\b\u{1}\né\u{7f}x",
            status: 200,
            outcome: "proxied",
            upstream_ms: Some(1.5),
            total_ms: 2.25,
            client_cert: None,
            peer: Some("127.0.0.1".parse().unwrap()),
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
        assert_eq!(line["path"], "/a\\b\u{1}\né\u{7f}x");
        assert!(out.contains(r#""/a\\b\u0001\né\u007fx""#), "{out}");
        assert_eq!(line["status"], 200);
        assert_eq!(line["upstream_ms"], 1.5);
        assert_eq!(line["peer"], "127.0.0.1");
        assert_eq!(line["total_ms"], 2.25);
        assert!(line.get("client_cert_x5t").is_none());
        assert_eq!(line["trace_id"], trace.trace_id());
        assert_eq!(line["response_bytes"], 466);
        assert_eq!(line["tls_version"], "TLSv1.3");
        let stamp = line["timestamp"].as_str().unwrap();
        assert_eq!(stamp.len(), "2026-12-03T06:37:34.140550Z".len(), "{stamp}");
    }
}
