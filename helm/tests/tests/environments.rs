//! Every environment's values file: `helm lint --strict` passes, `helm template`
//! renders exactly the expected (kind, name) set with the environment's
//! expectations asserted object by object, and every manifest passes
//! `kubernetes-validate --strict`.

use std::collections::BTreeSet;

use chart_tests::{
    at, container_env, describe, env_args, helm_lint, render_env, validate_strict, Rendered,
    NAMESPACE, RELEASE,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    InCluster,
    External,
    None,
}

/// What an environment deploys: the source of the expected object set, read from the
/// shipped stand.toml (so a service added there is expected here without an edit).
struct Spec {
    env: String,
    services: Vec<(String, u16, Db)>,
    dev_sync: bool,
    rbac: bool,
}

fn spec(env: &str) -> Spec {
    let root = chart_tests::chart_dir().join("../..");
    let stand = match stand_model::config::load(&root.join("stand.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let plan = stand_model::plan::resolve(&stand, env, "").unwrap_or_else(|e| panic!("{env}: {e}"));
    let services = plan
        .services
        .iter()
        .map(|s| {
            let db = match s.database.mode {
                stand_model::config::DbMode::InCluster => Db::InCluster,
                stand_model::config::DbMode::External => Db::External,
                stand_model::config::DbMode::None => Db::None,
            };
            (s.name.clone(), s.port, db)
        })
        .collect();
    Spec { env: env.to_owned(), services, dev_sync: plan.live_sync, rbac: plan.live_sync }
}

fn key(kind: &str, name: impl Into<String>) -> (String, String) {
    (kind.to_owned(), name.into())
}

fn expected_objects(spec: &Spec) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for (svc, _, db) in &spec.services {
        let (svc, db) = (svc.as_str(), *db);
        for kind in ["Deployment", "Service", "ConfigMap"] {
            set.insert(key(kind, svc));
        }
        set.insert(key("Pod", format!("{RELEASE}-test-{svc}")));
        if db == Db::InCluster {
            set.insert(key("Secret", svc));
            for kind in ["StatefulSet", "Service", "Secret"] {
                set.insert(key(kind, format!("postgres-{svc}")));
            }
        }
    }
    if spec.dev_sync {
        set.insert(key("Secret", format!("{RELEASE}-devsync")));
    }
    if spec.rbac {
        for kind in ["ServiceAccount", "Role", "RoleBinding"] {
            set.insert(key(kind, format!("{RELEASE}-devd")));
        }
    }
    set
}

fn labels(o: &Value) -> &Value {
    at(o, "/metadata/labels")
}

fn check_standard_labels(o: &Value) {
    let l = labels(o);
    for k in [
        "app.kubernetes.io/name",
        "app.kubernetes.io/component",
        "helm.sh/chart",
        "app.kubernetes.io/version",
    ] {
        assert!(l[k].is_string(), "{} lacks label {k}: {l}", describe(o));
    }
    assert_eq!(l["app.kubernetes.io/instance"], RELEASE, "{}", describe(o));
    assert_eq!(l["app.kubernetes.io/part-of"], "stand", "{}", describe(o));
    assert_eq!(l["app.kubernetes.io/managed-by"], "Helm", "{}", describe(o));
}

fn selector(name: &str) -> Value {
    serde_json::json!({"app.kubernetes.io/name": name, "app.kubernetes.io/instance": RELEASE})
}

fn check_deployment(r: &Rendered, spec: &Spec, svc: &str, port: u16, db: Db) {
    let d = r.get("Deployment", svc);
    assert_eq!(
        *at(d, "/spec/selector/matchLabels"),
        selector(svc),
        "selector of {svc}"
    );
    let pod_labels = at(d, "/spec/template/metadata/labels");
    assert_eq!(pod_labels["app.kubernetes.io/name"], svc);
    assert_eq!(pod_labels["app.kubernetes.io/instance"], RELEASE);
    assert_eq!(pod_labels["app.kubernetes.io/component"], "service");
    let pod = at(d, "/spec/template/spec");
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"], true,
        "{svc} pod runs as non-root"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let containers = at(pod, "/containers").as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{svc}: one container");
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["readOnlyRootFilesystem"], !spec.dev_sync,
        "{svc}: rootfs writable only for the shim"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/health", "{svc} {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{svc} {probe}");
    }
    let ports = c["ports"].as_array().expect("ports");
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("http port");
    assert_eq!(http["containerPort"], port);
    let shim = ports.iter().find(|p| p["name"] == "shim");
    let token = container_env(c, "STAND_SHIM_TOKEN");
    if spec.dev_sync {
        assert_eq!(shim.expect("shim port")["containerPort"], 7070);
        let token = token.expect("STAND_SHIM_TOKEN");
        assert_eq!(
            token["valueFrom"]["secretKeyRef"]["name"],
            format!("{RELEASE}-devsync")
        );
        assert_eq!(token["valueFrom"]["secretKeyRef"]["key"], "token");
        assert_eq!(
            container_env(c, "STAND_SHIM_PORT").expect("STAND_SHIM_PORT")["value"],
            "7070"
        );
    } else {
        assert!(shim.is_none(), "{svc}: no shim port without devSync");
        assert!(token.is_none(), "{svc}: no shim token without devSync");
        assert!(container_env(c, "STAND_SHIM_PORT").is_none());
    }
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], svc);
    let password = container_env(c, "DB_PASSWORD");
    match db {
        Db::None => assert!(password.is_none(), "{svc}: no DB_PASSWORD with mode none"),
        Db::InCluster => {
            let r = &password.expect("DB_PASSWORD")["valueFrom"]["secretKeyRef"];
            assert_eq!(r["name"], svc);
            assert_eq!(r["key"], "DB_PASSWORD");
        }
        Db::External => {
            let r = &password.expect("DB_PASSWORD")["valueFrom"]["secretKeyRef"];
            assert_eq!(
                r["name"],
                format!("{svc}-db"),
                "{svc}: password from the existing Secret"
            );
            assert_eq!(r["key"], "password");
        }
    }
}

