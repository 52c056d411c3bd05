//! Talking to cargo: the selection arguments of a request, its stderr (progress,
//! errors), the executables it reports, and its process group.

use super::*;

/// cargo's selection arguments for a request: `-p` per package, then `--bin` per
/// target when every target names its binary, else `--bins`. They decide how cargo
/// unifies features, so recipes are kept and replayed per selection (joined by spaces).
pub(super) fn selection(request: &BuildRequest) -> Vec<String> {
    let packages: BTreeSet<&str> = request.targets.iter().map(|t| t.package.as_str()).collect();
    let mut args: Vec<String> = packages.into_iter().flat_map(|p| ["-p".to_string(), p.to_string()]).collect();
    if request.targets.iter().all(|t| t.bin.is_some()) {
        for bin in request.targets.iter().filter_map(|t| t.bin.as_deref()) {
            args.extend(["--bin".to_string(), bin.to_string()]);
        }
    } else {
        args.push("--bins".to_string());
    }
    args
}

pub(super) fn pick_executable(
    wanted: &BuildTarget,
    executables: &BTreeMap<(String, String), (PathBuf, bool)>,
) -> Result<(String, (PathBuf, bool)), BuildError> {
    let of_package: Vec<(&String, &(PathBuf, bool))> = executables
        .iter()
        .filter(|((package, _), _)| *package == wanted.package)
        .map(|((_, bin), exe)| (bin, exe))
        .collect();
    let chosen = match &wanted.bin {
        Some(bin) => of_package.iter().find(|(b, _)| *b == bin),
        None if of_package.len() == 1 => of_package.first(),
        None => of_package.iter().find(|(b, _)| **b == wanted.package),
    };
    match chosen {
        Some((bin, exe)) => Ok(((*bin).clone(), (*exe).clone())),
        None => {
            let found: Vec<&str> = of_package.iter().map(|(b, _)| b.as_str()).collect();
            Err(BuildError::new(
                BuildErrorKind::Cargo,
                format!("build of {} produced no matching executable", wanted.package),
                format!(
                    "wanted binary {} of package {}; cargo reported: [{}]",
                    wanted.bin.as_deref().unwrap_or("(the only one)"),
                    wanted.package,
                    found.join(", ")
                ),
            ))
        }
    }
}

/// The package name in a package id: `path+file:///p/svc1#0.1.0` (name = last path
/// segment), `path+file:///p/crates/shared#fx-shared@0.1.0`,
/// `registry+https://...#serde@1.0.0`, or the old `name 0.1.0 (source)` form.
pub fn package_name_from_id(id: &str) -> String {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        if let Some((name, _version)) = fragment.split_once('@') {
            return name.to_string();
        }
        let path = url.split('?').next().unwrap_or(url);
        return path.rsplit('/').next().unwrap_or(path).to_string();
    }
    id.split_whitespace().next().unwrap_or(id).to_string()
}

pub(super) async fn read_stderr(
    stderr: tokio::process::ChildStderr,
    progress: Option<mpsc::UnboundedSender<BuildProgress>>,
) -> Vec<String> {
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    while reader.read_until(b'\n', &mut raw).await.is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&raw).into_owned();
        raw.clear();
        // cargo's progress bar ends in `\r` (the next message overwrites it).
        for segment in text.split(['\r', '\n']) {
            let line = segment.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some((done, total)) = progress_units(line) {
                if let Some(tx) = &progress {
                    let _ = tx.send(BuildProgress::Units { done, total });
                }
                continue;
            }
            if let Some(tx) = &progress {
                let _ = tx.send(BuildProgress::Stderr(line.to_owned()));
            }
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        }
    }
    tail.into()
}

/// `    Building [====>     ] 37/180: serde, tokio` → (37, 180).
pub(super) fn progress_units(line: &str) -> Option<(u32, u32)> {
    let rest = line.trim_start().strip_prefix("Building [")?;
    let (_, counts) = rest.split_once("] ")?;
    let counts = counts.split(':').next()?;
    let (done, total) = counts.trim().split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// cargo's own error lines from stderr (from the first `error` on), or the whole tail.
pub(super) fn cargo_errors(stderr_tail: &[String]) -> String {
    match stderr_tail.iter().position(|l| l.starts_with("error")) {
        Some(first) => stderr_tail[first..].join("\n"),
        None => stderr_tail.join("\n"),
    }
}

/// Kills cargo's whole process group when the build is dropped before it ended.
pub(super) struct ProcessGroupGuard(pub(super) Option<u32>);

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub(super) fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
