//! Events as data: what happened, with a typed payload per kind.
//!
//! [`EventBody`] is the one list of event kinds. The daemon records them through the
//! [`StatusHub`](super::StatusHub); the API streams them, `devd up`'s progress lines and
//! `devd status --watch` read them back, and every consumer matches on the variant,
//! never on the kind's name.
//!
//! On the wire (the SSE stream, `data:` and `event:` lines, see docs/CONTRACTS.md) an
//! event is `{"seq", "at", "kind", "service", "detail"}`, in that order: `kind` is the
//! variant's name below and `detail` its payload. The payloads' fields are declared in
//! alphabetical order, the order in which devd wrote them when events were `json!`
//! values, so the JSON stays the same byte for byte.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};

use super::TargetState;
use crate::build::BuildErrorKind;
use crate::config::Target;

/// Something that happened, in order.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// The service it is about; `None` for the stand as a whole.
    pub service: Option<String>,
    /// The kind and its payload (`kind` and `detail` on the wire).
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// The wire name of the event's kind (`build_started`, ...).
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut wire = serializer.serialize_struct("Event", 5)?;
        wire.serialize_field("seq", &self.seq)?;
        wire.serialize_field("at", &self.at)?;
        wire.serialize_field("kind", self.kind())?;
        wire.serialize_field("service", &self.service)?;
        wire.serialize_field("detail", &Detail(&self.body))?;
        wire.end()
    }
}

/// An event's payload alone (`detail` on the wire).
struct Detail<'a>(&'a EventBody);

impl Serialize for Detail<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_detail(serializer)
    }
}

/// Declares [`EventBody`] with each variant's wire name once: the serde name, and what
/// [`EventBody::kind`] returns.
macro_rules! event_kinds {
    ($( $(#[$doc:meta])* $wire:literal => $variant:ident($payload:ty), )*) => {
        /// What happened, by kind, with the kind's data. Serialized alone it is
        /// `{"kind": ..., "detail": {...}}`; inside an [`Event`] the two sit beside the
        /// event's other fields.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "kind", content = "detail")]
        pub enum EventBody {
            $( $(#[$doc])* #[serde(rename = $wire)] $variant($payload), )*
        }

        impl EventBody {
            /// Every kind's wire name, in declaration order.
            pub const KINDS: &'static [&'static str] = &[$( $wire, )*];

            /// The wire name: `kind` in the JSON, the SSE stream's `event:` line.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $wire, )*
                }
            }

            fn serialize_detail<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $( Self::$variant(detail) => detail.serialize(serializer), )*
                }
            }
        }
    };
}

