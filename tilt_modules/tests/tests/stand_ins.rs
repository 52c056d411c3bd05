//! The stand-ins behave like Tilt where the extension could go wrong: the API's names and
//! parameters, Blobs, config flags, and the Starlark that go.starlark.net would reject.

use std::path::{Path, PathBuf};

use tilt_tests::{run_tiltfile, tilt_api, Run};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// Evaluate `files` (name -> text; `Tiltfile` is the main one) in a fresh directory.
fn eval(files: &[(&str, &str)], args: &[&str]) -> Result<Run, String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text.replace("REPO", &repo().display().to_string())).expect("write");
    }
    run_tiltfile(dir.path(), args, "kind-stand").map_err(|e| format!("{e:#}"))
}

fn fails_with(files: &[(&str, &str)], needle: &str) {
    match eval(files, &[]) {
        Ok(_) => panic!("expected a failure containing {needle:?}"),
        Err(e) => assert!(e.contains(needle), "expected {needle:?} in:\n{e}"),
    }
}

#[test]
fn an_undocumented_builtin_fails() {
    fails_with(&[("Tiltfile", "k8s_resources('x')\n")], "Variable `k8s_resources` not found");
}

#[test]
fn an_unknown_keyword_fails() {
    fails_with(&[("Tiltfile", "k8s_resource('x', port_forward=[8000])\n")], "Found `port_forward` extra named parameter");
}

#[test]
fn too_many_positional_arguments_fail() {
    fails_with(&[("Tiltfile", "link('http://x', 'x', 'extra')\n")], "extra positional argument");
}

#[test]
fn a_missing_required_argument_fails() {
    fails_with(&[("Tiltfile", "custom_build('stand/x', 'make')\n")], "missing argument for deps");
}

#[test]
fn local_returns_a_blob_without_string_methods() {
    let local = "local(['devd', '--root', 'REPO', 'env', 'list', '--json'], quiet=True)";
    fails_with(&[("Tiltfile", &format!("x = {local}.strip()\n"))], "blob");
    fails_with(&[("Tiltfile", &format!("x = {local} + ''\n"))], "blob");
    let ok = eval(&[("Tiltfile", &format!("envs = decode_json(str({local}))\nn = len(envs)\n"))], &[]);
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn local_runs_devd_and_reports_its_failure() {
    fails_with(
        &[("Tiltfile", "local(['devd', '--root', 'REPO', 'plan', '--env', 'nope', '--json'])\n")],
        "exit status 2",
    );
    fails_with(&[("Tiltfile", "local('ls -l')\n")], "devd commands only");
}

#[test]
fn config_flags_follow_tilt() {
    let tf = "config.define_string('env')\ncfg = config.parse()\nlocal_resource(cfg.get('env', 'none'), cmd='true')\n";
    let run = eval(&[("Tiltfile", tf)], &["--env=a"]).expect("evaluates");
    assert!(run.resources.contains("a"));
    let run = eval(&[("Tiltfile", tf)], &[]).expect("evaluates");
    assert!(run.resources.contains("none"), "an unset flag is absent");
    let e = eval(&[("Tiltfile", tf)], &["--other=1"]).expect_err("unknown flag");
    assert!(e.contains("unknown flag: --other"), "{e}");
    fails_with(&[("Tiltfile", "config.parse()\nconfig.define_string('late')\n")], "after config.parse");
}

#[test]
fn starlark_that_go_starlark_or_starlark_rust_rejects_fails() {
    // `while` (starlark-rust), top-level `for`/`if` (starlark-rust's standard dialect),
    // `set` (starlark-rust), private names through load (both).
    fails_with(&[("Tiltfile", "def f():\n    while True:\n        pass\n")], "while");
    fails_with(&[("Tiltfile", "for x in [1]:\n    pass\n")], "`for` cannot be used outside `def`");
    fails_with(&[("Tiltfile", "def f():\n    return set([1])\nf()\n")], "Variable `set` not found");
    fails_with(&[("ext/Tiltfile", "def _p():\n    pass\n"), ("Tiltfile", "load('./ext/Tiltfile', '_p')\n")], "_p");
}

#[test]
fn load_does_not_reexport_as_in_go_starlark() {
    let files = [
        ("a/Tiltfile", "def f():\n    return 1\n"),
        ("b/Tiltfile", "load('./a/Tiltfile', 'f')\ndef g():\n    return f()\n"),
        ("Tiltfile", "load('./b/Tiltfile', 'f')\n"),
    ];
    assert!(eval(&files, &[]).is_err());
}

#[test]
fn every_documented_builtin_is_there_and_nothing_else_of_tilt() {
    let names: Vec<String> = tilt_api().into_keys().filter(|n| n != "load").collect();
    assert!(names.len() > 100, "{}", names.len());
    let tf = format!("def f():\n    return [{}]\n\nx = f()\n", names.join(", "));
    let run = eval(&[("Tiltfile", &tf)], &[]);
    assert!(run.is_ok(), "{run:?}");
}

#[test]
fn probes_need_exactly_one_action() {
    fails_with(&[("Tiltfile", "p = probe(period_secs=1)\n")], "exactly one");
}

#[test]
fn resources_must_exist_as_in_tilt_assembly() {
    fails_with(&[("Tiltfile", "k8s_resource('nothing-deployed', labels=['x'])\n")], "no workload named");
    fails_with(
        &[("Tiltfile", "local_resource('a', cmd='true', resource_deps=['b'])\n")],
        "unknown resource \"b\"",
    );
    fails_with(&[("Tiltfile", "local_resource('a', cmd='true', labels=['-bad'])\n")], "label");
}

/// The copy in this package is the shared one (CI has ../shared beside the repository;
/// elsewhere there is nothing to compare with, and the copy is what the tests use).
#[test]
fn the_api_copy_matches_the_shared_one_when_present() {
    let shared = repo().join("../shared/tilt-api.json");
    if let Ok(text) = std::fs::read_to_string(&shared) {
        assert_eq!(text, tilt_tests::TILT_API_JSON, "{} changed: copy it to tilt_modules/tests/", shared.display());
    }
}
