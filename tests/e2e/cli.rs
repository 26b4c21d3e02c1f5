//! The command's habits a platform team expects of a daemon: the commit in `--version`,
//! `FAPIGATE_CONFIG`, a healthcheck without curl, exit 78 (EX_CONFIG) for a configuration that
//! cannot run, the systemd readiness protocol, completions and a man page.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

#[test]
fn ops_version_names_the_commit() {
    let output = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!(
            "fapigate {} ({})",
            env!("CARGO_PKG_VERSION"),
            env!("FAPIGATE_REVISION")
        )
    );
    // From git (12 hex digits), from FAPIGATE_REVISION (whatever the build passed) or
    // "unknown": never empty, never two words.
    let revision = env!("FAPIGATE_REVISION");
    assert!(
        !revision.is_empty() && !revision.contains(char::is_whitespace),
        "{revision}"
    );
}

/// The gateway's config with the admin port it really bound (the tests start it on port 0).
fn config_with_admin_port(gateway: &Gateway) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&gateway.config).unwrap();
    let fixed = text.replacen(
        "[admin]\naddr = \"127.0.0.1:0\"",
        &format!("[admin]\naddr = \"127.0.0.1:{}\"", gateway.admin_port),
        1,
    );
    assert_ne!(fixed, text, "the admin section was not found");
    let path = gateway.config.with_file_name("healthcheck.toml");
    std::fs::write(&path, fixed).unwrap();
    path
}

fn healthcheck(config: &std::path::Path) -> std::process::Output {
    Command::new(BINARY)
        .arg("healthcheck")
        .env("FAPIGATE_CONFIG", config)
        .current_dir(config.parent().unwrap())
        .output()
        .unwrap()
}

#[test]
fn ops_healthcheck_exits_0_only_while_the_gateway_is_ready() {
    let mut env = Env::start();
    let config = config_with_admin_port(&env.gateway);
    let ready = healthcheck(&config);
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    // Only admin.addr is read: a name that does not resolve, or a key file that is gone,
    // does not make a running gateway unhealthy (and a probe resolves nothing).
    let text = std::fs::read_to_string(&config).unwrap();
    let elsewhere = text.replace(&format!("{}", env.upstream.addr), "no-such-host.invalid:80");
    assert_ne!(elsewhere, text);
    std::fs::write(&config, &elsewhere).unwrap();
    let still = healthcheck(&config);
    assert_eq!(still.status.code(), Some(0), "{still:?}");

    env.gateway.child.kill().unwrap();
    env.gateway.child.wait().unwrap();
    let gone = healthcheck(&config);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    let admin = format!("fapigate healthcheck: 127.0.0.1:{}", env.gateway.admin_port);
    assert!(stderr.contains(&admin), "{stderr}");

    // A probe is not a configuration check: a broken file is unhealthy (1), not 78.
    std::fs::write(&config, "[listener\n").unwrap();
    let broken = healthcheck(&config);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    assert!(String::from_utf8_lossy(&broken.stderr).contains("not TOML"));
}

/// 78 is for the file's mistakes only: an upstream name that does not resolve (DNS not up
/// at boot) exits 1, so systemd's Restart= retries it; a malformed address is 78.
#[test]
fn ops_a_name_that_does_not_resolve_yet_exits_1_a_malformed_address_78() {
    let env = Env::start();
    let text = std::fs::read_to_string(&env.gateway.config).unwrap();
    let upstream = env.upstream.addr.to_string();
    for (addr, code) in [("no-such-host.invalid:8080", 1), ("core.bank.internal", 78)] {
        let config = env.gateway.config.with_file_name("resolve.toml");
        let changed = text.replace(&upstream, addr);
        assert_ne!(changed, text);
        std::fs::write(&config, changed).unwrap();
        let output = Command::new(BINARY)
            .arg("check")
            .env("FAPIGATE_CONFIG", &config)
            .current_dir(config.parent().unwrap())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(code), "{addr}: {output:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("upstream[0].addrs[0]"),
            "{output:?}"
        );
    }
}

#[test]
fn ops_a_configuration_that_cannot_run_exits_78_for_check_and_run() {
    let dir = temp_dir();
    let config = dir.path().join("fapigate.toml");
    std::fs::write(&config, "[listener]\naddr = \"127.0.0.1:1\"\n").unwrap();
    for command in ["check", "run", "jwks"] {
        let output = Command::new(BINARY)
            .arg(command)
            .env("FAPIGATE_CONFIG", &config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(78), "{command}: {output:?}");
        assert!(!output.stderr.is_empty(), "{command}");
    }
}

