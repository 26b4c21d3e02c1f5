//! Reload on SIGHUP and draining on SIGTERM.

use crate::support::*;

const EXTRA_ROUTE: &str = "\n[[route]]\nid = \"added\"\nmethods = [\"GET\"]\npath = \"/added\"\nupstream = \"core\"\nauth = \"none\"\n";

#[test]
fn sighup_with_a_broken_file_keeps_the_running_policy() {
    let env = Env::start();
    let config = env.gateway.config.clone();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace(
            "upstream = \"core\"\nauth = \"none\"",
            "upstream = \"nowhere\"\nauth = \"none\"",
        ),
    )
    .unwrap();
    env.gateway.signal("HUP");
    assert!(wait_for(|| env
        .gateway
        .log_text()
        .contains("configuration reload refused")));
    let log = env.gateway.log_text();
    assert!(
        log.contains("upstream \\\"nowhere\\\" is not defined"),
        "{log}"
    );
    assert_eq!(
        env.get("/status", &[]).status,
        200,
        "old policy still serves"
    );
    let metrics = admin_get(env.gateway.admin_port, "/metrics").1;
    assert!(
        metrics.contains("fapigate_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sighup_with_a_valid_file_adds_a_route_without_restart() {
    let env = Env::start();
    assert_eq!(env.get("/added", &[]).status, 404);
    let config = env.gateway.config.clone();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(EXTRA_ROUTE);
    std::fs::write(&config, text).unwrap();
    let pid = env.gateway.child.id();
    env.gateway.signal("HUP");
    assert!(wait_for(|| env.get("/added", &[]).status == 200));
    assert_eq!(env.gateway.child.id(), pid);
    assert_eq!(env.get("/status", &[]).status, 200);
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let mut env = Env::start();
    let url = env.gateway.url("/slow/800");
    let ca = env.pki.ca().to_string_lossy().to_string();
    let in_flight = std::thread::spawn(move || curl(&["--cacert", &ca, &url]));
    env.upstream.wait_for_request("/slow/800");
    env.gateway.signal("TERM");
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200, "the request in flight completes");
    let status = env.gateway.child.wait().unwrap();
    assert!(status.success() || status.code().is_some(), "{status:?}");
}

/// SIGTERM under load loses no request (`server.drain_delay`): `/readyz` answers 503 at once,
/// the listeners keep accepting new connections for the delay, and a bounded wrk run through
/// the signal sees no error. Without the delay the listeners close at the signal and wrk's
/// connections fail.
#[test]
fn ops_drain_a_sigterm_under_load_loses_no_request() {
    let dir = temp_dir();
    let pki = Pki::new(dir.path());
    let upstream = Upstream::start();
    let socket = Reserved::new();
    let port = socket.port();
    let mut gateway = Gateway::launch(dir.path(), socket, |admin, plain| {
        let text = config_text(port, admin, plain, upstream.addr, "");
        assert!(text.contains("drain_delay = \"1s\""));
        text.replace("drain_delay = \"1s\"", "drain_delay = \"8s\"")
    });
    assert_eq!(admin_get(gateway.admin_port, "/readyz").0, 200);
    let url = format!("http://127.0.0.1:{}/status", gateway.plain_port);
    let target = url.clone();
    let load = std::thread::spawn(move || {
        std::process::Command::new("wrk")
            .args(["-t1", "-c8", "-d4s", "--timeout", "3s", &target])
            .output()
            .expect("wrk runs (apt-get install wrk)")
    });
    upstream.wait_for_request("/status");
    gateway.signal("TERM");
    assert!(
        wait_for(|| admin_get(gateway.admin_port, "/readyz").0 == 503),
        "/readyz says 503 once SIGTERM arrived"
    );
    // Draining, not closed: a new connection is still served, over TLS too.
    assert_eq!(curl(&[&url]).status, 200);
    assert_eq!(curl_tls(&gateway, &pki, "/status", &[]).status, 200);

    let output = load.join().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(report.contains(" requests in "), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    // Then it stops by itself: the delay, then the grace for requests in flight.
    let status = gateway.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
