//! The kubernetes target: the stand's pods, found by the chart's labels, and their
//! shims, reached through the Kubernetes API.
//!
//! Everything goes through one [`KubeApi`], built either from the user's kubeconfig
//! (current context) or the in-cluster config ([`KubeApi::connect`]), or, in tests,
//! from any `tower` service ([`KubeApi::new`] over `kube::Client::new`).
//!
//! ## Delivery: the pod proxy subresource, not exec
//! A new binary goes to a pod's shim as `PUT
//! /api/v1/namespaces/{ns}/pods/{pod}:{shimPort}/proxy/v1/binary` with the binary as
//! the body and the headers `X-Stand-Sha256` and `X-Stand-Token` (`Authorization`
//! belongs to the API server on this path). The alternative, `pods/exec`, needs a
//! program in the image to receive the bytes (`tar` or a shell for `kubectl cp`), and
//! dev images have neither: the shim is the only thing in them besides the service.
//! exec also speaks a WebSocket/SPDY channel protocol whereas the proxy is plain
//! HTTP, passes the shim's own answers (its JSON errors, a hash mismatch, a
//! rollback) through unchanged, and needs only `pods/proxy` in RBAC
//! (`create`/`update`/`get` for POST/PUT/GET). The shim's token comes from the Secret
//! the pod's `STAND_SHIM_TOKEN` refers to (the chart's `<release>-devsync`, key
//! `token`), read through the API.
//!
//! ## Watch and re-sync
//! [`KubeTarget`] implements [`Target`]: the daemon's delivery task
//! ([`crate::deliver`]) sends each artifact to every instance and reconciles by the
//! shim's hash. [`KubeTarget::watch`] runs kube-runtime's `watcher` over the release's
//! service pods (list, then watch from the list's `resourceVersion`) into a
//! `reflector` store that `instances` answers from (no API call per reconcile). A pod that appears (a rollout, a reschedule: new
//! name or uid) or whose service container restarted (`restartCount` went up, so it
//! runs the image's binary again) is a [`PodChange`], and bumps
//! [`KubeTarget::subscribe`] so the delivery task reconciles at once: the shim
//! reports the image's hash and the current artifact is sent again. An expired watch
//! (410) lists again.
//!
//! ## No cluster
//! An API server that does not answer (a stopped cluster, a wrong context) or refuses
//! (RBAC) is a state, not a stream of errors: [`Reachability`] prints one line when it
//! becomes unreachable (context, server, reason, what to do) and one when it answers
//! again; the watch retries with a growing backoff meanwhile, `instances` answers
//! [`TargetError::Unreachable`] without a request, and the status carries it
//! (`target_state`), which fails devd's readiness.
//!
//! ## Architecture
//! The nodes' `kubernetes.io/arch` label (or `status.nodeInfo.architecture`) gives
//! the build target ([`triple_for_nodes`]); a cluster with mixed architectures is an
//! error that names them. Listing nodes needs cluster-scoped read access that the
//! chart's Role cannot grant; a forbidden list is reported as
//! [`KubeError::is_forbidden`] and the caller keeps the plan's triple.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use http::{Method, Request, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Client;
use serde::Serialize;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch, Mutex};

use stand_shim_protocol::{code, Refusal, BINARY_PATH, RESTART_PATH, STATUS_PATH};

use crate::status::event::TargetReach;
use crate::status::{EventBody, HealthReport, StatusHub, TargetHealth, TargetState};
use crate::target::{Instance, ShimError, ShimReply, ShimStatus, Target, TargetError};

