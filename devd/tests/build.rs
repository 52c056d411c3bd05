//! The builder against real cargo on a temp copy of the fixture workspace.
//!
//! Each test has its own target dir: cargo copies ("uplifts") every binary to
//! `target/<profile>/<name>`, so two tests sharing one target dir could overwrite
//! each other's `svc1` between a build and the copy into the artifact store. The
//! fixture has no external dependencies and builds in about a second.

mod fixtures;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devd::build::{
    Artifact, BuildConfig, BuildErrorKind, BuildOutput, BuildProgress, BuildRequest, BuildTarget, Builder,
};
use devd::graph::WorkspaceGraph;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

struct Env {
    fx: fixtures::Fixture,
    builder: Builder,
    state_dir: PathBuf,
}

fn env() -> Env {
    let fx = fixtures::workspace();
    let scratch = fx.root.parent().expect("temp dir").to_path_buf();
    let state_dir = scratch.join("state");
    let mut config = BuildConfig::new(&fx.root, &state_dir);
    config.target_dir = Some(scratch.join("target"));
    Env { fx, builder: Builder::new(config), state_dir }
}

fn request(packages: &[&str], cause: &[PathBuf]) -> BuildRequest {
    BuildRequest {
        targets: packages.iter().map(|p| BuildTarget::package(*p)).collect(),
        cause: cause.iter().cloned().collect(),
        replay: None,
        static_link: BTreeSet::new(),
    }
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read artifact")))
}

