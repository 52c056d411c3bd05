//! `devd up` as a real process on a temp copy of the fixture workspace: real files,
//! real notify, real cargo, real HTTP.

mod fixtures;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fixtures::{poll_until, workspace, Fixture};
use serde_json::Value;

const DEVD: &str = env!("CARGO_BIN_EXE_devd");
/// Builds share two cores with the rest of the suite: deadlines are generous.
const BUILD_DEADLINE: Duration = Duration::from_secs(180);

const STAND_TOML: &str = r#"
[stand]
name = "fx"
namespace = "fx"
chart = "chart"
release = "fx"
default_env = "local"

[services.svc1]
package = "svc1"
path = "services/svc1"
port = 6001
image = "fx/svc1"

[services.svc2]
package = "svc2"
path = "services/svc2"
port = 6002
image = "fx/svc2"

[env.local]
services = ["svc1", "svc2"]
target = "kubernetes"
values = ["chart/values-local.yaml"]
live_sync = true
"#;

/// The fixture workspace plus a stand.toml and a chart dir for it.
fn stand() -> Fixture {
    let fx = workspace();
    fx.write("stand.toml", STAND_TOML);
    fx.write("chart/values-local.yaml", "services: {}\n");
    fx
}

struct Devd {
    child: Child,
    url: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Devd {
    fn up(fx: &Fixture) -> Devd {
        let log = std::fs::File::create(fx.path("devd.log")).unwrap();
        let child = Command::new(DEVD)
            .args(["up", "--env", "local", "--port", "0"])
            .current_dir(&fx.root)
            // Each fixture builds into its own target dir (same package names elsewhere).
            .env("CARGO_TARGET_DIR", fx.path("target"))
            .env("RUST_LOG", "devd=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start devd");
        let info: Value = poll_until(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(fx.path(".stand/devd.json")).ok()?;
            serde_json::from_str(&text).ok()
        })
        .unwrap_or_else(|| panic!("devd did not come up:\n{}", log_of(fx)));
        let token = std::fs::read_to_string(fx.path(".stand/token")).unwrap();
        Devd { child, url: info["url"].as_str().unwrap().to_owned(), token, http: reqwest::blocking::Client::new() }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.url)).send().expect("GET");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn status(&self) -> Value {
        self.get("/api/v1/status").1
    }

    /// The sequence number of the newest event so far.
    fn status_seq(&self) -> u64 {
        self.status()["event_seq"].as_u64().expect("event_seq")
    }

    fn service(&self, name: &str) -> Value {
        self.status()["services"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap()
    }

    /// Polls until `check` holds for the status, or panics with the log.
    fn wait(&self, fx: &Fixture, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        poll_until(BUILD_DEADLINE, || Some(self.status()).filter(|s| check(s)))
            .unwrap_or_else(|| panic!("timed out waiting for {what}; status: {:#}\n{}", self.status(), log_of(fx)))
    }

    /// Every event so far (the stream replays history; read until `until` holds).
    fn events_until(&self, after: u64, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        use std::io::{BufRead, BufReader};
        let response = reqwest::blocking::Client::builder()
            .timeout(BUILD_DEADLINE)
            .build()
            .unwrap()
            .get(format!("{}/api/v1/events", self.url))
            .header("Last-Event-ID", after.to_string())
            .send()
            .expect("open SSE");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let mut events = Vec::new();
        for line in BufReader::new(response).lines() {
            let line = line.expect("SSE line");
            if let Some(data) = line.strip_prefix("data: ") {
                events.push(serde_json::from_str::<Value>(data).unwrap());
                if until(&events) {
                    break;
                }
            }
        }
        events
    }
}

impl Drop for Devd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_of(fx: &Fixture) -> String {
    std::fs::read_to_string(fx.path("devd.log")).unwrap_or_default()
}

