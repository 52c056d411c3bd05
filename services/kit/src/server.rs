//! Binding, serving and graceful shutdown.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{ConfigError, ServiceConfig};
use crate::db::{Database, Migration};
use crate::routes::{app, AppState, ServiceInfo};

/// How long in-flight requests may run on after SIGTERM before the process exits.
const DRAIN: Duration = Duration::from_secs(4);

/// What a service crate contributes.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    pub info: ServiceInfo,
    pub default_port: u16,
    pub migrations: &'static [Migration],
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("bad configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, #[source] source: std::io::Error },
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
}

/// The whole `main` of a service: tracing, the runtime, [`serve`], the exit code.
/// Non-generic on purpose: a service's binary instantiates nothing of tokio's or
/// axum's, so rebuilding it after an edit compiles almost nothing (devd's hot path).
pub fn main(spec: ServiceSpec) -> std::process::ExitCode {
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(spec)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            tracing::error!(error = %message, "service failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the service until SIGTERM or Ctrl-C: reads the environment, starts the
/// database supervisor, serves, then drains in-flight requests.
pub async fn serve(spec: ServiceSpec) -> Result<(), ServeError> {
    let config = ServiceConfig::from_env(spec.default_port)?;
    let ip: IpAddr = std::env::var("BIND_ADDRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, config.port);
    let db = match config.database {
        Some(settings) => Database::start(settings, spec.migrations),
        None => {
            tracing::warn!("no database configured (DATABASE_URL or DB_HOST): running without one");
            Database::none()
        }
    };
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(service = spec.info.name, version = spec.info.version, %addr, "listening");
    let state = AppState::new(spec.info, db);

    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let drain_deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        served = server => served.map_err(ServeError::Serve)?,
        () = drain_deadline => tracing::warn!("in-flight requests still running after {DRAIN:?}; exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
