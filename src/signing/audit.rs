//! The audit trail of signed exchanges: append-only JSON lines, each holding the SHA-256 of
//! the line before it (`prev`), so an edited, removed or reordered line breaks the chain
//! (MS2-PRIV). No bodies and no tokens: digests and signatures only.

use base64::Engine;
use sha2::Digest;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct AuditLog {
    path: PathBuf,
    fsync_every_record: bool,
    state: Mutex<Option<(std::fs::File, String)>>,
}

#[derive(serde::Serialize)]
pub struct Record<'a> {
    pub time: u64,
    pub interaction_id: &'a str,
    pub route: &'a str,
    pub client_id: Option<&'a str>,
    pub request_digest: Option<&'a str>,
    pub request_signature_input: Option<&'a str>,
    pub request_signature: Option<&'a str>,
    pub response_status: u16,
    pub response_digest: Option<&'a str>,
    pub response_signature_input: Option<&'a str>,
    pub response_signature: Option<&'a str>,
}

fn hash_line(line: &str) -> String {
    crate::state::hex(&sha2::Sha256::digest(line.as_bytes()))
}

impl AuditLog {
    pub fn new(path: &Path, fsync_every_record: bool) -> Self {
        AuditLog {
            path: path.to_path_buf(),
            fsync_every_record,
            state: Mutex::new(None),
        }
    }

    /// Appends one record, chained to the last line of the file.
    pub fn append(&self, record: &Record<'_>) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.is_none() {
            let prev = last_line(&self.path)?
                .map(|l| hash_line(&l))
                .unwrap_or_else(|| GENESIS.into());
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            *state = Some((file, prev));
        }
        let Some((file, prev)) = state.as_mut() else {
            return Err("audit log not open".into());
        };
        let mut value = serde_json::to_value(record).map_err(|e| e.to_string())?;
        value["prev"] = serde_json::Value::String(prev.clone());
        let line = value.to_string();
        file.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if self.fsync_every_record {
            file.sync_data()
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
        }
        *prev = hash_line(&line);
        Ok(())
    }
}

fn last_line(path: &Path) -> Result<Option<String>, String> {
    match std::fs::File::open(path) {
        Ok(file) => Ok(std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.is_empty())
            .last()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Checks the whole chain; on failure names the first broken line (1-based).
pub fn verify(path: &Path) -> Result<usize, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut expected = GENESIS.to_string();
    let mut count = 0;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", index + 1))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|_| format!("line {}: not JSON", index + 1))?;
        if value.get("prev").and_then(|p| p.as_str()) != Some(expected.as_str()) {
            return Err(format!(
                "line {}: the chain is broken (a line before it was edited, removed or reordered)",
                index + 1
            ));
        }
        expected = hash_line(&line);
        count += 1;
    }
    Ok(count)
}

/// base64 of SHA-256, for digests in records.
pub fn b64_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> Record<'static> {
        Record {
            time: i,
            interaction_id: "id",
            route: "payments",
            client_id: Some("tpp"),
            request_digest: None,
            request_signature_input: None,
            request_signature: None,
            response_status: 200,
            response_digest: Some("sha-256=:x:"),
            response_signature_input: Some("sig1=()"),
            response_signature: Some("sig1=:AA==:"),
        }
    }

    #[test]
    fn ms2_priv_the_chain_detects_edits_deletions_and_reordering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::new(&path, true);
        for i in 0..4 {
            log.append(&record(i)).unwrap();
        }
        // A second writer (a restarted gateway) continues the chain.
        AuditLog::new(&path, false).append(&record(4)).unwrap();
        assert_eq!(verify(&path), Ok(5));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();

        let edited = text.replacen("\"time\":2", "\"time\":9", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(verify(&path).unwrap_err().starts_with("line 4:"));

        let deleted: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| *l)
            .collect();
        std::fs::write(&path, deleted.join("\n") + "\n").unwrap();
        assert!(verify(&path).unwrap_err().starts_with("line 2:"));

        let mut reordered = lines.clone();
        reordered.swap(2, 3);
        std::fs::write(&path, reordered.join("\n") + "\n").unwrap();
        assert!(verify(&path).is_err());
    }
}
