//! The Tiltfile tests, the chart tests and devd's command-line crate take the stand's
//! facts from `stand-model` and `stand-cli`, never from devd: none of them reaches devd
//! or its async runtime, Docker, Kubernetes or HTTP clients through any dependency
//! (normal, dev or build) that Cargo.lock records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What the packages below must not reach.
const HEAVY: &[&str] = &["devd", "tokio", "bollard", "kube", "kube-client", "hyper", "reqwest", "axum", "notify"];

/// Cargo.lock's packages: (name, version) → its dependencies as (name, version).
fn lock_graph() -> BTreeMap<(String, String), Vec<(String, String)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lock: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let packages = lock.get("package").and_then(toml::Value::as_array).expect("Cargo.lock has [[package]]");
    let field = |p: &toml::Value, key: &str| p.get(key).and_then(toml::Value::as_str).unwrap_or_default().to_owned();
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in packages {
        versions.entry(field(p, "name")).or_default().push(field(p, "version"));
    }
    let mut graph = BTreeMap::new();
    for p in packages {
        let deps = p.get("dependencies").and_then(toml::Value::as_array).cloned().unwrap_or_default();
        let deps = deps
            .iter()
            .filter_map(toml::Value::as_str)
            .map(|d| {
                // `name` when one version is locked, else `name version` (and maybe a source).
                let mut parts = d.split(' ');
                let name = parts.next().unwrap_or_default().to_owned();
                let version = match parts.next() {
                    Some(v) => v.to_owned(),
                    None => versions.get(&name).and_then(|v| v.first()).cloned().unwrap_or_default(),
                };
                (name, version)
            })
            .collect();
        graph.insert((field(p, "name"), field(p, "version")), deps);
    }
    graph
}

/// Every package `root` reaches, each with the path it is reached by.
fn reached(graph: &BTreeMap<(String, String), Vec<(String, String)>>, root: &str) -> BTreeMap<String, Vec<String>> {
    let start = graph.keys().find(|(n, _)| n == root).unwrap_or_else(|| panic!("{root} is not in Cargo.lock")).clone();
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(start, vec![root.to_owned()])];
    while let Some((key, path)) = stack.pop() {
        if !seen.insert(key.clone()) {
            continue;
        }
        out.entry(key.0.clone()).or_insert_with(|| path.clone());
        for dep in graph.get(&key).into_iter().flatten() {
            let mut p = path.clone();
            p.push(dep.0.clone());
            stack.push((dep.clone(), p));
        }
    }
    out
}

#[test]
fn the_tilt_and_chart_tests_and_stand_cli_do_not_reach_devd() {
    let graph = lock_graph();
    for root in ["tilt-tests", "chart-tests", "stand-cli"] {
        let reached = reached(&graph, root);
        assert!(reached.contains_key("stand-model"), "{root} takes its facts from stand-model: {:?}", reached.keys());
        let heavy: Vec<String> =
            HEAVY.iter().filter_map(|h| reached.get(*h)).map(|path| path.join(" -> ")).collect();
        assert!(heavy.is_empty(), "{root} reaches what it must not:\n{}", heavy.join("\n"));
    }
    // The walk does follow dependencies: devd itself reaches them all.
    let devd = reached(&graph, "devd");
    for h in HEAVY.iter().filter(|h| **h != "devd") {
        assert!(devd.contains_key(*h), "devd reaches {h}");
    }
}
