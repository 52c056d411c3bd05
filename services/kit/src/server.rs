//! Binding (or the listener a supervisor passed, see [`crate::activation`]), serving
//! and graceful shutdown.
//!
//! On SIGTERM the service stops accepting at once (its copy of the listening socket
//! closes: with a shared socket the next process takes the queue), answers requests
//! that still arrive on open connections with `Connection: close`, then closes idle
//! connections and waits for in-flight requests, at most [`DRAIN`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::activation;
use crate::config::{ConfigError, ServiceConfig};
use crate::db::{Database, Migration};
use crate::routes::{app, AppState, ServiceInfo};

/// How long in-flight requests may run on after SIGTERM before the process exits.
const DRAIN: Duration = Duration::from_secs(4);
/// With a shared (inherited) socket: how long open connections keep being served, with
/// `Connection: close`, before idle ones are closed. A client in the middle of a
/// request loop learns from the answer to open a new connection (to the new
/// process) instead of racing a close on an idle keep-alive connection.
const LINGER: Duration = Duration::from_millis(300);

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
    let inherited = activation::inherited_listener()
        .and_then(|l| l.map(|l| l.set_nonblocking(true).and_then(|()| TcpListener::from_std(l))).transpose())
        .map_err(|source| ServeError::Bind { addr, source })?;
    let shared = inherited.is_some();
    let listener = match inherited {
        Some(listener) => listener,
        None => TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?,
    };
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(service = spec.info.name, version = spec.info.version, %addr, inherited = shared, "listening");
    let state = AppState::new(spec.info, db);

    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let router = app(state).layer(axum::middleware::from_fn_with_state(stopping_rx.clone(), close_when_stopping));
    let listener = Draining { inner: Some(listener), addr, stopping: stopping_rx.clone() };
    activation::notify_ready();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stopping_tx.send(true);
        if shared {
            tokio::time::sleep(LINGER).await;
        }
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

/// Once stopping, every HTTP/1 answer says `Connection: close` (HTTP/2 has GOAWAY).
async fn close_when_stopping(State(stopping): State<watch::Receiver<bool>>, req: Request, next: Next) -> Response {
    let http1 = req.version() <= Version::HTTP_11;
    let mut response = next.run(req).await;
    if http1 && *stopping.borrow() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The listener that stops accepting, and closes its copy of the socket, the moment
/// the service starts stopping.
struct Draining {
    inner: Option<TcpListener>,
    addr: SocketAddr,
    stopping: watch::Receiver<bool>,
}

impl axum::serve::Listener for Draining {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some(inner) = &self.inner else {
                return std::future::pending().await;
            };
            let stopping = self.stopping.wait_for(|stopping| *stopping);
            let accepted = tokio::select! {
                stopped = stopping => {
                    drop(stopped);
                    None
                }
                accepted = inner.accept() => Some(accepted),
            };
            match accepted {
                None => self.inner = None,
                Some(Ok(connection)) => return connection,
                Some(Err(e)) => {
                    // Per-connection errors (reset before accept) and resource limits
                    // alike: log, breathe, go on.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
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
