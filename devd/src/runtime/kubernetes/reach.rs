//! Whether the API server answers ([`Reachability`]): one line per change, the
//! watch's backoff, and the state the status carries.

use super::*;

/// kube's default backoff (0.8 s doubling to 30 s, each delay plus up to as much again
/// of jitter), reset only once the API server has answered. kube's `StreamBackoff`
/// resets on every `Ok` item, and the watcher yields `Event::Init` before each list
/// attempt, without a request: with the default backoff alone, a refused connection is
/// retried about every second forever (49 attempts a minute, measured).
pub(super) struct AnsweredBackoff {
    pub(super) inner: watcher::DefaultBackoff,
    pub(super) answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
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
pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A failed request as a reason for [`Reach::Unreachable`] and what to do about it.
pub(super) fn unreachable(e: &kube::Error) -> Reach {
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
pub(super) fn watch_unreachable(e: &watcher::Error) -> Reach {
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
