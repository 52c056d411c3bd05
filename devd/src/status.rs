//! The stand's observable state and its event stream.
//!
//! [`StatusHub`] holds the current [`StandStatus`] and a bounded history of [`Event`]s
//! with increasing sequence numbers. The daemon writes; the API reads snapshots and
//! streams events (with replay after a `Last-Event-ID`). The events themselves, one
//! typed payload per kind, are in [`event`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub mod event;

pub use event::{Event, EventBody};

/// How many past events are kept for replay.
const HISTORY: usize = 1024;

/// The whole stand, as `GET /api/v1/status` and `devd status --json` show it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StandStatus {
    pub env: String,
    pub target: String,
    pub root: String,
    pub started_at: Option<DateTime<Utc>>,
    /// Set while stand.toml is invalid; devd keeps running on the last good plan.
    pub config_error: Option<String>,
    /// The sequence number of the newest event this status includes (replay after it).
    pub event_seq: u64,
    pub services: Vec<ServiceStatus>,
    /// Whether devd reaches the target (the kubernetes API server); `None` when devd
    /// does not talk to one (docker target, no Kubernetes config, no live sync).
    #[serde(default)]
    pub target_state: Option<TargetHealth>,
}

/// The target's reachability, as the stand's readiness and `devd status` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetHealth {
    pub state: TargetState,
    /// Why it is not reachable (and what to do), or what devd is waiting for.
    pub reason: Option<String>,
    /// When devd recorded this state.
    pub since: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Nothing answered or failed yet.
    Connecting,
    Reachable,
    Unreachable,
}

impl StandStatus {
    /// Why the target is not usable now, if it is not.
    pub fn target_unready(&self) -> Option<String> {
        let t = self.target_state.as_ref()?;
        match t.state {
            TargetState::Reachable => None,
            TargetState::Connecting | TargetState::Unreachable => {
                Some(t.reason.clone().unwrap_or_else(|| format!("the {} target is not reachable", self.target)))
            }
        }
    }

    /// Ready for Tilt (the `devd` resource): the target answers and every service is
    /// ready ([`ServiceStatus::readiness`]). Returns why not otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(reason) = self.target_unready() {
            return Err(reason);
        }
        let waiting: Vec<String> =
            self.services.iter().filter_map(|s| s.readiness().err().map(|r| format!("{}: {r}", s.name))).collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting.join("; "))
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub package: String,
    pub build: BuildStatus,
    /// The current artifact: the last successful build. A failed build leaves it.
    pub artifact: Option<ArtifactStatus>,
    /// Running instances of the service (containers, pods), filled by the targets.
    pub instances: Vec<InstanceStatus>,
    /// From the first file event of a change to the artifact being reported.
    pub last_edit_to_artifact_ms: Option<u64>,
    /// From the first file event of a change to every instance serving the new binary.
    pub last_edit_to_serving_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Nothing built yet.
    #[default]
    Pending,
    Building,
    Ok,
    Failed,
}

impl BuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Building => "building",
            Self::Ok => "ok",
            Self::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BuildStatus {
    pub state: BuildState,
    /// The compiler's rendered errors when the last build failed.
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    /// How many builds of this service have finished (ok or failed).
    pub count: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ArtifactStatus {
    pub sha256: String,
    pub built_at: DateTime<Utc>,
    pub size: u64,
    pub path: String,
    pub build_duration_ms: u64,
    /// The changed paths that caused the build (empty for the first or a manual one).
    pub cause: Vec<String>,
    /// The shared libraries it was linked against (none: linked statically), which
    /// reach an instance before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<LibStatus>,
}

/// A shared library of an artifact.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LibStatus {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub id: String,
    /// The instance's base URL as reachable from this host.
    pub url: Option<String>,
    /// sha256 of the binary the instance runs.
    pub hash: Option<String>,
    /// `health` is `ok`: the service answers `/health` and says it is well. A degraded
    /// instance is not healthy (it still counts as serving, see [`Health`]).
    pub healthy: bool,
    /// What the service's `/health` said (absent in the JSON of older devd: unreachable).
    #[serde(default)]
    pub health: Health,
    /// Why the instance is not `ok`: its `/health` message (`database unavailable: ...`)
    /// or why there was no answer.
    #[serde(default)]
    pub health_detail: Option<String>,
    pub detail: Option<String>,
}

