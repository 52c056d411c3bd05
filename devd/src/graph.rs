//! The workspace's package graph, from `cargo metadata`: which package a changed path
//! belongs to, and which services must be rebuilt because of it.
//!
//! Only workspace members take part. An edge `a -> b` ("b must be rebuilt when a
//! changes") exists when `b` depends on `a` as a normal or build dependency; dev
//! dependencies are left out because they never go into a service's binary. Optional
//! dependencies are resolved with all features on, so the graph errs on the side of
//! rebuilding too much rather than too little.
//!
//! Invariant: after [`WorkspaceGraph::load`] nothing here does IO except the
//! best-effort canonicalisation of the paths it is asked about.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use cargo_metadata::{CargoOpt, DependencyKind, Metadata, MetadataCommand, TargetKind};


/// A cargo package name, as written in its `Cargo.toml`.
pub type PackageName = String;

/// Files at the workspace root that change how every package is built.
const ROOT_FILES_AFFECTING_ALL: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain",
    "rust-toolchain.toml",
    ".cargo/config",
    ".cargo/config.toml",
];

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("cargo metadata failed in {root}")]
    Metadata {
        root: PathBuf,
        #[source]
        source: cargo_metadata::Error,
    },
    #[error("cargo metadata for {root} has no dependency graph (resolve)")]
    NoResolve { root: PathBuf },
}

/// One workspace member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageInfo {
    pub name: PackageName,
    /// The directory holding the package's `Cargo.toml` (canonical where possible).
    pub manifest_dir: PathBuf,
    /// Names of the package's binary targets.
    pub bins: Vec<String>,
    /// It has a library target (`lib`, `rlib`, `proc-macro`, ...).
    pub lib: bool,
    /// The crate name of its library target (`[lib] name`, `-` as `_`): what rustc and
    /// its rlib's file name call it, which need not be the package's name.
    #[serde(skip)]
    pub lib_crate: Option<String>,
    /// It has a build script (`build.rs`).
    pub build_script: bool,
}

/// The workspace members, their directories, and who depends on whom.
#[derive(Debug, Clone)]
pub struct WorkspaceGraph {
    root: PathBuf,
    target_dir: PathBuf,
    packages: BTreeMap<PackageName, PackageInfo>,
    /// For each package: the packages that depend on it directly (normal or build).
    dependents: BTreeMap<PackageName, BTreeSet<PackageName>>,
}

impl WorkspaceGraph {
    /// Runs `cargo metadata --format-version 1 --all-features` in `workspace_root`.
    /// Blocking (it waits for cargo); call it from `spawn_blocking` in async code.
    pub fn load(workspace_root: &Path) -> Result<Self, GraphError> {
        let metadata = MetadataCommand::new()
            .current_dir(workspace_root)
            .manifest_path(workspace_root.join("Cargo.toml"))
            .features(CargoOpt::AllFeatures)
            .exec()
            .map_err(|source| GraphError::Metadata {
                root: workspace_root.to_path_buf(),
                source,
            })?;
        Self::from_metadata(&metadata)
    }

    /// Builds the graph from already parsed metadata (pure apart from canonicalising
    /// the directories it names).
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, GraphError> {
        let root = canonical_or_same(metadata.workspace_root.as_std_path());
        let resolve = metadata
            .resolve
            .as_ref()
            .ok_or_else(|| GraphError::NoResolve { root: root.clone() })?;

        let members: BTreeSet<_> = metadata.workspace_members.iter().collect();
        let mut names_by_id = BTreeMap::new();
        let mut packages = BTreeMap::new();
        for package in metadata.packages.iter().filter(|p| members.contains(&p.id)) {
            let name = package.name.to_string();
            let dir = package
                .manifest_path
                .parent()
                .map(|d| canonical_or_same(d.as_std_path()))
                .unwrap_or_else(|| root.clone());
            let bins = package
                .targets
                .iter()
                .filter(|t| t.is_bin())
                .map(|t| t.name.clone())
                .collect();
            let lib_target = package.targets.iter().find(|t| {
                t.kind.iter().any(|k| {
                    matches!(
                        k,
                        TargetKind::Lib
                            | TargetKind::RLib
                            | TargetKind::DyLib
                            | TargetKind::CDyLib
                            | TargetKind::StaticLib
                            | TargetKind::ProcMacro
                    )
                })
            });
            let lib = lib_target.is_some();
            let lib_crate = lib_target.map(|t| t.name.replace('-', "_"));
            let build_script = package.targets.iter().any(|t| t.is_custom_build());
            names_by_id.insert(&package.id, name.clone());
            packages.insert(
                name.clone(),
                PackageInfo {
                    name,
                    manifest_dir: dir,
                    bins,
                    lib,
                    lib_crate,
                    build_script,
                },
            );
        }

        let mut dependents: BTreeMap<PackageName, BTreeSet<PackageName>> = BTreeMap::new();
        for node in &resolve.nodes {
            let Some(dependent) = names_by_id.get(&node.id) else {
                continue;
            };
            for dep in &node.deps {
                let Some(dependency) = names_by_id.get(&dep.pkg) else {
                    continue;
                };
                // An empty list comes from very old cargo versions: count it as normal.
                let goes_into_binary = dep.dep_kinds.is_empty()
                    || dep
                        .dep_kinds
                        .iter()
                        .any(|k| k.kind != DependencyKind::Development);
                if goes_into_binary {
                    dependents
                        .entry(dependency.clone())
                        .or_default()
                        .insert(dependent.clone());
                }
            }
        }

        Ok(Self {
            root,
            target_dir: metadata.target_directory.clone().into_std_path_buf(),
            packages,
            dependents,
        })
    }

