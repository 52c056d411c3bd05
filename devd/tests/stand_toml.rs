//! The shipped stand.toml: it parses, validates and resolves for every environment; the
//! plans match the golden JSON under tests/snapshots/; and every environment agrees with
//! the chart's helm/app/values-<env>.yaml (what devd deploys = what the values file says).
//!
//! The golden files are insta snapshots (`tests/snapshots/plan-<env>.snap`: a header
//! naming this file and the command, then the plan's JSON). Regenerate them with
//! `INSTA_UPDATE=always cargo nextest run -p devd --test stand_toml` (or review the
//! differences with `cargo insta review`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use devd::config::{self, DbMode, SslMode, Stand, Target};
use devd::plan::{self, Plan};
use serde_yaml_ng::Value;

/// The environments CONTRACTS.md promises.
const ENVIRONMENTS: [&str; 8] = [
    "dev",
    "local",
    "minimal",
    "prod",
    "service1-only",
    "service2-only",
    "staging",
    "test",
];

/// The services CONTRACTS.md and the golden plans describe.
const CONTRACT_SERVICES: [&str; 2] = ["service1", "service2"];

/// The triple the golden plans are written with.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("devd/ has a parent")
        .to_path_buf()
}

fn shipped() -> Stand {
    let root = root();
    let stand = match config::load(&root.join("stand.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = stand.validate_files(&root) {
        panic!("{e}");
    }
    stand
}

fn resolve(stand: &Stand, env: &str) -> Plan {
    match plan::resolve(stand, env, TRIPLE) {
        Ok(p) => p,
        Err(e) => panic!("{env}: {e}"),
    }
}

#[test]
fn shipped_stand_toml_declares_the_contract_environments() {
    let stand = shipped();
    assert_eq!(stand.env_names(), ENVIRONMENTS);
    assert_eq!(stand.section().default_env.get_ref(), "local");
    // The contract's services; `devd new` may add others.
    let names = stand.service_names();
    assert!(names.iter().any(|n| n == "service1") && names.iter().any(|n| n == "service2"), "{names:?}");
    assert_eq!(
        stand.service("service1").map(|s| *s.port.get_ref()),
        Some(5001)
    );
    assert_eq!(
        stand.service("service2").map(|s| *s.port.get_ref()),
        Some(5002)
    );
}

#[test]
fn every_environment_matches_its_golden_plan() {
    let stand = shipped();
    for env in ENVIRONMENTS {
        let mut plan = resolve(&stand, env);
        // The goldens hold the contract's services; a service added since (`devd new`)
        // is checked by the tests of the plan, not here.
        plan.services.retain(|s| CONTRACT_SERVICES.contains(&s.name.as_str()));
        let json = serde_json::to_string_pretty(&plan).expect("serializes");
        insta::with_settings!({
            snapshot_path => "snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!(
                "devd plan --env {env} --json of the shipped stand.toml (build triple x86_64-unknown-linux-gnu); \
                 regenerate: INSTA_UPDATE=always cargo nextest run -p devd --test stand_toml"
            ),
        }, {
            insta::assert_snapshot!(format!("plan-{env}"), json);
        });
    }
}

/// The semantics of issue 3, spelled out per environment.
#[test]
fn environments_mean_what_they_say() {
    let stand = shipped();
    let modes = |p: &Plan| -> Vec<(String, DbMode)> {
        p.services
            .iter()
            .filter(|s| CONTRACT_SERVICES.contains(&s.name.as_str()))
            .map(|s| (s.name.clone(), s.database.mode))
            .collect()
    };
    let both = |m: DbMode| vec![("service1".to_owned(), m), ("service2".to_owned(), m)];
    for env in ENVIRONMENTS {
        let p = resolve(&stand, env);
        assert_eq!(p.target, Target::Kubernetes, "{env}");
        assert_eq!(p.values, [format!("helm/app/values-{env}.yaml")], "{env}");
        assert_eq!(
            p.live_sync,
            !matches!(env, "staging" | "prod"),
            "{env}: live sync"
        );
        match env {
            "local" | "dev" | "test" => assert_eq!(modes(&p), both(DbMode::InCluster), "{env}"),
            "minimal" => assert_eq!(modes(&p), both(DbMode::None), "{env}"),
            "staging" | "prod" => assert_eq!(modes(&p), both(DbMode::External), "{env}"),
            "service1-only" => assert_eq!(modes(&p), [("service1".to_owned(), DbMode::InCluster)]),
            "service2-only" => assert_eq!(modes(&p), [("service2".to_owned(), DbMode::InCluster)]),
            other => panic!("unexpected environment {other}"),
        }
        for s in p.services.iter().filter(|s| CONTRACT_SERVICES.contains(&s.name.as_str())) {
            let db = &s.database;
            match env {
                "dev" => assert_eq!(
                    (db.persistence, db.size.as_deref()),
                    (Some(true), Some("2Gi"))
                ),
                "local" | "service1-only" | "service2-only" => {
                    assert_eq!(
                        (db.persistence, db.size.as_deref()),
                        (Some(true), Some("1Gi")),
                        "{env}"
                    )
                }
                "test" => assert_eq!((db.persistence, db.size.as_deref()), (Some(false), None)),
                "staging" | "prod" => {
                    assert!(db.host.is_some() && db.secret.is_some(), "{env}: {db:?}");
                    assert_eq!(db.sslmode, Some(SslMode::Prefer));
                }
                _ => {}
            }
            if env == "prod" {
                assert!(
                    s.replicas >= 2,
                    "prod runs at least 2 replicas of {}",
                    s.name
                );
            }
        }
    }
}

