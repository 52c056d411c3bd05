//! devd: turns `stand.toml` into a running stand and keeps it current while you edit.
//!
//! Pure core (no IO): [`config`] (the stand.toml model) and [`plan`] (an environment
//! resolved). Adapters around it: [`graph`] (cargo metadata), [`watch`], [`build`].

pub mod api;
pub mod build;
pub mod client;
pub mod commands;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod graph;
pub mod helm;
pub mod image;
pub mod logs;
pub mod plan;
pub mod progress;
pub mod replay;
pub mod status;
pub mod statedir;
pub mod target;
pub mod watch;
