//! The daemon: the loop that calls the stages.
//!
//! stand.toml → plan; file changes → affected services → one build → artifacts →
//! status and events. A stage that fails leaves the previous good state in place and
//! says why in the status: a failed build keeps the previous artifact, an invalid
//! stand.toml keeps the last good plan.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::{self, Action, ApiState};
use crate::build::{BuildConfig, BuildRequest, BuildTarget, Builder};
use crate::config::{self, ConfigErrors, Stand};
use crate::deliver::{self, Desired, SyncHandle};
use crate::graph::{GraphError, WorkspaceGraph};
use crate::plan::{self, Plan, PlanError};
use crate::statedir::{DaemonInfo, StateDir, StateError};
use crate::status::event::{self, Deployed, Failure};
use crate::status::{ArtifactStatus, BuildState, LibStatus, EventBody, ServiceStatus, StandStatus, StatusHub};
use crate::runtime::docker::{DockerStand, EnsureProgress};
use crate::runtime::kubernetes::{self, KubeStand};
use crate::runtime::{Target, TargetError};
use crate::watch::{self, ChangeBatch, WatchConfig, WatchError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot read the cargo workspace")]
    Graph(#[from] GraphError),
    #[error("cannot watch the sources")]
    Watch(#[from] WatchError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("target {target}")]
    Target { target: String, #[source] source: TargetError },
    #[error("cannot listen on {addr} (is another devd running? `devd status` tells)")]
    Bind { addr: SocketAddr, #[source] source: std::io::Error },
}

/// What `devd up` starts.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub root: PathBuf,
    pub file: PathBuf,
    pub env: String,
    pub host_triple: String,
    /// Overrides the API port of stand.toml (0: any free port).
    pub port: Option<u16>,
    /// `CARGO_TARGET_DIR` for builds (default: cargo's own).
    pub target_dir: Option<PathBuf>,
    /// Overrides the environment's target (`devd up --target`).
    pub target: Option<config::Target>,
    /// devd deploys the chart itself (kubernetes target without Tilt: `devd up` without
    /// `--no-deploy`), so a changed plan is deployed again.
    pub deploy: bool,
    /// Print progress lines to stderr ([`crate::progress`]); off with `devd up --quiet`.
    pub progress: bool,
}

/// How long open API requests may run on after shutdown began (event streams end at
/// once; this bounds anything else).
const API_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How often delivery reconciles instances with the current artifact.
pub const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1500);

fn load(config: &DaemonConfig) -> Result<(Stand, Plan), DaemonError> {
    let stand = config::load(&config.file)?;
    stand.validate_files(&config.root)?;
    let mut plan = plan::resolve(&stand, &config.env, &config.host_triple)?;
    if let Some(target) = config.target {
        plan.target = target;
    }
    Ok((stand, plan))
}

fn service_status(service: &plan::ServicePlan) -> ServiceStatus {
    ServiceStatus { name: service.name.clone(), package: service.package.clone(), ..ServiceStatus::default() }
}

/// Runs until `shutdown` resolves. Errors before the API is up are returned (bad
/// stand.toml, port taken); after that, failures become status.
pub async fn run(config: DaemonConfig, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let (_stand, plan) = load(&config)?;
    let root = config.root.canonicalize().unwrap_or_else(|_| config.root.clone());
    let state = StateDir::new(&root);
    // Held until this function returns: one devd per root (see StateDir::lock_daemon).
    let _lock = state.lock_daemon(&plan.env)?;
    let token = state.new_token()?;
    let graph = {
        let root = root.clone();
        blocking(move || WorkspaceGraph::load(&root)).await?
    };

    let hub = StatusHub::new(StandStatus {
        env: plan.env.clone(),
        target: plan.target.to_string(),
        root: root.display().to_string(),
        started_at: Some(Utc::now()),
        config_error: None,
        event_seq: 0,
        services: plan.services.iter().map(service_status).collect(),
        target_state: None,
    });

    let port = config.port.unwrap_or(plan.api.port);
    let addr: SocketAddr = SocketAddr::new(plan::API_HOST.parse().expect("loopback literal"), port);
    let listener = TcpListener::bind(addr).await.map_err(|source| DaemonError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| DaemonError::Bind { addr, source })?;
    let (actions_tx, actions_rx) = mpsc::channel(16);
    let (stop_api_tx, stop_api_rx) = tokio::sync::watch::channel(false);
    let app = api::app(ApiState { hub: hub.clone(), token: Arc::from(token), actions: actions_tx, stopping: stop_api_rx.clone() });
    let mut server = tokio::spawn(async move {
        let mut stop = stop_api_rx;
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "status API failed");
        }
    });
    let info = DaemonInfo {
        pid: std::process::id(),
        url: format!("http://{bound}"),
        env: plan.env.clone(),
        started_at: Utc::now(),
    };
    state.write_info(&info)?;
    tracing::info!(url = %info.url, env = %plan.env, "devd is up");
    if config.progress {
        eprintln!("devd: env {} · status API {} · token in {}", plan.env, info.url, state.token_path().display());
    }

    let mut watch_config = WatchConfig::new(vec![root.clone()]);
    // A burst (a checkout, a formatter over the tree) whose writer stalls for a moment
    // under load should still be one build: once a batch holds several paths, 100 ms
    // of quiet closes it. A single save keeps the 50 ms window.
    watch_config.burst_quiet = std::time::Duration::from_millis(100);
    watch_config.extra_ignores = vec![state.path().to_owned(), graph.target_dir().to_owned()];
    if let Some(dir) = &config.target_dir {
        watch_config.extra_ignores.push(dir.clone());
    }
    let (watcher, batches) = {
        let cfg = watch_config.clone();
        blocking(move || watch::start(cfg)).await?
    };
    tracing::info!(dirs = watcher.watched_dirs(), "watching");

    // The docker target: devd runs the containers itself (images after the first build).
    let docker = match plan.target {
        config::Target::Docker => Some(
            DockerStand::connect(&plan, &root, state.path(), &config.host_triple)
                .await
                .map_err(|source| DaemonError::Target { target: "docker".to_owned(), source })?,
        ),
        config::Target::Kubernetes => None,
    };
    // The kubernetes target: pods of the release, reached through the API server. No
    // Kubernetes config at all: devd builds only (and says so).
    let kube = match plan.target {
        config::Target::Kubernetes if plan.live_sync && kubernetes::config_available().await => Some(
            KubeStand::connect(&plan, &hub)
                .await
                .map_err(|e| DaemonError::Target { target: "kubernetes".to_owned(), source: TargetError::Other(e.to_string()) })?,
        ),
        config::Target::Kubernetes => {
            if plan.live_sync {
                eprintln!("devd: no Kubernetes config (kubeconfig or in-cluster): building only, no sync");
            }
            None
        }
        config::Target::Docker => None,
    };
    let mut target: Option<Arc<dyn Target>> = docker.as_ref().map(|d| d.target.clone() as Arc<dyn Target>);
    if let Some(k) = &kube {
        target = Some(k.target.clone() as Arc<dyn Target>);
    }

    // Progress lines (from every event since the start); a rebuild's line waits for its
    // delivery when there is a target to deliver to.
    let progress = config.progress.then(|| crate::progress::spawn(hub.clone(), target.is_some()));

    let mut build_config = BuildConfig::new(&root, state.path());
    build_config.target = Some(kube.as_ref().map_or_else(|| plan.build.target_triple.clone(), |k| k.triple.clone()));
    build_config.target_dir = config.target_dir.clone();
    build_config.rustc_recorder = crate::build::rustc_recorder();
    build_config.relink_first_build = true;
    let (refuses_libraries, refusals) = mpsc::unbounded_channel();
    let mut daemon = Loop {
        config: DaemonConfig { root: root.clone(), file: absolute(&root, &config.file), ..config },
        plan,
        graph,
        builder: Builder::new(build_config),
        hub,
        builds: 0,
        target,
        docker,
        syncers: std::collections::BTreeMap::new(),
        refuses_libraries,
        static_link: BTreeSet::new(),
    };

    tokio::select! {
        () = daemon.run(batches, actions_rx, refusals) => {}
        () = shutdown => tracing::info!("shutting down"),
    }
    drop(watcher);
    if let Some(progress) = progress {
        progress.abort();
    }
    // The event streams end on this signal and the server stops taking connections;
    // a request still running after the grace period is cut off.
    let _ = stop_api_tx.send(true);
    if tokio::time::timeout(API_GRACE, &mut server).await.is_err() {
        tracing::warn!("status API requests still running after {API_GRACE:?}; closing them");
        server.abort();
    }
    state.clear_info(info.pid);
    Ok(())
}

