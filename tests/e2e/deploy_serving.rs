//! Issue 14, done when: the Kubernetes example's configuration, as the ConfigMap carries it,
//! serves traffic with its shared state over `rediss://` (a password-protected `redis-server`
//! that speaks TLS only), its introspection by `private_key_jwt` with signed responses, and
//! its response signing. Only what cannot exist here is changed: the addresses (listener,
//! admin, AS, upstream, the TPP directory) and the /etc/fapigate/ folder.

use crate::bank::{as_config, dpop_token, private_key_jwt_client, Options};
use crate::deploy::{materialize, Deployed};
use crate::support::*;
use serde_json::json;
use std::process::Command;

const REDIS_PASSWORD: &str = "a-redis-password";

fn tls_cli(pki: &Pki, port: u16, args: &[&str]) -> String {
    let connection = [
        "--tls",
        "--cacert",
        &pki.ca().display().to_string(),
        "-p",
        &port.to_string(),
    ]
    .map(str::to_string);
    let auth = ["--no-auth-warning", "-a", REDIS_PASSWORD].map(str::to_string);
    redis_cli(&[connection.as_slice(), &auth].concat(), args)
}

#[test]
fn deploy_configmap_configuration_serves_traffic_with_its_state_over_rediss() {
    let deployed = Deployed::load();
    let dir = temp_dir();
    let root = dir.path();
    let pki = Pki::new(&root.join("scratch"));
    let (mut redis, redis_port) =
        crate::redis_tcp::start_on_free_ports(&root.join("redis"), |free| {
            let port = free();
            let mut args = crate::redis_tcp::tls_args(&pki, port, &pki.ca());
            args.extend(
                ["--tls-auth-clients", "no", "--requirepass", REDIS_PASSWORD].map(str::to_string),
            );
            (port, args)
        });

    let public_url: &'static str = Box::leak(
        deployed
            .config_str("listener.public_url")
            .to_string()
            .into_boxed_str(),
    );
    let upstream = Upstream::start();
    let (as_socket, socket) = (Reserved::new(), Reserved::new());
    let port = socket.port();
    AuthServer::generate_keys(&root.join("as-keys.json"), "k1");
    let options = Options {
        public_url: Some(public_url),
        ..Options::default()
    };
    let mut as_settings = as_config(root, as_socket.port(), port, &options);
    let introspection_key = private_key_jwt_client(&mut as_settings);
    let auth = AuthServer::start(root, as_socket, &as_settings);

    let redis_url = format!("rediss://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0\n");
    let config = materialize(
        &deployed,
        root,
        &pki,
        Some(upstream.addr),
        |key| match key {
            "state.redis_url_file" => Some(redis_url.clone()),
            "issuer[0].introspection.key" => Some(introspection_key.clone()),
            _ => None,
        },
    );
    let issuer = deployed.config_str("issuer[0].issuer");
    let directory = deployed.config_str("client[0].jwks_url");
    let config = config
        .replace(
            &format!("addr = \"{}\"", deployed.config_str("listener.addr")),
            &format!("addr = \"127.0.0.1:{port}\""),
        )
        .replace(
            &format!("addr = \"{}\"", deployed.config_str("admin.addr")),
            "addr = \"127.0.0.1:0\"",
        )
        .replace(
            &format!("\"{directory}\""),
            &format!("\"{}/jwks\"", auth.issuer),
        )
        .replace(&format!("\"{issuer}"), &format!("\"{}", auth.issuer));
    for unchanged in ["redis_url_file", "redis_ca_file", "verdict_key_file"] {
        assert!(config.contains(unchanged), "the ConfigMap lost {unchanged}");
    }

    let config_file = root.join("checked.toml");
    std::fs::write(&config_file, &config).unwrap();
    let check = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&config_file)
        .output()
        .expect("fapigate check runs");
    assert!(
        check.status.success(),
        "{check:?}\n--- as checked:\n{config}"
    );
    let gateway = Gateway::launch(root, socket, |_, _| config.clone());

    // The public route, and DPoP with a JWT access token: the proof is recorded in Redis
    // over TLS, so the same proof again is a replay.
    assert_eq!(curl_tls(&gateway, &pki, "/status", &[]).status, 200);
    let list = json!([{"type": "account_information", "actions": ["list_accounts"]}]);
    let (token, key) = dpop_token(&auth, "tpp", "ES256", Some(list.clone()));
    let proof = auth.proof(&key, "GET", &format!("{public_url}/accounts"), &token, None);
    let first = accounts_with(&gateway, &pki, "DPoP", &token, Some(&proof));
    assert_eq!(first.status, 200, "{first:?}\n{}", gateway.log_text());
    let replayed = accounts_with(&gateway, &pki, "DPoP", &token, Some(&proof));
    assert_eq!(replayed.status, 401);
    // The ConfigMap's algs, in its order.
    assert_eq!(
        replayed.challenge(),
        Some(
            "DPoP error=\"invalid_dpop_proof\", error_description=\"the DPoP proof was already \
             used\", algs=\"PS256 ES256 EdDSA\""
        )
    );
    let records = tls_cli(&pki, redis_port, &["--scan", "--pattern", "*dpop*"]);
    assert!(!records.is_empty(), "no replay record in Redis");

    // An opaque token: introspected (private_key_jwt, signed response) and its verdict shared
    // through Redis, sealed with the verdict key.
    let (opaque, opaque_key) = dpop_token(&auth, "tpp-opaque", "ES256", Some(list));
    let proof = auth.proof(
        &opaque_key,
        "GET",
        &format!("{public_url}/accounts"),
        &opaque,
        None,
    );
    let introspected = accounts_with(&gateway, &pki, "DPoP", &opaque, Some(&proof));
    assert_eq!(introspected.status, 200, "{introspected:?}");
    assert_eq!(auth.introspections(), 1);
    // The verdict may be stored just after the answer: wait for it, within START_TIMEOUT.
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while tls_cli(
        &pki,
        redis_port,
        &["--scan", "--pattern", "fapigate:*:introspection:*"],
    )
    .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no shared verdict in Redis"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A signed response (RFC 9421) from the ConfigMap's Ed25519 key.
    let balances = json!([{"type": "account_information", "actions": ["read_balances"],
        "locations": [public_url], "accounts": ["acc-1"]}]);
    let (token, key) = dpop_token(&auth, "tpp", "ES256", Some(balances));
    let path = "/accounts/acc-1/balances";
    let proof = auth.proof(&key, "GET", &format!("{public_url}{path}"), &token, None);
    let signed = curl_tls(
        &gateway,
        &pki,
        path,
        &[
            "-H",
            &format!("Authorization: DPoP {token}"),
            "-H",
            &format!("DPoP: {proof}"),
        ],
    );
    assert_eq!(signed.status, 200, "{signed:?}");
    let key_id = deployed.config_str("response_signing.key_id");
    assert!(
        signed
            .header("signature-input")
            .is_some_and(|input| input.contains(&format!("keyid=\"{key_id}\""))),
        "{signed:?}"
    );
    assert!(signed.header("content-digest").is_some(), "{signed:?}");

    let metrics = metrics_showing(gateway.admin_port, "fapigate_shared_state_up 1");
    assert!(metrics.contains("fapigate_shared_state_up 1"));
    drop(gateway);
    // The signed exchange is in the audit trail, MACed with the ConfigMap's audit key.
    let relocated = |key: &str| {
        root.join(
            deployed
                .config_str(key)
                .strip_prefix("/etc/fapigate/")
                .expect("under /etc/fapigate"),
        )
    };
    let verify = Command::new(BINARY)
        .args(["audit", "verify"])
        .arg(relocated("audit.path"))
        .arg("--key")
        .arg(relocated("audit.key_file"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && out.contains("ok: 1 records") && out.contains("MACs verified"),
        "{verify:?}"
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
