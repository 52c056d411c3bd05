//! The one place that calls `waitpid`: on every SIGCHLD it reaps *every* exited
//! process (`waitpid(-1, WNOHANG)` until none is left), the supervised child and
//! any orphan reparented to us (we are PID 1, or a child subreaper). The exit of a
//! registered child is passed to whoever registered it.
//!
//! Nobody else may wait: `std::process::Child::wait` and `tokio::process` are not
//! used. Spawning happens under the registry lock (see [`Reaper::spawn`]), so an
//! exit is never reaped before its pid is registered, and std's own `waitpid` after
//! a failed `exec` never races with ours.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Shell convention: the code, or 128 + signal number.
    pub fn as_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => {
                let name = nix::sys::signal::Signal::try_from(*s)
                    .map(|s| s.as_str())
                    .unwrap_or("?");
                write!(f, "killed by signal {s} ({name})")
            }
        }
    }
}

#[derive(Clone, Default)]
pub struct Reaper {
    registry: Arc<Mutex<HashMap<i32, oneshot::Sender<Exit>>>>,
}

impl Reaper {
    /// Installs the SIGCHLD stream and starts the reaping task. Call inside the
    /// runtime, before the first spawn.
    pub fn start() -> std::io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and registers its pid; the receiver gets its exit.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        registry.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Reaps every exited process without blocking.
    pub fn reap_all(&self) {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _core)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) => return,
                Ok(_) => continue, // stopped/continued: not an exit
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            match registry.remove(&pid.as_raw()) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid = pid.as_raw(), %exit, "reaped orphan"),
            }
        }
    }
}
