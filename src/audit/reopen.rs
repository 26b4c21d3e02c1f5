//! Opening an audit file where its chain left off: the lock (one writer per file), a torn
//! last line cut off, the lines a crash wrote after the recorded head adopted, and a file
//! without a head file read once.

use super::chain::{self, GENESIS};
use super::writer::{head_file_path, HeadFile};
use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The audit file (appended to, locked) and its head file.
pub(super) fn open_files(path: &Path) -> Result<(std::fs::File, std::fs::File), String> {
    let at = |e: std::io::Error| format!("audit.path ({}): {e}", path.display());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(at)?;
    lock(&file).map_err(|e| format!("audit.path ({}): {e}", path.display()))?;
    let head_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(head_file_path(path))
        .map_err(at)?;
    Ok((file, head_file))
}

/// Cuts off a last line without its newline (a write a crash interrupted: never
/// acknowledged); returns the file's length after.
pub(super) fn drop_torn_line(file: &std::fs::File, path: &Path) -> Result<u64, String> {
    let at = |e: std::io::Error| format!("audit.path ({}): {e}", path.display());
    let len = file.metadata().map_err(at)?.len();
    // Read backwards from the end to the last newline: no whole-file read at start-up.
    let mut complete = 0;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.read_exact_at(part, start).map_err(at)?;
        if let Some(i) = part.iter().rposition(|b| *b == b'\n') {
            complete = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if complete < len {
        tracing::warn!(file = %path.display(), bytes = len - complete,
            "a torn last audit line (a write cut off by a crash) was removed");
        file.set_len(complete).map_err(at)?;
    }
    Ok(complete)
}

/// The lines after the recorded head that continue its chain (written before a crash kept
/// the head from being updated); the first that does not is left for `verify` to name.
pub(super) fn adopt_tail(path: &Path, head: HeadFile) -> Result<(u64, String), String> {
    let at = |e: std::io::Error| format!("audit.path ({}): {e}", path.display());
    let file = std::fs::File::open(path).map_err(at)?;
    let mut tail = Vec::new();
    {
        use std::io::{Read, Seek};
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(head.len)).map_err(at)?;
        file.read_to_end(&mut tail).map_err(at)?;
    }
    let (mut seq, mut prev) = (head.seq, head.head);
    for line in String::from_utf8_lossy(&tail).lines() {
        let value: Option<serde_json::Value> = serde_json::from_str(line).ok();
        let continues = value.as_ref().is_some_and(|v| {
            v.get("prev").and_then(|p| p.as_str()) == Some(prev.as_str())
                && v.get("seq").and_then(|s| s.as_u64()) == Some(seq + 1)
        });
        if !continues {
            tracing::error!(file = %path.display(), after = seq,
                "the audit file holds lines that do not continue its recorded head");
            break;
        }
        seq += 1;
        prev = chain::hash_line(line);
    }
    Ok((seq, prev))
}

/// The line count and last line's hash of a file written before head files existed.
pub(super) fn scan(path: &Path) -> Result<(u64, String), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut count = 0;
    let mut prev = GENESIS.to_string();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.is_empty() {
            continue;
        }
        count += 1;
        prev = chain::hash_line(&line);
    }
    Ok((count, prev))
}

fn lock(file: &std::fs::File) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows; no memory is passed.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status == 0 {
        Ok(())
    } else {
        Err("the file is in use by another fapigate process (one writer per audit file)".into())
    }
}
