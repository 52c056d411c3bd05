//! The fast path of a rebuild: rustc run directly with the command lines cargo used.
//!
//! An incremental `cargo build` of a one-line edit spends about 0.3 s before its first
//! rustc starts (loading the workspace, resolving the lock file, reading every
//! dependency's manifest, checking ~150 fingerprints), on a build that takes ~0.9 s in
//! all. When nothing but the sources of workspace packages changed, the rustc command
//! lines cargo would run are the ones it ran last time, so devd runs those itself.
//!
//! Recording: devd's cargo builds set `RUSTC_WORKSPACE_WRAPPER` to the devd executable
//! and [`RECORD_DIR_ENV`] to a private directory. Run that way, devd is the wrapper
//! ([`wrapper_main`]): it writes the rustc invocation (program, arguments, working
//! directory, environment) to a 0600 file there and `exec`s rustc. After a cargo build
//! that succeeded, the builder reads those files into [`Recipes`] (memory only), keyed
//! by the build's selection (its `-p` packages and binaries: cargo unifies features
//! over a selection, so a unit can be compiled differently in another one), and deletes
//! them. cargo runs rustc for exactly the units whose fingerprint changed, so a unit
//! cargo finds fresh keeps its recorded command line, which is still the one cargo
//! would use. A cargo build that fails, is cancelled or cannot record clears all
//! recipes: the command lines of the units it ran are unknown.
//!
//! Replaying ([`Recipes::select`], [`run`]): the daemon says which workspace libraries
//! must be recompiled, in dependency order, and which binaries it wants; every one
//! needs a recipe of the same selection, and a recipe linking another build of a
//! library being recompiled is refused; else cargo builds. The libraries run one after
//! the other, then the binaries side by side (as many as cores), under cargo's own
//! lock on the target dir (`<target>/<profile>/.cargo-lock`;
//! busy means cargo is running, and then cargo builds), held until the binaries are in
//! the artifact store. A failure of any kind, a compiler error included, hands the
//! build to cargo, whose account of it is the authoritative one: the fast path never
//! decides that code does not compile.
//!
//! cargo itself stays correct: a replay deletes the cargo fingerprint of every unit it
//! runs, so cargo recompiles those units the next time it is asked, whatever the
//! files' mtimes say. `RUSTC_WORKSPACE_WRAPPER` is part of cargo's metadata hash, so
//! devd's builds of workspace members sit next to those of a plain `cargo build`
//! instead of replacing them (each is compiled once, then both stay fresh); it stays
//! set even when a build cannot record.
//!
//! What the fast path does not see: the changes the watcher reports are mapped to the
//! packages whose directories hold them, while cargo reads rustc's dep-info. A file
//! outside every package that a crate reads (`include_str!("../../schema.sql")`) is
//! not a reason for devd to build at all, and with the replay not even the next edit's
//! build picks it up; keep such files inside the package that reads them. The
//! toolchain is the one cargo used when it recorded: after `rustup default` or a new
//! override, restart devd.
//!
//! A record holds the build's whole environment (devd's own plus what cargo adds), as
//! cargo gave it to rustc: written 0600 into a 0700 directory under the state dir,
//! removed when the build ends, kept in memory after that and never logged.
//!
//! The binaries of a replay are linked against one shared library of their
//! dependencies once it is known which rlibs they link ([`dylib`]): a small binary
//! per edit instead of a 17 MB one.
//!
//! `DEVD_RUSTC_REPLAY=0` in devd's environment turns all of this off.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use crate::graph::{PackageName, ReplayScope};
use unit::{run_unit, UnitRun};

pub mod dylib;
mod unit;

/// Set (to the record directory) only in the environment of devd's own cargo builds.
pub const RECORD_DIR_ENV: &str = "__STAND_RUSTC_RECORD_DIR";

/// Set in devd's cargo builds when devd's environment names a `RUSTC_WORKSPACE_WRAPPER`
/// of its own: the wrapper runs that one (`<it> rustc <args>`) instead of rustc.
pub const NEXT_WRAPPER_ENV: &str = "__STAND_NEXT_WRAPPER";

