//! Edit→serving benchmark (bench/README.md; run with `bench/run [N]`).
//!
//! On a temp copy of this repository's service1 (docker target, its own PostgreSQL),
//! N one-line edits of service1's MESSAGE per path, each timed from the file write to
//! the new text answering `GET /api/service1`:
//! (a) devd's sync path: `devd up --target docker` watches, builds, swaps the binary
//!     into the running container through the shim;
//! (b) the floor: a bare incremental `cargo build` of the same change (no serving);
//! (c) the image-rebuild path (Tilt without live update): the same host build, a new
//!     image through bollard, the container replaced, until the new one serves;
//! (d) Tilt's recipe for compiled languages ([`tilt_recipe`]).
//! Then the status API under wrk during edits ([`api`]), devd in a 100k-file tree, and
//! 20 services sharing one crate ([`scale`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devd::build::{BuildConfig, BuildRequest, BuildTarget, Builder};
use devd::plan::ServicePlan;
use devd::runtime::docker::DockerStand;
use serde_json::Value;

mod api;
mod scale;
mod tilt_recipe;

use api::api_under_wrk;
use scale::scale;
use tilt_recipe::tilt_recipe;

const BASE_IMAGE: &str = "stand/base:bookworm";
/// wrk's connections to the status API (each pausing 10 ms after an answer: ~2000
/// requests per second in all).
const API_CONNECTIONS: u32 = 24;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").to_path_buf()
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == "target" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// The temp stand: kit + service1 (binary renamed so that nothing else building into
/// the shared target dir overwrites it), a stand.toml with a docker environment.
fn make_stand(root: &Path, name: &str) -> Result<(), String> {
    let repo = repo();
    let io = |e: std::io::Error| e.to_string();
    copy_tree(&repo.join("services/kit"), &root.join("services/kit")).map_err(io)?;
    copy_tree(&repo.join("services/service1"), &root.join("services/service1")).map_err(io)?;
    let manifest = root.join("services/service1/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(io)?;
    let text = text.replacen("[dependencies]", &format!("[[bin]]\nname = \"{name}-service1\"\npath = \"src/main.rs\"\n\n[dependencies]"), 1);
    std::fs::write(&manifest, text).map_err(io)?;
    let workspace = std::fs::read_to_string(repo.join("Cargo.toml")).map_err(io)?;
    let start = workspace.find("members = [").ok_or("no members")?;
    let end = start + workspace[start..].find(']').ok_or("no members end")? + 1;
    let workspace = format!("{}members = [\"services/kit\", \"services/service1\"]{}", &workspace[..start], &workspace[end..]);
    std::fs::write(root.join("Cargo.toml"), workspace).map_err(io)?;
    std::fs::copy(repo.join("Cargo.lock"), root.join("Cargo.lock")).map_err(io)?;
    std::fs::create_dir_all(root.join("chart")).map_err(io)?;
    std::fs::write(root.join("chart/values.yaml"), "services: {}\n").map_err(io)?;
    let toml = format!(
        r#"[stand]
name = "{name}"
chart = "chart"
release = "{name}"
default_env = "bench"

[services.service1]
package = "service1"
path = "services/service1"
port = 5001
database = true
image = "{name}/service1"

[env.bench]
services = ["service1"]
target = "docker"
values = ["chart/values.yaml"]
live_sync = true
database = {{ mode = "in-cluster", persistence = false }}
"#
    );
    std::fs::write(root.join("stand.toml"), toml).map_err(io)?;
    set_message(root, "bench start")
}

fn set_message(root: &Path, message: &str) -> Result<(), String> {
    let lib = root.join("services/service1/src/lib.rs");
    let source = std::fs::read_to_string(&lib).map_err(|e| e.to_string())?;
    let edited: Vec<String> = source
        .lines()
        .map(|l| if l.starts_with("pub const MESSAGE") { format!("pub const MESSAGE: &str = \"{message}\";") } else { l.to_owned() })
        .collect();
    std::fs::write(&lib, edited.join("\n") + "\n").map_err(|e| e.to_string())
}

/// `field` of what `service` says at `GET /api/<service>` (its message, its version).
fn describes(http: &reqwest::blocking::Client, url: &str, service: &str, field: &str) -> Option<String> {
    let response = http.get(format!("{url}/api/{service}")).timeout(Duration::from_secs(2)).send().ok()?;
    let body: Value = response.json().ok()?;
    body[field].as_str().map(str::to_owned)
}

fn message(http: &reqwest::blocking::Client, url: &str) -> Option<String> {
    describes(http, url, "service1", "message")
}

fn poll<T>(deadline: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(every);
    }
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Writes `files` files under `root`: half in `tree-ignored/` (ignored by the stand's
/// .gitignore), half in `tree-watched/` (watched, part of no package), 1000 per
/// directory. Returns the number of directories.
fn big_tree(root: &Path, files: usize) -> Result<usize, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut gitignore = std::fs::read_to_string(root.join(".gitignore")).unwrap_or_default();
    gitignore.push_str("/tree-ignored/\n");
    std::fs::write(root.join(".gitignore"), gitignore).map_err(io)?;
    let mut dirs = 0;
    for i in 0..files {
        let part = if i % 2 == 0 { "tree-ignored" } else { "tree-watched" };
        let dir = root.join(part).join(format!("d{:03}", i / 2 / 1000));
        if (i / 2) % 1000 == 0 {
            std::fs::create_dir_all(&dir).map_err(io)?;
            dirs += 1;
        }
        std::fs::write(dir.join(format!("f{i}.txt")), i.to_string()).map_err(io)?;
    }
    Ok(dirs)
}

/// Resident memory in MB: all of it, and its two parts: the process's own (anonymous:
/// heap, stacks) and the pages of files it maps (its executable's code above all, which
/// a debug build makes large; shared with every other process mapping the file).
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    total: f64,
    anon: f64,
    file: f64,
}

