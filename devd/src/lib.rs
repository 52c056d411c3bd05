//! devd: turns `stand.toml` into a running stand and keeps it current while you edit.
//!
//! The pure core lives in the `stand-model` crate ([`config`]: the stand.toml model,
//! [`plan`]: an environment resolved), re-exported here under the same names. This crate
//! holds the adapters around it: [`graph`] (cargo metadata), [`watch`], [`build`], the
//! runtimes, delivery, status and the API.

pub use stand_model::{config, plan, values};

pub mod api;
pub mod build;
pub mod client;
pub mod commands;
pub mod cli;
pub mod daemon;
pub mod deliver;
pub mod graph;
pub mod helm;
pub mod image;
pub mod logs;
pub mod new;
pub mod progress;
pub mod replay;
pub mod status;
pub mod statedir;
pub mod runtime;
#[cfg(test)]
mod test_logs;
pub mod undeploy;
pub mod watch;
