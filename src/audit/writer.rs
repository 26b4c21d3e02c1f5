//! The one writer of an audit file: a thread of its own that takes records from a bounded
//! queue, appends them in batches (one `fsync` per batch with `fsync = "every-record"`, before
//! any of the batch's requests is answered), writes a signed checkpoint every N records or T
//! seconds, and keeps `<file>.head` (its last line's number and hash) so that a start-up needs
//! no scan and a file cut short is found. The file is locked: a second process cannot write it.

use super::chain::{self, MacKey};
use super::reopen::{adopt_tail, drop_torn_line, open_files, scan};
use super::CheckpointKey;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) enum Message {
    Record {
        fields: serde_json::Map<String, serde_json::Value>,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// Time passed with no record: a checkpoint may be due (made by the writer itself).
    Tick,
}

/// The most records written in one batch (one write, one fsync).
const BATCH: usize = 256;
/// The head file's fixed size: it is rewritten in place, never truncated.
const HEAD_BYTES: usize = 160;

pub fn head_file_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".head");
    PathBuf::from(name)
}

/// `<file>.head`: the number and hash of the file's last line, and the file's length then.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HeadFile {
    pub seq: u64,
    pub head: String,
    pub len: u64,
}

impl HeadFile {
    pub(crate) fn read(path: &Path) -> Option<HeadFile> {
        let text = std::fs::read_to_string(head_file_path(path)).ok()?;
        let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        Some(HeadFile {
            seq: value.get("seq")?.as_u64()?,
            head: value.get("head")?.as_str()?.to_string(),
            len: value.get("len")?.as_u64()?,
        })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut text =
            serde_json::json!({"seq": self.seq, "head": self.head, "len": self.len}).to_string();
        while text.len() < HEAD_BYTES - 1 {
            text.push(' ');
        }
        text.push('\n');
        text.into_bytes()
    }
}

pub(super) struct Settings {
    pub path: PathBuf,
    pub fsync_every_batch: bool,
    pub key: Option<MacKey>,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub checkpoint_key: Arc<Mutex<Option<CheckpointKey>>>,
    pub rotate_size: Option<u64>,
    pub rotate_daily: bool,
    pub records: prometheus::IntCounter,
    pub checkpoints: prometheus::IntCounter,
}

pub(super) struct Writer {
    settings: Settings,
    file: std::fs::File,
    head_file: std::fs::File,
    seq: u64,
    prev: String,
    len: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The UTC day the current file was opened.
    day: u64,
}

fn utc_day() -> u64 {
    crate::clock::unix_seconds() / 86_400
}

impl Writer {
    /// Opens and locks the file and finds where the chain goes on (from the head file, or by
    /// reading the file once when there is none).
    pub(super) fn open(settings: Settings) -> Result<Writer, String> {
        let path = &settings.path;
        let (file, head_file) = open_files(path)?;
        // A line cut off by a crash (no newline) was never acknowledged: it goes.
        let len = drop_torn_line(&file, path)?;
        let (seq, prev) = match HeadFile::read(path) {
            // A crash between writing lines and the head: the lines after it that continue
            // the chain are adopted.
            Some(head) if head.len < len => adopt_tail(path, head)?,
            Some(head) => {
                if head.len != len {
                    // Going on from the recorded head keeps the damage visible: the next
                    // line's `prev` will not match what is now the last line.
                    tracing::error!(
                        file = %path.display(),
                        recorded = head.len,
                        found = len,
                        "the audit file changed since this gateway last wrote it (cut short or \
                         written by someone else): `fapigate audit verify` will name the line"
                    );
                }
                (head.seq, head.head)
            }
            None => scan(path)?,
        };
        Ok(Writer {
            day: utc_day(),
            settings,
            file,
            head_file,
            seq,
            prev,
            len,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        })
    }