/// CPU time (user + system) of `pid` in seconds, and its resident memory.
fn cpu_and_rss(pid: u32) -> Option<(f64, Rss)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_sec: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().ok()?.stdout).ok()?.trim().parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mb = |key: &str| -> Option<f64> {
        let kb: f64 = status.lines().find_map(|l| l.strip_prefix(key))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((ticks / per_sec, Rss { total: mb("VmRSS:")?, anon: mb("RssAnon:")?, file: mb("RssFile:")? }))
}

/// The repository's cargo target dir (devd, the restart wrapper and the static shim
/// are built there): `$CARGO_TARGET_DIR`, else `./target`.
fn repo_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()).map_or_else(|| repo().join("target"), PathBuf::from)
}

/// The target dir the bench's edited copies build into, inside the repository's and
/// kept between runs (registry crates compile once), but never the one the real stand
/// or a user's `cargo build` uses: what a copy builds must not land where devd of the
/// real stand takes its binaries from.
fn copies_target() -> PathBuf {
    repo_target().join("stand-bench")
}

/// The devd measured: `BENCH_DEVD` (another build of it, e.g. a release one), else
/// the debug build `bench/run` makes (what `scripts/up` runs).
fn devd_binary() -> PathBuf {
    std::env::var_os("BENCH_DEVD").map_or_else(|| repo_target().join("debug/devd"), PathBuf::from)
}

