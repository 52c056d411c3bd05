//! An environment switch as a real API server judges it: for every ordered pair of
//! environments of the shipped stand.toml, each object the second deploys with the same
//! kind, namespace and name as one of the first is an in-place update, and none may
//! change a field the API server holds immutable (it answers 422 `Forbidden`/`Invalid`,
//! so `helm upgrade` fails and Tilt's apply errors). The rules are the API server's
//! update validation (kubernetes pkg/apis/apps/validation ValidateStatefulSetUpdate and
//! ValidateDeploymentUpdate's selector rule, pkg/apis/core/validation
//! ValidateServiceUpdate, ValidatePersistentVolumeClaimUpdate, and the `immutable` field
//! of Secrets and ConfigMaps), reduced to what this chart can render.

use std::collections::BTreeMap;

use chart_tests::{env_args, helm_template, Rendered};
use serde_json::{Map, Value};
use stand_model::{config, plan};

/// The StatefulSet spec fields an update may change; everything else is Forbidden.
const STATEFULSET_MUTABLE: &[&str] =
    &["replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds"];

/// Kinds that live outside any namespace: shared by every environment of a cluster.
const CLUSTER_SCOPED: &[&str] =
    &["Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass", "PriorityClass", "CustomResourceDefinition"];

/// What an in-place update from `old` to `new` (same kind, namespace, name) changes that
/// the API server refuses. Each message: the object, the field, old → new.
fn violations(old: &Value, new: &Value) -> Vec<String> {
    let kind = new["kind"].as_str().unwrap_or_default();
    let id = format!("{kind}/{}", new["metadata"]["name"].as_str().unwrap_or_default());
    let mut out = Vec::new();
    let mut differs = |field: &str, a: &Value, b: &Value| {
        if a != b {
            out.push(format!("{id}: {field} is immutable: {} → {}", short(a), short(b)));
        }
    };
    match kind {
        "StatefulSet" => {
            let strip = |v: &Value| -> Map<String, Value> {
                let mut spec = v["spec"].as_object().cloned().unwrap_or_default();
                spec.retain(|k, _| !STATEFULSET_MUTABLE.contains(&k.as_str()));
                spec
            };
            let (a, b) = (strip(old), strip(new));
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                differs(&format!("spec.{k}"), a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
            }
        }
        "Deployment" | "DaemonSet" | "ReplicaSet" => differs("spec.selector", &old["spec"]["selector"], &new["spec"]["selector"]),
        "Service" => {
            let (a, b) = (&old["spec"]["clusterIP"], &new["spec"]["clusterIP"]);
            if a.is_string() && b.is_string() {
                differs("spec.clusterIP", a, b);
            }
            let external = |v: &Value| v["spec"]["type"] == "ExternalName";
            if external(old) != external(new) {
                differs("spec.type (to or from ExternalName)", &old["spec"]["type"], &new["spec"]["type"]);
            }
        }
        "PersistentVolumeClaim" => {
            let storage = |v: &Value| quantity_bytes(v["spec"]["resources"]["requests"]["storage"].as_str().unwrap_or("0"));
            if storage(new) < storage(old) {
                differs("spec.resources.requests.storage (may only grow)", &old["spec"]["resources"], &new["spec"]["resources"]);
            }
            let rest = |v: &Value| {
                let mut spec = v["spec"].clone();
                if let Some(s) = spec.as_object_mut() {
                    s.remove("resources");
                }
                spec
            };
            differs("spec (other than a larger storage request)", &rest(old), &rest(new));
        }
        "Secret" | "ConfigMap" if old["immutable"] == true => {
            for field in ["data", "stringData", "binaryData"] {
                differs(field, &old[field], &new[field]);
            }
        }
        _ => {}
    }
    out
}

/// A storage quantity in bytes (binary and decimal suffixes, as the chart renders them).
fn quantity_bytes(q: &str) -> u128 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u128 = n.parse().unwrap_or(0);
    let factor: u128 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => panic!("unexpected quantity unit {other:?} in {q:?}"),
    };
    n * factor
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}…", &s[..120])
    } else {
        s
    }
}

/// One environment as deployed: (kind, namespace, name) → object, hooks left out (helm
/// runs test hooks only on `helm test`).
type Deployed = BTreeMap<(String, String, String), Value>;

fn deployed(env: &str, namespace: &str) -> Deployed {
    let mut args = env_args(env);
    args.extend(["--namespace".to_owned(), namespace.to_owned()]);
    let yaml = helm_template(&args).unwrap_or_else(|e| panic!("helm template for {env} failed:\n{e}"));
    let mut out = Deployed::new();
    for o in Rendered::parse(&yaml).objects {
        if o["metadata"]["annotations"].get("helm.sh/hook").is_some() {
            continue;
        }
        let kind = o["kind"].as_str().unwrap_or_default().to_owned();
        let ns = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            String::new()
        } else {
            o["metadata"]["namespace"].as_str().unwrap_or(namespace).to_owned()
        };
        let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        out.insert((kind, ns, name), o);
    }
    out
}