impl InstanceStatus {
    pub fn set_health(&mut self, report: HealthReport) {
        self.healthy = report.health == Health::Ok;
        self.health = report.health;
        self.health_detail = report.detail;
    }
}

/// An instance's answer to `GET /health`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// 2xx, and the body does not say `degraded`.
    Ok,
    /// 2xx with `{"status": "degraded"}`: the process runs and answers, a dependency
    /// (its database) is away.
    Degraded,
    /// No answer, or a non-2xx one.
    #[default]
    Unreachable,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Unreachable => "unreachable",
        }
    }

    /// The process runs the binary and answers HTTP (ok or degraded).
    pub fn answers(self) -> bool {
        self != Self::Unreachable
    }
}

/// A [`Health`] and why it is not `ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub health: Health,
    pub detail: Option<String>,
}

impl HealthReport {
    pub fn unreachable(detail: impl Into<String>) -> Self {
        Self { health: Health::Unreachable, detail: Some(detail.into()) }
    }

    /// Reads an answer of `GET /health`: the service kit's body is `{status: "ok" |
    /// "degraded", message}`; a body that is not JSON still counts as ok when the
    /// status is 2xx (a service of another making).
    pub fn from_answer(status: u16, body: &[u8]) -> Self {
        if !(200..300).contains(&status) {
            return Self::unreachable(format!("/health answered {status}"));
        }
        let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        if body["status"].as_str() == Some("degraded") {
            let message = body["message"].as_str().unwrap_or("the service says it is degraded");
            return Self { health: Health::Degraded, detail: Some(message.to_owned()) };
        }
        Self { health: Health::Ok, detail: None }
    }
}

/// Why a service is ready but not well: its instances serve the current artifact and
/// some say they are degraded.
pub type ReadyNote = Option<String>;

impl ServiceStatus {
    /// Ready for Tilt: built, not failing, and every instance answering `/health` on the
    /// current artifact. A degraded instance (its database away) is ready: readiness
    /// says "runs the current build" (see docs/CONTRACTS.md), and the returned note
    /// says what is degraded. Returns why not otherwise.
    pub fn readiness(&self) -> Result<ReadyNote, String> {
        let artifact = match (&self.artifact, self.build.state) {
            (_, BuildState::Failed) => return Err("the last build failed".to_owned()),
            (_, BuildState::Building) => return Err("building".to_owned()),
            (None, _) => return Err("not built yet".to_owned()),
            (Some(artifact), _) => artifact,
        };
        let mut degraded = Vec::new();
        for instance in &self.instances {
            if instance.hash.as_deref() != Some(artifact.sha256.as_str()) {
                return Err(format!("instance {} does not run the current artifact yet", instance.id));
            }
            let why = instance.health_detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
            match instance.health {
                Health::Ok => {}
                Health::Degraded => degraded.push(format!("instance {} is degraded{why}", instance.id)),
                Health::Unreachable => return Err(format!("instance {} is not healthy (unreachable{why})", instance.id)),
            }
        }
        Ok((!degraded.is_empty()).then(|| degraded.join("; ")))
    }

    /// The worst health among the instances (none: no instances).
    pub fn health(&self) -> Option<Health> {
        self.instances.iter().map(|i| i.health).max()
    }
}

struct Inner {
    status: StandStatus,
    history: VecDeque<Event>,
    next_seq: u64,
    /// `status` serialized, made on the first ask after a change: the status API
    /// answers the same bytes to every poll between two events.
    json: Option<bytes::Bytes>,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct StatusHub {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Event>,
}

impl StatusHub {
    pub fn new(status: StandStatus) -> Self {
        let (events, _) = broadcast::channel(HISTORY);
        Self { inner: Arc::new(Mutex::new(Inner { status, history: VecDeque::new(), next_seq: 1, json: None })), events }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the status half-written in a way
        // that matters more than losing the daemon: keep serving it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> StandStatus {
        self.lock().status.clone()
    }

