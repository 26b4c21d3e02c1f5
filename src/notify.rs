//! The service manager's readiness protocol (sd_notify(3)), for `Type=notify` units: `READY=1`
//! once every listener accepts, `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` at
//! shutdown. Without `NOTIFY_SOCKET` (no systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

pub(crate) fn ready() {
    send("READY=1");
}

pub(crate) fn reloading() {
    // MONOTONIC_USEC lets `Type=notify-reload` (systemd 253+) match the reload it asked for.
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

pub(crate) fn stopping() {
    send("STOPPING=1");
}

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| {
        let address = match path.to_str().and_then(|p| p.strip_prefix('@')) {
            // A Linux abstract socket name.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(&path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)
    })();
    if let Err(error) = result {
        tracing::warn!(%error, "cannot tell the service manager our state");
    }
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid one given.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if status != 0 {
        return 0;
    }
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}
