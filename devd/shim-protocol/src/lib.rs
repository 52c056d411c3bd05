//! The stand shim's protocol (devd/shim/README.md), the one definition both sides
//! use: the shim (`stand-shim`) serves it, devd's targets speak it (directly over
//! HTTP for docker, through the pod proxy for kubernetes).
//!
//! Owns: the dev port and the environment variable names of the shim, the request
//! paths, the header names, the answer DTOs (`Status`, `Swapped`, the error body)
//! and the error codes, with the one rule that tells a rollback from a refusal.
//! Never does: IO, HTTP, process handling. Depends on serde (and serde_json for the
//! error body's text fallback) only.

use serde::{Deserialize, Serialize};

/// The shim's port when nothing else is configured (`devSync.port`'s default).
pub const DEFAULT_PORT: u16 = 7070;
/// Environment variable of the service container: the shim's port.
pub const PORT_ENV: &str = "STAND_SHIM_PORT";
/// Environment variable of the service container: the shim's token.
pub const TOKEN_ENV: &str = "STAND_SHIM_TOKEN";

/// `PUT`: upload a new binary (body), its sha256 in [`SHA_HEADER`].
pub const BINARY_PATH: &str = "/v1/binary";
/// `GET`: what the shim runs ([`Status`]).
pub const STATUS_PATH: &str = "/v1/status";
/// `POST`: restart the service process.
pub const RESTART_PATH: &str = "/v1/restart";

/// `GET` (200 when the shim has it, 404 `not_found` when not) and `PUT` (the file's
/// bytes, verified against the path's sha256): a shared library a dynamically linked
/// binary needs, at `/v1/libs/<sha256>/<file name>` ([`lib_url_path`]). devd puts the
/// libraries of an artifact before the binary that needs them.
pub const LIBS_PATH: &str = "/v1/libs";
/// Where the libraries live, beside the binary: `<binary's dir>/.stand-libs/<sha256>/<file
/// name>`. A binary devd links against shared libraries names those directories in its
/// rpath (`$ORIGIN/.stand-libs/<sha256>`), so each binary, the kept ones included, finds
/// exactly the bytes it was linked with; a directory is never rewritten.
pub const LIBS_DIR: &str = ".stand-libs";

/// `/v1/libs/<sha256>/<name>`.
pub fn lib_url_path(sha256: &str, name: &str) -> String {
    format!("{LIBS_PATH}/{sha256}/{name}")
}

/// Whether `sha256` (64 lowercase hex digits) and `name` (a plain file name ending in
/// `.so`, no path) may name a library: what the shim accepts.
pub fn valid_lib(sha256: &str, name: &str) -> bool {
    let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.ends_with(".so")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    hex && plain
}

/// The sha256 (hex) of an uploaded binary.
pub const SHA_HEADER: &str = "x-stand-sha256";
/// The token; works where `Authorization` belongs to a proxy (the Kubernetes API server).
pub const TOKEN_HEADER: &str = "x-stand-token";
/// Uploads larger than this are refused (413).
pub const MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// The `error.code`s the shim answers with.
pub mod code {
    /// 409: the new binary died at start or never got ready; the previous one serves.
    pub const ROLLED_BACK: &str = "rolled_back";
    /// 409: a restart's new process did not get ready; the previous one serves on.
    pub const RESTART_FAILED: &str = "restart_failed";
    /// 422: the body does not hash to the header's sha256; nothing replaced.
    pub const HASH_MISMATCH: &str = "hash_mismatch";
    pub const MISSING_SHA256: &str = "missing_sha256";
    pub const BAD_SHA256: &str = "bad_sha256";
    /// 400: a library path that is not `/v1/libs/<sha256>/<name>.so` ([`super::valid_lib`]).
    pub const BAD_LIBRARY: &str = "bad_library";
    pub const TOO_LARGE: &str = "too_large";
    pub const BAD_BODY: &str = "bad_body";
    pub const IO: &str = "io";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const SPAWN_FAILED: &str = "spawn_failed";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const INTERNAL: &str = "internal";
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Path of the service binary.
    #[serde(default)]
    pub binary: String,
    /// sha256 of the binary the running (or last started) child was started from.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Pid of the running child; `null` while it is down (backoff, shutdown).
    #[serde(default)]
    pub pid: Option<i32>,
    /// Child starts after the first one, for any reason.
    #[serde(default)]
    pub restarts: u64,
    /// RFC 3339 start time of the current child.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub last_exit: Option<ExitRecord>,
    #[serde(default)]
    pub last_rollback: Option<Rollback>,
}

