//! devd's own dynamic link of a replayed binary (issue 14; bench/README.md, "Link less").
//!
//! A static link of service1 puts ~120 rlibs into a 17 MB binary: rust-lld takes most
//! of the binary's rustc time, and every edit ships those bytes. In devd's replays the
//! crates a binary links that are not being edited (the registry crates, and the
//! workspace libraries no change has reached) go instead into one shared library,
//! built once per set of dependencies, and each edit links a small binary against it:
//!
//! 1. A replay that links a binary statically also asks rustc for the linker's command
//!    line (`--print=link-args`, no extra cost): the rlibs it names under cargo's
//!    `deps/` dir are the binary's dependencies, remembered with the binary's recorded
//!    command line (another command line, after cargo recorded again, is not
//!    linked against them). Of these, the library takes the registry crates and the
//!    workspace libraries no change has reached since devd started (service-kit while
//!    only the services are edited): a workspace library that a change reaches
//!    (recompiled by the replay, or depending on one that is) stays in the binaries
//!    from then on, and the library without it is a new set. So a shared crate's
//!    edit relinks each binary from little more than its own code. A library built
//!    from an rlib that has been rewritten since (by a replay or by cargo, under the
//!    same name) is not linked against: the key covers each rlib's size and mtime.
//!    A crate the library holds without being in its set (rustc finds a dependency
//!    of a member through `-L`) is covered by rustc's own check instead: a binary
//!    whose crates were compiled against another build of it does not link (E0460),
//!    and then links statically.
//! 2. Right after a static link (the first replay's, or any whose set has no library
//!    yet: a replay never waits for one), in the background, devd builds the
//!    dependencies' library (once per set, the last few kept; a key over the rustc,
//!    the target and the files' paths, sizes and mtimes, so a dependency cargo
//!    rebuilt is a new set; a set whose files changed while it was built is not
//!    kept), and the next replay links against it:
//!    rustc compiles a generated crate, [`DEPS_CRATE`], of one `extern crate` per rlib
//!    as a `dylib` with `-C prefer-dynamic`: the rlibs' code inside, linked against the
//!    toolchain's `libstd-*.so`. Both files go into a content-addressed store
//!    (`<state>/dylib/libs/<sha256>/<name>`).
//! 3. Each binary is then linked from its recorded command line with `-C
//!    prefer-dynamic` and the library loaded by `--extern force:` (the one unstable
//!    flag, hence `RUSTC_BOOTSTRAP=1` for that rustc only: nothing in the binary's
//!    sources names the library). rustc then links every crate the library holds
//!    from it, and the workspace libraries a change reached into the binary. Its
//!    output goes to devd's own dir (cargo's `deps/` keeps cargo's static binary)
//!    with an rpath of `$ORIGIN/.stand-libs/<sha256>` per library
//!    ([`stand_shim_protocol::LIBS_DIR`]): wherever the binary lands, it loads the
//!    very bytes it was linked with, and the shim keeps every library it got.
//!
//! A devd restart: what the replays learnt (the binaries' dependencies, the libraries
//! built, the workspace libraries kept out of them) is saved in
//! `<state>/dylib/state.json` after every replay, and the new devd's first cargo build
//! links its binaries against a library still there for the same dependencies
//! ([`crate::replay::relink`]). A link is deterministic: a binary of the sources the
//! instance runs comes out as the very bytes it runs, and nothing is delivered (cargo's
//! static build of them would restart the service). rustc's rlibs are not (the names
//! of their object files differ from one build to the next), so it is the binary's
//! bytes that are compared, not its inputs'.
//!
//! Any failure on the way (the library does not build, a dynamic link fails) links
//! the binaries statically, as before; `DEVD_DYLIB=0` in devd's environment turns the
//! layout off. What a plain `cargo build` gives a user does not change: cargo's own
//! files are never rewritten by any of this.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stand_shim_protocol::LIBS_DIR;

use super::{Recipe, Unit};
use crate::graph::PackageName;

