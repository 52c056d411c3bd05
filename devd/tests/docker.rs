//! The docker target and dev images, end to end: real dockerd, real containers, real
//! PostgreSQL (`stand/postgres:15`), the real shim, `devd` as a real process over a temp
//! copy of this repository's service1. These tests FAIL when Docker is not there
//! (`bash scripts/setup` provides it).
//!
//! Isolation: each test has its own stand name (`t<pid>x<n>`), so its containers,
//! network, volumes and image tags are its own; cleanup removes them all. The temp
//! copy's service1 binary is renamed per test (`<stand>-service1`), so concurrent
//! builds into the shared cargo target dir (this workspace's: registry crates compile
//! once) never overwrite each other's executables.

mod fixtures;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devd::status::{Event, EventBody};
use fixtures::poll_until;
use serde_json::{json, Value};

const DEVD: &str = env!("CARGO_BIN_EXE_devd");
const BASE_IMAGE: &str = "stand/base:bookworm";
/// First build of a service in a fresh copy (cold crate units, a release shim) on two
/// shared cores.
const FIRST_DEADLINE: Duration = Duration::from_secs(900);
/// An incremental rebuild and a swap.
const EDIT_DEADLINE: Duration = Duration::from_secs(240);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The cargo target dir the suite builds into (scripts/test exports it in CI): the
/// static shim of the repository's sources is built there once.
fn suite_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()).map_or_else(|| repo().join("target"), PathBuf::from)
}

/// The target dir the stand copies build their edited sources into, shared by them
/// (registry crates compile once; scripts/test builds them there first), and never the
/// suite's or the real stand's: an edited copy's binary must not land where devd of
/// the real stand (scripts/up builds into the suite's dir) takes its binaries from.
fn copies_target_dir() -> PathBuf {
    suite_target_dir().join("stand-copies")
}