    /// Runs until every sender is gone, then writes a last checkpoint. `clock` is this
    /// thread's own runtime: it wakes the writer when no record comes for a while, so a
    /// checkpoint is written on time without a tick taking a place in the queue.
    pub(super) fn run(
        mut self,
        mut queue: tokio::sync::mpsc::Receiver<Message>,
        clock: tokio::runtime::Runtime,
    ) {
        let tick = self
            .settings
            .checkpoint_interval
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let next = clock.block_on(async { tokio::time::timeout(tick, queue.recv()).await });
            let first = match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(_) => Message::Tick,
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
        if self.since_checkpoint > 0 {
            let mut buffer = Vec::new();
            let (seq, head) = self.checkpoint(&mut buffer);
            match self.commit(&buffer, true) {
                Ok(()) => self.exported(seq, &head),
                Err(error) => {
                    tracing::error!(%error, "the last audit checkpoint could not be written")
                }
            }
        }
    }

    fn write_batch(&mut self, batch: Vec<Message>) {
        if let Err(error) = self.rotate_if_due() {
            tracing::error!(%error, "the audit file could not be rotated; writing on to it");
        }
        let mut buffer = Vec::with_capacity(batch.len() * 512);
        let mut waiting = Vec::with_capacity(batch.len());
        let (seq, prev, since, last) = (
            self.seq,
            self.prev.clone(),
            self.since_checkpoint,
            self.last_checkpoint,
        );
        // A checkpoint after every `checkpoint_every` records, also inside one batch: no
        // more records than that between two checkpoints, however busy the gateway.
        let mut checkpoints = Vec::new();
        for message in batch {
            if let Message::Record { fields, done } = message {
                self.append(&mut buffer, fields);
                self.since_checkpoint += 1;
                waiting.push(done);
                if self.since_checkpoint >= self.settings.checkpoint_every {
                    checkpoints.push(self.checkpoint(&mut buffer));
                }
            }
        }
        if self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval
        {
            checkpoints.push(self.checkpoint(&mut buffer));
        }
        if buffer.is_empty() {
            return;
        }
        let sync = self.settings.fsync_every_batch || !checkpoints.is_empty();
        let outcome = self.commit(&buffer, sync);
        if outcome.is_err() {
            // Nothing of the batch counts as written: the next one goes on from before it.
            (
                self.seq,
                self.prev,
                self.since_checkpoint,
                self.last_checkpoint,
            ) = (seq, prev, since, last);
        }
        match &outcome {
            Err(error) => tracing::error!(%error, "audit records could not be written"),
            Ok(()) => {
                self.settings.records.inc_by(waiting.len() as u64);
                for (seq, head) in checkpoints {
                    self.exported(seq, &head);
                }
            }
        }
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }

    fn append(&mut self, buffer: &mut Vec<u8>, fields: serde_json::Map<String, serde_json::Value>) {
        self.seq += 1;
        let line = chain::seal(fields, self.seq, &self.prev, self.settings.key.as_ref());
        self.prev = chain::hash_line(&line);
        buffer.extend_from_slice(line.as_bytes());
        buffer.push(b'\n');
    }

    /// A checkpoint line attesting every line before it, signed when a key is set. Returns
    /// its line number and hash, to be logged ([`Writer::exported`]) once it is on disk.
    fn checkpoint(&mut self, buffer: &mut Vec<u8>) -> (u64, String) {
        let time = crate::clock::unix_seconds();
        let (count, head) = (self.seq, self.prev.clone());
        let payload = chain::checkpoint_payload(count, &head, time);
        let mut fields = serde_json::Map::new();
        fields.insert("time".into(), time.into());
        fields.insert(
            "checkpoint".into(),
            serde_json::json!({"count": count, "head": head}),
        );
        let signer = self
            .settings
            .checkpoint_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(signer) = signer {
            match crate::signing::jws::compact(
                &signer.key,
                signer.alg,
                payload.to_string().as_bytes(),
            ) {
                Ok(jws) => {
                    fields.insert("jws".into(), jws.into());
                }
                Err(error) => tracing::error!(%error, "the audit checkpoint could not be signed"),
            }
        }
        self.append(buffer, fields);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        (self.seq, self.prev.clone())
    }