fn run(artifact: &Artifact) -> String {
    let out = std::process::Command::new(&artifact.path).output().expect("run artifact");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn two_packages_build_in_one_invocation_into_hashed_artifacts() {
    let e = env();
    let cause = vec![e.fx.path("crates/shared/src/lib.rs")];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = e
        .builder
        .build(&request(&["svc1", "svc2"], &cause), Some(tx))
        .await
        .expect("fixture builds");
    eprintln!("fixture build (svc1 + svc2, cold): {} ms", out.duration_ms);

    let mut starts = Vec::new();
    let mut stderr = Vec::new();
    let mut units = Vec::new();
    while let Ok(p) = rx.try_recv() {
        match p {
            BuildProgress::Started { command, .. } => starts.push(command),
            BuildProgress::Stderr(line) => stderr.push(line),
            BuildProgress::Units { done, total } => units.push((done, total)),
        }
    }
    // cargo's own count of units (its progress bar, on a pipe), not its bar's text.
    assert!(!units.is_empty() && units.iter().all(|&(done, total)| done <= total && total >= 6), "{units:?}");
    assert!(!stderr.iter().chain(&out.stderr_tail).any(|l| l.contains("Building [")), "{stderr:?}");
    assert_eq!(starts.len(), 1, "one cargo invocation: {starts:?}");
    assert!(starts[0].contains("-p svc1 -p svc2"), "{}", starts[0]);
    assert!(stderr.iter().any(|l| l.contains("Compiling fx-shared")), "{stderr:?}");
    assert!(out.stderr_tail.iter().any(|l| l.contains("Finished")), "{:?}", out.stderr_tail);

    assert_eq!(out.artifacts.len(), 2);
    for (artifact, name) in out.artifacts.iter().zip(["svc1", "svc2"]) {
        assert_eq!(artifact.package, name);
        assert_eq!(artifact.bin, name);
        assert_eq!(artifact.sha256, sha256_of(&artifact.path));
        assert_eq!(artifact.size, std::fs::metadata(&artifact.path).expect("stat").len());
        assert_eq!(
            artifact.path,
            e.state_dir.join("artifacts").join(name).join(&artifact.sha256)
        );
        assert_eq!(artifact.cause, cause.iter().cloned().collect::<BTreeSet<_>>());
        assert_eq!(artifact.build_duration_ms, out.duration_ms);
        assert!(!artifact.fresh);
        assert_eq!(run(artifact), format!("{name} 42"));
    }
    assert_ne!(out.artifacts[0].sha256, out.artifacts[1].sha256);

    // Nothing changed: cargo reports the binaries fresh, same hashes, same files.
    let again = e.builder.build(&request(&["svc1", "svc2"], &[]), None).await.expect("rebuild");
    eprintln!("fixture build (no change): {} ms", again.duration_ms);
    for (a, b) in out.artifacts.iter().zip(&again.artifacts) {
        assert_eq!((&a.sha256, &a.path), (&b.sha256, &b.path));
        assert!(b.fresh);
    }
}

#[tokio::test]
async fn a_syntax_error_yields_the_rendered_error_and_keeps_the_old_artifact() {
    let e = env();
    let good = e.builder.build(&request(&["svc1"], &[]), None).await.expect("first build");
    let old = good.artifacts[0].clone();
    let old_bytes = std::fs::read(&old.path).expect("old artifact");

    let main_rs = e.fx.write("services/svc1/src/main.rs", "fn main() { let x = ; }\n");
    let err = e
        .builder
        .build(&request(&["svc1"], std::slice::from_ref(&main_rs)), None)
        .await
        .expect_err("syntax error");
    assert_eq!(err.kind, BuildErrorKind::Compile);
    assert!(err.message.contains("1 compiler error"), "{}", err.message);
    assert!(err.rendered.contains("error: expected expression"), "{}", err.rendered);
    assert!(err.rendered.contains("services/svc1/src/main.rs:1:"), "{}", err.rendered);
    assert!(!err.rendered.contains("aborting due to"), "{}", err.rendered);
    assert!(err.stderr_tail.iter().any(|l| l.contains("could not compile `svc1`")), "{:?}", err.stderr_tail);
    // The previous artifact is untouched.
    assert_eq!(std::fs::read(&old.path).expect("old artifact still there"), old_bytes);
    assert_eq!(sha256_of(&old.path), old.sha256);

    // Fixing it recovers, with a new artifact beside the old one.
    e.fx.write("services/svc1/src/main.rs", "fn main() { println!(\"svc1 fixed {}\", fx_shared::answer()); }\n");
    let fixed = e.builder.build(&request(&["svc1"], &[main_rs]), None).await.expect("fixed");
    let new = &fixed.artifacts[0];
    eprintln!("fixture rebuild after editing svc1's main.rs: {} ms", fixed.duration_ms);
    assert_ne!(new.sha256, old.sha256);
    assert_eq!(run(new), "svc1 fixed 42");
    assert_eq!(run(&old), "svc1 42");
}

#[tokio::test]
async fn cargo_and_toolchain_failures_are_reported() {
    let e = env();
    let err = e
        .builder
        .build(&request(&["no-such-service"], &[]), None)
        .await
        .expect_err("unknown package");
    assert_eq!(err.kind, BuildErrorKind::Cargo);
    assert!(err.rendered.contains("no-such-service"), "{}", err.rendered);

    let mut config = e.builder.config().clone();
    config.target = Some("x86_64-devd-none".into());
    let err = Builder::new(config)
        .build(&request(&["svc1"], &[]), None)
        .await
        .expect_err("target not installed");
    assert_eq!(err.kind, BuildErrorKind::Toolchain);
    assert!(err.rendered.contains("`rustup target add x86_64-devd-none`"), "{}", err.rendered);
}

/// The niceness of a process from `/proc/<pid>/stat` (field 19, after the `)` of the
/// command name).
fn niceness(stat: &str) -> i32 {
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat has a command name").1.split_whitespace().collect();
    fields[16].parse().expect("niceness")
}

/// Builds run below devd's priority, and what cargo starts inherits it: a build script
/// reads its own niceness from /proc.
#[tokio::test]
async fn builds_run_nicer_than_devd() {
    let e = env();
    let recorded = e.fx.root.join("build-script-niceness");
    e.fx.write(
        "services/svc1/build.rs",
        &format!(
            "fn main() {{\n    let stat = std::fs::read_to_string(\"/proc/self/stat\").unwrap();\n    std::fs::write({:?}, stat).unwrap();\n}}\n",
            recorded.display().to_string()
        ),
    );
    e.builder.build(&request(&["svc1"], &[]), None).await.expect("fixture builds");
    let own = niceness(&std::fs::read_to_string("/proc/self/stat").expect("own stat"));
    let script = niceness(&std::fs::read_to_string(&recorded).expect("the build script ran"));
    assert!(own < 19, "the suite runs at niceness {own}: nothing can be nicer, this test proves nothing there");
    assert_eq!(script, (own + devd::priority::BUILD_NICENESS).min(19), "build script niceness");
}

#[tokio::test]
async fn dropping_a_build_kills_cargo() {
    let e = env();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let req = request(&["svc1", "svc2"], &[]);
    let build = e.builder.build(&req, Some(tx));
    let pid = tokio::select! {
        _ = build => panic!("the build ended before it was cancelled"),
        pid = async {
            loop {
                match rx.recv().await {
                    Some(BuildProgress::Started { pid, .. }) => break pid,
                    Some(_) => {}
                    None => panic!("no start reported"),
                }
            }
        } => pid,
    };
    // The build future is dropped here: cargo's process group is killed.
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Missing, or a zombie waiting for tokio's reaper: not running either way.
            if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "cargo (pid {pid}) still running after the build was dropped");
}