fn unique_name() -> String {
    format!("t{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).stdin(Stdio::null()).output().expect("the docker CLI (scripts/setup installs docker.io)")
}

/// Fails the test (never skips) when the engine does not answer.
fn require_docker() {
    let out = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(
        out.status.success(),
        "Docker is required for these tests (run `bash scripts/setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let images = docker(&["image", "inspect", BASE_IMAGE, "stand/postgres:15"]);
    assert!(images.status.success(), "the local images {BASE_IMAGE} and stand/postgres:15 are missing (run `bash scripts/setup`)");
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A temp copy of the workspace parts service1 needs, with a stand.toml of its own.
struct Stand {
    _dir: tempfile::TempDir,
    root: PathBuf,
    name: String,
    env: String,
    devd: Option<Child>,
    url: String,
    images: Vec<String>,
}

impl Stand {
    fn new(env: &str, database: &str) -> Stand {
        let dir = tempfile::Builder::new().prefix("devd-docker-").tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical").join("stand");
        let name = unique_name();
        let repo = repo();
        copy_tree(&repo.join("services/kit"), &root.join("services/kit"));
        copy_tree(&repo.join("services/service1"), &root.join("services/service1"));
        // The committed MESSAGE, whatever the working tree says.
        let lib = root.join("services/service1/src/lib.rs");
        let source = std::fs::read_to_string(&lib).expect("service1 lib.rs");
        let source: String = source
            .lines()
            .map(|l| if l.starts_with("pub const MESSAGE") { "pub const MESSAGE: &str = \"hello from service1\";" } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&lib, source + "\n").expect("write lib.rs");
        let manifest = root.join("services/service1/Cargo.toml");
        let mut text = std::fs::read_to_string(&manifest).expect("manifest");
        text = text.replacen("[dependencies]", &format!("[[bin]]\nname = \"{name}-service1\"\npath = \"src/main.rs\"\n\n[dependencies]"), 1);
        std::fs::write(&manifest, text).expect("write manifest");
        let workspace = std::fs::read_to_string(repo.join("Cargo.toml")).expect("root manifest");
        let start = workspace.find("members = [").expect("members");
        let end = start + workspace[start..].find(']').expect("members end") + 1;
        let workspace = format!(
            "{}members = [\"services/kit\", \"services/service1\"]{}",
            &workspace[..start],
            &workspace[end..]
        );
        std::fs::write(root.join("Cargo.toml"), workspace).expect("write workspace");
        std::fs::copy(repo.join("Cargo.lock"), root.join("Cargo.lock")).expect("copy Cargo.lock");
        std::fs::create_dir_all(root.join("chart")).expect("chart dir");
        std::fs::write(root.join("chart/values.yaml"), "services: {}\n").expect("values");
        let stand_toml = format!(
            r#"
[stand]
name = "{name}"
chart = "chart"
release = "{name}"
default_env = "{env}"

[services.service1]
package = "service1"
path = "services/service1"
port = 5001
database = true
image = "stand/service1"

[env.{env}]
services = ["service1"]
target = "docker"
values = ["chart/values.yaml"]
live_sync = true
database = {database}
"#
        );
        std::fs::write(root.join("stand.toml"), stand_toml).expect("stand.toml");
        Stand { _dir: dir, root, name: name.clone(), env: env.to_owned(), devd: None, url: String::new(), images: vec![format!("{name}/service1:dev")] }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(DEVD);
        cmd.current_dir(&self.root)
            .env("CARGO_TARGET_DIR", copies_target_dir())
            .env("STAND_SHIM_TARGET_DIR", suite_target_dir())
            .env("STAND_BASE_IMAGE", BASE_IMAGE)
            .env("RUST_LOG", "devd=info")
            .stdin(Stdio::null());
        cmd
    }

    fn up(&mut self) {
        let log = std::fs::File::create(self.path("devd.log")).expect("log");
        let child = self
            .command()
            .args(["up", "--env", &self.env, "--target", "docker", "--port", "0"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start devd");
        self.devd = Some(child);
        let info: Value = poll_until(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(self.path(".stand/devd.json")).ok()?;
            serde_json::from_str(&text).ok()
        })
        .unwrap_or_else(|| panic!("devd did not come up:\n{}", self.log()));
        self.url = info["url"].as_str().expect("url").to_owned();
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.path("devd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    fn status(&self) -> Value {
        reqwest::blocking::get(format!("{}/api/v1/status", self.url)).and_then(|r| r.json()).unwrap_or(Value::Null)
    }

    fn service(&self) -> Value {
        self.status()["services"][0].clone()
    }

    fn wait(&self, what: &str, deadline: Duration, check: impl Fn(&Value) -> bool) -> Value {
        poll_until(deadline, || {
            let s = self.service();
            check(&s).then_some(s)
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; service: {:#}\nlog:\n{}", self.service(), self.log()))
    }

    /// Waits until the one instance runs the current artifact and is healthy.
    fn wait_synced(&self, what: &str, deadline: Duration) -> Value {
        self.wait(what, deadline, |s| {
            let sha = &s["artifact"]["sha256"];
            let instances = s["instances"].as_array().cloned().unwrap_or_default();
            !sha.is_null() && instances.len() == 1 && instances[0]["hash"] == *sha && instances[0]["healthy"] == true
        })
    }

    /// `devd status` as a person sees it.
    fn table(&self) -> String {
        let out = self.command().arg("status").output().expect("devd status");
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn service_url(&self) -> String {
        self.service()["instances"][0]["url"].as_str().expect("instance url").to_owned()
    }

    fn container(&self) -> String {
        format!("{}-{}-service1", self.name, self.env)
    }

    /// (id, started at) of the service container.
    fn container_identity(&self) -> (String, String) {
        let out = docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &self.container()]);
        assert!(out.status.success(), "{}", text(&out));
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let (id, started) = s.split_once(' ').expect("id and start");
        (id.to_owned(), started.to_owned())
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let path = self.path(rel);
        let source = std::fs::read_to_string(&path).expect("read source");
        assert!(source.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(&path, source.replacen(from, to, 1)).expect("write source");
    }

    fn labelled(&self, kind: &str) -> Vec<String> {
        let filter = format!("label=dev.stand.stand={}", self.name);
        let out = match kind {
            "container" => docker(&["ps", "-aq", "--filter", &filter]),
            "network" => docker(&["network", "ls", "-q", "--filter", &filter]),
            _ => docker(&["volume", "ls", "-q", "--filter", &filter]),
        };
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        if let Some(mut child) = self.devd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.command().args(["down", "--env", &self.env, "--volumes"]).output();
        for id in self.labelled("container") {
            let _ = docker(&["rm", "-f", "-v", &id]);
        }
        for kind in ["network", "volume"] {
            for id in self.labelled(kind) {
                let _ = docker(&[kind, "rm", &id]);
            }
        }
        for image in &self.images {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).expect("copy");
        }
    }
}

fn get(url: &str) -> Option<(u16, Value)> {
    let response = reqwest::blocking::Client::new().get(url).timeout(Duration::from_secs(5)).send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().unwrap_or(Value::Null)))
}

fn message(url: &str) -> Option<String> {
    let (status, body) = get(&format!("{url}/api/service1"))?;
    (status == 200).then(|| body["message"].as_str().map(str::to_owned)).flatten()
}

/// Waits for the service to serve `expected` (through the instance's current URL).
fn wait_message(stand: &Stand, expected: &str, deadline: Duration) {
    poll_until(deadline, || message(&stand.service_url()).filter(|m| m == expected))
        .unwrap_or_else(|| panic!("service never served {expected:?}; service: {:#}\nlog:\n{}", stand.service(), stand.log()));
}

/// Requests `/api/service1` in a loop until stopped; counts failures.
struct Hammer {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Hammer {
    fn start(url: String) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s, f, r) = (stop.clone(), failures.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut errors = Vec::new();
            // Bounded: at most 10 minutes of requests.
            let end = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::SeqCst) && Instant::now() < end {
                r.fetch_add(1, Ordering::SeqCst);
                match client.get(format!("{url}/api/service1")).timeout(Duration::from_secs(5)).send() {
                    Ok(resp) if resp.status().is_success() => {}
                    Ok(resp) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("status {}", resp.status()));
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        errors.push(e.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Hammer { stop, failures, requests, thread: Some(thread) }
    }

    fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.thread.take().expect("thread").join().expect("hammer thread");
        (self.requests.load(Ordering::SeqCst), self.failures.load(Ordering::SeqCst), errors)
    }
}

/// Reads the event stream from `after` until `pick` takes an event, and returns what it
/// took (`pick` says which kind it wants: `|b| match b { EventBody::X(x) => Some(x), _ => None }`).
fn wait_event<T>(stand: &Stand, after: u64, pick: impl Fn(EventBody) -> Option<T>) -> T {
    let response = reqwest::blocking::Client::builder()
        .timeout(EDIT_DEADLINE)
        .build()
        .expect("client")
        .get(format!("{}/api/v1/events?after={after}", stand.url))
        .send()
        .expect("open SSE");
    for line in BufReader::new(response).lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data: ") {
            let event: Event = serde_json::from_str(data).unwrap_or_else(|e| panic!("not an event ({e}): {data}"));
            if let Some(picked) = pick(event.body) {
                return picked;
            }
        }
    }
    panic!("no {} event; log:\n{}", std::any::type_name::<T>(), stand.log())
}

#[test]
fn docker_target_syncs_edits_into_the_running_container() {
    require_docker();
    let mut stand = Stand::new("e2e", "{ mode = \"in-cluster\", persistence = true }");
    stand.up();
    let first = stand.wait_synced("the first deploy", FIRST_DEADLINE);
    let url = stand.service_url();
    wait_message(&stand, "hello from service1", Duration::from_secs(60));
    // The image build's progress went to the event stream too.
    let progress = wait_event(&stand, 0, |b| match b {
        EventBody::ImageProgress(progress) => Some(progress),
        _ => None,
    });
    assert!(!progress.line.is_empty(), "{progress:?}");

    // Containers as the contract names them: the service and its database, one network,
    // the database's volume; ports on 127.0.0.1 only.
    let out = docker(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", &stand.container()]);
    let ports: Value = serde_json::from_slice(&out.stdout).expect("ports json");
    for (port, bindings) in ports.as_object().expect("ports") {
        assert_eq!(bindings[0]["HostIp"], "127.0.0.1", "{port} published beyond loopback: {ports}");
    }
    assert_eq!(stand.labelled("container").len(), 2, "service + database");
    assert_eq!(stand.labelled("network").len(), 1);
    assert_eq!(stand.labelled("volume").len(), 1, "persistence on: a named volume");

    // Rows written before the edit.
    let db_ready = poll_until(Duration::from_secs(90), || {
        let (status, body) = get(&format!("{url}/db-status"))?;
        (status == 200 && body["connected"] == true).then_some(())
    });
    assert!(db_ready.is_some(), "service1 never connected to its database: {:?}\n{}", get(&format!("{url}/db-status")), stand.log());
    let created = reqwest::blocking::Client::new()
        .post(format!("{url}/api/service1/items"))
        .json(&json!({"name": "before the edit"}))
        .send()
        .expect("POST item");
    assert!(created.status().is_success(), "{:?}", created.text());
    let before = stand.container_identity();

    // 1. An edited response text is served by the same container.
    stand.edit("services/service1/src/lib.rs", "\"hello from service1\"", "\"hello from the edited service1\"");
    wait_message(&stand, "hello from the edited service1", EDIT_DEADLINE);
    let synced = stand.wait_synced("the edit's artifact in the container", EDIT_DEADLINE);
    assert_ne!(synced["artifact"]["sha256"], first["artifact"]["sha256"]);
    assert_eq!(stand.container_identity(), before, "same container, same start: the binary was swapped in place");
    assert!(synced["last_edit_to_serving_ms"].as_u64().is_some(), "{synced:#}");
    let (_, items) = get(&format!("{url}/api/service1/items")).expect("items");
    assert!(items.to_string().contains("before the edit"), "rows written before the edit are gone: {items}");

    // 2. A syntax error: the old binary keeps serving, no request fails.
    let good_sha = synced["artifact"]["sha256"].clone();
    let count = synced["build"]["count"].as_u64().expect("count");
    let hammer = Hammer::start(url.clone());
    stand.edit("services/service1/src/lib.rs", "pub fn spec()", "pub fn spec( -> {");
    stand.wait("the failed build", EDIT_DEADLINE, |s| s["build"]["state"] == "failed" && s["build"]["count"].as_u64() > Some(count));
    // Keep requesting across a reconcile pass (every 1.5 s): 80 more requests, each at
    // least 20 ms apart, span one.
    let seen = hammer.requests.load(Ordering::SeqCst);
    poll_until(EDIT_DEADLINE, || (hammer.requests.load(Ordering::SeqCst) >= seen + 80).then_some(()))
        .expect("the request loop stalled");
    let (requests, failures, errors) = hammer.finish();
    assert!(requests > 10, "the request loop barely ran ({requests})");
    assert_eq!(failures, 0, "requests failed while the build was broken: {errors:?}");
    assert_eq!(message(&url).as_deref(), Some("hello from the edited service1"));
    assert_eq!(stand.service()["instances"][0]["hash"], good_sha);
    stand.edit("services/service1/src/lib.rs", "pub fn spec( -> {", "pub fn spec()");
    stand.wait("the repaired build", EDIT_DEADLINE, |s| s["build"]["state"] == "ok");

    // 3. A binary that exits at start: rolled back, the old text served, status says why.
    stand.edit(
        "services/service1/src/main.rs",
        "fn main() -> std::process::ExitCode {",
        "fn main() -> std::process::ExitCode {\n    eprintln!(\"refusing to start\");\n    std::process::exit(3);",
    );
    let rolled = stand.wait("the rollback", EDIT_DEADLINE, |s| {
        s["instances"][0]["detail"].as_str().is_some_and(|d| d.contains("rolled back"))
    });
    let detail = rolled["instances"][0]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("exit code 3") || detail.contains("refusing to start"), "the reason is missing: {detail}");
    assert_ne!(rolled["instances"][0]["hash"], rolled["artifact"]["sha256"], "the bad binary must not be running");
    // The rollback is reported once the shim restarted the previous binary, which may
    // not have bound its port yet: poll for the old text.
    wait_message(&stand, "hello from the edited service1", EDIT_DEADLINE);
    let ready = get(&format!("{}/api/v1/services/service1/ready", stand.url)).expect("ready");
    assert_eq!(ready.0, 503, "{ready:?}");
    // The table says it too, with the shim's reason.
    let table = stand.table();
    assert!(table.contains("0/1, rolled back"), "{table}");
    let note = table.lines().find(|l| l.starts_with("service1 instance") && l.contains("rolled back")).unwrap_or_default();
    assert!(note.contains("after start (exit code 3)"), "the table lacks the rollback's reason: {table}");
    stand.edit("services/service1/src/main.rs", "\n    eprintln!(\"refusing to start\");\n    std::process::exit(3);", "");
    stand.wait_synced("the repaired binary", EDIT_DEADLINE);
    assert_eq!(stand.container_identity(), before, "rollbacks happen inside the container");

    // 4. Restarted by hand: same binary again; removed by hand: devd recreates it from
    //    its image (the first build's binary) and re-syncs it to the current hash.
    let current = stand.service()["artifact"]["sha256"].clone();
    assert!(docker(&["restart", "-t", "5", &stand.container()]).status.success());
    stand.wait_synced("the restarted container", EDIT_DEADLINE);
    assert_ne!(stand.container_identity().1, before.1, "the container did restart");
    wait_message(&stand, "hello from the edited service1", Duration::from_secs(60));
    let seq = stand.status()["event_seq"].as_u64().expect("seq");
    assert!(docker(&["rm", "-f", &stand.container()]).status.success());
    let resync = wait_event(&stand, seq, |b| match b {
        EventBody::Resync(resync) => Some(resync),
        _ => None,
    });
    let first_sha = first["artifact"]["sha256"].as_str();
    assert_eq!(resync.running.as_deref(), first_sha, "the new container started from the image's binary");
    let synced = stand.wait_synced("the recreated container", EDIT_DEADLINE);
    assert_eq!(synced["instances"][0]["hash"], current);
    assert_ne!(stand.container_identity().0, before.0);
    wait_message(&stand, "hello from the edited service1", Duration::from_secs(60));
    let (_, items) = get(&format!("{}/api/service1/items", stand.service_url())).expect("items");
    assert!(items.to_string().contains("before the edit"), "the database volume outlived the container: {items}");

    // 5. `devd restart`: the shim restarts the process.
    let seq = stand.status()["event_seq"].as_u64().expect("seq");
    let out = stand.command().args(["restart", "service1"]).output().expect("devd restart");
    assert!(out.status.success(), "{}", text(&out));
    let restarted = wait_event(&stand, seq, |b| match b {
        EventBody::Restarted(restarted) => Some(restarted),
        _ => None,
    });
    assert!(restarted.pid > 0, "{restarted:?}");
    stand.wait_synced("the service after a restart", EDIT_DEADLINE);

    // 5b. The database refuses the service: the instance is degraded (not healthy) in the
    //     JSON, the table and the readiness answer, which stays 200 (docs/CONTRACTS.md).
    let database = format!("{}-e2e-postgres-service1", stand.name);
    let psql = |sql: &str| {
        let script = format!("psql -v ON_ERROR_STOP=1 -U \"$POSTGRES_USER\" -d postgres -c \"{sql}\"");
        let out = docker(&["exec", &database, "sh", "-c", &script]);
        assert!(out.status.success(), "{sql}: {}", text(&out));
    };
    psql("ALTER DATABASE \\\"$POSTGRES_DB\\\" ALLOW_CONNECTIONS false");
    psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$POSTGRES_DB' AND pid <> pg_backend_pid()");
    // The service sees its connection end at once; devd reconciles every 1.5 s.
    let degraded = stand.wait("the degraded instance", Duration::from_secs(30), |s| s["instances"][0]["health"] == "degraded");
    assert_eq!(degraded["instances"][0]["healthy"], false, "{degraded:#}");
    let why = degraded["instances"][0]["health_detail"].as_str().unwrap_or_default();
    assert!(why.contains("database unavailable"), "{degraded:#}");
    let (code, ready) = get(&format!("{}/api/v1/services/service1/ready", stand.url)).expect("ready");
    assert_eq!((code, &ready["health"]), (200, &json!("degraded")), "{ready}");
    assert!(ready["reason"].as_str().is_some_and(|r| r.contains("is degraded: database unavailable")), "{ready}");
    let table = stand.table();
    let row = table.lines().find(|l| l.starts_with("service1 ")).unwrap_or_default();
    assert!(row.contains("0/1, 1 degraded"), "{table}");
    assert!(table.contains(": degraded: database unavailable"), "{table}");
    psql("ALTER DATABASE \\\"$POSTGRES_DB\\\" ALLOW_CONNECTIONS true");
    let well = stand.wait("the database back", EDIT_DEADLINE, |s| s["instances"][0]["health"] == "ok");
    assert_eq!(well["instances"][0]["healthy"], true, "{well:#}");

    // 6. `devd up` again over the running stand: no name clashes; the database container
    //    (same image, same settings) is kept; the service runs the current build.
    let db_id = docker(&["inspect", "-f", "{{.Id}}", &database]);
    if let Some(mut child) = stand.devd.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_file(stand.path(".stand/devd.json"));
    stand.up();
    stand.wait_synced("the stand after a second devd up", FIRST_DEADLINE);
    wait_message(&stand, "hello from the edited service1", Duration::from_secs(60));
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &database]).stdout, db_id.stdout, "the database container was kept");
    assert_eq!(stand.labelled("container").len(), 2);
    // The image's inputs (Dockerfile, base, shim) did not change: it was not rebuilt,
    // and the running container was kept (devd_restarts_... tests both in detail).
    let first_sha = first["artifact"]["sha256"].as_str().expect("sha");
    let old_images = docker(&["images", "-q", "--filter", &format!("label=dev.stand.binary-sha256={first_sha}")]);
    assert_ne!(String::from_utf8_lossy(&old_images.stdout).trim(), "", "the first build's image was kept");

    // 7. `devd down`: containers and network go, the volume stays without --volumes.
    if let Some(mut child) = stand.devd.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = stand.command().args(["down", "--env", "e2e"]).output().expect("devd down");
    assert!(out.status.success(), "{}", text(&out));
    assert!(stand.labelled("container").is_empty() && stand.labelled("network").is_empty(), "{}", text(&out));
    assert_eq!(stand.labelled("volume").len(), 1, "volumes go only with --volumes");
    let out = stand.command().args(["down", "--env", "e2e", "--volumes"]).output().expect("devd down --volumes");
    assert!(out.status.success(), "{}", text(&out));
    assert!(stand.labelled("volume").is_empty(), "{}", text(&out));
}

