//! The shape of the code, checked: devd's modules import each other without a cycle,
//! and no source file under devd/ or services/ (tests apart) grows past 800 lines.
//!
//! Imports are read from the source: every `crate::<module>` path outside comments,
//! in the module's files (a module `m` is `src/m.rs` and everything under `src/m/`),
//! test modules (`#[cfg(test)]` to the end of the file) left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() {
            // cargo's output (it holds CACHEDIR.TAG) is not source.
            let cargo_output = name == "target" && path.join("CACHEDIR.TAG").exists();
            if !cargo_output && !matches!(name.as_str(), "tests" | "fixtures" | "benches") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Top-level module → the top-level modules its code names as `crate::<m>`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component").as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if first == "lib" || first == "main" {
            continue;
        }
        let code = code(&std::fs::read_to_string(file).expect("read"));
        let uses = graph.entry(first.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != first {
                uses.insert(name);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// A cycle through `start`, as a path of modules, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    // Depth-first over paths from `start`; the graph has a few dozen nodes.
    let mut stack: Vec<Vec<String>> = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("non-empty").clone();
        for next in graph.get(&last).into_iter().flatten() {
            if next == start {
                let mut found = path.clone();
                found.push(start.to_owned());
                return Some(found);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn devds_modules_import_each_other_without_a_cycle() {
    let graph = module_graph(&root().join("devd/src"));
    assert!(graph.len() >= 10, "{graph:?}");
    let cycles: Vec<String> = graph.keys().filter_map(|m| cycle_through(&graph, m)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles between devd's modules:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
        ("d".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycle_through(&graph, "a").map(|c| c.join(" -> ")).as_deref(), Some("a -> b -> c -> a"));
    assert_eq!(cycle_through(&graph, "d"), None);
    assert_eq!(code("use crate::x; // crate::y\n#[cfg(test)]\nuse crate::z;"), "use crate::x; ");
}

/// The longest file allowed under devd/ and services/, tests and fixtures apart.
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_is_longer_than_800_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("devd"), &mut files);
    rust_files(&root().join("services"), &mut files);
    assert!(files.len() > 20, "{files:?}");
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).expect("read").lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.strip_prefix(root()).unwrap_or(f).display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines (split them by noun):\n{}", long.join("\n"));
}

/// The packages that `[profile.dev.package]` of the workspace's Cargo.toml builds at
/// another opt-level than the dev profile's.
fn opt_level_overrides() -> BTreeSet<String> {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml").parse().expect("Cargo.toml parses");
    let packages = manifest
        .get("profile")
        .and_then(|p| p.get("dev"))
        .and_then(|d| d.get("package"))
        .and_then(toml::Value::as_table)
        .expect("[profile.dev.package] in Cargo.toml");
    packages.iter().filter(|(_, o)| o.get("opt-level").is_some()).map(|(name, _)| name.clone()).collect()
}

/// Every package the workspace's services (the members under services/) build, their
/// tests included: their dependencies, build dependencies and proc macros, for every
/// platform, with the services' own dev-dependencies (features unified over the
/// workspace, as `cargo metadata` resolves them). And every package of the graph.
fn built_by_services() -> (BTreeSet<String>, BTreeSet<String>) {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(root().join("Cargo.toml"))
        .other_options(vec!["--locked".to_owned()])
        .exec()
        .expect("cargo metadata --locked");
    let resolve = metadata.resolve.as_ref().expect("cargo metadata resolves the workspace");
    let nodes: BTreeMap<_, _> = resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let services = root().join("services");
    let mut todo: Vec<_> = metadata
        .workspace_packages()
        .into_iter()
        .filter(|p| p.manifest_path.as_std_path().starts_with(&services))
        .map(|p| &p.id)
        .collect();
    assert!(todo.len() >= 3, "the services' packages: {todo:?}");
    let services: BTreeSet<_> = todo.iter().copied().collect();
    let mut seen = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in &nodes[id].deps {
            // A service's tests build its dev-dependencies; nothing else's are built.
            let built = services.contains(id) || dep.dep_kinds.iter().any(|k| k.kind != cargo_metadata::DependencyKind::Development);
            if built {
                todo.push(&dep.pkg);
            }
        }
    }
    let built = seen.into_iter().map(|id| metadata[id].name.to_string()).collect();
    let all = metadata.packages.iter().map(|p| p.name.to_string()).collect();
    (built, all)
}

#[test]
fn the_opt_level_of_devds_own_dependencies_changes_no_package_a_service_builds() {
    let overrides = opt_level_overrides();
    assert!(overrides.len() > 10 && overrides.contains("bollard"), "{overrides:?}");
    let (services, all) = built_by_services();
    assert!(services.contains("axum") && services.contains("tokio-postgres") && !services.contains("bollard"), "{services:?}");
    // cargo only warns about a name that matches no package: a misspelt one would
    // change nothing, and pass below.
    let unknown: Vec<&String> = overrides.iter().filter(|p| *p != "*" && !all.contains(*p)).collect();
    assert!(unknown.is_empty(), "[profile.dev.package] names packages the workspace does not have: {unknown:?}");
    // sha2: devd hashes every artifact with it (see its comment in Cargo.toml); the
    // services reach it through tokio-postgres's SCRAM authentication, and had it
    // optimized before devd's own dependencies were.
    let shared: Vec<&String> = overrides.iter().filter(|p| *p != "sha2" && services.contains(*p)).collect();
    assert!(
        shared.is_empty(),
        "Cargo.toml's [profile.dev.package] changes the opt-level of packages the services build, so a service's \
         `cargo build` is no longer the workspace's plain dev profile (bench row b): {shared:?}"
    );
}
