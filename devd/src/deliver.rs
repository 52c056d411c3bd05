//! Delivery: keeps every instance of a service on the current artifact.
//!
//! One task per service ([`spawn`]), reached through a [`SyncHandle`]: `deliver` hands
//! it a new artifact (the latest wins when several arrive during a swap), `restart`
//! restarts the service process in every instance. The task
//! - sends a new artifact to every instance's shim at once and, while the shim holds
//!   the new binary on probation, polls the shim's status and the service's /health:
//!   the moment the new hash answers /health (ok or degraded) is "serving" (edit→serving is measured to
//!   it); the shim's 409 means the binary died at start and the old one serves again,
//!   which the instance's status says; a newer artifact that arrives while the shim
//!   still holds this one on probation goes out at once (the shim ends that probation
//!   when the next upload arrives: two saves in a row do not wait out the grace);
//! - reconciles every `interval`: lists the instances, asks each shim what it runs,
//!   and re-sends the artifact to an instance that runs another hash (a container
//!   restarted from its image). A hash an instance rolled back is not sent to it again;
//!   a rollback of the current hash that only the shim's status tells (its answer was
//!   dropped because the binary served and a newer artifact went out) is reported
//!   then, as `sync_failed` and in the instance's detail.
//!
//! An instance that already runs the artifact's hash gets nothing (no upload, no
//! restart); when that is every instance, the event is `delivery_skipped` with
//! `reason: "unchanged"`.
//!
//! An instance whose shim takes no shared libraries ([`ShimError::NoLibraries`]: an
//! image from before them) cannot run a binary linked against them: the task says so
//! once, on the channel [`spawn`] is given, and the daemon links that service's
//! binaries statically from then on (and rebuilds it at once).
//!
//! Status goes to the [`StatusHub`]: `instances`, `last_edit_to_serving_ms`, and events
//! `sync_started`, `synced`, `delivery_skipped`, `sync_failed`, `resync`, `restarted`,
//! `restart_failed`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::measure::millis;
use crate::status::event::{self, SkipReason};
use crate::status::{EventBody, HealthReport, InstanceStatus, StatusHub};
use crate::runtime::{Instance, ShimError, Target, TargetError};

/// How long a new binary may take to answer /health after the swap.
const SERVING_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(15);

/// An artifact every instance should run.
#[derive(Clone, Debug)]
pub struct Desired {
    pub sha256: String,
    pub path: PathBuf,
    /// The shared libraries it needs, delivered before it.
    pub libs: Vec<crate::build::SharedLib>,
    /// The first file event of the change that produced it (none for a manual build).
    pub first_event_at: Option<Instant>,
}