    /// A checkpoint is on disk: its hash is logged so that a system outside this machine can
    /// hold it.
    fn exported(&self, seq: u64, head: &str) {
        self.settings.checkpoints.inc();
        tracing::info!(
            audit_file = %self.settings.path.display(),
            audit_seq = seq,
            audit_head = %head,
            "audit checkpoint"
        );
    }

    /// Appends `buffer` (synced with `sync`). On failure the file is cut back to its last
    /// good length, so that no partial or unacknowledged line stays in the chain.
    fn commit(&mut self, buffer: &[u8], sync: bool) -> Result<(), String> {
        let at = |e: std::io::Error| format!("{}: {e}", self.settings.path.display());
        let written =
            self.file
                .write_all(buffer)
                .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::error!(%cut, "the audit file could not be cut back after a failed write");
            }
            return Err(at(error));
        }
        self.len += buffer.len() as u64;
        let head = HeadFile {
            seq: self.seq,
            head: self.prev.clone(),
            len: self.len,
        };
        // The head is a hint for the next start and for `verify`; a failure to keep it is
        // logged, not a lost record.
        if let Err(error) = self.head_file.write_all_at(&head.bytes(), 0) {
            tracing::warn!(%error, "the audit head file could not be written");
        }
        Ok(())
    }
}

impl Writer {
    /// Past `rotate_size`, or on a new UTC day: the file (and its head file) is renamed with
    /// the time, and a new file begins with a line that links to the old one's last line, so
    /// the chain runs on across files.
    fn rotate_if_due(&mut self) -> Result<(), String> {
        let by_size = self.settings.rotate_size.is_some_and(|max| self.len >= max);
        let by_day = self.settings.rotate_daily && utc_day() != self.day && self.seq > 0;
        if !(by_size || by_day) {
            return Ok(());
        }
        let mut closing = Vec::new();
        if self.since_checkpoint > 0 {
            self.checkpoint(&mut closing);
        }
        self.commit(&closing, true)?;
        let path = self.settings.path.clone();
        let stamp = rotation_stamp(crate::clock::unix_seconds());
        // Never over an earlier rotated file (two rotations within one second): `-001`...
        // sorts after the plain stamp, so the names stay in chain order.
        let old = (0..1000)
            .map(|n| {
                let mut name = path.as_os_str().to_owned();
                match n {
                    0 => name.push(format!(".{stamp}")),
                    n => name.push(format!(".{stamp}-{n:03}")),
                }
                PathBuf::from(name)
            })
            .find(|candidate| !candidate.exists())
            .ok_or("no free name for the rotated audit file")?;
        let at = |e: std::io::Error| format!("{}: {e}", path.display());
        std::fs::rename(&path, &old).map_err(at)?;
        std::fs::rename(head_file_path(&path), head_file_path(&old)).map_err(at)?;
        let (file, head_file) = open_files(&path)?;
        (self.file, self.head_file) = (file, head_file);
        let (seq, head) = (self.seq, self.prev.clone());
        self.seq = 0;
        self.len = 0;
        self.day = utc_day();
        let mut fields = serde_json::Map::new();
        fields.insert("time".into(), crate::clock::unix_seconds().into());
        fields.insert(
            "rotated_from".into(),
            serde_json::json!({
                "file": old.file_name().map(|n| n.to_string_lossy().into_owned()),
                "seq": seq,
                "head": head,
            }),
        );
        let mut opening = Vec::new();
        self.append(&mut opening, fields);
        self.commit(&opening, true)?;
        tracing::info!(audit_file = %path.display(), rotated_to = %old.display(), "audit file rotated");
        Ok(())
    }
}