/// Builds and returns the output and the commands it started (cargo, or replayed rustc).
/// A builder like `e`'s that records the rustc command lines of its cargo builds
/// (devd as cargo's rustc wrapper), so that later edits are replayed.
fn recording(e: &Env) -> Builder {
    let mut config = e.builder.config().clone();
    config.rustc_recorder = Some(PathBuf::from(env!("CARGO_BIN_EXE_devd")));
    Builder::new(config)
}

/// A build of `packages` caused by `paths`, with the replay scope the daemon would give it.
fn replay_request(graph: &WorkspaceGraph, packages: &[&str], paths: Vec<PathBuf>) -> BuildRequest {
    BuildRequest { replay: graph.replay_scope(&paths, packages), ..request(packages, &paths) }
}

/// A second service without a build script (svc2 has one: cargo's), like svc1: `svc3`,
/// which prints fx-shared's answer.
fn add_svc3(e: &Env) {
    e.fx.write(
        "services/svc3/Cargo.toml",
        "[package]\nname = \"svc3\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nfx-shared = { path = \"../../crates/shared\" }\n",
    );
    e.fx.write("services/svc3/src/main.rs", "fn main() { println!(\"svc3 {}\", fx_shared::answer()); }\n");
    let workspace = std::fs::read_to_string(e.fx.path("Cargo.toml")).expect("workspace manifest");
    e.fx.write("Cargo.toml", &workspace.replace("    \"services/svc2\",\n", "    \"services/svc2\",\n    \"services/svc3\",\n"));
}

async fn build_and_starts(builder: &Builder, req: &BuildRequest) -> (Result<BuildOutput, devd::build::BuildError>, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = builder.build(req, Some(tx)).await;
    let mut starts = Vec::new();
    while let Ok(p) = rx.try_recv() {
        if let BuildProgress::Started { command, .. } = p {
            starts.push(command);
        }
    }
    (out, starts)
}

