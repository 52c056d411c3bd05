//! The CI files cannot rot unseen: the workflows pass zizmor (no finding above
//! informational) and GitHub's workflow schema, every action is pinned by commit with
//! its version beside it, and every shell script passes shellcheck.

use std::process::Command;

use script_tests::{run, shell_scripts, workflows};

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