pub struct SyncHandle {
    desired: watch::Sender<Option<Desired>>,
    restart: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl SyncHandle {
    pub fn deliver(&self, desired: Desired) {
        let _ = self.desired.send(Some(desired));
    }

    pub fn restart(&self) {
        let _ = self.restart.try_send(());
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the delivery task of `service`. `refuses_libraries` hears the service's name
/// (once) when one of its instances takes no shared libraries.
pub fn spawn(
    service: String,
    target: Arc<dyn Target>,
    hub: StatusHub,
    interval: Duration,
    refuses_libraries: mpsc::UnboundedSender<String>,
) -> SyncHandle {
    let (desired_tx, desired_rx) = watch::channel(None);
    let (restart_tx, restart_rx) = mpsc::channel(4);
    // Everything the task logs is inside `sync{service=...}` (a warn span, so that it
    // is there whenever a warning is: `RUST_LOG=warn` keeps it).
    // A root span: the task outlives whatever span spawned it (the first build's).
    let span = tracing::warn_span!(parent: None, "sync", service = %service);
    let syncer = Syncer {
        service,
        target,
        hub,
        current: None,
        refused: BTreeMap::new(),
        unread: std::collections::BTreeSet::new(),
        list_error: None,
        refuses_libraries: Some(refuses_libraries),
    };
    let task = tokio::spawn(tracing::Instrument::instrument(syncer.run(desired_rx, restart_rx, interval), span));
    SyncHandle { desired: desired_tx, restart: restart_tx, task }
}

struct Syncer {
    service: String,
    target: Arc<dyn Target>,
    hub: StatusHub,
    current: Option<Desired>,
    /// (instance id, sha256) → why that instance refused that binary: it rolled it
    /// back, or it takes none of the shared libraries the binary needs. Not sent to
    /// that instance again (the reconcile pass would upload a library every time).
    refused: BTreeMap<(String, String), String>,
    /// (instance id, sha256) of deliveries recorded as served whose PUT answer was
    /// dropped (a newer artifact went out): a rollback of them only the shim's status
    /// can tell.
    unread: std::collections::BTreeSet<(String, String)>,
    /// Why the last listing of instances failed: logged when it changes, not per try.
    list_error: Option<String>,
    /// Told when an instance takes no shared libraries; `None` once told.
    refuses_libraries: Option<mpsc::UnboundedSender<String>>,
}

/// What one delivery to one instance came to.
struct Outcome {
    status: InstanceStatus,
    serving_at: Option<Instant>,
    error: Option<String>,
    /// Served, and the shim's answer was not awaited.
    unread: bool,
    /// The shim takes no shared libraries (the artifact needs some).
    no_libraries: bool,
}

impl Syncer {
    async fn run(mut self, mut desired: watch::Receiver<Option<Desired>>, mut restart: mpsc::Receiver<()>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = self.target.changes();
        loop {
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = desired.borrow_and_update().clone();
                    if let Some(next) = next {
                        self.current = Some(next.clone());
                        // A clone that has seen `next`: it tells the delivery of a newer one.
                        self.sync(&next, &desired.clone()).await;
                    }
                }
                _ = tick.tick() => self.reconcile().await,
                () = instances_changed(&mut changes) => self.reconcile().await,
                asked = restart.recv() => {
                    if asked.is_none() {
                        return;
                    }
                    self.restart_all().await;
                }
            }
        }
    }

    /// The instances, or why they cannot be listed. A failure is logged once until it
    /// changes or clears; an unreachable target is not logged here (it says so itself).
    async fn instances(&mut self) -> Result<Vec<Instance>, String> {
        match self.target.instances(&self.service).await {
            Ok(list) => {
                if self.list_error.take().is_some() {
                    tracing::info!(service = %self.service, "instances listed again");
                }
                Ok(list)
            }
            Err(e) => {
                let message = e.to_string();
                let unreachable = matches!(e, TargetError::Unreachable { .. });
                if !unreachable && self.list_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(service = %self.service, error = %message, "cannot list instances");
                }
                self.list_error = Some(message.clone());
                Err(message)
            }
        }
    }

