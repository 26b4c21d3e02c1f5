//! The listener's TLS (SP2-NET-1..6, FAPI1-ADV-4) and client certificates (RFC 8705 §3,
//! RFC 9440), with openssl and curl as clients.

use crate::support::*;
use std::process::Command;

fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn sp2_net_2_tls_1_1_is_refused() {
    let env = Env::start();
    // SECLEVEL=0 lets the client offer TLS 1.1, so the refusal is the server's.
    let (ok, text) = s_client(
        env.gateway.port,
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("Cipher is (NONE)"), "{text}");
    assert!(
        text.contains("alert handshake failure") || text.contains("alert protocol version"),
        "{text}"
    );
}

#[test]
fn sp2_net_6_fapi1_adv_4_tls_1_2_cbc_suites_are_refused() {
    let env = Env::start();
    for cipher in [
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ] {
        let (ok, text) = s_client(env.gateway.port, &["-tls1_2", "-cipher", cipher]);
        assert!(!ok, "{cipher} accepted: {text}");
        assert!(text.contains("handshake failure"), "{cipher}: {text}");
    }
    for cipher in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ] {
        let (ok, text) = s_client(env.gateway.port, &["-tls1_2", "-cipher", cipher]);
        assert!(ok, "{cipher} refused: {text}");
        assert!(text.contains(&format!("Cipher is {cipher}")), "{text}");
    }
    let (ok, text) = s_client(env.gateway.port, &["-tls1_3"]);
    assert!(ok && text.contains("TLSv1.3"), "{text}");
}

#[test]
fn mtls_3_2_client_certificate_thumbprint_reaches_the_pipeline() {
    let env = Env::start();
    let (cert, key, der) = env.pki.client("tpp-one");
    let id = "0b6f9a8e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
    let (cert, key) = (
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );
    let response = env.get(
        "/status",
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            &format!("x-fapi-interaction-id: {id}"),
        ],
    );
    assert_eq!(response.status, 200);
    let expected: String = x5t_s256(&der).chars().take(12).collect();
    assert_eq!(
        env.gateway.access_line(id)["client_cert_x5t"],
        expected.as_str()
    );

    // Without a certificate (DPoP-only clients) the handshake still succeeds in "request" mode.
    let id = "1b6f9a8e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
    let response = env.get("/status", &["-H", &format!("x-fapi-interaction-id: {id}")]);
    assert_eq!(response.status, 200);
    assert!(env.gateway.access_line(id).get("client_cert_x5t").is_none());
}

#[test]
fn cc_2_4_spoofed_client_cert_is_ignored_and_removed() {
    let env = Env::start();
    let (_, _, der) = env.pki.client("forged");
    use base64::Engine;
    let header = format!(
        "Client-Cert: :{}:",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    // Over TLS: the TLS layer is the only truth.
    let id = "2b6f9a8e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
    let response = env.get(
        "/status",
        &["-H", &header, "-H", &format!("x-fapi-interaction-id: {id}")],
    );
    assert_eq!(response.status, 200);
    assert!(response.json()["headers"].get("client-cert").is_none());
    assert!(env.gateway.access_line(id).get("client_cert_x5t").is_none());

    // On the plain listener from an untrusted peer (127.0.0.1): ignored and removed.
    let id = "3b6f9a8e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
    let url = format!("http://127.0.0.1:{}/status", env.gateway.plain_port);
    let response = curl(&[
        "-H",
        &header,
        "-H",
        &format!("x-fapi-interaction-id: {id}"),
        &url,
    ]);
    assert_eq!(response.status, 200);
    assert!(response.json()["headers"].get("client-cert").is_none());
    assert!(env.gateway.access_line(id).get("client_cert_x5t").is_none());

    // From the trusted proxy (127.0.0.2): believed, and still not passed upstream.
    let id = "4b6f9a8e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";
    let response = curl(&[
        "--interface",
        "127.0.0.2",
        "-H",
        &header,
        "-H",
        "X-Forwarded-For: 198.51.100.7",
        "-H",
        &format!("x-fapi-interaction-id: {id}"),
        &url,
    ]);
    assert_eq!(response.status, 200);
    let echo = response.json();
    assert!(echo["headers"].get("client-cert").is_none());
    assert_eq!(
        echo["headers"]["x-forwarded-for"][0],
        "198.51.100.7, 127.0.0.2"
    );
    let expected: String = x5t_s256(&der).chars().take(12).collect();
    assert_eq!(
        env.gateway.access_line(id)["client_cert_x5t"],
        expected.as_str()
    );
}