/// The chart's label for a pod's service.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// The chart's label for the Helm release.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// The chart's label for the kind of pod (`service` or `database`).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// The node label that carries the architecture (`amd64`, `arm64`, ...).
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// The name of the shim's container port in the chart.
pub const SHIM_PORT_NAME: &str = "shim";
/// The shim's port when a pod names none (`devSync.port`'s default), the variables of
/// the service container that hold the shim's token and port, and the headers of the
/// proxy path (`Authorization` is the API server's there): the shim protocol's.
pub use stand_shim_protocol::{
    DEFAULT_PORT as DEFAULT_SHIM_PORT, PORT_ENV as SHIM_PORT_ENV, SHA_HEADER, TOKEN_ENV as SHIM_TOKEN_ENV,
    TOKEN_HEADER,
};
/// How long one watch request lasts before the API server ends it (it is renewed).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Why a Kubernetes operation failed. Messages name the object and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot find a Kubernetes config: no usable kubeconfig (KUBECONFIG or ~/.kube/config, current context) and not running in a cluster")]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot create the Kubernetes client from the config")]
    Client(#[source] kube::Error),
    #[error("{what} failed: {}", api_message(.source))]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster has no nodes with a known architecture (label {LABEL_ARCH} or status.nodeInfo.architecture)")]
    NoNodes,
    #[error("the nodes have mixed architectures: {}; devd builds one binary per service: pin the services to one architecture (a nodeSelector on {LABEL_ARCH}) and set build_target in stand.toml", describe_arches(.arches))]
    MixedArch {
        /// Architecture → node names.
        arches: BTreeMap<String, Vec<String>>,
    },
    #[error("node {node} has architecture {arch}, which devd cannot build for (supported: {})", SUPPORTED_ARCHES.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", "))]
    UnsupportedArch { node: String, arch: String },
    #[error("pod {pod} has no shim (no container port named `{SHIM_PORT_NAME}`): enable devSync in the environment's values to sync into it")]
    NoShim { pod: String },
    #[error("secret {secret} has no key `{key}` (the shim token of pod {pod})")]
    NoToken { secret: String, key: String, pod: String },
    #[error("the shim of pod {pod} answered {status} to {what}: {message}")]
    Shim {
        pod: String,
        what: String,
        status: u16,
        /// The shim's `error.code` (e.g. `hash_mismatch`, `rolled_back`), when it sent one.
        code: Option<String>,
        message: String,
    },
    #[error("the shim of pod {pod} sent an answer devd does not understand to {what}: {detail}")]
    BadAnswer { pod: String, what: String, detail: String },
    #[error("cannot read the artifact {path}")]
    Artifact {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl KubeError {
    /// The API server said 403 (RBAC does not allow it).
    pub fn is_forbidden(&self) -> bool {
        self.api_code() == Some(403)
    }

    /// The HTTP code of an API server error (`metav1.Status.code`).
    pub fn api_code(&self) -> Option<u16> {
        match self {
            KubeError::Api { source: kube::Error::Api(status), .. } => Some(status.code),
            _ => None,
        }
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "{} (403 Forbidden: the credentials in use lack this permission; see the chart's rbac.create and the README)",
            s.message
        ),
        kube::Error::Api(s) => format!("{} ({} {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn describe_arches(arches: &BTreeMap<String, Vec<String>>) -> String {
    arches
        .iter()
        .map(|(arch, nodes)| format!("{arch} ({})", nodes.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kubernetes architectures devd builds for, and their Rust target triples. The
/// services link against the image's glibc, hence `-gnu`.
pub const SUPPORTED_ARCHES: &[(&str, &str)] = &[
    ("amd64", "x86_64-unknown-linux-gnu"),
    ("arm64", "aarch64-unknown-linux-gnu"),
];

/// The Rust target triple for a Kubernetes architecture (`amd64`, `arm64`).
pub fn triple_for_arch(arch: &str) -> Option<&'static str> {
    SUPPORTED_ARCHES.iter().find(|(a, _)| *a == arch).map(|(_, t)| *t)
}

/// One node and its architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeArch {
    pub node: String,
    /// `kubernetes.io/arch`, else `status.nodeInfo.architecture`; `None` if neither.
    pub arch: Option<String>,
}

impl NodeArch {
    pub fn from_node(node: &Node) -> Self {
        let label = node.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ARCH)).cloned();
        let info = node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.architecture.clone())
            .filter(|a| !a.is_empty());
        NodeArch { node: node.metadata.name.clone().unwrap_or_default(), arch: label.or(info) }
    }
}

/// The one target triple for all nodes: every node with a known architecture must
/// have the same one, and devd must be able to build for it.
pub fn triple_for_nodes(nodes: &[NodeArch]) -> Result<&'static str, KubeError> {
    let mut arches: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes {
        if let Some(arch) = &n.arch {
            arches.entry(arch.clone()).or_default().push(n.node.clone());
        }
    }
    if arches.len() > 1 {
        return Err(KubeError::MixedArch { arches });
    }
    let Some((arch, nodes)) = arches.into_iter().next() else {
        return Err(KubeError::NoNodes);
    };
    triple_for_arch(&arch).ok_or_else(|| KubeError::UnsupportedArch {
        node: nodes.first().cloned().unwrap_or_default(),
        arch,
    })
}

/// The label selector of one service's pods in a release.
pub fn service_selector(release: &str, service: &str) -> String {
    format!("{LABEL_NAME}={service},{LABEL_INSTANCE}={release},{LABEL_COMPONENT}=service")
}

/// The label selector of every service pod of a release.
pub fn release_selector(release: &str) -> String {
    format!("{LABEL_INSTANCE}={release},{LABEL_COMPONENT}=service")
}

/// Where a pod's shim token is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TokenRef {
    pub secret: String,
    pub key: String,
}

/// A service pod as devd sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodInstance {
    pub name: String,
    pub uid: String,
    /// The pod's `app.kubernetes.io/name`.
    pub service: String,
    pub node: Option<String>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// The pod's `Ready` condition.
    pub ready: bool,
    /// Restarts of the service container (the container named after the service, else the first).
    pub restart_count: i32,
    /// It has a deletionTimestamp: going away.
    pub terminating: bool,
    /// The shim's container port; `None` when devSync is off for this pod.
    pub shim_port: Option<u16>,
    /// The service's own container port (`http`).
    pub service_port: Option<u16>,
    pub token: TokenRef,
}

impl PodInstance {
    /// Reads what devd needs from a pod. `release` names the default token Secret.
    pub fn from_pod(pod: &Pod, release: &str) -> Self {
        let meta = &pod.metadata;
        let service =
            meta.labels.as_ref().and_then(|l| l.get(LABEL_NAME)).cloned().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let container = spec.and_then(|s| {
            s.containers.iter().find(|c| c.name == service).or_else(|| s.containers.first())
        });
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let restart_count = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| {
                let name = container.map(|c| c.name.as_str());
                cs.iter().find(|c| Some(c.name.as_str()) == name).or_else(|| cs.first())
            })
            .map_or(0, |c| c.restart_count);
        let ports = container.and_then(|c| c.ports.as_ref());
        let port_named = |name: &str| {
            ports
                .and_then(|ps| ps.iter().find(|p| p.name.as_deref() == Some(name)))
                .and_then(|p| u16::try_from(p.container_port).ok())
        };
        let env = container.and_then(|c| c.env.as_ref());
        let env_var = |name: &str| env.and_then(|e| e.iter().find(|v| v.name == name));
        let shim_port = port_named(SHIM_PORT_NAME).or_else(|| {
            env_var(SHIM_PORT_ENV).and_then(|v| v.value.as_deref()).and_then(|v| v.parse().ok())
        });
        let token = env_var(SHIM_TOKEN_ENV)
            .and_then(|v| v.value_from.as_ref())
            .and_then(|f| f.secret_key_ref.as_ref())
            .map_or_else(
                || TokenRef { secret: format!("{release}-devsync"), key: "token".into() },
                |s| TokenRef { secret: s.name.clone(), key: s.key.clone() },
            );
        PodInstance {
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            service,
            node: spec.and_then(|s| s.node_name.clone()),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into()),
            ready,
            restart_count,
            terminating: meta.deletion_timestamp.is_some(),
            shim_port,
            service_port: port_named("http"),
            token,
        }
    }

    /// Running and not being deleted: its shim can take a binary. Readiness is not
    /// required: a pod whose service crashes is not Ready, and a fixed binary is
    /// exactly what it needs.
    pub fn is_running(&self) -> bool {
        self.phase == "Running" && !self.terminating
    }

    /// The API server path of the shim through the pod proxy (no trailing slash).
    pub fn shim_base(&self, namespace: &str) -> Option<String> {
        self.shim_port.map(|port| format!("/api/v1/namespaces/{namespace}/pods/{}:{port}/proxy", self.name))
    }
}

