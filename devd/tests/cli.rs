//! The built `devd` binary: exit codes (0 ok, 2 bad input or usage), messages, and
//! `plan --json` against the golden plans.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("devd/ has a parent")
        .to_path_buf()
}

/// Run devd in `dir` with `args`.
fn devd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devd"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("devd runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// A fresh directory for one test, under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("devd-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn check_accepts_the_shipped_stand() {
    let o = devd(&root(), &["check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("ok: stand.toml: {} services, 8 environments (default: local)\n", shipped_services())
    );
}

#[test]
fn check_finds_stand_toml_in_a_parent_directory() {
    let o = devd(&root().join("devd/src"), &["check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("ok: ../../stand.toml:"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn root_flag_points_at_the_stand() {
    let root = root();
    let o = devd(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &["--root", root.to_str().expect("utf-8"), "check"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn invalid_stand_toml_exits_2_with_line_column_and_key() {
    let dir = scratch("invalid");
    let text = std::fs::read_to_string(root().join("stand.toml")).expect("shipped stand.toml");
    let broken = text.replacen("port = 5002", "port = 5001", 1);
    assert_ne!(broken, text);
    std::fs::write(dir.join("stand.toml"), &broken).expect("write");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // The second `port = 5001` line is service2's.
    let second = broken
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("port = 5001"))
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("two port lines");
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("stand.toml:{second}:8: key `services.service2.port`: port 5001 is already used by service `service1`")),
        "{err}"
    );
    assert!(
        err.contains("error: stand.toml is invalid (1 error)"),
        "{err}"
    );
    assert_eq!(stdout(&o), "");
}

#[test]
fn syntax_error_exits_2() {
    let dir = scratch("syntax");
    std::fs::write(dir.join("stand.toml"), "[stand]\nname = \"s\n").expect("write");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("stand.toml:2:"), "{}", stderr(&o));
}

#[test]
fn file_flag_reports_the_path_given() {
    let dir = scratch("file-flag");
    std::fs::write(dir.join("other.toml"), "[stand]\nbogus = 1\n").expect("write");
    let o = devd(&dir, &["--file", "other.toml", "check"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("other.toml:2:1: key `stand.bogus`: unknown key `bogus`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_file_exits_2() {
    let dir = scratch("missing-file");
    let o = devd(&dir, &["--file", "nope.toml", "check"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nope.toml: cannot read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_stand_toml_anywhere_exits_2() {
    // The scratch dir is under target/ of this repository, so search from / instead.
    let o = devd(Path::new("/"), &["check"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no stand.toml in / or any parent directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let root = root();
    assert_eq!(code(&devd(&root, &[])), 2, "no subcommand");
    assert_eq!(code(&devd(&root, &["frobnicate"])), 2, "unknown subcommand");
    assert_eq!(code(&devd(&root, &["plan", "--bogus"])), 2, "unknown flag");
    let help = devd(&root, &["--help"]);
    assert_eq!(code(&help), 0);
    for cmd in ["check", "env", "plan"] {
        assert!(stdout(&help).contains(cmd), "{}", stdout(&help));
    }
}

#[test]
fn unknown_environment_exits_2_and_lists_the_valid_ones() {
    let o = devd(&root(), &["plan", "--env", "nope"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        "error: unknown environment `nope`; valid: dev, local, minimal, prod, service1-only, service2-only, staging, test"
    );
}

#[test]
fn env_list_json_names_every_environment() {
    let o = devd(&root(), &["env", "list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let names: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "dev",
            "local",
            "minimal",
            "prod",
            "service1-only",
            "service2-only",
            "staging",
            "test"
        ]
    );
    let defaults: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["default"] == serde_json::Value::Bool(true))
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(defaults, ["local"]);
    let minimal = &rows[2];
    // Every service of minimal (service1, service2 and any added since) has none.
    let databases = minimal["databases"].as_object().expect("databases");
    assert!(databases.contains_key("service1") && databases.contains_key("service2"), "{databases:?}");
    assert!(databases.values().all(|m| m == "none"), "{databases:?}");
}

#[test]
fn env_list_table() {
    let o = devd(&root(), &["env", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("ENV "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("local *") && l.contains("in-cluster")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("prod ") && l.contains("external") && l.contains("off")),
        "{out}"
    );
}

/// `plan --json` prints the golden plan, up to the host triple (the golden files are
/// written for x86_64-unknown-linux-gnu).
#[test]
fn plan_json_is_the_golden_plan() {
    let root = root();
    for env in ["local", "staging", "minimal"] {
        let o = devd(&root, &["plan", "--env", env, "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let mut actual: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        let triple = actual["build"]["target_triple"]
            .as_str()
            .expect("a triple")
            .to_owned();
        assert!(triple.split('-').count() >= 3, "{triple}");
        actual["build"]["target_triple"] = "x86_64-unknown-linux-gnu".into();
        // The golden plan is tests/stand_toml.rs's insta snapshot: its JSON follows the
        // header between the two `---` lines.
        let golden_path = root.join(format!("devd/tests/snapshots/plan-{env}.snap"));
        let snapshot = std::fs::read_to_string(&golden_path).expect("golden plan");
        let golden_text = snapshot.splitn(3, "---\n").nth(2).expect("an insta snapshot: header, then the plan").to_owned();
        let golden: serde_json::Value = serde_json::from_str(&golden_text).expect("golden json");
        // The goldens hold the contract's services (service1, service2); one added since
        // (`devd new`) is left out of the comparison.
        let added = actual["services"].as_array().expect("services").len()
            != golden["services"].as_array().expect("services").len();
        if let Some(services) = actual["services"].as_array_mut() {
            services.retain(|s| s["name"] == "service1" || s["name"] == "service2");
        }
        assert_eq!(actual, golden, "{env}");
        if !added {
            // Stable text too: keys in the golden file's order, pretty-printed.
            let expected = golden_text.replace("x86_64-unknown-linux-gnu", &triple);
            assert_eq!(stdout(&o), expected, "{env}");
        }
    }
}

#[test]
fn plan_defaults_to_default_env_and_prints_a_summary() {
    let o = devd(&root(), &["plan"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("env        local"), "{out}");
    assert!(
        out.contains("values     helm/app/values-local.yaml"),
        "{out}"
    );
    assert!(out.contains("service1  :5001  stand/service1:dev  x1  in-cluster postgres-service1:5432/service1 (1Gi volume)"), "{out}");
}

// ---- the one-file topology: generated values, devd new ---------------------------------

/// A copy of the shipped stand's files that `devd check`, `generate` and `new` read and
/// write: stand.toml, the workspace manifest and lock, the chart, the crates, as they
/// are in the working tree (a service `devd new` just wrote is not committed yet).
fn stand_copy(name: &str) -> PathBuf {
    let dir = scratch(name);
    let root = root();
    for file in ["stand.toml", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), dir.join(file)).unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    for tree in ["helm", "services", "devd", "tilt_modules", "scripts/tests"] {
        copy_tree(&root.join(tree), &dir.join(tree));
    }
    dir
}

/// Copies a directory, leaving out build output and devd's state.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name == "target" || name == ".stand" {
            continue;
        }
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

#[test]
fn a_stale_values_file_fails_check_until_devd_generate() {
    let dir = stand_copy("stale");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Change the size of local's databases without regenerating.
    let toml = std::fs::read_to_string(dir.join("stand.toml")).expect("stand.toml");
    let local = toml.find("[env.local]").expect("[env.local]");
    let (head, tail) = toml.split_at(local);
    let edited = format!(
        "{head}{}",
        tail.replacen(
            "database = { mode = \"in-cluster\", persistence = true, size = \"1Gi\" }",
            "database = { mode = \"in-cluster\", persistence = true, size = \"3Gi\" }",
            1,
        )
    );
    assert_ne!(edited, toml, "the local database line is in stand.toml");
    std::fs::write(dir.join("stand.toml"), edited).expect("write");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("helm/app/values-local.yaml: stale"), "{err}");
    assert!(err.contains("run `devd generate`"), "{err}");
    assert!(!err.contains("values-dev.yaml"), "only local changed: {err}");
    let o = devd(&dir, &["generate"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), "wrote helm/app/values-local.yaml\n");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let local = std::fs::read_to_string(dir.join("helm/app/values-local.yaml")).expect("values");
    assert!(local.contains("size: \"3Gi\""), "{local}");

    // A hand edit of a generated file is stale too.
    std::fs::write(dir.join("helm/app/values-test.yaml"), local.replace("3Gi", "5Gi")).expect("write");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("helm/app/values-test.yaml: stale"), "{}", stderr(&o));
    // An orphan (its environment gone) is named, and generate removes it.
    std::fs::copy(dir.join("helm/app/values-test.yaml"), dir.join("helm/app/values-gone.yaml")).expect("copy");
    let o = devd(&dir, &["check"]);
    assert!(stderr(&o).contains("helm/app/values-gone.yaml: generated for an environment stand.toml no longer declares"), "{}", stderr(&o));
    let o = devd(&dir, &["generate"]);
    assert_eq!(stdout(&o), "wrote helm/app/values-test.yaml\nremoved helm/app/values-gone.yaml\n");
    assert_eq!(code(&devd(&dir, &["check"])), 0);
}

#[test]
fn hand_written_settings_cannot_set_topology() {
    let dir = stand_copy("topology");
    let toml = std::fs::read_to_string(dir.join("stand.toml")).expect("stand.toml");
    // In stand.toml's helm table: file:line:column, the key and where the fact belongs.
    let edited = format!("{toml}\n[env.test.helm.services.service1]\nport = 6000\n");
    let line = edited.lines().count();
    std::fs::write(dir.join("stand.toml"), &edited).expect("write");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("stand.toml:{line}:1: key `env.test.helm.services.service1.port`: `services.service1.port` is topology")),
        "{err}"
    );
    assert!(err.contains("`port` in [services.service1] of stand.toml"), "{err}");
    // In an extra values file that stand.toml names: the file and the key.
    std::fs::write(dir.join("helm/app/site.yaml"), "services:\n  service1:\n    replicas: 3\n    resources: {}\n").expect("write");
    let edited = toml.replacen("[env.test]\n", "[env.test]\nvalues = [\"helm/app/site.yaml\"]\n", 1);
    std::fs::write(dir.join("stand.toml"), &edited).expect("write");
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("helm/app/site.yaml: key `services.service1.replicas`: a topology key in a hand-written values file of env.test"), "{err}");
    assert!(err.contains("[env.test.overrides.service1]"), "{err}");
    assert!(!err.contains("resources"), "Helm's own settings are fine: {err}");
}

#[test]
fn devd_new_refuses_bad_input_and_changes_nothing() {
    let dir = stand_copy("new-refuses");
    let before = std::fs::read_to_string(dir.join("stand.toml")).expect("stand.toml");
    for (args, says) in [
        (vec!["new", "Bad_Name"], "not a valid service name"),
        (vec!["new", "service1"], "already exists"),
        (vec!["new", "fresh", "--port", "5001"], "port 5001 is already used by service `service1`"),
        (vec!["new", "fresh", "--port", "7700"], "devd's API"),
        (vec!["new", "fresh", "--env", "nope"], "unknown environment `nope`"),
    ] {
        let o = devd(&dir, &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    std::fs::create_dir_all(dir.join("services/taken")).expect("mkdir");
    let o = devd(&dir, &["new", "taken"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(dir.join("stand.toml")).expect("stand.toml"), before);
}

#[test]
fn devd_new_adds_a_service_that_checks_and_renders() {
    let dir = stand_copy("new-adds");
    let o = devd(&dir, &["new", "zz-added", "--database", "--port", "5003"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("added service zz-added on port 5003\n"), "{}", stdout(&o));
    let o = devd(&dir, &["check"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let toml = std::fs::read_to_string(dir.join("stand.toml")).expect("stand.toml");
    assert!(toml.contains("[services.zz-added]\npackage = \"zz-added\"\npath = \"services/zz-added\"\nport = 5003\ndatabase = true\n"), "{toml}");
    assert!(toml.contains("[env.staging.overrides.zz-added]\ndatabase = { host = \"zz-added-db.staging.example.internal\", secret = \"zz-added-db\" }"), "{toml}");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("\n    \"services/zz-added\",\n"), "{manifest}");
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).expect("Cargo.lock");
    assert!(lock.contains("name = \"zz-added\""), "the lock has the new member");
    let lib = std::fs::read_to_string(dir.join("services/zz-added/src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("pub const DEFAULT_PORT: u16 = 5003;"), "{lib}");
    // Listed where every current service is: not in the single-service environments.
    let plan = |env: &str| -> serde_json::Value {
        let o = devd(&dir, &["plan", "--env", env, "--json"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).expect("json")
    };
    let names = |p: &serde_json::Value| -> Vec<String> {
        p["services"].as_array().expect("services").iter().map(|s| s["name"].as_str().expect("name").to_owned()).collect()
    };
    assert_eq!(names(&plan("local")), ["service1", "service2", "zz-added"]);
    assert_eq!(names(&plan("service1-only")), ["service1"]);
    assert_eq!(plan("local")["services"][2]["database"]["mode"], "in-cluster");
    // The values file of local renders its objects.
    let helm = std::env::var_os("HELM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("helm"));
    let out = Command::new(helm)
        .args(["template", "stand", "helm/app", "-f", "helm/app/values-local.yaml"])
        .current_dir(&dir)
        .output()
        .expect("helm runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for object in ["kind: Deployment\nmetadata:\n  name: zz-added\n", "kind: StatefulSet\nmetadata:\n  name: postgres-zz-added\n"] {
        assert!(text.contains(object), "{object} in\n{text}");
    }
}

/// How many services the shipped stand.toml declares (tests must not assume two).
fn shipped_services() -> usize {
    match devd::config::load(&root().join("stand.toml")) {
        Ok(s) => s.service_names().len(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn logs_of_an_unknown_service_exits_2_naming_the_valid_ones() {
    let o = devd(&root(), &["logs", "nope", "--env", "local"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no service `nope` in env `local`; valid: service1"), "{}", stderr(&o));
}

/// A reader that is gone before devd writes (`devd plan --json | head -0`) ends the
/// output, not the command: exit 0, no panic, for every command that prints on stdout
/// without needing a running devd.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let root = root();
    for args in [
        &["plan", "--env", "local", "--json"][..],
        &["plan", "--env", "local"][..],
        &["env", "list", "--json"][..],
        &["env", "list"][..],
        &["check"][..],
        &["context", "--env", "local", "--json", "kind-stand"][..],
        &["context", "--env", "local", "kind-stand"][..],
    ] {
        // The pipe's read end is closed before devd starts: its first write fails.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = Command::new(env!("CARGO_BIN_EXE_devd"))
            .args(args)
            .current_dir(&root)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run devd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
