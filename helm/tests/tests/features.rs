//! Chart behaviour beyond the shipped environments: a new service is a values
//! entry, not a template; existing Secrets are honoured; defaults are sane.

use chart_tests::{
    at, container_env, render_default, render_env, temp_file, validate_strict, RELEASE,
};

/// A service added in values alone gets the full set of objects, and they validate.
#[test]
fn a_new_service_is_only_a_values_entry() {
    let file = temp_file(
        "zz-fixture",
        "services:\n  zz-fixture:\n    enabled: true\n    image: {repository: stand/zz-fixture, tag: dev}\n    port: 5003\n    database:\n      mode: inCluster\n      inCluster: {persistence: {enabled: false}}\n",
    );
    let file = file.display().to_string();
    let r = render_env("test", &["-f", &file]);
    for (kind, name) in [
        ("Deployment", "zz-fixture"),
        ("Service", "zz-fixture"),
        ("ConfigMap", "zz-fixture"),
        ("Secret", "zz-fixture"),
        ("StatefulSet", "postgres-zz-fixture"),
        ("Service", "postgres-zz-fixture"),
        ("Secret", "postgres-zz-fixture"),
        ("Pod", "stand-test-zz-fixture"),
    ] {
        r.get(kind, name);
    }
    let cm = at(r.get("ConfigMap", "zz-fixture"), "/data");
    assert_eq!(
        cm["DB_NAME"], "zz-fixture",
        "database name defaults to the service name"
    );
    assert_eq!(cm["DB_USER"], "zz-fixture");
    assert_eq!(
        at(r.get("Deployment", "zz-fixture"), "/spec/replicas"),
        1,
        "replicas default to 1"
    );
    validate_strict("zz-fixture", &r.yaml);
}

/// devSync with an existing token Secret: none is created, the pods use the named one.
#[test]
fn devsync_token_from_existing_secret() {
    let r = render_env("local", &["--set", "devSync.tokenSecret=my-shim-token"]);
    assert!(r
        .of_kind("Secret")
        .all(|s| s["metadata"]["name"] != format!("{RELEASE}-devsync")));
    for svc in ["service1", "service2"] {
        let c = at(r.get("Deployment", svc), "/spec/template/spec/containers/0");
        let token = container_env(c, "STAND_SHIM_TOKEN").expect("token env");
        assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], "my-shim-token");
    }
    let rules = at(r.get("Role", &format!("{RELEASE}-devd")), "/rules");
    assert!(
        rules
            .as_array()
            .expect("rules")
            .iter()
            .any(|rule| rule["resourceNames"][0] == "my-shim-token"),
        "devd may read the token Secret it needs: {rules}"
    );
}

/// The chart-created devSync token is a non-empty random value.
#[test]
fn devsync_token_is_generated() {
    let r = render_env("dev", &[]);
    let token = at(
        r.get("Secret", &format!("{RELEASE}-devsync")),
        "/data/token",
    );
    assert!(
        token.as_str().is_some_and(|t| t.len() >= 40),
        "token: {token}"
    );
}

/// An explicit in-cluster password is used as given (base64 of "s3cret").
#[test]
fn explicit_database_password() {
    let r = render_env(
        "test",
        &[
            "--set",
            "services.service1.database.inCluster.password=s3cret",
        ],
    );
    assert_eq!(
        at(r.get("Secret", "service1"), "/data/DB_PASSWORD"),
        "czNjcmV0"
    );
    assert_eq!(
        at(r.get("Secret", "postgres-service1"), "/data/password"),
        "czNjcmV0"
    );
}

/// A storageClass from values reaches the claim template.
#[test]
fn storage_class_reaches_claim() {
    let r = render_env(
        "dev",
        &[
            "--set",
            "services.service2.database.inCluster.persistence.storageClass=fast-ssd",
        ],
    );
    let sts = r.get("StatefulSet", "postgres-service2");
    assert_eq!(
        at(sts, "/spec/volumeClaimTemplates/0/spec/storageClassName"),
        "fast-ssd"
    );
}

/// replicas 0 scales a service down instead of falling back to 1.
#[test]
fn zero_replicas_is_kept() {
    let r = render_default(&["--set", "services.service1.replicas=0"]);
    assert_eq!(at(r.get("Deployment", "service1"), "/spec/replicas"), 0);
}

/// Defaults alone (no environment file): both services, in-cluster databases, no
/// dev-only objects.
#[test]
fn defaults_are_production_safe() {
    let r = render_default(&[]);
    assert!(
        r.of_kind("Role").next().is_none(),
        "rbac.create defaults to false"
    );
    assert!(!r.yaml.contains("STAND_SHIM"), "devSync defaults to off");
    r.get("StatefulSet", "postgres-service1");
    r.get("StatefulSet", "postgres-service2");
}

/// tests.enabled=false drops the hook pods and nothing else.
#[test]
fn test_pods_can_be_turned_off() {
    let r = render_env("staging", &["--set", "tests.enabled=false"]);
    assert_eq!(r.of_kind("Pod").count(), 0);
    r.get("Deployment", "service1");
}

/// A changed setting changes the pod template (a rollout), not just the ConfigMap.
#[test]
fn config_change_rolls_pods() {
    let checksum = |r: &chart_tests::Rendered| {
        at(
            r.get("Deployment", "service1"),
            "/spec/template/metadata/annotations/checksum~1config",
        )
        .clone()
    };
    let a = render_env("dev", &[]);
    let b = render_env("dev", &["--set-string", "services.service1.env.FEATURE=on"]);
    assert_ne!(checksum(&a), checksum(&b));
    assert_eq!(at(b.get("ConfigMap", "service1"), "/data/FEATURE"), "on");
}

/// A minimal entry: no `database` block means mode none; `inCluster` without a
/// persistence block keeps data on a 1Gi PVC.
#[test]
fn omitted_blocks_have_safe_defaults() {
    let file = temp_file(
        "omitted",
        "services:\n  web:\n    enabled: true\n    image: {repository: stand/web, tag: dev}\n    port: 5010\n  store:\n    enabled: true\n    image: {repository: stand/store, tag: dev}\n    port: 5011\n    database: {mode: inCluster}\n",
    );
    let file = file.display().to_string();
    let r = render_env("minimal", &["-f", &file]);
    let web = at(r.get("ConfigMap", "web"), "/data");
    assert!(
        web.get("DB_HOST").is_none(),
        "no database block = mode none: {web}"
    );
    assert!(r
        .of_kind("StatefulSet")
        .all(|s| s["metadata"]["name"] != "postgres-web"));
    let sts = r.get("StatefulSet", "postgres-store");
    assert_eq!(
        at(
            sts,
            "/spec/volumeClaimTemplates/0/spec/resources/requests/storage"
        ),
        "1Gi"
    );
    validate_strict("omitted", &r.yaml);
}