    /// The workspace root (canonical where possible).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cargo's target directory; a watcher must ignore it even when it lies outside
    /// the workspace (`CARGO_TARGET_DIR`).
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    pub fn packages(&self) -> impl Iterator<Item = &PackageInfo> {
        self.packages.values()
    }

    pub fn package(&self, name: &str) -> Option<&PackageInfo> {
        self.packages.get(name)
    }

    /// The packages a changed path belongs to: the innermost package directory that
    /// contains it, or every package for the workspace-wide files at the root
    /// (`Cargo.toml`, `Cargo.lock`, `rust-toolchain[.toml]`, `.cargo/config[.toml]`).
    /// A path outside every package (docs, the chart, ...) belongs to none.
    /// Relative paths are taken relative to the workspace root.
    pub fn packages_for_path(&self, path: &Path) -> Vec<PackageName> {
        let path = self.normalize(path);
        if let Ok(rel) = path.strip_prefix(&self.root) {
            if ROOT_FILES_AFFECTING_ALL.iter().any(|f| rel == Path::new(f)) {
                return self.packages.keys().cloned().collect();
            }
        }
        self.packages
            .values()
            .filter(|p| path.starts_with(&p.manifest_dir))
            .max_by_key(|p| p.manifest_dir.components().count())
            .map(|p| vec![p.name.clone()])
            .unwrap_or_default()
    }

    /// `package` and every workspace package that depends on it, directly or
    /// transitively, through normal or build dependencies.
    pub fn dependents_closure(&self, package: &str) -> BTreeSet<PackageName> {
        let mut seen = BTreeSet::new();
        if !self.packages.contains_key(package) {
            return seen;
        }
        let mut queue = VecDeque::from([package.to_string()]);
        // Each package enters the queue at most once, so this ends after at most
        // `packages.len()` rounds.
        while let Some(current) = queue.pop_front() {
            if !seen.insert(current.clone()) {
                continue;
            }
            if let Some(next) = self.dependents.get(&current) {
                queue.extend(next.iter().filter(|n| !seen.contains(*n)).cloned());
            }
        }
        seen
    }

    /// The union of [`Self::dependents_closure`] over `packages`.
    fn dependents_of_all(&self, packages: &BTreeSet<PackageName>) -> BTreeSet<PackageName> {
        packages.iter().flat_map(|p| self.dependents_closure(p)).collect()
    }

    /// The services (given as package names) that must be rebuilt because these
    /// paths changed: a change in a shared crate reaches every service depending on
    /// it, transitively.
    pub fn affected_services<P, S>(&self, changed_paths: &[P], services: &[S]) -> BTreeSet<PackageName>
    where
        P: AsRef<Path>,
        S: AsRef<str>,
    {
        let mut touched = BTreeSet::new();
        for path in changed_paths {
            touched.extend(self.packages_for_path(path.as_ref()));
        }
        let affected = self.dependents_of_all(&touched);
        services
            .iter()
            .map(|s| s.as_ref())
            .filter(|s| affected.contains(*s))
            .map(str::to_string)
            .collect()
    }

    /// What a change of `changed_paths` needs recompiled when it is a change of
    /// sources only, for devd to run rustc itself ([`crate::replay`]); `None` when
    /// cargo has to build: a manifest, lock file, toolchain or cargo config, a build
    /// script or a package that has one, or a requested package the change does not
    /// reach. Paths outside every package are left out. `requested` are the packages
    /// whose binaries are wanted; each needs exactly one binary, or one named like it.
    pub fn replay_scope<P, S>(&self, changed_paths: &[P], requested: &[S]) -> Option<ReplayScope>
    where
        P: AsRef<Path>,
        S: AsRef<str>,
    {
        let mut touched = BTreeSet::new();
        for path in changed_paths {
            let path = self.normalize(path.as_ref());
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if matches!(name, "Cargo.toml" | "Cargo.lock" | "build.rs" | "config" | "config.toml")
                || name.starts_with("rust-toolchain")
            {
                return None;
            }
            touched.extend(self.packages_for_path(&path));
        }
        if touched.is_empty() || touched.iter().any(|p| self.packages.get(p).is_none_or(|i| i.build_script)) {
            return None;
        }
        let affected = self.dependents_of_all(&touched);
        let mut needed = BTreeSet::new();
        let mut bins = Vec::new();
        for package in requested.iter().map(AsRef::as_ref) {
            let info = self.packages.get(package)?;
            if !affected.contains(package) || info.build_script {
                return None;
            }
            let bin = match info.bins.as_slice() {
                [only] => only.clone(),
                several => several.iter().find(|b| *b == package)?.clone(),
            };
            bins.push((package.to_string(), bin));
            // The package's own dependencies within the workspace, itself included.
            needed.extend(
                self.packages.keys().filter(|p| self.dependents_closure(p).contains(package)).cloned(),
            );
        }
        let libs: BTreeSet<PackageName> = affected
            .intersection(&needed)
            .filter(|p| self.packages.get(*p).is_some_and(|i| i.lib))
            .cloned()
            .collect();
        if libs.iter().any(|p| self.packages.get(p).is_some_and(|i| i.build_script)) {
            return None;
        }
        // Every library the change reaches, not only those this replay needs: one it
        // leaves alone is stale until it is compiled again.
        let changed = affected.iter().filter_map(|p| self.packages.get(p)?.lib_crate.clone()).collect();
        Some(ReplayScope { libs: dependency_order(&libs, &self.dependents), bins, changed })
    }

