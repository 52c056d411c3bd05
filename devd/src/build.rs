//! Builds services with cargo and keeps each binary as a hashed artifact.
//!
//! All requested packages go into ONE `cargo build` invocation (`-p a -p b --bin a
//! --bin b`), so cargo compiles the shared crates once and uses both cores.
//! `--message-format=json` gives the executables (`compiler-artifact` messages, field
//! `executable`) and the compiler's diagnostics already rendered as text; cargo's own
//! progress and errors arrive on stderr, which is streamed to the caller line by line
//! and its tail kept.
//!
//! Each executable is copied to `<state_dir>/artifacts/<package>/<sha256>` (hashed while
//! copying, written under a temp name, then renamed), so the artifact a caller holds
//! is immutable: a later build, failed or not, never touches it. A failed build
//! returns a [`BuildError`] and no artifacts; the caller keeps its previous ones.
//!
//! Cancellation: drop the future returned by [`Builder::build`] (e.g. lose a
//! `tokio::select!`). cargo runs in its own process group and the whole group (cargo
//! and its rustc children) gets SIGKILL.
//!
//! Target triples: see [`choose_toolchain`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cargo_metadata::diagnostic::DiagnosticLevel;
use cargo_metadata::{Message, TargetKind};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::graph::PackageName;
use crate::graph::ReplayScope;
use crate::measure::{millis, sha256_of_file};
pub use crate::replay::dylib::SharedLib;
use crate::replay::dylib;
use crate::replay::{self, Recipes};

mod cargo;
mod relink;
mod store;
mod toolchain;
#[cfg(test)]
mod tests;

pub use cargo::package_name_from_id;
use cargo::{cargo_errors, describe, pick_executable, read_stderr, selection, ProcessGroupGuard};
use relink::dylib_state;
use store::store_artifact;
pub use toolchain::{choose_toolchain, Toolchain, ToolchainFacts};
use toolchain::{command_succeeds, host_triple, installed_targets};

/// How many lines of cargo's stderr a result keeps.
const STDERR_TAIL_LINES: usize = 200;

/// What every build of this workspace shares.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// Where `Cargo.toml` of the workspace is.
    pub workspace_root: PathBuf,
    /// devd's state dir; artifacts go to `<state_dir>/artifacts/<package>/<sha256>`.
    pub state_dir: PathBuf,
    /// Cargo profile name: `dev` (default), `release`, or a custom one.
    pub profile: String,
    /// Target triple; `None` (or the host's own triple) builds for the host.
    pub target: Option<String>,
    /// `CARGO_TARGET_DIR` for the builds; `None` keeps cargo's default.
    pub target_dir: Option<PathBuf>,
    /// The cargo to run (default `cargo` from `PATH`).
    pub cargo: PathBuf,
    /// The devd executable, which cargo runs as `RUSTC_WORKSPACE_WRAPPER` to record
    /// its rustc command lines for [`crate::replay`]; `None` (the default) builds
    /// with cargo only. See [`rustc_recorder`].
    pub rustc_recorder: Option<PathBuf>,
    /// The first cargo build links its binaries against the dependencies' library the
    /// replays of a devd before used, when it is still there ([`crate::replay::relink`]):
    /// the daemon's builder, whose instances may run such binaries. `false` (the
    /// default) keeps cargo's static binaries (`devd build`).
    pub relink_first_build: bool,
}

impl BuildConfig {
    pub fn new(workspace_root: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            workspace_root: workspace_root.into(),
            state_dir: state_dir.into(),
            profile: "dev".into(),
            target: None,
            target_dir: None,
            cargo: PathBuf::from("cargo"),
            rustc_recorder: None,
            relink_first_build: false,
        }
    }
}

/// The recorder for [`BuildConfig::rustc_recorder`] when this process is devd: its own
/// executable. `None` when the running program is not devd (a test or an example
/// embedding the library).
///
/// With a recorder, devd's builds are its stand's own ([`stand_wrapper`]), also when
/// nothing is recorded: with `DEVD_RUSTC_REPLAY=0`, or when the environment names a
/// `RUSTC_WORKSPACE_WRAPPER` of its own (devd then runs that one in its place).
pub fn rustc_recorder() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    (exe.file_name()? == "devd").then_some(exe)
}

