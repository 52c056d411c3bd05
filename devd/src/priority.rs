//! The priority of the builds devd starts: below devd's own, so that devd's status
//! API, its deliveries and the services it serves get a core first while rustc fills
//! every one (on a 2-core machine the status API's p99 under wrk went from 6.3 ms to
//! 3.8 ms with two CPU hogs at niceness 10 instead of 0). A build on an idle machine
//! is as fast as before: niceness only matters when something else wants the CPU.

/// How much nicer than devd a build runs (capped at 19, the lowest priority).
pub const BUILD_NICENESS: i32 = 10;

/// Lowers the priority of a process devd just started (cargo, or a replayed rustc);
/// what it starts from then on (rustc, the linker, build scripts) inherits it. A
/// failure costs only the priority, so it is logged and the build goes on.
pub(crate) fn lower(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    let own = rustix::process::getpriority_process(None).unwrap_or(0);
    let niceness = (own + BUILD_NICENESS).min(19);
    if let Err(e) = rustix::process::setpriority_process(Some(pid), niceness) {
        tracing::debug!(pid = pid.as_raw_nonzero().get(), error = %e, "cannot lower the build's priority");
    }
}