// ---- agreement with the chart's values files ------------------------------------------

/// The committed values files are what stand.toml gives (rust-analyzer's sourcegen
/// pattern: generate in memory, compare, fail with the command that fixes it).
#[test]
fn generated_values_files_are_up_to_date() {
    let stand = shipped();
    if let Err(e) = devd::values::check_files(&stand, &root()) {
        panic!("{e}\n\nthe generated Helm values are stale: run `devd generate` (cargo run -p devd -- generate) and commit the result");
    }
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Helm's merge of values files: maps merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn text(v: &Value, path: &str) -> Option<String> {
    match at(v, path) {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// For every environment: chart values (values.yaml + values-<env>.yaml, without devd's
/// `--set`) describe the same services, images, replicas and databases as the plan.
#[test]
fn environments_agree_with_the_chart_values_files() {
    let stand = shipped();
    let root = root();
    let chart = root.join(stand.section().chart.get_ref());
    let defaults = yaml(&chart.join("values.yaml"));
    for env in ENVIRONMENTS {
        let p = resolve(&stand, env);
        let mut values = defaults.clone();
        for file in &p.values {
            merge(&mut values, yaml(&root.join(file)));
        }
        let ctx = |what: &str| {
            format!(
                "env `{env}`: {what} (stand.toml vs {})",
                p.values.join(", ")
            )
        };

        assert_eq!(
            at(&values, "devSync.enabled").as_bool(),
            Some(p.live_sync),
            "{}",
            ctx("live sync")
        );

        let services = at(&values, "services").as_mapping().expect("services map");
        let enabled: BTreeSet<String> = services
            .iter()
            .filter(|(_, v)| at(v, "enabled").as_bool() == Some(true))
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect();
        let planned: BTreeSet<String> = p.services.iter().map(|s| s.name.clone()).collect();
        assert_eq!(enabled, planned, "{}", ctx("enabled services"));

        for s in &p.services {
            let v = at(&values, &format!("services.{}", s.name));
            let c = |what: &str| ctx(&format!("{}: {what}", s.name));
            assert_eq!(
                at(v, "port").as_u64(),
                Some(u64::from(s.port)),
                "{}",
                c("port")
            );
            assert_eq!(
                at(v, "replicas").as_u64(),
                Some(u64::from(s.replicas)),
                "{}",
                c("replicas")
            );
            assert_eq!(
                text(v, "image.repository").as_deref(),
                Some(s.image.repository.as_str()),
                "{}",
                c("image")
            );
            assert_eq!(
                text(v, "image.tag").as_deref(),
                Some(s.image.tag.as_str()),
                "{}",
                c("image tag")
            );
            let db = &s.database;
            let mode = match db.mode {
                DbMode::InCluster => "inCluster",
                DbMode::External => "external",
                DbMode::None => "none",
            };
            assert_eq!(
                text(v, "database.mode").as_deref(),
                Some(mode),
                "{}",
                c("database mode")
            );
            if db.mode == DbMode::None {
                continue;
            }
            assert_eq!(text(v, "database.name"), db.name, "{}", c("database name"));
            assert_eq!(text(v, "database.user"), db.user, "{}", c("database user"));
            match db.mode {
                DbMode::InCluster => {
                    let persistent = at(v, "database.inCluster.persistence.enabled").as_bool();
                    assert_eq!(persistent, db.persistence, "{}", c("persistence"));
                    if db.persistence == Some(true) {
                        let size = text(v, "database.inCluster.persistence.size");
                        assert_eq!(size, db.size, "{}", c("volume size"));
                        let class = text(v, "database.inCluster.persistence.storageClass");
                        assert_eq!(class, db.storage_class, "{}", c("storage class"));
                    }
                }
                DbMode::External => {
                    assert_eq!(text(v, "database.external.host"), db.host, "{}", c("host"));
                    assert_eq!(
                        at(v, "database.external.port").as_u64(),
                        db.port.map(u64::from),
                        "{}",
                        c("port")
                    );
                    let sslmode = db.sslmode.map(|m| m.to_string());
                    assert_eq!(
                        text(v, "database.external.sslmode"),
                        sslmode,
                        "{}",
                        c("sslmode")
                    );
                    let secret = db
                        .secret
                        .as_ref()
                        .expect("external databases name a secret");
                    let name = text(v, "database.external.existingSecret.name");
                    assert_eq!(
                        name.as_deref(),
                        Some(secret.name.as_str()),
                        "{}",
                        c("secret name")
                    );
                    let key = text(v, "database.external.existingSecret.key");
                    assert_eq!(
                        key.as_deref(),
                        Some(secret.key.as_str()),
                        "{}",
                        c("secret key")
                    );
                }
                DbMode::None => {}
            }
        }
    }
}