    /// The directories a watcher needs: the workspace root plus any package that lies
    /// outside it, with nested directories folded into their ancestors. Watch them
    /// recursively, minus ignored paths and [`Self::target_dir`].
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::iter::once(self.root.clone())
            .chain(self.packages.values().map(|p| p.manifest_dir.clone()))
            .collect();
        dirs.sort_by_key(|d| d.components().count());
        let mut kept: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if !kept.iter().any(|k| dir.starts_with(k)) {
                kept.push(dir);
            }
        }
        kept.sort();
        kept
    }

    /// Absolute, canonical where the file system allows: a deleted file is
    /// resolved through its deepest existing ancestor, so the paths of removed files
    /// still map to their package.
    fn normalize(&self, path: &Path) -> PathBuf {
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        };
        let lexical = lexically_normal(&absolute);
        let mut existing = lexical.as_path();
        let mut rest = Vec::new();
        // Bounded by the number of components in the path.
        loop {
            if let Ok(canonical) = existing.canonicalize() {
                let mut out = canonical;
                out.extend(rest.iter().rev());
                return out;
            }
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => return lexical,
            }
        }
    }
}

fn canonical_or_same(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Removes `.` and resolves `..` without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// What a source-only change needs recompiled, decided from the workspace graph:
/// the workspace libraries in dependency order, then the binaries (package, bin).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayScope {
    pub libs: Vec<PackageName>,
    pub bins: Vec<(PackageName, String)>,
    /// The crate names of the workspace libraries the change reaches: those in `libs`,
    /// which this replay recompiles, and the ones depending on them that it leaves
    /// to a later build. [`crate::replay::dylib`] keeps them out of the dependencies'
    /// shared library from now on (a library edited once is likely to be edited again).
    pub changed: BTreeSet<String>,
}

/// Topological order of `set` given `dependents` (package → packages depending on
/// it): every package after all of its dependencies within the set. Ties in name order.
pub fn dependency_order(
    set: &std::collections::BTreeSet<PackageName>,
    dependents: &BTreeMap<PackageName, std::collections::BTreeSet<PackageName>>,
) -> Vec<PackageName> {
    let mut pending: BTreeMap<&PackageName, usize> = set.iter().map(|p| (p, 0)).collect();
    for p in set {
        for d in dependents.get(p).into_iter().flatten().filter(|d| set.contains(*d)) {
            if let Some(n) = pending.get_mut(d) {
                *n += 1;
            }
        }
    }
    let mut ready: VecDeque<&PackageName> = pending.iter().filter(|(_, n)| **n == 0).map(|(p, _)| *p).collect();
    let mut order = Vec::with_capacity(set.len());
    // Each package becomes ready once: at most `set.len()` rounds.
    while let Some(p) = ready.pop_front() {
        order.push(p.clone());
        for d in dependents.get(p).into_iter().flatten().filter(|d| set.contains(*d)) {
            if let Some(n) = pending.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    ready.push_back(d);
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalisation() {
        assert_eq!(lexically_normal(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(lexically_normal(Path::new("/a/b/")), PathBuf::from("/a/b"));
    }

    #[test]
    fn dependency_order_puts_dependencies_first() {
        let dependents: BTreeMap<String, BTreeSet<String>> = [
            ("base".to_string(), BTreeSet::from(["kit".to_string(), "svc2".to_string()])),
            ("kit".to_string(), BTreeSet::from(["svc1".to_string(), "svc2".to_string()])),
        ]
        .into_iter()
        .collect();
        let set: BTreeSet<String> = ["svc2", "svc1", "kit", "base"].iter().map(|s| s.to_string()).collect();
        assert_eq!(dependency_order(&set, &dependents), vec!["base", "kit", "svc1", "svc2"]);
        let part: BTreeSet<String> = ["svc2", "kit"].iter().map(|s| s.to_string()).collect();
        assert_eq!(dependency_order(&part, &dependents), vec!["kit", "svc2"]);
    }
}