/// `$name` parsed, else `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// `devd up --env bench` on the docker target in `root`, its output (stdout and
/// stderr) into `log`; `rust_log` when given.
fn start_devd(devd: &Path, root: &Path, target_dir: &Path, log: &Path, rust_log: Option<&str>) -> Result<Child, String> {
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut command = Command::new(devd);
    command
        .args(["up", "--env", "bench", "--target", "docker", "--port", "0"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("STAND_SHIM_TARGET_DIR", repo_target())
        .env("STAND_BASE_IMAGE", std::env::var("STAND_BASE_IMAGE").unwrap_or_else(|_| BASE_IMAGE.to_owned()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    command.spawn().map_err(|e| format!("cannot start devd: {e}"))
}

/// The URL of the status API of the devd running in `root`, once it has written it.
fn devd_api(root: &Path) -> Option<String> {
    poll(Duration::from_secs(60), Duration::from_millis(50), || {
        let info: Value = serde_json::from_str(&std::fs::read_to_string(root.join(".stand/devd.json")).ok()?).ok()?;
        info["url"].as_str().map(str::to_owned)
    })
}

/// service1's URL once its instance runs the current artifact and is healthy.
fn serving_url(http: &reqwest::blocking::Client, api: &str, within: Duration) -> Option<String> {
    service_serving_url(http, api, "service1", within)
}

/// `service`'s URL once its instance runs the current artifact and is healthy.
fn service_serving_url(http: &reqwest::blocking::Client, api: &str, service: &str, within: Duration) -> Option<String> {
    poll(within, Duration::from_millis(100), || {
        let status: Value = http.get(format!("{api}/api/v1/services/{service}")).send().ok()?.json().ok()?;
        let instance = &status["instances"][0];
        let synced = instance["hash"] == status["artifact"]["sha256"] && instance["healthy"] == true;
        synced.then(|| instance["url"].as_str().map(str::to_owned)).flatten()
    })
}

/// Writes `text` as service1's message and waits until the service answers with it;
/// the time from the write. `log` is named when it never does.
fn edit_served(root: &Path, http: &reqwest::blocking::Client, service_url: &str, text: &str, log: &Path) -> Result<Duration, String> {
    set_message(root, text)?;
    let t0 = Instant::now();
    poll(Duration::from_secs(120), Duration::from_millis(10), || message(http, service_url).filter(|m| m == text))
        .ok_or_else(|| format!("edit {text:?} never served; see {}", log.display()))?;
    Ok(t0.elapsed())
}

/// devd's own timings of one edit (its status API), from the first file event.
struct Stages {
    /// `last_edit_to_serving_ms`: until every instance served the new binary.
    serving: u64,
    /// `last_edit_to_artifact_ms`: until the artifact was in the store.
    artifact: u64,
    /// `build.duration_ms`: the build itself (rustc, replayed).
    build: u64,
}

/// devd's timings once its delivery of the current artifact has finished (none within
/// 10 s).
fn delivered(http: &reqwest::blocking::Client, api: &str) -> Option<Stages> {
    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let status: Value = http.get(format!("{api}/api/v1/services/service1")).send().ok()?.json().ok()?;
        let synced = status["instances"][0]["hash"] == status["artifact"]["sha256"] && status["build"]["state"] == "ok";
        synced.then_some(())?;
        Some(Stages {
            serving: status["last_edit_to_serving_ms"].as_u64()?,
            artifact: status["last_edit_to_artifact_ms"].as_u64()?,
            build: status["build"]["duration_ms"].as_u64()?,
        })
    })
}

fn stats(samples: &[u64]) -> (u64, u64) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    (percentile(&sorted, 0.5), percentile(&sorted, 0.95))
}

/// Stops devd, takes the stand in `root` down and removes `images` when dropped.
struct Cleanup {
    devd: Option<Child>,
    root: PathBuf,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.devd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(devd_binary()).args(["down", "--env", "bench", "--volumes"]).current_dir(&self.root).output();
        if !self.images.is_empty() {
            let _ = Command::new("docker").args(["rmi", "-f"]).args(&self.images).output();
        }
    }
}

/// `http://127.0.0.1:<host port>` of `container`'s published `port`.
async fn published_url(engine: &bollard::Docker, container: &str, port: u16) -> Result<String, String> {
    let inspected = engine
        .inspect_container(container, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .map_err(|e| e.to_string())?;
    let host_port = inspected
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .ok_or_else(|| format!("{container}: port {port} is not published"))?;
    Ok(format!("http://127.0.0.1:{host_port}"))
}

/// Polls service1 at `url` (every 10 ms, for up to 120 s) until it answers with `text`.
async fn served(http: &reqwest::Client, url: &str, text: &str) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let got = match http.get(format!("{url}/api/service1")).timeout(Duration::from_secs(2)).send().await {
            Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["message"].as_str().map(str::to_owned)),
            Err(_) => None,
        };
        if got.as_deref() == Some(text) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{text:?} never served at {url}"))
}

