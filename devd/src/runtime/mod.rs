//! Targets: where the stand runs (`docker`, `kubernetes`).
//!
//! A target lists the running instances of a service (containers, pods) and reaches
//! each one's shim and service over HTTP. The daemon (see [`crate::deliver`]) does the
//! rest the same way for every target: it delivers each new artifact to every instance
//! (`PUT /v1/binary`), polls the service's `/health` (ok, degraded or unreachable), and re-syncs an instance whose
//! shim reports another hash than the current artifact's.
//!
//! How an instance is reached is the target's business: the docker target publishes the
//! shim and service ports on 127.0.0.1; the kubernetes target goes through the API
//! server's pod proxy. Both fill an [`Instance`] with base URLs, and the default
//! methods of [`Target`] speak the shim protocol ([`shim::ShimClient`]) over the
//! target's [`Target::transport`]: [`shim::DirectHttp`] for docker,
//! [`kubernetes::PodProxy`] for kubernetes.

pub mod choice;
pub mod docker;
pub mod kubernetes;
pub mod shim;

use std::path::Path;

use futures_util::future::BoxFuture;
use serde::Serialize;

pub use shim::{ShimError, ShimReply, ShimStatus, ShimTransport};

use crate::build::SharedLib;
use crate::status::HealthReport;

/// One running copy of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Stable while the instance lives: a container id, a pod uid or name.
    pub id: String,
    /// For people: a container name, a pod name.
    pub name: String,
    pub service: String,
    /// The shim's base URL (no trailing slash): `PUT {shim_url}/v1/binary`.
    pub shim_url: String,
    /// The shim's token, sent as [`stand_shim_protocol::TOKEN_HEADER`] (through a
    /// Kubernetes pod proxy the `Authorization` header belongs to the API server).
    pub shim_token: String,
    /// The service's base URL as reachable from devd: `GET {service_url}/health`.
    pub service_url: String,
    /// When the container (not the child process) started, RFC 3339, if known.
    pub started_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    // Docker's message is part of these messages (status shows them as they are), so
    // it is not also a `source`: a printed cause chain would repeat it.
    #[error("cannot reach the Docker engine ({0}); is dockerd running? (`bash scripts/setup` starts it)")]
    DockerUnavailable(bollard::errors::Error),
    #[error("docker: {context}: {error}")]
    Docker { context: String, error: bollard::errors::Error },
    /// Where the stand runs does not answer (the target says so itself, once per
    /// change; callers need not log it again).
    #[error("{target} target unreachable: {reason}")]
    Unreachable { target: &'static str, reason: String },
    #[error("{0}")]
    Other(String),
}

impl TargetError {
    pub fn docker(context: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> TargetError {
        let context = context.into();
        move |error| TargetError::Docker { context, error }
    }
}

/// What the daemon needs from a target. Object safe (`Arc<dyn Target>`): methods return
/// boxed futures.
pub trait Target: Send + Sync {
    /// `docker` or `kubernetes`.
    fn kind(&self) -> &'static str;

    /// The running instances of `service` (not stopped or starting-up ones whose shim
    /// cannot answer yet: those show up in a later call).
    fn instances<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, TargetError>>;

    /// How requests reach instance URLs (the kubernetes target's carries the API
    /// server's credentials and TLS settings).
    fn transport(&self) -> &dyn ShimTransport;

    /// Sends the shared libraries a binary was linked against that the instance's shim
    /// does not have yet: before the binary ([`Target::deliver`]).
    fn deliver_libs<'a>(&'a self, instance: &'a Instance, libs: &'a [SharedLib]) -> BoxFuture<'a, Result<(), ShimError>> {
        Box::pin(async move { shim::ShimClient::new(self.transport()).put_libs(instance, libs).await })
    }

    /// Sends `binary` (whose sha256 is `sha256`) to the instance's shim, its shared
    /// libraries already there ([`Target::deliver_libs`]). Ok once the new binary
    /// survived the shim's grace period; [`ShimError::RolledBack`] when it did not (the
    /// previous binary serves again).
    fn deliver<'a>(&'a self, instance: &'a Instance, binary: &'a Path, sha256: &'a str) -> BoxFuture<'a, Result<ShimReply, ShimError>> {
        Box::pin(async move { shim::ShimClient::new(self.transport()).put_binary(instance, binary, sha256).await })
    }

    /// Restarts the service process in the instance (the shim's `POST /v1/restart`).
    fn restart<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<ShimReply, ShimError>> {
        Box::pin(async move { shim::ShimClient::new(self.transport()).restart(instance).await })
    }

    /// What the instance's shim runs (`GET /v1/status`).
    fn shim_status<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<ShimStatus, ShimError>> {
        Box::pin(async move { shim::ShimClient::new(self.transport()).status(instance).await })
    }

    /// What the service's `GET /health` says: ok, degraded (2xx with `status:
    /// "degraded"`) or unreachable.
    fn health<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, HealthReport> {
        Box::pin(async move { shim::ShimClient::new(self.transport()).health(instance).await })
    }

    /// Bumped whenever the target sees an instance appear, restart or go (the
    /// kubernetes target's pod watch): the delivery task reconciles at once instead of
    /// at its next tick. `None`: the target only has the ticks.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_errors_say_dockers_message_once() {
        let source = bollard::errors::Error::DockerResponseServerError {
            status_code: 403,
            message: "error while removing network: network n has active endpoints".to_owned(),
        };
        let error = anyhow::Error::from(TargetError::docker("remove network n")(source));
        let printed = format!("{error:#}");
        assert_eq!(printed.matches("has active endpoints").count(), 1, "{printed}");
        assert!(printed.starts_with("docker: remove network n: "), "{printed}");
    }
}