fn absolute(root: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_owned()
    } else {
        std::env::current_dir().map(|cwd| cwd.join(file)).ok().and_then(|p| p.canonicalize().ok()).unwrap_or_else(|| root.join(config::FILE_NAME))
    }
}

struct Loop {
    config: DaemonConfig,
    plan: Plan,
    graph: WorkspaceGraph,
    builder: Builder,
    hub: StatusHub,
    /// Cargo invocations so far; events carry the number of theirs.
    builds: u64,
    /// Where the stand runs, when devd delivers to it (live sync).
    target: Option<Arc<dyn Target>>,
    /// The docker target's images and containers, set up after a service's first build.
    docker: Option<DockerStand>,
    /// One delivery task per service, started with its first artifact.
    syncers: std::collections::BTreeMap<String, SyncHandle>,
    /// Given to every delivery task: the services an instance of which takes no
    /// shared libraries (an image from before them).
    refuses_libraries: mpsc::UnboundedSender<String>,
    /// Those services: linked statically from then on (until devd restarts).
    static_link: BTreeSet<String>,
}

/// Why a build runs: the changes (with when the first of them was seen), or a request.
struct Cause {
    paths: BTreeSet<PathBuf>,
    first_event_at: Option<Instant>,
    /// `paths` are all that changed (the watcher did not overflow).
    complete: bool,
}