/// The one way devd talks to the Kubernetes API.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    namespace: String,
    release: String,
    cluster: Cluster,
    tokens: std::sync::Arc<Mutex<HashMap<TokenRef, String>>>,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("namespace", &self.namespace).field("release", &self.release).finish()
    }
}

impl KubeApi {
    /// Over an existing client (tests: `Client::new(tower_mock, namespace)`).
    pub fn new(client: Client, namespace: impl Into<String>, release: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            release: release.into(),
            cluster: Cluster { context: "(given client)".into(), server: "(given client)".into() },
            tokens: std::sync::Arc::default(),
        }
    }

    /// Names the cluster in messages (the kubeconfig context and the API server).
    #[must_use]
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = cluster;
        self
    }

    /// From the kubeconfig's current context (`KUBECONFIG` or `~/.kube/config`), else
    /// the in-cluster service account. Objects are looked up in `namespace` (the
    /// plan's), whatever the context's default namespace is.
    pub async fn connect(namespace: impl Into<String>, release: impl Into<String>) -> Result<Self, KubeError> {
        let config = kube::Config::infer().await.map_err(KubeError::Config)?;
        // The context's name is only in the kubeconfig (Config keeps the server's URL).
        let context = kube::config::Kubeconfig::read()
            .ok()
            .and_then(|k| k.current_context)
            .unwrap_or_else(|| "in-cluster".to_owned());
        let cluster = Cluster { context, server: config.cluster_url.to_string().trim_end_matches('/').to_owned() };
        let client = Client::try_from(config).map_err(KubeError::Client)?;
        Ok(Self::new(client, namespace, release).with_cluster(cluster))
    }

    /// The cluster this client talks to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// Every node's architecture (`GET /api/v1/nodes`).
    pub async fn node_arches(&self) -> Result<Vec<NodeArch>, KubeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(|source| KubeError::Api { what: "listing nodes".into(), source })?;
        Ok(list.items.iter().map(NodeArch::from_node).collect())
    }

    /// The build target of the cluster's nodes (see [`triple_for_nodes`]).
    pub async fn build_triple(&self) -> Result<&'static str, KubeError> {
        triple_for_nodes(&self.node_arches().await?)
    }

    /// The pods of `service` (all phases) and the list's resourceVersion.
    pub async fn service_pods(&self, service: &str) -> Result<(Vec<PodInstance>, String), KubeError> {
        self.list_pods(&service_selector(&self.release, service), &format!("listing the pods of {service}")).await
    }

    /// Every service pod of the release and the list's resourceVersion.
    pub async fn release_pods(&self) -> Result<(Vec<PodInstance>, String), KubeError> {
        self.list_pods(&release_selector(&self.release), "listing the service pods").await
    }

    async fn list_pods(&self, selector: &str, what: &str) -> Result<(Vec<PodInstance>, String), KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| KubeError::Api { what: format!("{what} in namespace {}", self.namespace), source })?;
        let version = list.metadata.resource_version.clone().unwrap_or_default();
        let mut items: Vec<PodInstance> =
            list.items.iter().map(|p| PodInstance::from_pod(p, &self.release)).collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((items, version))
    }

    /// The running pods of `service` (see [`PodInstance::is_running`]).
    pub async fn running_pods(&self, service: &str) -> Result<Vec<PodInstance>, KubeError> {
        let (pods, _) = self.service_pods(service).await?;
        Ok(pods.into_iter().filter(PodInstance::is_running).collect())
    }

    /// One pod, as it is now.
    pub async fn pod(&self, name: &str) -> Result<PodInstance, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pod = pods
            .get(name)
            .await
            .map_err(|source| KubeError::Api { what: format!("reading pod {name}"), source })?;
        Ok(PodInstance::from_pod(&pod, &self.release))
    }

    /// Watches the release's service pods from `resource_version`; the stream ends
    /// when the API server closes the watch (after about [`WATCH_TIMEOUT_SECS`]).
    pub async fn watch_pods(
        &self,
        resource_version: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<WatchEvent<Pod>, kube::Error>> + use<>, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = WatchParams::default().labels(&release_selector(&self.release)).timeout(WATCH_TIMEOUT_SECS);
        pods.watch(&params, resource_version)
            .await
            .map_err(|source| KubeError::Api { what: "watching the service pods".into(), source })
    }

    /// The shim token of a pod, from its Secret (cached per Secret and key).
    pub async fn shim_token(&self, pod: &PodInstance) -> Result<String, KubeError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(&pod.token) {
            return Ok(t.clone());
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets.get(&pod.token.secret).await.map_err(|source| KubeError::Api {
            what: format!("reading secret {} (the shim token)", pod.token.secret),
            source,
        })?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&pod.token.key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&pod.token.key)).cloned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KubeError::NoToken {
                secret: pod.token.secret.clone(),
                key: pod.token.key.clone(),
                pod: pod.name.clone(),
            })?;
        tokens.insert(pod.token.clone(), value.clone());
        Ok(value)
    }

    /// Forgets cached tokens (after the shim said 401: the Secret may have changed).
    pub async fn forget_tokens(&self) {
        self.tokens.lock().await.clear();
    }

    /// `GET /v1/status` of a pod's shim.
    pub async fn shim_status(&self, pod: &PodInstance) -> Result<ShimStatus, KubeError> {
        let (base, token) = self.shim_of(pod).await?;
        let body = self.proxy(&pod.name, &base, &token, Method::GET, STATUS_PATH, None).await?;
        parse_answer(&pod.name, &format!("GET {STATUS_PATH}"), &body)
    }

    /// `PUT /v1/binary`: the artifact's bytes, to be verified against `sha256`.
    pub async fn deliver(&self, pod: &PodInstance, binary: Vec<u8>, sha256: &str) -> Result<ShimReply, KubeError> {
        let (base, token) = self.shim_of(pod).await?;
        let body = self.proxy(&pod.name, &base, &token, Method::PUT, BINARY_PATH, Some((binary, sha256))).await?;
        parse_answer(&pod.name, &format!("PUT {BINARY_PATH}"), &body)
    }

    /// [`KubeApi::deliver`] of the file at `path`.
    pub async fn deliver_file(&self, pod: &PodInstance, path: &Path, sha256: &str) -> Result<ShimReply, KubeError> {
        let binary = read_artifact(path).await?;
        self.deliver(pod, binary, sha256).await
    }

    /// `POST /v1/restart`: the shim restarts the service.
    pub async fn restart(&self, pod: &PodInstance) -> Result<ShimReply, KubeError> {
        let (base, token) = self.shim_of(pod).await?;
        let body = self.proxy(&pod.name, &base, &token, Method::POST, RESTART_PATH, None).await?;
        parse_answer(&pod.name, &format!("POST {RESTART_PATH}"), &body)
    }

    /// The pod's service proxy base (`.../pods/{pod}:{http port}/proxy`).
    pub fn service_base(&self, pod: &PodInstance) -> Option<String> {
        pod.service_port.map(|port| format!("/api/v1/namespaces/{}/pods/{}:{port}/proxy", self.namespace, pod.name))
    }

    /// `GET {service_base}/health` through the pod proxy: ok, degraded or unreachable.
    pub async fn health_at(&self, service_base: &str) -> HealthReport {
        let Ok(request) = Request::get(format!("{service_base}/health")).body(Body::empty()) else {
            return HealthReport::unreachable(format!("bad service URL {service_base}"));
        };
        let response = match self.client.send(request).await {
            Ok(response) => response,
            Err(e) => return HealthReport::unreachable(format!("no answer from /health through the pod proxy: {e}")),
        };
        let status = response.status().as_u16();
        match response.into_body().collect_bytes().await {
            Ok(body) => HealthReport::from_answer(status, &body),
            Err(e) => HealthReport::unreachable(format!("/health answer cut off: {e}")),
        }
    }

    /// `GET /health` of the service itself through the pod proxy: true on 2xx.
    pub async fn healthy(&self, pod: &PodInstance) -> bool {
        match self.service_base(pod) {
            Some(base) => self.health_at(&base).await.health.answers(),
            None => false,
        }
    }

    /// Polls [`KubeApi::healthy`] every `every` until it is true or `within` has passed.
    pub async fn wait_healthy(&self, pod: &PodInstance, within: Duration, every: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.healthy(pod).await {
                return true;
            }
            if tokio::time::Instant::now() + every > deadline {
                return false;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The shim's proxy base and token of a pod.
    async fn shim_of(&self, pod: &PodInstance) -> Result<(String, String), KubeError> {
        let base = pod.shim_base(&self.namespace).ok_or_else(|| KubeError::NoShim { pod: pod.name.clone() })?;
        let token = self.shim_token(pod).await?;
        Ok((base, token))
    }

    /// One request to a shim through the pod proxy: `{base}{path}` with the token in
    /// `X-Stand-Token`, and for an upload the body with `X-Stand-Sha256`. Returns the
    /// body of a 2xx answer; anything else is an error that says who answered.
    pub async fn proxy(
        &self,
        pod: &str,
        base: &str,
        token: &str,
        method: Method,
        path: &str,
        upload: Option<(Vec<u8>, &str)>,
    ) -> Result<Vec<u8>, KubeError> {
        let what = format!("{method} {path}");
        let mut request = Request::builder().method(method).uri(format!("{base}{path}")).header(TOKEN_HEADER, token);
        let body = match upload {
            Some((bytes, sha256)) => {
                request = request
                    .header(SHA_HEADER, sha256)
                    .header(http::header::CONTENT_TYPE, "application/octet-stream");
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| KubeError::BadAnswer {
            pod: pod.into(),
            what: what.clone(),
            detail: format!("cannot build the request: {e}"),
        })?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|source| KubeError::Api { what: format!("{what} to the shim of pod {pod}"), source })?;
        let status = response.status();
        let bytes = response.into_body().collect_bytes().await.map_err(|source| KubeError::Api {
            what: format!("reading the answer of the shim of pod {pod} to {what}"),
            source,
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(error_answer(pod, &what, status, &bytes))
    }
}

async fn read_artifact(path: &Path) -> Result<Vec<u8>, KubeError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| KubeError::Artifact { path: path.display().to_string(), source })
}

/// A non-2xx answer on the proxy path: the API server's own `Status` (the pod is gone,
/// RBAC, the shim is not listening) or the shim's JSON error, passed through.
fn error_answer(pod: &str, what: &str, status: StatusCode, body: &[u8]) -> KubeError {
    if let Ok(s) = serde_json::from_slice::<kube::core::Status>(body) {
        if s.message.is_empty() && s.reason.is_empty() {
            // not a Status after all
        } else {
            let mut s = s;
            if s.code == 0 {
                s.code = status.as_u16();
            }
            return KubeError::Api {
                what: format!("{what} to the shim of pod {pod}"),
                source: kube::Error::Api(s.boxed()),
            };
        }
    }
    let (code, message) = match Refusal::from_answer(status.as_u16(), body) {
        Refusal::RolledBack { reason } => (code::ROLLED_BACK.to_owned(), reason),
        Refusal::Other { code, message, .. } => (code, message),
    };
    let code = Some(code).filter(|c| !c.is_empty());
    KubeError::Shim { pod: pod.into(), what: what.into(), status: status.as_u16(), code, message }
}

fn parse_answer<T: serde::de::DeserializeOwned>(pod: &str, what: &str, body: &[u8]) -> Result<T, KubeError> {
    serde_json::from_slice(body).map_err(|e| KubeError::BadAnswer {
        pod: pod.into(),
        what: what.into(),
        detail: format!("{e}: {}", String::from_utf8_lossy(body).chars().take(200).collect::<String>()),
    })
}

/// Why a pod needs its hash checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncReason {
    /// devd saw the pod for the first time (startup, a rollout, a reschedule).
    NewPod,
    /// The service container restarted: it runs the image's binary again.
    Restarted,
}

