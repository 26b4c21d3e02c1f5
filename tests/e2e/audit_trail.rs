//! Issue 15: the audit chain holds up. One writer per process survives reloads (a reload
//! storm under signed load leaves one intact chain with one record per signed response); each
//! line is MACed and checkpoints are signed, so a rewritten middle line and a cut-off end are
//! both named; one file has one writer.

use crate::bank::*;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KEYED: &str = "key_file = \"keys/audit.key\"\ncheckpoint_every = 25";

fn audit_file(bank: &Bank) -> PathBuf {
    bank.dir.path().join("audit/audit.jsonl")
}

fn jwks_file(bank: &Bank) -> PathBuf {
    let jwks = bank.request("/.well-known/jwks.json", &[]);
    assert_eq!(jwks.status, 200);
    let path = bank.dir.path().join("published.jwks.json");
    std::fs::write(&path, &jwks.body).unwrap();
    path
}

/// `fapigate audit verify FILE ARGS...`: (passed, stdout, stderr).
fn verify(file: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BINARY)
        .args(["audit", "verify"])
        .arg(file)
        .args(args)
        .output()
        .expect("fapigate audit verify runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn is_checkpoint(line: &str) -> bool {
    line.contains("\"checkpoint\":")
}

#[test]
fn ms2_priv_a_reload_storm_under_signed_load_leaves_one_intact_chain() {
    let bank = Bank::start(Options {
        signing: true,
        audit_extra: KEYED,
        ..Options::default()
    });
    let jwks = jwks_file(&bank);
    let stop = AtomicBool::new(false);
    let signed = AtomicUsize::new(0);
    let reloads = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for client in 0..4 {
            let (bank, stop, signed) = (&bank, &stop, &signed);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/uk/statements/{client}-{i}");
                    let response = bank.request(&path, &[]);
                    assert_eq!(response.status, 200, "{response:?}");
                    assert!(response.header("x-jws-signature").is_some());
                    signed.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            });
        }
        // SIGHUP every 100 ms for 20 s: requests run on the old engines while new ones take
        // over, and all append to the one chain.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            bank.gateway.signal("HUP");
            reloads.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let signed = signed.into_inner();
    let metrics = bank.metrics_showing(&format!("fapigate_audit_records_total {signed}"));
    assert!(
        metrics.contains("fapigate_config_reloads_total{result=\"ok\"}"),
        "{metrics}"
    );
    let file = audit_file(&bank);
    let all = lines(&file);
    let records = all.iter().filter(|l| !is_checkpoint(l)).count();
    assert_eq!(records, signed, "one record per signed response");
    assert!(all.iter().filter(|l| is_checkpoint(l)).count() >= signed / 25);
    let (ok, out, err) = verify(
        &file,
        &[
            "--key",
            &bank.dir.path().join("keys/audit.key").to_string_lossy(),
            "--jwks",
            &jwks.to_string_lossy(),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("chain intact; MACs verified, checkpoint signatures verified"),
        "{out}"
    );
    println!(
        "reload storm: {} reloads, {signed} signed responses, {} lines",
        reloads.into_inner(),
        all.len()
    );
}

#[test]
fn ms2_priv_a_rewritten_middle_line_and_a_cut_off_end_are_both_named() {
    let mut bank = Bank::start(Options {
        signing: true,
        audit_extra: KEYED,
        ..Options::default()
    });
    let jwks = jwks_file(&bank);
    for i in 0..60 {
        assert_eq!(
            bank.request(&format!("/uk/statements/{i}"), &[]).status,
            200
        );
    }
    // The head each checkpoint exported, as an outside system would have kept it.
    let exported: Vec<String> = bank
        .gateway
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "audit checkpoint")
        .filter_map(|v| v["audit_head"].as_str().map(str::to_string))
        .collect();
    assert_eq!(exported.len(), 2, "checkpoints after 25 and 50 records");
    let _ = bank.gateway.child.kill();
    let _ = bank.gateway.child.wait();
    let file = audit_file(&bank);
    let key = bank.dir.path().join("keys/audit.key");
    let key = key.to_string_lossy();
    let jwks = jwks.to_string_lossy();
    let keyed = ["--key", &key, "--jwks", &jwks];
    let (ok, _, err) = verify(&file, &keyed);
    assert!(ok, "{err}");
    let original = lines(&file);
    let head = exported.last().unwrap();
    assert!(verify(&file, &["--head", head]).0);

    // The end cut off after the last exported head: the head file and the head both say so.
    let cut = &original[..original.len() - 3];
    std::fs::write(&file, cut.join("\n") + "\n").unwrap();
    let (ok, _, err) = verify(&file, &keyed);
    assert!(!ok);
    assert!(
        err.contains(&format!("the file ends at line {}", cut.len())),
        "{err}"
    );
    let cut_to_head: Vec<&String> = original
        .iter()
        .take_while(|l| &hash_of(l) != head)
        .collect();
    std::fs::write(
        &file,
        cut_to_head
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .unwrap();
    std::fs::remove_file(fapigate::audit_trail::head_file_path(&file)).unwrap();
    let (ok, _, err) = verify(&file, &["--head", head]);
    assert!(!ok);
    assert!(err.contains("is not in the file"), "{err}");

    // A middle line rewritten and the chain after it recomputed, by someone without the key:
    // the chain holds, the MAC names the line.
    let mut forged = original.clone();
    let mut prev = hash_of(&forged[9]);
    for (index, line) in forged.iter_mut().enumerate().skip(10) {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        if index == 10 {
            value["route"] = "another-route".into();
        }
        value["prev"] = prev.clone().into();
        if value.get("checkpoint").is_some() {
            value["checkpoint"]["head"] = prev.clone().into();
        }
        // The old MAC is kept, last, as the gateway writes it.
        let mac = value.as_object_mut().unwrap().remove("mac").unwrap();
        let mut text = value.to_string();
        text.pop();
        *line = format!("{text},\"mac\":{mac}}}");
        prev = hash_of(line);
    }
    std::fs::write(&file, forged.join("\n") + "\n").unwrap();
    let (ok, _, err) = verify(&file, &[]);
    assert!(ok, "without the key the recomputed chain passes: {err}");
    let (ok, _, err) = verify(&file, &keyed);
    assert!(!ok);
    assert!(err.contains("line 11: its MAC does not verify"), "{err}");

    // A restart without a head file reads the file once and goes on from its last line.
    std::fs::write(&file, original.join("\n") + "\n").unwrap();
    let head_file = fapigate::audit_trail::head_file_path(&file);
    let _ = std::fs::remove_file(&head_file);
    let old = format!("127.0.0.1:{}", bank.gateway.port);
    let text = std::fs::read_to_string(&bank.gateway.config).unwrap();
    let socket = Reserved::new();
    let text = text.replace(&old, &format!("127.0.0.1:{}", socket.port()));
    bank.gateway = Gateway::launch(bank.dir.path(), socket, |_, _| text);
    assert_eq!(bank.request("/uk/statements/after", &[]).status, 200);
    let (ok, _, err) = verify(&audit_file(&bank), &keyed);
    assert!(ok, "{err}");
}

