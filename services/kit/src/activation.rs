//! Socket activation, systemd's conventions, as the stand shim speaks them
//! (devd/shim/README.md): a listening socket passed at fd 3 (`LISTEN_FDS` ≥ 1 and
//! `LISTEN_PID` = this process), and `READY=1` sent to `NOTIFY_SOCKET` once the
//! service accepts. Without them the service binds its port itself.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// `SD_LISTEN_FDS_START`.
const FIRST_FD: i32 = 3;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Whether `LISTEN_FDS`/`LISTEN_PID` (looked up through `env`) pass sockets to `pid`,
/// and how many.
pub fn passed_fds(pid: u32, env: impl Fn(&str) -> Option<String>) -> usize {
    let for_us = env("LISTEN_PID").is_some_and(|p| p.trim() == pid.to_string());
    match env("LISTEN_FDS").and_then(|n| n.trim().parse::<usize>().ok()) {
        Some(n) if for_us => n,
        _ => 0,
    }
}

/// The listening socket the parent passed at fd 3, if the environment says there is
/// one for this process. Taken at most once; the descriptor is moved to a
/// close-on-exec one, so the service's own children do not inherit it.
pub fn inherited_listener() -> std::io::Result<Option<TcpListener>> {
    let count = passed_fds(std::process::id(), |k| std::env::var(k).ok());
    if count == 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    if count > 1 {
        tracing::warn!(count, "{count} sockets passed (LISTEN_FDS); serving on the first only");
    }
    let listener = take_fd3();
    // A copy at a close-on-exec descriptor (std dups with F_DUPFD_CLOEXEC); fd 3 closes.
    let cloexec = listener.try_clone()?;
    drop(listener);
    cloexec.local_addr()?; // a socket, and an inet one
    Ok(Some(cloexec))
}

#[allow(unsafe_code)]
fn take_fd3() -> TcpListener {
    // SAFETY: LISTEN_PID names this process and LISTEN_FDS ≥ 1, so by the socket-activation
    // protocol fd 3 was opened for us by our parent and nothing else in this process owns
    // it; `TAKEN` makes sure it is claimed only once.
    TcpListener::from(unsafe { OwnedFd::from_raw_fd(FIRST_FD) })
}

/// Tells the supervisor (`NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace)
/// that the service accepts connections. A no-op without `NOTIFY_SOCKET`.
pub fn notify_ready() {
    let Ok(target) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, b"READY=1") {
        tracing::warn!(socket = %target, error = %e, "cannot report readiness");
    }
}

fn send(target: &str, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let socket = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(message, &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        Some(_) => return Err(std::io::Error::other("abstract sockets need Linux")),
        None => {
            socket.send_to(message, target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn passed(pairs: &[(&str, &str)]) -> usize {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        passed_fds(42, |k| env.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn sockets_count_only_when_passed_to_this_process() {
        assert_eq!(passed(&[]), 0);
        assert_eq!(passed(&[("LISTEN_FDS", "1")]), 0, "LISTEN_PID is required");
        assert_eq!(passed(&[("LISTEN_FDS", "1"), ("LISTEN_PID", "7")]), 0, "another process's");
        assert_eq!(passed(&[("LISTEN_FDS", "2"), ("LISTEN_PID", "42")]), 2);
        assert_eq!(passed(&[("LISTEN_FDS", "x"), ("LISTEN_PID", "42")]), 0);
    }

    #[test]
    fn ready_goes_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("kit-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf8"), b"READY=1").expect("send");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