/// devd's fast path (devd::replay): once a cargo build has recorded the rustc command
/// lines, a change of sources runs those rustc units directly; whatever it cannot do
/// (nothing recorded yet, a compiler error) is cargo's, and cargo stays correct after.
#[tokio::test]
async fn source_edits_replay_the_recorded_rustc_runs() {
    let e = env();
    let builder = recording(&e);
    let graph = WorkspaceGraph::load(&e.fx.root).expect("cargo metadata");
    let scoped = |rel: &str| replay_request(&graph, &["svc1"], vec![e.fx.path(rel)]);
    let main_rs = "services/svc1/src/main.rs";

    // Nothing recorded yet: cargo builds, through devd as its rustc wrapper.
    let (first, starts) = build_and_starts(&builder, &scoped(main_rs)).await;
    let first = first.expect("first build");
    assert!(!first.replayed);
    assert!(starts.len() == 1 && starts[0].contains("cargo build"), "{starts:?}");
    assert_eq!(run(&first.artifacts[0]), "svc1 42");
    assert_eq!(builder.recorded_units(), ["fx-core lib", "fx-shared lib", "svc1 bin svc1"]);
    let records = e.state_dir.join("rustc-records");
    assert_eq!(std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0), 0, "records are read and removed");

    // A service's source: its binary alone, by rustc, without cargo.
    e.fx.write(main_rs, "fn main() { println!(\"svc1 replayed {}\", fx_shared::answer()); }\n");
    let (out, starts) = build_and_starts(&builder, &scoped(main_rs)).await;
    let out = out.expect("replayed build");
    assert!(out.replayed);
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert!(starts[0].contains("(bin svc1 of svc1, replayed)"), "{starts:?}");
    let replayed = &out.artifacts[0];
    assert_eq!(run(replayed), "svc1 replayed 42");
    assert_eq!(replayed.sha256, sha256_of(&replayed.path));
    assert_eq!(replayed.cause, BTreeSet::from([e.fx.path(main_rs)]));
    assert!(!replayed.fresh);
    eprintln!("svc1 edit, replayed: {} ms", out.duration_ms);

    // A shared crate: the library, then the binary, in dependency order.
    e.fx.write("crates/shared/src/lib.rs", "pub fn answer() -> u32 { fx_core::base() + 3 }\n");
    let (out, starts) = build_and_starts(&builder, &scoped("crates/shared/src/lib.rs")).await;
    assert_eq!(run(&out.expect("replayed build").artifacts[0]), "svc1 replayed 43");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts[0].contains("(lib of fx-shared, replayed)") && starts[1].contains("(bin svc1 of svc1"), "{starts:?}");

    // A compiler error is cargo's to report; the last artifact stays as it was.
    e.fx.write(main_rs, "fn main() { let x = ; }\n");
    let (err, starts) = build_and_starts(&builder, &scoped(main_rs)).await;
    let err = err.expect_err("syntax error");
    assert_eq!(err.kind, BuildErrorKind::Compile);
    assert!(err.rendered.contains("services/svc1/src/main.rs:1:"), "{}", err.rendered);
    assert!(starts.last().is_some_and(|s| s.contains("cargo build")), "{starts:?}");
    assert_eq!(run(replayed), "svc1 replayed 42");

    // A failed cargo build leaves the command lines of what it ran unknown: the fix
    // goes through cargo, which records again; the next edit is replayed.
    assert!(builder.recorded_units().is_empty(), "{:?}", builder.recorded_units());
    e.fx.write(main_rs, "fn main() { println!(\"svc1 fixed {}\", fx_shared::answer()); }\n");
    let (out, starts) = build_and_starts(&builder, &scoped(main_rs)).await;
    assert!(starts.len() == 1 && starts[0].contains("cargo build"), "{starts:?}");
    assert_eq!(run(&out.expect("fixed").artifacts[0]), "svc1 fixed 43");
    e.fx.write(main_rs, "fn main() { println!(\"svc1 fixed again {}\", fx_shared::answer()); }\n");
    let (out, starts) = build_and_starts(&builder, &scoped(main_rs)).await;
    assert!(starts.len() == 1 && starts[0].contains("replayed"), "{starts:?}");
    assert_eq!(run(&out.expect("replayed again").artifacts[0]), "svc1 fixed again 43");

    // cargo, asked without a scope, agrees with the replay even when a file comes back
    // with an old mtime (`cp -p`, a restore): the replay removed cargo's fingerprints of
    // the units it ran, so cargo recompiles them whatever the mtimes say. (fx-shared
    // was fresh in the cargo build after the failure, so its first edit records it.)
    let shared = "crates/shared/src/lib.rs";
    let answer = |n: u32| format!("pub fn answer() -> u32 {{ fx_core::base() + {n} }}\n");
    e.fx.write(shared, &answer(4));
    let (out, starts) = build_and_starts(&builder, &scoped(shared)).await;
    assert!(starts.len() == 1 && starts[0].contains("cargo build"), "{starts:?}");
    assert_eq!(run(&out.expect("cargo build").artifacts[0]), "svc1 fixed again 44");
    e.fx.write(shared, &answer(5));
    let (out, starts) = build_and_starts(&builder, &scoped(shared)).await;
    assert!(starts.iter().all(|s| s.contains("replayed")), "{starts:?}");
    assert_eq!(run(&out.expect("replayed").artifacts[0]), "svc1 fixed again 45");
    // Back to what cargo compiled last, dated before that compilation.
    let restored = e.fx.write(shared, &answer(4));
    let long_ago = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800); // 2000-01-01
    std::fs::File::options().write(true).open(&restored).and_then(|f| f.set_modified(long_ago)).expect("set mtime");
    let (out, starts) = build_and_starts(&builder, &request(&["svc1"], &[])).await;
    assert!(starts.len() == 1 && starts[0].contains("cargo build"), "{starts:?}");
    let out = out.expect("cargo build");
    assert!(!out.artifacts[0].fresh, "cargo recompiled what the replay built");
    assert_eq!(run(&out.artifacts[0]), "svc1 fixed again 44");
}

