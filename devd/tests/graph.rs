//! The workspace graph against real `cargo metadata` on the fixture workspace.

mod fixtures;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use devd::graph::WorkspaceGraph;

const SERVICES: &[&str] = &["svc1", "svc2"];

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn load() -> (fixtures::Fixture, WorkspaceGraph) {
    let fx = fixtures::workspace();
    let graph = WorkspaceGraph::load(&fx.root).expect("cargo metadata on the fixture");
    (fx, graph)
}

/// One changed path -> the services it affects.
fn check(graph: &WorkspaceGraph, path: &Path, expected: &[&str]) {
    assert_eq!(
        graph.affected_services(&[path], SERVICES),
        set(expected),
        "affected services for {}",
        path.display()
    );
}

#[test]
fn graph_maps_paths_to_services() {
    let (fx, graph) = load();

    // A service's own source -> that service only.
    check(&graph, &fx.path("services/svc1/src/main.rs"), &["svc1"]);
    check(&graph, &fx.path("services/svc2/build.rs"), &["svc2"]);
    check(&graph, &fx.path("services/svc2/Cargo.toml"), &["svc2"]);
    // The shared crate -> both; its own dependency too (transitively).
    check(&graph, &fx.path("crates/shared/src/lib.rs"), &["svc1", "svc2"]);
    check(&graph, &fx.path("crates/core/src/lib.rs"), &["svc1", "svc2"]);
    // A build dependency counts, a dev dependency does not.
    check(&graph, &fx.path("crates/buildhelper/src/lib.rs"), &["svc2"]);
    check(&graph, &fx.path("crates/testonly/src/lib.rs"), &[]);
    // Unrelated files -> none.
    check(&graph, &fx.path("docs/notes.md"), &[]);
    check(&graph, &fx.path(".gitignore"), &[]);
    check(&graph, Path::new("/somewhere/else/entirely.rs"), &[]);
    // Workspace-wide files -> all.
    check(&graph, &fx.path("Cargo.toml"), &["svc1", "svc2"]);
    check(&graph, &fx.path("Cargo.lock"), &["svc1", "svc2"]);
    // The nested package is innermost: it is not part of svc1.
    check(&graph, &fx.path("services/svc1/plugin/src/lib.rs"), &[]);
    // Several paths at once: the union.
    assert_eq!(
        graph.affected_services(
            &[fx.path("services/svc1/src/main.rs"), fx.path("crates/buildhelper/src/lib.rs")],
            SERVICES
        ),
        set(&["svc1", "svc2"])
    );
    // Only the services asked about are reported.
    assert_eq!(
        graph.affected_services(&[fx.path("crates/shared/src/lib.rs")], &["svc2"]),
        set(&["svc2"])
    );
}

#[test]
fn packages_for_path_is_innermost_and_tolerates_missing_and_relative_paths() {
    let (fx, graph) = load();
    assert_eq!(
        graph.packages_for_path(&fx.path("services/svc1/plugin/src/lib.rs")),
        vec!["svc1-plugin".to_string()]
    );
    assert_eq!(
        graph.packages_for_path(&fx.path("services/svc1/src/main.rs")),
        vec!["svc1".to_string()]
    );
    // A file that was deleted (or never existed) still maps through its directory.
    assert_eq!(
        graph.packages_for_path(&fx.path("crates/shared/src/gone/deleted.rs")),
        vec!["fx-shared".to_string()]
    );
    // Relative to the workspace root, `..` resolved lexically.
    assert_eq!(
        graph.packages_for_path(Path::new("services/svc2/../svc2/src/main.rs")),
        vec!["svc2".to_string()]
    );
    let all: Vec<String> = graph.packages().map(|p| p.name.clone()).collect();
    assert_eq!(graph.packages_for_path(Path::new("Cargo.toml")), all);
    assert_eq!(all.len(), 7);
}

#[test]
fn graph_exposes_dirs_bins_and_closure() {
    let (fx, graph) = load();
    assert_eq!(graph.root(), fx.root.as_path());
    assert_eq!(graph.watch_dirs(), vec![fx.root.clone()]);
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        assert_eq!(graph.target_dir(), fx.root.join("target").as_path());
    }
    let svc1 = graph.package("svc1").expect("svc1 is a member");
    assert_eq!(svc1.bins, vec!["svc1".to_string()]);
    assert_eq!(svc1.manifest_dir, fx.path("services/svc1"));
    assert!(graph.package("fx-shared").expect("member").bins.is_empty());
    assert_eq!(
        graph.dependents_closure("fx-core"),
        set(&["fx-core", "fx-shared", "svc1", "svc2"])
    );
    assert_eq!(graph.dependents_closure("no-such-package"), BTreeSet::new());
}

