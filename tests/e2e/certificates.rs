//! Issue 16 item 1: certificates that rotate and get revoked. The listener's certificate and
//! key are read again on SIGHUP and when the files change on disk, without dropping a
//! connection; client CRLs fail a revoked TPP's handshake and reload the same way; a broken
//! new file keeps the serving one; every certificate's expiry is a metric; `check` warns.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority whose key the test keeps (it signs server and client certificates
/// and CRLs).
struct Authority {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    path: PathBuf,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("tls/{name}.crt"));
        std::fs::write(&path, cert.pem()).unwrap();
        Authority { cert, key, path }
    }

    /// A server certificate for 127.0.0.1, written over the gateway's files the way a Secret
    /// volume swaps them: whole, by rename.
    fn install_server_cert(&self, dir: &Path) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        replace(&dir.join("tls/server.key"), &key.serialize_pem(), true);
        replace(&dir.join("tls/server.crt"), &cert.pem(), false);
    }

    /// A client certificate with this serial number; returns (cert path, key path).
    fn client(&self, dir: &Path, name: &str, serial: u64) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("tls/{name}.crt")),
            dir.join(format!("tls/{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        write_private(&key_path, &key.serialize_pem());
        (cert_path, key_path)
    }

    /// A CRL revoking `serials`, written to `path`.
    fn revoke(&self, path: &Path, serials: &[u64], number: u64) {
        let crl = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2025, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*serial),
                    revocation_time: rcgen::date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap();
        replace(path, &crl.pem().unwrap(), false);
    }
}

/// Writes `path` whole: a temporary file renamed over it.
fn replace(path: &Path, contents: &str, private: bool) {
    let temporary = path.with_extension("new");
    if private {
        write_private(&temporary, contents);
    } else {
        std::fs::write(&temporary, contents).unwrap();
    }
    std::fs::rename(&temporary, path).unwrap();
}

/// The status of GET /status trusting `ca` (and presenting `client`), or `None` when the
/// handshake fails.
fn status(gateway: &Gateway, ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> Option<u16> {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(ca);
    if let Some((cert, key)) = client {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let output = command.arg(gateway.url("/status")).output().unwrap();
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).parse().ok()
}

#[test]
fn ops_the_listener_certificate_reloads_live_on_change_and_on_sighup() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start();
    let socket = Reserved::new();
    let port = socket.port();
    let gateway = Gateway::launch(dir.path(), socket, |admin, plain| {
        config_text(port, admin, plain, upstream.addr, "")
    });
    assert_eq!(status(&gateway, &pki.ca(), None), Some(200));
    let metrics = admin_get(gateway.admin_port, "/metrics").1;
    assert!(
        metrics.contains("fapigate_certificate_expiry_timestamp_seconds{kind=\"listener\""),
        "{metrics}"
    );

    // A new certificate from another authority, swapped in on disk: no signal needed.
    let rotated = Authority::new(dir.path(), "rotated-ca");
    rotated.install_server_cert(dir.path());
    assert!(
        wait_for(|| status(&gateway, &rotated.path, None) == Some(200)),
        "the new certificate is served after a change on disk"
    );
    assert_eq!(
        status(&gateway, &pki.ca(), None),
        None,
        "the old one is not"
    );
    metrics_showing(
        gateway.admin_port,
        "fapigate_tls_reloads_total{result=\"ok\"} 1",
    );

    // SIGHUP while a request is in flight: it completes on its connection.
    let url = gateway.url("/slow/800");
    let ca = rotated.path.to_string_lossy().to_string();
    let in_flight = std::thread::spawn(move || curl(&["--cacert", &ca, &url]));
    upstream.wait_for_request("/slow/800");
    let third = Authority::new(dir.path(), "third-ca");
    third.install_server_cert(dir.path());
    gateway.signal("HUP");
    assert_eq!(
        in_flight.join().unwrap().status,
        200,
        "no connection dropped"
    );
    assert!(wait_for(|| status(&gateway, &third.path, None) == Some(200)));

    // A broken new certificate: the serving one stays, and it is said.
    replace(
        &dir.path().join("tls/server.crt"),
        "not a certificate\n",
        false,
    );
    metrics_showing(
        gateway.admin_port,
        "fapigate_tls_reloads_total{result=\"error\"} 1",
    );
    assert_eq!(status(&gateway, &third.path, None), Some(200));
    gateway.signal("HUP");
    metrics_showing(
        gateway.admin_port,
        "fapigate_config_last_reload_successful 0",
    );
    assert_eq!(status(&gateway, &third.path, None), Some(200));
    assert!(gateway
        .log_text()
        .contains("listener TLS files changed on disk but do not load; the serving ones stay"));
}