/// A shared library's edit wanted by two services: one replay compiles the library once,
/// then both binaries (side by side, devd::replay::run); each artifact is its own
/// binary with the edit. A compiler error in one of those binaries hands the whole
/// build to cargo, which reports it; no artifact of that build comes out.
#[tokio::test]
async fn a_shared_edit_replays_the_library_once_and_every_binary() {
    let e = env();
    add_svc3(&e);
    let builder = recording(&e);
    let graph = WorkspaceGraph::load(&e.fx.root).expect("cargo metadata");
    let both = ["svc1", "svc3"];
    let scoped = |rel: &str| replay_request(&graph, &both, vec![e.fx.path(rel)]);
    let shared = "crates/shared/src/lib.rs";
    let (first, _) = build_and_starts(&builder, &scoped(shared)).await;
    assert!(!first.expect("first build").replayed);

    e.fx.write(shared, "pub fn answer() -> u32 { fx_core::base() + 7 }\n");
    let (out, starts) = build_and_starts(&builder, &scoped(shared)).await;
    let out = out.expect("replayed build");
    assert!(out.replayed);
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts[0].contains("(lib of fx-shared, replayed)"), "{starts:?}");
    let bins: BTreeSet<&str> = starts[1..]
        .iter()
        .filter_map(|s| both.into_iter().find(|b| s.contains(&format!("(bin {b} of {b}, replayed)"))))
        .collect();
    assert_eq!(bins, BTreeSet::from(both), "{starts:?}");
    let outputs: Vec<String> = out.artifacts.iter().map(run).collect();
    assert_eq!(outputs, ["svc1 47", "svc3 47"]);
    for artifact in &out.artifacts {
        assert_eq!(artifact.sha256, sha256_of(&artifact.path));
    }

    e.fx.write("services/svc3/src/main.rs", "fn main() { let x = ; }\n");
    e.fx.write(shared, "pub fn answer() -> u32 { fx_core::base() + 8 }\n");
    let paths = vec![e.fx.path(shared), e.fx.path("services/svc3/src/main.rs")];
    let request = replay_request(&graph, &both, paths);
    let (err, starts) = build_and_starts(&builder, &request).await;
    assert!(starts.iter().any(|s| s.contains("(bin svc3 of svc3, replayed)")), "the replay ran first: {starts:?}");
    let err = err.expect_err("svc3 does not compile");
    assert_eq!(err.kind, BuildErrorKind::Compile);
    assert!(err.rendered.contains("services/svc3/src/main.rs:1:"), "{}", err.rendered);
    assert!(starts.last().is_some_and(|s| s.contains("cargo build")), "{starts:?}");
}

