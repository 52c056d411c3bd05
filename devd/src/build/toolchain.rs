//! Which cargo builds for a target triple ([`choose_toolchain`]), from what the machine
//! offers: the host triple, installed targets, cargo-zigbuild.

use super::*;

/// How cargo is invoked for the configured target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// `cargo build` (for the host, or `--target <t>` with an installed target).
    Cargo { target: Option<String> },
    /// `cargo zigbuild --target <t>`: zig links for a foreign architecture.
    Zigbuild { target: String },
}

/// What the machine offers, as [`choose_toolchain`] needs it.
#[derive(Debug, Clone, Default)]
pub struct ToolchainFacts {
    pub host: String,
    /// Targets whose standard library is installed (`rustup target list --installed`).
    pub installed_targets: BTreeSet<String>,
    /// `cargo-zigbuild` and `zig` are both available.
    pub zigbuild: bool,
    /// A linker is configured for the target (`CARGO_TARGET_<TRIPLE>_LINKER`).
    pub linker_configured: bool,
}

/// Picks how to build for `target` (`None` = host):
/// - the host triple: plain `cargo build` (no `--target`, so the cache is shared with
///   the developer's own `cargo build`);
/// - another triple needs its standard library installed (`rustup target add <t>`),
///   zigbuild or not (cargo-zigbuild provides a linker, not the standard library);
/// - with the library installed: `cargo build --target <t>` when the architecture
///   is the host's (e.g. musl) or a linker is configured, `cargo zigbuild` when a
///   foreign architecture needs a linker and zigbuild is there, else `cargo build
///   --target <t>` anyway (a missing linker then shows as a link error with the hint).
pub fn choose_toolchain(target: Option<&str>, facts: &ToolchainFacts) -> Result<Toolchain, BuildError> {
    let Some(target) = target.filter(|t| *t != facts.host) else {
        return Ok(Toolchain::Cargo { target: None });
    };
    let same_arch = arch(target) == arch(&facts.host);
    if !facts.installed_targets.contains(target) {
        let mut hint = format!(
            "the standard library for {target} is not installed: run `rustup target add {target}`"
        );
        if !same_arch && !facts.zigbuild && !facts.linker_configured {
            hint.push_str(&format!(
                "\nto link for {target} from {host}, also install cargo-zigbuild and zig: \
                 `cargo install cargo-zigbuild` and `pip install ziglang` (or zig from your package manager)",
                host = facts.host
            ));
        }
        return Err(BuildError::new(
            BuildErrorKind::Toolchain,
            format!("cannot build for {target}: target not installed"),
            hint,
        ));
    }
    if same_arch || facts.linker_configured || !facts.zigbuild {
        Ok(Toolchain::Cargo { target: Some(target.to_string()) })
    } else {
        Ok(Toolchain::Zigbuild { target: target.to_string() })
    }
}

pub(super) fn arch(triple: &str) -> &str {
    triple.split('-').next().unwrap_or(triple)
}

pub(super) async fn host_triple() -> Result<String, BuildError> {
    let out = Command::new("rustc")
        .arg("-vV")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| BuildError::new(BuildErrorKind::Toolchain, "cannot run rustc", e.to_string()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| {
            BuildError::new(
                BuildErrorKind::Toolchain,
                "cannot tell the host triple",
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
}

/// `rustup target list --installed`; without rustup, the targets in rustc's sysroot.
pub(super) async fn installed_targets() -> BTreeSet<String> {
    let rustup = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stdin(Stdio::null())
        .output()
        .await;
    if let Ok(out) = rustup {
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
        }
    }
    let Ok(out) = Command::new("rustc").args(["--print", "sysroot"]).output().await else {
        return BTreeSet::new();
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    std::fs::read_dir(sysroot.join("lib/rustlib"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("lib").is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn command_succeeds(program: &str, args: &[&str]) -> bool {
    let run = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(Duration::from_secs(10), run).await, Ok(Ok(s)) if s.success())
}