/// Whether devd's cargo builds record their rustc command lines for [`crate::replay`]:
/// not with `DEVD_RUSTC_REPLAY=0`, nor under a workspace wrapper of the user's (a
/// replay would run rustc without it).
fn records() -> bool {
    std::env::var_os("DEVD_RUSTC_REPLAY").is_none_or(|v| v != "0") && foreign_wrapper().is_none()
}

/// A `RUSTC_WORKSPACE_WRAPPER` in devd's environment (not one of devd's own links).
fn foreign_wrapper() -> Option<std::ffi::OsString> {
    std::env::var_os("RUSTC_WORKSPACE_WRAPPER")
        .filter(|w| !w.is_empty() && Path::new(w).file_name() != Some(std::ffi::OsStr::new(WRAPPER_LINK)))
}

/// The name of devd's wrapper link in `<state dir>/bin`.
const WRAPPER_LINK: &str = "devd-rustc-wrapper";

/// What keeps devd's builds its stand's own, whatever else builds into the same cargo
/// target dir (a test's temp copy of the stand, another checkout, a `cargo build` with
/// other features): cargo names a workspace member's files by a hash of the package
/// (its path relative to the workspace root, so a copy of the tree gets the same hash)
/// and decides freshness by mtimes, so a copy's newer build of `service1` passes for
/// the stand's. But cargo mixes the path of `RUSTC_WORKSPACE_WRAPPER` into the hash of
/// workspace members, and only of those: devd runs as the wrapper through a link at
/// `<root>/.stand/bin/devd-rustc-wrapper`, so every member's units are the stand's
/// own files while registry crates (immutable sources, fingerprinted by version) are
/// still shared and compiled once. The final binaries go to `<root>/.stand/target`
/// (`CARGO_TARGET_DIR`; the shared target dir stays cargo's build dir,
/// `CARGO_BUILD_BUILD_DIR`): cargo's uplifted `target/debug/<bin>` is shared too, and
/// another build could replace it between cargo's exit and the copy into the store.
fn stand_wrapper(state_dir: &Path, exe: &Path) -> std::io::Result<PathBuf> {
    let dir = state_dir.join("bin");
    let link = dir.join(WRAPPER_LINK);
    if std::fs::read_link(&link).is_ok_and(|target| target == exe) {
        return Ok(link);
    }
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{WRAPPER_LINK}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(exe, &tmp)?;
    std::fs::rename(&tmp, &link)?;
    Ok(link)
}

/// cargo's build dir for the workspace as the user's own `cargo build` has it
/// (`cargo metadata`: `build_directory`, else `target_directory`), honouring
/// `CARGO_TARGET_DIR` and `.cargo/config.toml`.
async fn shared_build_dir(config: &BuildConfig) -> Result<PathBuf, BuildError> {
    let mut cmd = Command::new(&config.cargo);
    cmd.args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(config.workspace_root.join("Cargo.toml"))
        .current_dir(&config.workspace_root)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(dir) = &config.target_dir {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let out = cmd.output().await.map_err(|e| io_error(format!("cannot run cargo metadata: {e}")))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        BuildError::new(BuildErrorKind::Cargo, "cargo metadata failed", String::from_utf8_lossy(&out.stderr).into_owned())
    })?;
    json["build_directory"]
        .as_str()
        .or_else(|| json["target_directory"].as_str())
        .map(PathBuf::from)
        .ok_or_else(|| BuildError::new(BuildErrorKind::Cargo, "cargo metadata names no target directory", String::new()))
}

/// One service binary to build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct BuildTarget {
    pub package: PackageName,
    /// The binary target; `None` takes the package's only binary (or the one named
    /// like the package when there are several).
    pub bin: Option<String>,
}

impl BuildTarget {
    pub fn package(package: impl Into<PackageName>) -> Self {
        Self { package: package.into(), bin: None }
    }
}