#[test]
fn ops_a_revoked_client_certificate_fails_the_handshake_and_crls_reload() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start();
    let tpp_ca = Authority::new(dir.path(), "tpp-ca");
    let revoked = tpp_ca.client(dir.path(), "tpp-revoked", 0x1001);
    let good = tpp_ca.client(dir.path(), "tpp-good", 0x1002);
    let crl = dir.path().join("tls/tpp-ca.crl");
    tpp_ca.revoke(&crl, &[0x1001], 1);
    let socket = Reserved::new();
    let port = socket.port();
    let gateway = Gateway::launch(dir.path(), socket, |admin, plain| {
        let text = config_text(port, admin, plain, upstream.addr, "");
        assert!(text.contains("client_cert = \"request\"\n"));
        text.replace(
            "client_cert = \"request\"\n",
            "client_cert = \"request\"\nclient_ca = \"tls/tpp-ca.crt\"\nclient_crl = [\"tls/tpp-ca.crl\"]\n",
        )
    });
    assert_eq!(
        status(&gateway, &pki.ca(), Some(&revoked)),
        None,
        "revoked: no handshake"
    );
    assert_eq!(status(&gateway, &pki.ca(), Some(&good)), Some(200));
    assert_eq!(
        status(&gateway, &pki.ca(), None),
        Some(200),
        "client_cert = request"
    );
    let metrics = admin_get(gateway.admin_port, "/metrics").1;
    assert!(
        metrics.contains("fapigate_certificate_expiry_timestamp_seconds{kind=\"client_crl\",subject=\"CN=tpp-ca\"} 4102444800"),
        "{metrics}"
    );
    // The CA publishes a new CRL: the second certificate is refused from the next handshake.
    tpp_ca.revoke(&crl, &[0x1001, 0x1002], 2);
    assert!(
        wait_for(|| status(&gateway, &pki.ca(), Some(&good)).is_none()),
        "the new CRL is read after a change on disk"
    );
    // A CRL that does not parse keeps the last good one.
    replace(
        &crl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        false,
    );
    metrics_showing(
        gateway.admin_port,
        "fapigate_tls_reloads_total{result=\"error\"} 1",
    );
    assert_eq!(status(&gateway, &pki.ca(), Some(&good)), None);
    assert_eq!(status(&gateway, &pki.ca(), None), Some(200));
}

#[test]
fn ops_check_warns_when_the_certificate_does_not_name_the_public_host() {
    let env = Env::start();
    let text = std::fs::read_to_string(&env.gateway.config).unwrap();
    let config = env.gateway.config.with_file_name("elsewhere.toml");
    let public = format!("public_url = \"https://127.0.0.1:{}\"", env.gateway.port);
    assert!(text.contains(&public));
    std::fs::write(
        &config,
        text.replace(&public, "public_url = \"https://api.bank.test\""),
    )
    .unwrap();
    let output = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: listener.tls.cert: its subject alternative names do not cover the public_url host api.bank.test"),
        "{stderr}"
    );
    let same = Command::new(BINARY)
        .args(["check", "--config"])
        .arg(&env.gateway.config)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&same.stderr).contains("warning"),
        "{same:?}"
    );
}

/// `openssl s_client`: one request on a new connection, saving (`-sess_out`) or resuming
/// (`-sess_in`) the TLS session; returns what it printed.
fn s_client(
    gateway: &Gateway,
    ca: &Path,
    client: &(PathBuf, PathBuf),
    session: &Path,
    resume: bool,
) -> String {
    use std::io::Write;
    let mut command = Command::new("openssl");
    command
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", gateway.port),
        ])
        .arg("-CAfile")
        .arg(ca)
        .arg("-cert")
        .arg(&client.0)
        .arg("-key")
        .arg(&client.1)
        .args(["-tls1_3", "-ign_eof"])
        .arg(if resume { "-sess_in" } else { "-sess_out" })
        .arg(session)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A resumed TLS session carries the certificate of the handshake it resumes, unverified:
/// the gateway checks it again, so a certificate revoked since is refused on it too.
#[test]
fn ops_a_certificate_revoked_after_the_handshake_is_refused_on_a_resumed_session() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start();
    let tpp_ca = Authority::new(dir.path(), "tpp-ca");
    let good = tpp_ca.client(dir.path(), "tpp-good", 0x2002);
    let crl = dir.path().join("tls/tpp-ca.crl");
    tpp_ca.revoke(&crl, &[0x2001], 1);
    let socket = Reserved::new();
    let port = socket.port();
    let gateway = Gateway::launch(dir.path(), socket, |admin, plain| {
        config_text(port, admin, plain, upstream.addr, "").replace(
            "client_cert = \"request\"\n",
            "client_cert = \"request\"\nclient_ca = \"tls/tpp-ca.crt\"\nclient_crl = [\"tls/tpp-ca.crl\"]\n",
        )
    });
    let session = dir.path().join("tls.session");
    let first = s_client(&gateway, &pki.ca(), &good, &session, false);
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    tpp_ca.revoke(&crl, &[0x2001, 0x2002], 2);
    metrics_showing(
        gateway.admin_port,
        "fapigate_tls_reloads_total{result=\"ok\"} 1",
    );
    let resumed = s_client(&gateway, &pki.ca(), &good, &session, true);
    assert!(
        resumed.contains("Reused, TLSv1.3"),
        "the session was resumed: {resumed}"
    );
    assert!(resumed.contains("HTTP/1.1 400"), "{resumed}");
    assert!(
        resumed
            .contains("the client certificate of this connection is revoked or no longer trusted"),
        "{resumed}"
    );
}
