//! For unit tests: what devd logs at warn and above, captured as text (the format of
//! devd's own subscriber, without colour), for asserting that a line carries its span.

use std::sync::{Arc, Mutex, PoisonError};

/// The captured log text; keeps capturing while the guard of [`capture_warnings`] lives.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures warnings and errors on this thread (a current-thread tokio test's tasks
/// included) until the guard is dropped.
///
/// tracing caches each callsite's interest process-wide, computed by the first thread
/// that reaches it: a sibling test with no subscriber would pin a line this test
/// asserts on to "never" (1 failure in ~15 full `--lib` runs). A global registry with
/// no layers, installed once, makes those threads answer "always" instead, and the
/// scoped subscriber below still filters what it writes.
pub fn capture_warnings() -> (Logs, tracing::subscriber::DefaultGuard) {
    static BASE: std::sync::Once = std::sync::Once::new();
    // Fails only when a test already installed a global subscriber, which serves too.
    BASE.call_once(|| drop(tracing::subscriber::set_global_default(tracing_subscriber::registry())));
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}
