//! The kubernetes target against a scripted API server.
//!
//! The API server is a `tower` service handed to `kube::Client::new` (kube's
//! mock_tests pattern): it records every request (method, path and query, headers,
//! body) and answers the way the real one does: PodList/NodeList/Secret objects,
//! `metav1.Status` errors, watch streams of `{"type":..,"object":..}` lines, and for
//! the pod proxy the shim's own answers passed through. Each test asserts the requests
//! devd made.

mod fixtures;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devd::deliver::{self, Desired};
use devd::status::event::{DeliverySkipped, SkipReason};
use devd::status::{EventBody, ServiceStatus, StandStatus, StatusHub};
use devd::runtime::kubernetes::{Cluster, KubeApi, KubeError, KubeTarget, PodChange, Reach, SyncReason};
use devd::runtime::{ShimError, Target};
use futures_util::Stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

const NS: &str = "stand";
const TOKEN: &str = "s3cr3t-token";
const SELECTOR_Q: &str =
    "labelSelector=app.kubernetes.io%2Fname%3Dservice1%2Capp.kubernetes.io%2Finstance%3Dstand%2Capp.kubernetes.io%2Fcomponent%3Dservice";
const RELEASE_SELECTOR_Q: &str =
    "labelSelector=app.kubernetes.io%2Finstance%3Dstand%2Capp.kubernetes.io%2Fcomponent%3Dservice";

type Chunks = Pin<Box<dyn Stream<Item = Result<Frame<bytes::Bytes>, Infallible>> + Send>>;
type FakeBody = StreamBody<Chunks>;

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// What the fake cluster holds.
#[derive(Default)]
struct State {
    log: Vec<Recorded>,
    pods: Vec<Value>,
    nodes: Option<Vec<Value>>,
    /// pod name -> the hash its shim runs.
    shim_hash: HashMap<String, String>,
    /// Event streams for the next watch requests, in order.
    watches: Vec<mpsc::UnboundedReceiver<Value>>,
    /// An answer for the next proxy PUT instead of the shim's success.
    put_answer: Option<(u16, Value)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log(&self) -> Vec<Recorded> {
        self.state().log.clone()
    }

    fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    fn api(&self) -> KubeApi {
        KubeApi::new(self.client(), NS, "stand")
    }

    /// A client whose transport fails (as a refused connection does) while
    /// `refusing` is set, counting the attempts, and otherwise reaches the fake.
    fn refusing_client(&self, refusing: Arc<std::sync::atomic::AtomicBool>, attempts: Arc<std::sync::atomic::AtomicUsize>) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            let refusing = refusing.clone();
            let attempts = attempts.clone();
            async move {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if refusing.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)"));
                }
                Ok(fake.handle(req).await)
            }
        });
        kube::Client::new(service, "default")
    }

    /// A watch the next watch request will get; send events into it.
    fn next_watch(&self) -> mpsc::UnboundedSender<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().watches.push(rx);
        tx
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<FakeBody> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        let uri = parts.uri.to_string();
        let method = parts.method.to_string();
        self.state().log.push(Recorded { method: method.clone(), uri: uri.clone(), headers: parts.headers.clone(), body: body.clone() });
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or("").to_owned();

        if path == "/api/v1/nodes" && method == "GET" {
            return match self.state().nodes.clone() {
                Some(items) => ok(json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "77"}, "items": items})),
                None => status(403, "Forbidden", "nodes is forbidden: User \"system:serviceaccount:stand:stand-devd\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"),
            };
        }
        if path == format!("/api/v1/namespaces/{NS}/pods") && method == "GET" {
            if query.contains("watch=true") {
                let rx = {
                    let mut s = self.state();
                    if s.watches.is_empty() { None } else { Some(s.watches.remove(0)) }
                };
                let Some(rx) = rx else {
                    // No more scripted watches: one that never sends anything.
                    return stream_response(Box::pin(futures_util::stream::pending()));
                };
                let lines = futures_util::stream::unfold(rx, |mut rx| async move {
                    let event = rx.recv().await?;
                    let mut line = serde_json::to_vec(&event).expect("json");
                    line.push(b'\n');
                    Some((Ok(Frame::data(bytes::Bytes::from(line))), rx))
                });
                return stream_response(Box::pin(lines));
            }
            let items = self.state().pods.clone();
            return ok(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}, "items": items}));
        }
        if path == format!("/api/v1/namespaces/{NS}/secrets/stand-devsync") && method == "GET" {
            let mut secret = Secret::default();
            secret.metadata.name = Some("stand-devsync".into());
            secret.metadata.namespace = Some(NS.into());
            secret.type_ = Some("Opaque".into());
            secret.data = Some(BTreeMap::from([("token".to_owned(), ByteString(TOKEN.as_bytes().to_vec()))]));
            let mut v = serde_json::to_value(&secret).expect("json");
            v["kind"] = json!("Secret");
            v["apiVersion"] = json!("v1");
            return ok(v);
        }
        let prefix = format!("/api/v1/namespaces/{NS}/pods/");
        if let Some(rest) = path.strip_prefix(&prefix) {
            if let Some((pod_port, sub)) = rest.split_once("/proxy") {
                let (pod, port) = pod_port.split_once(':').unwrap_or((pod_port, ""));
                return self.proxy(pod, port, &method, sub, &parts.headers, &body);
            }
        }
        status(404, "NotFound", &format!("the server could not find the requested resource ({method} {uri})"))
    }

    /// The pod proxy: the shim (port 7070) and the service (5001) of known pods.
    fn proxy(&self, pod: &str, port: &str, method: &str, sub: &str, headers: &HeaderMap, body: &[u8]) -> Response<FakeBody> {
        let known = self.state().pods.iter().any(|p| p["metadata"]["name"] == pod);
        if !known {
            return status(404, "NotFound", &format!("pods \"{pod}\" not found"));
        }
        if port == "5001" && sub == "/health" {
            return ok(json!({"status": "ok"}));
        }
        if port != "7070" {
            return status(503, "ServiceUnavailable", &format!("error trying to reach service: dial tcp 10.244.0.7:{port}: connect: connection refused"));
        }
        if headers.get("x-stand-token").and_then(|v| v.to_str().ok()) != Some(TOKEN) {
            return answer(401, json!({"error": {"code": "unauthorized", "message": "missing bearer token (Authorization: Bearer <token>)"}}));
        }
        match (method, sub) {
            ("GET", "/v1/status") => {
                let hash = self.state().shim_hash.get(pod).cloned();
                ok(json!({"binary": "/app/service1", "sha256": hash, "pid": 7, "restarts": 0, "started_at": "2026-05-01T10:00:00.000Z", "last_exit": null, "last_rollback": null}))
            }
            ("PUT", "/v1/binary") => {
                if let Some((code, value)) = self.state().put_answer.take() {
                    return answer(code, value);
                }
                let sha = hex::encode(Sha256::digest(body));
                if headers.get("x-stand-sha256").and_then(|v| v.to_str().ok()) != Some(sha.as_str()) {
                    return answer(422, json!({"error": {"code": "hash_mismatch", "message": "body does not hash to X-Stand-Sha256"}}));
                }
                self.state().shim_hash.insert(pod.to_owned(), sha.clone());
                ok(json!({"sha256": sha, "pid": 8, "restarts": 1}))
            }
            ("POST", "/v1/restart") => {
                let hash = self.state().shim_hash.get(pod).cloned();
                ok(json!({"sha256": hash, "pid": 9, "restarts": 2}))
            }
            _ => answer(404, json!({"error": {"code": "not_found", "message": "no such endpoint"}})),
        }
    }
}