fn check_service_objects(r: &Rendered, svc: &str, port: u16, db: Db) {
    let s = r.get("Service", svc);
    assert_eq!(*at(s, "/spec/selector"), selector(svc));
    assert_eq!(at(s, "/spec/ports/0/port"), 80);
    assert_eq!(at(s, "/spec/ports/0/targetPort"), "http");

    let cm = at(r.get("ConfigMap", svc), "/data");
    assert_eq!(cm["PORT"], port.to_string());
    assert_eq!(cm["LOG_FORMAT"], "json");
    let db_keys = ["DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_SSLMODE"];
    match db {
        Db::None => {
            let map = cm.as_object().expect("configmap data");
            assert!(
                map.keys()
                    .all(|k| !k.starts_with("DB_") && k != "DATABASE_URL"),
                "{svc}: no DB_* settings with mode none: {cm}"
            );
        }
        Db::InCluster | Db::External => {
            for k in db_keys {
                assert!(
                    cm[k].as_str().is_some_and(|v| !v.is_empty()),
                    "{svc}: {k} set: {cm}"
                );
            }
            assert_eq!(cm["DB_NAME"], svc);
            assert_eq!(cm["DB_USER"], svc);
        }
    }
    if db == Db::InCluster {
        assert_eq!(cm["DB_HOST"], format!("postgres-{svc}"));
        assert_eq!(cm["DB_PORT"], "5432");
        assert_eq!(cm["DB_SSLMODE"], "disable");
    }

    let test = r.get("Pod", &format!("{RELEASE}-test-{svc}"));
    assert_eq!(at(test, "/metadata/annotations")["helm.sh/hook"], "test");
    assert_ne!(
        labels(test)["app.kubernetes.io/name"],
        svc,
        "the Service must not select the test pod"
    );
    let script = at(test, "/spec/containers/0/args/0")
        .as_str()
        .expect("script");
    for part in [
        format!("http://{svc}.{NAMESPACE}.svc:80"),
        "/health".into(),
        "/db-status".into(),
    ] {
        assert!(
            script.contains(&part),
            "test pod of {svc} calls {part}: {script}"
        );
    }
}