/// A set of services to build together, and why.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub targets: Vec<BuildTarget>,
    /// The changed paths that caused this build (empty for a manual rebuild).
    pub cause: BTreeSet<PathBuf>,
    /// What to recompile when the change is one of sources only
    /// ([`crate::graph::WorkspaceGraph::replay_scope`]): the builder then runs the
    /// recorded rustc command lines itself when it has them all, else cargo builds.
    pub replay: Option<ReplayScope>,
    /// Packages whose binaries are linked statically, even where a replay would link
    /// them against the dependencies' shared library: an instance of theirs takes none.
    pub static_link: BTreeSet<PackageName>,
}

/// A built service binary, stored where no later build can change it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Artifact {
    pub package: PackageName,
    pub bin: String,
    /// `<state_dir>/artifacts/<package>/<sha256>`; its content hashes to `sha256`.
    pub path: PathBuf,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// Wall time of the whole build (cargo, or the replayed rustc runs) that produced it.
    pub build_duration_ms: u64,
    pub built_at: DateTime<Utc>,
    /// The changed paths that caused the build.
    pub cause: BTreeSet<PathBuf>,
    /// cargo found it up to date (nothing was recompiled for it).
    pub fresh: bool,
    /// The target triple it runs on.
    pub target: String,
    /// The shared libraries it was linked against ([`crate::replay::dylib`]), to be
    /// delivered before it; empty for a statically linked binary (cargo's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub libs: Vec<SharedLib>,
}

/// A successful build: one artifact per requested target, in request order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutput {
    pub artifacts: Vec<Artifact>,
    pub duration_ms: u64,
    /// Rendered compiler warnings.
    pub warnings: Vec<String>,
    pub stderr_tail: Vec<String>,
    /// Built by replaying recorded rustc command lines ([`crate::replay`]), not by cargo.
    pub replayed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildErrorKind {
    /// The code does not compile (or link): see `rendered`.
    Compile,
    /// The target triple cannot be built here: `rendered` says what to install.
    Toolchain,
    /// cargo failed before compiling (bad manifest, unknown package, lock busy, ...).
    Cargo,
    /// Running cargo or storing the artifact failed.
    Io,
}

/// Why a build produced no artifacts. `rendered` is what a person needs to read:
/// the compiler's rendered errors, cargo's error output, or an install hint.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize)]
#[error("{message}")]
pub struct BuildError {
    pub kind: BuildErrorKind,
    /// One line, e.g. "build of svc1 failed: 1 compiler error".
    pub message: String,
    pub rendered: String,
    pub stderr_tail: Vec<String>,
    pub duration_ms: u64,
}

impl BuildError {
    fn new(kind: BuildErrorKind, message: impl Into<String>, rendered: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            rendered: rendered.into(),
            stderr_tail: Vec::new(),
            duration_ms: 0,
        }
    }
}

/// Live output of a running build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// cargo started; `pid` is also its process group. A replay
    /// ([`crate::replay`]) reports each rustc it starts.
    Started { pid: u32, command: String },
    /// One line of cargo's stderr ("Compiling svc1 v0.1.0 (...)", errors, ...).
    Stderr(String),
    /// cargo's progress bar: `done` of `total` units (crates, build scripts, binaries).
    Units { done: u32, total: u32 },
}