/// Variables of a recorded environment that a replay leaves out: the jobserver of a
/// cargo that has exited.
const STALE_ENV: &[&str] = &["CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", RECORD_DIR_ENV, NEXT_WRAPPER_ENV];

/// How many lines of a replay's stderr (non-diagnostic lines) are kept.
const TAIL_LINES: usize = 50;

/// Runs the devd binary as cargo's rustc wrapper when [`RECORD_DIR_ENV`] is set:
/// records the invocation, then becomes rustc. `None`: not invoked as the wrapper.
pub fn wrapper_main() -> Option<ExitCode> {
    let dir = std::env::var_os(RECORD_DIR_ENV)?;
    let mut args = std::env::args_os().skip(1);
    let Some(rustc) = args.next() else {
        eprintln!("devd: {RECORD_DIR_ENV} is set, so devd runs as cargo's rustc wrapper, but no rustc was given");
        return Some(ExitCode::from(2));
    };
    let args: Vec<std::ffi::OsString> = args.collect();
    // Empty: this build records nothing, but keeps the wrapper (it is part of cargo's
    // metadata hash, so dropping it would compile into other files).
    if !dir.is_empty() && args.iter().any(|a| a == "--crate-name") {
        // Best effort: without a record this unit is simply built by cargo next time.
        if let Err(e) = write_record(Path::new(&dir), &rustc, &args) {
            eprintln!("devd: cannot record the rustc invocation in {}: {e}", Path::new(&dir).display());
        }
    }
    let mut command = match std::env::var_os(NEXT_WRAPPER_ENV).filter(|w| !w.is_empty()) {
        Some(next) => {
            let mut command = std::process::Command::new(next);
            command.arg(&rustc);
            command
        }
        None => std::process::Command::new(&rustc),
    };
    command.args(&args).env_remove(NEXT_WRAPPER_ENV);
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    eprintln!("devd: cannot run {}: {error}", Path::new(&rustc).display());
    Some(ExitCode::from(1))
}

/// One rustc invocation as the wrapper saw it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Record {
    program: String,
    args: Vec<String>,
    cwd: String,
    env: Vec<(String, String)>,
}

fn write_record(dir: &Path, rustc: &std::ffi::OsStr, args: &[std::ffi::OsString]) -> std::io::Result<()> {
    let text = |s: &std::ffi::OsStr| {
        s.to_str().map(str::to_owned).ok_or_else(|| std::io::Error::other("not UTF-8"))
    };
    let record = Record {
        program: text(rustc)?,
        args: args.iter().map(|a| text(a)).collect::<Result<_, _>>()?,
        cwd: text(std::env::current_dir()?.as_os_str())?,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    };
    let name = format!(
        "{}-{}.json",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    let mut file = std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600)
        .open(dir.join(name))?;
    file.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)
}

/// Creates a fresh record directory (0700) for one cargo build, after removing those
/// of processes that are gone (a devd killed mid-build leaves its records behind).
pub fn make_record_dir(parent: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(parent)?;
    for entry in std::fs::read_dir(parent)?.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.split_once('-')).map(|(pid, _)| pid.to_string());
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = parent.join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir)?;
    Ok(dir)
}

/// Which unit of a package a recipe compiles.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    Lib,
    Bin(String),
}

/// A recorded rustc invocation, ready to run again.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub package: PackageName,
    pub unit: Unit,
    program: String,
    args: Vec<String>,
    cwd: String,
    env: Vec<(String, String)>,
}

impl Recipe {
    /// From a record: library and binary units of a package; build scripts and test
    /// harnesses are cargo's business.
    fn from_record(record: Record) -> Option<Self> {
        let value = |flag: &str| {
            record.args.iter().position(|a| a == flag).and_then(|i| record.args.get(i + 1)).cloned()
        };
        let var = |name: &str| record.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let crate_name = value("--crate-name")?;
        // cargo's probes of the compiler (`rustc - --crate-name ___ --print=...`),
        // build scripts and test harnesses are not units devd replays.
        let probe = record.args.iter().any(|a| a == "-" || a.starts_with("--print"));
        if probe || crate_name.starts_with("build_script_") || record.args.iter().any(|a| a == "--test") {
            return None;
        }
        let package = var("CARGO_PKG_NAME")?;
        let unit = if value("--crate-type").as_deref() == Some("bin") {
            Unit::Bin(var("CARGO_BIN_NAME").unwrap_or(crate_name))
        } else {
            Unit::Lib
        };
        let env = record.env.into_iter().filter(|(k, _)| !STALE_ENV.contains(&k.as_str())).collect();
        Some(Self { package, unit, program: record.program, args: record.args, cwd: record.cwd, env })
    }

