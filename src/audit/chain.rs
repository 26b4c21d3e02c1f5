//! The audit file's format: one JSON object per line, each holding its line number (`seq`)
//! and the SHA-256 of the line before it (`prev`), so an edited, removed or reordered line
//! breaks the chain (MS2-PRIV). With `audit.key_file` every line ends with `mac`, the
//! HMAC-SHA-256 of the line without it: a chain recomputed by someone without the key does
//! not verify. Checkpoint lines carry a JWS by the gateway's signing key over the count and
//! head they attest, which anyone holding the published JWKS can check.

use aws_lc_rs::hmac;
use sha2::Digest;
use std::io::BufRead;
use std::path::Path;

/// The `prev` of the first line.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const MAC_FIELD: &str = ",\"mac\":\"";

pub fn hash_line(line: &str) -> String {
    crate::encoding::hex(&sha2::Sha256::digest(line.as_bytes()))
}

/// The MAC key of `audit.key_file`.
#[derive(Clone)]
pub struct MacKey(hmac::Key);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

impl MacKey {
    pub fn new(secret: &[u8]) -> MacKey {
        MacKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Reads the key file (its bytes, surrounding whitespace trimmed).
    pub fn load(path: &Path) -> Result<MacKey, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(MacKey::new(bytes.trim_ascii()))
    }

    fn tag(&self, text: &str) -> String {
        crate::encoding::hex(hmac::sign(&self.0, text.as_bytes()).as_ref())
    }
}

/// The line for `fields` (a JSON object) at `seq` after `prev`, sealed with `key`.
pub(crate) fn seal(
    mut fields: serde_json::Map<String, serde_json::Value>,
    seq: u64,
    prev: &str,
    key: Option<&MacKey>,
) -> String {
    fields.remove("mac");
    fields.insert("seq".into(), seq.into());
    fields.insert("prev".into(), prev.into());
    let text = serde_json::Value::Object(fields).to_string();
    match key {
        None => text,
        Some(key) => {
            let tag = key.tag(&text);
            let mut line = text;
            line.pop();
            line.push_str(MAC_FIELD);
            line.push_str(&tag);
            line.push_str("\"}");
            line
        }
    }
}

/// The line without its `mac` member, and the MAC (`mac` is always the last member, and a
/// `"` inside a string is escaped, so the last `,"mac":"` is the member).
fn unseal(line: &str) -> Option<(String, &str)> {
    let at = line.rfind(MAC_FIELD)?;
    let tag = line[at + MAC_FIELD.len()..].strip_suffix("\"}")?;
    Some((format!("{}}}", &line[..at]), tag))
}

/// The payload a checkpoint's JWS signs.
pub(crate) fn checkpoint_payload(count: u64, head: &str, time: u64) -> serde_json::Value {
    serde_json::json!({ "count": count, "head": head, "iat": time })
}

/// What `fapigate audit verify` checks besides the chain.
#[derive(Default)]
pub struct Checks<'a> {
    /// Every line's MAC.
    pub key: Option<&'a MacKey>,
    /// Every checkpoint's signature, against this JWKS.
    pub jwks: Option<&'a jsonwebtoken::jwk::JwkSet>,
    /// A head exported earlier (a checkpoint's log line): the file must still contain it.
    pub head: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    /// Lines after the last checkpoint: chained (and MACed), not yet attested by a signature.
    pub unattested: u64,
}

/// Checks the whole chain of one file, and whatever `checks` asks (see [`verify_files`]).
pub fn verify(path: &Path, checks: &Checks<'_>) -> Result<Verified, String> {
    verify_files(&[path], checks)
}

/// Checks the chain through `paths`, oldest first (rotated files, then the current one):
/// each file's first line must link to the last line of the file before it. On failure names
/// the file and its first bad line (1-based). A `<file>.head` beside a file (its writer's
/// record of the last line) must match the file's end, or lines were removed from it.
pub fn verify_files(paths: &[&Path], checks: &Checks<'_>) -> Result<Verified, String> {
    let mut total = Verified {
        records: 0,
        checkpoints: 0,
        unattested: 0,
    };
    let mut last: Option<String> = None;
    let mut exported_seen = false;
    for path in paths {
        let (verified, end, seen) = verify_one(path, checks, last.as_deref())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        total.records += verified.records;
        total.checkpoints += verified.checkpoints;
        total.unattested = if verified.checkpoints > 0 {
            verified.unattested
        } else {
            total.unattested + verified.unattested
        };
        exported_seen |= seen;
        last = Some(end);
    }
    if let Some(head) = checks.head {
        if !exported_seen {
            return Err(format!(
                "the exported head {head} is not in the file: lines were removed from its end \
                 or it was rewritten"
            ));
        }
    }
    Ok(total)
}

