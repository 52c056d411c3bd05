//! devd: turns `stand.toml` into a running stand and keeps it current while you edit.
//!
//! Owns the IO around the pure parts: the cargo workspace graph ([`graph`]), the file
//! watch ([`watch`]), builds and the artifact store ([`build`], [`replay`], their
//! [`priority`]), dev images
//! ([`image`]), the runtimes where the stand runs ([`runtime`]: docker, kubernetes, the
//! shim client), delivery ([`deliver`]), the status hub and its events ([`status`]), the
//! API ([`api`]), the daemon loop ([`daemon`]) and the commands ([`commands`]).
//! Never does: parse or judge stand.toml, resolve a plan or write Helm values (the
//! `stand-model` crate, re-exported here as [`config`], [`plan`] and [`values`]); define
//! the command line's types (`stand-cli`) or the shim's protocol (`stand-shim-protocol`).

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
pub mod measure;
pub mod new;
pub mod priority;
pub mod progress;
pub mod replay;
pub mod status;
pub mod statedir;
pub mod runtime;
#[cfg(test)]
mod test_logs;
pub mod undeploy;
pub mod watch;
