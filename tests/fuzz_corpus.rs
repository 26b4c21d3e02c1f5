//! Replays every committed fuzz input on the stable toolchain: the corpora under
//! `fuzz/corpus/<target>/` and the findings under `fuzz/regressions/<target>/`, through the
//! same functions the libFuzzer targets call (src/fuzzing.rs). A finding that was fixed can
//! never come back unnoticed, and no nightly toolchain is needed for it.

use std::path::{Path, PathBuf};

const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");

fn inputs(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs each input of `folder` through `target`; a panic names the file.
fn replay(target: fn(&[u8]), folder: &Path) -> usize {
    let files = inputs(folder);
    for file in &files {
        let data = std::fs::read(file).expect("read a corpus file");
        let outcome = std::panic::catch_unwind(|| target(&data));
        assert!(outcome.is_ok(), "{} panics", file.display());
    }
    files.len()
}

#[test]
fn every_committed_corpus_input_and_finding_runs_without_a_panic() {
    for (name, target) in fapigate::fuzzing::TARGETS {
        let fuzz = Path::new(FUZZ_DIR);
        let corpus = replay(target, &fuzz.join("corpus").join(name));
        assert!(corpus > 0, "fuzz/corpus/{name} holds no input");
        replay(target, &fuzz.join("regressions").join(name));
    }
}

#[test]
fn every_target_has_its_libfuzzer_binary_and_nothing_else_is_there() {
    let mut declared: Vec<&str> = fapigate::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    let mut binaries: Vec<String> = inputs(&Path::new(FUZZ_DIR).join("fuzz_targets"))
        .iter()
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    declared.sort_unstable();
    binaries.sort_unstable();
    assert_eq!(declared, binaries);
    let manifest = std::fs::read_to_string(Path::new(FUZZ_DIR).join("Cargo.toml")).unwrap();
    for name in declared {
        assert!(
            manifest.contains(&format!(
                "name = \"{name}\"\npath = \"fuzz_targets/{name}.rs\""
            )),
            "fuzz/Cargo.toml declares no [[bin]] {name}"
        );
    }
}