fn build_count(status: &Value, name: &str) -> u64 {
    status["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["build"]["count"]
        .as_u64()
        .unwrap()
}

fn sha(status: &Value, name: &str) -> String {
    let service = status["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap();
    service["artifact"]["sha256"].as_str().unwrap_or_default().to_owned()
}

fn started_up(fx: &Fixture) -> (Devd, Value) {
    let devd = Devd::up(fx);
    let status = devd.wait(fx, "the first builds", |s| build_count(s, "svc1") == 1 && build_count(s, "svc2") == 1);
    assert_eq!(status["services"][0]["build"]["state"], "ok", "{status:#}");
    (devd, status)
}

/// (service, build id) of every build_started among `events`.
fn builds_after(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["kind"] == "build_started")
        .map(|e| (e["service"].as_str().unwrap().to_owned(), e["detail"]["build"].as_u64().unwrap()))
        .collect()
}

fn edit(fx: &Fixture, rel: &str, from: &str, to: &str) {
    let path = fx.path(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} lacks {from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn editing_a_service_rebuilds_only_that_service_with_a_new_hash() {
    let fx = stand();
    let (devd, before) = started_up(&fx);
    let seq = devd.status_seq();
    edit(&fx, "services/svc1/src/main.rs", "\"svc1 {}\"", "\"svc1 edited {}\"");
    let after = devd.wait(&fx, "svc1's second build", |s| build_count(s, "svc1") >= 2);
    assert_ne!(sha(&after, "svc1"), sha(&before, "svc1"), "the edit changes the binary");
    assert_eq!(sha(&after, "svc2"), sha(&before, "svc2"));
    let events = devd.events_until(seq, |ev| ev.iter().any(|e| e["kind"] == "build_finished"));
    let builds = builds_after(&events);
    assert_eq!(builds.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["svc1"], "{events:#?}");
    let svc1 = devd.service("svc1");
    assert!(svc1["last_edit_to_artifact_ms"].as_u64().is_some());
    assert_eq!(svc1["artifact"]["cause"], serde_json::json!(["services/svc1/src/main.rs"]));
    // The artifact on disk is the one the API names.
    let path = svc1["artifact"]["path"].as_str().unwrap();
    assert!(Path::new(path).is_file(), "{path}");
    assert_eq!(build_count(&devd.status(), "svc2"), 1);

    // The first build of svc1 alone was cargo's (the start-up build recorded svc1 and
    // svc2 together, another feature selection); the next edit replays rustc.
    let seq = devd.status_seq();
    edit(&fx, "services/svc1/src/main.rs", "\"svc1 edited {}\"", "\"svc1 edited twice {}\"");
    let events = devd.events_until(seq, |ev| ev.iter().any(|e| e["kind"] == "build_finished"));
    let finished = events.iter().find(|e| e["kind"] == "build_finished").unwrap();
    assert_eq!(finished["detail"]["replayed"], true, "{finished:#}");
    assert_eq!(build_count(&devd.status(), "svc1"), 3);
}

#[test]
fn editing_the_shared_crate_rebuilds_both_in_one_cargo_invocation() {
    let fx = stand();
    let (devd, before) = started_up(&fx);
    let seq = devd.status_seq();
    edit(&fx, "crates/shared/src/lib.rs", "+ 2", "+ 3");
    let after = devd.wait(&fx, "both rebuilt", |s| build_count(s, "svc1") >= 2 && build_count(s, "svc2") >= 2);
    assert_ne!(sha(&after, "svc1"), sha(&before, "svc1"));
    assert_ne!(sha(&after, "svc2"), sha(&before, "svc2"));
    let events = devd.events_until(seq, |ev| ev.iter().filter(|e| e["kind"] == "build_finished").count() == 2);
    let builds = builds_after(&events);
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert_eq!(builds[0].1, builds[1].1, "one cargo invocation builds both: {builds:?}");
    // svc2 has a build script: that is cargo's to run, so cargo builds.
    assert!(events.iter().filter(|e| e["kind"] == "build_finished").all(|e| e["detail"]["replayed"] == false));
}

#[test]
fn ignored_and_unrelated_files_build_nothing_and_a_burst_is_one_build() {
    let fx = stand();
    let (devd, _) = started_up(&fx);
    let seq = devd.status_seq();
    // Ignored (.gitignore: *.log, scratch/, /target), devd's own state, and files of no package.
    fx.write("services/svc1/debug.log", "x");
    fx.write("scratch/notes.rs", "x");
    fx.write("target/debug/whatever", "x");
    fx.write("docs/notes.md", "unrelated");
    fx.write("chart/values-local.yaml", "services: {}\n# edited\n");
    // 500 files of svc1 at once: one build.
    for i in 0..500 {
        fx.write(&format!("services/svc1/assets/f{i:03}.txt"), &i.to_string());
    }
    devd.wait(&fx, "svc1 rebuilt for the burst", |s| build_count(s, "svc1") >= 2);
    // A marker after everything: svc2's build ends the observation.
    edit(&fx, "services/svc2/src/main.rs", "\"svc2 {}\"", "\"svc2 marker {}\"");
    devd.wait(&fx, "svc2 rebuilt for the marker", |s| build_count(s, "svc2") >= 2);
    let events = devd.events_until(seq, |ev| {
        ev.iter().any(|e| e["kind"] == "build_finished" && e["service"] == "svc2")
    });
    let builds = builds_after(&events);
    let diagnosis: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "build_started")
        .map(|e| {
            let cause = e["detail"]["cause"].as_array().unwrap();
            format!("{} at {} ({} paths, first {:?})", e["service"], e["at"], cause.len(), cause.first())
        })
        .collect();
    assert_eq!(builds.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["svc1", "svc2"], "{diagnosis:#?}");
    let cause: Vec<String> = events
        .iter()
        .find(|e| e["kind"] == "build_started" && e["service"] == "svc1")
        .map(|e| e["detail"]["cause"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap();
    assert!(cause.iter().filter(|c| c.starts_with("services/svc1/assets/")).count() == 500, "{}", cause.len());
    for ignored in ["services/svc1/debug.log", "scratch/notes.rs", "target/debug/whatever"] {
        assert!(!cause.iter().any(|c| c == ignored), "{ignored} is ignored but caused a build");
    }
    assert_eq!(build_count(&devd.status(), "svc1"), 2);
}

#[test]
fn a_syntax_error_keeps_the_previous_artifact_and_fixing_it_recovers() {
    let fx = stand();
    let (devd, before) = started_up(&fx);
    let good = sha(&before, "svc1");
    assert_eq!(devd.get("/api/v1/services/svc1/ready").0, 200);
    edit(&fx, "services/svc1/src/main.rs", "fn main() {", "fn main() { let x = ;");
    let failed = devd.wait(&fx, "the failed build", |s| build_count(s, "svc1") >= 2);
    let svc1 = failed["services"].as_array().unwrap().iter().find(|s| s["name"] == "svc1").unwrap().clone();
    assert_eq!(svc1["build"]["state"], "failed");
    let error = svc1["build"]["error"].as_str().unwrap();
    assert!(error.contains("error") && error.contains("main.rs"), "{error}");
    assert_eq!(sha(&failed, "svc1"), good, "the previous artifact stays current");
    assert!(Path::new(svc1["artifact"]["path"].as_str().unwrap()).is_file());
    let (code, body) = devd.get("/api/v1/services/svc1/ready");
    assert_eq!((code, body["reason"].as_str()), (503, Some("the last build failed")));
    // `devd status` shows the compiler error.
    let table = Command::new(DEVD).arg("status").current_dir(&fx.root).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("failed") && table.contains("svc1 build failed:"), "{table}");

    edit(&fx, "services/svc1/src/main.rs", "let x = ;", "println!(\"fixed\");");
    let fixed = devd.wait(&fx, "the fixed build", |s| build_count(s, "svc1") >= 3);
    assert_eq!(devd.service("svc1")["build"]["state"], "ok");
    assert!(devd.service("svc1")["build"]["error"].is_null());
    assert_ne!(sha(&fixed, "svc1"), good);
    assert_eq!(devd.get("/api/v1/services/svc1/ready").0, 200);
}

#[test]
fn an_invalid_stand_toml_keeps_the_last_good_plan_running() {
    let fx = stand();
    let (mut devd, _) = started_up(&fx);
    let broken = STAND_TOML.replace("port = 6002", "port = \"six\"");
    fx.write("stand.toml", &broken);
    let status = devd.wait(&fx, "the config error", |s| s["config_error"].is_string());
    let error = status["config_error"].as_str().unwrap();
    assert!(error.contains("stand.toml:") && error.contains("port"), "{error}");
    assert!(devd.child.try_wait().unwrap().is_none(), "devd keeps running");
    // Still building on the last good plan.
    edit(&fx, "services/svc1/src/main.rs", "\"svc1 {}\"", "\"svc1 still {}\"");
    devd.wait(&fx, "a build on the old plan", |s| build_count(s, "svc1") >= 2);
    fx.write("stand.toml", STAND_TOML);
    let status = devd.wait(&fx, "the error to clear", |s| s["config_error"].is_null());
    assert_eq!(status["services"].as_array().unwrap().len(), 2);
}

#[test]
fn api_guards_actions_and_streams_events_in_order() {
    let fx = stand();
    let (devd, _) = started_up(&fx);
    let rebuild = format!("{}/api/v1/services/svc2/rebuild", devd.url);
    let http = &devd.http;
    // No token, a wrong token: 401, nothing happens.
    assert_eq!(http.post(&rebuild).send().unwrap().status().as_u16(), 401);
    assert_eq!(http.post(&rebuild).bearer_auth("nope").send().unwrap().status().as_u16(), 401);
    // A foreign Host header: 403, reads included (DNS rebinding).
    let foreign = http.get(format!("{}/api/v1/status", devd.url)).header("host", "evil.example:80").send().unwrap();
    assert_eq!(foreign.status().as_u16(), 403);
    let foreign = http.post(&rebuild).bearer_auth(&devd.token).header("host", "evil.example").send().unwrap();
    assert_eq!(foreign.status().as_u16(), 403);
    assert_eq!(build_count(&devd.status(), "svc2"), 1);
    // The unknown service: 404 naming the known ones.
    let (code, body) = devd.get("/api/v1/services/nope/ready");
    assert_eq!(code, 404);
    assert!(body["error"]["message"].as_str().unwrap().contains("svc1, svc2"));

    let seq = devd.status_seq();
    let accepted = http.post(&rebuild).bearer_auth(&devd.token).send().unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let events = devd.events_until(seq, |ev| ev.iter().any(|e| e["kind"] == "build_finished"));
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["build_started", "build_finished"], "{events:#?}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == seq + 1, "{seqs:?}");
    // Replay from the start: the whole history, in order, with no gaps.
    let all = devd.events_until(0, |ev| ev.last().is_some_and(|e| e["seq"] == *seqs.last().unwrap()));
    let all_seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(all_seqs, (1..=*seqs.last().unwrap()).collect::<Vec<_>>());
}

#[test]
fn status_command_prints_json_and_table_and_fails_clearly_without_a_daemon() {
    let fx = stand();
    let none = Command::new(DEVD).arg("status").current_dir(&fx.root).output().unwrap();
    assert_eq!(none.status.code(), Some(1));
    let message = String::from_utf8_lossy(&none.stderr);
    assert!(message.contains("no devd is running") && message.contains("devd up"), "{message}");

    let (devd, _) = started_up(&fx);
    let out = Command::new(DEVD).args(["status", "--json"]).current_dir(&fx.root).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, devd.status().as_object().map(|_| json.clone()).unwrap());
    assert_eq!(json["env"], "local");
    assert_eq!(json["target"], "kubernetes");
    for service in json["services"].as_array().unwrap() {
        assert_eq!(service["build"]["state"], "ok");
        assert!(service["build"]["error"].is_null());
        assert_eq!(service["artifact"]["sha256"].as_str().unwrap().len(), 64);
        assert!(service["artifact"]["built_at"].is_string());
        assert_eq!(service["instances"], serde_json::json!([]));
        assert!(service.as_object().unwrap().contains_key("last_edit_to_serving_ms"));
    }
    let table = Command::new(DEVD).arg("status").current_dir(&fx.root).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("SERVICE") && table.contains("svc1") && table.contains("svc2"), "{table}");
    // `devd rebuild` is the token-carrying client of the rebuild action.
    let rebuild = Command::new(DEVD).args(["rebuild", "svc1"]).current_dir(&fx.root).output().unwrap();
    assert!(rebuild.status.success(), "{}", String::from_utf8_lossy(&rebuild.stderr));
    devd.wait(&fx, "the requested rebuild", |s| build_count(s, "svc1") >= 2);
    let unknown = Command::new(DEVD).args(["rebuild", "nope"]).current_dir(&fx.root).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no service \"nope\""), "{}", String::from_utf8_lossy(&unknown.stderr));
}


