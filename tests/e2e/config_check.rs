//! `fapigate check`: the contract file is accepted; mistakes are named by key and line.

use crate::support::*;
use std::process::Command;

fn check(config: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("fapigate check runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

/// Lays out the files `conf/fapigate.example.toml` names, as an operator would.
fn contract_layout(dir: &std::path::Path) {
    Pki::new(dir);
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::create_dir_all(dir.join("audit")).unwrap();
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    write_private(
        &dir.join("keys/response-signing.pem"),
        &ed25519.serialize_pem(),
    );
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    write_private(
        &dir.join("keys/introspection-client.pem"),
        &ec.serialize_pem(),
    );
    let contract = include_str!("../../conf/fapigate.example.toml");
    std::fs::write(dir.join("fapigate.toml"), contract).unwrap();
}

#[test]
fn check_accepts_the_contract_file_as_written() {
    let dir = temp_dir();
    contract_layout(dir.path());
    let (ok, stdout, stderr) = check(&dir.path().join("fapigate.toml"));
    assert!(ok, "check refused the contract file:\n{stderr}");
    assert!(
        stdout.contains("ok: listener 0.0.0.0:8443 (tls, client_cert=request), admin 127.0.0.1:9901, profile Fapi2, 1 issuer, 1 upstream, 4 routes"),
        "{stdout}"
    );
}

#[test]
fn check_lists_every_error_with_key_and_line() {
    let dir = temp_dir();
    contract_layout(dir.path());
    let contract = std::fs::read_to_string(dir.path().join("fapigate.toml")).unwrap();
    let broken = contract
        .replace(
            "id = \"accounts\"\nmethods = [\"GET\"]\npath = \"/accounts\"\nupstream = \"core-banking\"",
            "id = \"accounts\"\nmethods = [\"GET\"]\npath = \"/accounts\"\nupstream = \"core-bankin\"",
        )
        .replace("max_clock_skew = \"10s\"", "max_clock_skew = \"10\"")
        .replace("\"/accounts\" = { contains = \"{path.account_id}\" }", "\"/accounts\" = { contains = \"{path.acount_id}\" }");
    assert_ne!(broken, contract);
    let config = dir.path().join("fapigate.toml");
    std::fs::write(&config, &broken).unwrap();
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    let line_of = |needle: &str| {
        broken
            .lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap()
    };
    assert!(stderr.contains("3 errors"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "line {}: route[0].upstream: route \"accounts\": upstream \"core-bankin\" is not defined",
            line_of("upstream = \"core-bankin\"")
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "line {}: profile.max_clock_skew: \"10\" has no unit",
            line_of("max_clock_skew")
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("route[1].authorization_details[0].match.\"/accounts\".contains: {path.acount_id} is not a parameter of the route's path"),
        "{stderr}"
    );
}

#[test]
fn check_names_an_unknown_key() {
    let dir = temp_dir();
    contract_layout(dir.path());
    let config = dir.path().join("fapigate.toml");
    let contract = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        contract.replace(
            "jwks_refresh = \"5m\"",
            "jwks_refresh = \"5m\"\njwks_refresh_typo = 1",
        ),
    )
    .unwrap();
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    let line = contract
        .lines()
        .position(|l| l.contains("jwks_refresh = "))
        .unwrap()
        + 2;
    assert!(
        stderr.contains(&format!(
            "line {line}: issuer[0].jwks_refresh_typo: unknown field `jwks_refresh_typo`"
        )),
        "{stderr}"
    );
}

#[test]
fn check_refuses_overlapping_routes_and_world_readable_keys() {
    let dir = temp_dir();
    contract_layout(dir.path());
    let config = dir.path().join("fapigate.toml");
    let mut contract = std::fs::read_to_string(&config).unwrap();
    contract.push_str("\n[[route]]\nid = \"shadow\"\nmethods = [\"GET\", \"POST\"]\npath = \"/accounts/{id}/balances\"\nupstream = \"core-banking\"\n");
    std::fs::write(&config, contract).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("keys/response-signing.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    assert!(stderr.contains("route[4].path: route \"shadow\" (/accounts/{id}/balances) could match the same requests as route[1] \"account-balances\""), "{stderr}");
    assert!(
        stderr.contains("response_signing.key: ")
            && stderr.contains("private key is accessible to other users (mode 644)"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_a_bad_file_and_starts_nothing() {
    let dir = temp_dir();
    let config = dir.path().join("fapigate.toml");
    std::fs::write(&config, "[listener\naddr = 1").unwrap();
    let output = Command::new(BINARY)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");
}