/// What devd remembers of a pod, to tell a restart or a new pod from an update.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    uid: String,
    restart_count: i32,
}

/// Tells, from successive views of the pods, which ones need a check: new (name or
/// uid) or restarted (`restartCount` went up). Pure.
#[derive(Debug, Default)]
pub struct PodTracker {
    seen: HashMap<String, Seen>,
}

impl PodTracker {
    /// Records `pod`; returns why it needs a sync check, if it does. A pod that is not
    /// running is not recorded (it will be new when it runs).
    pub fn observe(&mut self, pod: &PodInstance) -> Option<SyncReason> {
        if !pod.is_running() {
            return None;
        }
        let now = Seen { uid: pod.uid.clone(), restart_count: pod.restart_count };
        let reason = match self.seen.get(&pod.name) {
            None => Some(SyncReason::NewPod),
            Some(before) if before.uid != now.uid => Some(SyncReason::NewPod),
            Some(before) if now.restart_count > before.restart_count => Some(SyncReason::Restarted),
            Some(_) => None,
        };
        self.seen.insert(pod.name.clone(), now);
        reason
    }

    /// The pod is gone; returns whether it was known.
    pub fn forget(&mut self, pod: &str) -> bool {
        self.seen.remove(pod).is_some()
    }

    /// The pods it knows.
    pub fn pods(&self) -> BTreeSet<String> {
        self.seen.keys().cloned().collect()
    }
}