fn stream_response(chunks: Chunks) -> Response<FakeBody> {
    let mut r = Response::new(StreamBody::new(chunks));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn answer(code: u16, value: Value) -> Response<FakeBody> {
    let bytes = bytes::Bytes::from(serde_json::to_vec(&value).expect("json"));
    let mut r = stream_response(Box::pin(futures_util::stream::once(async move { Ok(Frame::data(bytes)) })));
    *r.status_mut() = StatusCode::from_u16(code).expect("status code");
    r
}

fn ok(value: Value) -> Response<FakeBody> {
    answer(200, value)
}

/// A `metav1.Status` error as the API server sends it.
fn status(code: u16, reason: &str, message: &str) -> Response<FakeBody> {
    answer(code, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}))
}

fn node(name: &str, arch_label: Option<&str>, info_arch: &str) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"});
    if let Some(a) = arch_label {
        labels["kubernetes.io/arch"] = json!(a);
    }
    json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "5", "labels": labels},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"nodeInfo": {
            "machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
            "containerRuntimeVersion": "containerd://1.7.15", "kubeletVersion": "v1.33.1", "kubeProxyVersion": "v1.33.1",
            "operatingSystem": "linux", "architecture": info_arch
        }}
    })
}

/// A service pod as the chart renders it (devSync on), in `phase`.
fn pod(name: &str, uid: &str, phase: &str, ready: bool, restarts: i32) -> Value {
    json!({
        "metadata": {
            "name": name, "namespace": NS, "uid": uid, "resourceVersion": "90",
            "generateName": "service1-7d9f8b6c5-",
            "creationTimestamp": "2026-05-01T10:00:00Z",
            "labels": {
                "app.kubernetes.io/name": "service1", "app.kubernetes.io/instance": "stand",
                "app.kubernetes.io/component": "service", "app.kubernetes.io/part-of": "stand",
                "app.kubernetes.io/managed-by": "Helm", "pod-template-hash": "7d9f8b6c5"
            }
        },
        "spec": {
            "nodeName": "kind-control-plane",
            "containers": [{
                "name": "service1", "image": "localhost:5001/stand/service1:dev",
                "ports": [
                    {"name": "http", "containerPort": 5001, "protocol": "TCP"},
                    {"name": "shim", "containerPort": 7070, "protocol": "TCP"}
                ],
                "env": [
                    {"name": "STAND_SHIM_PORT", "value": "7070"},
                    {"name": "STAND_SHIM_TOKEN", "valueFrom": {"secretKeyRef": {"name": "stand-devsync", "key": "token"}}}
                ]
            }]
        },
        "status": {
            "phase": phase,
            "podIP": "10.244.0.7",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": if ready { "True" } else { "False" }},
                {"type": "ContainersReady", "status": if ready { "True" } else { "False" }},
                {"type": "PodScheduled", "status": "True"}
            ],
            "containerStatuses": [{
                "name": "service1", "ready": ready, "restartCount": restarts, "started": phase == "Running",
                "image": "localhost:5001/stand/service1:dev", "imageID": "sha256:abc",
                "state": {"running": {"startedAt": "2026-05-01T10:00:05Z"}}
            }]
        }
    })
}

