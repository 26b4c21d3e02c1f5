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
    let revision = env!("FAPIGATE_REVISION");
    assert!(
        revision == "unknown"
            || (revision.len() == 12 && revision.chars().all(|c| c.is_ascii_hexdigit())),
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

    env.gateway.child.kill().unwrap();
    env.gateway.child.wait().unwrap();
    let gone = healthcheck(&config);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert!(stderr.contains("fapigate healthcheck:"), "{stderr}");

    std::fs::write(&config, "[listener\n").unwrap();
    let broken = healthcheck(&config);
    assert_eq!(broken.status.code(), Some(78), "{broken:?}");
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
    let gateway = Gateway::launch_with_env(dir.path(), socket, &env, |admin, plain| {
        config_text(port, admin, plain, upstream.addr, "")
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
