//! What devd would deploy = what the values file renders: for every environment, the
//! chart rendered by the real helm exactly as devd and Tilt deploy it (the plan's values
//! files) is identical to a plain `helm template -f <chart>/values-<env>.yaml` (what a
//! CI/CD pipeline runs without devd), and its objects are the plan's services, images,
//! replicas, ports and databases.
#![allow(clippy::unwrap_used)] // test code: a panic here is the failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const DEVD: &str = env!("CARGO_BIN_EXE_devd");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn devd_json(args: &[&str]) -> Value {
    let out = Command::new(DEVD).args(args).current_dir(root()).output().expect("run devd");
    assert!(out.status.success(), "devd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn helm() -> PathBuf {
    let path = std::env::var_os("HELM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("helm"));
    let ok = Command::new(&path).arg("version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "helm is not installed (or not on PATH); run `bash scripts/setup`");
    path
}

/// The rendered objects, without what is random per render (Secret data, checksums).
fn render(plan: &Value, as_devd_deploys: bool) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.current_dir(root()).args(["template", plan["release"].as_str().unwrap(), plan["chart"].as_str().unwrap()]);
    cmd.args(["--namespace", plan["namespace"].as_str().unwrap()]);
    if as_devd_deploys {
        assert!(plan.get("set").is_none(), "the plan carries no --set: {plan}");
        for values in plan["values"].as_array().unwrap() {
            cmd.args(["-f", values.as_str().unwrap()]);
        }
    } else {
        let env = plan["env"].as_str().unwrap();
        cmd.args(["-f", &format!("{}/values-{env}.yaml", plan["chart"].as_str().unwrap())]);
    }
    let out = cmd.output().expect("run helm");
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut value = Value::deserialize(doc).expect("YAML");
        if value.is_null() || value["kind"] == "Pod" {
            continue; // empty documents; helm test hooks
        }
        if value["kind"] == "Secret" {
            value["data"] = Value::Null;
            value["stringData"] = Value::Null;
        }
        if let Some(annotations) = value.pointer_mut("/spec/template/metadata/annotations") {
            annotations.as_object_mut().unwrap().retain(|k, _| !k.starts_with("checksum/"));
        }
        objects.push(value);
    }
    objects.sort_by_key(|o| (o["kind"].as_str().unwrap_or("").to_owned(), o["metadata"]["name"].as_str().unwrap_or("").to_owned()));
    objects
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn names(objects: &[Value], kind: &str) -> Vec<String> {
    objects.iter().filter(|o| o["kind"] == kind).map(|o| o["metadata"]["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn every_environment_renders_what_its_plan_says() {
    let envs = devd_json(&["env", "list", "--json"]);
    let envs: Vec<String> = envs
        .as_array()
        .or_else(|| envs["envs"].as_array())
        .expect("env list")
        .iter()
        .map(|e| e["name"].as_str().or(e.as_str()).unwrap().to_owned())
        .collect();
    assert!(envs.len() >= 8, "{envs:?}");
    for env in envs {
        let plan = devd_json(&["plan", "--env", &env, "--json"]);
        let deployed = render(&plan, true);
        let values_alone = render(&plan, false);
        let kinds_names = |objects: &[Value]| -> Vec<String> {
            objects.iter().map(|o| format!("{}/{}", o["kind"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""))).collect()
        };
        assert_eq!(kinds_names(&deployed), kinds_names(&values_alone), "{env}: devd's deploy and a plain helm -f values-{env}.yaml differ");
        for (with_plan, alone) in deployed.iter().zip(&values_alone) {
            assert!(
                with_plan == alone,
                "{env}: devd's deploy and a plain helm -f values-{env}.yaml differ in {}/{} ({:?}):\nwith the plan: {with_plan}\nvalues alone: {alone}",
                alone["kind"].as_str().unwrap_or(""),
                alone["metadata"]["name"].as_str().unwrap_or(""),
                plan["values"]
            );
        }

        let services = plan["services"].as_array().unwrap();
        let mut expected: Vec<String> = services.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
        expected.sort();
        assert_eq!(names(&deployed, "Deployment"), expected, "{env}: deployments");
        let mut postgres = Vec::new();
        for service in services {
            let name = service["name"].as_str().unwrap();
            let deployment = find(&deployed, "Deployment", name).unwrap();
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            let image = format!("{}:{}", service["image"]["repository"].as_str().unwrap(), service["image"]["tag"].as_str().unwrap());
            assert_eq!(container["image"], image.as_str(), "{env}/{name}: image");
            assert_eq!(deployment["spec"]["replicas"], service["replicas"], "{env}/{name}: replicas");
            let config = &find(&deployed, "ConfigMap", name).unwrap()["data"];
            assert_eq!(config["PORT"], service["port"].to_string().as_str(), "{env}/{name}: port");
            let ports: Vec<&str> = container["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
            assert_eq!(ports.contains(&"shim"), plan["live_sync"] == true, "{env}/{name}: live sync = shim port {ports:?}");

            let db = &service["database"];
            match db["mode"].as_str().unwrap() {
                "none" => {
                    assert!(config["DB_HOST"].is_null(), "{env}/{name}: no database settings");
                    assert!(find(&deployed, "StatefulSet", &format!("postgres-{name}")).is_none());
                }
                mode => {
                    assert_eq!(config["DB_HOST"], db["host"], "{env}/{name}: DB_HOST");
                    assert_eq!(config["DB_PORT"], db["port"].to_string().as_str(), "{env}/{name}: DB_PORT");
                    assert_eq!(config["DB_NAME"], db["name"], "{env}/{name}: DB_NAME");
                    assert_eq!(config["DB_USER"], db["user"], "{env}/{name}: DB_USER");
                    let password = container["env"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["name"] == "DB_PASSWORD")
                        .expect("DB_PASSWORD");
                    let secret = &password["valueFrom"]["secretKeyRef"];
                    if mode == "external" {
                        // The existing Secret the plan names is the one the service reads.
                        assert_eq!(secret["name"], db["secret"]["name"], "{env}/{name}: password secret");
                        assert_eq!(secret["key"], db["secret"]["key"], "{env}/{name}: password key");
                    } else {
                        // In-cluster: the service reads its own Secret; the plan names the
                        // database's, which the chart renders beside it with the same key.
                        assert_eq!(secret["name"], name, "{env}/{name}: the service's own Secret");
                        let db_secret = db["secret"]["name"].as_str().unwrap();
                        assert!(find(&deployed, "Secret", db_secret).is_some(), "{env}/{name}: Secret {db_secret}");
                    }
                    let statefulset = find(&deployed, "StatefulSet", &format!("postgres-{name}"));
                    if mode == "in-cluster" {
                        postgres.push(format!("postgres-{name}"));
                        let claims = &statefulset.expect("postgres StatefulSet")["spec"]["volumeClaimTemplates"];
                        if db["persistence"] == true {
                            assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], db["size"], "{env}/{name}: size");
                        } else {
                            assert!(claims.is_null(), "{env}/{name}: no claims without persistence");
                        }
                    } else {
                        assert!(statefulset.is_none(), "{env}/{name}: external database, no postgres");
                    }
                }
            }
        }
        postgres.sort();
        assert_eq!(names(&deployed, "StatefulSet"), postgres, "{env}: postgres statefulsets");
    }
}
