//! stand-shim: PID 1 of stand's dev images. Runs the service binary as a child,
//! forwards SIGTERM/SIGINT, reaps every zombie, restarts the child (on request, or
//! with a capped backoff when it dies), and swaps in a new binary uploaded over an
//! authenticated HTTP endpoint, rolling back when the new one dies at start.
//!
//! With the service's port known (`PORT`, or `STAND_SHIM_LISTEN`) the shim owns the
//! listening socket and passes it to every child (socket activation: fd 3,
//! `LISTEN_FDS`, `LISTEN_PID`), so a swap starts the new child beside the old one and
//! stops the old one only once the new one reported ready: no request is refused.
//!
//! Code map: `config` (argv/env, pure), `listen` (socket passing, readiness, the
//! exec mode), `reaper` (the only `waitpid`), `supervisor` (the child's lifecycle),
//! `upload` (files on disk), `api` (HTTP), `status` (what GET /v1/status reports).

pub mod api;
pub mod config;
pub mod listen;
pub mod reaper;
pub mod status;
pub mod supervisor;
pub mod upload;

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// The whole program; returns the process exit code.
pub fn main_entry() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The exec mode of a child being started: first, while single-threaded.
    if args.first().is_some_and(|a| a == listen::EXEC_FLAG) {
        return listen::exec_child(&args[1..]);
    }
    init_tracing();
    if matches!(args.first().and_then(|a| a.to_str()), Some("-h" | "--help")) {
        println!("{}", config::USAGE);
        return 0;
    }
    let config = match config::parse(&args, |k| std::env::var(k).ok()).and_then(|mut c| {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        c.binary = config::resolve_binary(&c.binary, &cwd, std::env::var_os("PATH").as_deref())?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stand-shim: {e}\n{}", config::USAGE);
            return 2;
        }
    };
    // Before anything else opens a descriptor: the sockets go to fd 3.. for the children.
    let listeners = match listen::bind_inherited(&config.listen) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("stand-shim: {e}");
            return 1;
        }
    };
    if std::process::id() != 1 {
        // Not PID 1: become the subreaper so our child's orphans are ours to reap.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become child subreaper; orphans go to PID 1");
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stand-shim: cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(run(config));
    drop(listeners);
    code
}

fn init_tracing() {
    let filter =
        EnvFilter::try_from_env("STAND_SHIM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

/// Supervises the child until SIGTERM/SIGINT; returns the child's exit code.
pub async fn run(config: Config) -> i32 {
    // Signal streams first: no SIGCHLD or SIGTERM may be missed once the child runs.
    let reaper = match reaper::Reaper::start() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGCHLD handler");
            return 1;
        }
    };
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return 1;
        }
    };
    if !config.listen.is_empty() {
        let addrs: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
        tracing::info!(listen = ?addrs, "service sockets held by the shim, passed to the child as fd 3..");
    }
    let status = status::Shared::new(config.binary.display().to_string());
    let supervisor = supervisor::spawn(
        supervisor::Spec {
            binary: config.binary.clone(),
            args: config.args.clone(),
            stop_timeout: config.stop_timeout,
            listen_fds: config.listen.len(),
        },
        reaper,
        status.clone(),
    );
    match config.token.clone() {
        None => tracing::warn!(
            "STAND_SHIM_TOKEN is not set: the sync endpoint is disabled, the service runs as is"
        ),
        Some(token) => {
            let app = Arc::new(api::App {
                supervisor: supervisor.clone(),
                status,
                token,
                binary: config.binary.clone(),
                grace: config.grace,
                overlap: !config.listen.is_empty(),
                ready_timeout: config.ready_timeout,
                ops: tokio::sync::Mutex::new(None),
                newer: api::Newer::default(),
            });
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port));
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, binary = %config.binary.display(), "sync endpoint listening");
                    tokio::spawn(async move {
                        if let Err(e) = axum::serve(listener, api::router(app)).await {
                            tracing::error!(error = %e, "sync endpoint stopped");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen: the sync endpoint is disabled")
                }
            }
        }
    }
    let sig = tokio::select! {
        _ = term.recv() => Signal::SIGTERM,
        _ = int.recv() => Signal::SIGINT,
    };
    tracing::info!("received {sig}: stopping the child");
    let code = supervisor.shutdown(sig).await;
    tracing::info!(code, "exiting with the child's exit code");
    code
}
