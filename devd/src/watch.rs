//! Watches source trees and reports content changes in debounced batches.
//!
//! Filtering follows git and ripgrep: `.ignore` and `.gitignore` files in every
//! directory (deeper files win, `.ignore` beats `.gitignore`), then
//! `.git/info/exclude`, then the user's global excludes file. `.git/` and cargo
//! `target/` directories (a `target` next to a `Cargo.toml`) are always ignored, as are
//! the extra paths the caller names (devd's state dir, a `CARGO_TARGET_DIR` elsewhere).
//! `.gitignore` is honoured whether or not the tree is a git repository.
//!
//! ## Why one non-recursive watch per kept directory
//! notify's recursive mode on Linux walks the whole tree and spends one inotify watch
//! on every directory, ignored ones included: a `target/` dir alone holds thousands,
//! and `max_user_watches` (often 8192 or 65536) runs out in a big repo, after which
//! events silently stop. Filtering events afterwards does not give those watches back.
//! So this module walks the tree itself, prunes ignored directories before descending,
//! and puts a *non-recursive* watch on each directory it keeps (one inotify watch per
//! kept directory, none for ignored ones). The price is doing notify's bookkeeping for
//! new directories ourselves: when a directory is created or moved in, it is walked,
//! watched, and every file already inside it is reported, since those files may have
//! been written before its watch existed. A directory removed or moved away loses its
//! watches (inotify drops them; the book-keeping here follows). Changing a `.gitignore`
//! or `.ignore` reloads it and rescans its directory.
//!
//! ## Debounce
//! A batch opens at its first event and closes when both hold: `window` has passed
//! since that first event, and no event arrived during the last `quiet` (or
//! `burst_quiet` once the batch holds more than one path: a burst is in progress) —
//! but never later than `max_batch` after the first event. A single save is therefore
//! reported `window` after it happened; a `git checkout` writing hundreds of files
//! keeps the batch open until the burst stops and becomes one batch, even when its
//! writer stalls for a moment.
//!
//! Only content changes count: creation, data modification, removal and renames.
//! Opens, closes, reads and metadata-only changes (chmod, `touch`) do not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// The changes of one debounced burst.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChangeBatch {
    /// Every path that was created, modified, removed or renamed (both names).
    pub paths: BTreeSet<PathBuf>,
    /// When the first event of the batch reached devd (monotonic, for latencies).
    #[serde(skip)]
    pub first_event_at: Instant,
    /// The same moment on the wall clock (for status and logs).
    pub first_event_wall: SystemTime,
    /// Events were lost (the kernel queue overflowed, or a watch could not be
    /// added): treat every watched path as changed.
    pub overflowed: bool,
}

impl ChangeBatch {
    /// Folds a later batch into this one (for a consumer that was busy while several
    /// batches arrived): the union of paths, the earlier first event.
    pub fn merge(&mut self, later: ChangeBatch) {
        self.paths.extend(later.paths);
        if later.first_event_at < self.first_event_at {
            self.first_event_at = later.first_event_at;
            self.first_event_wall = later.first_event_wall;
        }
        self.overflowed |= later.overflowed;
    }
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Directories to watch, each with everything below it that is not ignored.
    pub roots: Vec<PathBuf>,
    /// Paths (files or directories) to ignore in addition to the ignore files.
    pub extra_ignores: Vec<PathBuf>,
    /// Minimum time from a batch's first event to its delivery.
    pub window: Duration,
    /// After `window`, the batch stays open while events keep coming this close together.
    pub quiet: Duration,
    /// The same, once the batch holds more than one path (a burst is in progress).
    pub burst_quiet: Duration,
    /// Hard cap from a batch's first event to its delivery, so a never-ending stream
    /// of events still produces batches.
    pub max_batch: Duration,
}

impl WatchConfig {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            extra_ignores: Vec::new(),
            window: Duration::from_millis(50),
            quiet: Duration::from_millis(50),
            burst_quiet: Duration::from_millis(50),
            max_batch: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: not a readable directory")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the file watcher")]
    Start(#[source] notify::Error),
    #[error(
        "cannot watch {path}: the inotify watch limit is reached; raise it with \
         `sudo sysctl fs.inotify.max_user_watches=524288` or ignore more directories"
    )]
    WatchLimit { path: PathBuf },
    #[error("cannot watch {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Owns the watcher thread. Dropping it (or [`WatchHandle::stop`]) stops watching;
/// the batch channel then closes.
pub struct WatchHandle {
    control: std_mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    watched_dirs: usize,
}

impl WatchHandle {
    /// How many directories got a watch at start.
    pub fn watched_dirs(&self) -> usize {
        self.watched_dirs
    }

