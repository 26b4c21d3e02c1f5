//! Issue 15 §3: the response-signing key lives in an HSM. A real SoftHSM2 token (Debian
//! `softhsm2`) is made by the test, its keys generated inside it by `pkcs11-tool` (they never
//! exist as files); the gateway signs through PKCS#11, publishes the public key it reads from
//! the token, and an independent verifier checks the signature. A wrong PIN or a key that is
//! not there stops the start with a clear error that never shows the PIN.

use crate::bank::*;
use crate::signing::{dpop_exchange, verify_response};
use crate::support::*;
use std::path::PathBuf;
use std::process::Command;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "hsm-pin-5309";
const TOKEN: &str = "fapigate";

struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    /// A fresh token with an Ed25519 key `rs-ed`, a P-256 key `rs-p256` and an RSA key
    /// `rs-rsa`.
    fn start() -> SoftHsm {
        let dir = tempfile::Builder::new()
            .prefix("fapigate-softhsm-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        write_private(&dir.path().join("pin"), &format!("{PIN}\n"));
        write_private(&dir.path().join("wrong-pin"), "0000\n");
        let hsm = SoftHsm { dir };
        hsm.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                TOKEN,
                "--pin",
                PIN,
                "--so-pin",
                "so-5309",
            ],
        );
        for (kind, label) in [
            ("EC:edwards25519", "rs-ed"),
            ("EC:prime256v1", "rs-p256"),
            ("rsa:2048", "rs-rsa"),
        ] {
            hsm.run(
                "pkcs11-tool",
                &[
                    "--module",
                    MODULE,
                    "--token-label",
                    TOKEN,
                    "--login",
                    "--pin",
                    PIN,
                    "--keypairgen",
                    "--key-type",
                    kind,
                    "--label",
                    label,
                ],
            );
        }
        hsm
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".into(), self.conf().display().to_string())]
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let output = Command::new(tool)
            .env("SOFTHSM2_CONF", self.conf())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(output.status.success(), "{tool} {args:?}: {output:?}");
    }

    /// The `[response_signing]` key lines for the token's key `label`.
    fn key_lines(&self, label: &str, pin: &str) -> String {
        format!(
            "key = \"pkcs11:token={TOKEN};object={label}?module-path={MODULE}\"\npin_file = \"{}\"",
            self.dir.path().join(pin).display()
        )
    }
}

fn signed_statement(bank: &Bank) -> (Response, serde_json::Value) {
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    dpop_exchange(bank, &token, &key, "GET", "/statements/7")
}

#[test]
fn hs2_resp_rs_responses_are_signed_by_keys_that_live_in_softhsm2() {
    let hsm = SoftHsm::start();
    for (label, alg) in [
        ("rs-ed", "ed25519"),
        ("rs-p256", "ecdsa-p256-sha256"),
        ("rs-rsa", "rsa-pss-sha512"),
    ] {
        let bank = Bank::start(Options {
            signing: true,
            signing_alg: alg,
            response_key: Some(hsm.key_lines(label, "pin")),
            gateway_env: hsm.env(),
            ..Options::default()
        });
        let config = std::fs::read_to_string(&bank.gateway.config).unwrap();
        assert!(
            config.contains(&format!("key = \"pkcs11:token={TOKEN};object={label}?")),
            "{config}"
        );
        let (response, request) = signed_statement(&bank);
        assert_eq!(response.status, 200, "{response:?}");
        assert!(response.header("signature").is_some());
        let (ok, why) = verify_response(&bank, &response, &request);
        assert!(ok, "{alg}: {why}");
        // A reload keeps the token's session: responses are still signed by it.
        bank.gateway.signal("HUP");
        bank.metrics_showing("fapigate_config_reloads_total{result=\"ok\"} 1");
        let (response, request) = signed_statement(&bank);
        assert_eq!(response.status, 200, "after a reload: {response:?}");
        let (ok, why) = verify_response(&bank, &response, &request);
        assert!(ok, "{alg} after a reload: {why}");
        // The detached JWS format signs through the token too (EdDSA / ES256).
        assert!(bank
            .request("/uk/statements/1", &[])
            .header("x-jws-signature")
            .is_some());
        let log = std::fs::read_to_string(&bank.gateway.log).unwrap()
            + &std::fs::read_to_string(bank.dir.path().join("gateway.err")).unwrap_or_default();
        assert!(!log.contains(PIN), "the PIN was logged");
    }
}

#[test]
fn a_wrong_pin_or_a_missing_key_stops_the_start_naming_what_to_check() {
    let hsm = SoftHsm::start();
    let bank = Bank::start(Options {
        signing: true,
        ..Options::default()
    });
    let text = std::fs::read_to_string(&bank.gateway.config).unwrap();
    let check = |lines: String| {
        let config = bank.dir.path().join("hsm.toml");
        std::fs::write(
            &config,
            text.replace("key = \"keys/response-signing.json\"", &lines),
        )
        .unwrap();
        let output = Command::new(BINARY)
            .args(["check", "--config"])
            .arg(&config)
            .envs(hsm.env())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{output:?}");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let wrong_pin = check(hsm.key_lines("rs-ed", "wrong-pin"));
    assert!(
        wrong_pin.contains(
            "response_signing.key: the PKCS#11 login failed (check response_signing.pin_file)"
        ),
        "{wrong_pin}"
    );
    assert!(
        !wrong_pin.contains("0000") && !wrong_pin.contains(PIN),
        "{wrong_pin}"
    );
    let missing = check(hsm.key_lines("no-such-key", "pin"));
    assert!(
        missing.contains(
            "no private key in the token matches pkcs11:token=fapigate;object=no-such-key"
        ),
        "{missing}"
    );
    let no_pin = check(format!(
        "key = \"pkcs11:token={TOKEN};object=rs-ed?module-path={MODULE}\""
    ));
    assert!(
        no_pin.contains("response_signing.pin_file")
            && no_pin.contains("is required when the key is a pkcs11: URI"),
        "{no_pin}"
    );
}
