//! One recorded rustc run again ([`run_unit`]): its JSON diagnostics and artifact
//! notices read as they come, what it linked, its warnings, and what it said when it
//! failed.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{OnStart, Recipe, TAIL_LINES};

/// How many of a failed replay's errors its account of the failure quotes.
const KEPT_ERRORS: usize = 3;

/// What one replayed rustc left: its warnings, its other stderr lines, what it linked,
/// and its stdout when asked for.
pub(super) struct UnitRun {
    pub(super) warnings: Vec<String>,
    pub(super) stderr: Vec<String>,
    pub(super) linked: Option<PathBuf>,
    pub(super) stdout: String,
}

/// Runs one recorded rustc and reads its JSON diagnostics and artifact notices.
pub(super) async fn run_unit(recipe: &Recipe, on_start: &OnStart<'_>, capture: bool) -> Result<UnitRun, String> {
    // cargo must not take this unit for fresh later (its fingerprints compare mtimes,
    // and a restored file can be older than cargo's last run): without its fingerprint
    // cargo recompiles it the next time it is asked.
    if let Some(dir) = recipe.fingerprint_dir() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut cmd = tokio::process::Command::new(&recipe.program);
    cmd.args(&recipe.args)
        .current_dir(&recipe.cwd)
        .env_clear()
        .envs(recipe.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(if capture { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", recipe.program))?;
    crate::priority::lower(child.id());
    if let Some(pid) = child.id() {
        let mut on_start = on_start.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        on_start(pid, recipe.describe());
    }
    let stderr = child.stderr.take().ok_or("rustc stderr not captured")?;
    // Read beside stderr: a full pipe would stop rustc.
    let stdout = child.stdout.take().map(|mut out| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut out, &mut text).await;
            text
        })
    });
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    let mut unit = UnitRun { warnings: Vec::new(), stderr: Vec::new(), linked: None, stdout: String::new() };
    let mut errors = 0;
    // What the error says goes into the log of a fallback (a dynamic link that failed
    // stays static for that key): the first few, whole.
    let mut first_errors = Vec::new();
    // Ends at end of file (rustc exited) or a read error; lines need not be UTF-8.
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(message) if message["$message_type"] == "artifact" => {
                if message["emit"] == "link" {
                    unit.linked = message["artifact"].as_str().map(PathBuf::from);
                }
            }
            Ok(message) if message["$message_type"] == "diagnostic" => {
                let rendered = strip_ansi(message["rendered"].as_str().unwrap_or_default());
                match message["level"].as_str() {
                    Some("warning") => unit.warnings.push(rendered),
                    Some("error" | "error: internal compiler error") => {
                        errors += 1;
                        if first_errors.len() < KEPT_ERRORS {
                            first_errors.push(rendered);
                        }
                    }
                    _ => {}
                }
            }
            _ => {
                if unit.stderr.len() == TAIL_LINES {
                    unit.stderr.remove(0);
                }
                unit.stderr.push(line);
            }
        }
    }
    drop(reader);
    let status = child.wait().await.map_err(|e| format!("waiting for rustc: {e}"))?;
    if let Some(stdout) = stdout {
        unit.stdout = stdout.await.unwrap_or_default();
    }
    if !status.success() || errors > 0 {
        let said = first_errors.iter().map(|e| format!("\n{}", e.trim_end())).collect::<String>();
        return Err(format!("{} exited with {status} ({errors} errors){said}", recipe.describe()));
    }
    Ok(unit)
}

/// `text` without ANSI escape sequences (cargo asks rustc for colored renderings and
/// strips them itself; so must a replay).
pub(super) fn strip_ansi(text: &str) -> String {
    strip_ansi_escapes::strip_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Unit;

    /// A failed rustc's account names its first errors (what the log of a fallback
    /// shows), not only how many there were.
    #[tokio::test]
    async fn a_failed_unit_says_what_rustc_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rustc = dir.path().join("rustc");
        let diagnostic = serde_json::json!({"$message_type": "diagnostic", "level": "error", "rendered": "error: linking with `cc` failed: undefined symbol: foo\n"});
        std::fs::write(&rustc, format!("#!/bin/sh\nprintf '%s\\n' '{diagnostic}' >&2\nexit 1\n")).expect("script");
        std::fs::set_permissions(&rustc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let unit = Recipe {
            package: "svc".into(),
            unit: Unit::Bin("svc".into()),
            program: rustc.display().to_string(),
            args: Vec::new(),
            cwd: "/".into(),
            env: Vec::new(),
        };
        let mut quiet = |_: u32, _: String| {};
        let why = run_unit(&unit, &std::sync::Mutex::new(&mut quiet), false).await.err().expect("rustc failed");
        assert!(why.contains("(1 errors)") && why.contains("undefined symbol: foo"), "{why}");
    }
}