fn terminating(mut p: Value) -> Value {
    p["metadata"]["deletionTimestamp"] = json!("2026-05-01T10:05:00Z");
    p
}

#[tokio::test]
async fn node_architecture_picks_the_build_target() {
    for (nodes, want) in [
        (vec![node("n1", Some("amd64"), "amd64"), node("n2", Some("amd64"), "amd64")], "x86_64-unknown-linux-gnu"),
        (vec![node("pi", Some("arm64"), "arm64")], "aarch64-unknown-linux-gnu"),
        // No label: status.nodeInfo.architecture.
        (vec![node("old", None, "arm64")], "aarch64-unknown-linux-gnu"),
    ] {
        let fake = Fake::default();
        fake.state().nodes = Some(nodes);
        assert_eq!(fake.api().build_triple().await.expect("one arch"), want);
        let log = fake.log();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].method.as_str(), log[0].uri.as_str()), ("GET", "/api/v1/nodes?"));
        assert!(log[0].body.is_empty());
    }

    let fake = Fake::default();
    fake.state().nodes = Some(vec![node("a1", Some("amd64"), "amd64"), node("r1", Some("arm64"), "arm64"), node("r2", None, "arm64")]);
    let err = fake.api().build_triple().await.expect_err("mixed");
    assert!(matches!(err, KubeError::MixedArch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("the nodes have mixed architectures: amd64 (a1), arm64 (r1, r2);"), "{text}");

    // A Role cannot grant nodes: 403, told apart so that the caller keeps the plan's triple.
    let fake = Fake::default();
    let err = fake.api().build_triple().await.expect_err("forbidden");
    assert!(err.is_forbidden(), "{err:?}");
    assert!(err.to_string().contains("cannot list resource \"nodes\""), "{err}");
}

#[tokio::test]
async fn running_pods_of_a_service_are_found_by_the_chart_labels() {
    let fake = Fake::default();
    fake.state().pods = vec![
        pod("service1-7d9f8b6c5-bbbbb", "u2", "Running", false, 3), // crash-looping: still synced
        pod("service1-7d9f8b6c5-aaaaa", "u1", "Running", true, 0),
        pod("service1-7d9f8b6c5-ccccc", "u3", "Pending", false, 0),
        terminating(pod("service1-6c4d7f9b8-ddddd", "u4", "Running", true, 0)),
    ];
    let pods = fake.api().running_pods("service1").await.expect("lists");
    let names: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["service1-7d9f8b6c5-aaaaa", "service1-7d9f8b6c5-bbbbb"]);
    let a = &pods[0];
    assert_eq!((a.service.as_str(), a.shim_port, a.service_port, a.ready, a.restart_count), ("service1", Some(7070), Some(5001), true, 0));
    assert_eq!((a.token.secret.as_str(), a.token.key.as_str()), ("stand-devsync", "token"));
    assert_eq!(a.node.as_deref(), Some("kind-control-plane"));
    assert_eq!((pods[1].ready, pods[1].restart_count), (false, 3));

    let log = fake.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].uri, format!("/api/v1/namespaces/{NS}/pods?&{SELECTOR_Q}"));
}

async fn instance_of(fake: &Fake, target: &KubeTarget) -> devd::runtime::Instance {
    fake.state().pods = vec![pod("service1-7d9f8b6c5-aaaaa", "u1", "Running", true, 0)];
    let mut instances = target.instances("service1").await.expect("instances");
    assert_eq!(instances.len(), 1);
    instances.remove(0)
}