    /// Stops the watcher and waits for its thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.control.send(Msg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Msg {
    Event(notify::Result<notify::Event>, Instant, SystemTime),
    Stop,
}

/// Starts watching. Walks the roots (blocking file-system IO: from async code call it
/// inside `spawn_blocking`, or accept the short stall) and returns the handle plus the
/// receiver of batches. Batches are unbounded so the watcher never waits on a busy
/// consumer; such a consumer drains with `try_recv` and [`ChangeBatch::merge`]s.
pub fn start(
    config: WatchConfig,
) -> Result<(WatchHandle, mpsc::UnboundedReceiver<ChangeBatch>), WatchError> {
    let (control_tx, control_rx) = std_mpsc::channel();
    let event_tx = control_tx.clone();
    let watcher = notify::recommended_watcher(move |event| {
        let _ = event_tx.send(Msg::Event(event, Instant::now(), SystemTime::now()));
    })
    .map_err(WatchError::Start)?;

    let mut state = State {
        watcher,
        filter: Filter::new(&config),
        watched: BTreeSet::new(),
        lost_events: false,
    };
    for root in &config.roots {
        let root = root
            .canonicalize()
            .map_err(|source| WatchError::Root { path: root.clone(), source })?;
        if !root.is_dir() {
            return Err(WatchError::Root {
                path: root,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        state.filter.add_root(&root);
        state.watch_tree(&root, None)?;
    }
    let watched_dirs = state.watched.len();

    let (batch_tx, batch_rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("devd-watch".into())
        .spawn(move || run(state, &config, &control_rx, &batch_tx))
        .map_err(|e| WatchError::Start(notify::Error::io(e)))?;
    Ok((
        WatchHandle {
            control: control_tx,
            thread: Some(thread),
            watched_dirs,
        },
        batch_rx,
    ))
}

struct Pending {
    paths: BTreeSet<PathBuf>,
    first_at: Instant,
    first_wall: SystemTime,
    last_at: Instant,
    overflowed: bool,
}

/// The watcher thread: receive raw events, filter, batch, send.
fn run(
    mut state: State,
    config: &WatchConfig,
    control: &std_mpsc::Receiver<Msg>,
    out: &mpsc::UnboundedSender<ChangeBatch>,
) {
    let mut pending: Option<Pending> = None;
    // A message taken off the queue that belongs to the next batch.
    let mut held: Option<Msg> = None;
    loop {
        let msg = match (&pending, held.take()) {
            (_, Some(msg)) => Some(msg),
            (None, None) => match control.recv() {
                Ok(msg) => Some(msg),
                Err(_) => return,
            },
            (Some(p), None) => {
                let quiet = if p.paths.len() > 1 { config.burst_quiet } else { config.quiet };
                let close_at = (p.first_at + config.window)
                    .max(p.last_at + quiet)
                    .min(p.first_at + config.max_batch);
                let now = Instant::now();
                let next = if now >= close_at {
                    // Past the deadline, but events that happened before it may still
                    // be queued (this thread fell behind): they belong to this batch.
                    control.try_recv().map_err(|e| match e {
                        std_mpsc::TryRecvError::Empty => std_mpsc::RecvTimeoutError::Timeout,
                        std_mpsc::TryRecvError::Disconnected => {
                            std_mpsc::RecvTimeoutError::Disconnected
                        }
                    })
                } else {
                    control.recv_timeout(close_at - now)
                };
                match next {
                    Ok(Msg::Event(_, at, _)) if at > close_at => {
                        held = next.ok();
                        None
                    }
                    Ok(msg) => Some(msg),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        match msg {
            Some(Msg::Stop) => return,
            Some(Msg::Event(event, at, wall)) => {
                let mut changed = BTreeSet::new();
                state.handle(event, &mut changed);
                let overflowed = std::mem::take(&mut state.lost_events);
                if changed.is_empty() && !overflowed {
                    continue;
                }
                let p = pending.get_or_insert_with(|| Pending {
                    paths: BTreeSet::new(),
                    first_at: at,
                    first_wall: wall,
                    last_at: at,
                    overflowed: false,
                });
                p.paths.extend(changed);
                p.last_at = at;
                p.overflowed |= overflowed;
            }
            None => {
                if let Some(p) = pending.take() {
                    let batch = ChangeBatch {
                        paths: p.paths,
                        first_event_at: p.first_at,
                        first_event_wall: p.first_wall,
                        overflowed: p.overflowed,
                    };
                    tracing::debug!(paths = batch.paths.len(), "change batch");
                    if out.send(batch).is_err() {
                        return; // nobody listens any more
                    }
                }
            }
        }
    }
}

struct State {
    watcher: notify::RecommendedWatcher,
    filter: Filter,
    /// Directories with a watch of ours.
    watched: BTreeSet<PathBuf>,
    /// Set when events were lost since the last look.
    lost_events: bool,
}

impl State {
    /// Walks `dir` (not ignored itself), watching every directory it keeps. With
    /// `report`, the files found are reported as changed (a directory that just
    /// appeared: its files may predate its watch).
    fn watch_tree(
        &mut self,
        dir: &Path,
        mut report: Option<&mut BTreeSet<PathBuf>>,
    ) -> Result<(), WatchError> {
        let mut stack = vec![dir.to_path_buf()];
        // Each directory is pushed once (symlinks are not followed), so this ends.
        while let Some(dir) = stack.pop() {
            self.filter.load_dir(&dir);
            if !self.watched.contains(&dir) {
                match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.watched.insert(dir.clone());
                    }
                    // Gone already (created and removed quickly): nothing to watch.
                    Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => continue,
                    Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                        return Err(WatchError::WatchLimit { path: dir });
                    }
                    Err(e) if matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) => {
                        continue
                    }
                    Err(source) => return Err(WatchError::Watch { path: dir, source }),
                }
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() {
                    if !self.filter.is_ignored(&path, true) {
                        stack.push(path);
                    }
                } else if let Some(report) = report.as_deref_mut() {
                    if !self.filter.is_ignored(&path, false) {
                        report.insert(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets the watches at and below `dir` (notify already dropped them when the
    /// directory was removed or moved away; unwatching is for a newly ignored one).
    fn unwatch_tree(&mut self, dir: &Path) {
        let gone: Vec<PathBuf> = self
            .watched
            .range(dir.to_path_buf()..)
            .take_while(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for path in gone {
            let _ = self.watcher.unwatch(&path);
            self.watched.remove(&path);
            self.filter.forget_dir(&path);
        }
    }

    fn handle(&mut self, event: notify::Result<notify::Event>, changed: &mut BTreeSet<PathBuf>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; treating everything as changed");
                self.lost_events = true;
                return;
            }
        };
        if event.need_rescan() {
            tracing::warn!("file watcher lost events (queue overflow); treating everything as changed");
            self.lost_events = true;
            return;
        }
        let content_change = match event.kind {
            EventKind::Create(_) | EventKind::Remove(_) => true,
            EventKind::Modify(ModifyKind::Metadata(_)) => false,
            EventKind::Modify(_) => true,
            EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
        };
        if !content_change {
            return;
        }
        // `Both` repeats the `From` and `To` events that came before it.
        if matches!(event.kind, EventKind::Modify(ModifyKind::Name(RenameMode::Both))) {
            return;
        }
        for path in event.paths {
            let exists = path.symlink_metadata().ok();
            let is_dir = match &exists {
                Some(meta) => meta.is_dir(),
                None => self.watched.contains(&path),
            };
            if self.watched.contains(&path) && exists.is_none() {
                // A watched directory went away (removed or moved out).
                self.unwatch_tree(&path);
            }
            if self.filter.is_ignored(&path, is_dir) {
                continue;
            }
            if is_ignore_file(&path) {
                self.reload_ignore_file(&path);
            }
            if is_dir && exists.is_some() && !self.watched.contains(&path) {
                // A directory appeared (created or moved in): watch it and report
                // what is already inside.
                if let Err(e) = self.watch_tree(&path, Some(changed)) {
                    tracing::warn!(error = %e, "cannot watch a new directory");
                    self.lost_events = true;
                }
            }
            changed.insert(path);
        }
    }

    fn reload_ignore_file(&mut self, path: &Path) {
        let Some(dir) = path.parent() else { return };
        if !self.watched.contains(dir) {
            return;
        }
        self.filter.reload_dir(dir);
        // Directories may have become ignored or un-ignored: drop the watches below
        // `dir` that are now ignored, and add the ones that are now wanted.
        let below: Vec<PathBuf> = self
            .watched
            .range(dir.to_path_buf()..)
            .take_while(|p| p.starts_with(dir))
            .filter(|p| *p != dir)
            .cloned()
            .collect();
        for sub in below {
            if self.watched.contains(&sub) && self.filter.is_ignored(&sub, true) {
                self.unwatch_tree(&sub);
            }
        }
        if let Err(e) = self.watch_tree(dir, None) {
            tracing::warn!(error = %e, "cannot rescan after an ignore file changed");
            self.lost_events = true;
        }
    }
}

fn is_ignore_file(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some(".gitignore" | ".ignore")
    )
}

/// The ignore rules: per-directory `.ignore` and `.gitignore`, each repository's
/// `.git/info/exclude`, the global excludes file, and the fixed rules.
struct Filter {
    /// `.ignore` matchers by directory.
    dot_ignore: HashMap<PathBuf, Gitignore>,
    /// `.gitignore` matchers by directory.
    gitignore: HashMap<PathBuf, Gitignore>,
    /// `.git/info/exclude` matchers by repository root.
    exclude: BTreeMap<PathBuf, Gitignore>,
    global: Gitignore,
    extra: Vec<PathBuf>,
}

impl Filter {
    fn new(config: &WatchConfig) -> Self {
        let (global, _) = Gitignore::global();
        Self {
            dot_ignore: HashMap::new(),
            gitignore: HashMap::new(),
            exclude: BTreeMap::new(),
            global,
            extra: config
                .extra_ignores
                .iter()
                .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
                .collect(),
        }
    }

    /// Loads the ignore files of `root`'s ancestors up to its repository (if any), so
    /// a root below a repository's top still sees the rules above it.
    fn add_root(&mut self, root: &Path) {
        let repo = root.ancestors().find(|a| a.join(".git").exists());
        if let Some(repo) = repo {
            let exclude = repo.join(".git/info/exclude");
            if exclude.is_file() {
                let mut builder = GitignoreBuilder::new(repo);
                let _ = builder.add(&exclude);
                if let Ok(matcher) = builder.build() {
                    self.exclude.insert(repo.to_path_buf(), matcher);
                }
            }
            for ancestor in root.ancestors().skip(1) {
                if !ancestor.starts_with(repo) {
                    break;
                }
                self.load_dir(ancestor);
            }
        }
    }

    fn load_dir(&mut self, dir: &Path) {
        if !self.gitignore.contains_key(dir) && !self.dot_ignore.contains_key(dir) {
            self.reload_dir(dir);
        }
    }

    fn reload_dir(&mut self, dir: &Path) {
        for (name, map) in [(".ignore", &mut self.dot_ignore), (".gitignore", &mut self.gitignore)] {
            let file = dir.join(name);
            if file.is_file() {
                let (matcher, _) = Gitignore::new(&file);
                map.insert(dir.to_path_buf(), matcher);
            } else {
                map.remove(dir);
            }
        }
    }

    fn forget_dir(&mut self, dir: &Path) {
        self.dot_ignore.remove(dir);
        self.gitignore.remove(dir);
    }

    /// Whether `path` itself is ignored. Its parent directories are assumed kept
    /// (only kept directories are watched and walked).
    fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        let Some(name) = path.file_name() else { return false };
        if name == ".git" {
            return true;
        }
        if is_dir && name == "target" && path.parent().is_some_and(|p| p.join("Cargo.toml").is_file()) {
            return true;
        }
        if self.extra.iter().any(|e| path.starts_with(e)) {
            return true;
        }
        // As in ripgrep: `.ignore` at any depth beats `.gitignore` at any depth; within
        // a kind the deepest file with a matching rule decides.
        for map in [&self.dot_ignore, &self.gitignore] {
            for dir in path.ancestors().skip(1) {
                if let Some(matcher) = map.get(dir) {
                    match matcher.matched(path, is_dir) {
                        Match::Ignore(_) => return true,
                        Match::Whitelist(_) => return false,
                        Match::None => {}
                    }
                }
            }
        }
        if let Some((_, matcher)) = self
            .exclude
            .iter()
            .rev()
            .find(|(repo, _)| path.starts_with(repo))
        {
            match matcher.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        self.global.matched(path, is_dir).is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_for(root: &Path) -> Filter {
        let mut filter = Filter::new(&WatchConfig::new(vec![root.to_path_buf()]));
        filter.add_root(root);
        filter.load_dir(root);
        filter
    }

    #[test]
    fn ignore_rules_precedence() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("Cargo.toml"), "").expect("write");
        std::fs::write(root.join(".gitignore"), "*.log\nkeep.txt\n").expect("write");
        std::fs::write(root.join(".ignore"), "!keep.txt\n").expect("write");
        std::fs::write(root.join("sub/.gitignore"), "!special.log\n").expect("write");
        let mut filter = filter_for(&root);
        filter.load_dir(&root.join("sub"));

        assert!(filter.is_ignored(&root.join("a.log"), false));
        assert!(!filter.is_ignored(&root.join("a.rs"), false));
        assert!(!filter.is_ignored(&root.join("keep.txt"), false), ".ignore beats .gitignore");
        assert!(filter.is_ignored(&root.join("sub/other.log"), false));
        assert!(!filter.is_ignored(&root.join("sub/special.log"), false), "deeper file wins");
        assert!(filter.is_ignored(&root.join("target"), true));
        assert!(!filter.is_ignored(&root.join("sub/target"), true), "no Cargo.toml beside it");
        assert!(filter.is_ignored(&root.join(".git"), true));
    }
}