/// A change [`KubeTarget::watch`] saw: the daemon reconciles the service now instead
/// of at its next tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodChange {
    pub service: String,
    pub pod: String,
    /// `None`: the pod is gone.
    pub reason: Option<SyncReason>,
}

/// kube's default backoff (0.8 s doubling to 30 s, each delay plus up to as much again
/// of jitter), reset only once the API server has answered. kube's `StreamBackoff`
/// resets on every `Ok` item, and the watcher yields `Event::Init` before each list
/// attempt, without a request: with the default backoff alone, a refused connection is
/// retried about every second forever (49 attempts a minute, measured).
struct AnsweredBackoff {
    inner: watcher::DefaultBackoff,
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Iterator for AnsweredBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.inner.next()
    }
}

impl kube::runtime::utils::Backoff for AnsweredBackoff {
    fn reset(&mut self) {
        if self.answered.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.inner.reset();
        }
    }
}

/// Where devd connects: the kubeconfig's current context and its API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub context: String,
    pub server: String,
}

/// Whether the API server answers, as the pod watch (and the node listing) last found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Nothing answered or failed yet.
    Connecting,
    Reachable,
    /// The last request failed: `reason` says how, `hint` what to do about it.
    Unreachable { reason: String, hint: &'static str },
}

/// What to do when the API server does not answer at all.
pub const HINT_DOWN: &str =
    "start the cluster, switch context (`kubectl config use-context <name>`), or run the docker target (`devd up --target docker`)";
/// What to do when it answers with an error (RBAC, a missing namespace).
pub const HINT_REFUSED: &str =
    "check that the chart is deployed and that its Role allows devd (rbac.create in the environment's values)";

/// The innermost cause of an error chain (for a refused connection: `Connection
/// refused (os error 111)` rather than kube's `client error (Connect)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A failed request as a reason for [`Reach::Unreachable`] and what to do about it.
fn unreachable(e: &kube::Error) -> Reach {
    match e {
        kube::Error::Api(_) => Reach::Unreachable { reason: api_message(e), hint: HINT_REFUSED },
        other => {
            let top = other.to_string();
            let root = root_cause(other);
            let reason = if top.contains(&root) { top } else { format!("{top}: {root}") };
            Reach::Unreachable { reason, hint: HINT_DOWN }
        }
    }
}

/// The watcher's error as a [`Reach`].
fn watch_unreachable(e: &watcher::Error) -> Reach {
    match e {
        watcher::Error::InitialListFailed(k) | watcher::Error::WatchStartFailed(k) | watcher::Error::WatchFailed(k) => {
            unreachable(k)
        }
        watcher::Error::WatchError(status) => Reach::Unreachable {
            reason: format!("{} ({} {})", status.message, status.code, status.reason),
            hint: HINT_REFUSED,
        },
        other => Reach::Unreachable { reason: other.to_string(), hint: HINT_REFUSED },
    }
}

/// The API server's reachability, shared by everything that talks to it. A change of
/// state (reachable ↔ unreachable) prints one line to stderr (Tilt's log of the devd
/// resource): the context, the server, the reason and what to do; further failed
/// attempts print nothing (the reason is kept current in the status).
#[derive(Clone)]
pub struct Reachability {
    cluster: Cluster,
    state: std::sync::Arc<watch::Sender<Reach>>,
}

impl std::fmt::Debug for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reachability").field("cluster", &self.cluster).field("state", &*self.state.borrow()).finish()
    }
}

