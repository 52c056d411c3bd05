//! The priority of the builds devd starts: below devd's own, so that devd's status
//! API, its deliveries and the services it serves get a core first while rustc fills
//! every one. On this 2-core machine, wrk at ~2200 req/s against devd's status API
//! beside two CPU hogs: p99 5.2 ms with the hogs at niceness 0, 3.8 ms at 10 (devd
//! built with its dependencies at opt-level 1). In bench/run's API row during edits
//! (debug devd, two short runs each, alternating): p99 4.8 and 5.5 ms at +10 against
//! 5.5 and 5.9 ms at 0, with (a) p50 412 / 398 ms against 395 / 422: the edit loop is
//! no slower, as niceness only matters when something else wants the CPU.

/// How much nicer than devd a build runs (capped at 19, the lowest priority).
pub const BUILD_NICENESS: i32 = 10;

/// Lowers the priority of a process devd just started (cargo, for a build or the
/// static shim of the images, or a replayed rustc);
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
