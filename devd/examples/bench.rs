//! Edit→serving benchmark (bench/README.md; run with `bench/run [N]`).
//!
//! On a temp copy of this repository's service1 (docker target, its own PostgreSQL),
//! N one-line edits of service1's MESSAGE per path, each timed from the file write to
//! the new text answering `GET /api/service1`:
//! (a) devd's sync path: `devd up --target docker` watches, builds, swaps the binary
//!     into the running container through the shim;
//! (b) the floor: a bare incremental `cargo build` of the same change (no serving);
//! (c) the image-rebuild path (Tilt without live update): the same host build, a new
//!     image through bollard, the container replaced, until the new one serves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devd::build::{BuildConfig, BuildRequest, BuildTarget, Builder};
use devd::plan::ServicePlan;
use devd::runtime::docker::DockerStand;
use devd::runtime::Target as _;
use serde_json::Value;

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

fn message(http: &reqwest::blocking::Client, url: &str) -> Option<String> {
    let response = http.get(format!("{url}/api/service1")).timeout(Duration::from_secs(2)).send().ok()?;
    let body: Value = response.json().ok()?;
    body["message"].as_str().map(str::to_owned)
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

/// What wrk measured of the status API.
struct ApiLoad {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Socket errors and non-2xx answers.
    errors: u64,
    edits: usize,
}

/// wrk's latency (`812.00us`, `3.06ms`, `1.20s`) in ms.
fn wrk_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else {
        (text.strip_suffix('s')?, 1000.0)
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// The status API under wrk (`GET /api/v1/status` on `connections` keep-alive
/// connections, each pausing `pause_ms` after every answer: about
/// `connections * 1000 / pause_ms` requests per second) for `secs`, while `edit` runs
/// again and again here (the edit loop) until wrk is done.
fn api_under_wrk(api: &str, secs: u64, connections: u32, pause_ms: u32, dir: &Path, mut edit: impl FnMut(usize) -> Result<(), String>) -> Result<ApiLoad, String> {
    let script = dir.join("pace.lua");
    std::fs::write(&script, format!("function delay()\n  return {pause_ms}\nend\n")).map_err(|e| e.to_string())?;
    let mut wrk = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("{api}/api/v1/status"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run wrk ({e}); bench/run installs it"))?;
    let mut edits = 0;
    // Bounded by wrk's own duration.
    while wrk.try_wait().map_err(|e| e.to_string())?.is_none() {
        edit(edits)?;
        edits += 1;
    }
    let out = wrk.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(prefix)).map(str::trim);
    let latency = |q: &str| field(q).and_then(wrk_ms).ok_or_else(|| format!("no {q} latency in wrk's output:\n{text}"));
    let socket_errors: u64 = field("Socket errors:")
        .map(|l| l.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").and_then(|n| n.parse().ok()).unwrap_or(0);
    Ok(ApiLoad {
        requests_per_sec: field("Requests/sec:").and_then(|r| r.parse().ok()).ok_or_else(|| format!("no rate in wrk's output:\n{text}"))?,
        p50_ms: latency("50%")?,
        p99_ms: latency("99%")?,
        errors: socket_errors + non_2xx,
        edits,
    })
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

/// CPU time (user + system) of `pid` in seconds, and its resident memory in MB.
fn cpu_and_rss(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_sec: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output().ok()?.stdout).ok()?.trim().parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some((ticks / per_sec, rss_kb / 1024.0))
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
    poll(within, Duration::from_millis(100), || {
        let status: Value = http.get(format!("{api}/api/v1/services/service1")).send().ok()?.json().ok()?;
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

/// devd's own `last_edit_to_serving_ms` once its delivery of the current artifact has
/// finished (none within 10 s).
fn delivered(http: &reqwest::blocking::Client, api: &str) -> Option<u64> {
    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        let status: Value = http.get(format!("{api}/api/v1/services/service1")).send().ok()?.json().ok()?;
        let synced = status["instances"][0]["hash"] == status["artifact"]["sha256"] && status["build"]["state"] == "ok";
        synced.then(|| status["last_edit_to_serving_ms"].as_u64()).flatten()
    })
}

fn stats(samples: &[u64]) -> (u64, u64) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    (percentile(&sorted, 0.5), percentile(&sorted, 0.95))
}

struct Cleanup {
    devd: Option<Child>,
    root: PathBuf,
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.devd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
        let _ = Command::new(target_dir.join("debug/devd")).args(["down", "--env", "bench", "--volumes"]).current_dir(&self.root).output();
        let _ = Command::new("docker").args(["rmi", "-f", &format!("{}/service1:dev", self.name)]).output();
    }
}

fn run() -> Result<(), String> {
    if std::env::var_os("STAND_BASE_IMAGE").is_none() {
        // The image-rebuild path builds images in this process, the sync path in devd.
        std::env::set_var("STAND_BASE_IMAGE", BASE_IMAGE);
    }
    let n: usize = std::env::args().nth(1).map_or(Ok(20), |a| a.parse()).map_err(|e| format!("N: {e}"))?;
    let dir = tempfile::Builder::new().prefix("stand-bench-").tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().canonicalize().map_err(|e| e.to_string())?.join("stand");
    let name = format!("bench{}", std::process::id());
    make_stand(&root, &name)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let devd = target_dir.join("debug/devd");
    let http = reqwest::blocking::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    let mut cleanup = Cleanup { devd: None, root: root.clone(), name: name.clone() };

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
        reported.extend(delivered(&http, &api));
        eprintln!("  (a) {i:>2}: {} ms", a[i]);
    }
    // The status API while edits are served: wrk, ~2000 req/s (24 connections pausing
    // 10 ms after each answer), BENCH_API_SECS (default 10).
    let api_secs: u64 = env_or("BENCH_API_SECS", 10);
    let load = api_under_wrk(&api, api_secs, API_CONNECTIONS, 10, dir.path(), |i| {
        edit_served(&root, &http, &service_url, &format!("bench api{i}"), &log_path).map(|_| ())
    })?;
    let api_p99 = load.p99_ms;
    eprintln!(
        "  api: {:.0} req/s for {api_secs} s, {} errors, p50 {:.2} ms, p99 {:.2} ms, {} edits served meanwhile",
        load.requests_per_sec, load.errors, load.p50_ms, load.p99_ms, load.edits
    );
    if let Some(mut child) = cleanup.devd.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // devd watching a big tree (BENCH_TREE_FILES, default 100000): ready, idle CPU and
    // memory over BENCH_IDLE_SECS (default 60), then edits in it.
    let tree_files: usize = env_or("BENCH_TREE_FILES", 100_000);
    let idle_secs: u64 = env_or("BENCH_IDLE_SECS", 60);
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
    let (cpu1, idle_rss_mb) = cpu_and_rss(pid).ok_or("cannot read devd's /proc entry")?;
    let idle_cpu_pct = (cpu1 - cpu0) / idle_from.elapsed().as_secs_f64() * 100.0;
    let mut e = Vec::new();
    for i in 0..n.min(5) {
        e.push(edit_served(&root, &http, &service_url, &format!("bench tree{i}"), &tree_log)?.as_millis() as u64);
        // As in (a): the next edit once this delivery has finished.
        let _ = delivered(&http, &api);
    }
    let (e50, _) = stats(&e);
    eprintln!(
        "  tree: {tree_files} files in {tree_dirs} dirs (half ignored): watching after {} ms, idle {idle_cpu_pct:.2} % CPU over {idle_secs} s, RSS {idle_rss_mb:.1} MB, edits {e:?} ms",
        ready.as_millis()
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
    let c = runtime.block_on(async {
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
        };
        set_message(&root, "bench c warm-up")?;
        builder.build(&BuildRequest { replay: None, ..request.clone() }, None).await.map_err(|e| e.message)?;
        let http = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
        let mut c = Vec::new();
        for i in 0..n {
            let text = format!("bench c{i}");
            set_message(&root, &text)?;
            let t0 = Instant::now();
            let output = builder.build(&request, None).await.map_err(|e| e.message)?;
            let artifact = &output.artifacts[0];
            docker.ensure(&service, artifact, &mut |_| {}).await?;
            let end = Instant::now() + Duration::from_secs(120);
            loop {
                if Instant::now() > end {
                    return Err(format!("edit c{i} never served"));
                }
                let instances = docker.target.instances("service1").await.unwrap_or_default();
                if let Some(instance) = instances.first() {
                    let got = match http.get(format!("{}/api/service1", instance.service_url)).timeout(Duration::from_secs(2)).send().await {
                        Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["message"].as_str().map(str::to_owned)),
                        Err(_) => None,
                    };
                    if got.as_deref() == Some(text.as_str()) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            c.push(t0.elapsed().as_millis() as u64);
            eprintln!("  (c) {i:>2}: {} ms", c[i]);
        }
        Ok::<_, String>(c)
    })?;
    drop(cleanup);

    let (a50, a95) = stats(&a);
    let (b50, b95) = stats(&b);
    let (c50, c95) = stats(&c);
    println!("edit → new response served, {n} one-line edits of service1's MESSAGE per path (ms)");
    println!("{:<52} {:>7} {:>7}", "path", "p50", "p95");
    println!("{:<52} {:>7} {:>7}", "(a) devd sync: watch, build, shim swap, serving", a50, a95);
    println!("{:<52} {:>7} {:>7}", "(b) floor: bare incremental cargo build", b50, b95);
    println!("{:<52} {:>7} {:>7}", "(c) image rebuild: build, bollard image, new container", c50, c95);
    println!("{:<52} {:>7} {:>7}", "a − b", a50 as i64 - b50 as i64, a95 as i64 - b95 as i64);
    println!("{:<52} {:>7.1} {:>7.1}", "c / a", c50 as f64 / a50.max(1) as f64, c95 as f64 / a95.max(1) as f64);
    if !reported.is_empty() {
        let (r50, r95) = stats(&reported);
        println!("{:<52} {:>7} {:>7}", "devd's own last_edit_to_serving_ms for (a)", r50, r95);
    }
    println!(
        "{:<52} {:>7.2} {:>7.2}",
        format!("status API, wrk at {:.0} req/s during edits: p50 / p99 ({} errors)", load.requests_per_sec, load.errors),
        load.p50_ms,
        load.p99_ms
    );
    println!("{:<52} {:>7} {:>7}", format!("(e) edit in a {tree_files}-file tree, p50 / watching after (ms)"), e50, ready.as_millis());
    println!("{:<52} {:>7.2} {:>7.1}", format!("devd idle over {idle_secs} s in that tree: CPU % / RSS MB"), idle_cpu_pct, idle_rss_mb);
    println!(
        "edit_to_serving_p50_ms={a50} p95_ms={a95} floor_p50_ms={b50} naive_p50_ms={c50} idle_cpu_pct={idle_cpu_pct:.2} idle_rss_mb={idle_rss_mb:.1} api_p99_ms={api_p99:.2}"
    );
    Ok(())
}
