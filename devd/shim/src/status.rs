//! What `GET /v1/status` reports ([`Status`], defined in `stand-shim-protocol`),
//! shared between the supervisor (writer) and the API (reader).

use std::sync::{Arc, Mutex, PoisonError};

use crate::reaper::Exit;

pub use stand_shim_protocol::{ExitCause, ExitRecord, Rollback, Status};

/// The report of a reaped child.
pub fn exit_record(
    pid: i32,
    exit: Exit,
    cause: ExitCause,
    uptime_ms: u64,
    stderr_tail: Vec<String>,
) -> ExitRecord {
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