/// Checks that are all reported at the end: a run shows every lifecycle rule that
/// does not hold, not just the first.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn that(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("CHECK FAILED: {what}");
            self.0.push(what);
        }
    }
}

/// Probes `url` in a loop until stopped; records when requests failed.
struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<Duration>)>>,
}

impl Prober {
    fn start(url: String) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicUsize::new(0));
        let (s, p) = (stop.clone(), probes.clone());
        let thread = std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let start = Instant::now();
            let (mut total, mut failed) = (0, Vec::new());
            // Bounded: at most 10 minutes.
            while !s.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(600) {
                total += 1;
                p.fetch_add(1, Ordering::SeqCst);
                let ok = client.get(&url).timeout(Duration::from_secs(2)).send().is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.push(start.elapsed());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (total, failed)
        });
        Prober { stop, probes, thread: Some(thread) }
    }

    /// Waits until `n` more probes ran.
    fn wait_probes(&self, n: usize) {
        let seen = self.probes.load(Ordering::SeqCst);
        poll_until(EDIT_DEADLINE, || (self.probes.load(Ordering::SeqCst) >= seen + n).then_some(())).expect("the prober stalled");
    }

    /// (probes, failed probes, first to last failure).
    fn finish(mut self) -> (usize, usize, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let (total, failed) = self.thread.take().expect("thread").join().expect("prober");
        let window = match (failed.first(), failed.last()) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        };
        (total, failed.len(), window)
    }
}