/// `YYYYmmddTHHMMSSZ` of a Unix time, for rotated file names (sortable).
fn rotation_stamp(unix: u64) -> String {
    let (days, seconds) = (unix / 86_400, unix % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::GENESIS;

    fn settings(path: &Path) -> Settings {
        Settings {
            path: path.to_path_buf(),
            fsync_every_batch: true,
            key: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_key: Arc::new(Mutex::new(None)),
            rotate_size: None,
            rotate_daily: false,
            records: prometheus::IntCounter::new("r", "r").unwrap(),
            checkpoints: prometheus::IntCounter::new("c", "c").unwrap(),
        }
    }

    #[test]
    fn ms2_priv_a_crash_between_the_lines_and_the_head_loses_nothing_and_forks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut prev = GENESIS.to_string();
        let mut text = String::new();
        let mut lens = Vec::new();
        for seq in 1..=3 {
            let line = chain::seal(serde_json::Map::new(), seq, &prev, None);
            prev = chain::hash_line(&line);
            text.push_str(&line);
            text.push('\n');
            lens.push(text.len() as u64);
        }
        // The head was last written after line 2, and line 4 was cut off mid-write.
        std::fs::write(&path, format!("{text}{{\"seq\":4,\"pr")).unwrap();
        let first_two = text.lines().take(2).collect::<Vec<_>>();
        let head = HeadFile {
            seq: 2,
            head: chain::hash_line(first_two[1]),
            len: lens[1],
        };
        std::fs::write(head_file_path(&path), head.bytes()).unwrap();
        let writer = Writer::open(settings(&path)).unwrap();
        assert_eq!(
            (writer.seq, writer.prev.clone(), writer.len),
            (3, prev, lens[2])
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn ms2_priv_a_failed_write_leaves_no_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut writer = Writer::open(settings(&path)).unwrap();
        let mut buffer = Vec::new();
        writer.append(&mut buffer, serde_json::Map::new());
        writer.commit(&buffer, true).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        // A read-only descriptor makes the next write fail, as a full disk would.
        writer.file = std::fs::File::open(&path).unwrap();
        let (seq, prev) = (writer.seq, writer.prev.clone());
        let mut buffer = Vec::new();
        writer.append(&mut buffer, serde_json::Map::new());
        assert!(writer.commit(&buffer, true).is_err());
        (writer.seq, writer.prev) = (seq, prev);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
        assert!(chain::verify(&path, &chain::Checks::default()).is_ok());
    }

    /// MS2-PRIV: `checkpoint_every` bounds the records between two checkpoints even when one
    /// batch holds several times that many (a reload storm once showed fewer checkpoints).
    #[test]
    fn ms2_priv_a_large_batch_gets_a_checkpoint_after_every_checkpoint_every_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut writer = Writer::open(Settings {
            checkpoint_every: 25,
            ..settings(&path)
        })
        .unwrap();
        let batch = (0..110)
            .map(|_| Message::Record {
                fields: serde_json::Map::new(),
                done: tokio::sync::oneshot::channel().0,
            })
            .collect();
        writer.write_batch(batch);
        let text = std::fs::read_to_string(&path).unwrap();
        let checkpoints: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, line)| line.contains("\"checkpoint\":"))
            .map(|(i, _)| i + 1)
            .collect();
        // Lines 26, 52, 78 and 104: 25 records, then a checkpoint, four times; 10 records left.
        assert_eq!(checkpoints, [26, 52, 78, 104]);
        assert_eq!(writer.since_checkpoint, 10);
        assert_eq!(writer.settings.checkpoints.get(), 4);
        assert_eq!(writer.settings.records.get(), 110);
        assert!(chain::verify(&path, &chain::Checks::default()).is_ok());
    }

    #[test]
    fn rotated_files_are_named_by_their_utc_time() {
        assert_eq!(rotation_stamp(0), "19700101T000000Z");
        assert_eq!(rotation_stamp(1_700_000_000), "20231114T221320Z");
        assert_eq!(rotation_stamp(951_782_400), "20000229T000000Z");
    }
}