    /// Sends `desired` to every instance that does not run it already, and records how
    /// it went. An instance whose shim reports the artifact's hash gets nothing: an
    /// edit that produced the same binary (an undone change) restarts no process.
    async fn sync(&mut self, desired: &Desired, newer: &watch::Receiver<Option<Desired>>) {
        let Ok(all) = self.instances().await else { return };
        if all.is_empty() {
            return;
        }
        let short = short(&desired.sha256);
        let running = futures_util::future::join_all(all.iter().map(|i| self.target.shim_status(i))).await;
        let (unchanged, instances): (Vec<_>, Vec<_>) = all.into_iter().zip(running).partition(|(_, shim)| {
            matches!(shim, Ok(s) if s.sha256.as_deref() == Some(desired.sha256.as_str()) && s.pid.is_some())
        });
        let instances: Vec<Instance> = instances.into_iter().map(|(i, _)| i).collect();
        let mut unchanged_statuses = Vec::with_capacity(unchanged.len());
        for (instance, _) in &unchanged {
            let mut status = unknown_status(instance);
            status.hash = Some(desired.sha256.clone());
            status.set_health(self.target.health(instance).await);
            unchanged_statuses.push(status);
        }
        if instances.is_empty() {
            tracing::info!(service = %self.service, sha256 = %short, "every instance runs this binary already: nothing delivered");
            let body = EventBody::DeliverySkipped(event::DeliverySkipped {
                instances: unchanged_statuses.len(),
                reason: SkipReason::Unchanged,
                sha256: desired.sha256.clone(),
            });
            self.hub.update_service(&self.service, body, |s| s.instances = unchanged_statuses);
            return;
        }
        let body = EventBody::SyncStarted(event::SyncStarted {
            instances: instances.len(),
            sha256: desired.sha256.clone(),
            unchanged: unchanged_statuses.len(),
        });
        self.hub.update_service(&self.service, body, |_| {});
        let deliveries = instances.iter().map(|i| deliver_one(self.target.as_ref(), i, desired, Some(newer.clone())));
        let outcomes = futures_util::future::join_all(deliveries).await;
        for (instance, outcome) in instances.iter().zip(&outcomes) {
            let key = (instance.id.clone(), desired.sha256.clone());
            if outcome.unread {
                self.unread.insert(key.clone());
            } else {
                self.unread.remove(&key);
            }
            self.note_refusal(key, outcome);
        }
        let failed: Vec<String> = outcomes.iter().filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.status.id))).collect();
        let statuses: Vec<InstanceStatus> = outcomes.iter().map(|o| o.status.clone()).chain(unchanged_statuses).collect();
        if failed.is_empty() {
            let serving = outcomes.iter().filter_map(|o| o.serving_at).max();
            let edit_to_serving = match (desired.first_event_at, serving) {
                (Some(edit), Some(serving)) => Some(millis(serving.saturating_duration_since(edit))),
                _ => None,
            };
            tracing::info!(service = %self.service, sha256 = %short, ?edit_to_serving, "serving");
            let body = EventBody::Synced(event::Synced {
                edit_to_serving_ms: edit_to_serving,
                instances: statuses.len(),
                sha256: desired.sha256.clone(),
            });
            self.hub.update_service(&self.service, body, |s| {
                s.instances = statuses;
                if edit_to_serving.is_some() {
                    s.last_edit_to_serving_ms = edit_to_serving;
                }
            });
        } else {
            tracing::warn!(service = %self.service, sha256 = %short, errors = ?failed, "delivery failed");
            let body = EventBody::SyncFailed(event::SyncFailed { errors: failed, sha256: desired.sha256.clone() });
            self.hub.update_service(&self.service, body, |s| s.instances = statuses);
        }
    }

    /// Re-syncs instances that run another hash; refreshes their status.
    async fn reconcile(&mut self) {
        let Ok(instances) = self.instances().await else { return };
        // Only a rollback of the current artifact is still news.
        let current_sha = self.current.as_ref().map(|c| c.sha256.clone());
        self.unread.retain(|(_, sha)| Some(sha) == current_sha.as_ref());
        let mut statuses = Vec::with_capacity(instances.len());
        for instance in &instances {
            let mut status = unknown_status(instance);
            match self.target.shim_status(instance).await {
                Ok(shim) => {
                    status.hash = shim.sha256.clone();
                    status.set_health(match shim.pid {
                        Some(_) => self.target.health(instance).await,
                        None => HealthReport::unreachable("the shim runs no service process"),
                    });
                    if let Some(current) = self.current.clone() {
                        let key = (instance.id.clone(), current.sha256.clone());
                        let rejected_here =
                            shim.last_rollback.as_ref().filter(|r| r.rejected_sha256 == current.sha256);
                        let runs_current = shim.sha256.as_deref() == Some(current.sha256.as_str());
                        if runs_current {
                            // Delivered again since, and running: the rollback is history.
                            self.refused.remove(&key);
                        }
                        if let Some(reason) = self.refused.get(&key) {
                            status.detail = Some(reason.clone());
                        } else if let (Some(rollback), false, true) =
                            (rejected_here, runs_current, self.unread.contains(&key))
                        {
                            // A rollback whose answer devd never read: the PUT was dropped
                            // once the binary served and a newer artifact went out (that
                            // one unchanged, the binary's probation went on), and it died.
                            let error = rolled_back(&current.sha256, &rollback.reason);
                            tracing::warn!(service = %self.service, instance = %instance.name, %error, "the instance rolled back a binary that had served");
                            self.unread.remove(&key);
                            self.refused.insert(key, error.clone());
                            status.detail = Some(error.clone());
                            let body = EventBody::SyncFailed(event::SyncFailed {
                                errors: vec![format!("{}: {error}", instance.id)],
                                sha256: current.sha256.clone(),
                            });
                            self.hub.update_service(&self.service, body, |_| {});
                        } else if !runs_current && rejected_here.is_none() {
                            tracing::info!(service = %self.service, instance = %instance.name, running = ?shim.sha256.as_deref().map(short), "re-syncing");
                            let body = EventBody::Resync(event::Resync {
                                instance: instance.id.clone(),
                                running: shim.sha256.clone(),
                                sha256: current.sha256.clone(),
                            });
                            self.hub.update_service(&self.service, body, |_| {});
                            let outcome = deliver_one(self.target.as_ref(), instance, &current, None).await;
                            self.note_refusal(key, &outcome);
                            status = outcome.status;
                        }
                    }
                }
                Err(e) => status.detail = Some(format!("shim: {e}")),
            }
            statuses.push(status);
        }
        let changed = self.hub.service(&self.service).is_some_and(|s| s.instances != statuses);
        if changed {
            let body = EventBody::Instances(event::Instances { instances: statuses.len() });
            self.hub.update_service(&self.service, body, |s| s.instances = statuses);
        }
    }

    async fn restart_all(&mut self) {
        let instances = match self.instances().await {
            Ok(instances) => instances,
            Err(error) => {
                self.restart_failed(error, None);
                return;
            }
        };
        if instances.is_empty() {
            self.restart_failed("no running instances to restart (not deployed yet, or no pod runs)".to_owned(), None);
            return;
        }
        for instance in &instances {
            match self.target.restart(instance).await {
                Ok(reply) => {
                    let body = EventBody::Restarted(event::Restarted { instance: instance.id.clone(), pid: reply.pid, sha256: reply.sha256 });
                    self.hub.update_service(&self.service, body, |_| {});
                }
                Err(e) => self.restart_failed(e.to_string(), Some(instance.id.clone())),
            }
        }
        self.reconcile().await;
    }

    /// Records a binary the instance of `key` refused (a rollback, or libraries it
    /// takes none of: then the daemon is asked for static binaries), unless it runs it.
    fn note_refusal(&mut self, key: (String, String), outcome: &Outcome) {
        let Some(error) = outcome.error.as_ref().filter(|_| outcome.status.hash.as_deref() != Some(key.1.as_str())) else {
            return;
        };
        if outcome.no_libraries {
            self.refused.insert(key, error.clone());
            self.link_statically();
        } else if error.starts_with("rolled back") {
            self.refused.insert(key, error.clone());
        }
    }

    /// Asks (once) for this service's binaries to be linked statically: an instance
    /// takes no shared libraries.
    fn link_statically(&mut self) {
        if let Some(tx) = self.refuses_libraries.take() {
            tracing::warn!(service = %self.service, "an instance takes no shared libraries (its image predates them): asking for binaries linked statically");
            let _ = tx.send(self.service.clone());
        }
    }

    fn restart_failed(&self, error: String, instance: Option<String>) {
        self.hub.update_service(&self.service, EventBody::RestartFailed(event::RestartFailed { error, instance }), |_| {});
    }
}