event_kinds! {
    /// A cargo invocation started that builds the service (one event per service).
    "build_started" => BuildStarted(BuildStarted),
    /// cargo's count of units, at most one a second (a stand event).
    "build_progress" => BuildProgress(BuildProgress),
    /// The service's new artifact.
    "build_finished" => BuildFinished(BuildFinished),
    /// The build failed; the previous artifact stays current.
    "build_failed" => BuildFailed(BuildFailed),
    /// A line of the dev image's build (Docker's output, the shim's cargo).
    "image_progress" => ImageProgress(ImageProgress),
    /// Docker target: the dev image was built.
    "image_built" => ImageBuilt(StepDone),
    /// Docker target: the dev image was built before from the same inputs.
    "image_kept" => ImageKept(StepDone),
    /// Docker target: the service's database container runs.
    "database_started" => DatabaseStarted(StepDone),
    /// Docker target: the service's container runs.
    "container_started" => ContainerStarted(StepDone),
    /// The service (docker target) or the stand (helm on kubernetes) is deployed.
    "deployed" => Deployed(Deployed),
    /// Deploying the service or the stand failed.
    "deploy_failed" => DeployFailed(Failure),
    /// Docker target: a container stopped or removed by hand was started again.
    "container_revived" => ContainerRevived(ContainerRevived),
    /// stand.toml is invalid; devd keeps running on the last good plan.
    "config_error" => ConfigError(Failure),
    /// stand.toml was read again and is valid.
    "config_reloaded" => ConfigReloaded(ConfigReloaded),
    /// A service left the environment; what of it was removed.
    "service_removed" => ServiceRemoved(ServiceRemoved),
    /// Every instance runs the artifact already: nothing was sent.
    "delivery_skipped" => DeliverySkipped(DeliverySkipped),
    /// The artifact goes out to the instances that do not run it.
    "sync_started" => SyncStarted(SyncStarted),
    /// Every instance serves the artifact.
    "synced" => Synced(Synced),
    /// Delivering the artifact failed for some instances.
    "sync_failed" => SyncFailed(SyncFailed),
    /// An instance runs another build than the current one: it is sent the current one.
    "resync" => Resync(Resync),
    /// The service's instances changed (count, hash or health).
    "instances" => Instances(Instances),
    /// An instance's service process was restarted.
    "restarted" => Restarted(Restarted),
    /// A restart could not be done (for one instance, or at all).
    "restart_failed" => RestartFailed(RestartFailed),
    /// The target's reachability changed (kubernetes).
    "target_state" => TargetState(TargetReach),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStarted {
    /// The cargo invocation's number (shared by the services it builds).
    pub build: u64,
    /// The changed paths, relative to the stand's root (empty: first or manual build).
    pub cause: Vec<String>,
    /// Every service this invocation builds.
    pub services: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildProgress {
    pub build: u64,
    /// Units done so far.
    pub done: u32,
    pub services: Vec<String>,
    pub total: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFinished {
    pub build: u64,
    /// The whole invocation's.
    pub duration_ms: u64,
    /// From the first file event of the change to the artifact (none for a manual build).
    pub edit_to_artifact_ms: Option<u64>,
    /// cargo found it up to date (nothing was recompiled for it).
    pub fresh: bool,
    /// The build replayed rustc instead of running cargo.
    pub replayed: bool,
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFailed {
    pub build: u64,
    pub duration_ms: u64,
    pub kind: BuildErrorKind,
    /// One line (`build of svc1 failed: 1 compiler error`); the rendered errors are in
    /// the status.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProgress {
    pub line: String,
}

/// A docker target step done: what, in how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDone {
    pub duration_ms: u64,
    /// The image's tag or the container's name.
    pub name: String,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub target: Target,
}

/// Something failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
}

/// Which container of a service (docker target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Database,
    Service,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRevived {
    pub component: Component,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReloaded {
    /// Services the new stand.toml adds to the environment.
    pub added: BTreeSet<String>,
    /// The plan changed.
    pub changed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRemoved {
    /// The containers removed (docker target; empty elsewhere).
    pub removed: Vec<String>,
}

/// Why a delivery sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Every instance runs the artifact's hash already.
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySkipped {
    pub instances: usize,
    pub reason: SkipReason,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStarted {
    /// Instances the artifact is sent to.
    pub instances: usize,
    pub sha256: String,
    /// Instances that run it already.
    pub unchanged: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    /// From the first file event of the change to every instance serving it.
    pub edit_to_serving_ms: Option<u64>,
    pub instances: usize,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailed {
    /// `<instance>: <why>` per failed instance.
    pub errors: Vec<String>,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resync {
    pub instance: String,
    /// The hash the instance runs (none: its shim runs no binary).
    pub running: Option<String>,
    /// The current artifact's, sent to it.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instances {
    /// How many there are now.
    pub instances: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarted {
    pub instance: String,
    /// The new service process's.
    pub pid: i32,
    /// The hash it runs.
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartFailed {
    pub error: String,
    /// The instance that could not be restarted; absent when none could be asked (no
    /// instances, the target unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetReach {
    pub reason: Option<String>,
    pub state: TargetState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T06:00:00.5Z").expect("a time").with_timezone(&Utc)
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// One event of every kind and its JSON, byte for byte: what the SSE stream's `data:`
    /// lines and the history carry (docs/CONTRACTS.md, "Events").
    fn catalogue() -> Vec<(Option<&'static str>, EventBody, &'static str)> {
        let sha = "5f2b".to_owned();
        let step = |name: &str| StepDone { duration_ms: 320, name: name.to_owned(), target: Target::Docker };
        vec![
            (
                Some("svc1"),
                EventBody::BuildStarted(BuildStarted { build: 3, cause: strings(&["services/svc1/src/main.rs"]), services: strings(&["svc1", "svc2"]) }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"build_started","service":"svc1","detail":{"build":3,"cause":["services/svc1/src/main.rs"],"services":["svc1","svc2"]}}"#,
            ),
            (
                None,
                EventBody::BuildProgress(BuildProgress { build: 3, done: 37, services: strings(&["svc1"]), total: 180 }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"build_progress","service":null,"detail":{"build":3,"done":37,"services":["svc1"],"total":180}}"#,
            ),
            (
                Some("svc1"),
                EventBody::BuildFinished(BuildFinished {
                    build: 3,
                    duration_ms: 412,
                    edit_to_artifact_ms: Some(530),
                    fresh: false,
                    replayed: true,
                    sha256: sha.clone(),
                    size: 4096,
                }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"build_finished","service":"svc1","detail":{"build":3,"duration_ms":412,"edit_to_artifact_ms":530,"fresh":false,"replayed":true,"sha256":"5f2b","size":4096}}"#,
            ),
            (
                Some("svc1"),
                EventBody::BuildFinished(BuildFinished {
                    build: 1,
                    duration_ms: 35_200,
                    edit_to_artifact_ms: None,
                    fresh: true,
                    replayed: false,
                    sha256: sha.clone(),
                    size: 4096,
                }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"build_finished","service":"svc1","detail":{"build":1,"duration_ms":35200,"edit_to_artifact_ms":null,"fresh":true,"replayed":false,"sha256":"5f2b","size":4096}}"#,
            ),
            (
                Some("svc1"),
                EventBody::BuildFailed(BuildFailed {
                    build: 4,
                    duration_ms: 700,
                    kind: BuildErrorKind::Compile,
                    message: "build of svc1 failed: 1 compiler error".to_owned(),
                }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"build_failed","service":"svc1","detail":{"build":4,"duration_ms":700,"kind":"compile","message":"build of svc1 failed: 1 compiler error"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::ImageProgress(ImageProgress { line: "Step 3/7 : COPY".to_owned() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"image_progress","service":"svc1","detail":{"line":"Step 3/7 : COPY"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::ImageBuilt(step("stand/svc1:dev")),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"image_built","service":"svc1","detail":{"duration_ms":320,"name":"stand/svc1:dev","target":"docker"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::ImageKept(step("stand/svc1:dev")),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"image_kept","service":"svc1","detail":{"duration_ms":320,"name":"stand/svc1:dev","target":"docker"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::DatabaseStarted(step("stand-local-postgres-svc1")),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"database_started","service":"svc1","detail":{"duration_ms":320,"name":"stand-local-postgres-svc1","target":"docker"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::ContainerStarted(step("stand-local-svc1")),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"container_started","service":"svc1","detail":{"duration_ms":320,"name":"stand-local-svc1","target":"docker"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::Deployed(Deployed { target: Target::Docker }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"deployed","service":"svc1","detail":{"target":"docker"}}"#,
            ),
            (
                None,
                EventBody::Deployed(Deployed { target: Target::Kubernetes }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"deployed","service":null,"detail":{"target":"kubernetes"}}"#,
            ),
            (
                None,
                EventBody::DeployFailed(Failure { error: "helm upgrade failed".to_owned() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"deploy_failed","service":null,"detail":{"error":"helm upgrade failed"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::ContainerRevived(ContainerRevived { component: Component::Database, target: Target::Docker }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"container_revived","service":"svc1","detail":{"component":"database","target":"docker"}}"#,
            ),
            (
                None,
                EventBody::ConfigError(Failure { error: "stand.toml:3:8: port: invalid type".to_owned() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"config_error","service":null,"detail":{"error":"stand.toml:3:8: port: invalid type"}}"#,
            ),
            (
                None,
                EventBody::ConfigReloaded(ConfigReloaded { added: BTreeSet::from(["svc3".to_owned()]), changed: true }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"config_reloaded","service":null,"detail":{"added":["svc3"],"changed":true}}"#,
            ),
            (
                Some("svc2"),
                EventBody::ServiceRemoved(ServiceRemoved { removed: strings(&["stand-local-svc2"]) }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"service_removed","service":"svc2","detail":{"removed":["stand-local-svc2"]}}"#,
            ),
            (
                Some("svc1"),
                EventBody::DeliverySkipped(DeliverySkipped { instances: 1, reason: SkipReason::Unchanged, sha256: sha.clone() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"delivery_skipped","service":"svc1","detail":{"instances":1,"reason":"unchanged","sha256":"5f2b"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::SyncStarted(SyncStarted { instances: 2, sha256: sha.clone(), unchanged: 1 }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"sync_started","service":"svc1","detail":{"instances":2,"sha256":"5f2b","unchanged":1}}"#,
            ),
            (
                Some("svc1"),
                EventBody::Synced(Synced { edit_to_serving_ms: Some(538), instances: 3, sha256: sha.clone() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"synced","service":"svc1","detail":{"edit_to_serving_ms":538,"instances":3,"sha256":"5f2b"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::SyncFailed(SyncFailed { errors: strings(&["c1: rolled back 5f2b"]), sha256: sha.clone() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"sync_failed","service":"svc1","detail":{"errors":["c1: rolled back 5f2b"],"sha256":"5f2b"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::Resync(Resync { instance: "c1".to_owned(), running: None, sha256: sha.clone() }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"resync","service":"svc1","detail":{"instance":"c1","running":null,"sha256":"5f2b"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::Instances(Instances { instances: 2 }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"instances","service":"svc1","detail":{"instances":2}}"#,
            ),
            (
                Some("svc1"),
                EventBody::Restarted(Restarted { instance: "c1".to_owned(), pid: 12, sha256: Some(sha.clone()) }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"restarted","service":"svc1","detail":{"instance":"c1","pid":12,"sha256":"5f2b"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::RestartFailed(RestartFailed { error: "shim: connection refused".to_owned(), instance: Some("c1".to_owned()) }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"restart_failed","service":"svc1","detail":{"error":"shim: connection refused","instance":"c1"}}"#,
            ),
            (
                Some("svc1"),
                EventBody::RestartFailed(RestartFailed { error: "no running instances to restart".to_owned(), instance: None }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"restart_failed","service":"svc1","detail":{"error":"no running instances to restart"}}"#,
            ),
            (
                None,
                EventBody::TargetState(TargetReach { reason: Some("connecting".to_owned()), state: TargetState::Connecting }),
                r#"{"seq":7,"at":"2026-12-03T06:00:00.500Z","kind":"target_state","service":null,"detail":{"reason":"connecting","state":"connecting"}}"#,
            ),
        ]
    }

    #[test]
    fn every_kind_keeps_its_wire_json_and_reads_back() {
        for (service, body, json) in catalogue() {
            let event = Event { seq: 7, at: at(), service: service.map(str::to_owned), body };
            assert_eq!(serde_json::to_string(&event).expect("serializes"), json);
            assert_eq!(serde_json::from_str::<Event>(json).expect("deserializes"), event, "{json}");
            let value: serde_json::Value = serde_json::from_str(json).expect("json");
            assert_eq!(value["kind"], event.kind(), "kind() is the wire name");
            // The detail's keys in sorted order, as `json!` maps wrote them before.
            let detail = serde_json::to_string(&value["detail"]).expect("detail");
            assert!(json.ends_with(&format!(r#""detail":{detail}}}"#)), "{json}: detail keys out of order");
        }
        let covered: BTreeSet<&str> = catalogue().iter().map(|(_, body, _)| body.kind()).collect();
        assert_eq!(covered, EventBody::KINDS.iter().copied().collect(), "the catalogue has one event of every kind");
        assert_eq!(EventBody::KINDS.len(), 24);
    }

    #[test]
    fn the_contract_names_every_kind() {
        let contracts = include_str!("../../../docs/CONTRACTS.md");
        let start = contracts.find("- Events (the SSE stream").expect("an Events paragraph");
        let events = &contracts[start..];
        let events = &events[..events[1..].find("\n- ").map_or(events.len(), |end| end + 1)];
        let missing: Vec<&str> = EventBody::KINDS
            .iter()
            .copied()
            .filter(|kind| !events.contains(&format!("`{kind} {{")) && !events.contains(&format!("`{kind}`")))
            .collect();
        assert!(missing.is_empty(), "docs/CONTRACTS.md (Events) does not describe {missing:?}");
    }

    #[test]
    fn a_body_alone_is_kind_and_detail() {
        let body = EventBody::Instances(Instances { instances: 2 });
        assert_eq!(serde_json::to_string(&body).expect("serializes"), r#"{"kind":"instances","detail":{"instances":2}}"#);
    }

    #[test]
    fn an_unknown_kind_or_a_wrong_detail_is_an_error() {
        let unknown = r#"{"seq":1,"at":"2026-12-03T06:00:00Z","kind":"no_such_kind","service":null,"detail":{}}"#;
        assert!(serde_json::from_str::<Event>(unknown).is_err());
        let wrong = r#"{"seq":1,"at":"2026-12-03T06:00:00Z","kind":"instances","service":null,"detail":{"instances":"two"}}"#;
        assert!(serde_json::from_str::<Event>(wrong).is_err());
    }
}
