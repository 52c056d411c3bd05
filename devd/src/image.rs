//! Dev images through the Docker API (bollard): base image + host-built binary + shim.
//!
//! The build context is an in-memory tar: the Dockerfile (devd/docker/Dockerfile of
//! the stand, else the one compiled into devd), the other files of the Dockerfile's
//! directory that its `.dockerignore` lets through, `app/<binary>` and
//! `app/stand-shim`. Progress lines (`BuildInfo.stream`) go to a callback; a failed
//! build is an [`ImageError::Build`] carrying Docker's message. The classic builder is
//! used (the engine here has no BuildKit).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

/// The Dockerfile devd uses when the stand has no devd/docker/Dockerfile.
pub const DOCKERFILE: &str = include_str!("../docker/Dockerfile");
/// Where a stand keeps its own copy of the dev Dockerfile.
pub const DOCKERFILE_PATH: &str = "devd/docker/Dockerfile";
/// Label every dev image carries.
pub const LABEL_SERVICE: &str = "dev.stand.service";
/// sha256 of the service binary baked into the image.
pub const LABEL_BINARY_SHA: &str = "dev.stand.binary-sha256";
/// sha256 of what makes the image other than the service binary ([`input_hash`]).
pub const LABEL_INPUTS: &str = "dev.stand.inputs";
pub const SHIM_PACKAGE: &str = "stand-shim";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot reach the Docker engine: {0} (is dockerd running? `bash scripts/setup` starts it)")]
    Connect(#[source] bollard::errors::Error),
    #[error("image build of {tag} failed{}: {message}", step.as_deref().map(|s| format!(" at `{s}`")).unwrap_or_default())]
    Build { tag: String, step: Option<String>, message: String },
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the shim: {0}")]
    Shim(String),
}

/// The engine, with the API version negotiated (this engine speaks 1.41 at most).
pub async fn connect() -> Result<Docker, ImageError> {
    let docker = Docker::connect_with_defaults().map_err(ImageError::Connect)?;
    docker.negotiate_version().await.map_err(ImageError::Connect)
}

/// The local base image `scripts/setup` makes (no registry needed).
pub const LOCAL_BASE_IMAGE: &str = "stand/base:bookworm";

/// The `BASE_IMAGE` build arg: `explicit` (`--base-image`), else `$STAND_BASE_IMAGE`,
/// else [`LOCAL_BASE_IMAGE`] when the engine has it, else `None` (the Dockerfile's
/// default, pulled from its registry).
pub async fn base_image(docker: &Docker, explicit: Option<String>) -> Option<String> {
    let chosen = explicit.or_else(|| std::env::var("STAND_BASE_IMAGE").ok()).filter(|b| !b.is_empty());
    if chosen.is_some() {
        return chosen;
    }
    match docker.inspect_image(LOCAL_BASE_IMAGE).await {
        Ok(_) => Some(LOCAL_BASE_IMAGE.to_owned()),
        Err(e) => {
            tracing::debug!(error = %e, "no local {LOCAL_BASE_IMAGE}; the Dockerfile's default base image");
            None
        }
    }
}

/// What goes into one image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub service: String,
    /// The host-built service binary and its name inside the image (`/app/<name>`).
    pub binary: PathBuf,
    pub binary_name: String,
    /// sha256 of `binary`, recorded as a label.
    pub binary_sha256: String,
    /// The shared libraries `binary` was linked against, at
    /// `/app/.stand-libs/<sha256>/<name>` (where its rpath looks, and the shim keeps
    /// the ones it gets). Like the binary's bytes, not an input of [`input_hash`].
    pub libs: Vec<crate::build::SharedLib>,
    /// The static shim.
    pub shim: PathBuf,
    /// `image:tag`, exactly as the image is tagged.
    pub tag: String,
    /// The `BASE_IMAGE` build arg; `None` keeps the Dockerfile's default.
    pub base_image: Option<String>,
    /// A Dockerfile to use; its directory is the context dir. `None`: the embedded one.
    pub dockerfile: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
}

/// A built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub id: String,
    pub tag: String,
    /// The image the tag pointed to before, when it was another one.
    pub previous: Option<String>,
}