impl Reachability {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster, state: std::sync::Arc::new(watch::channel(Reach::Connecting).0) }
    }

    pub fn now(&self) -> Reach {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Reach> {
        self.state.subscribe()
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Records what the last request found.
    pub fn set(&self, now: Reach) {
        let Cluster { context, server } = &self.cluster;
        let mut line = None;
        self.state.send_if_modified(|before| {
            if *before == now {
                return false;
            }
            let changed_state = std::mem::discriminant(before) != std::mem::discriminant(&now);
            line = match (&*before, &now) {
                (_, Reach::Unreachable { reason, hint }) if changed_state => Some(format!(
                    "devd: kubernetes: cannot reach the API server {server} (context {context}): {reason}; {hint}. devd retries with backoff and says when it answers."
                )),
                (Reach::Unreachable { .. }, Reach::Reachable) => {
                    Some(format!("devd: kubernetes: the API server {server} (context {context}) answers again; syncing."))
                }
                _ => None,
            };
            *before = now.clone();
            true
        });
        if let Some(line) = line {
            tracing::debug!(%line, "kubernetes: reachability changed");
            eprintln!("{line}");
        }
    }

    pub fn ok(&self) {
        self.set(Reach::Reachable);
    }

    /// The target's error while the API server is unreachable.
    pub fn error(&self) -> Option<TargetError> {
        match self.now() {
            Reach::Unreachable { reason, .. } => Some(TargetError::Unreachable {
                target: "kubernetes",
                reason: format!("the API server {} (context {}) does not answer: {reason}", self.cluster.server, self.cluster.context),
            }),
            _ => None,
        }
    }

    /// The state as the status shows it.
    pub fn health(&self) -> TargetHealth {
        let Cluster { context, server } = &self.cluster;
        let (state, reason) = match self.now() {
            Reach::Connecting => (TargetState::Connecting, Some(format!("connecting to the API server {server} (context {context})"))),
            Reach::Reachable => (TargetState::Reachable, None),
            Reach::Unreachable { reason, hint } => (
                TargetState::Unreachable,
                Some(format!("cannot reach the API server {server} (context {context}): {reason}; {hint}")),
            ),
        };
        TargetHealth { state, reason, since: chrono::Utc::now() }
    }

    /// Mirrors every change into the status (`target_state`, event `target_state`)
    /// until the reachability is dropped.
    pub async fn report(self, hub: StatusHub) {
        let mut rx = self.subscribe();
        loop {
            let health = self.health();
            let body = EventBody::TargetState(TargetReach { reason: health.reason.clone(), state: health.state });
            hub.update(body, None, |s| s.target_state = Some(health));
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The kubernetes target: the pods of the plan's release in the plan's namespace,
/// each reached through the pod proxy.
#[derive(Clone)]
pub struct KubeTarget {
    api: KubeApi,
    reach: Reachability,
    /// The release's service pods as kube's reflector keeps them (filled by
    /// [`KubeTarget::watch`]).
    store: Store<Pod>,
    writer: std::sync::Arc<std::sync::Mutex<Option<reflector::store::Writer<Pod>>>>,
    /// The watch has listed once: `store` can answer.
    synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    changes: watch::Sender<u64>,
    /// Unused: every method of [`Target`] that would use it is overridden (the pod
    /// proxy needs the API server's credentials, which the kube client carries).
    http: reqwest::Client,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget").field("api", &self.api).finish()
    }
}

impl KubeTarget {
    pub fn new(api: KubeApi) -> Self {
        let (store, writer) = reflector::store();
        Self {
            reach: Reachability::new(api.cluster().clone()),
            api,
            store,
            writer: std::sync::Arc::new(std::sync::Mutex::new(Some(writer))),
            synced: std::sync::Arc::default(),
            changes: watch::channel(0).0,
            http: reqwest::Client::new(),
        }
    }

    pub fn api(&self) -> &KubeApi {
        &self.api
    }

    /// Whether the API server answers (see [`Reachability`]).
    pub fn reachability(&self) -> &Reachability {
        &self.reach
    }

    /// Bumped on every [`PodChange`] and when the pods are listed; the daemon's
    /// delivery task reconciles on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The running pods of `service` with a shim: from the watch's store once it has
    /// listed, else from the API server. While the API server does not answer, the
    /// target's [`TargetError::Unreachable`] without a request.
    pub async fn running_pods(&self, service: &str) -> Result<Vec<PodInstance>, TargetError> {
        if let Some(e) = self.reach.error() {
            return Err(e);
        }
        if self.synced.load(std::sync::atomic::Ordering::Acquire) {
            let release = self.api.release();
            let mut pods: Vec<PodInstance> = self
                .store
                .state()
                .iter()
                .map(|p| PodInstance::from_pod(p, release))
                .filter(|p| p.service == service && p.is_running())
                .collect();
            pods.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(pods);
        }
        match self.api.running_pods(service).await {
            Ok(pods) => {
                self.reach.ok();
                Ok(pods)
            }
            Err(KubeError::Api { source, what }) if !matches!(source, kube::Error::Api(_)) => {
                self.reach.set(unreachable(&source));
                Err(self.reach.error().unwrap_or_else(|| TargetError::Other(format!("{what} failed"))))
            }
            Err(e) => Err(TargetError::Other(e.to_string())),
        }
    }

    /// Keeps the pod store current until `changes` is dropped or the future is: kube's
    /// `watcher` (list, then watch from the list's resourceVersion, renewed as the API
    /// server ends it, listed again after a 410) into kube's `reflector`, with kube's
    /// default backoff between failed attempts (0.8 s doubling to 30 s, plus up to as much
    /// again of jitter; reset once the API server answers).
    /// Every answer or failure goes to [`KubeTarget::reachability`]. Each new,
    /// restarted or vanished pod is sent to `changes` and bumps
    /// [`KubeTarget::subscribe`]. Runs once per target (the store has one writer).
    pub async fn watch(&self, changes: mpsc::UnboundedSender<PodChange>) {
        let Some(writer) = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
            tracing::error!("kubernetes: the pod watch runs once per target");
            return;
        };
        let pods: Api<Pod> = Api::namespaced(self.api.client.clone(), self.api.namespace());
        let config = watcher::Config::default().labels(&release_selector(self.api.release())).timeout(WATCH_TIMEOUT_SECS);
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = answered.clone();
        let stream = watcher(pods, config)
            .inspect(move |item| {
                if matches!(item, Ok(e) if !matches!(e, watcher::Event::Init)) {
                    seen.store(true, std::sync::atomic::Ordering::Release);
                }
            })
            .backoff(AnsweredBackoff { inner: watcher::DefaultBackoff::default(), answered })
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        let mut tracker = PodTracker::default();
        // Pod name -> service, to name the service of a pod that vanished.
        let mut services: HashMap<String, String> = HashMap::new();
        // The running pods of the list in progress.
        let mut listed: BTreeSet<String> = BTreeSet::new();
        while !changes.is_closed() {
            let Some(item) = stream.next().await else { return };
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!(error = %e, "kubernetes: the pod watch failed; retrying after a backoff");
                    self.reach.set(watch_unreachable(&e));
                    continue;
                }
            };
            let (pod, deleted) = match event {
                // Emitted before the list request: says nothing about the server.
                watcher::Event::Init => {
                    listed.clear();
                    continue;
                }
                watcher::Event::InitDone => {
                    self.reach.ok();
                    for gone in tracker.pods().difference(&listed) {
                        tracker.forget(gone);
                        let service = services.remove(gone).unwrap_or_default();
                        self.changed(&changes, PodChange { service, pod: gone.clone(), reason: None });
                    }
                    self.synced.store(true, std::sync::atomic::Ordering::Release);
                    // Delivery tasks reconcile with what the list found.
                    self.changes.send_modify(|n| *n += 1);
                    continue;
                }
                watcher::Event::InitApply(pod) => {
                    let p = PodInstance::from_pod(&pod, self.api.release());
                    if p.is_running() {
                        listed.insert(p.name.clone());
                    }
                    (p, false)
                }
                watcher::Event::Apply(pod) => (PodInstance::from_pod(&pod, self.api.release()), false),
                watcher::Event::Delete(pod) => (PodInstance::from_pod(&pod, self.api.release()), true),
            };
            self.reach.ok();
            services.insert(pod.name.clone(), pod.service.clone());
            if deleted || !pod.is_running() {
                if tracker.forget(&pod.name) {
                    self.changed(&changes, PodChange { service: pod.service, pod: pod.name, reason: None });
                }
            } else if let Some(reason) = tracker.observe(&pod) {
                self.changed(&changes, PodChange { service: pod.service, pod: pod.name, reason: Some(reason) });
            }
        }
    }

    fn changed(&self, changes: &mpsc::UnboundedSender<PodChange>, change: PodChange) {
        tracing::info!(service = %change.service, pod = %change.pod, reason = ?change.reason, "kubernetes: pod changed");
        let _ = changes.send(change);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The [`Instance`] of a pod: its shim and service through the pod proxy.
    async fn instance(&self, pod: &PodInstance) -> Result<Option<Instance>, KubeError> {
        let (Some(shim_url), Some(service_url)) = (pod.shim_base(self.api.namespace()), self.api.service_base(pod)) else {
            return Ok(None);
        };
        let shim_token = self.api.shim_token(pod).await?;
        Ok(Some(Instance {
            id: pod.name.clone(),
            name: pod.name.clone(),
            service: pod.service.clone(),
            shim_url,
            shim_token,
            service_url,
            started_at: None,
        }))
    }

    async fn list_instances(&self, service: &str) -> Result<Vec<Instance>, TargetError> {
        let pods = self.running_pods(service).await?;
        let mut instances = Vec::with_capacity(pods.len());
        for pod in &pods {
            match self.instance(pod).await {
                Ok(Some(instance)) => instances.push(instance),
                Ok(None) => tracing::warn!(pod = %pod.name, "{}", KubeError::NoShim { pod: pod.name.clone() }),
                Err(e) => return Err(TargetError::Other(e.to_string())),
            }
        }
        Ok(instances)
    }

    async fn shim<T: serde::de::DeserializeOwned>(
        &self,
        instance: &Instance,
        method: Method,
        path: &str,
        upload: Option<(Vec<u8>, &str)>,
    ) -> Result<T, ShimError> {
        let url = format!("{}{path}", instance.shim_url);
        let body = self
            .api
            .proxy(&instance.name, &instance.shim_url, &instance.shim_token, method, path, upload)
            .await
            .map_err(|e| shim_error(&url, e))?;
        parse_answer(&instance.name, path, &body).map_err(|e| shim_error(&url, e))
    }
}

/// A [`KubeError`] on the proxy path as the daemon's [`ShimError`]: the shim's own
/// answers keep their status and code (409 `rolled_back` is a rollback); the API
/// server's (pod gone, RBAC, nothing listening) keep its status with code
/// `kubernetes_api`.
fn shim_error(url: &str, e: KubeError) -> ShimError {
    match e {
        KubeError::Shim { status, code, message, .. } => match Refusal::from_parts(status, code.unwrap_or_default(), message) {
            Refusal::RolledBack { reason } => ShimError::RolledBack { reason },
            Refusal::Other { status, code, message } => ShimError::Refused { url: url.to_owned(), status, code, message },
        },
        KubeError::Artifact { path, source } => ShimError::Read { path, source },
        other => ShimError::Refused {
            url: url.to_owned(),
            status: other.api_code().unwrap_or(502),
            code: "kubernetes_api".to_owned(),
            message: other.to_string(),
        },
    }
}

impl Target for KubeTarget {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn instances<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, TargetError>> {
        Box::pin(self.list_instances(service))
    }

    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn deliver<'a>(
        &'a self,
        instance: &'a Instance,
        binary: &'a Path,
        sha256: &'a str,
    ) -> BoxFuture<'a, Result<ShimReply, ShimError>> {
        Box::pin(async move {
            let bytes = read_artifact(binary).await.map_err(|e| shim_error(&instance.shim_url, e))?;
            self.shim(instance, Method::PUT, BINARY_PATH, Some((bytes, sha256))).await
        })
    }

    fn restart<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<ShimReply, ShimError>> {
        Box::pin(self.shim(instance, Method::POST, RESTART_PATH, None))
    }

    fn shim_status<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, Result<ShimStatus, ShimError>> {
        Box::pin(self.shim(instance, Method::GET, STATUS_PATH, None))
    }

    fn health<'a>(&'a self, instance: &'a Instance) -> BoxFuture<'a, HealthReport> {
        Box::pin(self.api.health_at(&instance.service_url))
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.subscribe())
    }
}