/// Builds service binaries for one workspace. Builds are meant to run one at a time
/// (cargo's lock on the target dir would serialise them anyway).
#[derive(Debug, Clone)]
pub struct Builder {
    config: BuildConfig,
    /// The toolchain once it was found (a failure is looked into again next build, so
    /// installing the missing target mid-session works): no `rustc -vV` per build.
    toolchain: std::sync::Arc<tokio::sync::OnceCell<(Toolchain, String)>>,
    /// The rustc command lines recorded from this builder's cargo runs.
    recipes: std::sync::Arc<std::sync::Mutex<Recipes>>,
    /// cargo's build dir, shared with other builds ([`shared_build_dir`]), once known.
    build_dir: std::sync::Arc<tokio::sync::OnceCell<PathBuf>>,
    /// What the replays know of the binaries' dependencies ([`crate::replay::dylib`]),
    /// taken over from the devd before ([`dylib::Dylibs::load`]).
    dylibs: std::sync::Arc<std::sync::Mutex<dylib::Dylibs>>,
    /// This builder's first cargo build has ended well (see [`Builder::relink`]).
    built_once: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Builder {
    pub fn new(config: BuildConfig) -> Self {
        Self {
            toolchain: std::sync::Arc::default(),
            recipes: std::sync::Arc::default(),
            build_dir: std::sync::Arc::default(),
            dylibs: std::sync::Arc::new(std::sync::Mutex::new(dylib::Dylibs::load(&dylib_state(&config.state_dir)))),
            built_once: std::sync::Arc::default(),
            config,
        }
    }

    /// The units whose rustc command lines this builder holds: `<package> lib`,
    /// `<package> bin <name>`, sorted.
    pub fn recorded_units(&self) -> Vec<String> {
        self.recipes.lock().map(|r| r.units()).unwrap_or_default()
    }

    pub fn config(&self) -> &BuildConfig {
        &self.config
    }

    /// Looks at the machine (`rustc -vV`, `rustup target list --installed`,
    /// cargo-zigbuild and zig on `PATH`) and applies [`choose_toolchain`].
    pub async fn toolchain(&self) -> Result<(Toolchain, String), BuildError> {
        self.toolchain.get_or_try_init(|| self.find_toolchain()).await.cloned()
    }

    async fn find_toolchain(&self) -> Result<(Toolchain, String), BuildError> {
        let host = host_triple().await?;
        let target = self.config.target.as_deref();
        let mut facts = ToolchainFacts { host: host.clone(), ..Default::default() };
        if let Some(t) = target.filter(|t| *t != host) {
            facts.installed_targets = installed_targets().await;
            facts.zigbuild = command_succeeds("cargo-zigbuild", &["--version"]).await
                && (command_succeeds("zig", &["version"]).await
                    || command_succeeds("python3", &["-c", "import ziglang"]).await);
            let var = format!("CARGO_TARGET_{}_LINKER", t.to_uppercase().replace(['-', '.'], "_"));
            facts.linker_configured = std::env::var_os(var).is_some();
        }
        let toolchain = choose_toolchain(target, &facts)?;
        let triple = target.unwrap_or(&host).to_string();
        Ok((toolchain, triple))
    }

    /// Builds `request.targets` in one cargo invocation. `progress`, when given,
    /// receives cargo's start and every stderr line as they come.
    pub async fn build(
        &self,
        request: &BuildRequest,
        progress: Option<mpsc::UnboundedSender<BuildProgress>>,
    ) -> Result<BuildOutput, BuildError> {
        let started = Instant::now();
        let built_at = Utc::now();
        let result = self.build_inner(request, progress, started, built_at).await;
        result.map_err(|mut e| {
            e.duration_ms = millis(started.elapsed());
            e
        })
    }

    async fn build_inner(
        &self,
        request: &BuildRequest,
        progress: Option<mpsc::UnboundedSender<BuildProgress>>,
        started: Instant,
        built_at: DateTime<Utc>,
    ) -> Result<BuildOutput, BuildError> {
        if request.targets.is_empty() {
            return Ok(BuildOutput {
                artifacts: Vec::new(),
                duration_ms: 0,
                warnings: Vec::new(),
                stderr_tail: Vec::new(),
                replayed: false,
            });
        }
        let (toolchain, triple) = self.toolchain().await?;
        if let Some(scope) = request.replay.as_ref().filter(|_| self.config.rustc_recorder.is_some()) {
            match self.replay(scope, request, progress.as_ref(), started, built_at, &triple).await {
                Ok(output) => return Ok(output),
                Err(why) => tracing::info!(%why, "no rustc replay for this change; cargo builds"),
            }
        }
        let mut cmd = Command::new(&self.config.cargo);
        let target = match &toolchain {
            Toolchain::Cargo { target } => {
                cmd.arg("build");
                target.clone()
            }
            Toolchain::Zigbuild { target } => {
                cmd.arg("zigbuild");
                Some(target.clone())
            }
        };
        cmd.arg("--message-format=json")
            .args(["--color", "never"])
            .arg("--manifest-path")
            .arg(self.config.workspace_root.join("Cargo.toml"))
            .args(["--profile", &self.config.profile]);
        if let Some(target) = &target {
            cmd.args(["--target", target]);
        }
        let packages: BTreeSet<&str> = request.targets.iter().map(|t| t.package.as_str()).collect();
        let selection = selection(request);
        cmd.args(&selection);
        if let Some(dir) = &self.config.target_dir {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        // Until this build has ended well and its records are read, the recipes cannot
        // be trusted: the units it runs may get new command lines.
        let mut forget = ForgetRecipes { recipes: &self.recipes, armed: true };
        let records = match self.config.rustc_recorder.as_ref() {
            Some(recorder) if recorder.is_file() => {
                // The stand's own units and binaries (see stand_wrapper).
                let wrapper = stand_wrapper(&self.config.state_dir, recorder)
                    .map_err(|e| io_error(format!("cannot link devd's rustc wrapper into {}: {e}", self.config.state_dir.display())))?;
                let build_dir = self.build_dir.get_or_try_init(|| shared_build_dir(&self.config)).await?;
                cmd.env("RUSTC_WORKSPACE_WRAPPER", wrapper)
                    .env("CARGO_BUILD_BUILD_DIR", build_dir)
                    .env("CARGO_TARGET_DIR", self.config.state_dir.join("target"));
                if let Some(next) = foreign_wrapper() {
                    cmd.env(replay::NEXT_WRAPPER_ENV, next);
                }
                let dir = if records() {
                    replay::make_record_dir(&self.config.state_dir.join("rustc-records"))
                        .map_err(|e| tracing::warn!(error = %e, "cannot make a rustc record dir; this build records nothing"))
                        .ok()
                } else {
                    None
                };
                cmd.env(replay::RECORD_DIR_ENV, dir.as_deref().unwrap_or(Path::new("")));
                dir.map(RecordDir)
            }
            Some(recorder) => {
                tracing::warn!(recorder = %recorder.display(), "devd's executable is gone; building without recording");
                None
            }
            None => None,
        };
        cmd.current_dir(&self.config.workspace_root)
            .env("CARGO_TERM_COLOR", "never")
            // With a listener, cargo's own count of units (its progress bar, on a pipe
            // too) becomes [`BuildProgress::Units`]; see `progress_units`.
            .env("CARGO_TERM_PROGRESS_WHEN", if progress.is_some() { "always" } else { "never" })
            .env("CARGO_TERM_PROGRESS_WIDTH", "100")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let command_line = describe(&cmd);
        tracing::info!(command = %command_line, "build started");

        let mut child = cmd.spawn().map_err(|e| {
            BuildError::new(
                BuildErrorKind::Io,
                format!("cannot run {}", self.config.cargo.display()),
                format!("{command_line}: {e}"),
            )
        })?;
        crate::priority::lower(child.id());
        let mut group = ProcessGroupGuard(child.id());
        if let (Some(tx), Some(pid)) = (&progress, child.id()) {
            let _ = tx.send(BuildProgress::Started { pid, command: command_line.clone() });
        }

        let stdout = child.stdout.take().ok_or_else(|| io_error("cargo stdout not captured"))?;
        let stderr = child.stderr.take().ok_or_else(|| io_error("cargo stderr not captured"))?;
        let stderr_task = tokio::spawn(read_stderr(stderr, progress));

        // Executables by (package, bin), the compiler's errors and warnings.
        let mut executables: BTreeMap<(String, String), (PathBuf, bool)> = BTreeMap::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        // Every rlib of the build, as cargo left it while it still held its lock: what a
        // relink after it may link ([`Builder::relink`]).
        let relinking = self.config.relink_first_build && records.is_some() && !self.built_once.load(std::sync::atomic::Ordering::SeqCst);
        let mut cargo_rlibs = BTreeMap::new();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| io_error(format!("reading cargo output: {e}")))?
        {
            let Ok(message) = serde_json::from_str::<Message>(&line) else {
                continue; // not a message of ours (a build script printing to stdout)
            };
            match message {
                Message::CompilerArtifact(artifact) => {
                    if relinking {
                        for rlib in artifact.filenames.iter().filter(|f| f.extension() == Some("rlib")) {
                            if let Some(seen) = replay::stat(rlib.as_std_path()) {
                                cargo_rlibs.insert(rlib.clone().into_std_path_buf(), seen);
                            }
                        }
                    }
                    if let Some(exe) = artifact.executable {
                        if artifact.target.kind.contains(&TargetKind::Bin) {
                            let package = package_name_from_id(&artifact.package_id.repr);
                            executables.insert(
                                (package, artifact.target.name.clone()),
                                (exe.into_std_path_buf(), artifact.fresh),
                            );
                        }
                    }
                }
                Message::CompilerMessage(msg) => {
                    let rendered = msg
                        .message
                        .rendered
                        .clone()
                        .unwrap_or_else(|| msg.message.message.clone());
                    match msg.message.level {
                        DiagnosticLevel::Error | DiagnosticLevel::Ice => errors.push(rendered),
                        DiagnosticLevel::Warning => warnings.push(rendered),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| io_error(format!("waiting for cargo: {e}")))?;
        // cargo is reaped and waited for its rustc children: nothing left to kill, and
        // its pid may be reused from now on.
        group.0 = None;
        if let (Some(records), true) = (&records, status.success()) {
            // A unit cargo found fresh keeps its recorded command line: it is the one
            // cargo would run for it until its fingerprint changes.
            let mut recipes = self.recipes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let taken = recipes.ingest(&records.0, &selection.join(" "));
            tracing::debug!(taken, total = recipes.len(), "rustc command lines recorded");
            forget.armed = false;
        }
        let stderr_tail = stderr_task.await.unwrap_or_default();
        let duration_ms = millis(started.elapsed());
        let names = packages.iter().copied().collect::<Vec<_>>().join(", ");

        if !status.success() {
            let (kind, message, rendered) = if errors.is_empty() {
                (
                    BuildErrorKind::Cargo,
                    format!("build of {names} failed: cargo exited with {status}"),
                    cargo_errors(&stderr_tail),
                )
            } else {
                let main: Vec<&String> =
                    errors.iter().filter(|e| !e.starts_with("error: aborting")).collect();
                let count = main.len().max(1);
                let rendered = if main.is_empty() {
                    errors.join("\n")
                } else {
                    main.iter().map(|e| e.as_str()).collect::<Vec<_>>().join("\n")
                };
                (
                    BuildErrorKind::Compile,
                    format!(
                        "build of {names} failed: {count} compiler error{}",
                        if count == 1 { "" } else { "s" }
                    ),
                    rendered,
                )
            };
            return Err(BuildError { kind, message, rendered, stderr_tail, duration_ms });
        }

        let mut picked = Vec::new();
        for wanted in &request.targets {
            picked.push((wanted, pick_executable(wanted, &executables)?));
        }
        if relinking && !self.built_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let bins = picked.iter().map(|(w, (bin, _))| (w.package.clone(), bin.clone())).collect();
            match self.relink(request, bins, &cargo_rlibs, started, built_at, &triple).await {
                Ok(Some(output)) => return Ok(BuildOutput { warnings, stderr_tail, ..output }),
                Ok(None) => {}
                Err(why) => tracing::info!(%why, "cargo's binaries are kept (static)"),
            }
        }
        let mut artifacts = Vec::new();
        for (wanted, (bin, (exe, fresh))) in picked {
            artifacts.push(self.store(request, wanted, bin, exe, Produced::Cargo { fresh }, duration_ms, built_at, &triple, &[]).await?);
        }
        tracing::info!(packages = %names, duration_ms, "build finished");
        Ok(BuildOutput { artifacts, duration_ms, warnings, stderr_tail, replayed: false })
    }

    /// The fast path ([`crate::replay`]): the recorded rustc command lines of `scope`
    /// (libraries in order, then the binaries side by side). `Err` says why cargo has
    /// to build instead.
    async fn replay(
        &self,
        scope: &ReplayScope,
        request: &BuildRequest,
        progress: Option<&mpsc::UnboundedSender<BuildProgress>>,
        started: Instant,
        built_at: DateTime<Utc>,
        triple: &str,
    ) -> Result<BuildOutput, String> {
        let key = selection(request).join(" ");
        let recipes = self.recipes.lock().map_err(|_| "recipes poisoned")?.select(scope, &key)?;
        let mut on_start = |pid: u32, command: String| {
            tracing::debug!(%command, "rustc replay started");
            if let Some(tx) = progress {
                let _ = tx.send(BuildProgress::Started { pid, command });
            }
        };
        let root = self.config.state_dir.join("dylib");
        let layout = replay::Layout {
            dylibs: &self.dylibs,
            selection: &key,
            changed: &scope.changed,
            triple,
            root: &root,
            static_link: &request.static_link,
        };
        let replayed = replay::run(&recipes, &mut on_start, dylib::enabled().then_some(&layout)).await;
        self.save_dylibs();
        let replayed = replayed?;
        let duration_ms = millis(started.elapsed());
        let mut artifacts = Vec::new();
        for wanted in &request.targets {
            let (package, bin) = scope
                .bins
                .iter()
                .find(|(p, b)| *p == wanted.package && wanted.bin.as_ref().is_none_or(|w| w == b))
                .ok_or_else(|| format!("{} is not in the replay scope", wanted.package))?;
            let exe = replayed
                .executables
                .get(&(package.clone(), bin.clone()))
                .ok_or_else(|| format!("the replay built no {bin}"))?;
            let libs = if request.static_link.contains(&wanted.package) { &[][..] } else { &replayed.libs };
            let artifact = self
                .store(request, wanted, bin.clone(), exe.clone(), Produced::Replay, duration_ms, built_at, triple, libs)
                .await
                .map_err(|e| e.rendered)?;
            artifacts.push(artifact);
        }
        let names: Vec<&str> = scope.bins.iter().map(|(p, _)| p.as_str()).collect();
        let linked = if replayed.libs.is_empty() { "statically" } else { "against the dependencies' shared library" };
        tracing::info!(packages = %names.join(", "), duration_ms, units = recipes.len(), linked, "build finished (rustc replay)");
        Ok(BuildOutput {
            artifacts,
            duration_ms,
            warnings: replayed.warnings,
            stderr_tail: replayed.stderr_tail,
            replayed: true,
        })
    }

    /// Puts `exe` into the artifact store and describes it.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        request: &BuildRequest,
        wanted: &BuildTarget,
        bin: String,
        exe: PathBuf,
        produced: Produced,
        duration_ms: u64,
        built_at: DateTime<Utc>,
        triple: &str,
        libs: &[SharedLib],
    ) -> Result<Artifact, BuildError> {
        let store_dir = self.config.state_dir.join("artifacts").join(&wanted.package);
        let exe_for_copy = exe.clone();
        let (fresh, take) = match produced {
            Produced::Cargo { fresh } => (fresh, false),
            Produced::Replay => (false, true),
        };
        let beside = libs.to_vec();
        // The libraries beside it first: a stored binary runs where it is.
        let (path, sha256, size) = tokio::task::spawn_blocking(move || {
            dylib::link_beside(&store_dir, &beside)?;
            store_artifact(&exe_for_copy, &store_dir, take)
        })
        .await
            .map_err(|e| io_error(format!("storing the artifact: {e}")))?
            .map_err(|e| io_error(format!("storing {}: {e}", exe.display())))?;
        Ok(Artifact {
            package: wanted.package.clone(),
            bin,
            path,
            sha256,
            size,
            build_duration_ms: duration_ms,
            built_at,
            cause: request.cause.clone(),
            fresh,
            target: triple.to_string(),
            libs: libs.to_vec(),
        })
    }
}

/// Clears the recipes when dropped armed: a cargo build that failed, was cancelled or
/// recorded nothing leaves the command lines of the units it ran unknown.
struct ForgetRecipes<'a> {
    recipes: &'a std::sync::Mutex<Recipes>,
    armed: bool,
}

impl Drop for ForgetRecipes<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.recipes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
    }
}

/// Where an executable to store came from.
#[derive(Debug, Clone, Copy)]
enum Produced {
    /// cargo's (uplifted) output, which cargo keeps using; `fresh`: not recompiled.
    Cargo { fresh: bool },
    /// A replayed rustc's output in `deps/`, which the store may take.
    Replay,
}

/// A record dir of one cargo run, removed when the build ends however it ends.
struct RecordDir(PathBuf);

impl Drop for RecordDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io_error(message: impl Into<String>) -> BuildError {
    let message = message.into();
    BuildError::new(BuildErrorKind::Io, message.clone(), message)
}

