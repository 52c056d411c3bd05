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
        "ok: stand.toml: 2 services, 8 environments (default: local)\n"
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
    assert_eq!(
        minimal["databases"],
        serde_json::json!({"service1": "none", "service2": "none"})
    );
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
        let golden_path = root.join(format!("devd/tests/snapshots/plan-{env}.json"));
        let golden_text = std::fs::read_to_string(&golden_path).expect("golden plan");
        let golden: serde_json::Value = serde_json::from_str(&golden_text).expect("golden json");
        assert_eq!(actual, golden, "{env}");
        // Stable text too: keys in the golden file's order, pretty-printed.
        let expected = golden_text.replace("x86_64-unknown-linux-gnu", &triple);
        assert_eq!(stdout(&o), expected, "{env}");
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

#[test]
fn logs_of_an_unknown_service_exits_2_naming_the_valid_ones() {
    let o = devd(&root(), &["logs", "nope", "--env", "local"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("no service `nope` in env `local`; valid: service1, service2"), "{}", stderr(&o));
}
