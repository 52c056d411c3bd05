//! The scale rows: 20 services sharing one library crate, generated from the real
//! service-kit, each in its own container on the docker target.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{copy_tree, describes, devd_api, poll, repo, service_serving_url, start_devd, Cleanup};

/// The scale rows' workspace in `root`: the real service-kit, a library crate every
/// service shares (`scale-shared`, its `MESSAGE`), and `count` services `svc01`...
/// (binaries `<name>-svcNN`), each with its own container on the docker target and no
/// database. Returns the services' names.
fn make_scale(root: &Path, name: &str, count: usize) -> Result<Vec<String>, String> {
    let repo = repo();
    let io = |e: std::io::Error| e.to_string();
    copy_tree(&repo.join("services/kit"), &root.join("services/kit")).map_err(io)?;
    let services: Vec<String> = (1..=count).map(|i| format!("svc{i:02}")).collect();
    let workspace = std::fs::read_to_string(repo.join("Cargo.toml")).map_err(io)?;
    let start = workspace.find("members = [").ok_or("no members")?;
    let end = start + workspace[start..].find(']').ok_or("no members end")? + 1;
    let members: Vec<String> =
        ["services/kit".to_owned(), "shared".to_owned()].into_iter().chain(services.iter().map(|s| format!("services/{s}"))).collect();
    let workspace = format!("{}members = {members:?}{}", &workspace[..start], &workspace[end..]);
    std::fs::write(root.join("Cargo.toml"), workspace).map_err(io)?;
    std::fs::copy(repo.join("Cargo.lock"), root.join("Cargo.lock")).map_err(io)?;
    let package = |name: &str| format!("[package]\nname = \"{name}\"\nedition.workspace = true\nversion.workspace = true\npublish.workspace = true\n");
    std::fs::create_dir_all(root.join("shared/src")).map_err(io)?;
    std::fs::write(root.join("shared/Cargo.toml"), package("scale-shared")).map_err(io)?;
    set_shared_message(root, "scale start")?;
    let mut toml = format!(
        "[stand]\nname = \"{name}\"\nchart = \"chart\"\nrelease = \"{name}\"\ndefault_env = \"bench\"\n\n"
    );
    for (i, service) in services.iter().enumerate() {
        let dir = root.join("services").join(service);
        std::fs::create_dir_all(dir.join("src")).map_err(io)?;
        let manifest = format!(
            "{}\n[[bin]]\nname = \"{name}-{service}\"\npath = \"src/main.rs\"\n\n[dependencies]\nservice-kit.workspace = true\nscale-shared = {{ path = \"../../shared\" }}\n",
            package(service)
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).map_err(io)?;
        set_own_version(root, service, "own start")?;
        let port = 5101 + i;
        toml.push_str(&format!("[services.{service}]\npackage = \"{service}\"\npath = \"services/{service}\"\nport = {port}\nimage = \"{name}/{service}\"\n\n"));
    }
    toml.push_str(&format!(
        "[env.bench]\nservices = {services:?}\ntarget = \"docker\"\nvalues = [\"chart/values.yaml\"]\nlive_sync = true\ndatabase = {{ mode = \"none\" }}\n"
    ));
    std::fs::write(root.join("stand.toml"), toml).map_err(io)?;
    std::fs::create_dir_all(root.join("chart")).map_err(io)?;
    std::fs::write(root.join("chart/values.yaml"), "services: {}\n").map_err(io)?;
    Ok(services)
}

/// The shared crate's `MESSAGE`, which every scale service serves.
fn set_shared_message(root: &Path, message: &str) -> Result<(), String> {
    let text = format!("//! What every scale service says.\n\npub const MESSAGE: &str = \"{message}\";\n");
    std::fs::write(root.join("shared/src/lib.rs"), text).map_err(|e| e.to_string())
}