    /// The status as JSON (what [`Self::snapshot`] serializes to), serialized once
    /// per change.
    pub fn snapshot_json(&self) -> bytes::Bytes {
        let mut inner = self.lock();
        if let Some(json) = &inner.json {
            return json.clone();
        }
        // A status of strings, numbers and maps: serializing it cannot fail.
        let json = bytes::Bytes::from(serde_json::to_vec(&inner.status).unwrap_or_default());
        inner.json = Some(json.clone());
        json
    }

    pub fn service(&self, name: &str) -> Option<ServiceStatus> {
        self.lock().status.services.iter().find(|s| s.name == name).cloned()
    }

    /// Changes the status and records an event, atomically (readers never see the
    /// change without its event having been numbered).
    pub fn update(&self, body: EventBody, service: Option<&str>, change: impl FnOnce(&mut StandStatus)) -> Event {
        let event = {
            let mut inner = self.lock();
            inner.json = None;
            change(&mut inner.status);
            inner.status.event_seq = inner.next_seq;
            let event = Event { seq: inner.next_seq, at: Utc::now(), service: service.map(str::to_owned), body };
            inner.next_seq += 1;
            if inner.history.len() == HISTORY {
                inner.history.pop_front();
            }
            inner.history.push_back(event.clone());
            // Sent under the lock so that subscribers see events in sequence order.
            let _ = self.events.send(event.clone());
            event
        };
        tracing::debug!(seq = event.seq, kind = event.kind(), service = ?event.service, "event");
        event
    }

    /// Changes one service's status (if it exists) and records an event.
    pub fn update_service(&self, name: &str, body: EventBody, change: impl FnOnce(&mut ServiceStatus)) -> Event {
        self.update(body, Some(name), |status| {
            if let Some(service) = status.services.iter_mut().find(|s| s.name == name) {
                change(service);
            }
        })
    }

