//! Which target `devd up` runs when none is named.
//!
//! The environment's target, when it can be reached. An environment on kubernetes
//! whose cluster does not answer (no kubeconfig, or its server does not answer within
//! [`PROBE_DEADLINE`]) runs on the docker target when a Docker engine answers, and
//! says so in one line. `--target` (and `--no-deploy`, which is Tilt's kubernetes mode)
//! keep the choice out of it. Neither reachable: an error that says what to install.

use std::time::Duration;

use crate::config::Target;

/// How long a cluster or an engine may take to answer.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// The target to run, and the line to tell the user when it is not the environment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub target: Target,
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "nowhere to run env `{env}`: it runs on kubernetes, but no cluster answers ({cluster}), and no Docker engine answers ({docker}). \
     Install Docker and start it (Debian: `apt-get install docker.io`, or `bash scripts/setup` here), \
     or point your kubeconfig at a running cluster (e.g. `kind create cluster`); \
     `devd up --target kubernetes` builds without either"
)]
pub struct NoTarget {
    pub env: String,
    pub cluster: String,
    pub docker: String,
}

/// Whether the kubeconfig's (or the in-cluster) API server answers: its URL, or why not.
/// Any HTTP answer counts (an authorization error is the cluster's to report later).
pub async fn cluster_answers() -> Result<String, String> {
    if let Some(why) = no_config_at_all() {
        return Err(why);
    }
    let config = match tokio::time::timeout(PROBE_DEADLINE, kube::Config::infer()).await {
        Ok(Ok(config)) => config,
        Ok(Err(e)) => return Err(format!("the kubeconfig is not usable: {}", innermost(&e))),
        Err(_) => return Err(format!("reading the kubeconfig took more than {} s", PROBE_DEADLINE.as_secs())),
    };
    let server = config.cluster_url.to_string();
    tracing::debug!(%server, "kubeconfig read; probing the cluster");
    // Building the client is local work (its TLS roots), not part of the answer's deadline.
    let client = kube::Client::try_from(config).map_err(|e| format!("{server}: {e}"))?;
    tracing::debug!(%server, "client built");
    match tokio::time::timeout(PROBE_DEADLINE, client.apiserver_version()).await {
        Ok(Ok(_) | Err(kube::Error::Api(_))) => Ok(server),
        Ok(Err(e)) => Err(format!("{server} does not answer: {e}")),
        Err(_) => Err(format!("{server} did not answer within {} s", PROBE_DEADLINE.as_secs())),
    }
}

/// The kube context devd would talk to, read from the kubeconfig alone (no request):
/// its `current-context`; `in-cluster` inside a pod that has no kubeconfig; `None`
/// when nothing points at a cluster (or the kubeconfig names no current context, which
/// kube refuses to connect with anyway).
pub fn current_context() -> Option<String> {
    match kube::config::Kubeconfig::read() {
        Ok(config) => config.current_context.filter(|c| !c.is_empty()),
        Err(_) if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => Some(IN_CLUSTER.to_owned()),
        Err(_) => None,
    }
}

/// The context name of the in-cluster configuration (a pod's service account).
pub const IN_CLUSTER: &str = "in-cluster";

/// Why there is no cluster to ask, when nothing points at one: no `KUBECONFIG`, no
/// `~/.kube/config`, and not inside a pod. kube's own error chain says the same in
/// ~300 characters; the user needs the one reason.
fn no_config_at_all() -> Option<String> {
    if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return None;
    }
    let default = std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".kube").join("config"))?;
    (!default.exists()).then(|| format!("no kubeconfig at {} and KUBECONFIG is not set", default.display()))
}

/// The last error of `e`'s source chain: the cause, without its wrappers.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Whether the Docker engine (`DOCKER_HOST`, else the local socket) answers a ping.
pub async fn docker_answers() -> Result<(), String> {
    let docker = bollard::Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    match tokio::time::timeout(PROBE_DEADLINE, docker.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_DEADLINE.as_secs())),
    }
}

/// The target for `devd up --env <env>`: `forced` when given, else the environment's
/// when reachable, else docker (see the module docs).
pub async fn choose(env: &str, env_target: Target, forced: Option<Target>, no_deploy: bool) -> Result<Choice, NoTarget> {
    if let Some(target) = forced {
        return Ok(Choice { target, note: None });
    }
    if env_target != Target::Kubernetes || no_deploy {
        return Ok(Choice { target: env_target, note: None });
    }
    let cluster = match cluster_answers().await {
        Ok(server) => {
            tracing::info!(%server, "the cluster answers: kubernetes target");
            return Ok(Choice { target: Target::Kubernetes, note: None });
        }
        Err(why) => why,
    };
    match docker_answers().await {
        Ok(()) => Ok(Choice {
            target: Target::Docker,
            note: Some(format!(
                "devd: no Kubernetes cluster answers ({cluster}); running env `{env}` on the docker target here \
                 (`--target kubernetes` or `--target docker` forces either)"
            )),
        }),
        Err(docker) => Err(NoTarget { env: env.to_owned(), cluster, docker }),
    }
}