/// The generated crate of the dependencies' shared library (no crate of the registry
/// starts with two underscores).
pub const DEPS_CRATE: &str = "__stand_deps";

/// Whether replays link binaries against the dependencies' shared library:
/// `DEVD_DYLIB=0` says no.
pub fn enabled() -> bool {
    std::env::var_os("DEVD_DYLIB").is_none_or(|v| v != "0")
}

/// A shared library an artifact needs beside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SharedLib {
    /// Its file name (the name the binary's `DT_NEEDED` asks for).
    pub name: String,
    /// Lowercase hex; the directory it lives in, in the store and in the instance.
    pub sha256: String,
    pub size: u64,
    /// `<state>/dylib/libs/<sha256>/<name>`.
    pub path: PathBuf,
}

/// The dependencies' library and the `libstd` it was linked with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Built {
    key: String,
    pub deps: SharedLib,
    pub std: SharedLib,
}

impl Built {
    pub fn libs(&self) -> Vec<SharedLib> {
        vec![self.deps.clone(), self.std.clone()]
    }
}

/// What one builder knows of its binaries' dependencies.
#[derive(Debug, Default)]
pub struct Dylibs {
    /// (selection, package, bin) → the rlibs its last static link named, and a hash
    /// of the command line that link ran.
    closures: BTreeMap<(String, PackageName, String), (u64, Vec<PathBuf>)>,
    /// The libraries built last (at most [`KEEP_BUILT`]), oldest first: alternating
    /// selections, each with a set of its own, do not rebuild theirs in turn.
    built: Vec<Built>,
    /// The crate names of the workspace libraries changes have reached: kept out of
    /// the libraries from then on.
    hot: BTreeSet<String>,
    /// Keys of dependencies the layout failed for (the library would not build, or
    /// a binary linked statically but not against it).
    failed: BTreeSet<String>,
    /// Keys whose library is being built in the background.
    building: BTreeSet<String>,
    /// What [`Dylibs::save`] wrote last: a replay that changed nothing writes nothing.
    written: Vec<u8>,
}

/// How many built libraries a builder remembers (each one stays in the store).
const KEEP_BUILT: usize = 4;

/// What a devd restart takes over of [`Dylibs`] (`<state>/dylib/state.json`): a
/// binary whose library is still there is linked against it again after devd's first
/// cargo build, and comes out as the bytes the instance already runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    closures: Vec<(String, PackageName, String, u64, Vec<PathBuf>)>,
    built: Vec<Built>,
    hot: BTreeSet<String>,
    failed: BTreeSet<String>,
}

impl Dylibs {
    /// What [`Dylibs::save`] wrote to `path`, without the libraries no longer in the
    /// store; nothing when there is no such file or it does not parse.
    pub fn load(path: &Path) -> Self {
        let Some(saved) = std::fs::read(path).ok().and_then(|b| serde_json::from_slice::<Saved>(&b).ok()) else {
            return Self::default();
        };
        Self {
            closures: saved.closures.into_iter().map(|(s, p, b, h, rlibs)| ((s, p, b), (h, rlibs))).collect(),
            // A library still in this store, of the size it had.
            built: saved.built.into_iter().filter(|b| [&b.deps, &b.std].iter().all(|l| in_store(l, path))).collect(),
            hot: saved.hot,
            failed: saved.failed,
            building: BTreeSet::new(),
            written: Vec::new(),
        }
    }

