//! `devd up` as a real process on a temp copy of the fixture workspace: real files,
//! real notify, real cargo, real HTTP.
#![allow(clippy::unwrap_used)] // test code: a panic here is the failure report

mod fixtures;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use devd::status::{Event, EventBody};
use fixtures::{poll_until, workspace, Fixture};
use serde_json::Value;

const DEVD: &str = env!("CARGO_BIN_EXE_devd");
/// Builds share two cores with the rest of the suite: deadlines are generous.
const BUILD_DEADLINE: Duration = Duration::from_secs(180);

const STAND_TOML: &str = r#"
[stand]
name = "fx"
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
            // kubernetes with no cluster builds only: these tests need no engine.
            .args(["up", "--env", "local", "--port", "0", "--target", "kubernetes"])
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

    /// Every event after `after` (the stream replays history; read until `until` holds).
    /// Each frame is checked against the wire contract: its `id:` is the event's `seq`,
    /// its `event:` the kind, and its `data:` reads into the typed event and writes back
    /// byte for byte (no field lost or moved; the bytes themselves are pinned by the
    /// catalogue in devd/src/status/event.rs).
    fn events_until(&self, after: u64, until: impl Fn(&[Event]) -> bool) -> Vec<Event> {
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
        let mut frame: Vec<String> = Vec::new();
        for line in BufReader::new(response).lines() {
            let line = line.expect("SSE line");
            if !line.is_empty() {
                frame.push(line);
                continue;
            }
            let field = |name: &str| frame.iter().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            let Some(data) = field("data: ") else {
                frame.clear(); // a keep-alive comment
                continue;
            };
            let event: Event = serde_json::from_str(&data).unwrap_or_else(|e| panic!("not an event ({e}): {data}"));
            assert_eq!(serde_json::to_string(&event).unwrap(), data, "the wire JSON is the typed event's");
            assert_eq!(field("event: ").as_deref(), Some(event.kind()), "{frame:?}");
            assert_eq!(field("id: "), Some(event.seq.to_string()), "{frame:?}");
            frame.clear();
            events.push(event);
            if until(&events) {
                break;
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
fn builds_after(events: &[Event]) -> Vec<(String, u64)> {
    started(events).map(|(e, started)| (e.service.clone().unwrap(), started.build)).collect()
}

/// Every build_started among `events`, with its event.
fn started(events: &[Event]) -> impl Iterator<Item = (&Event, &devd::status::event::BuildStarted)> {
    events.iter().filter_map(|e| if let EventBody::BuildStarted(started) = &e.body { Some((e, started)) } else { None })
}

/// Every build_finished among `events`, with its service.
fn finished(events: &[Event]) -> Vec<(Option<&str>, &devd::status::event::BuildFinished)> {
    events
        .iter()
        .filter_map(|e| if let EventBody::BuildFinished(finished) = &e.body { Some((e.service.as_deref(), finished)) } else { None })
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
    let events = devd.events_until(seq, |ev| !finished(ev).is_empty());
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
    let events = devd.events_until(seq, |ev| !finished(ev).is_empty());
    let (_, build) = finished(&events)[0];
    assert!(build.replayed, "{build:#?}");
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
    let events = devd.events_until(seq, |ev| finished(ev).len() == 2);
    let builds = builds_after(&events);
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert_eq!(builds[0].1, builds[1].1, "one cargo invocation builds both: {builds:?}");
    // svc2 has a build script: that is cargo's to run, so cargo builds.
    assert!(finished(&events).iter().all(|(_, build)| !build.replayed));
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
    let events = devd.events_until(seq, |ev| finished(ev).iter().any(|(service, _)| *service == Some("svc2")));
    let builds = builds_after(&events);
    let diagnosis: Vec<String> = started(&events)
        .map(|(e, started)| {
            let cause = &started.cause;
            format!("{:?} at {} ({} paths, first {:?})", e.service, e.at, cause.len(), cause.first())
        })
        .collect();
    assert_eq!(builds.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["svc1", "svc2"], "{diagnosis:#?}");
    let cause: Vec<String> =
        started(&events).find(|(e, _)| e.service.as_deref() == Some("svc1")).map(|(_, started)| started.cause.clone()).unwrap();
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
    let events = devd.events_until(seq, |ev| !finished(ev).is_empty());
    assert!(
        matches!(
            events.iter().map(|e| (&e.body, e.service.as_deref())).collect::<Vec<_>>()[..],
            [(EventBody::BuildStarted(_), Some("svc2")), (EventBody::BuildFinished(_), Some("svc2"))]
        ),
        "{events:#?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == seq + 1, "{seqs:?}");
    // Replay from the start: the whole history, in order, with no gaps.
    let all = devd.events_until(0, |ev| ev.last().is_some_and(|e| e.seq == *seqs.last().unwrap()));
    let all_seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
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
    // An unknown service is bad input: exit 2, naming the known ones.
    for action in ["rebuild", "restart"] {
        let unknown = Command::new(DEVD).args([action, "nope"]).current_dir(&fx.root).output().unwrap();
        let stderr = String::from_utf8_lossy(&unknown.stderr);
        assert_eq!(unknown.status.code(), Some(2), "devd {action} nope: {stderr}");
        assert!(stderr.contains("no service \"nope\"") && stderr.contains("svc1, svc2"), "{stderr}");
    }
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
    let read_until = |tables: usize, seen: &mut String| {
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
    // No event comes (the first builds are done): the relative times are redrawn anyway.
    assert!(read_until(3, &mut seen), "devd status --watch did not redraw the times every second: {seen}");
    seen.clear();
    let token = devd.token.clone();
    devd.http.post(format!("{}/api/v1/services/svc2/rebuild", devd.url)).bearer_auth(&token).send().unwrap();
    // build_started and build_finished: two redraws after the first table.
    let redrawn = read_until(3, &mut seen);
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(redrawn, "devd status --watch did not redraw on the build events: {seen}");
    assert!(seen.contains("\x1b[2J"), "redraws clear the screen");

    // A reader that is gone (`devd status --watch | head -0`) ends the watch: exit 0.
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let mut gone = Command::new(DEVD)
        .args(["status", "--watch"])
        .current_dir(&fx.root)
        .stdout(Stdio::from(write))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exited = poll_until(Duration::from_secs(10), || gone.try_wait().unwrap());
    if exited.is_none() {
        let _ = gone.kill();
        let _ = gone.wait();
    }
    assert_eq!(exited.and_then(|s| s.code()), Some(0), "devd status --watch kept drawing into a closed pipe");
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

/// Collects a child's stderr from a pipe (not a terminal) as it comes.
fn collect(stream: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

#[test]
fn progress_on_a_pipe_is_plain_lines_per_stage_and_a_line_per_rebuild() {
    let fx = stand();
    let mut child = Command::new(DEVD)
        .args(["up", "--env", "local", "--port", "0", "--target", "kubernetes"])
        .current_dir(&fx.root)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        // devd's own log lines share the pipe: they must be plain too.
        .env("RUST_LOG", "devd=info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start devd");
    let stderr = collect(child.stderr.take().unwrap());
    let text = || stderr.lock().unwrap().clone();
    let has = |needle: &str| poll_until(BUILD_DEADLINE, || text().contains(needle).then_some(())).is_some();
    let first = has("svc1: built in") && has("svc2: built in");
    let edited = first && {
        edit(&fx, "services/svc1/src/main.rs", "\"svc1 {}\"", "\"svc1 edited {}\"");
        has("svc1: rebuilt in")
    };
    let _ = child.kill();
    let _ = child.wait();
    let out = text();
    assert!(first && edited, "no progress lines for the first build and the rebuild:\n{out}");
    assert!(out.contains("building svc1, svc2"), "the first build names its services:\n{out}");
    assert!(out.lines().any(|l| l.contains("building svc1, svc2: ") && l.ends_with(" crates")), "cargo's count of crates:\n{out}");
    assert!(out.contains("svc1: building (services/svc1/src/main.rs changed)"), "{out}");
    assert!(!out.contains('\x1b'), "colour codes on a pipe:\n{out:?}");
    // Plain lines start with the time.
    let line = out.lines().find(|l| l.contains("svc1: built in")).unwrap();
    let clock = line.split(' ').next().unwrap();
    assert!(clock.len() == 8 && clock.chars().filter(|c| *c == ':').count() == 2, "{line}");
}

/// A Kubernetes API server on loopback that answers `/version` like a real one and
/// refuses everything else with a `metav1.Status` 403 (what a user without rights sees).
struct FakeApiServer {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeApiServer {
    fn start() -> FakeApiServer {
        use std::io::{BufRead as _, BufReader, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            // Bounded: the test process ends long before.
            for stream in listener.incoming().take(10_000) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                // Headers up to the blank line (GET requests: no body).
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                seen.lock().unwrap().push(format!("{} {path}", request_line.split(' ').next().unwrap_or("")));
                let (status, body) = if path == "/version" {
                    ("200 OK", serde_json::json!({
                        "major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
                        "gitTreeState": "clean", "buildDate": "2025-05-15T08:19:08Z", "goVersion": "go1.24.2",
                        "compiler": "gc", "platform": "linux/amd64"
                    }))
                } else {
                    ("403 Forbidden", serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("forbidden: User \"fake\" cannot get path \"{path}\""), "reason": "Forbidden", "details": {}, "code": 403
                    }))
                };
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeApiServer { port, requests }
    }
}

/// A kubeconfig whose current context's server is http://127.0.0.1:<port>.
fn kubeconfig(fx: &Fixture, port: u16) -> std::path::PathBuf {
    fx.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: kind-fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: fx\n\
             current-context: kind-fake\nusers:\n- name: fake\n  user:\n    token: not-a-secret\n"
        ),
    )
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `devd up` with no `--target`, in `env`; stderr collected.
fn up_without_target(fx: &Fixture, env: &[(&str, String)]) -> (Child, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut cmd = Command::new(DEVD);
    cmd.args(["up", "--env", "local", "--port", "0"])
        .current_dir(&fx.root)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("DOCKER_HOST")
        .env("RUST_LOG", "devd=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start devd");
    let stderr = collect(child.stderr.take().unwrap());
    (child, stderr)
}

fn daemon_target(fx: &Fixture, log: &std::sync::Mutex<String>) -> String {
    poll_until(Duration::from_secs(60), || {
        let info: Value = serde_json::from_str(&std::fs::read_to_string(fx.path(".stand/devd.json")).ok()?).ok()?;
        let status: Value = reqwest::blocking::get(format!("{}/api/v1/status", info["url"].as_str()?)).ok()?.json().ok()?;
        status["target"].as_str().map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("devd did not come up:\n{}", log.lock().unwrap()))
}

#[test]
fn target_choice_keeps_kubernetes_when_the_cluster_answers() {
    let fx = stand();
    let api = FakeApiServer::start();
    let config = kubeconfig(&fx, api.port);
    // helm would talk to the fake server: `true` stands in for it (STAND_HELM).
    let (mut child, log) = up_without_target(&fx, &[("KUBECONFIG", config.display().to_string()), ("STAND_HELM", "true".into())]);
    let target = daemon_target(&fx, &log);
    let _ = child.kill();
    let _ = child.wait();
    let out = log.lock().unwrap().clone();
    assert_eq!(target, "kubernetes", "{out}");
    assert!(!out.contains("no Kubernetes cluster answers"), "{out}");
    assert!(api.requests.lock().unwrap().iter().any(|r| r == "GET /version"), "the cluster was asked: {:?}", api.requests.lock().unwrap());
}

#[test]
fn target_choice_runs_docker_when_no_cluster_answers_and_says_so() {
    let fx = stand();
    // No image or container may come of this: both services fail to build.
    for svc in ["svc1", "svc2"] {
        edit(&fx, &format!("services/{svc}/src/main.rs"), "fn main() {", "fn main() { let = ;");
    }
    let config = kubeconfig(&fx, closed_port());
    let (mut child, log) = up_without_target(&fx, &[("KUBECONFIG", config.display().to_string())]);
    let target = daemon_target(&fx, &log);
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new(DEVD).args(["down", "--env", "local"]).current_dir(&fx.root).output();
    let out = log.lock().unwrap().clone();
    assert_eq!(target, "docker", "{out}");
    let said: Vec<&str> = out.lines().filter(|l| l.contains("no Kubernetes cluster answers")).collect();
    assert_eq!(said.len(), 1, "one line says why:\n{out}");
    assert!(said[0].contains("docker target") && said[0].contains("--target kubernetes") && said[0].contains("--target docker"), "{out}");
}

/// With no kubeconfig anywhere (a fresh machine), the one line names that reason, not
/// kube's chain of wrapped errors.
#[test]
fn target_choice_without_a_kubeconfig_says_so_briefly() {
    let fx = stand();
    for svc in ["svc1", "svc2"] {
        edit(&fx, &format!("services/{svc}/src/main.rs"), "fn main() {", "fn main() { let = ;");
    }
    let home = fx.path("home");
    std::fs::create_dir_all(&home).unwrap();
    // cargo and rustup keep their homes; only the kubeconfig's default place is empty.
    let real_home = std::env::var("HOME").unwrap_or_default();
    let keep = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| format!("{real_home}/{default}"));
    let env = [
        ("HOME", home.display().to_string()),
        ("KUBECONFIG", String::new()),
        ("CARGO_HOME", keep("CARGO_HOME", ".cargo")),
        ("RUSTUP_HOME", keep("RUSTUP_HOME", ".rustup")),
    ];
    let (mut child, log) = up_without_target(&fx, &env);
    let target = daemon_target(&fx, &log);
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new(DEVD).args(["down", "--env", "local"]).current_dir(&fx.root).output();
    let out = log.lock().unwrap().clone();
    assert_eq!(target, "docker", "{out}");
    let line = out.lines().find(|l| l.contains("no Kubernetes cluster answers")).unwrap_or_else(|| panic!("{out}"));
    let reason = format!("(no kubeconfig at {}/.kube/config and KUBECONFIG is not set)", home.display());
    assert!(line.contains(&reason), "names the reason: {line}");
    assert!(!line.contains("in-cluster") && !line.contains("os error"), "not kube's error chain: {line}");
}

#[test]
fn target_choice_with_neither_says_what_to_install_and_target_still_wins() {
    let fx = stand();
    let config = kubeconfig(&fx, closed_port());
    let env = [("KUBECONFIG", config.display().to_string()), ("DOCKER_HOST", format!("tcp://127.0.0.1:{}", closed_port()))];
    let (mut child, log) = up_without_target(&fx, &env);
    let status = poll_until(Duration::from_secs(60), || child.try_wait().unwrap()).expect("devd up did not give up");
    // The pipe's reader may still be reading the last lines.
    let out = poll_until(Duration::from_secs(10), || Some(log.lock().unwrap().clone()).filter(|t| t.contains("error:")))
        .unwrap_or_else(|| log.lock().unwrap().clone());
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("no cluster answers") && out.contains("no Docker engine answers"), "{out}");
    assert!(out.contains("Install Docker") && out.contains("kubeconfig"), "says what to install: {out}");
    assert!(!fx.path(".stand/devd.json").exists(), "nothing started");

    // `--target kubernetes` wins: devd comes up and builds (`true` stands in for helm).
    let mut cmd = Command::new(DEVD);
    cmd.args(["up", "--env", "local", "--port", "0", "--target", "kubernetes"])
        .current_dir(&fx.root)
        .env("CARGO_TARGET_DIR", fx.path("target"))
        .env("STAND_HELM", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut forced = cmd.spawn().unwrap();
    let log = collect(forced.stderr.take().unwrap());
    let target = daemon_target(&fx, &log);
    let _ = forced.kill();
    let _ = forced.wait();
    assert_eq!(target, "kubernetes");
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
}

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