fn run() -> Result<(), String> {
    if std::env::var_os("STAND_BASE_IMAGE").is_none() {
        // The image-rebuild path builds images in this process, the sync path in devd.
        std::env::set_var("STAND_BASE_IMAGE", BASE_IMAGE);
    }
    // BENCH_QUICK=1: fewer edits and shorter windows, every row still measured.
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let n: usize = std::env::args().nth(1).map_or(Ok(if quick { 5 } else { 20 }), |a| a.parse()).map_err(|e| format!("N: {e}"))?;
    let dir = tempfile::Builder::new().prefix("stand-bench-").tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().canonicalize().map_err(|e| e.to_string())?.join("stand");
    let name = format!("bench{}", std::process::id());
    if std::env::var_os("BENCH_ONLY_SCALE").is_some() {
        let scaled = scale(&devd_binary(), dir.path(), &name, &copies_target(), env_or("BENCH_SCALE_SERVICES", 20), n)?;
        let ((s50, s95), (o50, o95)) = (stats(&scaled.shared), stats(&scaled.one));
        println!("scale{}: shared p50={s50} p95={s95} one p50={o50} p95={o95} ready_ms={}", scaled.services, scaled.ready_ms);
        return Ok(());
    }
    make_stand(&root, &name)?;
    let target_dir = copies_target();
    let devd = devd_binary();
    let http = reqwest::blocking::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    let mut cleanup = Cleanup { devd: None, root: root.clone(), images: vec![format!("{name}/service1:dev"), format!("{name}/service1-tilt:dev")] };

    // (a) devd's sync path.
    eprintln!("bench: {n} edits per path on a copy of service1 in {}", root.display());
    let log_path = std::env::temp_dir().join(format!("{name}-devd.log"));
    cleanup.devd = Some(start_devd(&devd, &root, &target_dir, &log_path, None)?);
    let api = devd_api(&root).ok_or("devd did not start")?;
    let service_url =
        serving_url(&http, &api, Duration::from_secs(900)).ok_or_else(|| format!("the stand never came up; see {}", log_path.display()))?;
    poll(Duration::from_secs(60), Duration::from_millis(50), || message(&http, &service_url).filter(|m| m == "bench start"))
        .ok_or("service1 does not serve")?;
    let mut a = Vec::new();
    let mut reported = Vec::new();
    for i in 0..n {
        a.push(edit_served(&root, &http, &service_url, &format!("bench a{i}"), &log_path)?.as_millis() as u64);
        // devd's own figure for the same edit, once delivery has finished.
        reported.extend(delivered(&http, &api).map(|stages| (a[i], stages)));
        eprintln!("  (a) {i:>2}: {} ms", a[i]);
    }
    // The status API while edits are served: wrk, ~2000 req/s (24 connections pausing
    // 10 ms after each answer), BENCH_API_SECS (default 10).
    let api_secs: u64 = env_or("BENCH_API_SECS", if quick { 3 } else { 10 });
    let load = api_under_wrk(&api, api_secs, API_CONNECTIONS, 10, dir.path(), |i| {
        edit_served(&root, &http, &service_url, &format!("bench api{i}"), &log_path)
    })?;
    let api_p99 = load.p99_ms;
    eprintln!(
        "  api: {:.0} req/s for {api_secs} s, {} errors, p50 {:.2} ms, p99 {:.2} ms, edits served meanwhile, back to back: {:?} ms",
        load.requests_per_sec, load.errors, load.p50_ms, load.p99_ms, load.edits
    );
    if let Some(mut child) = cleanup.devd.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // devd watching a big tree (BENCH_TREE_FILES, default 100000): ready, idle CPU and
    // memory over BENCH_IDLE_SECS (default 60), then edits in it.
    let tree_files: usize = env_or("BENCH_TREE_FILES", 100_000);
    let idle_secs: u64 = env_or("BENCH_IDLE_SECS", if quick { 10 } else { 60 });
    let tree_dirs = big_tree(&root, tree_files)?;
    let tree_log = std::env::temp_dir().join(format!("{name}-devd-tree.log"));
    let started = Instant::now();
    let child = start_devd(&devd, &root, &target_dir, &tree_log, Some("devd=info"))?;
    let pid = child.id();
    cleanup.devd = Some(child);
    let ready = poll(Duration::from_secs(120), Duration::from_millis(10), || {
        std::fs::read_to_string(&tree_log).ok().filter(|l| l.contains("watching")).map(|_| started.elapsed())
    })
    .ok_or_else(|| format!("devd never watched the big tree; see {}", tree_log.display()))?;
    let api = devd_api(&root).ok_or("devd did not start on the big tree")?;
    let service_url = serving_url(&http, &api, Duration::from_secs(300))
        .ok_or_else(|| format!("the stand never came up on the big tree; see {}", tree_log.display()))?;
    let (cpu0, _) = cpu_and_rss(pid).ok_or("cannot read devd's /proc entry")?;
    let idle_from = Instant::now();
    // The measurement window itself (not a wait for something): devd left alone.
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (cpu1, rss) = cpu_and_rss(pid).ok_or("cannot read devd's /proc entry")?;
    let idle_rss_mb = rss.total;
    let idle_cpu_pct = (cpu1 - cpu0) / idle_from.elapsed().as_secs_f64() * 100.0;
    let mut e = Vec::new();
    for i in 0..n.min(5) {
        e.push(edit_served(&root, &http, &service_url, &format!("bench tree{i}"), &tree_log)?.as_millis() as u64);
        // As in (a): the next edit once this delivery has finished.
        let _ = delivered(&http, &api);
    }
    let (e50, _) = stats(&e);
    eprintln!(
        "  tree: {tree_files} files in {tree_dirs} dirs (half ignored): watching after {} ms, idle {idle_cpu_pct:.2} % CPU over {idle_secs} s, RSS {idle_rss_mb:.1} MB ({:.1} anonymous, {:.1} mapped files), edits {e:?} ms",
        ready.as_millis(),
        rss.anon,
        rss.file
    );
    if let Some(mut child) = cleanup.devd.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The container's log of the sync path (shim and service) stays for a look.
    if let Ok(out) = Command::new("docker").args(["logs", "-t", &format!("{name}-bench-service1")]).output() {
        let _ = std::fs::write(std::env::temp_dir().join(format!("{name}-container.log")), [out.stdout, out.stderr].concat());
    }
    if std::env::var_os("BENCH_ONLY_SYNC").is_some() {
        let (a50, a95) = stats(&a);
        println!(
            "(a) p50={a50} p95={a95} api_p99_ms={api_p99:.2} api_errors={} tree_ready_ms={} idle_cpu_pct={idle_cpu_pct:.2} idle_rss_mb={idle_rss_mb:.1} tree_edit_p50_ms={e50}",
            load.errors,
            ready.as_millis()
        );
        return Ok(());
    }

    // (b) the floor: the same one-line edit, a bare incremental cargo build.
    let mut b = Vec::new();
    let build = |root: &Path| -> Result<(), String> {
        let out = Command::new("cargo")
            .args(["build", "-q", "-p", "service1", "--bins"])
            .current_dir(root)
            .env("CARGO_TARGET_DIR", &target_dir)
            .output()
            .map_err(|e| e.to_string())?;
        out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    };
    build(&root)?;
    for i in 0..n {
        set_message(&root, &format!("bench b{i}"))?;
        let t0 = Instant::now();
        build(&root)?;
        b.push(t0.elapsed().as_millis() as u64);
        eprintln!("  (b) {i:>2}: {} ms", b[i]);
    }

    // (c) the image-rebuild path: host build, new image (bollard), container replaced.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let (c, d) = runtime.block_on(async {
        let stand = devd::config::load(&root.join("stand.toml")).map_err(|e| e.to_string())?;
        let plan = devd::plan::resolve(&stand, "bench", "").map_err(|e| e.to_string())?;
        let service: ServicePlan = plan.services[0].clone();
        let state_dir = root.join(".stand");
        let host = devd::commands::host_triple();
        let mut docker = DockerStand::connect(&plan, &root, &state_dir, &host).await.map_err(|e| e.to_string())?;
        // The same host build as devd's in (a): rustc replayed once cargo has recorded it.
        let mut config = BuildConfig::new(&root, &state_dir);
        config.target_dir = Some(target_dir.clone());
        config.rustc_recorder = Some(devd.clone());
        let builder = Builder::new(config);
        let graph = devd::graph::WorkspaceGraph::load(&root).map_err(|e| e.to_string())?;
        let edited = vec![root.join("services/service1/src/lib.rs")];
        let request = BuildRequest {
            targets: vec![BuildTarget::package("service1")],
            cause: edited.iter().cloned().collect(),
            replay: graph.replay_scope(&edited, &["service1"]),
            static_link: Default::default(),
        };
        // Warm-up (not timed): cargo records, devd's first deploy brings up the
        // network, the database and a container.
        set_message(&root, "bench c warm-up")?;
        let warm = builder.build(&BuildRequest { replay: None, ..request.clone() }, None).await.map_err(|e| e.message)?;
        docker.ensure(&service, &warm.artifacts[0], &mut |_| {}).await?;
        let engine = docker.target.docker();
        let shim = devd::image::ensure_shim(&root, &host, |_| {}).await.map_err(|e| e.to_string())?;
        let base_image = devd::image::base_image(engine, None).await;
        let secret = |name: &str| devd::runtime::docker::kept_secret(&state_dir, name).map_err(|e| e.to_string());
        let settings = devd::runtime::docker::ServiceContainer {
            image: format!("{name}/service1:dev"),
            shim_token: secret("shim-token")?,
            db_password: Some(secret("postgres-service1")?),
        };
        let http = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
        let mut c = Vec::new();
        for i in 0..n {
            let text = format!("bench c{i}");
            set_message(&root, &text)?;
            let t0 = Instant::now();
            let output = builder.build(&request, None).await.map_err(|e| e.message)?;
            let artifact = &output.artifacts[0];
            let spec = devd::image::ImageSpec {
                libs: artifact.libs.clone(),
                service: service.name.clone(),
                binary: artifact.path.clone(),
                binary_name: artifact.bin.clone(),
                binary_sha256: artifact.sha256.clone(),
                shim: shim.clone(),
                tag: settings.image.clone(),
                base_image: base_image.clone(),
                dockerfile: None,
                labels: Default::default(),
            };
            let built = devd::image::build(engine, &spec, |_| {}).await.map_err(|e| format!("(c) image: {e}"))?;
            let container = docker.target.replace_service(&service, &settings).await.map_err(|e| e.to_string())?;
            served(&http, &published_url(engine, &container, service.port).await?, &text).await?;
            c.push(t0.elapsed().as_millis() as u64);
            eprintln!("  (c) {i:>2}: {} ms", c[i]);
            if let Some(previous) = &built.previous {
                devd::image::remove_if_unused(engine, previous).await;
            }
        }
        // (d) Tilt's recipe, in the container (c) left (same network and database).
        let wrapper = repo_target().join("debug/examples/restart_wrapper");
        let binary = target_dir.join("debug").join(format!("{name}-service1"));
        let tag = format!("{name}/service1-tilt:dev");
        let d = tilt_recipe(&docker, &service, &root, dir.path(), &binary, &wrapper, &tag, n, &|| build(&root)).await?;
        Ok::<_, String>((c, d))
    })?;
    drop(cleanup);

    // The scale rows: BENCH_SCALE_SERVICES (default 20) services sharing one crate.
    let scale_count: usize = env_or("BENCH_SCALE_SERVICES", 20);
    let scaled = scale(&devd, dir.path(), &name, &target_dir, scale_count, if quick { 3 } else { n })?;

    let (a50, a95) = stats(&a);
    let (b50, b95) = stats(&b);
    let (c50, c95) = stats(&c);
    let (d50, d95) = stats(&d);
    println!("edit → new response served, {n} one-line edits of service1's MESSAGE per path (ms)");
    println!("{:<52} {:>7} {:>7}", "path", "p50", "p95");
    println!("{:<52} {:>7} {:>7}", "(a) devd sync: watch, build, shim swap, serving", a50, a95);
    println!("{:<52} {:>7} {:>7}", "(b) floor: bare incremental cargo build", b50, b95);
    println!("{:<52} {:>7} {:>7}", "(c) image rebuild: build, bollard image, new container", c50, c95);
    println!("{:<52} {:>7} {:>7}", "(d) Tilt recipe: cargo build, archive copy, restart", d50, d95);
    println!("{:<52} {:>7} {:>7}", "a − b", a50 as i64 - b50 as i64, a95 as i64 - b95 as i64);
    println!("{:<52} {:>7.2} {:>7.2}", "a / b (goal: p50 ≤ 0.7, p95 / b p50 ≤ 1)", a50 as f64 / b50.max(1) as f64, a95 as f64 / b50.max(1) as f64);
    println!("{:<52} {:>7.1} {:>7.1}", "c / a (goal ≥ 4)", c50 as f64 / a50.max(1) as f64, c95 as f64 / a95.max(1) as f64);
    println!("{:<52} {:>7.1} {:>7.1}", "d / a", d50 as f64 / a50.max(1) as f64, d95 as f64 / a95.max(1) as f64);
    if !reported.is_empty() {
        let row = |what: &str, f: &dyn Fn(&(u64, Stages)) -> u64| {
            let (p50, p95) = stats(&reported.iter().map(f).collect::<Vec<_>>());
            println!("{what:<52} {p50:>7} {p95:>7}");
        };
        row("devd's own last_edit_to_serving_ms for (a)", &|(_, s)| s.serving);
        row("  (a) by stage: first event → batch closed, stored", &|(_, s)| s.artifact.saturating_sub(s.build));
        row("  (a) by stage: build (rustc replayed)", &|(_, s)| s.build);
        row("  (a) by stage: delivery (upload, swap, health)", &|(_, s)| s.serving.saturating_sub(s.artifact));
        row("  (a) outside devd: write → event, answer polled", &|(a, s)| a.saturating_sub(s.serving));
    }
    println!(
        "{:<52} {:>7.2} {:>7.2}",
        format!("status API, wrk at {:.0} req/s during edits: p50 / p99 ({} errors)", load.requests_per_sec, load.errors),
        load.p50_ms,
        load.p99_ms
    );
    let (l50, l95) = stats(&load.edits);
    println!("{:<52} {:>7} {:>7}", format!("(a) back to back during it ({} edits)", load.edits.len()), l50, l95);
    let (s50, s95) = stats(&scaled.shared);
    let (o50, o95) = stats(&scaled.one);
    let count = scaled.services;
    println!("{:<52} {:>7} {:>7}", format!("scale: shared crate edit, until all {count} serve it"), s50, s95);
    println!("{:<52} {:>7} {:>7}", format!("scale: one service's edit (of {count}), until it serves"), o50, o95);
    println!("{:<52} {:>7.2} {:>7.2}", "scale shared / a (goal ≤ 2.5); one / a (goal ≤ 1.1)", s50 as f64 / a50.max(1) as f64, o50 as f64 / a50.max(1) as f64);
    println!("{:<52} {:>7} {:>7}", format!("scale: all {count} serving after devd up (ms)"), scaled.ready_ms, "");
    println!("{:<52} {:>7} {:>7}", format!("(e) edit in a {tree_files}-file tree, p50 / watching after (ms)"), e50, ready.as_millis());
    println!("{:<52} {:>7.2} {:>7}", "(e) / a (goal ≤ 1.1)", e50 as f64 / a50.max(1) as f64, "");
    println!("{:<52} {:>7.2} {:>7.1}", format!("devd idle over {idle_secs} s in that tree: CPU % / RSS MB"), idle_cpu_pct, idle_rss_mb);
    println!("{:<52} {:>7.1} {:>7.1}", "  its RSS: anonymous / mapped files (its code) MB", rss.anon, rss.file);
    println!(
        "edit_to_serving_p50_ms={a50} p95_ms={a95} floor_p50_ms={b50} naive_p50_ms={c50} tilt_recipe_p50_ms={d50} scale{count}_shared_p50_ms={s50} idle_cpu_pct={idle_cpu_pct:.2} idle_rss_mb={idle_rss_mb:.1} api_p99_ms={api_p99:.2}"
    );
    Ok(())
}