    /// Writes what a restart takes over to `path` (under a temp name, then renamed),
    /// when it changed since the last write.
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        let saved = Saved {
            closures: self.closures.iter().map(|((s, p, b), (h, rlibs))| (s.clone(), p.clone(), b.clone(), *h, rlibs.clone())).collect(),
            built: self.built.clone(),
            hot: self.hot.clone(),
            failed: self.failed.clone(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        if bytes == self.written {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, path)?;
        self.written = bytes;
        Ok(())
    }

    pub fn remember(&mut self, selection: &str, recipe: &Recipe, rlibs: Vec<PathBuf>) {
        if let Unit::Bin(bin) = &recipe.unit {
            self.closures.insert((selection.to_string(), recipe.package.clone(), bin.clone()), (args_hash(recipe), rlibs));
        }
    }

    /// Keeps the workspace libraries `crates` (crate names) out of the libraries
    /// from now on: a change has reached them.
    pub fn heat(&mut self, crates: &BTreeSet<String>) {
        self.hot.extend(crates.iter().cloned());
    }

    /// What the library of all `bins` holds: their dependencies, each read from a link
    /// of the command line it has now, minus the workspace libraries changes have
    /// reached; `None` while one is unknown.
    pub fn dependencies(&self, selection: &str, bins: &[&Recipe]) -> Option<BTreeSet<PathBuf>> {
        let mut all = BTreeSet::new();
        for recipe in bins {
            let Unit::Bin(bin) = &recipe.unit else { return None };
            let (hash, rlibs) = self.closures.get(&(selection.to_string(), recipe.package.clone(), bin.clone()))?;
            if *hash != args_hash(recipe) {
                return None;
            }
            all.extend(rlibs.iter().filter(|r| rlib_crate(r).is_none_or(|c| !self.hot.contains(c))).cloned());
        }
        Some(all)
    }

    /// The library built for `key`, if it is one of the last built.
    pub fn built(&self, key: &str) -> Option<Built> {
        self.built.iter().find(|b| b.key == key).cloned()
    }

    pub fn set_built(&mut self, built: Built) {
        self.built.retain(|b| b.key != built.key);
        if self.built.len() == KEEP_BUILT {
            self.built.remove(0);
        }
        self.built.push(built);
    }

    pub fn fail(&mut self, key: String) {
        self.failed.insert(key);
    }

    pub fn failed(&self, key: &str) -> bool {
        self.failed.contains(key)
    }

    /// Whether a library for `key` should be built now (none is, is being, or failed);
    /// if so, it is marked as being built until [`Dylibs::finish`].
    pub fn start(&mut self, key: &str) -> bool {
        let wanted = self.built(key).is_none() && !self.failed(key) && !self.building.contains(key);
        if wanted {
            self.building.insert(key.to_string());
        }
        wanted
    }

    pub fn building(&self, key: &str) -> bool {
        self.building.contains(key)
    }

    pub fn finish(&mut self, key: &str) {
        self.building.remove(key);
    }
}

/// Whether `lib` is a file of the store beside `state` (`<dylib>/libs/<sha256>/<name>`),
/// of its size.
fn in_store(lib: &SharedLib, state: &Path) -> bool {
    let store = state.parent().map(|d| d.join("libs").join(&lib.sha256).join(&lib.name));
    store.is_some_and(|p| p == lib.path) && std::fs::metadata(&lib.path).is_ok_and(|m| m.is_file() && m.len() == lib.size)
}

fn args_hash(recipe: &Recipe) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&recipe.program, &recipe.args).hash(&mut hasher);
    hasher.finish()
}

/// The rlibs under `deps_dir` that a linker command line (rustc's `--print=link-args`,
/// a shell-quoted line) names, the workspace's included, in the order given.
pub fn linked_rlibs(link_args: &str, deps_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for word in link_args.split_whitespace() {
        let path = Path::new(word.trim_matches('"'));
        if path.parent() != Some(deps_dir) || path.extension().is_none_or(|e| e != "rlib") {
            continue;
        }
        if rlib_crate(path).is_some() && !out.iter().any(|p: &PathBuf| p == path) {
            out.push(path.to_path_buf());
        }
    }
    out
}

/// The crate an rlib of cargo's holds: `libservice_kit-<hash>.rlib` → `service_kit`.
fn rlib_crate(path: &Path) -> Option<&str> {
    let stem = path.file_stem()?.to_str()?.strip_prefix("lib")?;
    Some(stem.rsplit_once('-').map_or(stem, |(name, _)| name))
}