/// Resolves when the target reports changed instances ([`Target::changes`]); never
/// for a target without change reports.
async fn instances_changed(changes: &mut Option<watch::Receiver<u64>>) {
    if let Some(rx) = changes {
        if rx.changed().await.is_ok() {
            return;
        }
        *changes = None; // the target is gone: ticks only
    }
    std::future::pending::<()>().await;
}

/// An instance's status before anything is known about it.
fn unknown_status(instance: &Instance) -> InstanceStatus {
    InstanceStatus { id: instance.id.clone(), url: Some(instance.service_url.clone()), ..InstanceStatus::default() }
}

/// Sends the artifact's shared libraries the instance lacks, then PUTs the artifact
/// and, meanwhile, watches for the new hash answering /health (within the serving
/// deadline, which starts after the libraries).
///
/// The shim answers the PUT once the new binary's probation is over (its grace
/// period, a second by default), or as soon as a newer upload arrives. So when `newer`
/// reports a newer artifact while this one already serves, the answer is not awaited:
/// the request is dropped (the shim finishes the swap on its own) and the next
/// delivery goes out at once, which ends this binary's probation.
async fn deliver_one(
    target: &dyn Target,
    instance: &Instance,
    desired: &Desired,
    mut newer: Option<watch::Receiver<Option<Desired>>>,
) -> Outcome {
    // Callers send only to instances whose shim said it runs another hash (`sync`
    // partitions them, the reconcile pass compares): no second status round trip here.
    let mut status = unknown_status(instance);
    // The libraries first, outside the serving deadline: the first delivery of a new
    // set carries ~20 MB, which can take a while through the API server's pod proxy.
    if let Err(e) = target.deliver_libs(instance, &desired.libs).await {
        return refused(target, instance, desired, status, e).await;
    }
    let put = target.deliver(instance, &desired.path, &desired.sha256);
    tokio::pin!(put);
    let watch = serving(target, instance, &desired.sha256);
    tokio::pin!(watch);
    let mut serving_at = None;
    // Seen serving (not only given up on after the deadline).
    let mut served = false;
    let mut superseded = newer.as_ref().is_some_and(|rx| rx.has_changed().unwrap_or(false));
    let result = loop {
        if superseded && served {
            tracing::debug!(instance = %instance.name, sha256 = %short(&desired.sha256), "serving; a newer artifact ends its probation");
            break None;
        }
        tokio::select! {
            result = &mut put => break Some(result),
            at = &mut watch, if serving_at.is_none() => {
                served = at.is_ok();
                serving_at = Some(at.unwrap_or_else(|gave_up| gave_up));
            }
            () = newer_artifact(&mut newer), if !superseded => superseded = true,
        }
    };
    let Some(result) = result else {
        status.hash = Some(desired.sha256.clone());
        status.set_health(target.health(instance).await);
        return Outcome { status, serving_at, error: None, unread: true, no_libraries: false };
    };
    match result {
        Ok(reply) => {
            if serving_at.is_none() {
                serving_at = Some(watch.await.unwrap_or_else(|gave_up| gave_up));
            }
            status.hash = reply.sha256.or_else(|| Some(desired.sha256.clone()));
            status.set_health(target.health(instance).await);
            if !status.health.answers() {
                status.detail = Some("not answering /health".to_owned());
            }
            Outcome { status, serving_at, error: None, unread: false, no_libraries: false }
        }
        Err(e) => refused(target, instance, desired, status, e).await,
    }
}

