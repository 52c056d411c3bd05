//! The root Tiltfile and the stand extension, evaluated for every environment of
//! stand.toml as `tilt up -- --env=<env>` would, with every recorded call asserted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};
use tilt_tests::{run_tiltfile, Run};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// What stand.toml says about each environment, written out by hand: the test checks
/// that the extension turns the plan into the right Tilt calls, not that it agrees with
/// itself.
struct Env {
    name: &'static str,
    services: &'static [&'static str],
    /// in-cluster | external | none
    db: &'static str,
    live_sync: bool,
    tag: &'static str,
    /// A kube context the environment may deploy to (stand.toml `contexts`).
    context: &'static str,
}

const ENVS: &[Env] = &[
    Env { name: "local", services: &["service1", "service2"], db: "in-cluster", live_sync: true, tag: "dev", context: "kind-stand" },
    Env { name: "dev", services: &["service1", "service2"], db: "in-cluster", live_sync: true, tag: "dev", context: "kind-stand" },
    Env { name: "service1-only", services: &["service1"], db: "in-cluster", live_sync: true, tag: "dev", context: "kind-stand" },
    Env { name: "service2-only", services: &["service2"], db: "in-cluster", live_sync: true, tag: "dev", context: "kind-stand" },
    Env { name: "test", services: &["service1", "service2"], db: "in-cluster", live_sync: true, tag: "dev", context: "kind-stand" },
    Env { name: "minimal", services: &["service1", "service2"], db: "none", live_sync: true, tag: "dev", context: "kind-stand" },
    Env { name: "staging", services: &["service1", "service2"], db: "external", live_sync: false, tag: "0.1.0", context: "staging-eu" },
    Env { name: "prod", services: &["service1", "service2"], db: "external", live_sync: false, tag: "0.1.0", context: "prod" },
];

fn port(svc: &str) -> u64 {
    match svc {
        "service1" => 5001,
        "service2" => 5002,
        // A service added to stand.toml after this table was written (`devd new`).
        other => shipped_stand().service(other).map(|s| u64::from(*s.port.get_ref())).unwrap_or_else(|| panic!("no port known for {other}")),
    }
}

fn shipped_stand() -> stand_model::config::Stand {
    match stand_model::config::load(&repo().join("stand.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// The services an environment deploys: the table's (the contract, which must still
/// hold) and any that stand.toml has gained since (`devd new`), with each one's
/// database mode (`in-cluster`, `external`, `none`).
fn services_of(e: &Env) -> Vec<(String, String)> {
    let plan = stand_model::plan::resolve(&shipped_stand(), e.name, "").unwrap_or_else(|err| panic!("{}: {err}", e.name));
    let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    for s in e.services {
        assert!(names.contains(s), "{}: stand.toml no longer deploys {s} ({names:?})", e.name);
    }
    plan.services
        .iter()
        .map(|s| {
            let db = if e.services.contains(&s.name.as_str()) { e.db.to_owned() } else { s.database.mode.to_string() };
            (s.name.clone(), db)
        })
        .collect()
}

fn env(name: &str) -> &'static Env {
    ENVS.iter().find(|e| e.name == name).expect("a known environment")
}

/// The environment `tilt up -- <args>` runs (its `--env`, else local, the default).
fn env_of(args: &[&str]) -> &'static Env {
    let name = args
        .iter()
        .position(|a| *a == "--env")
        .and_then(|i| args.get(i + 1).copied())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--env=")))
        .unwrap_or("local");
    ENVS.iter().find(|e| e.name == name).unwrap_or(&ENVS[0])
}

/// `tilt up -- <args>` with a kube context the environment allows.
fn run(args: &[&str]) -> Run {
    run_in(args, env_of(args).context)
}

fn run_in(args: &[&str], context: &str) -> Run {
    match run_tiltfile(&repo(), args, context) {
        Ok(run) => run,
        Err(e) => panic!("tilt up -- {}: the Tiltfile failed:\n{e:#}", args.join(" ")),
    }
}

fn fails(args: &[&str]) -> String {
    fails_in(args, env_of(args).context)
}

fn fails_in(args: &[&str], context: &str) -> String {
    match run_tiltfile(&repo(), args, context) {
        Ok(_) => panic!("tilt up -- {}: expected the Tiltfile to fail", args.join(" ")),
        Err(e) => format!("{e:#}"),
    }
}

/// A path argument relative to the repository (the extension passes absolute ones).
fn rel(v: &Json) -> String {
    let root = repo().display().to_string();
    let s = v.as_str().unwrap_or_else(|| panic!("expected a path string, got {v}"));
    s.strip_prefix(&root)
        .map(|r| r.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| panic!("{s} is not under {root}"))
}

fn rels(v: &Json) -> Vec<String> {
    v.as_array().expect("a list of paths").iter().map(rel).collect()
}

fn strs(v: &[&str]) -> Json {
    json!(v)
}

fn get<'a>(args: &'a Map<String, Json>, key: &str) -> &'a Json {
    args.get(key).unwrap_or_else(|| panic!("argument {key} not given in {args:?}"))
}