/// The triple to build for, given the plan's and the nodes': the plan's when its
/// architecture is the nodes' (e.g. a `-musl` build_target on amd64 nodes), else the
/// nodes' (the build then cross-compiles, or says what to install).
pub fn pick_triple(plan_triple: &str, node_triple: &str) -> String {
    let arch = |t: &str| t.split('-').next().unwrap_or(t).to_owned();
    if arch(plan_triple) == arch(node_triple) {
        plan_triple.to_owned()
    } else {
        node_triple.to_owned()
    }
}

/// Is a Kubernetes client config there at all (kubeconfig or in-cluster)? `devd up`
/// deploys and syncs only then; without one devd only builds.
pub async fn config_available() -> bool {
    kube::Config::infer().await.is_ok()
}

/// The kubernetes target as the daemon runs it: the target, its pod watch (stopped on
/// drop) and the triple to build for.
pub struct KubeStand {
    pub target: std::sync::Arc<KubeTarget>,
    /// The nodes' triple as [`pick_triple`] chose it.
    pub triple: String,
    watch: tokio::task::JoinHandle<()>,
    reporter: tokio::task::JoinHandle<()>,
}

impl Drop for KubeStand {
    fn drop(&mut self) {
        self.watch.abort();
        self.reporter.abort();
    }
}