#[test]
fn status_watch_redraws_on_events() {
    use std::io::Read as _;
    let fx = stand();
    let (devd, _) = started_up(&fx);
    let mut watch = Command::new(DEVD)
        .args(["status", "--watch"])
        .current_dir(&fx.root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut read_until = |tables: usize, seen: &mut String| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.matches("SERVICE").count() < tables {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&chunk),
                Err(_) => return false,
            }
        }
        true
    };
    assert!(read_until(1, &mut seen), "no first table: {seen}");
    let token = devd.token.clone();
    devd.http.post(format!("{}/api/v1/services/svc2/rebuild", devd.url)).bearer_auth(&token).send().unwrap();
    // build_started and build_finished: two redraws after the first table.
    let redrawn = read_until(3, &mut seen);
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(redrawn, "devd status --watch did not redraw on the build events: {seen}");
    assert!(seen.contains("\x1b[2J"), "redraws clear the screen");
}

#[test]
fn build_command_builds_the_named_services_once() {
    let fx = stand();
    let out = Command::new(DEVD)
        .args(["build", "svc1", "svc2", "--json"])
        .current_dir(&fx.root)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let artifacts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(artifacts.iter().map(|a| a["package"].as_str().unwrap()).collect::<Vec<_>>(), ["svc1", "svc2"]);
    for artifact in &artifacts {
        let bytes = std::fs::read(artifact["path"].as_str().unwrap()).unwrap();
        assert_eq!(bytes.len() as u64, artifact["size"].as_u64().unwrap());
        let run = Command::new(artifact["path"].as_str().unwrap()).output().unwrap();
        assert!(String::from_utf8_lossy(&run.stdout).starts_with(artifact["package"].as_str().unwrap()));
    }
    let unknown = Command::new(DEVD).args(["build", "nope"]).current_dir(&fx.root).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("valid: svc1, svc2"));
    // A compile error: exit 1 with the compiler's message.
    edit(&fx, "services/svc1/src/main.rs", "fn main() {", "fn main() { let = ;");
    let failed = Command::new(DEVD)
        .args(["build", "svc1"])
        .current_dir(&fx.root)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("main.rs"));
}