    /// This recipe with `extra` arguments at the end.
    fn with_args(&self, extra: &[&str]) -> Recipe {
        let mut recipe = self.clone();
        recipe.args.extend(extra.iter().map(|s| s.to_string()));
        recipe
    }

    /// `--out-dir`: `<target>/<profile>/deps`.
    fn out_dir(&self) -> Option<&Path> {
        self.value("--out-dir").map(Path::new)
    }

    /// The argument after `flag`.
    fn value(&self, flag: &str) -> Option<&str> {
        let i = self.args.iter().position(|a| a == flag)?;
        self.args.get(i + 1).map(String::as_str)
    }

    /// Every `--extern <name>=<path>`: (name, path).
    fn externs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.args.windows(2).filter(|w| w[0] == "--extern").filter_map(|w| w[1].split_once('='))
    }

    /// The value of a `-C <key>=<value>` codegen option, `key` given with its `=`.
    fn codegen(&self, key: &str) -> Option<&str> {
        self.args.windows(2).find(|w| w[0] == "-C" && w[1].starts_with(key)).map(|w| &w[1][key.len()..])
    }

    /// cargo's fingerprint of this unit: `<target>/<profile>/.fingerprint/<package>-<hash>`,
    /// `<hash>` being the unit's `-C extra-filename`.
    fn fingerprint_dir(&self) -> Option<PathBuf> {
        let hash = self.codegen("extra-filename=")?.strip_prefix('-')?;
        let profile_dir = self.out_dir()?.parent()?;
        Some(profile_dir.join(".fingerprint").join(format!("{}-{hash}", self.package)))
    }

    /// A short description for logs and progress: `rustc --crate-name x (replayed)`.
    pub fn describe(&self) -> String {
        let unit = match &self.unit {
            Unit::Lib => "lib".to_string(),
            Unit::Bin(b) => format!("bin {b}"),
        };
        format!("{} ({unit} of {}, replayed)", self.program, self.package)
    }
}

/// The recipes of one builder, keyed by the cargo selection they were recorded in
/// (which packages and binaries one `cargo build` was asked for: cargo unifies
/// features over a selection, so the same unit may be compiled differently in
/// another), then package and unit.
#[derive(Debug, Default)]
pub struct Recipes {
    by_unit: BTreeMap<(String, PackageName, Unit), Recipe>,
}