/// The outcome of a delivery the instance refused (`e`), with what it runs now: the
/// previous binary after a rollback, or unchanged.
async fn refused(target: &dyn Target, instance: &Instance, desired: &Desired, mut status: InstanceStatus, e: ShimError) -> Outcome {
    let message = match &e {
        ShimError::RolledBack { reason } => rolled_back(&desired.sha256, reason),
        other => other.to_string(),
    };
    if let Ok(shim) = target.shim_status(instance).await {
        status.hash = shim.sha256;
    }
    status.set_health(target.health(instance).await);
    status.detail = Some(message.clone());
    let no_libraries = matches!(e, ShimError::NoLibraries { .. });
    Outcome { status, serving_at: None, error: Some(message), unread: false, no_libraries }
}

/// Resolves when `newer` sees a newer artifact; never without one (or once its sender
/// is gone).
async fn newer_artifact(newer: &mut Option<watch::Receiver<Option<Desired>>>) {
    if let Some(rx) = newer {
        if rx.changed().await.is_ok() {
            return;
        }
        *newer = None;
    }
    std::future::pending::<()>().await;
}

/// Resolves when the instance's shim runs `sha256` and the service answers /health
/// (`Ok`), or after [`SERVING_DEADLINE`] (`Err`); with the time either way.
async fn serving(target: &dyn Target, instance: &Instance, sha256: &str) -> Result<Instant, Instant> {
    let end = Instant::now() + SERVING_DEADLINE;
    loop {
        let runs = matches!(target.shim_status(instance).await, Ok(s) if s.sha256.as_deref() == Some(sha256) && s.pid.is_some());
        // Degraded counts: the new binary runs and answers; its database is another matter.
        if runs && target.health(instance).await.health.answers() {
            return Ok(Instant::now());
        }
        if Instant::now() >= end {
            return Err(Instant::now());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why an instance does not run `sha256`: the shim rolled it back. (`sync` and the
/// reconcile pass know a recorded rollback by this message's start.)
fn rolled_back(sha256: &str, reason: &str) -> String {
    format!("rolled back {}: {reason}", short(sha256))
}

fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}


#[cfg(test)]
mod tests;