/// One scale service's own source: its `main`, with `version` as what it reports.
fn set_own_version(root: &Path, service: &str, version: &str) -> Result<(), String> {
    let main = format!(
        "fn main() -> std::process::ExitCode {{\n    service_kit::server::main(service_kit::ServiceSpec {{\n        info: service_kit::ServiceInfo {{ name: \"{service}\", version: \"{version}\", message: scale_shared::MESSAGE }},\n        default_port: 5001,\n        migrations: &[],\n    }})\n}}\n"
    );
    std::fs::write(root.join("services").join(service).join("src/main.rs"), main).map_err(|e| e.to_string())
}

/// What the scale rows measured: edits of the shared crate until every service serves
/// them, and edits of one service until it does (ms).
pub(crate) struct Scale {
    pub(crate) services: usize,
    pub(crate) shared: Vec<u64>,
    pub(crate) one: Vec<u64>,
    pub(crate) ready_ms: u128,
}

/// The scale rows: devd over [`make_scale`]'s workspace; `n` edits of the shared crate
/// (from the write until all services answer with the new text), then `n` edits of one
/// service's own source (until it answers with it). Between edits the bench waits until
/// every delivery has finished, as in (a).
pub(crate) fn scale(devd: &Path, dir: &Path, name: &str, target_dir: &Path, count: usize, n: usize) -> Result<Scale, String> {
    let root = dir.join("scale");
    let services = make_scale(&root, name, count)?;
    let http = reqwest::blocking::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    let images = services.iter().map(|s| format!("{name}/{s}:dev")).collect();
    let mut cleanup = Cleanup { devd: None, root: root.clone(), images };
    let log = std::env::temp_dir().join(format!("{name}-devd-scale.log"));
    let started = Instant::now();
    cleanup.devd = Some(start_devd(devd, &root, target_dir, &log, None)?);
    let api = devd_api(&root).ok_or("devd did not start on the scale workspace")?;
    let urls = |within: Duration| -> Result<Vec<String>, String> {
        services
            .iter()
            .map(|s| service_serving_url(&http, &api, s, within).ok_or_else(|| format!("{s} never served; see {}", log.display())))
            .collect()
    };
    let serving = urls(Duration::from_secs(1200))?;
    let ready_ms = started.elapsed().as_millis();
    eprintln!("  scale: {count} services serving after {ready_ms} ms");
    let answers = |url: &str, service: &str, field: &str, text: &str| describes(&http, url, service, field).is_some_and(|m| m == text);
    let mut shared = Vec::new();
    for i in 0..n {
        let text = format!("scale s{i}");
        set_shared_message(&root, &text)?;
        let t0 = Instant::now();
        let mut waiting: Vec<usize> = (0..services.len()).collect();
        let end = t0 + Duration::from_secs(300);
        while !waiting.is_empty() {
            if Instant::now() > end {
                return Err(format!("shared edit {i}: {} services never served it; see {}", waiting.len(), log.display()));
            }
            waiting.retain(|&k| !answers(&serving[k], &services[k], "message", &text));
            std::thread::sleep(Duration::from_millis(10));
        }
        shared.push(t0.elapsed().as_millis() as u64);
        eprintln!("  scale shared {i:>2}: {} ms", shared[i]);
        urls(Duration::from_secs(60))?;
    }
    let mut one = Vec::new();
    let (k, service) = (services.len() / 2, &services[services.len() / 2]);
    for i in 0..n {
        let text = format!("own {i}");
        set_own_version(&root, service, &text)?;
        let t0 = Instant::now();
        poll(Duration::from_secs(120), Duration::from_millis(10), || answers(&serving[k], service, "version", &text).then_some(()))
            .ok_or_else(|| format!("edit {i} of {service} never served; see {}", log.display()))?;
        one.push(t0.elapsed().as_millis() as u64);
        eprintln!("  scale {service} {i:>2}: {} ms", one[i]);
        service_serving_url(&http, &api, service, Duration::from_secs(60)).ok_or("the delivery never finished")?;
    }
    drop(cleanup);
    Ok(Scale { services: count, shared, one, ready_ms })
}
