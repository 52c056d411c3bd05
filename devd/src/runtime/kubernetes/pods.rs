//! The stand's pods as devd sees them: the chart's label selectors, a pod as an
//! instance ([`PodInstance`]) and what changed about it since devd last synced it
//! ([`PodTracker`]).

use super::*;

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
pub(super) struct Seen {
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