/// What devd builds is what is in its stand's tree, whatever else builds into the same
/// cargo target dir: here a copy of the stand with an edited svc1 builds there first
/// (as the docker tests do with temp copies of this repository), then the stand's own
/// devd builds, and then devd runs on the stand.
#[test]
fn a_copy_building_into_the_same_target_dir_never_leaks_into_the_stands_binaries() {
    let original = stand();
    let copy = stand();
    let shared = tempfile::tempdir().unwrap();
    let build = |fx: &Fixture| -> Value {
        let out = Command::new(DEVD)
            .args(["build", "svc1", "--json"])
            .current_dir(&fx.root)
            .env("CARGO_TARGET_DIR", shared.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap().remove(0)
    };
    let output_of = |path: &str| String::from_utf8_lossy(&Command::new(path).output().unwrap().stdout).trim().to_owned();

    edit(&copy, "services/svc1/src/main.rs", "\"svc1 {}\"", "\"svc1 from the copy {}\"");
    let copied = build(&copy);
    assert!(output_of(copied["path"].as_str().unwrap()).starts_with("svc1 from the copy"), "the copy built its edit");
    let own = build(&original);
    let served = output_of(own["path"].as_str().unwrap());
    assert!(served.starts_with("svc1 ") && !served.contains("copy"), "devd built the copy's svc1 for the stand: {served:?}");
    assert_ne!(own["sha256"], copied["sha256"]);

    // The daemon on the stand, after the copy built once more: the stand's binary.
    edit(&copy, "services/svc1/src/main.rs", "\"svc1 from the copy {}\"", "\"svc1 from the copy again {}\"");
    build(&copy);
    let log = std::fs::File::create(original.path("devd.log")).unwrap();
    let child = Command::new(DEVD)
        .args(["up", "--env", "local", "--port", "0"])
        .current_dir(&original.root)
        .env("CARGO_TARGET_DIR", shared.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let info: Value = poll_until(Duration::from_secs(30), || {
        serde_json::from_str(&std::fs::read_to_string(original.path(".stand/devd.json")).ok()?).ok()
    })
    .unwrap_or_else(|| panic!("devd did not come up:\n{}", log_of(&original)));
    let token = std::fs::read_to_string(original.path(".stand/token")).unwrap();
    let devd = Devd { child, url: info["url"].as_str().unwrap().to_owned(), token, http: reqwest::blocking::Client::new() };
    let status = devd.wait(&original, "the first builds", |s| build_count(s, "svc1") == 1);
    assert_eq!(sha(&status, "svc1"), own["sha256"].as_str().unwrap(), "the daemon's build is the stand's");
    let path = devd.service("svc1")["artifact"]["path"].as_str().unwrap().to_owned();
    assert_eq!(output_of(&path), served);

/// SIGTERM (and Ctrl-C) end `devd up` promptly even while `devd status --watch`
/// clients hold the event stream open: the streams end, the server stops, the state
/// file is removed.
#[test]
fn sigterm_and_sigint_end_open_event_streams_and_exit_within_two_seconds() {
    let fx = stand();
    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        stops_promptly_with_open_streams(&fx, signal);
    }
}

fn stops_promptly_with_open_streams(fx: &Fixture, signal: nix::sys::signal::Signal) {
    use std::io::{Read as _, Write as _};
    const CLIENTS: usize = 50;
    let (mut devd, _) = started_up(fx);
    let addr = devd.url.trim_start_matches("http://").to_owned();
    let mut streams = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(stream, "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        // Read until the first event of the replayed history: the stream is open.
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\ndata:") {
            let n = stream.read(&mut buf).expect("SSE bytes");
            assert!(n > 0, "the stream closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
        streams.push(stream);
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(devd.child.id()).unwrap());
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(pid, signal).unwrap();
    let exited = poll_until(Duration::from_secs(10), || devd.child.try_wait().unwrap());
    let took = sent.elapsed();
    eprintln!("devd exited {took:?} after {signal} with {CLIENTS} open event streams");
    let status = exited.unwrap_or_else(|| panic!("devd still runs 10 s after {signal} with {CLIENTS} SSE clients:\n{}", log_of(fx)));
    assert!(status.success(), "{status:?}\n{}", log_of(fx));
    assert!(took < Duration::from_secs(2), "devd took {took:?} to exit after {signal}\n{}", log_of(fx));
    // Every stream was ended by the server (EOF), not left hanging.
    for mut stream in streams {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("the server closed the stream");
    }
    assert!(!fx.path(".stand/devd.json").exists(), "the state file is removed on shutdown");
}