/// Removes an image that a tag no longer names, unless a container still uses it (then
/// it stays; Docker refuses). Keeps every rebuild from leaving a dangling image behind.
pub async fn remove_if_unused(docker: &Docker, id: &str) {
    let options = bollard::query_parameters::RemoveImageOptions { force: false, noprune: false };
    match docker.remove_image(id, Some(options), None).await {
        Ok(_) => tracing::debug!(image = id, "removed the previous image"),
        Err(e) => tracing::debug!(image = id, error = %e, "previous image kept"),
    }
}

/// `${BINARY}` in ENTRYPOINT/CMD lines becomes the binary's name (Docker does not
/// expand build args there).
pub fn render_dockerfile(text: &str, binary: &str) -> String {
    text.lines()
        .map(|line| {
            let word = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            if word == "ENTRYPOINT" || word == "CMD" {
                line.replace("${BINARY}", binary)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `.dockerignore` patterns as a matcher (close to Docker's rules: patterns are anchored
/// at the context root, `**` spans directories, `!` re-includes).
pub struct DockerIgnore {
    matcher: ignore::gitignore::Gitignore,
}

impl DockerIgnore {
    pub fn parse(root: &Path, text: &str) -> Self {
        let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pattern) = match line.strip_prefix('!') {
                Some(rest) => ("!", rest.trim()),
                None => ("", line),
            };
            let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
            let _ = builder.add_line(None, &format!("{negate}/{pattern}"));
        }
        let matcher = builder.build().unwrap_or_else(|_| ignore::gitignore::Gitignore::empty());
        Self { matcher }
    }

    pub fn ignores(&self, relative: &Path, is_dir: bool) -> bool {
        self.matcher.matched_path_or_any_parents(relative, is_dir).is_ignore()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read { path: path.to_owned(), source })
}

/// The build context as a tar, in memory.
pub fn context_tar(spec: &ImageSpec) -> Result<Vec<u8>, ImageError> {
    context_tar_with(spec, &read(&spec.binary)?, true)
}

/// sha256 of the image's inputs other than the service binary: the build context with
/// the binary's bytes left out (the Dockerfile as sent, the files of its directory, the
/// shim, the binary's name), the build args, and `base_id`, the base image's id when
/// it is known (a base re-tagged to another image is another input). The docker target
/// rebuilds a dev image only when this changes: the service binary reaches running
/// containers through the shim, and an image with an older binary is re-synced.
pub fn input_hash(spec: &ImageSpec, base_id: Option<&str>) -> Result<String, ImageError> {
    let mut hasher = Sha256::new();
    hasher.update(context_tar_with(spec, b"", false)?);
    for part in [spec.service.as_str(), spec.base_image.as_deref().unwrap_or(""), base_id.unwrap_or("")] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

fn context_tar_with(spec: &ImageSpec, binary: &[u8], libs: bool) -> Result<Vec<u8>, ImageError> {
    let (dockerfile_text, context_dir) = match &spec.dockerfile {
        Some(path) => {
            let text = String::from_utf8_lossy(&read(path)?).into_owned();
            (text, path.parent().map(Path::to_path_buf))
        }
        None => (DOCKERFILE.to_owned(), None),
    };
    let mut tar = tar::Builder::new(Vec::new());
    let io = |source: std::io::Error| ImageError::Read { path: PathBuf::from("<build context>"), source };
    if let Some(dir) = context_dir.filter(|d| d.is_dir()) {
        let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(text) => Some(DockerIgnore::parse(&dir, &text)),
            Err(_) => None,
        };
        let mut stack = vec![dir.clone()];
        while let Some(current) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&current)
                .map_err(|source| ImageError::Read { path: current.clone(), source })?
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let relative = path.strip_prefix(&dir).unwrap_or(&path).to_path_buf();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if relative == Path::new("Dockerfile") || relative.starts_with("app") {
                    continue; // devd's own entries below
                }
                if ignore.as_ref().is_some_and(|i| i.ignores(&relative, is_dir)) && relative != Path::new(".dockerignore") {
                    continue;
                }
                if is_dir {
                    stack.push(path);
                } else if entry.file_type().is_ok_and(|t| t.is_file()) {
                    tar.append_path_with_name(&path, &relative).map_err(io)?;
                }
            }
        }
    }
    let mut append = |name: &str, mode: u32, data: &[u8]| -> Result<(), ImageError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data).map_err(io)
    };
    append("Dockerfile", 0o644, render_dockerfile(&dockerfile_text, &spec.binary_name).as_bytes())?;
    append(&format!("app/{}", spec.binary_name), 0o755, binary)?;
    append("app/stand-shim", 0o755, &read(&spec.shim)?)?;
    for lib in spec.libs.iter().filter(|_| libs) {
        let name = format!("app/{}/{}/{}", stand_shim_protocol::LIBS_DIR, lib.sha256, lib.name);
        append(&name, 0o755, &read(&lib.path)?)?;
    }
    tar.into_inner().map_err(io)
}

