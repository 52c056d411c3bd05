//! What leaving an environment does to a cluster: `devd down` and `devd up --switch`
//! on the kubernetes target, with the real helm, against a scripted API server on
//! loopback.
//!
//! The scripted server holds objects by path, as the API server does: discovery
//! (`/api`, `/apis`, the group versions the chart uses), lists with label selectors
//! (`<Kind>List`), get, delete (one, or a collection by selector), and `Status` errors.
//! It is seeded with what `helm install` of an environment leaves: the objects of the
//! chart's manifest (real `helm template`), helm's release record (a Secret
//! `sh.helm.release.v1.<release>.v1` whose data is the release as base64 JSON, which
//! helm reads like its gzip form) and the PersistentVolumeClaims a StatefulSet's
//! `volumeClaimTemplates` create. Each test asserts the requests by method and path.
//! It serves no OpenAPI, which `helm install` needs for field validation: an install
//! stops there, after everything a switch removes.

mod fixtures;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};

const DEVD: &str = env!("CARGO_BIN_EXE_devd");
/// How long one devd command may take against the scripted server.
const DEVD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Resource (plural) → kind, for the API groups the chart uses.
const RESOURCES: &[(&str, &str, &str)] = &[
    ("v1", "pods", "Pod"),
    ("v1", "services", "Service"),
    ("v1", "secrets", "Secret"),
    ("v1", "configmaps", "ConfigMap"),
    ("v1", "serviceaccounts", "ServiceAccount"),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("v1", "namespaces", "Namespace"),
    ("apps/v1", "deployments", "Deployment"),
    ("apps/v1", "statefulsets", "StatefulSet"),
    ("rbac.authorization.k8s.io/v1", "roles", "Role"),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    query: String,
}

#[derive(Default)]
struct State {
    /// Collection path (`/api/v1/namespaces/stand-local/secrets`) → name → object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    log: Vec<Request>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_log(&self) -> Vec<Request> {
        std::mem::take(&mut self.state().log)
    }

    fn names(&self, collection: &str) -> Vec<String> {
        self.state().objects.get(collection).map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    /// Stores `object` where the API server would (its kind and namespace decide).
    fn put(&self, object: Value) -> String {
        let (group_version, kind) = (object["apiVersion"].as_str().expect("apiVersion"), object["kind"].as_str().expect("kind"));
        let resource = RESOURCES
            .iter()
            .find(|(gv, _, k)| *gv == group_version && *k == kind)
            .unwrap_or_else(|| panic!("the scripted server does not serve {group_version} {kind}"))
            .1;
        let prefix = if group_version == "v1" { "/api/v1".to_owned() } else { format!("/apis/{group_version}") };
        let namespace = object["metadata"]["namespace"].as_str().expect("namespaced object");
        let collection = format!("{prefix}/namespaces/{namespace}/{resource}");
        let name = object["metadata"]["name"].as_str().expect("name").to_owned();
        let path = format!("{collection}/{name}");
        self.state().objects.entry(collection).or_default().insert(name, object);
        path
    }

    async fn serve(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let fake = self.clone();
            async move { fake.handle(&method, &uri, &body) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn handle(&self, method: &Method, uri: &Uri, body: &[u8]) -> Response {
        // kube-rs writes `?&labelSelector=...`; the API server reads it as any other query.
        let (path, query) = (uri.path().to_owned(), uri.query().unwrap_or("").trim_start_matches('&').to_owned());
        self.state().log.push(Request { method: method.to_string(), path: path.clone(), query: query.clone() });
        if let Some(answer) = discovery(&path) {
            return ok(answer);
        }
        let Some((group_version, namespace, resource, name)) = parse(&path) else {
            return status(404, "NotFound", "the server could not find the requested resource");
        };
        let Some(&(_, _, kind)) = RESOURCES.iter().find(|(gv, r, _)| *gv == group_version && *r == resource) else {
            return status(404, "NotFound", "the server could not find the requested resource");
        };
        let collection = match &namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{resource}", prefix(&group_version)),
            None => format!("{}/{resource}", prefix(&group_version)),
        };
        let selector = selector(&query);
        let missing = format!("{resource} \"{}\" not found", name.clone().unwrap_or_default());
        let not_found = || status(404, "NotFound", &missing);
        let mut state = self.state();
        let objects = state.objects.entry(collection).or_default();
        match (method.as_str(), name) {
            ("GET", None) => {
                let items: Vec<Value> = objects.values().filter(|o| matches(o, &selector)).cloned().collect();
                ok(list(&group_version, kind, items))
            }
            ("DELETE", None) => {
                let names: Vec<String> = objects.iter().filter(|(_, o)| matches(o, &selector)).map(|(n, _)| n.clone()).collect();
                let items: Vec<Value> = names.iter().filter_map(|n| objects.remove(n)).collect();
                ok(list(&group_version, kind, items))
            }
            ("GET", Some(name)) => objects.get(&name).cloned().map_or_else(not_found, ok),
            ("DELETE", Some(name)) => objects.remove(&name).map_or_else(not_found, ok),
            // helm marks its record `uninstalling` (a protobuf body) before deleting it:
            // the stored object stands for the update.
            ("PUT", Some(name)) => objects.get(&name).cloned().map_or_else(not_found, ok),
            ("POST", None) => match serde_json::from_slice::<Value>(body) {
                Ok(object) => {
                    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                    objects.insert(name, object.clone());
                    (StatusCode::CREATED, axum::Json(object)).into_response()
                }
                Err(_) => status(415, "UnsupportedMediaType", "the scripted server takes JSON"),
            },
            _ => status(405, "MethodNotAllowed", &format!("{method} is not supported here")),
        }
    }
}

fn prefix(group_version: &str) -> String {
    if group_version == "v1" { "/api/v1".to_owned() } else { format!("/apis/{group_version}") }
}

/// `/api/v1[/namespaces/<ns>]/<resource>[/<name>]`, `/apis/<group>/<version>/...`.
fn parse(path: &str) -> Option<(String, Option<String>, String, Option<String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, resource, name @ ..] if name.len() <= 1 => {
            Some((group_version, Some((*ns).to_owned()), (*resource).to_owned(), name.first().map(|n| (*n).to_owned())))
        }
        [resource, name @ ..] if name.len() <= 1 => Some((group_version, None, (*resource).to_owned(), name.first().map(|n| (*n).to_owned()))),
        _ => None,
    }
}

