//! Issue 14 §1: shared state over TLS to a real `redis-server` (`--tls-port`, client
//! certificates required), and the refusals around it.

use crate::bank::*;
use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Child;

/// A `redis-server` that speaks TLS only, with its own CA, and requires client certificates
/// that chain to `clients_ca`.
struct TlsRedis {
    child: Child,
    port: u16,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::Builder::new()
            .prefix("fapigate-redis-tls-")
            .tempdir()
            .expect("redis dir");
        let pki = Pki::new(dir.path());
        // The gateway's client certificate is self-signed: Redis trusts it as its own anchor.
        let (client_cert, _, _) = pki.client("redis-client");
        let clients_ca = dir.path().join("clients-ca.crt");
        std::fs::write(
            &clients_ca,
            std::fs::read(&client_cert).expect("client cert"),
        )
        .expect("clients ca");
        let (child, port) = crate::redis_tcp::start_on_free_ports(dir.path(), |free| {
            let port = free();
            let mut args = crate::redis_tcp::tls_args(&pki, port, &clients_ca);
            args.extend(["--tls-auth-clients".to_string(), "yes".into()]);
            (port, args)
        });
        TlsRedis {
            child,
            port,
            pki,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The `[state]` lines that trust `ca` and present the client certificate.
    fn state(&self, ca: &Path) -> String {
        let tls = |name: &str| self.pki.dir.join("tls").join(name);
        format!(
            "redis_ca_file = \"{}\"\nredis_client_cert = \"{}\"\nredis_client_key = \"{}\"\n",
            ca.display(),
            tls("redis-client.crt").display(),
            tls("redis-client.key").display()
        )
    }

    fn ca(&self) -> PathBuf {
        self.pki.ca()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dpop_11_1_2_replay_records_cross_tls_to_redis_with_client_certificates() {
    let redis = TlsRedis::start();
    let bank = Bank::start(Options {
        redis: Some(redis.url()),
        state_extra: redis.state(&redis.ca()),
        public_url: Some("https://api.bank.test"),
        ..Options::default()
    });
    let replica = bank.replica("replica-b");
    let (token, key) = bank.dpop_token("tpp", "ES256", None);
    let proof = bank
        .auth
        .proof(&key, "GET", &bank.url("/accounts"), &token, None);
    let first = accounts_with(&bank.gateway, &bank.pki, "DPoP", &token, Some(&proof));
    assert_eq!(first.status, 200, "{first:?}");
    let replayed = accounts_with(&replica, &bank.pki, "DPoP", &token, Some(&proof));
    assert_eq!(replayed.status, 401);
    assert_eq!(
        replayed.challenge(),
        Some(dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used").as_str())
    );
}

#[test]
fn a_redis_certificate_from_another_ca_is_refused_at_start_up_naming_the_file() {
    let redis = TlsRedis::start();
    let bank = Bank::start(Options::default());
    // The bank's own CA did not sign the Redis server's certificate.
    let wrong = bank.pki.ca();
    let state = format!(
        "\n[state]\nbackend = \"redis\"\nredis_url = \"{}\"\n{}",
        redis.url(),
        redis.state(&wrong)
    );
    let output = crate::shared_state::run_with_changes(&bank, |text| text + &state);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the TLS handshake with Redis failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("state.redis_ca_file ({})", wrong.display())),
        "{stderr}"
    );
}
