//! Path (d): Tilt's recommended recipe for a compiled language (host `cargo build`,
//! the binary copied into the running container through the Docker API's archive
//! endpoint, the process restarted by a wrapper), measured in the same run.

use std::path::Path;
use std::time::Instant;

use devd::plan::ServicePlan;
use devd::runtime::docker::DockerStand;

use crate::{published_url, served, set_message};

/// The trigger file of path (d)'s restart wrapper (where tilt-restart-wrapper has it).
const RESTART_TRIGGER: &str = "/tmp/.restart-proc";

/// The Dockerfile of path (d): the dev image's base and binary, with the restart
/// wrapper in front of the service instead of the shim (what
/// `docker_build_with_restart` does to an image's entrypoint).
const TILT_DOCKERFILE: &str = r#"ARG BASE_IMAGE=stand/base:bookworm
FROM ${BASE_IMAGE}
COPY --chown=65532:65532 app/ /app/
COPY restart-wrapper /usr/local/bin/restart-wrapper
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/restart-wrapper", "/tmp/.restart-proc", "--", "/app/${BINARY}"]
"#;

/// A tar that puts `binary` at `/app/<name>` and then touches the restart trigger, as
/// Tilt's live update of a compiled binary does (`sync` of the host-built file through
/// the Docker API's archive endpoint; then the trigger, which Tilt writes with a `run`
/// step: here in the same archive, as the image has no shell: one API call less than
/// Tilt makes).
fn sync_archive(binary: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for (path, mode, data) in [(format!("app/{name}"), 0o755, binary), (RESTART_TRIGGER.trim_start_matches('/').to_owned(), 0o644, &b"x"[..])] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(65532);
        header.set_gid(65532);
        header.set_mtime(now);
        header.set_cksum();
        tar.append_data(&mut header, path, data).map_err(|e| e.to_string())?;
    }
    tar.into_inner().map_err(|e| e.to_string())
}

/// Path (d), Tilt's recommended recipe for a compiled service: an image with the
/// restart wrapper (built once, not timed), then per edit a host `cargo build` (the
/// `local_resource`), the binary copied into the running container through the Docker
/// API's archive endpoint, the process restarted by the wrapper, until the new text is
/// served. Returns the times of `n` edits.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tilt_recipe(
    docker: &DockerStand,
    service: &ServicePlan,
    root: &Path,
    dir: &Path,
    binary: &Path,
    wrapper: &Path,
    tag: &str,
    n: usize,
    cargo_build: &dyn Fn() -> Result<(), String>,
) -> Result<Vec<u64>, String> {
    let io = |e: std::io::Error| e.to_string();
    let context = dir.join("tilt-image");
    std::fs::create_dir_all(&context).map_err(io)?;
    std::fs::write(context.join("Dockerfile"), TILT_DOCKERFILE).map_err(io)?;
    std::fs::copy(wrapper, context.join("restart-wrapper")).map_err(io)?;
    let name = binary.file_name().and_then(|n| n.to_str()).ok_or("binary name")?.to_owned();
    set_message(root, "bench d start")?;
    cargo_build()?;
    let host = devd::commands::host_triple();
    let shim = devd::image::ensure_shim(root, &host, |_| {}).await.map_err(|e| e.to_string())?;
    let engine = docker.target.docker();
    let spec = devd::image::ImageSpec {
        libs: Vec::new(),
        service: service.name.clone(),
        binary: binary.to_owned(),
        binary_name: name.clone(),
        binary_sha256: devd::image::file_sha256(binary).map_err(|e| e.to_string())?,
        shim,
        tag: tag.to_owned(),
        base_image: devd::image::base_image(engine, None).await,
        dockerfile: Some(context.join("Dockerfile")),
        labels: Default::default(),
    };
    devd::image::build(engine, &spec, |_| {}).await.map_err(|e| format!("(d) image: {e}"))?;
    let state_dir = root.join(".stand");
    let db_password = devd::runtime::docker::kept_secret(&state_dir, &format!("postgres-{}", service.name)).map_err(io)?;
    let settings = devd::runtime::docker::ServiceContainer { image: tag.to_owned(), shim_token: String::new(), db_password: Some(db_password) };
    let container = docker.target.replace_service(service, &settings).await.map_err(|e| e.to_string())?;
    let url = published_url(engine, &container, service.port).await?;
    let http = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    served(&http, &url, "bench d start").await?;
    let mut d = Vec::new();
    for i in 0..n {
        let text = format!("bench d{i}");
        set_message(root, &text)?;
        let t0 = Instant::now();
        cargo_build()?;
        let archive = sync_archive(&std::fs::read(binary).map_err(io)?, &name)?;
        let options = bollard::query_parameters::UploadToContainerOptions { path: "/".to_owned(), ..Default::default() };
        engine.upload_to_container(&container, Some(options), bollard::body_full(archive.into())).await.map_err(|e| format!("(d) upload: {e}"))?;
        served(&http, &url, &text).await?;
        d.push(t0.elapsed().as_millis() as u64);
        eprintln!("  (d) {i:>2}: {} ms", d[i]);
    }
    Ok(d)
}