fn check_in_cluster_db(r: &Rendered, svc: &str) {
    let pg = format!("postgres-{svc}");
    let sts = r.get("StatefulSet", &pg);
    assert_eq!(at(sts, "/spec/serviceName"), pg.as_str());
    assert_eq!(at(sts, "/spec/replicas"), 1);
    assert_eq!(*at(sts, "/spec/selector/matchLabels"), selector(&pg));
    assert_eq!(
        at(sts, "/spec/template/metadata/labels")["app.kubernetes.io/component"],
        "database"
    );
    assert_eq!(
        at(sts, "/spec/template/spec/securityContext/runAsNonRoot"),
        true
    );
    let c = at(sts, "/spec/template/spec/containers/0");
    assert!(
        c["image"].as_str().is_some_and(|i| i.ends_with(":15")),
        "PostgreSQL 15: {}",
        c["image"]
    );
    assert_eq!(c["readinessProbe"]["exec"]["command"][0], "pg_isready");
    let pw = &container_env(c, "POSTGRES_PASSWORD").expect("POSTGRES_PASSWORD")["valueFrom"]
        ["secretKeyRef"];
    assert_eq!(pw["name"], pg.as_str());
    assert_eq!(pw["key"], "password");

    let s = r.get("Service", &pg);
    assert_eq!(at(s, "/spec/clusterIP"), "None");
    assert_eq!(at(s, "/spec/ports/0/port"), 5432);
    assert_eq!(*at(s, "/spec/selector"), selector(&pg));

    // One password, in both Secrets (compared within this render only).
    let app = at(r.get("Secret", svc), "/data/DB_PASSWORD");
    let db = at(r.get("Secret", &pg), "/data/password");
    assert_eq!(
        app, db,
        "{svc}: service and database Secrets hold the same password"
    );
}

fn check_rbac(r: &Rendered) {
    let name = format!("{RELEASE}-devd");
    let rules = at(r.get("Role", &name), "/rules")
        .as_array()
        .expect("rules")
        .clone();
    let verbs = |res: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|rule| {
                rule["resources"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == res))
            })
            .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(verbs("pods"), ["get", "list", "watch"]);
    assert_eq!(verbs("pods/proxy"), ["get", "create", "update"]);
    assert!(
        verbs("nodes").is_empty(),
        "nodes are cluster-scoped: not in a Role"
    );
    let rb = r.get("RoleBinding", &name);
    assert_eq!(at(rb, "/roleRef/name"), name.as_str());
    assert_eq!(at(rb, "/subjects/0/kind"), "ServiceAccount");
    assert_eq!(at(rb, "/subjects/0/name"), name.as_str());
    assert_eq!(at(rb, "/subjects/0/namespace"), NAMESPACE);
}

/// The whole check of one environment: exact object set, then every object.
fn check_env(env: &str, extra: impl FnOnce(&Rendered)) {
    let spec = spec(env);
    let r = render_env(&spec.env, &[]);
    let expected = expected_objects(&spec);
    let got = r.keys();
    assert_eq!(
        got,
        expected,
        "{env}: rendered set differs\n  unexpected: {:?}\n  missing: {:?}",
        got.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&got).collect::<Vec<_>>()
    );
    assert_eq!(
        r.objects.len(),
        expected.len(),
        "{env}: no duplicate objects"
    );
    for o in &r.objects {
        check_standard_labels(o);
    }
    for (svc, port, db) in &spec.services {
        let (svc, port, db) = (svc.as_str(), *port, *db);
        check_deployment(&r, &spec, svc, port, db);
        check_service_objects(&r, svc, port, db);
        if db == Db::InCluster {
            check_in_cluster_db(&r, svc);
        }
    }
    if spec.rbac {
        check_rbac(&r);
    }
    extra(&r);
}

