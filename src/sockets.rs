//! The listening sockets, bound before Pingora starts.
//!
//! Binding here (instead of letting Pingora bind) gives three things an operator and a test
//! harness need: a clear start-up error naming the address in use; port 0, with the port the
//! kernel chose reported once the gateway is ready; and sockets handed over by the service
//! manager (systemd socket activation, `LISTEN_FDS` / `LISTEN_PID`, sd_listen_fds(3)), used
//! for the configured address they are bound to. A socket taken from the manager is never
//! released while the gateway runs, so nothing else can take the port between a check and
//! the bind.

use pingora::server::{Fds, ListenFds};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::sync::Arc;

/// The first descriptor a service manager passes (sd_listen_fds(3): `SD_LISTEN_FDS_START`).
const FIRST_INHERITED_FD: RawFd = 3;

/// Listening sockets, open, with the addresses they are bound to.
pub(crate) struct Sockets {
    bound: Vec<SocketAddr>,
    fds: Fds,
}

impl Sockets {
    /// Binds `addrs` in order (or takes the inherited socket bound to one of them). An address
    /// with port 0 gets a port from the kernel; [`Sockets::bound`] tells which.
    pub(crate) fn bind(addrs: &[SocketAddr]) -> Result<Sockets, String> {
        let mut inherited = inherited_listeners();
        let mut sockets = Sockets {
            bound: Vec::with_capacity(addrs.len()),
            fds: Fds::new(),
        };
        for addr in addrs {
            let listener = match inherited
                .iter()
                .position(|(bound, _)| bound == addr && addr.port() != 0)
            {
                Some(index) => inherited.swap_remove(index).1,
                None => {
                    TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?
                }
            };
            let bound = listener
                .local_addr()
                .map_err(|e| format!("cannot read the address of {addr}: {e}"))?;
            // Pingora's accept loop is asynchronous: the socket must not block.
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            sockets.bound.push(bound);
            sockets.fds.add(bound.to_string(), listener.into_raw_fd());
        }
        for (addr, _) in &inherited {
            tracing::warn!(%addr, "an inherited socket matches no configured address; closed");
        }
        Ok(sockets)
    }

    /// The addresses bound, in the order they were asked for.
    pub(crate) fn bound(&self) -> &[SocketAddr] {
        &self.bound
    }

    /// The table Pingora's listeners take their sockets from (keyed by the bound address).
    pub(crate) fn into_listen_fds(self) -> ListenFds {
        Arc::new(parking_lot::Mutex::new(self.fds))
    }
}

/// The TCP listening sockets passed by a service manager to this process, with their
/// addresses. Anything else passed (or a `LISTEN_PID` of another process) is left alone.
fn inherited_listeners() -> Vec<(SocketAddr, TcpListener)> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Vec::new();
    }
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .filter(|n| (1..=64).contains(n));
    // Not inherited by anything this process starts (sd_listen_fds(3) `unset_environment`).
    // Reached only when a service manager passed sockets, at the start of `fapigate run`,
    // before any other thread exists.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    let (true, Some(count)) = (for_us, count) else {
        return Vec::new();
    };
    (FIRST_INHERITED_FD..FIRST_INHERITED_FD + count)
        .filter_map(|fd| {
            if !is_listening_tcp(fd) {
                tracing::warn!(
                    fd,
                    "an inherited descriptor is not a listening TCP socket; ignored"
                );
                return None;
            }
            // SAFETY: the service manager passed `fd` open to this process for it to own
            // (sd_listen_fds(3)); it was checked above to be a listening socket, and it is
            // taken once: nothing else in the process knows the number.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            let addr = listener.local_addr().ok()?;
            Some((addr, listener))
        })
        .collect()
}

/// Whether `fd` is an open TCP socket in the listening state.
fn is_listening_tcp(fd: RawFd) -> bool {
    socket_option(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && socket_option(fd, libc::SO_ACCEPTCONN).is_some_and(|accepting| accepting != 0)
}

/// An integer `SOL_SOCKET` option of `fd`; `None` when `fd` is not an open socket.
fn socket_option(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `value`, a live local; an fd that
    // is not open or not a socket makes it fail with EBADF/ENOTSOCK and touches nothing.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_bound_and_reported() {
        let sockets = Sockets::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let bound = sockets.bound()[0];
        assert_eq!(bound.ip().to_string(), "127.0.0.1");
        assert_ne!(bound.port(), 0);
        // The socket listens while the table holds it.
        let fds = sockets.into_listen_fds();
        assert!(fds.lock().get(&bound.to_string()).is_some());
        assert!(std::net::TcpStream::connect(bound).is_ok());
    }

    #[test]
    fn an_address_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = Sockets::bind(&[addr]).err().unwrap();
        assert!(
            error.starts_with(&format!("cannot listen on {addr}: ")),
            "{error}"
        );
    }

    #[test]
    fn a_pipe_is_not_a_listening_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_tcp(std::os::fd::AsRawFd::as_raw_fd(&listener)));
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_listening_tcp(std::os::fd::AsRawFd::as_raw_fd(&stream)));
        assert!(!is_listening_tcp(-1));
    }
}