fn kinds_named(run: &Run, kind: &str) -> BTreeSet<String> {
    run.objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn set_of(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// Everything the extension does for one environment.
fn check(e: &Env, run: &Run) {
    let root = repo().display().to_string();
    let services = services_of(e);
    let svcs: Vec<String> = services.iter().map(|(s, _)| s.clone()).collect();

    // config: one string flag, parsed once.
    let defs = run.calls_of("config.define_string");
    assert_eq!(defs.len(), 1, "{defs:?}");
    assert_eq!(defs[0]["name"], "env");
    assert_eq!(run.calls_of("config.parse").len(), 1);

    // local(): devd env list, devd generate (the values files follow stand.toml), then
    // devd plan for the chosen env; argv form, quiet, in the root.
    let locals = run.calls_of("local");
    let commands: Vec<&Json> = locals.iter().map(|a| get(a, "command")).collect();
    assert_eq!(
        commands,
        [
            &json!(["devd", "env", "list", "--json"]),
            &json!(["devd", "generate"]),
            &json!(["devd", "plan", "--env", e.name, "--json"]),
            &json!(["devd", "context", "--env", e.name, "--json", e.context])
        ]
    );
    for l in &locals {
        assert_eq!(l["quiet"], true);
        assert_eq!(l["dir"], root.as_str());
    }
    // str() on the Blob before decode_json (a Blob would be recorded as {"_type": "blob"}).
    for d in run.calls_of("decode_json") {
        assert!(d["json"].is_string(), "decode_json got {}", d["json"]);
    }
    assert!(run.calls_of("decode_yaml_stream").iter().all(|d| d["yaml"].is_string()));
    assert_eq!(
        rels(&json!(run.calls_of("watch_file").iter().map(|w| w["file_path"].clone()).collect::<Vec<_>>())),
        ["stand.toml"]
    );

    // helm(): chart, release, namespace, the env's generated values file, no --set.
    let helm = run.calls_of("helm");
    assert_eq!(helm.len(), 1);
    let h = helm[0];
    assert_eq!(rel(get(h, "pathToChartDir")), "helm/app");
    assert_eq!(h["name"], "stand");
    let namespace = format!("stand-{}", e.name);
    assert_eq!(h["namespace"], namespace.as_str(), "each environment in a namespace of its own");

    // The kube context: asked once, judged by devd, given to allow_k8s_contexts.
    assert_eq!(run.calls_of("k8s_context").len(), 1);
    let allowed: Vec<&Json> = run.calls_of("allow_k8s_contexts").iter().map(|a| get(a, "contexts")).collect();
    assert_eq!(allowed, [&json!(e.context)], "{}", e.name);
    assert_eq!(rels(get(h, "values")), [format!("helm/app/values-{}.yaml", e.name)]);
    assert!(h.get("set").is_none_or(Json::is_null), "no --set: the values file says it all: {h:?}");

    // The objects Tilt deploys: the namespace, then the chart (without its test pods).
    assert_eq!(run.calls_of("k8s_yaml").len(), 2);
    assert_eq!(
        run.objects[0],
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "annotations": {"tilt.dev/down-policy": "keep"}}}),
        "kept when a switch drops it (Tilt's garbage collection), with the databases' volumes in it"
    );
    assert_eq!(kinds_named(run, "Namespace"), set_of(std::slice::from_ref(&namespace)));
    assert_eq!(kinds_named(run, "Deployment"), set_of(&svcs));
    assert!(kinds_named(run, "Pod").is_empty(), "helm test pods must not be deployed");
    let postgres: Vec<String> =
        services.iter().filter(|(_, db)| db == "in-cluster").map(|(s, _)| format!("postgres-{s}")).collect();
    assert_eq!(kinds_named(run, "StatefulSet"), set_of(&postgres), "{}: in-cluster Postgres", e.name);
    for o in run.objects.iter().filter(|o| o["kind"] == "Deployment") {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        let images: Vec<&Json> = o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .map(|c| &c["image"])
            .collect();
        assert_eq!(images, [&json!(format!("stand/{name}:{}", e.tag))]);
        assert_eq!(o["spec"]["replicas"], if e.name == "prod" { 2 } else { 1 });
    }

    // Images: one custom_build per service, devd builds it, deps only what needs a new image.
    let builds = run.calls_of("custom_build");
    assert_eq!(builds.len(), svcs.len());
    for s in &svcs {
        let b = run.call_with("custom_build", "ref", &format!("stand/{s}"));
        assert_eq!(b["command"], format!("devd image build {s} --env {} --ref $EXPECTED_REF", e.name));
        assert_eq!(b["dir"], root.as_str());
        let mut deps = vec!["devd/docker/Dockerfile".to_owned(), "devd/shim".to_owned(), "Cargo.lock".to_owned()];
        if !e.live_sync {
            deps.extend(["Cargo.toml".to_owned(), format!("services/{s}"), "services".to_owned()]);
        }
        assert_eq!(rels(get(b, "deps")), deps, "{}: deps of {s}", e.name);
        if e.live_sync {
            assert!(!rels(get(b, "deps")).iter().any(|d| d.starts_with("services")), "devd syncs the sources");
        }
    }
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);

    // Workload resources: port forwards, links, labels, owned objects, order. Link names
    // say what they open; every link and forward uses one host spelling.
    let mut forwards = BTreeSet::new();
    for (s, db) in &services {
        let r = run.call_with("k8s_resource", "workload", s);
        let p = port(s);
        assert_eq!(
            get(r, "port_forwards"),
            &json!([{"_type": "port_forward", "local_port": p, "container_port": p, "name": format!("{s} :{p}"), "host": "127.0.0.1"}])
        );
        assert!(forwards.insert(p), "port {p} forwarded twice");
        let mut links = vec![json!({"_type": "link", "url": format!("http://127.0.0.1:{p}/health"), "name": format!("{s} health")})];
        if e.live_sync {
            links.push(json!({"_type": "link", "url": format!("http://127.0.0.1:7700/api/v1/services/{s}"), "name": format!("devd: {s}")}));
        }
        if db == "external" {
            let host = format!("{s}-db.{}.example.internal:5432", e.name);
            links.push(json!({
                "_type": "link",
                "url": format!("postgres://{s}@{host}/{s}"),
                "name": format!("{s} database {host} (password: Secret {s}-db key password)"),
            }));
        }
        assert_eq!(get(r, "links"), &json!(links), "{}: links of {s}", e.name);
        assert_eq!(get(r, "labels"), &strs(&[s]));
        assert_eq!(get(r, "resource_deps"), &strs(&["stand-config"]));
        let objects = get(r, "objects").as_array().expect("objects");
        assert!(objects.contains(&json!(format!("{s}:configmap"))), "{objects:?}");
        assert!(!r.contains_key("new_name"));
    }
    let config = run.call_with("k8s_resource", "new_name", "stand-config");
    assert_eq!(get(config, "labels"), &strs(&["0-stand"]));
    assert_eq!(get(config, "objects")[0], format!("{namespace}:namespace").as_str());

    // Databases: in-cluster Postgres as resources; an external one is only the link above.
    for (s, db) in &services {
        let pg = format!("postgres-{s}");
        let as_resource = run.calls_of("k8s_resource").into_iter().any(|r| r.get("workload") == Some(&json!(pg)));
        if db == "in-cluster" {
            let r = run.call_with("k8s_resource", "workload", &pg);
            assert_eq!(get(r, "labels"), &strs(&[s]));
            assert_eq!(get(r, "resource_deps"), &strs(&["stand-config"]));
            assert!(get(r, "objects").as_array().expect("objects").contains(&json!(format!("{pg}:secret"))));
        } else {
            assert!(!as_resource, "{}: no Postgres of {s} in the cluster", e.name);
        }
    }

    // devd, where it live-syncs: served with the kubernetes target named, readiness on
    // the stand's /api/v1/ready. Without live sync there is nothing for it to do.
    let locals: Vec<String> = run.calls_of("local_resource").iter().map(|l| l["name"].as_str().unwrap_or_default().to_owned()).collect();
    if e.live_sync {
        assert_eq!(locals, ["devd"], "devd is the only local resource");
        let devd = run.call_with("local_resource", "name", "devd");
        assert_eq!(devd["serve_cmd"], format!("devd up --env {} --target kubernetes --no-deploy", e.name));
        assert_eq!(devd["serve_dir"], root.as_str());
        assert_eq!(
            devd["readiness_probe"]["http_get"],
            json!({"_type": "http_get_action", "port": 7700, "host": "127.0.0.1", "scheme": "http", "path": "/api/v1/ready"})
        );
        assert_eq!(devd["readiness_probe"]["_type"], "probe");
        assert_eq!(get(devd, "labels"), &strs(&["0-stand"]));
        assert_eq!(get(devd, "links"), &json!([{"_type": "link", "url": "http://127.0.0.1:7700/api/v1/status", "name": "devd status"}]));
        assert!(!devd.contains_key("cmd"));
    } else {
        assert!(locals.is_empty(), "{}: no local resources without live sync: {locals:?}", e.name);
    }

    // Buttons where devd live-syncs (without it the pods have no shim): Restart and
    // Rebuild on each service, each a UIButton on the service's resource and a Cmd
    // started by it that calls devd.
    let mut want_buttons = BTreeSet::new();
    for s in svcs.iter().filter(|_| e.live_sync) {
        for (a, text, icon) in [("restart", "Restart", "restart_alt"), ("rebuild", "Rebuild", "build")] {
            let name = format!("stand-{s}-{a}");
            want_buttons.insert(name.clone());
            let b = run.call_with("v1alpha1.ui_button", "name", &name);
            assert_eq!(
                b["location"],
                json!({"_type": "v1alpha1.ui_component_location", "component_id": s, "component_type": "Resource"})
            );
            assert_eq!((&b["text"], &b["icon_name"]), (&json!(text), &json!(icon)));
            assert_eq!(b["annotations"], json!({"tilt.dev/resource": s}));
            let c = run.call_with("v1alpha1.cmd", "name", &format!("btn-{name}"));
            assert_eq!(c["args"], json!(["devd", a, s]));
            assert_eq!(c["dir"], root.as_str());
            assert_eq!(c["start_on"], json!({"_type": "v1alpha1.start_on_spec", "ui_buttons": [name]}));
            assert_eq!(c["annotations"]["tilt.dev/resource"], s.as_str());
        }
    }
    let buttons: BTreeSet<String> = run
        .calls_of("v1alpha1.ui_button")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(buttons, want_buttons);
    assert_eq!(run.calls_of("v1alpha1.cmd").len(), want_buttons.len());

    // Across the whole UI: no two links with the same name, one host spelling.
    let mut link_names = BTreeSet::new();
    for r in run.calls_of("k8s_resource").into_iter().chain(run.calls_of("local_resource")) {
        for l in r.get("links").and_then(Json::as_array).into_iter().flatten() {
            let name = l["name"].as_str().unwrap_or_default().to_owned();
            assert!(link_names.insert(name.clone()), "{}: two links named {name:?}", e.name);
            assert!(!l["url"].as_str().unwrap_or_default().contains("localhost"), "{l}");
        }
    }

    // The stand's group comes first in Tilt's UI (labels sorted with localeCompare,
    // where a digit precedes every letter; service names start with a letter).
    let mut labels: Vec<String> = run
        .calls_of("k8s_resource")
        .into_iter()
        .chain(run.calls_of("local_resource"))
        .flat_map(|r| r.get("labels").and_then(Json::as_array).cloned().unwrap_or_default())
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    labels.sort_by_key(|l| l.to_lowercase());
    labels.dedup();
    assert_eq!(labels.first().map(String::as_str), Some("0-stand"));
    assert!(svcs.iter().all(|s| s.starts_with(|c: char| c.is_ascii_alphabetic())));

    // Every resource Tilt would show, and nothing in "uncategorized": each deployed object
    // is a workload, a Service (joins its workload), or claimed by a resource.
    // One row per service, one per in-cluster database, stand-config, and devd where it
    // live-syncs: local has 6 rows, staging 3.
    let mut want: BTreeSet<String> = BTreeSet::from(["stand-config".to_owned()]);
    if e.live_sync {
        want.insert("devd".to_owned());
    }
    for (s, db) in &services {
        want.insert(s.clone());
        if db == "in-cluster" {
            want.insert(format!("postgres-{s}"));
        }
    }
    assert_eq!(run.resources, want);
    let claimed: usize = run
        .calls_of("k8s_resource")
        .iter()
        .map(|r| r.get("objects").and_then(Json::as_array).map_or(0, Vec::len))
        .sum();
    let others = run
        .objects
        .iter()
        .filter(|o| !["Deployment", "StatefulSet", "Service"].contains(&o["kind"].as_str().unwrap_or_default()))
        .count();
    assert_eq!(claimed, others, "every non-workload object belongs to a resource");

    // Labels are valid Tilt labels (the stand-in checks them); every call is documented
    // (the stand-in refuses others). The devd commands are those of docs/CONTRACTS.md.
}