fn pvc_size(r: &Rendered, svc: &str) -> String {
    let sts = r.get("StatefulSet", &format!("postgres-{svc}"));
    let vct = at(sts, "/spec/volumeClaimTemplates")
        .as_array()
        .expect("volumeClaimTemplates");
    assert_eq!(vct.len(), 1);
    assert_eq!(vct[0]["metadata"]["name"], "data");
    assert_eq!(
        vct[0]["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    assert!(
        vct[0]["spec"].get("storageClassName").is_none(),
        "empty storageClass = cluster default"
    );
    at(&vct[0], "/spec/resources/requests/storage")
        .as_str()
        .expect("size")
        .to_owned()
}

fn no_database_objects(r: &Rendered, env: &str) {
    for o in &r.objects {
        assert_ne!(
            labels(o)["app.kubernetes.io/component"],
            "database",
            "{env}: {}",
            describe(o)
        );
        assert!(!describe(o).contains("postgres"), "{env}: {}", describe(o));
    }
    assert_eq!(r.of_kind("StatefulSet").count(), 0);
    assert!(!r.yaml.contains("volumeClaimTemplates"));
}

fn hosted(r: &Rendered, env: &str) {
    no_database_objects(r, env);
    for svc in ["service1", "service2"] {
        let cm = at(r.get("ConfigMap", svc), "/data");
        assert_eq!(cm["DB_HOST"], format!("{svc}-db.{env}.example.internal"));
        assert_eq!(cm["DB_PORT"], "5432");
        assert_eq!(cm["DB_SSLMODE"], "prefer");
        assert!(
            r.of_kind("Secret").all(|s| s["metadata"]["name"] != svc),
            "{env}: no chart Secret for {svc}"
        );
    }
    assert!(!r.yaml.contains("7070"), "{env}: no trace of the shim");
}

fn only(r: &Rendered, keep: &str, drop: &str) {
    assert!(
        !r.yaml.contains(drop),
        "{keep}-only: nothing at all rendered for {drop}"
    );
    assert_eq!(pvc_size(r, keep), "1Gi");
}

fn check_lint(env: &str) {
    if let Err(e) = helm_lint(&env_args(env)) {
        panic!("helm lint --strict failed for {env}:\n{e}");
    }
}

fn check_validate(env: &str) {
    let r = render_env(env, &[]);
    assert!(!r.objects.is_empty());
    validate_strict(env, &r.yaml);
}

macro_rules! environment {
    ($m:ident, $env:literal, $extra:expr) => {
        mod $m {
            #[test]
            fn lint_strict() {
                super::check_lint($env);
            }
            #[test]
            fn objects() {
                super::check_env($env, $extra);
            }
            #[test]
            fn kubernetes_validate_strict() {
                super::check_validate($env);
            }
        }
    };
}

environment!(local, "local", |r| {
    assert_eq!(super::pvc_size(r, "service1"), "1Gi");
    assert_eq!(super::pvc_size(r, "service2"), "1Gi");
});
environment!(dev, "dev", |r| {
    assert_eq!(super::pvc_size(r, "service1"), "2Gi");
    assert_eq!(super::pvc_size(r, "service2"), "2Gi");
    let cm = chart_tests::at(r.get("ConfigMap", "service1"), "/data");
    assert_eq!(
        cm["RUST_LOG"], "info,service1=debug",
        "env entries reach the ConfigMap"
    );
});
environment!(test, "test", |r| {
    assert!(
        !r.yaml.contains("volumeClaimTemplates"),
        "test: no volumeClaimTemplates at all"
    );
    assert_eq!(r.of_kind("PersistentVolumeClaim").count(), 0);
    for svc in ["service1", "service2"] {
        let sts = r.get("StatefulSet", &format!("postgres-{svc}"));
        let volumes = chart_tests::at(sts, "/spec/template/spec/volumes")
            .as_array()
            .expect("volumes");
        let data = volumes
            .iter()
            .find(|v| v["name"] == "data")
            .expect("data volume");
        assert!(
            data["emptyDir"].is_object(),
            "test: {svc} data on an emptyDir: {data}"
        );
    }
});
environment!(minimal, "minimal", |r| {
    super::no_database_objects(r, "minimal");
    assert_eq!(
        r.of_kind("Secret").count(),
        1,
        "minimal: only the devSync Secret (no database passwords)"
    );
});
environment!(service1_only, "service1-only", |r| super::only(
    r, "service1", "service2"
));
environment!(service2_only, "service2-only", |r| super::only(
    r, "service2", "service1"
));
environment!(staging, "staging", |r| super::hosted(r, "staging"));
environment!(prod, "prod", |r| {
    super::hosted(r, "prod");
    for svc in ["service1", "service2"] {
        let d = r.get("Deployment", svc);
        let replicas = chart_tests::at(d, "/spec/replicas")
            .as_u64()
            .expect("replicas");
        assert!(replicas >= 2, "prod: {svc} has {replicas} replicas");
        let res = chart_tests::at(d, "/spec/template/spec/containers/0/resources");
        for k in [
            "/limits/cpu",
            "/limits/memory",
            "/requests/cpu",
            "/requests/memory",
        ] {
            assert!(res.pointer(k).is_some(), "prod: {svc} resources{k}: {res}");
        }
    }
});

/// Every values file in helm/app is covered by the table above.
#[test]
fn every_values_file_is_an_environment() {
    let mut found: Vec<String> = std::fs::read_dir(chart_tests::chart_dir())
        .expect("chart dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("values-")?
                    .strip_suffix(".yaml")?
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    let mut known: Vec<String> = chart_tests::ENVIRONMENTS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    known.sort();
    assert_eq!(found, known);
}