/// Every environment of the shipped stand.toml, rendered into `namespace_of(plan)`.
fn every_environment(namespace_of: impl Fn(&plan::Plan) -> String + Sync) -> Vec<(String, Deployed)> {
    let stand = config::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stand.toml")).unwrap_or_else(|e| panic!("{e}"));
    let plans: Vec<plan::Plan> = stand
        .env_names()
        .iter()
        .map(|env| plan::resolve(&stand, env, "x86_64-unknown-linux-gnu").expect("resolves"))
        .filter(|p| p.target == config::Target::Kubernetes)
        .collect();
    assert!(plans.len() >= 8, "the shipped environments");
    std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|p| {
                let ns = namespace_of(p);
                s.spawn(move || (p.env.clone(), deployed(&p.env, &ns)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("render")).collect()
    })
}

/// (pairs, objects updated in place, violations) over every ordered pair.
fn switches(envs: &[(String, Deployed)]) -> (usize, usize, Vec<String>) {
    let (mut pairs, mut updated, mut found) = (0, 0, Vec::new());
    for (a, from) in envs {
        for (b, to) in envs {
            if a == b {
                continue;
            }
            pairs += 1;
            for (key, new) in to {
                if let Some(old) = from.get(key) {
                    updated += 1;
                    found.extend(violations(old, new).into_iter().map(|v| format!("{a} → {b}: {v}")));
                }
            }
        }
    }
    (pairs, updated, found)
}

#[test]
fn every_switch_between_shipped_environments_is_allowed() {
    let envs = every_environment(|p| p.namespace.clone());
    let (pairs, updated, found) = switches(&envs);
    assert_eq!(pairs, envs.len() * (envs.len() - 1));
    eprintln!("{pairs} switches, {updated} objects updated in place (cluster-scoped ones), {} refused", found.len());
    assert!(found.is_empty(), "{} of {updated} in-place updates over {pairs} switches would be refused:\n{}", found.len(), found.join("\n"));
}

/// The layout before each environment had its namespace: all in one, `stand`. The rules
/// catch what a real API server refused there.
#[test]
fn one_shared_namespace_would_be_refused() {
    let envs = every_environment(|_| "stand".to_owned());
    let (pairs, updated, found) = switches(&envs);
    eprintln!("one namespace: {pairs} switches, {updated} objects updated in place, {} refused; first: {:?}", found.len(), found.first());
    assert!(updated > 0);
    for (a, b) in [("local", "dev"), ("local", "test")] {
        let prefix = format!("{a} → {b}: StatefulSet/postgres-service1: spec.volumeClaimTemplates is immutable");
        assert!(found.iter().any(|v| v.starts_with(&prefix)), "{prefix} not among:\n{}", found.join("\n"));
    }
}

#[test]
fn the_rules_on_hand_written_objects() {
    let sts = |replicas: u64, size: &str| {
        serde_json::json!({"kind": "StatefulSet", "metadata": {"name": "db"}, "spec": {
            "replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"a": "b"}},
            "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": size}}}}]}})
    };
    assert!(violations(&sts(1, "1Gi"), &sts(3, "1Gi")).is_empty(), "replicas may change");
    let v = violations(&sts(1, "1Gi"), &sts(1, "2Gi"));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("StatefulSet/db: spec.volumeClaimTemplates is immutable"), "{v:?}");

    let dep = |app: &str| serde_json::json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}}}});
    assert!(violations(&dep("x"), &dep("x")).is_empty());
    assert_eq!(violations(&dep("x"), &dep("y")).len(), 1);

    let svc = |t: &str, ip: Option<&str>| {
        let mut s = serde_json::json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": t}});
        if let Some(ip) = ip {
            s["spec"]["clusterIP"] = ip.into();
        }
        s
    };
    assert!(violations(&svc("ClusterIP", None), &svc("NodePort", None)).is_empty());
    assert_eq!(violations(&svc("ClusterIP", Some("10.0.0.1")), &svc("ClusterIP", Some("10.0.0.2"))).len(), 1);
    assert_eq!(violations(&svc("ClusterIP", None), &svc("ExternalName", None)).len(), 1);

    let pvc = |size: &str, class: &str| serde_json::json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "p"}, "spec": {"storageClassName": class, "resources": {"requests": {"storage": size}}}});
    assert!(violations(&pvc("1Gi", "x"), &pvc("2Gi", "x")).is_empty(), "a larger request is allowed");
    assert_eq!(violations(&pvc("2Gi", "x"), &pvc("1Gi", "x")).len(), 1, "a smaller one is not");
    assert_eq!(violations(&pvc("1Gi", "x"), &pvc("1Gi", "y")).len(), 1, "nor another class");

    let secret = |immutable: bool, v: &str| serde_json::json!({"kind": "Secret", "metadata": {"name": "s"}, "immutable": immutable, "data": {"k": v}});
    assert!(violations(&secret(false, "a"), &secret(false, "b")).is_empty());
    assert_eq!(violations(&secret(true, "a"), &secret(true, "b")).len(), 1);
}
