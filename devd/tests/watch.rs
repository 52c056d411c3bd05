//! The watcher against real files and real inotify, on a temp copy of the fixture.
//!
//! Absence ("an ignored file yields nothing") is proven without sleeping: the
//! ignored writes happen first, then a sentinel file is written; inotify keeps the
//! order, so once the sentinel's batch has arrived every earlier event has been seen.

mod fixtures;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use devd::watch::{self, ChangeBatch, WatchConfig, WatchHandle};
use tokio::sync::mpsc::UnboundedReceiver;

const DEADLINE: Duration = Duration::from_secs(10);

struct Watched {
    fx: fixtures::Fixture,
    handle: WatchHandle,
    rx: UnboundedReceiver<ChangeBatch>,
}

fn start(fx: fixtures::Fixture) -> Watched {
    let (handle, rx) = watch::start(WatchConfig::new(vec![fx.root.clone()])).expect("start watcher");
    Watched { fx, handle, rx }
}

impl Watched {
    /// Receives batches until one contains `path`; returns all batches received.
    fn batches_until(&mut self, path: &PathBuf) -> Vec<ChangeBatch> {
        let mut got = Vec::new();
        let found = fixtures::poll_until(DEADLINE, || {
            // Bounded: drains what is queued now, then polls again.
            while let Ok(batch) = self.rx.try_recv() {
                let done = batch.paths.contains(path);
                got.push(batch);
                if done {
                    return Some(());
                }
            }
            None
        });
        assert!(found.is_some(), "no batch with {} within {DEADLINE:?}; got {got:?}", path.display());
        got
    }

    /// Writes a sentinel file and returns every batch up to and including its own.
    fn flush(&mut self, name: &str) -> Vec<ChangeBatch> {
        let sentinel = self.fx.write(&format!("sentinel-{name}.txt"), "x");
        self.batches_until(&sentinel)
    }
}

fn all_paths(batches: &[ChangeBatch]) -> BTreeSet<PathBuf> {
    batches.iter().flat_map(|b| b.paths.iter().cloned()).collect()
}

#[test]
fn editing_a_file_yields_one_batch_with_that_path() {
    let mut w = start(fixtures::workspace());
    assert!(w.handle.watched_dirs() >= 10, "watched {}", w.handle.watched_dirs());
    let file = w.fx.path("services/svc1/src/main.rs");
    let written_at = Instant::now();
    std::fs::write(&file, "fn main() { println!(\"edited\"); }\n").expect("edit");
    let batches = w.batches_until(&file);
    let latency = written_at.elapsed();
    eprintln!("write -> batch latency: {latency:?}");
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].paths, BTreeSet::from([file]));
    assert!(!batches[0].overflowed);
    assert!(batches[0].first_event_at >= written_at);
    // Nothing else follows: the next batch is the sentinel's alone.
    let sentinel = w.flush("after-edit");
    assert_eq!(sentinel.len(), 1, "{sentinel:?}");
    assert_eq!(sentinel[0].paths.len(), 1);
}

#[test]
fn ignored_files_and_target_yield_nothing() {
    let mut w = start(fixtures::workspace());
    // Ignored by .gitignore (a file pattern and a directory pattern), by
    // .git/info/exclude, and always: target/ and .git/.
    w.fx.write("services/svc1/debug.log", "ignored");
    w.fx.write("scratch/notes.rs", "ignored");
    w.fx.write("target/debug/svc1", "binary");
    w.fx.write("target/debug/deps/fresh.d", "deps");
    w.fx.write("services/svc2/target/debug/x", "nested target next to a Cargo.toml");
    w.fx.write(".git/HEAD", "ref: refs/heads/main\n");
    // Reading and metadata-only changes are not content changes.
    let main_rs = w.fx.path("services/svc2/src/main.rs");
    let _ = std::fs::read_to_string(&main_rs).expect("read");
    let perms = std::fs::metadata(&main_rs).expect("stat").permissions();
    std::fs::set_permissions(&main_rs, perms).expect("chmod");

    let batches = w.flush("ignored");
    assert_eq!(
        all_paths(&batches),
        BTreeSet::from([w.fx.path("sentinel-ignored.txt")]),
        "{batches:?}"
    );
}