impl Stand {
    fn stop_devd(&mut self) {
        if let Some(mut child) = self.devd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.path(".stand/devd.json"));
    }

    /// The shim's `GET /v1/status` of the service container.
    fn shim_status(&self) -> Value {
        let port = docker(&["port", &self.container(), "7070/tcp"]);
        let address = String::from_utf8_lossy(&port.stdout).lines().next().unwrap_or_default().trim().to_owned();
        let token = std::fs::read_to_string(self.path(".stand/secrets/shim-token")).unwrap_or_default();
        reqwest::blocking::Client::new()
            .get(format!("http://{address}/v1/status"))
            .header("X-Stand-Token", token.trim())
            .timeout(Duration::from_secs(5))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    }

    fn image_id(&self, reference: &str) -> String {
        let out = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// The lifecycle rules of issue 12 on the docker target: dev images scoped by the
/// stand; a stopped database container brought back; a devd restart over a running
/// stand keeps its image, its container, its process and its binary, one linked
/// against the dependencies' library included (and rebuilds the image once its
/// Dockerfile changed); a second `devd up` on the root refused; `devd down` while
/// `devd up` runs stops the daemon first and leaves nothing behind. It runs alone
/// (.config/nextest.toml): the other tests' stands build into the same target dir.
#[test]
fn devd_restarts_downs_and_revives_the_docker_stand_without_racing() {
    require_docker();
    let mut checks = Checks::default();
    // The stand.toml's `image` is a repository another stand uses too.
    let unscoped = "standtest-unscoped/service1:dev";
    let theirs = docker(&["image", "inspect", "-f", "{{.Id}}", unscoped]).stdout;
    let mut stand = Stand::new("life", "{ mode = \"in-cluster\", persistence = false }");
    let manifest = std::fs::read_to_string(stand.path("stand.toml")).expect("stand.toml");
    std::fs::write(stand.path("stand.toml"), manifest.replace("image = \"stand/service1\"", "image = \"standtest-unscoped/service1\""))
        .expect("stand.toml");
    stand.up();
    stand.wait_synced("the first deploy", FIRST_DEADLINE);
    let url = stand.service_url();

    // Dev images are the stand's: `<stand>/<service>:<tag>`, labelled with the stand.
    let ours = format!("{}/service1:dev", stand.name);
    let image = stand.image_id(&ours);
    checks.that(!image.is_empty(), || format!("no image {ours}"));
    let label = docker(&["image", "inspect", "-f", "{{index .Config.Labels \"dev.stand.stand\"}}", &ours]);
    checks.that(String::from_utf8_lossy(&label.stdout).trim() == stand.name, || format!("{ours} lacks the stand label"));
    let after = docker(&["image", "inspect", "-f", "{{.Id}}", unscoped]).stdout;
    checks.that(after == theirs, || format!("the stand built {unscoped}, a tag other stands use"));

    // A stopped database container comes back, and the service reconnects.
    let database = format!("{}-life-postgres-service1", stand.name);
    let connected = || get(&format!("{url}/db-status")).is_some_and(|(status, body)| status == 200 && body["connected"] == true);
    checks.that(poll_until(Duration::from_secs(90), || connected().then_some(())).is_some(), || "never connected".to_owned());
    assert!(docker(&["stop", "-t", "5", &database]).status.success());
    let running = || {
        let out = docker(&["inspect", "-f", "{{.State.Running}}", &database]);
        (String::from_utf8_lossy(&out.stdout).trim() == "true").then_some(())
    };
    let back = poll_until(Duration::from_secs(30), running);
    checks.that(back.is_some(), || "the stopped database container was not brought back within 30 s".to_owned());
    if back.is_some() {
        let again = poll_until(Duration::from_secs(60), || connected().then_some(()));
        checks.that(again.is_some(), || "the service did not reconnect to its database".to_owned());
    }

    // A devd restart over the running stand, after edits delivered through the shim
    // until one is linked against the dependencies' library (the container runs the
    // current build, its image an older one): same image, same container, same
    // process, the same binary (devd's first build links against that library again).
    let mut n = 0;
    let edit = |n: u32| {
        let before = if n == 1 { "hello from service1".to_owned() } else { format!("hello {}", n - 1) };
        stand.edit("services/service1/src/lib.rs", &format!("\"{before}\""), &format!("\"hello {n}\""));
    };
    let (running, _) = edit_until_dynamic(&stand, &mut n, &edit, &|n| format!("hello {n}"));
    let container = stand.container_identity();
    let shim = stand.shim_status();
    let prober = Prober::start(format!("{url}/health"));
    // The prober runs before, during and after (its probes are >= 5 ms apart: 300 of
    // them span at least one reconcile pass of the new devd, every 1.5 s).
    prober.wait_probes(20);
    stand.stop_devd();
    stand.up();
    stand.wait_synced("the stand after a devd restart", FIRST_DEADLINE);
    prober.wait_probes(300);
    let (probes, failed, window) = prober.finish();
    eprintln!("OUTAGE on devd restart: {failed} of {probes} /health probes failed, over {} ms", window.as_millis());
    checks.that(failed == 0, || format!("{failed} of {probes} probes failed across the devd restart ({} ms)", window.as_millis()));
    checks.that(stand.image_id(&ours) == image, || "the image was rebuilt although its inputs did not change".to_owned());
    checks.that(stand.container_identity() == container, || "the container was recreated or restarted".to_owned());
    let now = stand.shim_status();
    checks.that(now["pid"] == shim["pid"] && now["restarts"] == shim["restarts"], || {
        format!("the service process was restarted: {shim} then {now}")
    });
    let artifact = stand.service()["artifact"]["sha256"].clone();
    checks.that(artifact == running.as_str(), || {
        format!("devd's artifact after the restart is {artifact}, the container runs {running}")
    });

    // A changed image input (the stand's own Dockerfile) rebuilds the image once.
    let dockerfile = std::fs::read_to_string(repo().join("devd/docker/Dockerfile")).expect("Dockerfile");
    std::fs::create_dir_all(stand.path("devd/docker")).expect("dir");
    std::fs::write(stand.path("devd/docker/Dockerfile"), format!("{dockerfile}LABEL dev.stand.test=changed\n")).expect("write");
    stand.stop_devd();
    stand.up();
    let rebuilt = poll_until(FIRST_DEADLINE, || {
        let id = stand.image_id(&ours);
        (!id.is_empty() && id != image).then_some(id)
    });
    checks.that(rebuilt.is_some(), || "a changed Dockerfile did not rebuild the image".to_owned());
    stand.wait_synced("the container of the rebuilt image", FIRST_DEADLINE);
    checks.that(stand.container_identity().0 != container.0, || "the container still runs the old image".to_owned());
    let gone = poll_until(Duration::from_secs(30), || stand.image_id(&image).is_empty().then_some(()));
    checks.that(gone.is_some(), || "the image the tag no longer names was not removed".to_owned());

    // A second `devd up` on the root is refused, naming the running one; the running
    // one's address and token stay.
    let info = std::fs::read_to_string(stand.path(".stand/devd.json")).unwrap_or_default();
    let token = std::fs::read_to_string(stand.path(".stand/token")).unwrap_or_default();
    let pid = stand.devd.as_ref().map(Child::id).unwrap_or_default();
    let mut second = stand
        .command()
        .args(["up", "--env", "life", "--target", "docker", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second devd up");
    let exited = poll_until(Duration::from_secs(30), || second.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = second.kill();
    }
    let output = second.wait_with_output().expect("second devd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    checks.that(exited.is_some_and(|s| s.code() == Some(1)), || format!("a second devd up was not refused: {exited:?} {stderr}"));
    checks.that(stderr.contains("already running") && stderr.contains(&format!("pid {pid}, env life")), || {
        format!("the refusal does not name the running devd (pid {pid}): {stderr}")
    });
    checks.that(std::fs::read_to_string(stand.path(".stand/devd.json")).unwrap_or_default() == info, || "devd.json was overwritten".to_owned());
    checks.that(std::fs::read_to_string(stand.path(".stand/token")).unwrap_or_default() == token, || "the token was overwritten".to_owned());

    // `devd down` while `devd up` runs: the daemon is stopped first, then everything goes.
    let started = Instant::now();
    let out = stand.command().args(["down", "--env", "life"]).output().expect("devd down");
    let took = started.elapsed();
    eprintln!("DOWN while up runs: {} ms\n{}", took.as_millis(), text(&out));
    checks.that(out.status.success(), || format!("devd down failed while devd up ran: {}", text(&out)));
    checks.that(!text(&out).contains("active endpoints"), || text(&out));
    let daemon_gone = stand.devd.as_mut().map(|c| poll_until(Duration::from_secs(10), || c.try_wait().ok().flatten()).is_some());
    checks.that(daemon_gone == Some(true), || "devd up still runs after devd down".to_owned());
    // Nothing comes back: observed across three reconcile intervals of a daemon that
    // would still be running (bounded).
    let observe = Instant::now();
    let mut seen = Vec::new();
    while observe.elapsed() < Duration::from_millis(4500) && seen.is_empty() {
        seen = stand.labelled("container");
        std::thread::sleep(Duration::from_millis(100));
    }
    checks.that(seen.is_empty() && stand.labelled("network").is_empty(), || format!("left or brought back after devd down: {seen:?}"));
    assert!(checks.0.is_empty(), "lifecycle rules broken:\n{}\nlog:\n{}", checks.0.join("\n"), stand.log());
}

/// The tiny fixture workspace (no registry crates) with a stand.toml naming svc1.
fn image_fixture() -> (fixtures::Fixture, String) {
    let fx = fixtures::workspace();
    let name = unique_name();
    fx.write(
        "stand.toml",
        &format!(
            r#"
[stand]
name = "{name}"
chart = "chart"
release = "{name}"
default_env = "local"

[services.svc1]
package = "svc1"
path = "services/svc1"
port = 6001
image = "fx/svc1"

[env.local]
services = ["svc1"]
target = "docker"
values = ["chart/values.yaml"]
"#
        ),
    );
    fx.write("chart/values.yaml", "services: {}\n");
    (fx, name)
}

fn image_build(fx: &fixtures::Fixture, args: &[&str]) -> Output {
    Command::new(DEVD)
        .args(["image", "build", "svc1"])
        .args(args)
        .current_dir(&fx.root)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        .env("STAND_SHIM_TARGET_DIR", suite_target_dir())
        .env_remove("STAND_BASE_IMAGE")
        .stdin(Stdio::null())
        .output()
        .expect("devd image build")
}

/// Removes the images a test tagged, whatever happens.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

#[test]
fn image_build_tags_exactly_the_ref_with_labels_and_the_shim_entrypoint() {
    require_docker();
    let (fx, name) = image_fixture();
    let reference = format!("standtest-{name}/svc1:expected-ref-1");
    let _cleanup = Images(vec![reference.clone(), format!("standtest-{name}/ctx:1")]);
    let out = image_build(&fx, &["--ref", &reference, "--base-image", BASE_IMAGE]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Step 1/"), "Docker's progress is printed: {stdout}");
    assert!(stdout.contains(&format!("Successfully tagged {reference}")), "{stdout}");

    let inspect = docker(&["image", "inspect", &reference]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let image: Value = serde_json::from_slice::<Value>(&inspect.stdout).expect("inspect json")[0].clone();
    assert_eq!(image["RepoTags"], json!([reference]), "tagged exactly as asked");
    let config = &image["Config"];
    assert_eq!(config["Entrypoint"], json!(["/app/stand-shim", "--", "/app/svc1"]));
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Labels"]["dev.stand.service"], "svc1");
    let sha = config["Labels"]["dev.stand.binary-sha256"].as_str().expect("binary sha label");
    assert_eq!(sha.len(), 64);
    let artifact = std::fs::read(fx.path(&format!(".stand/artifacts/svc1/{sha}")));
    assert!(artifact.is_ok(), "the label names the artifact devd built");

    // The image holds the binary and the shim under /app, owned by the runtime user.
    let created = docker(&["create", &reference]);
    assert!(created.status.success(), "{}", text(&created));
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let copied = docker(&["cp", &format!("{id}:/app/svc1"), &fx.path("svc1.from-image").display().to_string()]);
    let shim = docker(&["cp", &format!("{id}:/app/stand-shim"), &fx.path("shim.from-image").display().to_string()]);
    let _ = docker(&["rm", "-f", &id]);
    assert!(copied.status.success() && shim.status.success(), "{}{}", text(&copied), text(&shim));
    assert_eq!(std::fs::read(fx.path("svc1.from-image")).ok(), artifact.ok());

    // A Dockerfile of the stand's own: its directory is the context, .dockerignore holds.
    fx.write("ctx/Dockerfile", &format!("FROM {BASE_IMAGE}\nCOPY . /ctx/\nENTRYPOINT [\"/app/${{BINARY}}\"]\n"));
    fx.write("ctx/.dockerignore", "*.secret\n");
    fx.write("ctx/kept.txt", "kept\n");
    fx.write("ctx/token.secret", "never in an image\n");
    let ctx_ref = format!("standtest-{name}/ctx:1");
    let dockerfile = fx.path("ctx/Dockerfile").display().to_string();
    let out = image_build(&fx, &["--ref", &ctx_ref, "--dockerfile", &dockerfile]);
    assert!(out.status.success(), "{}", text(&out));
    let created = docker(&["create", &ctx_ref]);
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let kept = docker(&["cp", &format!("{id}:/ctx/kept.txt"), "-"]);
    let secret = docker(&["cp", &format!("{id}:/ctx/token.secret"), "-"]);
    let binary = docker(&["cp", &format!("{id}:/ctx/app/svc1"), "-"]);
    let entrypoint = docker(&["inspect", "-f", "{{json .Config.Entrypoint}}", &id]);
    let _ = docker(&["rm", "-f", &id]);
    assert!(kept.status.success(), "{}", text(&kept));
    assert!(!secret.status.success(), ".dockerignore'd file made it into the image");
    assert!(binary.status.success(), "devd's app/ entries are in the context: {}", text(&binary));
    assert_eq!(String::from_utf8_lossy(&entrypoint.stdout).trim(), r#"["/app/svc1"]"#);
}

#[test]
fn image_build_failures_carry_dockers_message() {
    require_docker();
    let (fx, name) = image_fixture();
    let reference = format!("standtest-{name}/svc1:broken");
    let _cleanup = Images(vec![reference.clone()]);

    // A base image that does not exist here (and cannot be pulled).
    let out = image_build(&fx, &["--ref", &reference, "--base-image", &format!("standtest-{name}/no-such-base:1")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("image build of {reference} failed at `Step 2/")), "{stderr}");
    assert!(stderr.contains(&format!("BASE_IMAGE=`standtest-{name}/no-such-base:1`")), "the error names the step: {stderr}");

    // A Dockerfile Docker cannot parse.
    fx.write("bad/Dockerfile", &format!("FROM {BASE_IMAGE}\nFROBNICATE /app\n"));
    let dockerfile = fx.path("bad/Dockerfile").display().to_string();
    let out = image_build(&fx, &["--ref", &reference, "--dockerfile", &dockerfile]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("unknown instruction") && stderr.contains("frobnicate"), "{stderr}");
    assert!(!docker(&["image", "inspect", &reference]).status.success(), "no image is tagged after a failed build");

    // An unknown service is a usage error (exit 2) before anything is built.
    let out = Command::new(DEVD)
        .args(["image", "build", "nope", "--ref", &reference])
        .current_dir(&fx.root)
        .stdin(Stdio::null())
        .output()
        .expect("devd");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A service added with `devd new` while `devd up` runs is built and started (its
/// database and container) without a restart of devd; taken out of the environment,
/// its containers go and its volume stays.
#[test]
fn a_service_added_and_removed_while_devd_runs() {
    require_docker();
    let mut stand = Stand::new("live", "{ mode = \"in-cluster\", persistence = true }");
    stand.up();
    stand.wait_synced("the first deploy", FIRST_DEADLINE);
    let pid = stand.devd.as_ref().map(Child::id).expect("devd runs");

    // A name of this test's own: its binary in the shared target dir is its own too.
    let extra = format!("{}-extra", stand.name);
    let out = stand.command().args(["new", &extra, "--database", "--port", "5077", "--env", "live"]).output().expect("devd new");
    assert!(out.status.success(), "devd new: {}", text(&out));
    stand.images.push(format!("{}/{extra}:dev", stand.name));
    let find = |status: &Value| -> Value {
        status["services"].as_array().and_then(|a| a.iter().find(|s| s["name"] == extra.as_str()).cloned()).unwrap_or(Value::Null)
    };
    let served = poll_until(FIRST_DEADLINE, || {
        let s = find(&stand.status());
        let instance = s["instances"].get(0)?;
        let url = instance["url"].as_str()?;
        let (status, health) = get(&format!("{url}/health"))?;
        (instance["hash"] == s["artifact"]["sha256"] && status == 200 && health["database_connected"] == true).then_some(url.to_owned())
    })
    .unwrap_or_else(|| panic!("{extra} never served /health with its database; status: {:#}\nlog:\n{}", find(&stand.status()), stand.log()));
    let (_, about) = get(&format!("{served}/api/{extra}")).expect("about");
    assert_eq!(about["message"], format!("hello from {extra}"));
    assert_eq!(stand.devd.as_ref().map(Child::id), Some(pid), "the same devd");
    let container = format!("{}-live-{extra}", stand.name);
    let postgres = format!("{}-live-postgres-{extra}", stand.name);
    assert!(docker(&["inspect", "--type", "container", &postgres]).status.success(), "its own database container");
    let volumes_before = stand.labelled("volume");
    assert_eq!(volumes_before.len(), 2, "service1's and {extra}'s volumes: {volumes_before:?}");

    // Out of the environment: containers removed, volume kept, status without it.
    stand.edit("stand.toml", &format!("services = [\"service1\", \"{extra}\"]"), "services = [\"service1\"]");
    poll_until(EDIT_DEADLINE, || {
        // `--type container`: the database's named volume may carry the same name.
        let gone = !docker(&["inspect", "--type", "container", &container]).status.success()
            && !docker(&["inspect", "--type", "container", &postgres]).status.success();
        (gone && find(&stand.status()).is_null()).then_some(())
    })
    .unwrap_or_else(|| {
        let ps = docker(&["ps", "-a", "--filter", &format!("label=dev.stand.stand={}", stand.name), "--format", "{{.Names}} {{.Status}}"]);
        panic!("{extra} is still there; containers:\n{}status: {:#}\nlog:\n{}", text(&ps), find(&stand.status()), stand.log())
    });
    assert_eq!(stand.labelled("volume"), volumes_before, "the data of a removed service stays until devd down --volumes");
    assert!(docker(&["inspect", "--type", "container", &stand.container()]).status.success(), "service1 keeps running");
}

/// `devd logs` of a running stand, as a child whose stdout (a pipe) is collected.
struct Logs {
    child: Child,
    out: Arc<std::sync::Mutex<String>>,
}

impl Logs {
    fn start(stand: &Stand, args: &[&str]) -> Logs {
        let mut child = stand.command().arg("logs").args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("devd logs");
        let out = Arc::new(std::sync::Mutex::new(String::new()));
        for stream in [Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().expect("stderr"))] {
            let sink = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("log sink").push_str(&(line + "\n"));
                }
            });
        }
        Logs { child, out }
    }

    fn text(&self) -> String {
        self.out.lock().expect("log sink").clone()
    }

    /// Waits until `count` lines hold `needle`; returns them.
    fn wait_lines(&self, stand: &Stand, needle: &str, count: usize, deadline: Duration) -> Vec<String> {
        poll_until(deadline, || {
            let lines: Vec<String> = self.text().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect();
            (lines.len() >= count).then_some(lines)
        })
        .unwrap_or_else(|| panic!("devd logs never showed {count} × {needle:?}:\n{}\ndevd:\n{}", self.text(), stand.log()))
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn devd_logs_follows_the_service_across_edits_and_new_containers() {
    require_docker();
    let mut stand = Stand::new("logs", "{ mode = \"none\" }");
    // The local base image is found without STAND_BASE_IMAGE (README's quick start).
    let up = |stand: &mut Stand| {
        let log = std::fs::File::create(stand.path("devd.log")).expect("log");
        let child = stand
            .command()
            .env_remove("STAND_BASE_IMAGE")
            .args(["up", "--env", &stand.env, "--port", "0"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start devd");
        stand.devd = Some(child);
        let info: Value = poll_until(Duration::from_secs(60), || serde_json::from_str(&std::fs::read_to_string(stand.path(".stand/devd.json")).ok()?).ok())
            .unwrap_or_else(|| panic!("devd did not come up:\n{}", stand.log()));
        stand.url = info["url"].as_str().expect("url").to_owned();
    };
    up(&mut stand);
    stand.wait_synced("the first deploy", FIRST_DEADLINE);
    let published = docker(&["port", &stand.container(), "5001/tcp"]);
    let first_address = String::from_utf8_lossy(&published.stdout).lines().next().unwrap_or_default().trim().to_owned();
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", &stand.container()]);
    let base = docker(&["image", "inspect", "-f", "{{.Id}}", BASE_IMAGE]);
    let history = docker(&["history", "-q", "--no-trunc", String::from_utf8_lossy(&image.stdout).trim()]);
    let base_id = String::from_utf8_lossy(&base.stdout).trim().to_owned();
    assert!(String::from_utf8_lossy(&history.stdout).contains(&base_id), "the dev image is built on {BASE_IMAGE}");

    // Unknown service: exit 2, nothing streamed.
    let out = stand.command().args(["logs", "nope"]).output().expect("devd logs nope");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("valid: service1"), "{}", text(&out));

    // What the service printed so far, prefixed; without -f the command ends.
    let out = stand.command().args(["logs", "service1"]).output().expect("devd logs");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.is_empty() && stdout.lines().all(|l| l.starts_with("service1 | ")), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour on a pipe: {stdout:?}");

    // -f: a line the edited binary prints shows up, prefixed.
    let logs = Logs::start(&stand, &["service1", "-f", "--tail", "5"]);
    poll_until(Duration::from_secs(30), || logs.text().lines().any(|l| l.starts_with("service1 | ")).then_some(()))
        .unwrap_or_else(|| panic!("devd logs -f printed nothing: {}", logs.text()));
    stand.edit(
        "services/service1/src/main.rs",
        "fn main() -> std::process::ExitCode {",
        "fn main() -> std::process::ExitCode {\n    eprintln!(\"printed after the edit\");",
    );
    let lines = logs.wait_lines(&stand, "printed after the edit", 1, EDIT_DEADLINE);
    assert!(lines[0].starts_with("service1 | printed after the edit"), "{lines:?}");
    stand.wait_synced("the edit in the container", EDIT_DEADLINE);

    // A container devd re-creates is followed too: its first binary comes from the image
    // (no marker), then the edited one is synced in and prints it again, under the new
    // container's id (the service has had two instances now).
    let (old_id, _) = stand.container_identity();
    assert!(docker(&["rm", "-f", &stand.container()]).status.success());
    let lines = logs.wait_lines(&stand, "printed after the edit", 2, EDIT_DEADLINE);
    let (new_id, _) = stand.container_identity();
    assert_ne!(new_id, old_id);
    let short: String = new_id.chars().take(12).collect();
    assert!(lines[1].starts_with(&format!("service1/{short} ")), "the new container's line names it: {lines:?}");
    drop(logs);

    // devd's own lines said where the service serves: the first synced line names the
    // address the container got published on.
    let log = std::fs::read_to_string(stand.path("devd.log")).expect("devd.log");
    let first_synced = log.lines().find(|l| l.contains("service1: synced, 1/1 healthy")).unwrap_or_else(|| panic!("{log}"));
    assert!(first_address.starts_with("127.0.0.1:"), "published on loopback: {first_address}");
    assert!(first_synced.ends_with(&format!("serving on http://{first_address}")), "{first_synced} names {first_address}");

    // Stopped by a signal, devd says the containers stay and how to remove them.
    let pid = stand.devd.as_ref().expect("devd").id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let child = stand.devd.as_mut().expect("devd");
    let status = poll_until(Duration::from_secs(10), || child.try_wait().expect("wait")).expect("devd stops on SIGTERM");
    assert!(status.success(), "{}", stand.log());
    assert!(stand.log().contains("the stand's containers keep running (`devd down --env"), "{}", stand.log());
    assert!(docker(&["inspect", &new_id]).status.success(), "the container stays");
}

/// The file the service container runs (the shim's child, the entrypoint's last word),
/// copied out of the container: its sha256.
fn running_binary_sha256(stand: &Stand) -> String {
    let out = docker(&["inspect", "-f", "{{json .Config.Entrypoint}}", &stand.container()]);
    let entrypoint: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("entrypoint ({e}): {}", text(&out)));
    let binary = entrypoint.last().expect("an entrypoint");
    let copy = stand.path("running-binary");
    let out = docker(&["cp", &format!("{}:{binary}", stand.container()), &copy.display().to_string()]);
    assert!(out.status.success(), "docker cp {binary}: {}", text(&out));
    let bytes = std::fs::read(&copy).expect("copied binary");
    let _ = std::fs::remove_file(&copy);
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(&bytes))
}

/// The build that follows event `after`: (replayed, sha256 of its artifact).
fn next_build(stand: &Stand, after: u64) -> (bool, String) {
    wait_event(stand, after, |b| match b {
        EventBody::BuildFinished(finished) => Some((finished.replayed, finished.sha256)),
        _ => None,
    })
}

/// devd's fast path (issue 14): an edit of service1's sources is built by replaying the
/// recorded rustc runs, without cargo, and the container then runs exactly that binary
/// (same bytes) with the edit in it; a dependency change (service1 gains a crate), which
/// the replay must not take, goes through cargo and reaches the running container too.
#[test]
fn fast_path_delivers_the_edited_binary_and_a_dependency_change_goes_through_cargo() {
    require_docker();
    let mut stand = Stand::new("fast", "{ mode = \"in-cluster\", persistence = false }");
    stand.up();
    stand.wait_synced("the first deploy", FIRST_DEADLINE);
    wait_message(&stand, "hello from service1", Duration::from_secs(60));
    let seq = || stand.status()["event_seq"].as_u64().expect("event_seq");

    // 1. A source edit: replayed; the container runs the replay's artifact. The stand
    //    copies share a target dir: when another test's cargo holds its lock, devd
    //    rightly lets cargo build; then a comment is edited in, at most 4 times more.
    let lib_rs = "services/service1/src/lib.rs";
    let mut sha = None;
    for attempt in 0..5 {
        let after = seq();
        let busy_before = stand.log().matches("no rustc replay for this change; cargo builds why=cargo holds").count();
        if attempt == 0 {
            stand.edit(lib_rs, "\"hello from service1\"", "\"hello from the replay\"");
        } else {
            let text = std::fs::read_to_string(stand.path(lib_rs)).expect("lib.rs");
            std::fs::write(stand.path(lib_rs), format!("{text}// edit {attempt}\n")).expect("lib.rs");
        }
        let (replayed, built) = next_build(&stand, after);
        if replayed {
            sha = Some(built);
            break;
        }
        let busy = stand.log().matches("no rustc replay for this change; cargo builds why=cargo holds").count() > busy_before;
        assert!(busy, "a source-only edit should be built by the replay (cargo held no lock); log:\n{}", stand.log());
    }
    let sha = sha.unwrap_or_else(|| panic!("5 edits in a row found cargo's lock held; log:\n{}", stand.log()));
    wait_message(&stand, "hello from the replay", EDIT_DEADLINE);
    let synced = stand.wait_synced("the replayed artifact in the container", EDIT_DEADLINE);
    assert_eq!(synced["artifact"]["sha256"], sha.as_str());
    assert_eq!(running_binary_sha256(&stand), sha, "the container runs other bytes than the replay built");

    // 2. A dependency change: service1 gains a crate (a new path crate of the workspace:
    //    cargo resolves it without the registry), and uses it.
    write_greeting(&stand, "services/greeting");
    let after = seq();
    stand.edit("Cargo.toml", "members = [\"services/kit\", \"services/service1\"]", "members = [\"services/kit\", \"services/service1\", \"services/greeting\"]");
    stand.edit("services/service1/Cargo.toml", "service-kit.workspace = true\n", "service-kit.workspace = true\ngreeting = { path = \"../greeting\" }\n");
    serve_greeting(&stand);
    let message = "hello from the replay, with greeting 0.1";
    wait_message(&stand, message, EDIT_DEADLINE);
    let synced = stand.wait_synced("the artifact with the new dependency", EDIT_DEADLINE);
    let sha = synced["artifact"]["sha256"].as_str().expect("sha").to_owned();
    assert_eq!(running_binary_sha256(&stand), sha);
    let lock = std::fs::read_to_string(stand.path("Cargo.lock")).expect("Cargo.lock");
    let entry = lock.split("\n\n").find(|p| p.contains("name = \"service1\"")).expect("service1 in Cargo.lock");
    assert!(entry.contains("\"greeting\""), "cargo resolved the new dependency: {entry}");
    // The build that took the manifest edit (the first after it, whether the lib.rs
    // edit came in the same batch or the next) went through cargo: the replay cannot
    // add a crate to the compile and the link.
    let (replayed, _) = next_build(&stand, after);
    assert!(!replayed, "the manifest edit was replayed; log:\n{}", stand.log());

    // 3. The next source edit is replayed again (cargo recorded the new link line). An
    //    edit while another test's cargo holds the copies' target dir goes to cargo (the
    //    replay does not wait for its lock): then the one after it is replayed.
    let mut text = "hello from the replay".to_owned();
    let mut resumed = false;
    for k in 0..4 {
        let after = seq();
        let next = format!("hello again {k}");
        stand.edit("services/service1/src/lib.rs", &format!("\"{text}\""), &format!("\"{next}\""));
        text = next;
        let (replayed, sha) = next_build(&stand, after);
        wait_message(&stand, &format!("{text}, with greeting 0.1"), EDIT_DEADLINE);
        stand.wait_synced("the edit after cargo's build", EDIT_DEADLINE);
        assert_eq!(running_binary_sha256(&stand), sha);
        if replayed {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "after cargo's build the replay never resumed (4 edits); log:\n{}", stand.log());

    // 4. The dependency bumped (its version and its code): through cargo again, and the
    //    container runs the binary with the new version of it.
    let after = seq();
    stand.edit("services/greeting/Cargo.toml", "version = \"0.1.0\"", "version = \"0.2.0\"");
    stand.edit("services/greeting/src/lib.rs", "with greeting 0.1", "with greeting 0.2");
    let (replayed, _) = next_build(&stand, after);
    assert!(!replayed, "the version bump was replayed; log:\n{}", stand.log());
    wait_message(&stand, &format!("{text}, with greeting 0.2"), EDIT_DEADLINE);
    let synced = stand.wait_synced("the artifact with the bumped dependency", EDIT_DEADLINE);
    assert_eq!(running_binary_sha256(&stand), synced["artifact"]["sha256"].as_str().expect("sha"));
    let lock = std::fs::read_to_string(stand.path("Cargo.lock")).expect("Cargo.lock");
    assert!(lock.contains("name = \"greeting\"\nversion = \"0.2.0\""), "the lock has the bumped version");
}

/// The artifact a sync delivered: the shared libraries it needs (`[]` when it is linked
/// statically), as the status API shows them.
fn synced_libs(synced: &Value) -> Vec<(String, String)> {
    synced["artifact"]["libs"]
        .as_array()
        .map(|libs| {
            libs.iter()
                .map(|l| (l["name"].as_str().unwrap_or_default().to_owned(), l["sha256"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// devd's dynamic layout (issue 14, devd/src/replay/dylib.rs): once a replay has
/// linked service1 statically, the next one links it against a shared library of its
/// dependencies, which reaches the container before the binary; the container runs
/// that very binary with the edit in it. A dependency outside the workspace bumped
/// (through cargo) makes a new library, which reaches the container too: the next
/// dynamic binary serves the new version of it.
#[test]
fn a_binary_linked_against_its_dependencies_library_serves_and_a_bumped_dependency_reaches_it() {
    require_docker();
    let mut stand = Stand::new("dylib", "{ mode = \"in-cluster\", persistence = false }");
    // A dependency that is not a workspace member: compiled like a registry crate, so
    // it goes into the dependencies' library.
    write_greeting(&stand, "vendor/greeting");
    stand.edit("Cargo.toml", "[workspace]\n", "[workspace]\nexclude = [\"vendor\"]\n");
    stand.edit("services/service1/Cargo.toml", "service-kit.workspace = true\n", "service-kit.workspace = true\ngreeting = { path = \"../../vendor/greeting\" }\n");
    serve_greeting(&stand);
    stand.up();
    stand.wait_synced("the first deploy", FIRST_DEADLINE);
    wait_message(&stand, "hello from service1, with greeting 0.1", Duration::from_secs(60));
    // Edits until one is linked against the library.
    let edit_until_dynamic = |stand: &Stand, n: &mut u32, greeting: &str| {
        let edit = |n: u32| {
            let before = if n == 1 { "hello from service1".to_owned() } else { format!("hello {}", n - 1) };
            stand.edit("services/service1/src/lib.rs", &format!("\"{before}\""), &format!("\"hello {n}\""));
        };
        edit_until_dynamic(stand, n, &edit, &|n| format!("hello {n}, {greeting}"))
    };
    let mut n = 0;
    let (_, first_libs) = edit_until_dynamic(&stand, &mut n, "with greeting 0.1");
    assert_eq!(first_libs.len(), 2, "the dependencies' library and libstd: {first_libs:?}");
    assert!(first_libs.iter().any(|(name, _)| name.starts_with("lib__stand_deps-")), "{first_libs:?}");
    assert!(first_libs.iter().any(|(name, _)| name.starts_with("libstd-")), "{first_libs:?}");
    for (name, sha) in &first_libs {
        let path = format!("/app/.stand-libs/{sha}/{name}");
        let copy = stand.path("lib-copy");
        let out = docker(&["cp", &format!("{}:{path}", stand.container()), &copy.display().to_string()]);
        assert!(out.status.success(), "the container has {path}: {}", text(&out));
        let _ = std::fs::remove_file(&copy);
    }

    // The dependency bumped, its version and its code: cargo builds (a manifest
    // changed), then the replays make and deliver a new library with the new code.
    let after = seq_of(&stand);
    stand.edit("vendor/greeting/src/lib.rs", "with greeting 0.1", "with greeting 0.2");
    stand.edit("vendor/greeting/Cargo.toml", "version = \"0.1.0\"", "version = \"0.2.0\"");
    stand.edit("services/service1/Cargo.toml", "path = \"../../vendor/greeting\" }", "path = \"../../vendor/greeting\", version = \"0.2\" }");
    let (replayed, _) = next_build(&stand, after);
    assert!(!replayed, "the manifest edit was replayed; log:\n{}", stand.log());
    wait_message(&stand, &format!("hello {n}, with greeting 0.2"), EDIT_DEADLINE);
    let (_, bumped_libs) = edit_until_dynamic(&stand, &mut n, "with greeting 0.2");
    let deps = |libs: &[(String, String)]| libs.iter().find(|(name, _)| name.starts_with("lib__stand_deps-")).cloned();
    assert_ne!(deps(&bumped_libs), deps(&first_libs), "the bumped dependency is in a new library");
}

/// Edits made by `edit(n)` (n counting on from `*n`) until the stand serves one
/// linked against the dependencies' library (devd/src/replay/dylib.rs), each checked
/// to serve `message(n)` from the bytes the build made: the first replay links
/// statically (and learns the dependencies) while the library builds in the
/// background, the next one after it dynamically. Returns its (sha256, libraries).
fn edit_until_dynamic(stand: &Stand, n: &mut u32, edit: &dyn Fn(u32), message: &dyn Fn(u32) -> String) -> (String, Vec<(String, String)>) {
    // cargo may take some of them: its own rewrite of Cargo.lock after a bump is a
    // change the replay leaves to it, and so is an edit while another test's cargo
    // holds the copies' target dir (the replay does not wait for its lock).
    for _ in 0..EDITS_UNTIL_DYNAMIC {
        let ended_before = library_builds_ended(stand);
        *n += 1;
        let after = seq_of(stand);
        edit(*n);
        let (replayed, sha) = next_build(stand, after);
        wait_message(stand, &message(*n), EDIT_DEADLINE);
        let synced = stand.wait_synced("the replayed artifact", EDIT_DEADLINE);
        assert_eq!(synced["artifact"]["sha256"], sha.as_str());
        assert_eq!(running_binary_sha256(stand), sha, "the container runs other bytes than the replay built");
        let libs = synced_libs(&synced);
        if !libs.is_empty() {
            return (sha, libs);
        }
        // A static replay starts the library's build (or finds it building): the
        // next edit finds the library once that build has ended (an edit before
        // that is linked statically again; a library a cargo build overtook is
        // not kept, and the next static replay builds it anew).
        if replayed && poll_until(LIBRARY_DEADLINE, || (library_builds_ended(stand) > ended_before).then_some(())).is_none() {
            panic!("no library build ended within {LIBRARY_DEADLINE:?} of a static replay; log:\n{}", stand.log());
        }
        let log = std::fs::read_to_string(stand.path("devd.log")).unwrap_or_default();
        assert!(!log.contains(LIBRARY_FAILED), "the dependencies' library did not build; log:\n{}", stand.log());
    }
    panic!("{EDITS_UNTIL_DYNAMIC} edits and none linked against the dependencies' library; log:\n{}", stand.log());
}

/// How many edits the dylib test makes before one must be linked dynamically.
const EDITS_UNTIL_DYNAMIC: usize = 8;

/// How long the dylib test gives devd to build the dependencies' library (~1.1 s
/// alone, more beside the other tests).
const LIBRARY_DEADLINE: Duration = Duration::from_secs(60);

/// What devd logs when the dependencies' library failed to build.
const LIBRARY_FAILED: &str = "the dependencies' shared library did not build";

/// How many builds of the dependencies' library have ended, by devd's log (built, kept
/// or not, or failed).
fn library_builds_ended(stand: &Stand) -> usize {
    let log = std::fs::read_to_string(stand.path("devd.log")).unwrap_or_default();
    log.matches("the dependencies' shared library is built").count() + log.matches(LIBRARY_FAILED).count()
}

fn seq_of(stand: &Stand) -> u64 {
    stand.status()["event_seq"].as_u64().expect("event_seq")
}

/// A crate `greeting` 0.1 at `dir` of the stand, whose `suffix()` says "with greeting 0.1".
fn write_greeting(stand: &Stand, dir: &str) {
    std::fs::create_dir_all(stand.path(&format!("{dir}/src"))).expect("greeting dir");
    std::fs::write(
        stand.path(&format!("{dir}/Cargo.toml")),
        "[package]\nname = \"greeting\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\npath = \"src/lib.rs\"\n",
    )
    .expect("greeting manifest");
    std::fs::write(stand.path(&format!("{dir}/src/lib.rs")), "pub fn suffix() -> &'static str {\n    \"with greeting 0.1\"\n}\n").expect("greeting lib");
}

/// service1 serves its message with greeting's suffix (service1 must depend on it).
fn serve_greeting(stand: &Stand) {
    stand.edit(
        "services/service1/src/lib.rs",
        "message: MESSAGE",
        "message: Box::leak(format!(\"{MESSAGE}, {}\", greeting::suffix()).into_boxed_str())",
    );
}
