//! After a devd restart: the first cargo build's binaries linked against the
//! dependencies' library the replays of the devd before used ([`Builder::relink`]),
//! and where what those replays learnt is kept.

use super::*;

impl Builder {
    /// After this builder's first cargo build (a devd start): `bins` linked against the
    /// dependencies' library a replay of the devd before built for them, when it is
    /// still there for the same dependencies ([`replay::relink`]). The instances may run
    /// such a binary of these sources already: then this is the same file, and nothing
    /// is delivered, where cargo's static build would restart every service.
    pub(super) async fn relink(
        &self,
        request: &BuildRequest,
        bins: Vec<(PackageName, String)>,
        cargo_rlibs: &BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
        started: Instant,
        built_at: DateTime<Utc>,
        triple: &str,
    ) -> Result<Option<BuildOutput>, String> {
        if !dylib::enabled() || request.targets.iter().any(|t| request.static_link.contains(&t.package)) {
            return Ok(None);
        }
        let key = selection(request).join(" ");
        let scope = ReplayScope { libs: Vec::new(), bins, changed: BTreeSet::new() };
        let Ok(recipes) = self.recipes.lock().map_err(|_| "recipes poisoned")?.select(&scope, &key) else {
            return Ok(None); // cargo found a binary fresh: it recorded no command line for it
        };
        let root = self.config.state_dir.join("dylib");
        let none = BTreeSet::new();
        let layout = replay::Layout { dylibs: &self.dylibs, selection: &key, changed: &none, triple, root: &root, static_link: &none };
        let mut on_start = |_: u32, command: String| tracing::debug!(%command, "relinking against the dependencies' library");
        let Some(relinked) = replay::relink(&recipes, cargo_rlibs, &mut on_start, &layout).await? else { return Ok(None) };
        let duration_ms = millis(started.elapsed());
        let mut artifacts = Vec::new();
        for wanted in &request.targets {
            let (package, bin) = scope.bins.iter().find(|(p, _)| *p == wanted.package).ok_or("a binary left the scope")?;
            let exe = relinked.executables.get(&(package.clone(), bin.clone())).ok_or_else(|| format!("no {bin} relinked"))?;
            let stored = self.store(request, wanted, bin.clone(), exe.clone(), Produced::Replay, duration_ms, built_at, triple, &relinked.libs).await;
            artifacts.push(stored.map_err(|e| e.rendered)?);
        }
        tracing::info!(binaries = artifacts.len(), duration_ms, "build finished; linked against the dependencies' library of the devd before");
        Ok(Some(BuildOutput { artifacts, duration_ms, warnings: Vec::new(), stderr_tail: Vec::new(), replayed: false }))
    }

    /// Best effort: without it, a restart links statically until a replay learns anew.
    pub(super) fn save_dylibs(&self) {
        let path = dylib_state(&self.config.state_dir);
        let saved = self.dylibs.lock().map_err(|_| std::io::Error::other("poisoned")).and_then(|mut d| d.save(&path));
        if let Err(e) = saved {
            tracing::debug!(error = %e, path = %path.display(), "cannot save what the replays know of the binaries' dependencies");
        }
    }
}

/// Where a builder keeps what a devd restart takes over of [`dylib::Dylibs`].
pub(super) fn dylib_state(state_dir: &Path) -> PathBuf {
    state_dir.join("dylib").join("state.json")
}