fn discovery(path: &str) -> Option<Value> {
    let groups = ["apps/v1", "rbac.authorization.k8s.io/v1"];
    match path {
        "/version" => Some(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "platform": "linux/amd64"})),
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})),
        "/apis" => Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|gv| {
            let (group, version) = gv.split_once('/').expect("group/version");
            let v = json!({"groupVersion": gv, "version": version});
            json!({"name": group, "versions": [v.clone()], "preferredVersion": v})
        }).collect::<Vec<_>>()})),
        _ => {
            let group_version = path.strip_prefix("/api/").or_else(|| path.strip_prefix("/apis/"))?;
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|(gv, _, _)| *gv == group_version)
                .map(|(_, resource, kind)| {
                    json!({"name": resource, "singularName": kind.to_lowercase(), "namespaced": *resource != "namespaces", "kind": kind,
                           "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]})
                })
                .collect();
            (!resources.is_empty()).then(|| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}))
        }
    }
}

/// `labelSelector=a%3Db%2Cc%3Dd` → [(a, b), (c, d)] (equality terms: all this stand uses).
fn selector(query: &str) -> Vec<(String, String)> {
    let Some(raw) = query.split('&').find_map(|kv| kv.strip_prefix("labelSelector=")) else { return Vec::new() };
    let decoded = raw.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/");
    decoded.split(',').filter_map(|term| term.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn matches(object: &Value, selector: &[(String, String)]) -> bool {
    selector.iter().all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v))
}

fn list(group_version: &str, kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": group_version, "metadata": {"resourceVersion": "100"}, "items": items})
}

fn ok(value: Value) -> Response {
    axum::Json(value).into_response()
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).expect("status code"), axum::Json(body)).into_response()
}