/// One file: what it holds, its last line's hash, and whether the exported head is in it.
/// `start` is the previous file's last hash; without one, a first line that says it follows
/// a rotated file is taken at its word.
fn verify_one(
    path: &Path,
    checks: &Checks<'_>,
    start: Option<&str>,
) -> Result<(Verified, String, bool), String> {
    // The head first: a writer appends lines before it updates the head, so a live file is
    // at least as long as its head says.
    let recorded = super::writer::HeadFile::read(path);
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let lines = verify_lines(
        std::io::BufReader::new(file),
        checks,
        start,
        recorded.as_ref().map(|r| r.seq),
    )?;
    if let Some(recorded) = recorded {
        if lines.bytes < recorded.len
            || lines.hash_at_recorded.as_deref() != Some(recorded.head.as_str())
        {
            return Err(format!(
                "the file ends at line {} but its writer recorded line {} ({}): lines were \
                 removed from its end, or it was rewritten",
                lines.verified.records,
                recorded.seq,
                super::writer::head_file_path(path).display()
            ));
        }
    }
    Ok((lines.verified, lines.last, lines.exported_seen))
}

/// What one file's lines hold.
pub(crate) struct Lines {
    pub verified: Verified,
    /// The last line's hash (where the next file's chain goes on).
    pub last: String,
    /// Whether the exported head of [`Checks::head`] is among them.
    pub exported_seen: bool,
    pub bytes: u64,
    /// The hash of line `recorded_seq`, to compare with the head file.
    pub hash_at_recorded: Option<String>,
}

/// Checks the lines of one file. The fuzz target `audit_chain` runs it on arbitrary bytes:
/// an audit file is as trustworthy as the disk it sits on.
pub(crate) fn verify_lines(
    reader: impl BufRead,
    checks: &Checks<'_>,
    start: Option<&str>,
    recorded_seq: Option<u64>,
) -> Result<Lines, String> {
    let mut expected = start.unwrap_or(GENESIS).to_string();
    let mut verified = Verified {
        records: 0,
        checkpoints: 0,
        unattested: 0,
    };
    let mut exported_seen = false;
    let mut bytes = 0u64;
    let mut hash_at_recorded = None;
    for (index, line) in reader.lines().enumerate() {
        let number = index as u64 + 1;
        let at = |what: &str| format!("line {number}: {what}");
        let line = line.map_err(|e| at(&e.to_string()))?;
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|_| at("not JSON"))?;
        let link = value
            .get("rotated_from")
            .and_then(|r| r.get("head"))
            .and_then(|h| h.as_str());
        if number == 1 && start.is_none() {
            if let Some(link) = link {
                expected = link.to_string();
            }
        }
        if link.is_some_and(|l| l != expected) || (link.is_some() && number != 1) {
            return Err(at("its link to the rotated file before it is wrong"));
        }
        if value.get("prev").and_then(|p| p.as_str()) != Some(expected.as_str()) {
            return Err(at(
                "the chain is broken (a line before it was edited, removed or reordered)",
            ));
        }
        if let Some(seq) = value.get("seq") {
            if seq.as_u64() != Some(number) {
                return Err(at(
                    "its seq is not its line number (lines were removed or reordered)",
                ));
            }
        }
        if let Some(key) = checks.key {
            let (text, tag) = unseal(&line).ok_or_else(|| at("has no MAC"))?;
            if key.tag(&text) != tag {
                return Err(at(
                    "its MAC does not verify (the line was written without the key)",
                ));
            }
        }
        if let Some(checkpoint) = value.get("checkpoint") {
            let count = checkpoint.get("count").and_then(|c| c.as_u64());
            let head = checkpoint.get("head").and_then(|h| h.as_str());
            if count != Some(number - 1) || head != Some(expected.as_str()) {
                return Err(at("the checkpoint does not attest the lines before it"));
            }
            if let Some(jwks) = checks.jwks {
                let jws = value.get("jws").and_then(|j| j.as_str()).unwrap_or("");
                let time = value.get("time").and_then(|t| t.as_u64()).unwrap_or(0);
                let payload = checkpoint_signed(jws, jwks).map_err(|e| at(&e))?;
                if payload != checkpoint_payload(number - 1, &expected, time) {
                    return Err(at("the checkpoint's signature is for other contents"));
                }
            }
            verified.checkpoints += 1;
            verified.unattested = 0;
        }
        expected = hash_line(&line);
        exported_seen |= checks.head == Some(expected.as_str());
        verified.records = number;
        verified.unattested += u64::from(value.get("checkpoint").is_none());
        bytes += line.len() as u64 + 1;
        if recorded_seq == Some(number) {
            hash_at_recorded = Some(expected.clone());
        }
    }
    Ok(Lines {
        verified,
        last: expected,
        exported_seen,
        bytes,
        hash_at_recorded,
    })
}