impl Loop {
    async fn run(
        &mut self,
        mut batches: mpsc::UnboundedReceiver<ChangeBatch>,
        mut actions: mpsc::Receiver<Action>,
        mut refusals: mpsc::UnboundedReceiver<String>,
    ) {
        let everything: BTreeSet<String> = self.plan.services.iter().map(|s| s.name.clone()).collect();
        self.build(&everything, Cause { paths: BTreeSet::new(), first_event_at: None, complete: false }).await;
        let mut keep_up = tokio::time::interval(RECONCILE_INTERVAL);
        keep_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = keep_up.tick(), if self.docker.is_some() => {
                    if let Some(docker) = &self.docker {
                        for (service, component) in docker.keep_up().await {
                            let body = EventBody::ContainerRevived(event::ContainerRevived { component, target: config::Target::Docker });
                            self.hub.update_service(&service, body, |_| {});
                        }
                    }
                }
                batch = batches.recv() => {
                    let Some(mut batch) = batch else { return };
                    // Changes that arrived while the last build ran are one more build.
                    while let Ok(later) = batches.try_recv() {
                        batch.merge(later);
                    }
                    self.on_changes(batch).await;
                }
                action = actions.recv() => {
                    let Some(action) = action else { return };
                    self.on_action(action).await;
                }
                Some(service) = refusals.recv() => self.link_statically(service).await,
            }
        }
    }

    async fn on_action(&mut self, action: Action) {
        match action {
            Action::Rebuild { service } => {
                let services = BTreeSet::from([service]);
                self.build(&services, Cause { paths: BTreeSet::new(), first_event_at: None, complete: false }).await;
            }
            Action::Restart { service } => match self.syncers.get(&service) {
                Some(syncer) => syncer.restart(),
                None => {
                    let error = "no running instances to restart (no target or not deployed yet)".to_owned();
                    self.hub.update_service(&service, EventBody::RestartFailed(event::RestartFailed { error, instance: None }), |_| {});
                }
            },
        }
    }

    /// An instance of `service` takes no shared libraries (its shim predates them):
    /// its binaries are linked statically from now on, starting with a rebuild now.
    async fn link_statically(&mut self, service: String) {
        // A service removed since its instance refused: nothing to link.
        if !self.plan.services.iter().any(|s| s.name == service) {
            return;
        }
        if self.static_link.insert(service.clone()) {
            tracing::warn!(%service, "an instance takes no shared libraries (its image predates them): linking this service statically from now on; rebuild its image and restart devd to have the library again");
            let cause = Cause { paths: BTreeSet::new(), first_event_at: None, complete: false };
            self.build(&BTreeSet::from([service]), cause).await;
        }
    }

    /// Brings the new artifact to where the service runs: on the docker target, the
    /// image and containers first (once); then the delivery task.
    #[tracing::instrument(level = "warn", name = "deliver", skip_all, fields(service = %service.name, sha256 = %&artifact.sha256[..12.min(artifact.sha256.len())]))]
    async fn deliver(&mut self, service: &plan::ServicePlan, artifact: &crate::build::Artifact, first_event_at: Option<Instant>) {
        let Some(target) = self.target.clone() else { return };
        if !self.plan.live_sync && self.syncers.contains_key(&service.name) {
            return;
        }
        if let Some(docker) = self.docker.as_mut().filter(|d| !d.is_ready(&service.name)) {
            let hub = self.hub.clone();
            let name = service.name.clone();
            let mut progress = move |step: EnsureProgress<'_>| match step {
                EnsureProgress::Line(line) => {
                    hub.update_service(&name, EventBody::ImageProgress(event::ImageProgress { line: line.to_owned() }), |_| {});
                }
                EnsureProgress::Done(body) => {
                    hub.update_service(&name, body, |_| {});
                }
            };
            if let Err(message) = docker.ensure(service, artifact, &mut progress).await {
                tracing::warn!(service = %service.name, %message, "docker target: cannot start the service");
                self.hub.update_service(&service.name, EventBody::DeployFailed(Failure { error: message }), |_| {});
                return;
            }
            self.hub.update_service(&service.name, EventBody::Deployed(Deployed { target: config::Target::Docker }), |_| {});
        }
        let syncer = self.syncers.entry(service.name.clone()).or_insert_with(|| {
            deliver::spawn(service.name.clone(), target, self.hub.clone(), RECONCILE_INTERVAL, self.refuses_libraries.clone())
        });
        syncer.deliver(Desired {
            sha256: artifact.sha256.clone(),
            path: artifact.path.clone(),
            libs: artifact.libs.clone(),
            first_event_at,
        });
    }

    async fn on_changes(&mut self, batch: ChangeBatch) {
        let mut added = BTreeSet::new();
        // The workspace first: a service added with `devd new` is a new member too.
        if batch.paths.iter().any(|p| is_workspace_manifest(&self.config.root, p)) {
            self.reload_graph().await;
        }
        if batch.paths.iter().any(|p| p == &self.config.file) {
            let previous = self.plan.clone();
            added = self.reload_config();
            if self.plan != previous {
                self.apply_plan_change(&previous).await;
            }
        }
        let services: Vec<&plan::ServicePlan> = self.plan.services.iter().collect();
        let mut affected: BTreeSet<String> = if batch.overflowed {
            services.iter().map(|s| s.name.clone()).collect()
        } else {
            let changed: Vec<&PathBuf> = batch.paths.iter().collect();
            let packages: Vec<&str> = services.iter().map(|s| s.package.as_str()).collect();
            let hit = self.graph.affected_services(&changed, &packages);
            services.iter().filter(|s| hit.contains(&s.package)).map(|s| s.name.clone()).collect()
        };
        affected.extend(added);
        if affected.is_empty() {
            tracing::debug!(paths = batch.paths.len(), "change affects no service");
            return;
        }
        tracing::info!(services = ?affected, paths = batch.paths.len(), "change");
        self.build(&affected, Cause { paths: batch.paths, first_event_at: Some(batch.first_event_at), complete: !batch.overflowed }).await;
    }

    /// Re-reads stand.toml. Invalid: keep the plan, report the error. Valid: switch to
    /// the new plan; returns the services it adds (they need a first build).
    fn reload_config(&mut self) -> BTreeSet<String> {
        match load(&self.config) {
            Err(error) => {
                let message = error.to_string();
                tracing::warn!(%message, "stand.toml is invalid; keeping the last good plan");
                let body = EventBody::ConfigError(Failure { error: message.clone() });
                self.hub.update(body, None, |s| s.config_error = Some(message));
                BTreeSet::new()
            }
            Ok((_stand, plan)) => {
                let old: BTreeSet<String> = self.plan.services.iter().map(|s| s.name.clone()).collect();
                let added: BTreeSet<String> =
                    plan.services.iter().map(|s| s.name.clone()).filter(|n| !old.contains(n)).collect();
                let changed = plan != self.plan;
                let services = plan.services.clone();
                let body = EventBody::ConfigReloaded(event::ConfigReloaded { added: added.clone(), changed });
                self.hub.update(body, None, |s| {
                    s.config_error = None;
                    s.target = plan.target.to_string();
                    let mut next: Vec<ServiceStatus> = Vec::new();
                    for service in &services {
                        let kept = s.services.iter().find(|x| x.name == service.name).cloned();
                        let mut status = kept.unwrap_or_else(|| service_status(service));
                        status.package = service.package.clone();
                        next.push(status);
                    }
                    s.services = next;
                });
                self.plan = plan;
                added
            }
        }
    }

    /// What a new plan changes where the stand runs: services that left the environment
    /// stop (docker: their containers go, volumes stay); on the kubernetes target that
    /// devd deploys itself, the regenerated values are deployed with helm. Services that
    /// joined are built by the caller and come up with their first artifact.
    async fn apply_plan_change(&mut self, previous: &Plan) {
        let now: BTreeSet<&str> = self.plan.services.iter().map(|s| s.name.as_str()).collect();
        for gone in previous.services.iter().filter(|s| !now.contains(s.name.as_str())) {
            self.syncers.remove(&gone.name);
            // Back with a new container (docker) or image: it may take libraries then.
            self.static_link.remove(&gone.name);
            if let Some(docker) = self.docker.as_mut() {
                match docker.remove(&gone.name).await {
                    Ok(removed) => {
                        tracing::info!(service = %gone.name, ?removed, "service left the environment");
                        self.hub.update(EventBody::ServiceRemoved(event::ServiceRemoved { removed }), Some(&gone.name), |_| {});
                    }
                    Err(e) => tracing::warn!(service = %gone.name, error = %e, "cannot remove the service's containers"),
                }
            } else {
                let body = EventBody::ServiceRemoved(event::ServiceRemoved { removed: Vec::new() });
                self.hub.update(body, Some(&gone.name), |_| {});
            }
        }
        if self.config.deploy && self.plan.target == config::Target::Kubernetes {
            if let Err(message) = redeploy(&self.config.root, &self.config.file, &self.plan).await {
                tracing::warn!(%message, "cannot deploy the changed plan");
                self.hub.update(EventBody::DeployFailed(Failure { error: message }), None, |_| {});
            } else {
                self.hub.update(EventBody::Deployed(Deployed { target: config::Target::Kubernetes }), None, |_| {});
            }
        }
    }

    async fn reload_graph(&mut self) {
        let root = self.config.root.clone();
        match blocking(move || WorkspaceGraph::load(&root)).await {
            Ok(graph) => self.graph = graph,
            Err(e) => tracing::warn!(error = %e, "cargo metadata failed; keeping the previous workspace graph"),
        }
    }

    /// Builds `services` in one cargo invocation and records the outcome; what it logs
    /// is inside `build{id=<n> services=[...]}`.
    async fn build(&mut self, services: &BTreeSet<String>, cause: Cause) {
        let span = tracing::warn_span!("build", id = self.builds + 1, services = ?services);
        tracing::Instrument::instrument(self.build_in_span(services, cause), span).await;
    }

    async fn build_in_span(&mut self, services: &BTreeSet<String>, cause: Cause) {
        let plans: Vec<plan::ServicePlan> =
            self.plan.services.iter().filter(|s| services.contains(&s.name)).cloned().collect();
        if plans.is_empty() {
            return;
        }
        self.builds += 1;
        let build_id = self.builds;
        let started_at = Utc::now();
        let cause_list: Vec<String> = cause.paths.iter().map(|p| relative(&self.config.root, p)).collect();
        let names: Vec<String> = plans.iter().map(|s| s.name.clone()).collect();
        for service in &plans {
            let body = EventBody::BuildStarted(event::BuildStarted { build: build_id, cause: cause_list.clone(), services: names.clone() });
            self.hub.update_service(&service.name, body, |s| {
                s.build.state = BuildState::Building;
                s.build.started_at = Some(started_at);
            });
        }
        let packages: Vec<&str> = plans.iter().map(|s| s.package.as_str()).collect();
        let changed: Vec<&PathBuf> = cause.paths.iter().collect();
        let request = BuildRequest {
            targets: plans.iter().map(|s| BuildTarget::package(s.package.clone())).collect(),
            cause: cause.paths.clone(),
            replay: if cause.complete { self.graph.replay_scope(&changed, &packages) } else { None },
            static_link: plans.iter().filter(|s| self.static_link.contains(&s.name)).map(|s| s.package.clone()).collect(),
        };
        // cargo's count of units, as `build_progress` events (at most one a second).
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel();
        let hub = self.hub.clone();
        let forward = tokio::spawn(async move {
            let services = names;
            let mut last: Option<Instant> = None;
            while let Some(progress) = progress_rx.recv().await {
                if let crate::build::BuildProgress::Units { done, total } = progress {
                    if done == total || last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)) {
                        last = Some(Instant::now());
                        let body = EventBody::BuildProgress(event::BuildProgress { build: build_id, done, services: services.clone(), total });
                        hub.update(body, None, |_| {});
                    }
                }
            }
        });
        let result = self.builder.build(&request, Some(progress_tx)).await;
        let _ = forward.await;
        match result {
            Ok(output) => {
                let finished_at = Utc::now();
                for service in &plans {
                    let Some(artifact) = output.artifacts.iter().find(|a| a.package == service.package) else {
                        continue;
                    };
                    let edit_to_artifact = cause.first_event_at.map(|t| t.elapsed().as_millis() as u64);
                    let status = ArtifactStatus {
                        sha256: artifact.sha256.clone(),
                        built_at: artifact.built_at,
                        size: artifact.size,
                        path: artifact.path.display().to_string(),
                        build_duration_ms: artifact.build_duration_ms,
                        cause: cause_list.clone(),
                        libs: artifact
                            .libs
                            .iter()
                            .map(|l| LibStatus { name: l.name.clone(), sha256: l.sha256.clone(), size: l.size })
                            .collect(),
                    };
                    let body = EventBody::BuildFinished(event::BuildFinished {
                        build: build_id,
                        duration_ms: output.duration_ms,
                        edit_to_artifact_ms: edit_to_artifact,
                        fresh: artifact.fresh,
                        replayed: output.replayed,
                        sha256: artifact.sha256.clone(),
                        size: artifact.size,
                    });
                    self.hub.update_service(&service.name, body, |s| {
                        s.build.state = BuildState::Ok;
                        s.build.error = None;
                        s.build.finished_at = Some(finished_at);
                        s.build.duration_ms = Some(output.duration_ms);
                        s.build.count += 1;
                        s.artifact = Some(status);
                        if edit_to_artifact.is_some() {
                            s.last_edit_to_artifact_ms = edit_to_artifact;
                        }
                    });
                    tracing::info!(service = %service.name, sha256 = %artifact.sha256, ms = output.duration_ms, "built");
                    self.deliver(service, artifact, cause.first_event_at).await;
                }
            }
            Err(error) => {
                let finished_at = Utc::now();
                tracing::warn!(services = ?services, error = %error.message, "build failed; the previous artifacts stay current");
                for service in &plans {
                    let body = EventBody::BuildFailed(event::BuildFailed {
                        build: build_id,
                        duration_ms: error.duration_ms,
                        kind: error.kind,
                        message: error.message.clone(),
                    });
                    self.hub.update_service(&service.name, body, |s| {
                        s.build.state = BuildState::Failed;
                        s.build.error = Some(error.rendered.clone());
                        s.build.finished_at = Some(finished_at);
                        s.build.duration_ms = Some(error.duration_ms);
                        s.build.count += 1;
                    });
                }
            }
        }
    }
}

/// The values regenerated from stand.toml, then `helm upgrade --install` of the plan.
async fn redeploy(root: &Path, file: &Path, plan: &Plan) -> Result<(), String> {
    let stand = config::load(file).map_err(|e| e.to_string())?;
    crate::values::write_files(&stand, root).map_err(|e| e.to_string())?;
    crate::helm::upgrade(&crate::helm::program(), root, plan).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Runs blocking IO off the async threads; a panic there stays a panic.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn is_workspace_manifest(root: &Path, path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "Cargo.toml" || n == "Cargo.lock") && path.starts_with(root)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}