/// sd_notify(3): READY=1 once the listeners accept, RELOADING=1 then READY=1 around a
/// SIGHUP, STOPPING=1 at SIGTERM (what `Type=notify` waits for).
#[test]
fn ops_the_service_manager_hears_ready_reloading_and_stopping() {
    let dir = temp_dir();
    let _pki = Pki::new(dir.path());
    let upstream = Upstream::start();
    let socket_path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let socket = Reserved::new();
    let port = socket.port();
    let env = [(
        "NOTIFY_SOCKET".to_string(),
        socket_path.display().to_string(),
    )];
    let mut gateway = Gateway::launch_with_env(dir.path(), socket, &env, |admin, plain| {
        let text = config_text(port, admin, plain, upstream.addr, "");
        assert!(text.contains("drain_delay = \"1s\""));
        text.replace("drain_delay = \"1s\"", "drain_delay = \"10m\"")
    });
    let next = || {
        let mut buffer = [0u8; 256];
        let n = manager
            .recv(&mut buffer)
            .expect("a notification within 30 s");
        String::from_utf8_lossy(&buffer[..n]).to_string()
    };
    assert_eq!(next(), "READY=1");
    gateway.signal("HUP");
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(
        reloading["RELOADING=1\nMONOTONIC_USEC=".len()..]
            .parse::<u64>()
            .is_ok_and(|usec| usec > 0),
        "{reloading}"
    );
    assert_eq!(next(), "READY=1");
    gateway.signal("TERM");
    assert_eq!(next(), "STOPPING=1");
    // A SIGHUP during the drain reloads nothing and must not say READY=1 again.
    gateway.signal("HUP");
    assert!(wait_for(|| gateway
        .log_text()
        .contains("SIGHUP during the drain: not reloaded")));
    // A second SIGTERM ends the 10-minute delay.
    gateway.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gateway.child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "a second SIGTERM ends the drain delay"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Everything the process sent is queued by now: nothing after the one STOPPING=1.
    manager.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 256];
    let more = manager.recv(&mut buffer);
    assert!(
        more.is_err(),
        "{:?}",
        more.map(|n| String::from_utf8_lossy(&buffer[..n]).to_string())
    );
}

#[test]
fn ops_completions_and_the_man_page_come_from_the_command() {
    let bash = Command::new(BINARY)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("_fapigate()"), "{script}");
    assert!(script.contains("healthcheck"), "{script}");
    let man = Command::new(BINARY).arg("man").output().unwrap();
    assert!(man.status.success());
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH fapigate"), "{page}");
    assert!(page.contains("FAPIGATE_CONFIG"), "{page}");
}

/// On-call's signals: requests in flight (up while a slow request runs, back down after), the
/// memory replay store's fill and capacity, and the process's own CPU, memory and descriptors.
#[test]
fn ops_metrics_show_in_flight_requests_replay_fill_and_the_process() {
    let env = Env::start();
    let admin = env.gateway.admin_port;
    metrics_showing(admin, "\nfapigate_requests_in_flight 0\n");
    let url = env.gateway.url("/slow/900");
    let ca = env.pki.ca().to_string_lossy().to_string();
    let slow = std::thread::spawn(move || curl(&["--cacert", &ca, &url]));
    env.upstream.wait_for_request("/slow/900");
    metrics_showing(admin, "\nfapigate_requests_in_flight 1\n");
    assert_eq!(slow.join().unwrap().status, 200);
    let text = metrics_showing(admin, "\nfapigate_requests_in_flight 0\n");
    // The shared configuration's replay_cache_entries, plus the shards' quarter of slack.
    assert!(
        text.contains("\nfapigate_replay_store_entries 0\n"),
        "{text}"
    );
    assert!(text.contains("\nfapigate_replay_store_capacity "), "{text}");
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(&format!("\n{family} ")), "{family}: {text}");
    }
    assert!(
        text.contains(&format!(
            "fapigate_build_info{{revision=\"{}\",version=\"{}\"}} 1",
            env!("FAPIGATE_REVISION"),
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}
