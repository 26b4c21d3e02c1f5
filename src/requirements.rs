//! The requirement IDs cited in code and tests are the project's own: each is defined in
//! `tests/requirements.md`. This test fails when a comment, message or test cites one that is
//! not, so the evidence a test gives always points at a stated requirement.

use std::collections::BTreeSet;
use std::path::Path;

/// The families of IDs the project uses (see `tests/requirements.md`).
const FAMILIES: &[&str] = &[
    "BEARER", "BR", "CC", "DIG", "DPOP", "FAPI1", "HS2", "HTTP", "IA", "INT", "JIR", "JWT", "MS2",
    "MTLS", "RAR", "SP2", "UKOB",
];

fn is_id_char(c: char) -> bool {
    c.is_ascii_digit() || c.is_ascii_uppercase() || c == '.' || c == '-'
}

/// The IDs cited in `text`: `FAMILY-…` made of digits, capitals, `.` and `-`, not part of a
/// longer word (`HTTP-Method-Override` is a header, not an ID). `X-1..8` cites.
fn cited(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for family in FAMILIES {
        let needle = format!("{family}-");
        for (at, _) in text.match_indices(&needle) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[at..];
            let end = rest.find(|c: char| !is_id_char(c)).unwrap_or(rest.len());
            if rest[end..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            {
                continue;
            }
            let id = rest[..end].trim_end_matches(['.', '-']);
            if id.len() <= needle.len() {
                continue;
            }
            match id.split_once("..") {
                Some((first, last)) => {
                    let (stem, from) = first.rsplit_once('-').unwrap_or((first, ""));
                    match (from.parse::<u32>(), last.parse::<u32>()) {
                        (Ok(from), Ok(to)) if from <= to => {
                            found.extend((from..=to).map(|n| format!("{stem}-{n}")))
                        }
                        _ => found.push(id.to_string()),
                    }
                }
                None => found.push(id.to_string()),
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path.display().to_string(), text));
            }
        }
    }
}

#[test]
fn every_cited_requirement_is_defined_in_tests_requirements_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let document = std::fs::read_to_string(root.join("tests/requirements.md")).unwrap();
    let defined: BTreeSet<String> = document
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" |").next())
        .filter(|id| cited(id).first().map(String::as_str) == Some(*id))
        .map(str::to_string)
        .collect();
    assert!(defined.len() > 50, "{defined:?}");
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("tests"), &mut files);
    let mut missing = BTreeSet::new();
    for (path, text) in &files {
        if path.ends_with("requirements.rs") {
            continue;
        }
        for id in cited(text) {
            if !defined.contains(&id) {
                missing.insert(format!("{id} (cited in {path})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited but not defined in tests/requirements.md: {missing:?}"
    );
}

#[test]
fn ids_are_read_as_cited() {
    assert_eq!(cited("see DPOP-4.3-9."), ["DPOP-4.3-9"]);
    assert_eq!(
        cited("(HS2-REQ-RS-1..3)"),
        ["HS2-REQ-RS-1", "HS2-REQ-RS-2", "HS2-REQ-RS-3"]
    );
    assert!(cited("X-HTTP-Method-Override and MY_SP2-RS-1").is_empty());
    assert_eq!(cited("MS2-PRIV, CC-2.4"), ["CC-2.4", "MS2-PRIV"]);
}