/// The payload of a checkpoint's JWS, once its signature verifies with a key of `jwks`.
fn checkpoint_signed(
    jws: &str,
    jwks: &jsonwebtoken::jwk::JwkSet,
) -> Result<serde_json::Value, String> {
    let header = jsonwebtoken::decode_header(jws).map_err(|_| "the checkpoint has no JWS")?;
    let kid = header.kid.as_deref().unwrap_or("");
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| format!("the checkpoint's key {kid:?} is not in the JWKS"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(jws, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| "the checkpoint's signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(i: u64) -> serde_json::Map<String, serde_json::Value> {
        let value = serde_json::json!({"time": i, "route": "payments", "interaction_id": "a\",\"mac\":\"x"});
        value.as_object().unwrap().clone()
    }

    fn write(path: &Path, key: Option<&MacKey>, n: u64) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for i in 1..=n {
            let line = seal(fields(i), i, &prev, key);
            prev = hash_line(&line);
            lines.push(line);
        }
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
        lines
    }

    #[test]
    fn ms2_priv_the_chain_detects_edits_deletions_and_reordering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let lines = write(&path, None, 5);
        assert_eq!(verify(&path, &Checks::default()).unwrap().records, 5);

        let edited = lines.join("\n").replacen("\"time\":2", "\"time\":9", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(verify(&path, &Checks::default())
            .unwrap_err()
            .contains("audit.jsonl: line 3:"));

        let mut deleted = lines.clone();
        deleted.remove(1);
        std::fs::write(&path, deleted.join("\n") + "\n").unwrap();
        assert!(verify(&path, &Checks::default())
            .unwrap_err()
            .contains("audit.jsonl: line 2:"));

        let mut reordered = lines.clone();
        reordered.swap(2, 3);
        std::fs::write(&path, reordered.join("\n") + "\n").unwrap();
        assert!(verify(&path, &Checks::default()).is_err());
    }

    #[test]
    fn ms2_priv_a_chain_recomputed_without_the_key_fails_its_macs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = MacKey::new(b"an audit key of thirty-two bytes!!");
        write(&path, Some(&key), 3);
        let checks = Checks {
            key: Some(&key),
            ..Checks::default()
        };
        assert_eq!(verify(&path, &checks).unwrap().records, 3);
        // A forger rewrites the chain consistently, with a key of their own.
        write(&path, Some(&MacKey::new(b"someone else's key")), 3);
        assert!(
            verify(&path, &Checks::default()).is_ok(),
            "the chain alone holds"
        );
        assert!(verify(&path, &checks)
            .unwrap_err()
            .ends_with("line 1: its MAC does not verify (the line was written without the key)"));
        write(&path, None, 3);
        assert!(verify(&path, &checks)
            .unwrap_err()
            .ends_with("line 1: has no MAC"));
    }

    #[test]
    fn ms2_priv_rotated_files_verify_as_one_chain_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let lines = write(&old, None, 3);
        let mut rotated = fields(9);
        rotated.insert(
            "rotated_from".into(),
            serde_json::json!({"file": "a.jsonl", "seq": 3, "head": hash_line(&lines[2])}),
        );
        let first = seal(rotated, 1, &hash_line(&lines[2]), None);
        let second = seal(fields(10), 2, &hash_line(&first), None);
        std::fs::write(&new, format!("{first}\n{second}\n")).unwrap();
        let both = verify_files(&[&old, &new], &Checks::default()).unwrap();
        assert_eq!(both.records, 5);
        // Alone, the new file is taken at its word about the file before it.
        assert!(verify(&new, &Checks::default()).is_ok());
        // Out of order, or with a file missing in between: the link is named.
        let third = dir.path().join("c.jsonl");
        write(&third, None, 2);
        let error = verify_files(&[&third, &new], &Checks::default()).unwrap_err();
        assert!(
            error.ends_with("b.jsonl: line 1: its link to the rotated file before it is wrong"),
            "{error}"
        );
    }

    #[test]
    fn ms2_priv_truncation_after_an_exported_head_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let lines = write(&path, None, 4);
        let head = hash_line(&lines[3]);
        let checks = Checks {
            head: Some(&head),
            ..Checks::default()
        };
        assert!(verify(&path, &checks).is_ok());
        std::fs::write(&path, lines[..3].join("\n") + "\n").unwrap();
        assert!(verify(&path, &checks)
            .unwrap_err()
            .starts_with("the exported head"));
    }
}
