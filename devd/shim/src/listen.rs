//! Socket passing and readiness, systemd's socket-activation conventions:
//! - the shim binds the service's listening sockets once, at start, and keeps them at
//!   fd 3, 4, … without close-on-exec, so every child inherits them there;
//! - each child gets `LISTEN_FDS=<n>` and `LISTEN_PID=<its own pid>`. The pid exists
//!   only after the fork, and `std::process::Command` sets the environment after any
//!   `pre_exec` hook, so the shim starts its own executable in a small exec mode
//!   ([`EXEC_FLAG`], see [`exec_child`]) that sets `LISTEN_PID` in the then
//!   single-threaded process and `exec`s the service binary (the pid stays the same);
//! - each child gets `NOTIFY_SOCKET=@<abstract name>` and reports `READY=1` there once
//!   it accepts connections ([`ready_socket`]).
//!
//! Two children may accept on the same socket at once (the kernel hands each
//! connection to one of them); a child that stops accepting leaves the queue to the
//! others, and connections that arrive while no child accepts wait in the backlog.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use nix::fcntl::{fcntl, FcntlArg};
use tokio::sync::oneshot;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;
/// First argument of the exec mode: `stand-shim --stand-shim-exec <binary> [args...]`.
pub const EXEC_FLAG: &str = "--stand-shim-exec";

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move the listening sockets to fd {FIRST_FD}..: {0}")]
    Place(#[source] nix::Error),
}

/// Binds every address and moves the sockets to fds 3, 4, … (close-on-exec off).
/// Call at the very start, before any other thread or descriptor of ours exists:
/// whatever a parent left open at those numbers is closed.
pub fn bind_inherited(addrs: &[SocketAddr]) -> Result<Vec<OwnedFd>, ListenError> {
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let listener =
            TcpListener::bind(addr).map_err(|source| ListenError::Bind { addr: *addr, source })?;
        bound.push(OwnedFd::from(listener));
    }
    place(bound).map_err(ListenError::Place)
}

#[allow(unsafe_code)]
fn place(fds: Vec<OwnedFd>) -> nix::Result<Vec<OwnedFd>> {
    let count = RawFd::try_from(fds.len()).map_err(|_| nix::Error::EINVAL)?;
    // Out of the way first (at 3 + count or above), so no target number holds a source.
    let mut high = Vec::with_capacity(fds.len());
    for fd in &fds {
        let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(FIRST_FD + count))?;
        // SAFETY: `raw` is the descriptor fcntl just created; nothing else owns it.
        high.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    drop(fds);
    let mut placed = Vec::with_capacity(high.len());
    for (i, fd) in (0..).zip(&high) {
        // SAFETY: dup2 onto FIRST_FD + i closes whatever is open there. This runs once,
        // at start, before the shim opened anything of its own above stderr (our own
        // listeners were moved above the targets just before), so at most a descriptor
        // our parent leaked is closed, which nothing in this process uses. The new
        // descriptor has close-on-exec off: children inherit it, as intended.
        placed.push(unsafe { nix::unistd::dup2_raw(fd, FIRST_FD + i) }?);
    }
    Ok(placed)
}

/// The exec mode: runs in the freshly started child, still single-threaded: sets
/// `LISTEN_PID` to this process's pid and replaces it with `<binary> [args...]`.
/// Returns only when that fails (exit code 127, like a shell).
pub fn exec_child(args: &[OsString]) -> i32 {
    let Some((binary, rest)) = args.split_first() else {
        eprintln!("stand-shim: {EXEC_FLAG} needs a binary");
        return 127;
    };
    // Single-threaded here (nothing but main has run), so changing the environment is sound.
    std::env::set_var("LISTEN_PID", std::process::id().to_string());
    let err = Command::new(binary).args(rest).exec();
    eprintln!(
        "stand-shim: cannot execute {}: {err}",
        std::path::Path::new(binary).display()
    );
    127
}

/// The program a child is started through: the shim's own executable.
pub fn self_exe() -> std::path::PathBuf {
    static EXE: OnceLock<std::path::PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        // /proc/self/exe, read in the forked child, is the shim even if its file moved.
        let proc_exe = std::path::PathBuf::from("/proc/self/exe");
        if proc_exe.exists() {
            proc_exe
        } else {
            std::env::current_exe().unwrap_or(proc_exe)
        }
    })
    .clone()
}

/// A fresh abstract unix datagram socket for one child's `NOTIFY_SOCKET`; the
/// receiver fires when the child sends a datagram with a `READY=1` line. Its reading
/// task ends with the receiver.
pub fn ready_socket() -> std::io::Result<(String, oneshot::Receiver<()>)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static NONCE: OnceLock<u128> = OnceLock::new();
    // Abstract names are per network namespace, which containers of a pod share (and
    // each shim there is PID 1): the start time makes them apart.
    let nonce = NONCE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let mut tries = 0;
    let (name, socket) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("stand-shim/{}/{nonce:x}/{n}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        match std::os::unix::net::UnixDatagram::bind_addr(&addr) {
            Ok(socket) => break (name, socket),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 16 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UnixDatagram::from_std(socket)?;
    let (mut tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                () = tx.closed() => return,
                got = socket.recv(&mut buf) => match got {
                    Ok(n) if buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") => {
                        let _ = tx.send(());
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "readiness socket failed");
                        return;
                    }
                },
            }
        }
    });
    Ok((format!("@{name}"), rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_socket_fires_on_a_ready_line() {
        let (name, rx) = ready_socket().expect("socket");
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(
            name.strip_prefix('@').expect("abstract").as_bytes(),
        )
        .expect("addr");
        let client = std::os::unix::net::UnixDatagram::unbound().expect("unbound");
        client.send_to_addr(b"STATUS=starting", &addr).expect("send");
        client.send_to_addr(b"STATUS=up\nREADY=1\n", &addr).expect("send");
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("in time")
            .expect("ready");
    }
}
