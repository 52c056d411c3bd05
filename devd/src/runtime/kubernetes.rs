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
//! the body and the headers [`SHA_HEADER`] and [`TOKEN_HEADER`] (`Authorization`
//! belongs to the API server on this path): [`PodProxy`] is the shim client's
//! transport ([`crate::runtime::shim::ShimClient`]). The alternative, `pods/exec`, needs a
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
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::Client;
use serde::Serialize;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch, Mutex};

use crate::status::event::TargetReach;
use crate::status::{EventBody, StatusHub, TargetHealth, TargetState};
use crate::runtime::{Instance, ShimTransport, Target, TargetError};

mod api;
mod nodes;
mod pods;
mod proxy;
mod reach;

pub use api::KubeApi;
pub use nodes::{pick_triple, triple_for_arch, triple_for_nodes, NodeArch, SUPPORTED_ARCHES};
pub use pods::{release_selector, service_selector, PodChange, PodInstance, PodTracker, SyncReason, TokenRef};
pub use proxy::{PodProxy, API_SERVER_CODE};
pub use reach::{Cluster, Reach, Reachability, HINT_DOWN, HINT_REFUSED};
use nodes::describe_arches;
use reach::{unreachable, watch_unreachable, AnsweredBackoff};
#[cfg(test)]
mod tests;

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
    /// The shim client's transport: the API server's pod proxy, with the API's client.
    proxy: PodProxy,
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
            proxy: PodProxy::new(api.client.clone()),
            reach: Reachability::new(api.cluster().clone()),
            api,
            store,
            writer: std::sync::Arc::new(std::sync::Mutex::new(Some(writer))),
            synced: std::sync::Arc::default(),
            changes: watch::channel(0).0,
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
}

impl Target for KubeTarget {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn instances<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, TargetError>> {
        Box::pin(self.list_instances(service))
    }

    fn transport(&self) -> &dyn ShimTransport {
        &self.proxy
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.subscribe())
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