fn hash_of(line: &str) -> String {
    fapigate::audit_trail::hash_line(line)
}

#[test]
fn ms2_priv_one_audit_file_has_one_writer() {
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let file = audit_file(&bank);
    let output = crate::shared_state::run_with_changes(&bank, |text| {
        text.replace(
            "path = \"audit/audit.jsonl\"",
            &format!("path = \"{}\"", file.display()),
        )
    });
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by another fapigate process"),
        "{stderr}"
    );
    // `fapigate check` of the same configuration does not need the file.
    let check = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&bank.gateway.config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    // Two processes on two files: each chain verifies by itself.
    let other = bank.replica("replica-b");
    let other_file = bank.dir.path().join("replica-b/audit/audit.jsonl");
    assert_eq!(
        curl_tls(&other, &bank.pki, "/uk/statements/b", &[]).status,
        200
    );
    assert_eq!(bank.request("/uk/statements/a", &[]).status, 200);
    for file in [&file, &other_file] {
        let (ok, out, err) = verify(file, &[]);
        assert!(ok && out.contains("1 records"), "{out}{err}");
    }
}

#[test]
fn ms2_priv_rotated_audit_files_verify_as_one_chain() {
    let bank = Bank::start(Options {
        signing: true,
        audit_extra: "key_file = \"keys/audit.key\"\nrotate_size = \"64KiB\"",
        ..Options::default()
    });
    let jwks = jwks_file(&bank);
    // About 400 bytes a line: 400 records fill two 64 KiB files and begin a third.
    std::thread::scope(|scope| {
        for client in 0..4 {
            let bank = &bank;
            scope.spawn(move || {
                for i in 0..100 {
                    let response = bank.request(&format!("/uk/statements/{client}-{i}"), &[]);
                    assert_eq!(response.status, 200);
                }
            });
        }
    });
    let folder = bank.dir.path().join("audit");
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("audit.jsonl.") && !name.ends_with(".head")
        })
        .collect();
    rotated.sort();
    assert!(rotated.len() >= 2, "{rotated:?}");
    let mut files = rotated.clone();
    files.push(audit_file(&bank));
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let key = bank.dir.path().join("keys/audit.key").display().to_string();
    let jwks = jwks.display().to_string();
    // A shell glob names the head files too: they are skipped (read beside their files).
    let glob_heads: Vec<String> = rotated
        .iter()
        .map(|f| {
            fapigate::audit_trail::head_file_path(f)
                .display()
                .to_string()
        })
        .collect();
    let mut args: Vec<&str> = names.iter().skip(1).map(String::as_str).collect();
    args.extend(glob_heads.iter().map(String::as_str));
    args.extend(["--key", key.as_str(), "--jwks", jwks.as_str()]);
    let (ok, out, err) = verify(&files[0], &args);
    assert!(ok, "{err}");
    let records: usize = files
        .iter()
        .map(|f| {
            lines(f)
                .iter()
                .filter(|l| !is_checkpoint(l) && !l.contains("\"rotated_from\":"))
                .count()
        })
        .sum();
    assert_eq!(records, 400, "{out}");
    // Each new file begins with a line that links to the one before.
    for file in &files[1..] {
        assert!(
            lines(file)[0].contains("\"rotated_from\":"),
            "{}",
            file.display()
        );
    }
    // A file left out is named.
    let mut gap: Vec<&str> = vec![names[2].as_str()];
    gap.extend(["--key", key.as_str()]);
    let (ok, _, err) = verify(&files[0], &gap);
    assert!(!ok);
    assert!(
        err.contains("line 1: its link to the rotated file before it is wrong"),
        "{err}"
    );
}