#[tokio::test]
async fn delivers_the_artifact_to_the_shim_through_the_pod_proxy() {
    let fake = Fake::default();
    let target = KubeTarget::new(fake.api());
    let instance = instance_of(&fake, &target).await;
    assert_eq!(instance.id, "service1-7d9f8b6c5-aaaaa");
    assert_eq!(instance.shim_url, "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:7070/proxy");
    assert_eq!(instance.service_url, "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:5001/proxy");
    assert_eq!(instance.shim_token, TOKEN, "from the Secret's base64 data");

    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("service1");
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&artifact, &binary).expect("write");
    let sha = hex::encode(Sha256::digest(&binary));

    let reply = target.deliver(&instance, &artifact, &sha).await.expect("delivered");
    assert_eq!((reply.sha256.as_deref(), reply.pid, reply.restarts), (Some(sha.as_str()), 8, 1));
    let status = target.shim_status(&instance).await.expect("status");
    assert_eq!(status.sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(target.health(&instance).await.health, devd::status::Health::Ok);
    let restarted = target.restart(&instance).await.expect("restart");
    assert_eq!(restarted.pid, 9);

    let log = fake.log();
    let calls: Vec<(&str, &str)> = log.iter().map(|r| (r.method.as_str(), r.uri.as_str())).collect();
    assert_eq!(
        calls,
        [
            ("GET", format!("/api/v1/namespaces/{NS}/pods?&{SELECTOR_Q}").as_str()),
            ("GET", "/api/v1/namespaces/stand/secrets/stand-devsync"),
            ("PUT", "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:7070/proxy/v1/binary"),
            ("GET", "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:7070/proxy/v1/status"),
            ("GET", "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:5001/proxy/health"),
            ("POST", "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:7070/proxy/v1/restart"),
        ]
    );
    let put = &log[2];
    assert_eq!(put.body, binary, "the body is the artifact's bytes");
    assert_eq!(put.headers.get("x-stand-sha256").and_then(|v| v.to_str().ok()), Some(sha.as_str()));
    assert_eq!(put.headers.get("x-stand-token").and_then(|v| v.to_str().ok()), Some(TOKEN));
    assert_eq!(put.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/octet-stream"));
    assert!(put.headers.get("authorization").is_none(), "Authorization belongs to the API server");
    for r in &log[3..] {
        assert_eq!(r.headers.get("x-stand-token").and_then(|v| v.to_str().ok()), if r.uri.ends_with("/health") { None } else { Some(TOKEN) });
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn shim_and_api_server_errors_come_through_as_they_are() {
    let fake = Fake::default();
    let target = KubeTarget::new(fake.api());
    let instance = instance_of(&fake, &target).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("service1");
    std::fs::write(&artifact, b"new binary").expect("write");
    let sha = hex::encode(Sha256::digest(b"new binary"));

    // The shim rolled the new binary back (409 rolled_back): a rollback, with its reason.
    fake.state().put_answer = Some((409, json!({"error": {"code": "rolled_back", "message": "exit code 3 within 2 s: panicked at src/main.rs:4"}})));
    match target.deliver(&instance, &artifact, &sha).await {
        Err(ShimError::RolledBack { reason }) => assert!(reason.contains("panicked at src/main.rs:4"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A hash the shim did not get: its 422 and code.
    match target.deliver(&instance, &artifact, &"0".repeat(64)).await {
        Err(ShimError::Refused { status: 422, code, .. }) => assert_eq!(code, "hash_mismatch"),
        other => panic!("{other:?}"),
    }
    // A wrong token: the shim's 401.
    let mut wrong = instance.clone();
    wrong.shim_token = "nope".into();
    match target.shim_status(&wrong).await {
        Err(ShimError::Refused { status: 401, code, .. }) => assert_eq!(code, "unauthorized"),
        other => panic!("{other:?}"),
    }
    // The API server's own answers: nothing listens on the port (503), the pod is gone (404).
    let mut no_shim = instance.clone();
    no_shim.shim_url = "/api/v1/namespaces/stand/pods/service1-7d9f8b6c5-aaaaa:7071/proxy".into();
    match target.shim_status(&no_shim).await {
        Err(ShimError::Refused { status: 503, code, message, .. }) => {
            assert_eq!(code, "kubernetes_api");
            assert!(message.contains("connection refused"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    fake.state().pods.clear();
    match target.restart(&instance).await {
        Err(ShimError::Refused { status: 404, message, .. }) => assert!(message.contains("pods \"service1-7d9f8b6c5-aaaaa\" not found"), "{message}"),
        other => panic!("{other:?}"),
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn puts_to(fake: &Fake, pod: &str) -> Vec<Recorded> {
    let path = format!("/api/v1/namespaces/stand/pods/{pod}:7070/proxy/v1/binary");
    fake.log().into_iter().filter(|r| r.method == "PUT" && r.uri == path).collect()
}

/// The whole path: the pod watch sees the service container restart (restartCount
/// 0 → 1; its shim now runs the image's binary again), and the daemon's delivery task
/// re-sends the current artifact at once, well before its next reconcile tick. Then
/// a pod of a new ReplicaSet appears (a reschedule) and gets it too.
#[tokio::test]
async fn a_restarted_or_rescheduled_pod_is_resynced_from_the_watch() {
    let fake = Fake::default();
    let a = "service1-7d9f8b6c5-aaaaa";
    fake.state().pods = vec![pod(a, "u1", "Running", true, 0)];
    fake.state().shim_hash.insert(a.into(), "image-hash".into());
    let events = fake.next_watch();

    let target = Arc::new(KubeTarget::new(fake.api()));
    let (changes_tx, mut changes) = mpsc::unbounded_channel();
    let watcher = target.clone();
    let watch_task = tokio::spawn(async move { watcher.watch(changes_tx).await });
    assert_eq!(
        changes.recv().await,
        Some(PodChange { service: "service1".into(), pod: a.into(), reason: Some(SyncReason::NewPod) })
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let artifact = dir.path().join("service1");
    std::fs::write(&artifact, b"the current artifact").expect("write");
    let sha = hex::encode(Sha256::digest(b"the current artifact"));
    let hub = StatusHub::new(StandStatus {
        services: vec![ServiceStatus { name: "service1".into(), ..ServiceStatus::default() }],
        ..StandStatus::default()
    });
    // A tick far away: only the watch can make the re-sync happen within the test.
    let syncer = deliver::spawn("service1".into(), target.clone(), hub.clone(), Duration::from_secs(3600), tokio::sync::mpsc::unbounded_channel().0);
    syncer.deliver(Desired { sha256: sha.clone(), path: artifact.clone(), libs: Vec::new(), first_event_at: None });
    until("the first delivery", || puts_to(&fake, a).len() == 1).await;
    let runs = |pod: &str| {
        let hashes: Vec<Option<String>> = hub
            .service("service1")
            .map(|s| s.instances.iter().filter(|i| i.id == pod).map(|i| i.hash.clone()).collect())
            .unwrap_or_default();
        hashes == [Some(sha.clone())]
    };
    until("the first sync to finish", || runs(a)).await;

    // The container restarts from its image.
    fake.state().shim_hash.insert(a.into(), "image-hash".into());
    let mut restarted = pod(a, "u1", "Running", true, 1);
    restarted["metadata"]["resourceVersion"] = json!("101");
    events.send(json!({"type": "MODIFIED", "object": restarted})).expect("watch open");
    assert_eq!(
        changes.recv().await,
        Some(PodChange { service: "service1".into(), pod: a.into(), reason: Some(SyncReason::Restarted) })
    );
    until("the re-sync of the restarted pod", || puts_to(&fake, a).len() == 2).await;
    until("the re-sync to finish", || runs(a)).await;
    assert_eq!(puts_to(&fake, a)[1].body, b"the current artifact");

    // A rescheduled pod: a new name, Pending first (not synced), then Running.
    let b = "service1-6c4d7f9b8-bbbbb";
    fake.state().shim_hash.insert(b.into(), "image-hash".into());
    fake.state().pods.push(pod(b, "u9", "Pending", false, 0));
    events.send(json!({"type": "ADDED", "object": pod(b, "u9", "Pending", false, 0)})).expect("watch open");
    fake.state().pods[1] = pod(b, "u9", "Running", false, 0);
    events.send(json!({"type": "MODIFIED", "object": pod(b, "u9", "Running", false, 0)})).expect("watch open");
    assert_eq!(
        changes.recv().await,
        Some(PodChange { service: "service1".into(), pod: b.into(), reason: Some(SyncReason::NewPod) })
    );
    until("the sync of the new pod", || puts_to(&fake, b).len() == 1).await;
    assert_eq!(puts_to(&fake, a).len(), 2, "the other pod runs the artifact already: not sent again");

    // The old pod goes away.
    events.send(json!({"type": "DELETED", "object": terminating(pod(a, "u1", "Running", true, 1))})).expect("watch open");
    assert_eq!(changes.recv().await, Some(PodChange { service: "service1".into(), pod: a.into(), reason: None }));

    // One list, then one watch from the list's resourceVersion, with the release's labels.
    let log = fake.log();
    let pod_calls: Vec<&str> = log
        .iter()
        .filter(|r| r.uri.starts_with("/api/v1/namespaces/stand/pods?"))
        .map(|r| r.uri.as_str())
        .collect();
    assert_eq!(
        pod_calls,
        [
            // kube's watcher lists in pages of 500 (client-go's default).
            format!("/api/v1/namespaces/stand/pods?&{RELEASE_SELECTOR_Q}&limit=500").as_str(),
            format!("/api/v1/namespaces/stand/pods?&watch=true&timeoutSeconds=290&{RELEASE_SELECTOR_Q}&allowWatchBookmarks=true&resourceVersion=100").as_str(),
        ],
        "instances come from the watch's cache, not from a list per reconcile"
    );
    assert!(log.iter().filter(|r| r.uri.starts_with("/api/v1/namespaces/stand/pods?")).all(|r| r.method == "GET" && r.body.is_empty()));
    watch_task.abort();
    drop(syncer);
}

/// The pod watch against an API server that refuses connections, in tokio's paused
/// time: it retries with a growing backoff (not every 0.8 s: kube's watcher yields
/// `Init` before each attempt, which would reset kube's default backoff), the
/// reachability changes once (one line), the target answers `Unreachable` without a
/// request, and once the server answers, the watch lists within the backoff's cap.
#[tokio::test(start_paused = true)]
async fn the_pod_watch_backs_off_while_refused_and_recovers() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let fake = Fake::default();
    let refusing = Arc::new(AtomicBool::new(true));
    let attempts = Arc::new(AtomicUsize::new(0));
    let cluster = Cluster { context: "kind-stand".into(), server: "https://127.0.0.1:6443".into() };
    let api = KubeApi::new(fake.refusing_client(refusing.clone(), attempts.clone()), NS, "stand").with_cluster(cluster);
    let target = Arc::new(KubeTarget::new(api));
    let mut reach = target.reachability().subscribe();
    let (changes_tx, _changes) = mpsc::unbounded_channel();
    let watcher = target.clone();
    let watch_task = tokio::spawn(async move { watcher.watch(changes_tx).await });

    reach.changed().await.expect("a first state");
    let Reach::Unreachable { reason, hint } = reach.borrow_and_update().clone() else { panic!("{:?}", *reach.borrow()) };
    assert!(reason.contains("Connection refused"), "{reason}");
    assert!(hint.contains("start the cluster") && hint.contains("devd up --target docker"), "{hint}");
    let err = target.instances("service1").await.expect_err("unreachable");
    assert!(matches!(err, devd::runtime::TargetError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("https://127.0.0.1:6443 (context kind-stand)"), "{err}");

    // A minute of refused connections (virtual time).
    let before = attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let tried = attempts.load(Ordering::SeqCst) - before;
    eprintln!("{tried} attempts in 60 s while refused");
    assert!((3..=10).contains(&tried), "{tried} attempts in 60 s (0.8 s doubling to 30 s, plus jitter: 5 to 7)");
    assert!(!reach.has_changed().expect("open"), "the same failure again is no new state");

    // The server answers: the next attempt lists, within one backoff interval (at most
    // 30 s plus as much again of jitter).
    refusing.store(false, Ordering::SeqCst);
    let up_at = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(61), reach.wait_for(|r| *r == Reach::Reachable)).await.expect("recovers").expect("open");
    assert!(up_at.elapsed() <= Duration::from_secs(61));
    assert!(target.instances("service1").await.expect("lists").is_empty());
    watch_task.abort();
}

/// A restart asked for while the service has no running pod says so in the status
/// (event `restart_failed`) instead of doing nothing; so does one while the API server
/// does not answer.
#[tokio::test]
async fn a_restart_without_pods_or_without_a_cluster_fails_visibly() {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let fake = Fake::default();
    let refusing = Arc::new(AtomicBool::new(false));
    let client = fake.refusing_client(refusing.clone(), Arc::new(AtomicUsize::new(0)));
    let target = Arc::new(KubeTarget::new(KubeApi::new(client, NS, "stand")));
    let hub = StatusHub::new(StandStatus {
        services: vec![ServiceStatus { name: "service1".into(), ..ServiceStatus::default() }],
        ..StandStatus::default()
    });
    let syncer = deliver::spawn("service1".into(), target.clone(), hub.clone(), Duration::from_secs(3600), tokio::sync::mpsc::unbounded_channel().0);
    let failures = |hub: &StatusHub| -> Vec<String> {
        let events = hub.subscribe(0).0;
        events.into_iter().filter_map(|e| if let EventBody::RestartFailed(failed) = e.body { Some(failed.error) } else { None }).collect()
    };
    syncer.restart();
    until("a restart_failed event", || failures(&hub).len() == 1).await;
    assert!(failures(&hub)[0].contains("no running instances"), "{:?}", failures(&hub));

    refusing.store(true, std::sync::atomic::Ordering::SeqCst);
    target.reachability().set(Reach::Unreachable { reason: "Connection refused".into(), hint: "start the cluster" });
    syncer.restart();
    until("a second restart_failed event", || failures(&hub).len() == 2).await;
    assert!(failures(&hub)[1].contains("kubernetes target unreachable") && failures(&hub)[1].contains("Connection refused"), "{:?}", failures(&hub));
}

// ---- no cluster: `devd up` against an API server that refuses connections, then answers ----

const DEVD: &str = env!("CARGO_BIN_EXE_devd");

/// Serves the scripted API server over real HTTP on `listener` (for a real devd
/// process: its kubeconfig names this address).
async fn serve(fake: Fake, listener: tokio::net::TcpListener) {
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let fake = fake.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            let response = fake.handle(Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()))).await;
            response.map(axum::body::Body::new)
        }
    });
    axum::serve(listener, app).await.expect("the scripted API server serves");
}

const NO_CLUSTER_STAND: &str = r#"
[stand]
name = "stand"
chart = "chart"
release = "stand"
default_env = "local"

[services.svc1]
package = "svc1"
path = "services/svc1"
port = 6001
image = "fx/svc1"

[services.svc2]
package = "svc2"
path = "services/svc2"
port = 6002
image = "fx/svc2"

[env.local]
services = ["svc1", "svc2"]
target = "kubernetes"
values = ["chart/values-local.yaml"]
live_sync = true
namespace = "stand"
"#;

fn http_get(url: &str) -> (u16, Value) {
    let response = reqwest::blocking::get(url).expect("GET devd");
    let code = response.status().as_u16();
    (code, response.json().unwrap_or(Value::Null))
}

/// With the kubeconfig's server refusing connections (a closed loopback port), `devd
/// up --no-deploy` builds, prints one line that names the context and the server and
/// says what to do, stays quiet while it retries with backoff (no kube_client errors,
/// no per-service warnings), and its readiness answers 503 with that reason (also in
/// `devd status`). Once the scripted API server listens on that port, devd finds it
/// within its backoff, says so in one line, and is ready.
#[test]
fn without_a_cluster_devd_says_so_once_and_recovers_when_it_answers() {
    let fx = fixtures::workspace();
    fx.write("stand.toml", NO_CLUSTER_STAND);
    fx.write("chart/values-local.yaml", "services: {}\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let server = format!("http://127.0.0.1:{port}");
    let kubeconfig = fx.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kind-scripted\nclusters:\n- name: scripted\n  cluster:\n    server: {server}\n\
             users:\n- name: dev\n  user:\n    token: dev-token\ncontexts:\n- name: kind-scripted\n  context:\n    cluster: scripted\n    user: dev\n    namespace: stand\n"
        ),
    );
    let log_path = fx.path("devd.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut child = std::process::Command::new(DEVD)
        .args(["up", "--env", "local", "--target", "kubernetes", "--no-deploy", "--port", "0"])
        .current_dir(&fx.root)
        .env("KUBECONFIG", &kubeconfig)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start devd");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = child.stdin.take();
    let _child = Kill(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines_with = |needle: &str| log().lines().filter(|l| l.contains(needle)).count();

    let url: String = fixtures::poll_until(Duration::from_secs(30), || {
        let info: Value = serde_json::from_str(&std::fs::read_to_string(fx.path(".stand/devd.json")).ok()?).ok()?;
        info["url"].as_str().map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("devd did not come up:\n{}", log()));

    // Readiness fails with the reason, as soon as the first attempt failed.
    let (code, body) = fixtures::poll_until(Duration::from_secs(30), || {
        let (code, body) = http_get(&format!("{url}/api/v1/ready"));
        body["reason"].as_str().is_some_and(|r| r.contains("cannot reach")).then_some((code, body))
    })
    .unwrap_or_else(|| panic!("no unreachable readiness:\n{}", log()));
    assert_eq!(code, 503, "{body}");
    let reason = body["reason"].as_str().expect("reason");
    for part in [server.as_str(), "context kind-scripted", "Connection refused", "start the cluster", "devd up --target docker"] {
        assert!(reason.contains(part), "{part:?} not in the reason {reason:?}");
    }
    let (code, one) = http_get(&format!("{url}/api/v1/services/svc1/ready"));
    assert_eq!((code, one["reason"].as_str()), (503, Some(reason)), "a service is not ready either");

    // The builds finish (the delivery tasks start), then a window of retries.
    let built = fixtures::poll_until(Duration::from_secs(180), || {
        let (_, status) = http_get(&format!("{url}/api/v1/status"));
        let services = status["services"].as_array()?.clone();
        services.iter().all(|s| s["build"]["state"] == "ok").then_some(status)
    })
    .unwrap_or_else(|| panic!("the services did not build:\n{}", log()));
    assert_eq!(built["target_state"]["state"], "unreachable", "{built:#}");
    assert_eq!(built["target"], "kubernetes", "the target's name stays a string");
    let before = log().lines().count();
    let window = Duration::from_secs(10);
    std::thread::sleep(window); // an observation window, not a wait for something
    let during = log().lines().count() - before;
    assert!(during <= 1, "{during} lines in {window:?} of retries:\n{}", log());

    let table = std::process::Command::new(DEVD).arg("status").current_dir(&fx.root).output().expect("devd status");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains(&format!("target kubernetes: UNREACHABLE: {reason}")), "{table}");
    let json = std::process::Command::new(DEVD).args(["status", "--json"]).current_dir(&fx.root).output().expect("devd status --json");
    let json: Value = serde_json::from_slice(&json.stdout).expect("status JSON");
    assert_eq!((json["target_state"]["state"].as_str(), json["target_state"]["reason"].as_str()), (Some("unreachable"), Some(reason)));

    // The API server comes up on that port.
    let fake = Fake::default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .expect("the scripted API server binds the kubeconfig's port");
    runtime.spawn(serve(fake.clone(), listener));
    let up_at = Instant::now();
    fixtures::poll_until(Duration::from_secs(90), || (http_get(&format!("{url}/api/v1/ready")).0 == 200).then_some(()))
        .unwrap_or_else(|| panic!("devd did not recover:\n{}\nreadiness: {:?}", log(), http_get(&format!("{url}/api/v1/ready"))));
    let recovered_in = up_at.elapsed();
    eprintln!("recovered {recovered_in:?} after the API server came up");
    assert!(recovered_in < Duration::from_secs(61), "one backoff interval is at most 30 s plus 30 s of jitter: {recovered_in:?}");
    assert_eq!(http_get(&format!("{url}/api/v1/status")).1["target_state"]["state"], "reachable");
    fixtures::poll_until(Duration::from_secs(10), || (lines_with("answers again") == 1).then_some(()))
        .unwrap_or_else(|| panic!("no recovery line:\n{}", log()));

    // What was logged in all: one line per state change, nothing of kube's own.
    let text = log();
    eprintln!("devd's output:\n{text}");
    assert_eq!(lines_with("cannot reach the API server"), 1, "{text}");
    let reach_line = text.lines().find(|l| l.contains("cannot reach the API server")).expect("the line");
    assert!(reach_line.starts_with("devd: kubernetes: cannot reach the API server") && reach_line.contains("context kind-scripted"), "{reach_line}");
    assert_eq!(lines_with("kube_client"), 0, "{text}");
    assert_eq!(lines_with("kube_runtime"), 0, "{text}");
    assert_eq!(lines_with("cannot list instances"), 0, "{text}");
    // Progress lines start with the time (`01:51:24 svc1: built in 715 ms`).
    let progress = |l: &str| l.split(' ').next().is_some_and(|t| t.len() == 8 && t.chars().filter(|c| *c == ':').count() == 2);
    let (builds, own): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| progress(l));
    assert!(own.len() <= 3 && builds.len() <= 4, "devd up printed more than its start, the two state changes and the builds:\n{text}");

    // It asked the scripted server as the real one is asked: the pods of the release,
    // listed in pages, then watched from the list's resourceVersion.
    let pod_calls: Vec<String> = fake
        .log()
        .iter()
        .filter(|r| r.uri.starts_with("/api/v1/namespaces/stand/pods?"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .collect();
    assert_eq!(
        pod_calls[..2],
        [
            format!("GET /api/v1/namespaces/stand/pods?&{RELEASE_SELECTOR_Q}&limit=500"),
            format!("GET /api/v1/namespaces/stand/pods?&watch=true&timeoutSeconds=290&{RELEASE_SELECTOR_Q}&allowWatchBookmarks=true&resourceVersion=100"),
        ]
    );
    assert!(fake.log().iter().all(|r| r.body.is_empty() && r.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer dev-token")));
}

/// An artifact whose hash the instance already runs (an edit that was undone, a
/// rebuild that produced the same bytes) is not delivered: no upload, so no restart;
/// the event says why. A different hash is delivered as usual.
#[tokio::test]
async fn an_artifact_the_instance_already_runs_is_not_delivered() {
    let fake = Fake::default();
    let a = "service1-7d9f8b6c5-aaaaa";
    fake.state().pods = vec![pod(a, "u1", "Running", true, 0)];
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        (path, hex::encode(Sha256::digest(bytes)))
    };
    let (same, same_sha) = write("same", b"the binary the pod runs");
    let (new, new_sha) = write("new", b"an edited binary");
    fake.state().shim_hash.insert(a.into(), same_sha.clone());
    let hub = StatusHub::new(StandStatus {
        services: vec![ServiceStatus { name: "service1".into(), ..ServiceStatus::default() }],
        ..StandStatus::default()
    });
    let target = Arc::new(KubeTarget::new(fake.api()));
    let syncer = deliver::spawn("service1".into(), target, hub.clone(), Duration::from_secs(3600), tokio::sync::mpsc::unbounded_channel().0);
    let bodies = |hub: &StatusHub| -> Vec<EventBody> { hub.subscribe(0).0.into_iter().map(|e| e.body).collect() };
    let skipped = |hub: &StatusHub| -> Vec<DeliverySkipped> {
        bodies(hub).into_iter().filter_map(|b| if let EventBody::DeliverySkipped(s) = b { Some(s) } else { None }).collect()
    };

    syncer.deliver(Desired { sha256: same_sha.clone(), path: same.clone(), libs: Vec::new(), first_event_at: None });
    until("the skipped delivery", || !skipped(&hub).is_empty()).await;
    assert!(puts_to(&fake, a).is_empty(), "nothing uploaded, so nothing restarted");
    let detail = skipped(&hub).into_iter().next().expect("event");
    assert_eq!(detail, DeliverySkipped { instances: 1, reason: SkipReason::Unchanged, sha256: same_sha.clone() });
    let instance = hub.service("service1").expect("service").instances;
    assert_eq!(instance.len(), 1);
    assert_eq!(instance[0].hash.as_deref(), Some(same_sha.as_str()));
    assert!(instance[0].healthy);
    assert!(!bodies(&hub).iter().any(|b| matches!(b, EventBody::SyncStarted(_))), "{:?}", bodies(&hub));

    // Another hash goes out; the same one again (a rebuild with equal bytes) does not.
    syncer.deliver(Desired { sha256: new_sha.clone(), path: new.clone(), libs: Vec::new(), first_event_at: None });
    until("the delivery of the new hash", || bodies(&hub).iter().any(|b| matches!(b, EventBody::Synced(_)))).await;
    assert_eq!(puts_to(&fake, a).len(), 1);
    syncer.deliver(Desired { sha256: new_sha.clone(), path: new, libs: Vec::new(), first_event_at: None });
    until("the second skip", || skipped(&hub).len() == 2).await;
    assert_eq!(puts_to(&fake, a).len(), 1, "the same hash is not sent twice");
    drop(syncer);
}

/// A kubeconfig whose current context is `context`, its server at `server`.
fn kubeconfig_text(context: &str, server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {context}\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
         users:\n- name: dev\n  user:\n    token: dev-token\ncontexts:\n- name: {context}\n  context:\n    cluster: c\n    user: dev\n"
    )
}

/// `devd up --env local` (live sync: local clusters only) with the current context
/// `prod-eu` exits 2 naming the context, the environment and its allowed list, and not a
/// single connection reaches that context's server; `devd down` is refused the same way;
/// `devd context` gives the same verdict, and `--target docker` is not the cluster's
/// business.
#[test]
fn a_context_the_environment_does_not_allow_gets_no_request() {
    let fx = fixtures::workspace();
    fx.write("stand.toml", &NO_CLUSTER_STAND.replace("namespace = \"stand\"\n", ""));
    fx.write("chart/values-local.yaml", "services: {}\n");
    // The "production" API server: a loopback listener that counts connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.set_nonblocking(true).expect("nonblocking");
    let server = format!("https://{}", listener.local_addr().expect("addr"));
    let kubeconfig = fx.write("kubeconfig", &kubeconfig_text("prod-eu", &server));
    let devd = |args: &[&str]| {
        std::process::Command::new(DEVD)
            .args(args)
            .current_dir(&fx.root)
            .env("KUBECONFIG", &kubeconfig)
            .env("CARGO_TARGET_DIR", fx.path("target"))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run devd")
    };
    for up in [
        &["up", "--env", "local", "--port", "0"][..],
        &["up", "--env", "local", "--target", "kubernetes", "--no-deploy", "--port", "0"][..],
        &["down", "--env", "local"][..],
        &["down", "--env", "local", "--volumes", "--target", "kubernetes"][..],
    ] {
        let out = devd(up);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{up:?}: {stderr}");
        for part in ["env `local` may not deploy to kube context `prod-eu`", "kind-*, k3d-*, minikube", "[env.local] contexts", "Nothing was sent", "--target docker"] {
            assert!(stderr.contains(part), "{up:?}: {part:?} not in {stderr}");
        }
    }
    let out = devd(&["context", "--env", "local", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((verdict["context"].as_str(), verdict["allowed"].as_bool()), (Some("prod-eu"), Some(false)), "{verdict}");
    assert!(verdict["reason"].as_str().is_some_and(|r| r.contains("kind-*")), "{verdict}");
    let out = devd(&["context", "--env", "local", "--json", "kind-stand"]);
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((verdict["allowed"].as_bool(), verdict["reason"].as_str()), (Some(true), None), "{verdict}");
    assert_eq!(devd(&["context", "--env", "local"]).status.code(), Some(2), "refused without --json: exit 2");

    let mut connections = 0;
    while listener.accept().is_ok() {
        connections += 1;
    }
    assert_eq!(connections, 0, "no request may reach a context the environment does not allow");
}