/// The key of a set of dependencies: the rustc, the target and each file's path,
/// size and mtime (cargo rewrites an rlib it rebuilds, even under the same name).
pub fn key(program: &str, triple: &str, rlibs: &BTreeSet<PathBuf>) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(program.as_bytes());
    hasher.update([0]);
    hasher.update(triple.as_bytes());
    for rlib in rlibs {
        let meta = std::fs::metadata(rlib)?;
        let mtime = meta.modified()?.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        hasher.update([0]);
        hasher.update(rlib.as_os_str().as_encoded_bytes());
        hasher.update(format!("\0{}\0{mtime}", meta.len()).as_bytes());
    }
    Ok(hex::encode(&hasher.finalize()[..8]))
}

/// The toolchain's `libstd-*.so` for `triple`: `<sysroot>/lib/rustlib/<triple>/lib`.
pub fn find_std(sysroot: &Path, triple: &str) -> std::io::Result<PathBuf> {
    let dir = sysroot.join("lib/rustlib").join(triple).join("lib");
    std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libstd-") && n.ends_with(".so")))
        .ok_or_else(|| std::io::Error::other(format!("no libstd-*.so in {}", dir.display())))
}

/// Copies `file` into the content-addressed `store` (`<store>/<sha256>/<name>`, kept
/// when already there).
pub fn store_lib(file: &Path, store: &Path) -> std::io::Result<SharedLib> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other(format!("{}: no file name", file.display())))?
        .to_string();
    let (sha256, size) = crate::measure::sha256_of_file(file)?;
    let dir = store.join(&sha256);
    let path = dir.join(&name);
    if !path.exists() {
        std::fs::create_dir_all(&dir)?;
        // A name of this call's own: two stores of the same library at once (two
        // replays storing libstd) must not write into one file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".incoming-{}-{n}", std::process::id()));
        std::fs::copy(file, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(SharedLib { name, sha256, size, path })
}

/// Makes the libraries loadable beside a binary stored in `dir`: a link
/// `<dir>/.stand-libs/<sha256>` to each one's store directory.
pub fn link_beside(dir: &Path, libs: &[SharedLib]) -> std::io::Result<()> {
    if libs.is_empty() {
        return Ok(());
    }
    let libs_dir = dir.join(LIBS_DIR);
    std::fs::create_dir_all(&libs_dir)?;
    for lib in libs {
        let link = libs_dir.join(&lib.sha256);
        let target = lib.path.parent().ok_or_else(|| std::io::Error::other("library without a directory"))?;
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        let tmp = libs_dir.join(format!(".{}-{}", lib.sha256, std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        std::fs::rename(&tmp, &link)?;
    }
    Ok(())
}

/// The generated crate: one `extern crate` per rlib (under an alias: two versions of
/// a crate have the same name).
pub fn deps_source(rlibs: &BTreeSet<PathBuf>) -> String {
    let mut text = String::from("// Generated by devd (devd/src/replay/dylib.rs): the dependencies' shared library.\n");
    for i in 0..rlibs.len() {
        text.push_str(&format!("extern crate d{i};\n"));
    }
    text
}

/// Options of a binary's command line that the library's must share: the target, the
/// linker and what it is given, code generation for the CPU.
fn shared_options(bin: &Recipe) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = bin.args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--target" | "--sysroot" => {
                if let Some(value) = args.next() {
                    out.extend([arg.clone(), value.clone()]);
                }
            }
            "-C" => {
                if let Some(value) = args.next() {
                    let keep = ["linker=", "linker-flavor=", "link-arg=", "link-args=", "target-cpu=", "target-feature="];
                    if keep.iter().any(|k| value.starts_with(k)) {
                        out.extend([arg.clone(), value.clone()]);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The rustc that builds the dependencies' library (`source` written by the caller)
/// into `out_dir`, from a binary's recorded command line (its rustc, environment,
/// target and linker options) and the rlibs it links.
pub fn deps_recipe(bin: &Recipe, rlibs: &BTreeSet<PathBuf>, key: &str, source: &Path, out_dir: &Path, std: &SharedLib) -> Option<Recipe> {
    let deps_dir = bin.out_dir()?;
    let mut args: Vec<String> = [
        "--crate-name",
        DEPS_CRATE,
        "--edition=2021",
        &source.display().to_string(),
        "--error-format=json",
        "--json=diagnostic-rendered-ansi,artifacts",
        "--crate-type",
        "dylib",
        "--emit=link",
        "--cap-lints",
        "allow",
        "-C",
        "prefer-dynamic",
        "-C",
        "embed-bitcode=no",
        "-C",
        "debuginfo=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["-C".into(), format!("metadata={key}"), "-C".into(), format!("extra-filename=-{key}")]);
    args.extend(["--out-dir".into(), out_dir.display().to_string()]);
    args.extend(["-L".into(), format!("dependency={}", deps_dir.display())]);
    args.extend(["-C".into(), format!("link-arg=-Wl,-rpath,$ORIGIN/../{}", std.sha256)]);
    args.extend(shared_options(bin));
    for (i, rlib) in rlibs.iter().enumerate() {
        args.extend(["--extern".into(), format!("d{i}={}", rlib.display())]);
    }
    Some(Recipe {
        package: format!("{} (dependencies)", bin.package),
        unit: Unit::Lib,
        program: bin.program.clone(),
        args,
        cwd: out_dir.display().to_string(),
        env: bin.env.clone(),
    })
}

/// A binary's recorded command line, linked against `built` into `out_dir` (with
/// its own incremental dir: cargo's would be invalidated by the other options).
pub fn dynamic_recipe(bin: &Recipe, built: &Built, out_dir: &Path) -> Recipe {
    let mut args = Vec::with_capacity(bin.args.len() + 12);
    let mut given = bin.args.iter();
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--out-dir" => {
                given.next();
                args.extend(["--out-dir".into(), out_dir.display().to_string()]);
            }
            "-C" => match given.next() {
                Some(value) if value.starts_with("incremental=") => {
                    args.extend(["-C".into(), format!("incremental={}", out_dir.join("incremental").display())]);
                }
                Some(value) => args.extend([arg.clone(), value.clone()]),
                None => args.push(arg.clone()),
            },
            _ => args.push(arg.clone()),
        }
    }
    let deps_dir = built.deps.path.parent().map(Path::to_path_buf).unwrap_or_default();
    args.extend(["-C".into(), "prefer-dynamic".into(), "-Z".into(), "unstable-options".into()]);
    args.extend(["--extern".into(), format!("force:{DEPS_CRATE}={}", built.deps.path.display())]);
    args.extend(["-L".into(), format!("dependency={}", deps_dir.display())]);
    args.extend([
        "-C".into(),
        format!("link-arg=-Wl,-rpath,$ORIGIN/{LIBS_DIR}/{}:$ORIGIN/{LIBS_DIR}/{}", built.deps.sha256, built.std.sha256),
    ]);
    let mut env: Vec<(String, String)> = bin.env.iter().filter(|(k, _)| k != "RUSTC_BOOTSTRAP").cloned().collect();
    env.push(("RUSTC_BOOTSTRAP".into(), "1".into()));
    Recipe { package: bin.package.clone(), unit: bin.unit.clone(), program: bin.program.clone(), args, cwd: bin.cwd.clone(), env }
}

/// The library built for `key` and the libstd it links.
pub fn new_built(key: &str, deps: SharedLib, std: SharedLib) -> Built {
    Built { key: key.to_string(), deps, std }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin_recipe(args: &[&str]) -> Recipe {
        Recipe {
            package: "svc1".into(),
            unit: Unit::Bin("svc1".into()),
            program: "/r/rustc".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            cwd: "/w".into(),
            env: vec![("PATH".into(), "/bin".into())],
        }
    }

    fn lib(name: &str, sha: &str) -> SharedLib {
        SharedLib { name: name.into(), sha256: sha.into(), size: 1, path: PathBuf::from(format!("/s/libs/{sha}/{name}")) }
    }

    #[test]
    fn the_dependencies_are_the_linked_rlibs_of_cargos_deps_dir() {
        let args = r#"LC_ALL="C" "cc" "/tmp/rustcX/symbols.o" "/t/debug/deps/svc1-abc.svc1.o" "/t/debug/deps/libsvc1-11.rlib" "/t/debug/deps/libservice_kit-22.rlib" "/t/debug/deps/libtokio-33.rlib" "/t/debug/deps/libtokio_util-44.rlib" "/t/debug/deps/libtokio-33.rlib" "/sysroot/lib/rustlib/x/lib/libstd-55.rlib" "/t/debug/deps/libfoo-66.so" "-o" "/t/debug/deps/svc1-abc""#;
        let rlibs = linked_rlibs(args, Path::new("/t/debug/deps"));
        let names = ["libsvc1-11.rlib", "libservice_kit-22.rlib", "libtokio-33.rlib", "libtokio_util-44.rlib"];
        assert_eq!(rlibs, names.map(|n| Path::new("/t/debug/deps").join(n)));
        assert_eq!(rlibs.iter().map(|r| rlib_crate(r).expect("a crate")).collect::<Vec<_>>(), ["svc1", "service_kit", "tokio", "tokio_util"]);
    }

    #[test]
    fn dependencies_are_known_only_for_the_command_line_they_were_read_with() {
        let mut dylibs = Dylibs::default();
        let recipe = bin_recipe(&["--crate-name", "svc1", "--extern", "kit=/t/deps/libkit-1.rlib"]);
        assert_eq!(dylibs.dependencies("svc1", &[&recipe]), None);
        dylibs.remember("svc1", &recipe, vec![PathBuf::from("/t/deps/libtokio-1.rlib")]);
        assert_eq!(dylibs.dependencies("svc1", &[&recipe]), Some(BTreeSet::from([PathBuf::from("/t/deps/libtokio-1.rlib")])));
        assert_eq!(dylibs.dependencies("svc1 svc2", &[&recipe]), None, "another selection");
        let rerecorded = bin_recipe(&["--crate-name", "svc1", "--extern", "kit=/t/deps/libkit-2.rlib"]);
        assert_eq!(dylibs.dependencies("svc1", &[&rerecorded]), None, "cargo recorded another command line");
    }

    #[test]
    fn what_a_restart_takes_over_is_saved_when_it_changed_and_loaded_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dylib/state.json");
        let mut dylibs = Dylibs::default();
        let recipe = bin_recipe(&["--crate-name", "svc1"]);
        dylibs.remember("svc1", &recipe, vec![PathBuf::from("/t/deps/libtokio-1.rlib")]);
        dylibs.heat(&BTreeSet::from(["svc1".to_string()]));
        dylibs.save(&path).expect("saved");
        let loaded = Dylibs::load(&path);
        assert_eq!(loaded.dependencies("svc1", &[&recipe]), dylibs.dependencies("svc1", &[&recipe]));
        assert_eq!(loaded.hot, dylibs.hot);
        std::fs::remove_file(&path).expect("remove");
        dylibs.save(&path).expect("unchanged");
        assert!(!path.exists(), "nothing changed, nothing written");
        dylibs.heat(&BTreeSet::from(["kit".to_string()]));
        dylibs.save(&path).expect("changed");
        assert!(Dylibs::load(&path).hot.contains("kit"));
        assert!(Dylibs::load(&dir.path().join("none.json")).closures.is_empty(), "no file: nothing known");
    }

    #[test]
    fn a_workspace_library_is_in_the_library_until_a_replay_recompiles_it() {
        let mut dylibs = Dylibs::default();
        let recipe = bin_recipe(&["--crate-name", "svc1"]);
        let rlibs = ["/t/deps/libsvc1-1.rlib", "/t/deps/libservice_kit-2.rlib", "/t/deps/libtokio-3.rlib"].map(PathBuf::from);
        dylibs.remember("svc1", &recipe, rlibs.to_vec());
        dylibs.heat(&BTreeSet::from(["svc1".to_string()]));
        let held = |dylibs: &Dylibs| dylibs.dependencies("svc1", &[&recipe]).expect("known").into_iter().collect::<Vec<_>>();
        assert_eq!(held(&dylibs), [rlibs[1].clone(), rlibs[2].clone()], "service-kit in, the edited svc1 out");
        dylibs.heat(&BTreeSet::from(["service_kit".to_string()]));
        assert_eq!(held(&dylibs), [rlibs[2].clone()], "service-kit recompiled");
        dylibs.heat(&BTreeSet::new());
        assert_eq!(held(&dylibs), [rlibs[2].clone()], "and out for good");
    }

    #[test]
    fn the_last_libraries_built_are_remembered() {
        let lib = |name: &str| SharedLib { name: name.into(), sha256: "0".repeat(64), size: 1, path: PathBuf::from(name) };
        let mut dylibs = Dylibs::default();
        for k in 0..=KEEP_BUILT {
            dylibs.set_built(new_built(&format!("k{k}"), lib("libdeps.so"), lib("libstd.so")));
        }
        assert!(dylibs.built("k0").is_none(), "the oldest is forgotten");
        assert!((1..=KEEP_BUILT).all(|k| dylibs.built(&format!("k{k}")).is_some()));
        dylibs.set_built(new_built("k1", lib("libdeps.so"), lib("libstd.so")));
        dylibs.set_built(new_built("k9", lib("libdeps.so"), lib("libstd.so")));
        assert!(dylibs.built("k1").is_some(), "built again: the newest");
        assert!(dylibs.built("k2").is_none());
    }

    #[test]
    fn a_library_is_built_once_per_key_and_never_again_after_it_failed() {
        let lib = |name: &str| SharedLib { name: name.into(), sha256: "0".repeat(64), size: 1, path: PathBuf::from(name) };
        let mut dylibs = Dylibs::default();
        assert!(dylibs.start("k1"));
        assert!(dylibs.building("k1") && !dylibs.start("k1"), "one build of a key at a time");
        dylibs.set_built(new_built("k1", lib("libdeps.so"), lib("libstd.so")));
        dylibs.finish("k1");
        assert!(!dylibs.building("k1") && !dylibs.start("k1"), "k1 is built");
        assert!(dylibs.start("k2"), "other dependencies");
        dylibs.finish("k2");
        dylibs.fail("k2".into());
        assert!(!dylibs.start("k2"), "k2 failed");
    }

    #[test]
    fn the_key_follows_each_file_and_its_rewrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("liba-1.rlib");
        std::fs::write(&a, "one").expect("write");
        let set = BTreeSet::from([a.clone()]);
        let first = key("/r/rustc", "x86_64-unknown-linux-gnu", &set).expect("key");
        assert_eq!(first, key("/r/rustc", "x86_64-unknown-linux-gnu", &set).expect("key"));
        assert_ne!(first, key("/r/rustc", "aarch64-unknown-linux-gnu", &set).expect("key"));
        std::fs::write(&a, "one, rebuilt").expect("rewrite");
        let rewritten = key("/r/rustc", "x86_64-unknown-linux-gnu", &set).expect("key");
        assert_ne!(first, rewritten);
        // Rewritten with the same size: the mtime alone tells.
        let file = std::fs::File::options().write(true).open(&a).expect("open");
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800)).expect("mtime");
        assert_ne!(rewritten, key("/r/rustc", "x86_64-unknown-linux-gnu", &set).expect("key"), "same size, another mtime");
        std::fs::remove_file(&a).expect("remove");
        assert!(key("/r/rustc", "x86_64-unknown-linux-gnu", &set).is_err(), "a file that is gone");
    }

    #[test]
    fn a_dynamic_link_is_the_recorded_one_in_devds_dirs_against_the_library() {
        let bin = bin_recipe(&[
            "--crate-name", "svc1", "--crate-type", "bin", "-C", "incremental=/t/debug/incremental", "--out-dir", "/t/debug/deps",
            "-C", "extra-filename=-abc", "-L", "dependency=/t/debug/deps", "--extern", "svc1=/t/debug/deps/libsvc1-1.rlib",
        ]);
        let built = new_built("k", lib("lib__stand_deps-k.so", "aa"), lib("libstd-1.so", "bb"));
        let dynamic = dynamic_recipe(&bin, &built, Path::new("/s/dylib/bin"));
        assert_eq!(dynamic.out_dir(), Some(Path::new("/s/dylib/bin")));
        assert_eq!(dynamic.codegen("incremental="), Some("/s/dylib/bin/incremental"));
        assert_eq!(dynamic.codegen("extra-filename="), Some("-abc"), "cargo's name, in devd's dir");
        assert_eq!(dynamic.value("--extern"), Some("svc1=/t/debug/deps/libsvc1-1.rlib"));
        let joined = dynamic.args.join(" ");
        assert!(joined.contains("-C prefer-dynamic -Z unstable-options --extern force:__stand_deps=/s/libs/aa/lib__stand_deps-k.so -L dependency=/s/libs/aa"), "{joined}");
        assert!(joined.ends_with("-C link-arg=-Wl,-rpath,$ORIGIN/.stand-libs/aa:$ORIGIN/.stand-libs/bb"), "{joined}");
        assert!(dynamic.env.contains(&("RUSTC_BOOTSTRAP".into(), "1".into())));
        assert_eq!(bin.env.len() + 1, dynamic.env.len());
    }

    #[test]
    fn the_library_is_built_with_the_binarys_rustc_target_and_linker() {
        let bin = bin_recipe(&[
            "--crate-name", "svc1", "--target", "aarch64-unknown-linux-gnu", "--out-dir", "/t/debug/deps", "-C", "linker=/usr/bin/aarch64-cc",
            "-C", "incremental=/t/i", "-C", "link-arg=-fuse-ld=lld", "-C", "debuginfo=2",
        ]);
        let rlibs = BTreeSet::from([PathBuf::from("/t/debug/deps/liba-1.rlib"), PathBuf::from("/t/debug/deps/libb-2.rlib")]);
        let recipe = deps_recipe(&bin, &rlibs, "k1", Path::new("/s/d/deps.rs"), Path::new("/s/d"), &lib("libstd-1.so", "bb")).expect("recipe");
        let joined = recipe.args.join(" ");
        for part in [
            "--crate-name __stand_deps",
            "--crate-type dylib",
            "-C prefer-dynamic",
            "--out-dir /s/d",
            "-L dependency=/t/debug/deps",
            "-C link-arg=-Wl,-rpath,$ORIGIN/../bb",
            "--target aarch64-unknown-linux-gnu",
            "-C linker=/usr/bin/aarch64-cc",
            "-C link-arg=-fuse-ld=lld",
            "--extern d0=/t/debug/deps/liba-1.rlib --extern d1=/t/debug/deps/libb-2.rlib",
        ] {
            assert!(joined.contains(part), "{part} in {joined}");
        }
        assert!(!joined.contains("incremental") && !joined.contains("debuginfo=2"), "{joined}");
        assert_eq!(deps_source(&rlibs).lines().filter(|l| l.starts_with("extern crate")).collect::<Vec<_>>(), ["extern crate d0;", "extern crate d1;"]);
    }

    #[test]
    fn libraries_are_stored_by_content_and_linked_beside_a_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("libx-1.so");
        std::fs::write(&file, "elf").expect("write");
        let store = dir.path().join("libs");
        let lib = store_lib(&file, &store).expect("store");
        assert_eq!(lib.path, store.join(&lib.sha256).join("libx-1.so"));
        assert_eq!(std::fs::read(&lib.path).expect("stored"), b"elf");
        assert_eq!(store_lib(&file, &store).expect("again"), lib);
        let artifacts = dir.path().join("artifacts");
        link_beside(&artifacts, std::slice::from_ref(&lib)).expect("link");
        link_beside(&artifacts, std::slice::from_ref(&lib)).expect("link again");
        assert_eq!(std::fs::read(artifacts.join(LIBS_DIR).join(&lib.sha256).join("libx-1.so")).expect("beside"), b"elf");
    }
}