    /// Past events after `after` (all kept ones for 0), and a receiver for later ones.
    /// Subscribing first and filtering by sequence loses and repeats nothing.
    pub fn subscribe(&self, after: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        let past = inner.history.iter().filter(|e| e.seq > after).cloned().collect();
        (past, receiver)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(name: &str) -> ServiceStatus {
        ServiceStatus { name: name.to_owned(), package: name.to_owned(), ..ServiceStatus::default() }
    }

    #[test]
    fn events_are_numbered_and_replayed_after_a_given_sequence() {
        let hub = StatusHub::new(StandStatus { services: vec![service("a")], ..StandStatus::default() });
        let body = |instances| EventBody::Instances(event::Instances { instances });
        for n in 1..=3 {
            hub.update_service("a", body(n), |s| s.build.count += 1);
        }
        let (past, _rx) = hub.subscribe(1);
        assert_eq!(past.iter().map(|e| (e.seq, e.body.clone())).collect::<Vec<_>>(), [(2, body(2)), (3, body(3))]);
        assert!(past.iter().all(|e| e.service.as_deref() == Some("a")));
        assert_eq!(hub.service("a").unwrap().build.count, 3);
    }

    /// The status API's bytes are the snapshot's JSON, made anew after every change.
    #[test]
    fn the_json_snapshot_follows_every_change() {
        let hub = StatusHub::new(StandStatus { services: vec![service("a")], ..StandStatus::default() });
        let parsed = |hub: &StatusHub| serde_json::from_slice::<StandStatus>(&hub.snapshot_json()).expect("status JSON");
        assert_eq!(parsed(&hub), hub.snapshot());
        assert_eq!(hub.snapshot_json(), hub.snapshot_json(), "the same bytes until a change");
        hub.update_service("a", EventBody::Instances(event::Instances { instances: 1 }), |s| s.build.count = 7);
        assert_eq!(parsed(&hub).services[0].build.count, 7);
        assert_eq!(parsed(&hub), hub.snapshot());
    }

    #[test]
    fn readiness_needs_a_good_build_and_healthy_instances_on_it() {
        let mut s = service("a");
        assert_eq!(s.readiness().unwrap_err(), "not built yet");
        s.build.state = BuildState::Ok;
        s.artifact = Some(ArtifactStatus { sha256: "abc".into(), ..ArtifactStatus::default() });
        assert_eq!(s.readiness(), Ok(None));
        let mut instance = InstanceStatus { id: "c1".into(), hash: Some("old".into()), ..Default::default() };
        instance.set_health(HealthReport { health: Health::Ok, detail: None });
        s.instances.push(instance);
        assert!(s.readiness().unwrap_err().contains("current artifact"));
        s.instances[0].hash = Some("abc".into());
        assert_eq!(s.readiness(), Ok(None));
        s.instances[0].set_health(HealthReport::unreachable("connection refused"));
        assert_eq!(s.readiness().unwrap_err(), "instance c1 is not healthy (unreachable: connection refused)");
        s.build.state = BuildState::Failed;
        assert_eq!(s.readiness().unwrap_err(), "the last build failed");
    }

    #[test]
    fn a_degraded_instance_is_ready_with_a_note_and_not_healthy() {
        let mut s = service("a");
        s.build.state = BuildState::Ok;
        s.artifact = Some(ArtifactStatus { sha256: "abc".into(), ..ArtifactStatus::default() });
        let mut instance = InstanceStatus { id: "c1".into(), hash: Some("abc".into()), ..Default::default() };
        let body = br#"{"status":"degraded","database_connected":false,"message":"database unavailable: connection refused"}"#;
        instance.set_health(HealthReport::from_answer(200, body));
        assert_eq!((instance.health, instance.healthy), (Health::Degraded, false));
        s.instances.push(instance);
        assert_eq!(s.readiness(), Ok(Some("instance c1 is degraded: database unavailable: connection refused".to_owned())));
        assert_eq!(s.health(), Some(Health::Degraded));
        let json = serde_json::to_value(&s.instances[0]).unwrap();
        assert_eq!((json["health"].as_str(), json["healthy"].as_bool()), (Some("degraded"), Some(false)));
    }

    #[test]
    fn health_answers_are_read_by_status_and_body() {
        let check = |status: u16, body: &str, expected: Health| {
            assert_eq!(HealthReport::from_answer(status, body.as_bytes()).health, expected, "{status} {body}");
        };
        check(200, r#"{"status":"ok"}"#, Health::Ok);
        check(200, r#"{"status":"degraded","message":"m"}"#, Health::Degraded);
        check(200, "plain text", Health::Ok);
        check(204, "", Health::Ok);
        check(500, r#"{"status":"ok"}"#, Health::Unreachable);
        check(503, "", Health::Unreachable);
        // JSON of an older devd (no `health`): deserializes as unreachable.
        let old: InstanceStatus = serde_json::from_str(r#"{"id":"c","url":null,"hash":null,"healthy":false,"detail":null}"#).unwrap();
        assert_eq!(old.health, Health::Unreachable);
    }

    #[test]
    fn the_stand_is_ready_when_the_target_answers_and_every_service_is() {
        let mut ok = service("a");
        ok.build.state = BuildState::Ok;
        ok.artifact = Some(ArtifactStatus { sha256: "abc".into(), ..ArtifactStatus::default() });
        let mut stand = StandStatus { target: "kubernetes".into(), services: vec![ok, service("b")], ..StandStatus::default() };
        assert_eq!(stand.readiness().unwrap_err(), "b: not built yet");
        stand.services.pop();
        assert!(stand.readiness().is_ok(), "no target state (docker target): services only");
        let reason = "cannot reach the API server https://127.0.0.1:1 (context kind-stand): connection refused";
        stand.target_state = Some(TargetHealth { state: TargetState::Unreachable, reason: Some(reason.into()), since: Utc::now() });
        assert_eq!(stand.readiness().unwrap_err(), reason);
        stand.target_state = Some(TargetHealth { state: TargetState::Reachable, reason: None, since: Utc::now() });
        assert!(stand.readiness().is_ok());
    }

    #[test]
    fn a_status_without_target_state_still_parses() {
        // What a devd from before target_state answered.
        let old = json!({"env": "local", "target": "kubernetes", "root": "/r", "started_at": null, "config_error": null, "event_seq": 3, "services": []});
        let parsed: StandStatus = serde_json::from_value(old).expect("parses");
        assert_eq!(parsed.target_state, None);
    }
}
