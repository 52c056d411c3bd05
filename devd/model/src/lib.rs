//! stand-model: what a stand is, with no IO beyond reading the files it is asked to.
//!
//! Owns the `stand.toml` model and its diagnostics ([`config`]), an environment resolved
//! into a plan ([`plan`]), the `helm` argv of a plan ([`helm`]) and the Helm values
//! generated from a plan ([`values`]). It never talks to a network, Docker, Kubernetes
//! or a child process, and has no async runtime: devd, the chart tests and the Tiltfile
//! tests all take the facts of a stand from here.

pub mod config;
pub mod helm;
pub mod plan;
pub mod topology;
pub mod values;
#[cfg(test)]
mod testing;