/// Builds and tags the image; `progress` gets every line Docker streams.
pub async fn build(docker: &Docker, spec: &ImageSpec, mut progress: impl FnMut(&str)) -> Result<Built, ImageError> {
    let context = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || context_tar(&spec))
            .await
            .map_err(|e| ImageError::Shim(format!("build context task failed: {e}")))??
    };
    let mut buildargs = HashMap::from([("SERVICE".to_owned(), spec.service.clone())]);
    if let Some(base) = &spec.base_image {
        buildargs.insert("BASE_IMAGE".to_owned(), base.clone());
    }
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(LABEL_SERVICE.to_owned(), spec.service.clone());
    labels.insert(LABEL_BINARY_SHA.to_owned(), spec.binary_sha256.clone());
    let options = BuildImageOptions {
        t: Some(spec.tag.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(buildargs),
        labels: Some(labels),
        ..Default::default()
    };
    let previous = docker.inspect_image(&spec.tag).await.ok().and_then(|i| i.id);
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut id = None;
    // The Dockerfile step that runs: a failure names it (a FROM whose image cannot be
    // pulled says only that the registry is unreachable).
    let mut step: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref() {
                    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                        progress(line);
                        if line.starts_with("Step ") {
                            step = Some(match (&spec.base_image, line.contains("${BASE_IMAGE}")) {
                                (Some(base), true) => format!("{line}` with BASE_IMAGE=`{base}"),
                                _ => line.to_owned(),
                            });
                        }
                    }
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(ImageError::Build { tag: spec.tag.clone(), step, message: error.trim().to_owned() });
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Err(ImageError::Build { tag: spec.tag.clone(), step, message: message.trim().to_owned() });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let id = match id {
        Some(id) => id,
        None => docker.inspect_image(&spec.tag).await?.id.unwrap_or_default(),
    };
    let previous = previous.filter(|p| *p != id);
    Ok(Built { id, tag: spec.tag.clone(), previous })
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, ImageError> {
    crate::measure::sha256_of_file(path).map(|(sha256, _)| sha256).map_err(|source| ImageError::Read { path: path.to_owned(), source })
}

/// The workspace that holds the shim's sources: devd's own (where devd was built from),
/// else the stand's root when it has `devd/shim`.
fn shim_workspace(stand_root: &Path) -> Option<PathBuf> {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    [own, Some(stand_root.to_owned())]
        .into_iter()
        .flatten()
        .find(|ws| ws.join("devd/shim/Cargo.toml").is_file())
}

/// The static shim binary: `$STAND_SHIM_BIN` if set; otherwise built with cargo (a
/// no-op when it is up to date) as devd/shim/README.md says: release, `--target
/// <host>` and `+crt-static`, into `$STAND_SHIM_TARGET_DIR`, else `$CARGO_TARGET_DIR`,
/// else the shim workspace's `target/`.
pub async fn ensure_shim(stand_root: &Path, host_triple: &str, mut progress: impl FnMut(&str)) -> Result<PathBuf, ImageError> {
    if let Some(path) = std::env::var_os("STAND_SHIM_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ImageError::Shim(format!("STAND_SHIM_BIN={} is not a file", path.display())))
        };
    }
    let ws = shim_workspace(stand_root).ok_or_else(|| {
        ImageError::Shim(
            "no shim sources found (devd/shim of devd's workspace or the stand's); set STAND_SHIM_BIN to a static stand-shim"
                .to_owned(),
        )
    })?;
    let target_dir = std::env::var_os("STAND_SHIM_TARGET_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .filter(|d| !d.is_empty())
        .map_or_else(|| ws.join("target"), PathBuf::from);
    let output = target_dir.join(host_triple).join("release").join(SHIM_PACKAGE);
    let mut cmd = tokio::process::Command::new("cargo");
    cmd.args(["build", "--release", "-p", SHIM_PACKAGE, "--bin", SHIM_PACKAGE, "--target", host_triple])
        .arg("--manifest-path")
        .arg(ws.join("Cargo.toml"))
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_TERM_COLOR", "never")
        .current_dir(&ws)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    progress(&format!("building the static shim ({})", output.display()));
    let child = cmd.spawn().map_err(|e| ImageError::Shim(format!("cannot run cargo: {e}")))?;
    crate::priority::lower(child.id());
    let out = child.wait_with_output().await.map_err(|e| ImageError::Shim(format!("waiting for cargo: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.trim_start().starts_with("Compiling")) {
        progress(line.trim());
    }
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(ImageError::Shim(format!("cargo exited with {}:\n{}", out.status, tail.join("\n"))));
    }
    if !output.is_file() {
        return Err(ImageError::Shim(format!("cargo succeeded but {} is missing", output.display())));
    }
    Ok(output)
}

/// The Dockerfile of the stand at `root`, if it has its own.
pub fn stand_dockerfile(root: &Path) -> Option<PathBuf> {
    Some(root.join(DOCKERFILE_PATH)).filter(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_gets_the_binary_name_and_nothing_else_changes() {
        let out = render_dockerfile(DOCKERFILE, "service1");
        assert!(out.contains(r#"ENTRYPOINT ["/app/stand-shim", "--", "/app/service1"]"#), "{out}");
        assert!(out.contains("ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot"));
        assert!(out.contains("USER 65532:65532"));
        assert!(!out.lines().any(|l| !l.starts_with('#') && l.contains("${BINARY}")), "{out}");
        assert_eq!(render_dockerfile("# ${BINARY} stays in comments\nCMD [\"${BINARY}\"]\n", "b"), "# ${BINARY} stays in comments\nCMD [\"b\"]\n");
    }

    #[test]
    fn dockerignore_is_anchored_and_negatable() {
        let root = Path::new("/ctx");
        let ignore = DockerIgnore::parse(root, "# comment\n*.log\nsecrets/\n!keep.log\ndocs/**/*.md\n");
        assert!(ignore.ignores(Path::new("a.log"), false));
        assert!(!ignore.ignores(Path::new("keep.log"), false));
        assert!(!ignore.ignores(Path::new("sub/a.log"), false), "anchored at the root like Docker");
        assert!(ignore.ignores(Path::new("secrets/key"), false));
        assert!(ignore.ignores(Path::new("docs/x/y/z.md"), false));
        assert!(!ignore.ignores(Path::new("docs/x/y/z.txt"), false));
    }

    #[test]
    fn context_holds_dockerfile_binary_shim_and_unignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("conf")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nENTRYPOINT [\"/app/${BINARY}\"]\n").unwrap();
        std::fs::write(ctx.join(".dockerignore"), "*.secret\n").unwrap();
        std::fs::write(ctx.join("conf/app.toml"), "x = 1\n").unwrap();
        std::fs::write(ctx.join("token.secret"), "no").unwrap();
        std::fs::write(dir.path().join("bin"), b"\x7fELF").unwrap();
        std::fs::write(dir.path().join("shim"), b"\x7fELF").unwrap();
        let spec = ImageSpec {
            libs: Vec::new(),
            service: "svc".into(),
            binary: dir.path().join("bin"),
            binary_name: "svc".into(),
            binary_sha256: "00".into(),
            shim: dir.path().join("shim"),
            tag: "x/svc:dev".into(),
            base_image: None,
            dockerfile: Some(ctx.join("Dockerfile")),
            labels: BTreeMap::new(),
        };
        let bytes = context_tar(&spec).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut entry, &mut text);
            names.insert(name, (entry.header().mode().unwrap() & 0o777, text));
        }
        let keys: Vec<&str> = names.keys().map(String::as_str).collect();
        assert_eq!(keys, [".dockerignore", "Dockerfile", "app/stand-shim", "app/svc", "conf/app.toml"]);
        assert_eq!(names["app/svc"].0, 0o755);
        assert!(names["Dockerfile"].1.contains("[\"/app/svc\"]"));
    }
}