/// What `helm install` of `env` leaves in the cluster: the manifest's objects (hooks
/// are not installed objects), helm's release record, and the claims of the databases'
/// StatefulSets. Returns the paths of the release's objects (record included).
fn install(fake: &Fake, root: &std::path::Path, env: &str) -> Vec<String> {
    let namespace = format!("stand-{env}");
    let out = std::process::Command::new("helm")
        .args(["template", "stand", "helm/app", "--namespace", &namespace, "-f", &format!("helm/app/values-{env}.yaml")])
        .current_dir(root)
        .output()
        .expect("run helm template");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = String::from_utf8(out.stdout).expect("utf-8");
    let mut paths = Vec::new();
    let mut kept = String::new();
    for document in serde_yaml_ng::Deserializer::from_str(&manifest) {
        let value: Value = serde::Deserialize::deserialize(document).expect("yaml");
        if value.is_null() || value["metadata"]["annotations"]["helm.sh/hook"].is_string() {
            continue;
        }
        let mut object = value.clone();
        object["metadata"]["namespace"] = json!(namespace);
        if object["kind"] == "StatefulSet" {
            // The StatefulSet controller (which this server does not play) would delete
            // the claims with the set under this policy: the chart must never ask for it.
            let policy = &object["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"];
            assert_ne!(policy, "Delete", "{env}: a StatefulSet whose claims go with it: {object}");
            for template in object["spec"]["volumeClaimTemplates"].as_array().cloned().unwrap_or_default() {
                let pod = format!("{}-0", object["metadata"]["name"].as_str().expect("name"));
                let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
                claim["metadata"]["name"] = json!(format!("{}-{pod}", template["metadata"]["name"].as_str().expect("name")));
                claim["metadata"]["namespace"] = json!(namespace);
                fake.put(claim);
            }
        }
        paths.push(fake.put(object));
        kept.push_str("---\n");
        kept.push_str(&serde_yaml_ng::to_string(&value).expect("yaml"));
    }
    let release = json!({
        "name": "stand", "namespace": namespace, "version": 1,
        "info": {"status": "deployed", "first_deployed": "2026-12-03T06:00:00Z", "last_deployed": "2026-12-03T06:00:00Z", "description": "Install complete"},
        "chart": {"metadata": {"apiVersion": "v2", "name": "app", "version": "0.1.0"}},
        "config": {}, "manifest": kept, "hooks": [],
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&release).expect("json"));
    let record = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": "sh.helm.release.v1.stand.v1", "namespace": namespace,
                     "labels": {"name": "stand", "owner": "helm", "status": "deployed", "version": "1"}},
        "data": {"release": base64::engine::general_purpose::STANDARD.encode(encoded)},
    });
    paths.push(fake.put(record));
    paths.sort();
    paths
}

struct Stand {
    fx: fixtures::Fixture,
    kubeconfig: std::path::PathBuf,
}