macro_rules! env_tests {
    ($($test:ident => $env:literal,)*) => {$(
        #[test]
        fn $test() {
            let e = env($env);
            check(e, &run(&[concat!("--env=", $env)]));
        }
    )*};
}

env_tests! {
    env_local => "local",
    env_dev => "dev",
    env_service1_only => "service1-only",
    env_service2_only => "service2-only",
    env_test => "test",
    env_minimal => "minimal",
    env_staging => "staging",
    env_prod => "prod",
}

#[test]
fn the_table_covers_every_environment_of_stand_toml() {
    let place = stand_cli::Place::find(Some(&repo()), None).expect("stand.toml");
    let stand = place.load().expect("stand.toml loads");
    let names: BTreeSet<String> = stand.env_names().into_iter().collect();
    let table: BTreeSet<String> = ENVS.iter().map(|e| e.name.to_owned()).collect();
    assert_eq!(names, table, "add the new environment to ENVS in this file");
}

#[test]
fn without_env_the_default_of_stand_toml_is_used() {
    let r = run(&[]);
    check(env("local"), &r);
}

#[test]
fn env_as_a_separate_argument() {
    check(env("staging"), &run(&["--env", "staging"]));
}

#[test]
fn an_unknown_env_fails_listing_the_valid_ones() {
    let msg = fails(&["--env=nope"]);
    assert!(
        msg.contains(r#"stand: unknown environment "nope"; valid environments (stand.toml): dev, local, minimal, prod, service1-only, service2-only, staging, test"#),
        "{msg}"
    );
}

#[test]
fn a_context_the_environment_does_not_allow_fails_before_anything_is_deployed() {
    // local (live sync): local clusters only; a production-looking context is refused
    // by the extension itself, naming the environment and its list.
    let msg = fails_in(&["--env=local"], "prod-eu");
    assert!(msg.contains("stand: env `local` may not deploy to kube context `prod-eu`: its contexts are kind-*, k3d-*"), "{msg}");
    // staging names its own: a local cluster is not one of them...
    let msg = fails_in(&["--env=staging"], "kind-stand");
    assert!(msg.contains("env `staging` may not deploy to kube context `kind-stand`: its contexts are staging, staging-*"), "{msg}");
    // ...and a context Tilt would refuse on its own goes through once stand.toml allows it.
    let r = run_in(&["--env=prod"], "prod-eu");
    assert_eq!(r.calls_of("allow_k8s_contexts").len(), 1);
}

#[test]
fn an_unknown_flag_fails_as_in_tilt() {
    let msg = fails(&["--environment=local"]);
    assert!(msg.contains("unknown flag: --environment"), "{msg}");
}

#[test]
fn the_commands_the_extension_runs_are_devds() {
    // The argv Tilt will run (serve_cmd, custom_build, buttons) parse under devd's own CLI.
    use clap::Parser as _;
    let r = run(&["--env=local"]);
    let mut commands: Vec<String> = Vec::new();
    commands.push(r.call_with("local_resource", "name", "devd")["serve_cmd"].as_str().unwrap_or_default().to_owned());
    for b in r.calls_of("custom_build") {
        commands.push(b["command"].as_str().unwrap_or_default().replace("$EXPECTED_REF", "stand/service1:tilt-0123456789abcdef"));
    }
    for c in r.calls_of("v1alpha1.cmd") {
        let argv: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Json::as_str).collect();
        commands.push(argv.join(" "));
    }
    for l in r.calls_of("local") {
        let argv: Vec<&str> = l["command"].as_array().expect("argv").iter().filter_map(Json::as_str).collect();
        commands.push(argv.join(" "));
    }
    assert!(commands.len() >= 8, "{commands:?}");
    for c in &commands {
        if let Err(e) = stand_cli::Cli::try_parse_from(c.split_whitespace()) {
            panic!("devd does not accept `{c}` (docs/CONTRACTS.md, devd CLI):\n{e}");
        }
    }
}
