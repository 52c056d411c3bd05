//! What every stand service shares: configuration from the environment, a database
//! connection that retries and recovers, the common routes (`/health`, `/db-status`,
//! items), JSON errors, tracing setup and graceful shutdown.
//!
//! A service crate contributes only what is its own (name, default port, migrations,
//! its `/api/<name>` description) and calls [`serve`].
//!
//! Never does: know which services exist or where they run (stand.toml and devd do), or
//! speak the shim's protocol (a service is an ordinary process: it reads `PORT`, or takes
//! an inherited listener by the standard socket-activation protocol, whoever passes it).

pub mod activation;
pub mod config;
pub mod db;
pub mod error;
pub mod routes;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, DbSettings, ServiceConfig};
pub use db::{Database, DbStatus, Migration};
pub use error::AppError;
pub use routes::{AppState, ServiceInfo};
pub use server::{serve, ServiceSpec};
