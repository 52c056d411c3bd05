//! The status API under load: wrk against `GET /api/v1/status` while edits run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What wrk measured of the status API.
pub(crate) struct ApiLoad {
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// Socket errors and non-2xx answers.
    pub(crate) errors: u64,
    /// Each edit's time to serving (ms): one after the other, the next written as soon
    /// as the last one answers, so each lands while the one before is on probation.
    pub(crate) edits: Vec<u64>,
}

/// wrk's latency (`812.00us`, `3.06ms`, `1.20s`) in ms.
fn wrk_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else {
        (text.strip_suffix('s')?, 1000.0)
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// The status API under wrk (`GET /api/v1/status` on `connections` keep-alive
/// connections, each pausing `pause_ms` after every answer: about
/// `connections * 1000 / pause_ms` requests per second) for `secs`, while `edit` runs
/// again and again here (the edit loop) until wrk is done; `edit` returns its time to
/// serving.
pub(crate) fn api_under_wrk(
    api: &str,
    secs: u64,
    connections: u32,
    pause_ms: u32,
    dir: &Path,
    mut edit: impl FnMut(usize) -> Result<Duration, String>,
) -> Result<ApiLoad, String> {
    let script = dir.join("pace.lua");
    std::fs::write(&script, format!("function delay()\n  return {pause_ms}\nend\n")).map_err(|e| e.to_string())?;
    let mut wrk = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("{api}/api/v1/status"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run wrk ({e}); bench/run installs it"))?;
    let mut edits = Vec::new();
    // Bounded by wrk's own duration.
    while wrk.try_wait().map_err(|e| e.to_string())?.is_none() {
        edits.push(edit(edits.len())?.as_millis() as u64);
    }
    let out = wrk.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let latency = |q: &str| field(q).and_then(wrk_ms).ok_or_else(|| format!("no {q} latency in wrk's output:\n{text}"));
    let socket_errors: u64 = field("Socket errors:")
        .map(|l| l.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").and_then(|n| n.parse().ok()).unwrap_or(0);
    Ok(ApiLoad {
        requests_per_sec: field("Requests/sec:").and_then(|r| r.parse().ok()).ok_or_else(|| format!("no rate in wrk's output:\n{text}"))?,
        p50_ms: latency("50%")?,
        p99_ms: latency("99%")?,
        errors: socket_errors + non_2xx,
        edits,
    })
}