impl Recipes {
    /// Reads every record in `dir` (then removes `dir`); a later record of a unit
    /// replaces the earlier one. Returns how many recipes were taken.
    pub fn ingest(&mut self, dir: &Path, selection: &str) -> usize {
        let mut taken = 0;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let record = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            if let Some(recipe) = record.and_then(Recipe::from_record) {
                self.by_unit.insert((selection.to_string(), recipe.package.clone(), recipe.unit.clone()), recipe);
                taken += 1;
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        taken
    }

    pub fn len(&self) -> usize {
        self.by_unit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_unit.is_empty()
    }

    /// Forgets everything: after a cargo build that did not end well, the command
    /// lines of the units it ran are unknown.
    pub fn clear(&mut self) {
        self.by_unit.clear();
    }

    /// `<package> lib` and `<package> bin <name>` for every recipe, sorted.
    pub fn units(&self) -> Vec<String> {
        self.by_unit
            .keys()
            .map(|(_, package, unit)| match unit {
                Unit::Lib => format!("{package} lib"),
                Unit::Bin(bin) => format!("{package} bin {bin}"),
            })
            .collect()
    }

    /// The recipes for `scope`, recorded in `selection`, in the order to run them (its
    /// libraries in their order, then its binaries), or why there are none.
    pub fn select(&self, scope: &ReplayScope, selection: &str) -> Result<Vec<Recipe>, String> {
        let libs = scope.libs.iter().map(|p| (selection.to_string(), p.clone(), Unit::Lib));
        let bins = scope.bins.iter().map(|(p, b)| (selection.to_string(), p.clone(), Unit::Bin(b.clone())));
        let selected: Vec<Recipe> = libs
            .chain(bins)
            .map(|key| {
                self.by_unit.get(&key).cloned().ok_or_else(|| format!("no recorded rustc command for {key:?}"))
            })
            .collect::<Result<_, _>>()?;
        consistent(&selected)?;
        Ok(selected)
    }
}

/// Every `--extern` of a selected recipe that names one of the selected libraries must
/// name the file that library's recipe writes. A recipe recorded before cargo rebuilt
/// one of its libraries under a new hash (a feature change made for another package,
/// say) would otherwise link the old library without a word.
fn consistent(recipes: &[Recipe]) -> Result<(), String> {
    let outputs: Vec<(String, Vec<PathBuf>)> = recipes
        .iter()
        .filter(|r| r.unit == Unit::Lib)
        .filter_map(|r| {
            let stem = format!("lib{}{}", r.value("--crate-name")?, r.codegen("extra-filename=").unwrap_or_default());
            let dir = r.out_dir()?;
            let prefix = format!("lib{}-", r.value("--crate-name")?);
            Some((prefix, ["rlib", "rmeta"].iter().map(|ext| dir.join(format!("{stem}.{ext}"))).collect()))
        })
        .collect();
    for recipe in recipes {
        for (name, path) in recipe.externs() {
            let path = Path::new(path);
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            for (prefix, files) in &outputs {
                if file.starts_with(prefix.as_str()) && !files.iter().any(|f| f == path) {
                    return Err(format!(
                        "the recorded command for {} links {name} from {}, which its library's recipe no longer writes",
                        recipe.describe(),
                        path.display()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A finished replay: the executables (package, bin) → path, the shared libraries they
/// need ([`dylib`]; none when they were linked statically), and the warnings. It
/// holds cargo's lock on the target dir until dropped: keep it until the executables
/// are moved into the store, so that no cargo relinks them in between.
#[derive(Debug)]
pub struct Replayed {
    pub executables: BTreeMap<(PackageName, String), PathBuf>,
    pub libs: Vec<dylib::SharedLib>,
    pub warnings: Vec<String>,
    pub stderr_tail: Vec<String>,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// What a replay needs to link its binaries against the dependencies' shared library
/// ([`dylib`]).
pub struct Layout<'a> {
    pub dylibs: &'a std::sync::Arc<std::sync::Mutex<dylib::Dylibs>>,
    /// The cargo selection the recipes were recorded in.
    pub selection: &'a str,
    /// The workspace libraries the change reaches (crate names): they stay out of
    /// the library from now on.
    pub changed: &'a std::collections::BTreeSet<String>,
    pub triple: &'a str,
    /// devd's own dir for all of it: `<state>/dylib`.
    pub root: &'a Path,
    /// Packages whose binaries are linked statically all the same (an instance of
    /// theirs takes no shared libraries).
    pub static_link: &'a std::collections::BTreeSet<PackageName>,
}

type OnStart<'a> = std::sync::Mutex<&'a mut (dyn FnMut(u32, String) + Send)>;

/// Runs `recipes` under cargo's lock on the target dir: the libraries one after the
/// other, in the order given (dependency order), then the binaries side by side, as
/// many at a time as there are cores (nothing links against a binary; cargo too runs
/// independent units in parallel, up to its job count). `Err` says why the build has
/// to go to cargo (lock busy, a rustc that failed, an output not reported); a failure
/// stops the binaries still running (their processes are killed). With a `layout`,
/// the binaries are linked against the dependencies' shared library when it can be
/// had, else statically as cargo links them.
pub async fn run(recipes: &[Recipe], on_start: &mut (dyn FnMut(u32, String) + Send), layout: Option<&Layout<'_>>) -> Result<Replayed, String> {
    let mut done = Replayed::locked(recipes)?;
    let on_start = std::sync::Mutex::new(on_start);
    if let Some(layout) = layout {
        layout.dylibs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).heat(layout.changed);
    }
    let (bins, libs): (Vec<&Recipe>, Vec<&Recipe>) = recipes.iter().partition(|r| matches!(r.unit, Unit::Bin(_)));
    for recipe in libs {
        done.add(recipe, run_unit(recipe, &on_start, false).await?)?;
    }
    // Binaries that must not need the library: linked as cargo links them.
    let (statics, bins): (Vec<&Recipe>, Vec<&Recipe>) =
        bins.into_iter().partition(|r| layout.is_some_and(|l| l.static_link.contains(&r.package)));
    for (recipe, unit) in statics.iter().zip(run_bins(&statics, &on_start, false).await?) {
        done.add(recipe, unit)?;
    }
    let mut failed = None;
    if let Some(layout) = layout {
        match link_dynamically(layout, &bins, &on_start).await {
            Ok(Some((libs, units))) => {
                for (recipe, unit) in bins.iter().zip(units) {
                    done.add(recipe, unit)?;
                }
                done.libs = libs;
                return Ok(done);
            }
            Ok(None) => {}
            Err((key, why)) => {
                tracing::info!(%why, "the binaries are linked statically");
                failed = key;
            }
        }
    }
    // Statically; with a layout, rustc also prints the linker's command line, whose
    // rlibs are the dependencies of the next replay's library.
    let print: Vec<Recipe> = bins.iter().map(|r| if layout.is_some() { r.with_args(&["--print=link-args"]) } else { (*r).clone() }).collect();
    let units = run_bins(&print.iter().collect::<Vec<_>>(), &on_start, layout.is_some()).await?;
    for (recipe, unit) in bins.iter().zip(units) {
        if let (Some(layout), Some(deps_dir)) = (layout, recipe.out_dir()) {
            let rlibs = dylib::linked_rlibs(&unit.stdout, deps_dir);
            layout.dylibs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remember(layout.selection, recipe, rlibs);
        }
        done.add(recipe, unit)?;
    }
    match (layout, failed) {
        // The static link worked where the dynamic one did not: the layout fails
        // for these dependencies, not the code; it is not tried again for them.
        (Some(layout), Some(key)) => layout.dylibs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fail(key),
        (Some(layout), None) => prepare(layout, &bins),
        (None, _) => {}
    }
    Ok(done)
}

/// Builds the library of `bins`' dependencies in the background once a static link
/// has named them, so that the next edit links against it rather than waiting for it
/// (~0.6 s for service1's 99 rlibs here). Not under cargo's lock: an rlib cargo
/// rewrites meanwhile changes the key, and then the library is not kept.
fn prepare(layout: &Layout<'_>, bins: &[&Recipe]) {
    let dylibs = std::sync::Arc::clone(layout.dylibs);
    let lock = || dylibs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (Some(first), Some(rlibs)) = (bins.first(), lock().dependencies(layout.selection, bins).filter(|r| !r.is_empty())) else {
        return;
    };
    let Ok(key) = dylib::key(&first.program, layout.triple, &rlibs) else { return };
    if !lock().start(&key) {
        return;
    }
    let (first, root, triple) = ((*first).clone(), layout.root.to_path_buf(), layout.triple.to_string());
    let span = tracing::info_span!("deps_library", key = %key, rlibs = rlibs.len());
    let build = async move {
        let lock = || dylibs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match build_library(&root, &triple, &first, &rlibs, &key).await {
            Ok(built) if dylib::key(&first.program, &triple, &rlibs).is_ok_and(|now| now == key) => lock().set_built(built),
            Ok(_) => tracing::info!("a dependency changed while its shared library was built; not kept"),
            Err(why) => {
                tracing::info!(%why, "the dependencies' shared library did not build; their binaries stay linked statically");
                lock().fail(key.clone());
            }
        }
        lock().finish(&key);
    };
    tokio::spawn(tracing::Instrument::instrument(build, span));
}

/// The binaries side by side, as many at a time as there are cores; their runs in
/// the order given.
async fn run_bins(bins: &[&Recipe], on_start: &OnStart<'_>, capture: bool) -> Result<Vec<UnitRun>, String> {
    use futures_util::StreamExt as _;
    let parallel = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // `buffer_unordered`: at most `parallel` at once, the next one started as soon as
    // any finishes (`buffered` would keep a finished one's place until those before it
    // finish); each result goes back to its place.
    let runs = bins.iter().enumerate().map(|(i, r)| async move { (i, run_unit(r, on_start, capture).await) });
    let mut running = futures_util::stream::iter(runs).buffer_unordered(parallel);
    let mut units: Vec<Option<UnitRun>> = std::iter::repeat_with(|| None).take(bins.len()).collect();
    while let Some((i, unit)) = running.next().await {
        units[i] = Some(unit?);
    }
    units.into_iter().map(|u| u.ok_or_else(|| "a binary's replay went missing".to_string())).collect()
}

/// The binaries `bins` (recipes cargo has just run) linked again, against the
/// dependencies' library a replay before built for them, when it is still there and
/// their dependencies are the ones it holds: after a devd restart, cargo's first build
/// is a static one, while the instances may run these very sources linked against
/// that library, byte for byte what this gives. `Ok(None)`: no such library.
/// `cargo_rlibs`: every rlib of cargo's build, (size, mtime) as cargo reported it
/// while it held its lock: another cargo building into the same target dir (another
/// checkout of the stand) may rewrite one after it, and then what is there is not
/// cargo's build of these sources.
pub async fn relink(
    bins: &[Recipe],
    cargo_rlibs: &BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
    on_start: &mut (dyn FnMut(u32, String) + Send),
    layout: &Layout<'_>,
) -> Result<Option<Replayed>, String> {
    let mut done = Replayed::locked(bins)?;
    if let Some(changed) = cargo_rlibs.iter().find(|(path, seen)| stat(path).as_ref() != Some(*seen)) {
        return Err(format!("{} was rewritten since cargo built it", changed.0.display()));
    }
    if let Some((_, path)) = bins.iter().flat_map(Recipe::externs).filter(|(_, p)| p.ends_with(".rlib")).find(|(_, p)| !cargo_rlibs.contains_key(Path::new(p))) {
        return Err(format!("cargo did not report {path}"));
    }
    let on_start = std::sync::Mutex::new(on_start);
    let bins: Vec<&Recipe> = bins.iter().collect();
    match link_dynamically(layout, &bins, &on_start).await {
        Ok(Some((libs, units))) => {
            for (recipe, unit) in bins.iter().zip(units) {
                done.add(recipe, unit)?;
            }
            done.libs = libs;
            Ok(Some(done))
        }
        Ok(None) => Ok(None),
        Err((_, why)) => Err(why),
    }
}

/// A file's (size, mtime), when it can be read.
pub fn stat(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    std::fs::metadata(path).and_then(|m| Ok((m.len(), m.modified()?))).ok()
}

/// Links `bins` against the dependencies' shared library. `Ok(None)`: there is none
/// for their dependencies yet (no static link of these command lines printed them, it
/// is being built in the background, or not yet: a static link starts that), or the
/// layout failed for them before; `Err`: why not, this time, and the key of the
/// dependencies it failed for.
async fn link_dynamically(
    layout: &Layout<'_>,
    bins: &[&Recipe],
    on_start: &OnStart<'_>,
) -> Result<Option<(Vec<dylib::SharedLib>, Vec<UnitRun>)>, (Option<String>, String)> {
    let lock = || layout.dylibs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(first) = bins.first() else { return Ok(None) };
    let Some(rlibs) = lock().dependencies(layout.selection, bins).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let key = dylib::key(&first.program, layout.triple, &rlibs).map_err(|e| (None, format!("a dependency's rlib: {e}")))?;
    let known = lock().built(&key);
    let Some(built) = known.filter(|_| !lock().failed(&key)) else {
        if lock().building(&key) {
            tracing::debug!(key, "the dependencies' library is still being built: the binaries link statically");
        }
        return Ok(None);
    };
    let out_dir = layout.root.join("bin");
    std::fs::create_dir_all(&out_dir).map_err(|e| (None, format!("{}: {e}", out_dir.display())))?;
    let dynamic: Vec<Recipe> = bins.iter().map(|r| dylib::dynamic_recipe(r, &built, &out_dir)).collect();
    let units = run_bins(&dynamic.iter().collect::<Vec<_>>(), on_start, false).await.map_err(|why| (Some(key), why))?;
    Ok(Some((built.libs(), units)))
}

/// The dependencies' library for `key`: libstd and it, in the store.
async fn build_library(
    root: &Path,
    triple: &str,
    bin: &Recipe,
    rlibs: &std::collections::BTreeSet<PathBuf>,
    key: &str,
) -> Result<dylib::Built, String> {
    let sysroot = tokio::process::Command::new(&bin.program)
        .args(["--print", "sysroot"])
        .env_clear()
        .envs(bin.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{} --print sysroot: {e}", bin.program))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let store = root.join("libs");
    let std = dylib::find_std(&sysroot, triple)
        .and_then(|path| dylib::store_lib(&path, &store))
        .map_err(|e| format!("the toolchain's libstd: {e}"))?;
    let dir = root.join("build").join(key);
    let _ = std::fs::remove_dir_all(&dir);
    let source = dir.join("deps.rs");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&source, dylib::deps_source(rlibs)))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let recipe = dylib::deps_recipe(bin, rlibs, key, &source, &dir, &std).ok_or("no --out-dir in the binary's recipe")?;
    let started = std::time::Instant::now();
    // In the background: no build's progress shows it.
    let mut quiet = |_: u32, _: String| {};
    let unit = run_unit(&recipe, &std::sync::Mutex::new(&mut quiet), false).await;
    let stored = unit.and_then(|unit| {
        let so = unit.linked.ok_or("the library's rustc reported no output")?;
        dylib::store_lib(&so, &store).map_err(|e| format!("storing {}: {e}", so.display()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let deps = stored?;
    tracing::info!(key, rlibs = rlibs.len(), size = deps.size, duration_ms = crate::measure::millis(started.elapsed()), "the dependencies' shared library is built");
    Ok(dylib::new_built(key, deps, std))
}

impl Replayed {
    /// Nothing replayed yet, under cargo's lock on the target dir of `recipes`.
    fn locked(recipes: &[Recipe]) -> Result<Self, String> {
        let out_dir = recipes.first().and_then(Recipe::out_dir).ok_or("no --out-dir in the recipe")?;
        let lock_path = out_dir.parent().map(|p| p.join(".cargo-lock")).ok_or("no profile dir")?;
        let lock_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| format!("cargo holds {} ({e})", lock_path.display()))?;
        Ok(Replayed { executables: BTreeMap::new(), libs: Vec::new(), warnings: Vec::new(), stderr_tail: Vec::new(), _lock: lock })
    }

    fn add(&mut self, recipe: &Recipe, unit: UnitRun) -> Result<(), String> {
        self.warnings.extend(unit.warnings);
        for line in unit.stderr {
            if self.stderr_tail.len() == TAIL_LINES {
                self.stderr_tail.remove(0);
            }
            self.stderr_tail.push(line);
        }
        if let Unit::Bin(bin) = &recipe.unit {
            let path = unit.linked.ok_or_else(|| format!("{} reported no linked output", recipe.describe()))?;
            self.executables.insert((recipe.package.clone(), bin.clone()), path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(args: &[&str], env: &[(&str, &str)]) -> Record {
        Record {
            program: "/r/rustc".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/w".into(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn records_become_recipes_of_libs_and_bins_only() {
        let lib = Recipe::from_record(record(
            &["--crate-name", "fx_shared", "--crate-type", "lib", "--out-dir", "/t/debug/deps"],
            &[("CARGO_PKG_NAME", "fx-shared"), ("CARGO_MAKEFLAGS", "-j --jobserver-fds=3,4"), ("PATH", "/bin")],
        ))
        .expect("lib");
        assert_eq!((lib.package.as_str(), &lib.unit), ("fx-shared", &Unit::Lib));
        let names: Vec<&str> = lib.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["CARGO_PKG_NAME", "PATH"], "the old jobserver is dropped");
        assert_eq!(lib.out_dir(), Some(Path::new("/t/debug/deps")));

        let bin = Recipe::from_record(record(
            &["--crate-name", "svc_one", "--crate-type", "bin"],
            &[("CARGO_PKG_NAME", "svc1"), ("CARGO_BIN_NAME", "svc-one")],
        ))
        .expect("bin");
        assert_eq!(bin.unit, Unit::Bin("svc-one".into()));

        let script = record(&["--crate-name", "build_script_build", "--crate-type", "bin"], &[("CARGO_PKG_NAME", "a")]);
        assert!(Recipe::from_record(script).is_none());
        let test = record(&["--crate-name", "a", "--test"], &[("CARGO_PKG_NAME", "a")]);
        assert!(Recipe::from_record(test).is_none());
        let probe = record(&["-", "--crate-name", "___", "--print=file-names"], &[("CARGO_PKG_NAME", "a")]);
        assert!(Recipe::from_record(probe).is_none());
        let no_package = record(&["--crate-name", "a"], &[]);
        assert!(Recipe::from_record(no_package).is_none());
    }

    #[test]
    fn selection_needs_every_unit() {
        let mut recipes = Recipes::default();
        for (package, unit) in [("kit", Unit::Lib), ("svc1", Unit::Lib), ("svc1", Unit::Bin("svc1".into()))] {
            let r = Recipe {
                package: package.into(),
                unit: unit.clone(),
                program: "rustc".into(),
                args: Vec::new(),
                cwd: "/".into(),
                env: Vec::new(),
            };
            recipes.by_unit.insert(("svc1".into(), package.into(), unit), r);
        }
        let scope = ReplayScope { libs: vec!["kit".into(), "svc1".into()], bins: vec![("svc1".into(), "svc1".into())], ..Default::default() };
        let order: Vec<(String, Unit)> =
            recipes.select(&scope, "svc1").expect("all there").into_iter().map(|r| (r.package, r.unit)).collect();
        assert_eq!(
            order,
            vec![("kit".into(), Unit::Lib), ("svc1".into(), Unit::Lib), ("svc1".into(), Unit::Bin("svc1".into()))]
        );
        let more = ReplayScope { libs: vec!["kit".into()], bins: vec![("svc2".into(), "svc2".into())], ..Default::default() };
        let why = recipes.select(&more, "svc1").expect_err("svc2 was never recorded");
        assert!(why.contains("svc2"), "{why}");
        assert!(recipes.select(&scope, "svc1 svc2").is_err(), "recorded in another selection");
    }

    fn recipe(package: &str, unit: Unit, args: &[&str]) -> Recipe {
        Recipe {
            package: package.into(),
            unit,
            program: "rustc".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            env: Vec::new(),
        }
    }

    #[test]
    fn a_recipe_linking_an_older_build_of_a_selected_library_is_refused() {
        let kit = recipe(
            "kit",
            Unit::Lib,
            &["--crate-name", "kit", "-C", "extra-filename=-new", "--out-dir", "/t/deps"],
        );
        let bin = |kit_file: &str| {
            let extern_kit = format!("kit=/t/deps/{kit_file}");
            let args = ["--crate-name", "svc", "--extern", &extern_kit, "--extern", "serde=/t/deps/libserde-1.rlib"];
            recipe("svc", Unit::Bin("svc".into()), &args)
        };
        assert!(consistent(&[kit.clone(), bin("libkit-new.rlib")]).is_ok());
        assert!(consistent(&[kit.clone(), bin("libkit-new.rmeta")]).is_ok());
        let why = consistent(&[kit, bin("libkit-old.rlib")]).expect_err("stale");
        assert!(why.contains("/t/deps/libkit-old.rlib"), "{why}");
    }

    #[test]
    fn ansi_escapes_are_stripped_and_fingerprints_located() {
        assert_eq!(unit::strip_ansi("\u{1b}[0m\u{1b}[1m\u{1b}[33mwarning\u{1b}[0m: unused"), "warning: unused");
        assert_eq!(unit::strip_ansi("plain → text"), "plain → text");
        let lib = recipe("fx-shared", Unit::Lib, &["-C", "extra-filename=-abc123", "--out-dir", "/t/debug/deps"]);
        assert_eq!(lib.fingerprint_dir(), Some(PathBuf::from("/t/debug/.fingerprint/fx-shared-abc123")));
    }
}