#[test]
fn git_info_exclude_and_new_gitignore_rules_are_honoured() {
    let fx = fixtures::workspace();
    fx.write(".git/info/exclude", "*.tmp\n");
    let mut w = start(fx);
    w.fx.write("crates/shared/src/editor.tmp", "excluded");
    // A rule added while watching applies from then on.
    w.fx.write("docs/.gitignore", "drafts/\n");
    let first = w.flush("exclude");
    assert_eq!(
        all_paths(&first),
        BTreeSet::from([w.fx.path("docs/.gitignore"), w.fx.path("sentinel-exclude.txt")]),
        "{first:?}"
    );
    w.fx.write("docs/drafts/todo.md", "ignored by the new rule");
    let second = w.flush("drafts");
    assert_eq!(all_paths(&second), BTreeSet::from([w.fx.path("sentinel-drafts.txt")]), "{second:?}");
}

#[test]
fn five_hundred_files_at_once_are_one_batch() {
    let mut w = start(fixtures::workspace());
    let dir = w.fx.path("crates/shared/src");
    let files: Vec<PathBuf> = (0..500).map(|i| dir.join(format!("gen_{i:03}.rs"))).collect();
    let started = Instant::now();
    for (i, file) in files.iter().enumerate() {
        std::fs::write(file, format!("pub const N: u32 = {i};\n")).expect("write");
    }
    let wrote_in = started.elapsed();
    let batches = w.batches_until(files.last().expect("500 files"));
    eprintln!("500 writes took {wrote_in:?}; batch after {:?}", started.elapsed());
    assert_eq!(batches.len(), 1, "batches: {:?}", batches.iter().map(|b| b.paths.len()).collect::<Vec<_>>());
    assert_eq!(batches[0].paths, files.iter().cloned().collect::<BTreeSet<_>>());
    // And no straggler batch after it.
    let after = w.flush("after-burst");
    assert_eq!(all_paths(&after), BTreeSet::from([w.fx.path("sentinel-after-burst.txt")]), "{after:?}");
}

#[test]
fn files_in_a_new_directory_are_seen() {
    let mut w = start(fixtures::workspace());
    let before = w.handle.watched_dirs();
    // Written immediately after mkdir: possibly before the watch on `new` exists,
    // so the watcher must report what it finds when it adds that watch.
    let first = w.fx.write("crates/shared/src/new/deeper/mod.rs", "pub fn f() {}\n");
    let batches = w.batches_until(&first);
    assert!(all_paths(&batches).contains(&first));
    // Later writes in the new directory come through its own watch.
    let second = w.fx.write("crates/shared/src/new/deeper/other.rs", "pub fn g() {}\n");
    let batches = w.batches_until(&second);
    assert!(all_paths(&batches).contains(&second));
    assert!(before > 0);
    // A renamed file reports both names; a removed one its path.
    let renamed = w.fx.path("crates/shared/src/new/renamed.rs");
    std::fs::rename(&second, &renamed).expect("rename");
    std::fs::remove_file(&first).expect("remove");
    let batches = w.batches_until(&first);
    let paths = all_paths(&batches);
    assert!(paths.contains(&second) && paths.contains(&renamed), "{paths:?}");
}

#[test]
fn dropping_the_handle_closes_the_channel() {
    let Watched { fx, handle, mut rx } = start(fixtures::workspace());
    drop(handle);
    fx.write("crates/core/src/lib.rs", "pub fn base() -> u32 { 1 }\n");
    let closed = fixtures::poll_until(DEADLINE, || match rx.try_recv() {
        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => Some(()),
        _ => None,
    });
    assert!(closed.is_some(), "channel still open after drop");
}

/// A burst whose writer stalls longer than `quiet` (but less than `burst_quiet`) stays
/// one batch once it holds several paths; a lone save still closes after `quiet`.
#[test]
fn a_stalled_burst_is_still_one_batch() {
    let fx = fixtures::workspace();
    let mut config = WatchConfig::new(vec![fx.root.clone()]);
    config.quiet = Duration::from_millis(50);
    config.burst_quiet = Duration::from_millis(1500);
    let (handle, rx) = watch::start(config).expect("start watcher");
    let mut w = Watched { fx, handle, rx };
    let dir = w.fx.path("crates/shared/src");
    let first: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("burst_a{i}.rs"))).collect();
    for file in &first {
        std::fs::write(file, "pub const A: u32 = 1;\n").expect("write");
    }
    // The writer stalls (a slow disk, a descheduled checkout): 300 ms, six times `quiet`.
    // This is the scenario, not a wait for a result.
    std::thread::sleep(Duration::from_millis(300));
    let last = dir.join("burst_b.rs");
    std::fs::write(&last, "pub const B: u32 = 2;\n").expect("write");
    let batches = w.batches_until(&last);
    assert_eq!(batches.len(), 1, "batches: {:?}", batches.iter().map(|b| b.paths.len()).collect::<Vec<_>>());
    assert!(first.iter().all(|f| batches[0].paths.contains(f)), "{:?}", batches[0].paths);
}