impl Stand {
    async fn new(fake: &Fake) -> Self {
        let server = fake.clone().serve().await;
        let fx = fixtures::project(&["stand.toml", "helm/app", "services"]);
        let kubeconfig = fx.write(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{server}\"}}\nusers:\n- name: dev\n  user: {{token: t0ken}}\n\
                 contexts:\n- name: kind-fake\n  context: {{cluster: fake, user: dev}}\ncurrent-context: kind-fake\n"
            ),
        );
        Self { fx, kubeconfig }
    }

    /// Runs devd in the stand (off the test's runtime), killed and failed after
    /// [`DEVD_DEADLINE`] (a `devd up` that got past its deploy would run on).
    async fn devd(&self, args: &[&str]) -> std::process::Output {
        let mut command = std::process::Command::new(DEVD);
        command
            .args(args)
            .current_dir(&self.fx.root)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("CARGO_TARGET_DIR", self.fx.path("target"))
            .env("HELM_CACHE_HOME", self.fx.path("helm-home/cache"))
            .env("HELM_CONFIG_HOME", self.fx.path("helm-home/config"))
            .env("HELM_DATA_HOME", self.fx.path("helm-home/data"))
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let what = args.join(" ");
        tokio::task::spawn_blocking(move || {
            let mut child = command.spawn().expect("run devd");
            let started = std::time::Instant::now();
            // Bounded: DEVD_DEADLINE in steps of 20 ms.
            while child.try_wait().expect("wait").is_none() {
                if started.elapsed() > DEVD_DEADLINE {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("output");
                    panic!("devd {what} still ran after {DEVD_DEADLINE:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            child.wait_with_output().expect("output")
        })
        .await
        .expect("join")
    }
}

fn paths(log: &[Request], method: &str, pattern: &str) -> Vec<String> {
    let mut found: Vec<String> = log.iter().filter(|r| r.method == method && r.path.contains(pattern)).map(|r| r.path.clone()).collect();
    found.sort();
    found.dedup();
    found
}

const CLAIMS: &str = "/api/v1/namespaces/stand-local/persistentvolumeclaims";
const CLAIMS_QUERY: &str = "labelSelector=app.kubernetes.io%2Finstance%3Dstand%2Capp.kubernetes.io%2Fcomponent%3Ddatabase";

/// `devd down --env local` removes every object of local's release and helm's record
/// of it, and nothing else: the databases' claims stay (listed, and named in what devd
/// prints), no other namespace is touched. `--volumes` then deletes those claims by the
/// chart's labels, and only them; with no release left helm is not run again.
#[tokio::test(flavor = "multi_thread")]
async fn down_removes_the_release_and_keeps_the_data_until_volumes() {
    let fake = Fake::default();
    let stand = Stand::new(&fake).await;
    let release = install(&fake, &stand.fx.root, "local");
    assert!(release.len() >= 15, "local's release: {release:?}");
    assert_eq!(fake.names(CLAIMS), ["data-postgres-service1-0", "data-postgres-service2-0"]);
    fake.put(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "someone-elses", "namespace": "stand-local", "labels": {"app.kubernetes.io/instance": "other", "app.kubernetes.io/component": "database"}}}));

    let out = stand.devd(&["down", "--env", "local"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let log = fake.take_log();
    assert_eq!(paths(&log, "DELETE", "/"), release, "helm uninstall deletes exactly the release's objects and its record");
    assert!(log.iter().all(|r| !r.path.contains("/namespaces/") || r.path.contains("/namespaces/stand-local/")), "{log:#?}");
    assert!(log.iter().any(|r| r.method == "GET" && r.path == CLAIMS && r.query == CLAIMS_QUERY), "the kept claims are listed: {log:#?}");
    assert_eq!(fake.names(CLAIMS), ["data-postgres-service1-0", "data-postgres-service2-0", "someone-elses"]);
    assert!(stdout.contains("release \"stand\" uninstalled (namespace stand-local)"), "{stdout}");
    assert!(
        stdout.contains("kept the databases' data in namespace stand-local: data-postgres-service1-0, data-postgres-service2-0 (`devd down --env local --volumes` removes it)"),
        "{stdout}"
    );

    let out = stand.devd(&["down", "--env", "local", "--volumes"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    let log = fake.take_log();
    let deletes: Vec<&Request> = log.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert_eq!((deletes[0].path.as_str(), deletes[0].query.as_str()), (CLAIMS, CLAIMS_QUERY));
    assert_eq!(fake.names(CLAIMS), ["someone-elses"]);
    assert!(stdout.contains("no release stand in namespace stand-local"), "{stdout}");
    assert!(stdout.contains("removed volume claim stand-local/data-postgres-service1-0"), "{stdout}");
    assert!(stdout.contains("removed volume claim stand-local/data-postgres-service2-0"), "{stdout}");
}

/// `devd up --env test --switch` on a local cluster that runs `local`: local's release
/// is removed before test's install begins, its databases' claims stay, and nothing of
/// an environment that may not be on this cluster (staging, prod) is asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_switch_removes_the_previous_environment_first_and_keeps_its_data() {
    let fake = Fake::default();
    let stand = Stand::new(&fake).await;
    let release = install(&fake, &stand.fx.root, "local");
    // test itself is installed already (an earlier `devd up --env test`): the switch
    // must leave it to helm's upgrade.
    let own = install(&fake, &stand.fx.root, "test");
    assert!(!own.is_empty());

    let out = stand.devd(&["up", "--env", "test", "--switch", "--port", "0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = fake.take_log();
    assert!(stderr.contains("devd: switch to test: release \"stand\" uninstalled (namespace stand-local)"), "{stderr}");
    assert!(stderr.contains("devd: switch to test: kept the databases' data in namespace stand-local: data-postgres-service1-0, data-postgres-service2-0"), "{stderr}");
    assert_eq!(paths(&log, "DELETE", "/"), release, "only local's release is deleted");
    assert_eq!(fake.names(CLAIMS), ["data-postgres-service1-0", "data-postgres-service2-0"]);
    for never in ["/namespaces/stand-staging/", "/namespaces/stand-prod/"] {
        assert!(log.iter().all(|r| !r.path.contains(never)), "{never}: {log:#?}");
    }
    assert!(log.iter().all(|r| r.method != "DELETE" || !r.path.contains("/namespaces/stand-test/")), "test's own release is kept: {log:#?}");
    // Test's upgrade comes after the last deletion: helm fetches the OpenAPI to
    // validate what it installs (uninstall never does).
    let last_delete = log.iter().rposition(|r| r.method == "DELETE").expect("deletions");
    let install = log.iter().position(|r| r.path.starts_with("/openapi/"));
    let install = install.unwrap_or_else(|| panic!("test's install never began: {stderr}\n{log:#?}"));
    assert!(install > last_delete, "test's install began before local was removed: {log:#?}");
    // The scripted server serves no OpenAPI, so helm's install of test stops there.
    assert!(!out.status.success(), "{stderr}");
}