impl KubeStand {
    /// Connects with the user's config, reads the nodes' architecture (keeping the
    /// plan's triple when listing nodes is forbidden, fails or is slow), starts the pod
    /// watch, and mirrors the API server's reachability into `hub`'s status. An API
    /// server that does not answer is not an error here: devd builds, says so once,
    /// and syncs when it answers.
    pub async fn connect(plan: &crate::plan::Plan, hub: &StatusHub) -> Result<Self, KubeError> {
        let api = KubeApi::connect(&plan.namespace, &plan.release).await?;
        let target = std::sync::Arc::new(KubeTarget::new(api));
        let reporter = tokio::spawn(target.reachability().clone().report(hub.clone()));
        let plan_triple = plan.build.target_triple.clone();
        let triple = match tokio::time::timeout(Duration::from_secs(10), target.api().build_triple()).await {
            Ok(Ok(nodes)) => {
                target.reachability().ok();
                pick_triple(&plan_triple, nodes)
            }
            Ok(Err(e @ (KubeError::MixedArch { .. } | KubeError::UnsupportedArch { .. }))) => {
                reporter.abort();
                return Err(e);
            }
            Ok(Err(KubeError::Api { source, .. })) if !matches!(source, kube::Error::Api(_)) => {
                // The pod watch keeps trying; the one line about it is printed here.
                target.reachability().set(unreachable(&source));
                tracing::debug!(triple = %plan_triple, "kubernetes: nodes unknown; building for the plan's triple");
                plan_triple
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, triple = %plan_triple, "kubernetes: cannot read the nodes' architecture; building for the plan's triple");
                plan_triple
            }
            Err(_) => {
                tracing::warn!(triple = %plan_triple, "kubernetes: listing nodes timed out; building for the plan's triple");
                plan_triple
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watcher = target.clone();
        let watch = tokio::spawn(async move {
            let drain = async {
                while rx.recv().await.is_some() {}
            };
            tokio::join!(watcher.watch(tx), drain);
        });
        Ok(Self { target, triple, watch, reporter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, label: Option<&str>, info: &str) -> NodeArch {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": label.map(|a| serde_json::json!({ LABEL_ARCH: a })) },
            "status": { "nodeInfo": {
                "architecture": info, "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "operatingSystem": "linux",
                "osImage": "", "systemUUID": ""
            } }
        }))
        .expect("node json");
        NodeArch::from_node(&node)
    }

    #[test]
    fn arch_to_triple() {
        assert_eq!(triple_for_arch("amd64"), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(triple_for_arch("arm64"), Some("aarch64-unknown-linux-gnu"));
        assert_eq!(triple_for_arch("s390x"), None);
    }

    #[test]
    fn label_wins_over_node_info() {
        assert_eq!(node("a", Some("arm64"), "amd64").arch.as_deref(), Some("arm64"));
        assert_eq!(node("a", None, "amd64").arch.as_deref(), Some("amd64"));
        assert_eq!(node("a", None, "").arch, None);
    }

    #[test]
    fn one_triple_for_all_nodes() {
        let nodes = [node("a", Some("amd64"), "amd64"), node("b", None, "amd64"), node("c", None, "")];
        assert_eq!(triple_for_nodes(&nodes).ok(), Some("x86_64-unknown-linux-gnu"));
        let err = triple_for_nodes(&[node("a", None, "amd64"), node("b", None, "arm64"), node("c", None, "arm64")])
            .expect_err("mixed");
        assert!(err.to_string().contains("amd64 (a), arm64 (b, c)"), "{err}");
        assert!(matches!(triple_for_nodes(&[]), Err(KubeError::NoNodes)));
        let err = triple_for_nodes(&[node("z", None, "s390x")]).expect_err("unsupported");
        assert_eq!(
            err.to_string(),
            "node z has architecture s390x, which devd cannot build for (supported: amd64, arm64)"
        );
    }

    fn instance(name: &str, uid: &str, restarts: i32, phase: &str) -> PodInstance {
        PodInstance {
            name: name.into(),
            uid: uid.into(),
            service: "service1".into(),
            node: None,
            phase: phase.into(),
            ready: true,
            restart_count: restarts,
            terminating: false,
            shim_port: Some(7070),
            service_port: Some(5001),
            token: TokenRef { secret: "stand-devsync".into(), key: "token".into() },
        }
    }

    #[test]
    fn tracker_tells_new_and_restarted_pods() {
        let mut t = PodTracker::default();
        assert_eq!(t.observe(&instance("p", "u1", 0, "Pending")), None, "not running yet");
        assert_eq!(t.observe(&instance("p", "u1", 0, "Running")), Some(SyncReason::NewPod));
        assert_eq!(t.observe(&instance("p", "u1", 0, "Running")), None, "an update of the same pod");
        assert_eq!(t.observe(&instance("p", "u1", 1, "Running")), Some(SyncReason::Restarted));
        assert_eq!(t.observe(&instance("p", "u2", 0, "Running")), Some(SyncReason::NewPod), "same name, new uid");
        assert!(t.forget("p"));
        assert!(!t.forget("p"));
    }

    #[test]
    fn node_triple_wins_unless_the_arch_agrees() {
        assert_eq!(pick_triple("x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"), "aarch64-unknown-linux-gnu");
        assert_eq!(pick_triple("x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"), "x86_64-unknown-linux-musl");
    }

    #[test]
    fn selectors_are_the_charts_labels() {
        assert_eq!(
            service_selector("stand", "service1"),
            "app.kubernetes.io/name=service1,app.kubernetes.io/instance=stand,app.kubernetes.io/component=service"
        );
        assert_eq!(release_selector("stand"), "app.kubernetes.io/instance=stand,app.kubernetes.io/component=service");
    }
}
