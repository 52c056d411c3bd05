//! What `GET /v1/status` reports, shared between the supervisor (writer) and the
//! API (reader).

use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::reaper::Exit;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    /// Path of the service binary.
    pub binary: String,
    /// sha256 of the binary the running (or last started) child was started from.
    pub sha256: Option<String>,
    /// Pid of the running child; `null` while it is down (backoff, shutdown).
    pub pid: Option<i32>,
    /// Child starts after the first one, for any reason.
    pub restarts: u64,
    /// RFC 3339 start time of the current child.
    pub started_at: Option<String>,
    pub last_exit: Option<ExitRecord>,
    pub last_rollback: Option<Rollback>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub pid: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// "exit code 3" / "killed by signal 9 (SIGKILL)" / "failed to start: ...".
    pub description: String,
    /// `exited`: on its own; `stopped`: by the shim (restart, upload, shutdown);
    /// `spawn_failed`: exec failed.
    pub cause: &'static str,
    pub at: String,
    pub uptime_ms: u64,
    /// Last lines the child wrote to stderr.
    pub stderr_tail: Vec<String>,
}

impl ExitRecord {
    pub fn new(
        pid: i32,
        exit: Exit,
        cause: &'static str,
        uptime_ms: u64,
        stderr_tail: Vec<String>,
    ) -> Self {
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
        };
        ExitRecord {
            pid,
            code,
            signal,
            description: exit.to_string(),
            cause,
            at: now(),
            uptime_ms,
            stderr_tail,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rollback {
    pub at: String,
    pub rejected_sha256: String,
    pub restored_sha256: Option<String>,
    /// Human-readable: why the new binary was rejected (exit status + stderr tail).
    pub reason: String,
    pub exit: Option<ExitRecord>,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Shared, cheaply cloned status cell.
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Status>>);

impl Shared {
    pub fn new(binary: String) -> Self {
        Shared(Arc::new(Mutex::new(Status {
            binary,
            sha256: None,
            pid: None,
            restarts: 0,
            started_at: None,
            last_exit: None,
            last_rollback: None,
        })))
    }

    pub fn get(&self) -> Status {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