#[test]
fn graph_load_reports_a_missing_workspace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing: PathBuf = dir.path().join("nothing-here");
    let err = WorkspaceGraph::load(&missing).expect_err("no Cargo.toml there");
    let text = err.to_string();
    assert!(text.contains("cargo metadata failed in"), "{text}");
    assert!(text.contains("nothing-here"), "{text}");
}

/// What a change needs recompiled when devd may run rustc itself (devd::replay).
#[test]
fn replay_scope_covers_source_only_changes() {
    let (fx, graph) = load();
    let scope = |rel: &[&str], requested: &[&str]| {
        let paths: Vec<PathBuf> = rel.iter().map(|r| fx.path(r)).collect();
        graph.replay_scope(&paths, requested).map(|s| (s.libs, s.bins))
    };
    let bins = |names: &[&str]| names.iter().map(|n| (n.to_string(), n.to_string())).collect::<Vec<_>>();
    let libs = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();

    // svc1 is a binary only: its own edit recompiles just that binary.
    assert_eq!(scope(&["services/svc1/src/main.rs"], &["svc1"]), Some((libs(&[]), bins(&["svc1"]))));
    // A shared crate: it, then what depends on it on the way to svc1, in that order.
    assert_eq!(scope(&["crates/shared/src/lib.rs"], &["svc1"]), Some((libs(&["fx-shared"]), bins(&["svc1"]))));
    assert_eq!(
        scope(&["crates/core/src/lib.rs", "services/svc1/src/main.rs"], &["svc1"]),
        Some((libs(&["fx-core", "fx-shared"]), bins(&["svc1"])))
    );
    // Paths outside every package are left out.
    assert_eq!(
        scope(&["docs/notes.md", "services/svc1/src/main.rs"], &["svc1"]),
        Some((libs(&[]), bins(&["svc1"])))
    );

    // cargo builds: manifests, the lock file, build scripts and packages with one,
    // a change that reaches no requested package, a change of nothing that builds.
    assert_eq!(scope(&["services/svc1/Cargo.toml"], &["svc1"]), None);
    assert_eq!(scope(&["Cargo.lock", "services/svc1/src/main.rs"], &["svc1"]), None);
    assert_eq!(scope(&["services/svc2/build.rs"], &["svc2"]), None);
    assert_eq!(scope(&["services/svc2/src/main.rs"], &["svc2"]), None, "svc2 has a build script");
    assert_eq!(scope(&["crates/shared/src/lib.rs"], &["svc1", "svc2"]), None);
    assert_eq!(scope(&["services/svc1/src/main.rs"], &["svc2"]), None);
    assert_eq!(scope(&["docs/notes.md"], &["svc1"]), None);
    assert_eq!(scope(&["services/svc1/src/main.rs"], &["no-such-package"]), None);
}

/// The workspace crates a change reaches (kept out of the dependencies' shared
/// library from then on) are named as rustc names them: a `[lib] name` that is not
/// the package's name counts; a library the replay does not need counts too.
#[test]
fn replay_scope_names_member_libraries_by_their_crate_name() {
    let fx = fixtures::workspace();
    let manifest = std::fs::read_to_string(fx.path("crates/core/Cargo.toml")).expect("core manifest");
    fx.write("crates/core/Cargo.toml", &format!("{manifest}\n[lib]\nname = \"fx_kernel\"\npath = \"src/lib.rs\"\n"));
    // A library on fx-core that svc1 does not need.
    fx.write("crates/extra/Cargo.toml", "[package]\nname = \"fx-extra\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nfx-core = { path = \"../core\" }\n");
    fx.write("crates/extra/src/lib.rs", "pub fn more() -> u32 { fx_kernel::base() }\n");
    let workspace = std::fs::read_to_string(fx.path("Cargo.toml")).expect("workspace manifest");
    fx.write("Cargo.toml", &workspace.replace("    \"crates/core\",\n", "    \"crates/core\",\n    \"crates/extra\",\n"));
    let graph = WorkspaceGraph::load(&fx.root).expect("cargo metadata on the fixture");
    let scope = graph.replay_scope(&[fx.path("crates/core/src/lib.rs")], &["svc1"]).expect("a replay scope");
    assert_eq!(scope.changed, set(&["fx_extra", "fx_kernel", "fx_shared"]), "fx-extra is stale too, though svc1 does not need it");
    assert_eq!(scope.libs, ["fx-core", "fx-shared"], "what the replay recompiles");
    let scope = graph.replay_scope(&[fx.path("crates/shared/src/lib.rs")], &["svc1"]).expect("a replay scope");
    assert_eq!(scope.changed, set(&["fx_shared"]), "fx-core is not recompiled");
}