/// How a child ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    pub pid: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// "exit code 3" / "killed by signal 9 (SIGKILL)" / "failed to start: ...".
    pub description: String,
    pub cause: ExitCause,
    pub at: String,
    pub uptime_ms: u64,
    /// Last lines the child wrote to stderr.
    pub stderr_tail: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExitCause {
    /// On its own.
    Exited,
    /// By the shim (restart, swap, shutdown).
    Stopped,
    /// exec failed.
    SpawnFailed,
}

/// A rejected upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rollback {
    pub at: String,
    pub rejected_sha256: String,
    pub restored_sha256: Option<String>,
    /// Human-readable: why the new binary was rejected (exit status + stderr tail).
    pub reason: String,
    pub exit: Option<ExitRecord>,
}

/// What a swap (`PUT /v1/binary`) or a restart answers with 200.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Swapped {
    #[serde(default)]
    pub sha256: Option<String>,
    pub pid: i32,
    #[serde(default)]
    pub restarts: u64,
}

/// Every error answer: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorInfo {
    #[serde(default)]
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<ErrorDetails>,
}

/// `error.details` of a 409.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetails {
    /// `rolled_back`: what was rejected and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// `rolled_back`: the child that serves now (the previous binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_pid: Option<i32>,
    /// `restart_failed`: the child that kept serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_pid: Option<i32>,
}

/// A non-2xx answer as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 409 `rolled_back`: the previous binary serves again; `reason` says why.
    RolledBack { reason: String },
    /// Anything else: the status, the shim's code (empty when the body was not the
    /// shim's JSON) and its message (or the body's text).
    Other { status: u16, code: String, message: String },
}

impl Refusal {
    /// Reads an error answer: the shim's JSON error body, else the body's text.
    pub fn from_answer(status: u16, body: &[u8]) -> Refusal {
        let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (String::new(), String::from_utf8_lossy(body).trim().chars().take(500).collect()),
        };
        Refusal::from_parts(status, code, message)
    }

    /// The one rule that tells a rollback from a refusal.
    pub fn from_parts(status: u16, code: String, message: String) -> Refusal {
        if status == 409 && code == code::ROLLED_BACK {
            Refusal::RolledBack { reason: message }
        } else {
            Refusal::Other { status, code, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_409_rolled_back_is_a_rollback_and_nothing_else_is() {
        let body = br#"{"error":{"code":"rolled_back","message":"new binary exited 3 ms after start (exit code 3)","details":{"restored_pid":7}}}"#;
        assert_eq!(
            Refusal::from_answer(409, body),
            Refusal::RolledBack { reason: "new binary exited 3 ms after start (exit code 3)".into() }
        );
        let body = br#"{"error":{"code":"restart_failed","message":"not ready"}}"#;
        assert_eq!(
            Refusal::from_answer(409, body),
            Refusal::Other { status: 409, code: "restart_failed".into(), message: "not ready".into() }
        );
        assert_eq!(
            Refusal::from_answer(502, b" bad gateway \n"),
            Refusal::Other { status: 502, code: String::new(), message: "bad gateway".into() }
        );
    }

    #[test]
    fn library_names_are_plain_so_files_under_a_full_sha256() {
        let sha = "0a".repeat(32);
        assert!(valid_lib(&sha, "libstd-d1237ef7159db0a2.so"));
        assert_eq!(lib_url_path(&sha, "libx.so"), format!("/v1/libs/{sha}/libx.so"));
        for name in ["", "../libx.so", "a/libx.so", ".libx.so", "libx", "libx.so\n", "lib x.so"] {
            assert!(!valid_lib(&sha, name), "{name:?}");
        }
        assert!(!valid_lib(&"0A".repeat(32), "libx.so"), "upper case");
        assert!(!valid_lib("0a", "libx.so"), "short");
    }

    #[test]
    fn status_round_trips_and_tolerates_missing_fields() {
        let status = Status {
            binary: "/app/service1".into(),
            sha256: Some("ab".repeat(32)),
            pid: Some(12),
            restarts: 3,
            started_at: Some("2026-05-01T10:00:00.000Z".into()),
            last_exit: Some(ExitRecord {
                pid: 11,
                code: None,
                signal: Some(15),
                description: "killed by signal 15 (SIGTERM)".into(),
                cause: ExitCause::Stopped,
                at: "2026-05-01T10:00:00.000Z".into(),
                uptime_ms: 5,
                stderr_tail: vec![],
            }),
            last_rollback: None,
        };
        let json = serde_json::to_value(&status).expect("serialize");
        assert_eq!(json["last_exit"]["cause"], "stopped");
        assert_eq!(serde_json::from_value::<Status>(json).expect("deserialize"), status);
        let sparse: Status = serde_json::from_str(r#"{"sha256":null,"pid":7}"#).expect("sparse");
        assert_eq!(sparse.pid, Some(7));
    }
}