/// A devd restart over a binary linked against the dependencies' library: the new
/// builder's first build (cargo's, static) is linked against that library again and
/// gives the very bytes the last replay gave, so nothing is delivered; an edit made
/// while devd was down comes out with the edit (and other bytes).
#[tokio::test]
async fn after_a_restart_the_first_build_is_the_binary_the_last_replay_linked() {
    let e = env();
    let builder = recording(&e);
    let graph = WorkspaceGraph::load(&e.fx.root).expect("cargo metadata");
    let main_rs = "services/svc1/src/main.rs";
    let scoped = || replay_request(&graph, &["svc1"], vec![e.fx.path(main_rs)]);
    assert!(!builder.build(&scoped(), None).await.expect("first build").replayed);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    let dynamic = loop {
        n += 1;
        e.fx.write(main_rs, &format!("fn main() {{ println!(\"svc1 r{n} {{}}\", fx_shared::answer()); }}\n"));
        let out = builder.build(&scoped(), None).await.expect("replayed build");
        assert!(out.replayed);
        if !out.artifacts[0].libs.is_empty() {
            break out.artifacts[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{n} edits and none linked against the library");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(builder);
    // A builder as the daemon has it (`devd build` keeps cargo's static binaries).
    let daemons = || {
        let mut config = recording(&e).config().clone();
        config.relink_first_build = true;
        Builder::new(config)
    };
    let restarted = daemons();
    let out = restarted.build(&request(&["svc1"], &[]), None).await.expect("the first build after the restart");
    assert!(!out.replayed, "cargo builds first");
    let again = &out.artifacts[0];
    assert_eq!(again.sha256, dynamic.sha256, "other bytes than the running binary's");
    assert_eq!(again.libs, dynamic.libs);
    assert_eq!(run(again), format!("svc1 r{n} 42"));
    drop(restarted);
    let one_shot = recording(&e).build(&request(&["svc1"], &[]), None).await.expect("a one-shot build");
    assert!(one_shot.artifacts[0].libs.is_empty(), "`devd build` gives cargo's static binary");

    e.fx.write(main_rs, "fn main() { println!(\"svc1 while down {}\", fx_shared::answer()); }\n");
    let out = daemons().build(&request(&["svc1"], &[]), None).await.expect("the first build after another restart");
    assert_ne!(out.artifacts[0].sha256, dynamic.sha256);
    assert_eq!(run(&out.artifacts[0]), "svc1 while down 42");
}

/// One replay for two services, one of which must be linked statically (an instance
/// of it takes no shared libraries): that one never needs the library, the other is
/// linked against it once it exists, and both serve the edit.
#[tokio::test]
async fn a_service_linked_statically_beside_one_linked_against_the_library() {
    let e = env();
    add_svc3(&e);
    let builder = recording(&e);
    let graph = WorkspaceGraph::load(&e.fx.root).expect("cargo metadata");
    let both = ["svc1", "svc3"];
    let shared = "crates/shared/src/lib.rs";
    let scoped = || BuildRequest { static_link: BTreeSet::from(["svc1".into()]), ..replay_request(&graph, &both, vec![e.fx.path(shared)]) };
    assert!(!builder.build(&scoped(), None).await.expect("first build").replayed);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for n in 1.. {
        e.fx.write(shared, &format!("pub fn answer() -> u32 {{ fx_core::base() + {n} }}\n"));
        let out = builder.build(&scoped(), None).await.expect("replayed build");
        assert!(out.replayed);
        let [svc1, svc3] = &out.artifacts[..] else { panic!("two artifacts: {:?}", out.artifacts) };
        assert_eq!((run(svc1), run(svc3)), (format!("svc1 {}", 40 + n), format!("svc3 {}", 40 + n)));
        assert!(svc1.libs.is_empty(), "svc1 is linked statically: {:?}", svc1.libs);
        let svc1_bytes = std::fs::read(&svc1.path).expect("svc1's binary");
        assert!(!svc1_bytes.windows(15).any(|w| w == b"lib__stand_deps"), "svc1's binary names the library");
        if !svc3.libs.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{n} edits and svc3 never linked against the library");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dependencies' shared library (devd::replay::dylib) holds the workspace libraries
/// no replay has recompiled, beside the registry crates: while only svc1 is edited,
/// fx-shared and fx-core are linked from it. Once fx-shared is edited, the replay
/// recompiles it and the binaries link it themselves from then on: what runs is the
/// edit, never the library's older build of it. A request to link statically (an
/// instance takes no shared libraries) is still replayed, and needs no library.
#[tokio::test]
async fn a_workspace_library_leaves_the_shared_library_once_a_replay_recompiles_it() {
    let e = env();
    let builder = recording(&e);
    let graph = WorkspaceGraph::load(&e.fx.root).expect("cargo metadata");
    let scoped = |rel: &str| replay_request(&graph, &["svc1"], vec![e.fx.path(rel)]);
    let (main_rs, shared) = ("services/svc1/src/main.rs", "crates/shared/src/lib.rs");
    let first = builder.build(&scoped(main_rs), None).await.expect("first build");
    assert!(!first.replayed);

    // Edits of svc1 until one links against the library: the first replay links
    // statically, names the dependencies and builds their library in the background.
    let n = std::cell::Cell::new(0);
    let edit_until_dynamic = async |expected: u32| -> Artifact {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            n.set(n.get() + 1);
            let n = n.get();
            e.fx.write(main_rs, &format!("fn main() {{ println!(\"svc1 v{n} {{}}\", fx_shared::answer()); }}\n"));
            let out = builder.build(&scoped(main_rs), None).await.expect("replayed build");
            assert!(out.replayed);
            let artifact = out.artifacts[0].clone();
            assert_eq!(run(&artifact), format!("svc1 v{n} {expected}"));
            if !artifact.libs.is_empty() {
                return artifact;
            }
            assert!(std::time::Instant::now() < deadline, "{n} edits and none linked against the library");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let deps_library = |artifact: &Artifact| -> Vec<u8> {
        let lib = artifact.libs.iter().find(|l| l.name.starts_with("lib__stand_deps-")).expect("the dependencies' library");
        std::fs::read(&lib.path).expect("the library")
    };
    let holds = |bytes: &[u8], symbol: &str| bytes.windows(symbol.len()).any(|w| w == symbol.as_bytes());
    let dynamic = edit_until_dynamic(42).await;
    let library = deps_library(&dynamic);
    assert!(holds(&library, "9fx_shared6answer") && holds(&library, "7fx_core4base"), "both workspace libraries are in it");

    // fx-shared edited: recompiled, linked into the binary, its new answer served.
    e.fx.write(shared, "pub fn answer() -> u32 { fx_core::base() + 9 }\n");
    let out = builder.build(&scoped(shared), None).await.expect("replayed build");
    assert!(out.replayed);
    assert_eq!(run(&out.artifacts[0]), format!("svc1 v{} 49", n.get()));
    // And from then on: the library that comes next holds fx-core only.
    let after = edit_until_dynamic(49).await;
    let library = deps_library(&after);
    assert!(holds(&library, "7fx_core4base") && !holds(&library, "9fx_shared6answer"), "fx-shared stays out of it");
    e.fx.write(shared, "pub fn answer() -> u32 { fx_core::base() + 5 }\n");
    let out = builder.build(&scoped(shared), None).await.expect("replayed build");
    assert_eq!(out.artifacts[0].libs, after.libs, "the same library: fx-shared is not in it");
    assert_eq!(run(&out.artifacts[0]), format!("svc1 v{} 45", n.get()));

    n.set(n.get() + 1);
    e.fx.write(main_rs, &format!("fn main() {{ println!(\"svc1 v{} {{}}\", fx_shared::answer()); }}\n", n.get()));
    let out = builder.build(&BuildRequest { static_link: BTreeSet::from(["svc1".into()]), ..scoped(main_rs) }, None).await.expect("static build");
    assert!(out.replayed, "a static link is replayed too");
    let artifact = &out.artifacts[0];
    assert!(artifact.libs.is_empty(), "linked statically: {:?}", artifact.libs);
    assert!(!holds(&std::fs::read(&artifact.path).expect("the binary"), "lib__stand_deps"), "the binary names no library");
    assert_eq!(run(artifact), format!("svc1 v{} 45", n.get()));
}
