//! scripts/e2e-cluster without a cluster: `--help`, argument parsing and step selection,
//! the loader from the context's name, the summary table, and the fast failure when the
//! kube context points at nothing. Real bash, real kubectl.

use std::net::TcpListener;
use std::time::Duration;

use script_tests::{e2e_cluster, with_e2e_functions};

#[test]
fn help_names_every_step_and_option() {
    let r = e2e_cluster(&["--help"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.both());
    assert!(r.stdout.starts_with("Usage: bash scripts/e2e-cluster"), "{}", r.stdout);
    for step in 1..=8 {
        assert!(r.stdout.contains(&format!("\n  {step}  ")), "step {step} missing from --help:\n{}", r.stdout);
    }
    for opt in ["--only LIST", "--skip LIST", "--list", "--loader KIND", "--cluster NAME", "--devd PATH", "--artifacts DIR", "--fail-fast", "E2E_DEADLINE_FACTOR", "Exit status"] {
        assert!(r.stdout.contains(opt), "{opt} missing from --help:\n{}", r.stdout);
    }
    assert!(r.stderr.is_empty(), "{}", r.both());
}

#[test]
fn list_prints_the_selected_steps() {
    let r = e2e_cluster(&["--list", "--only", "2-4", "--skip", "3"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.both());
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[0].starts_with("2  devd up --env local"), "{}", r.stdout);
    assert!(lines[1].starts_with("4  delete service1's pod"), "{}", r.stdout);
}

#[test]
fn bad_usage_exits_2_and_says_why() {
    let cases: &[(&[&str], &str)] = &[
        (&["--only", "9"], "'9' is not a step"),
        (&["--only", "0"], "'0' is not a step"),
        (&["--only", "2,x"], "'x' is not a step"),
        (&["--only", "4-2"], "step range '4-2' runs backwards"),
        (&["--only", "2,,3"], "'' is not a step"),
        (&["--only"], "--only needs a value"),
        (&["--skip", "--fail-fast"], "--skip needs a value"),
        (&["--only="], "--only needs a value"),
        (&["--frobnicate"], "unknown argument '--frobnicate'"),
        (&["--loader", "podman"], "--loader must be auto, kind, k3d or none, not 'podman'"),
        (&["--only", "3", "--skip", "1-8"], "leave no step to run"),
    ];
    for (args, want) in cases {
        let r = e2e_cluster(args, &[]);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.both());
        assert!(r.stderr.contains(want), "{args:?}: expected {want:?} in stderr:\n{}", r.both());
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.both());
    }
}

#[test]
fn step_lists_and_selection() {
    let r = with_e2e_functions(
        r#"
        echo "list: $(e2e_parse_list 3,1-2,3 | tr '\n' ' ')"
        echo "all but 7: $(e2e_select '' 7 | tr '\n' ' ')"
        echo "only 2-4,8 skip 3: $(e2e_select 2-4,8 3 | tr '\n' ' ')"
        echo "everything: $(e2e_select '' '' | tr '\n' ' ')"
        "#,
    );
    assert_eq!(r.code, Some(0), "{}", r.both());
    assert_eq!(
        r.stdout,
        "list: 1 2 3 \nall but 7: 1 2 3 4 5 6 8 \nonly 2-4,8 skip 3: 2 4 8 \neverything: 1 2 3 4 5 6 7 8 \n"
    );
}

#[test]
fn options_are_parsed_in_both_spellings() {
    let r = with_e2e_functions(
        r#"
        e2e_parse_args --only=2,3 --loader k3d --cluster=dev --devd /opt/devd --artifacts=/tmp/a --fail-fast
        echo "$E2E_ACTION|${E2E_STEPS[*]}|$E2E_LOADER|$E2E_CLUSTER|$E2E_DEVD|$E2E_ARTIFACTS|$E2E_FAIL_FAST"
        e2e_parse_args
        echo "$E2E_ACTION|${E2E_STEPS[*]}|$E2E_LOADER|$E2E_CLUSTER|$E2E_DEVD|${E2E_ARTIFACTS##*/}|$E2E_FAIL_FAST"
        e2e_parse_args --skip 1,7 --help
        echo "$E2E_ACTION"
        "#,
    );
    assert_eq!(r.code, Some(0), "{}", r.both());
    assert_eq!(
        r.stdout,
        "run|2 3|k3d|dev|/opt/devd|/tmp/a|1\nrun|1 2 3 4 5 6 7 8|auto|||e2e-cluster|0\nhelp\n"
    );
}

#[test]
fn loader_follows_the_context_name() {
    let r = with_e2e_functions(
        r#"
        for c in kind-stand kind-my-cluster k3d-dev kind- k3d- minikube docker-desktop prod-eu; do
          printf '%s=%s\n' "$c" "$(e2e_loader_for_context "$c")"
        done
        "#,
    );
    assert_eq!(r.code, Some(0), "{}", r.both());
    assert_eq!(
        r.stdout,
        "kind-stand=kind stand\nkind-my-cluster=kind my-cluster\nk3d-dev=k3d dev\nkind-=none\nk3d-=none\n\
         minikube=none\ndocker-desktop=none\nprod-eu=none\n"
    );
}

#[test]
fn summary_table_has_a_row_per_step_and_the_notes() {
    let r = with_e2e_functions(
        r#"
        e2e_record 1 ok 73 "built and loaded (kind): stand/service1:dev stand/service2:dev"
        e2e_record 2 FAILED 600 "deployment/service1 in namespace stand was not rolled out | before the deadline"
        e2e_record 3 "not run" 0 ""
        e2e_summary
        echo ===
        e2e_summary_markdown
        "#,
    );
    assert_eq!(r.code, Some(0), "{}", r.both());
    let (table, markdown) = r.stdout.split_once("===\n").expect("both tables");
    let lines: Vec<&str> = table.lines().collect();
    // blank line, header, rule, three rows, two notes
    assert_eq!(lines.len(), 8, "{table}");
    assert_eq!(lines[0], "");
    let header = lines[1];
    assert!(header.starts_with("step  what it proves"), "{header}");
    let result_col = header.find("result").expect("result column");
    let secs_end = header.len();
    assert!(header.ends_with("seconds"), "{header}");
    let rows = &lines[3..6];
    for (row, (step, result, secs)) in rows.iter().zip([("1", "ok", "73"), ("2", "FAILED", "600"), ("3", "not run", "0")]) {
        assert!(row.starts_with(&format!("{step:<4}  ")), "{row}");
        assert_eq!(&row[result_col..result_col + result.len()], result, "result column of {row:?}");
        assert_eq!(row.len(), secs_end, "seconds right-aligned under the header: {row:?}");
        assert!(row.ends_with(&format!(" {secs}")), "{row}");
    }
    assert!(rows[1].contains("devd up --env local: pods Ready, /health, /db-status, POST an item"), "{}", rows[1]);
    assert_eq!(lines[6], "step 1: built and loaded (kind): stand/service1:dev stand/service2:dev");
    assert_eq!(lines[7], "step 2: deployment/service1 in namespace stand was not rolled out | before the deadline");

    let md: Vec<&str> = markdown.lines().collect();
    assert_eq!(md[0], "| step | what it proves | result | seconds | note |");
    assert_eq!(md.len(), 5, "{markdown}");
    assert!(md[3].ends_with(r"| FAILED | 600 | deployment/service1 in namespace stand was not rolled out \| before the deadline |"), "{}", md[3]);
}

fn kubeconfig(dir: &std::path::Path, server: &str, current: bool) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let current = if current { "current-context: kind-e2e-test\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{server}\"}}\n\
             contexts:\n- name: kind-e2e-test\n  context: {{cluster: e2e, user: e2e}}\n{current}\
             users:\n- name: e2e\n  user: {{token: not-a-token}}\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

#[test]
fn no_reachable_cluster_fails_fast_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: bound once to learn a free one, then closed.
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind").port();
    let kc = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"), true);
    let artifacts = dir.path().join("artifacts");
    let r = e2e_cluster(&["--artifacts", artifacts.to_str().expect("utf-8 path")], &[("KUBECONFIG", &kc), ("HOME", dir.path())]);
    assert_eq!(r.code, Some(3), "{}", r.both());
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}: {}", r.elapsed, r.both());
    for want in ["no reachable cluster", "context 'kind-e2e-test'", &format!("127.0.0.1:{port}"), "kind create cluster"] {
        assert!(r.stderr.contains(want), "expected {want:?} in stderr:\n{}", r.both());
    }
    assert!(!artifacts.exists(), "nothing is started or written before the cluster answers");
}

#[test]
fn a_kubeconfig_without_current_context_fails_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kc = kubeconfig(dir.path(), "https://127.0.0.1:9", false);
    let r = e2e_cluster(&["--only", "2"], &[("KUBECONFIG", &kc), ("HOME", dir.path())]);
    assert_eq!(r.code, Some(3), "{}", r.both());
    assert!(r.stderr.contains("no reachable cluster") && r.stderr.contains("has no current context"), "{}", r.both());
}

/// devd's `status --json`, serialized by devd's own types: service1 with one pod on the
/// current artifact, service2 with one pod on an older one, service3 without pods.
fn status_json() -> String {
    use devd::status::{ArtifactStatus, Health, HealthReport, InstanceStatus, ServiceStatus, StandStatus};
    let artifact = |sha: &str| Some(ArtifactStatus { sha256: sha.into(), ..Default::default() });
    let pod = |id: &str, hash: &str, healthy: bool| {
        let mut instance = InstanceStatus { id: id.into(), url: None, hash: Some(hash.into()), ..Default::default() };
        instance.set_health(HealthReport { health: if healthy { Health::Ok } else { Health::Unreachable }, detail: None });
        instance
    };
    let status = StandStatus {
        env: "local".into(),
        target: "kubernetes".into(),
        services: vec![
            ServiceStatus {
                name: "service1".into(),
                artifact: artifact("a1"),
                instances: vec![pod("service1-7d9f-abcde", "a1", true)],
                last_edit_to_serving_ms: Some(950),
                ..Default::default()
            },
            ServiceStatus {
                name: "service2".into(),
                artifact: artifact("b2"),
                instances: vec![pod("service2-1", "b2", true), pod("service2-2", "b1", true)],
                ..Default::default()
            },
            ServiceStatus { name: "service3".into(), artifact: artifact("c3"), ..Default::default() },
            ServiceStatus {
                name: "service4".into(),
                artifact: artifact("d4"),
                instances: vec![pod("service4-1", "d4", false)],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    serde_json::to_string(&status).expect("serialize")
}

#[test]
fn synced_means_pods_exist_and_all_run_the_current_artifact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("status.json");
    std::fs::write(&json, status_json()).expect("write");
    let r = with_e2e_functions(&format!(
        r#"
        s={json}
        for q in "service1" "service1 service1-7d9f-abcde" "service1 service1-other" "service2" "service3" "service4" "service9"; do
          # shellcheck disable=SC2086
          out=$(e2e_synced $q <"$s") && echo "$q: synced $out" || echo "$q: not synced"
        done
        "#,
        json = json.display()
    ));
    assert_eq!(r.code, Some(0), "{}", r.both());
    assert_eq!(
        r.stdout,
        "service1: synced a1 950\nservice1 service1-7d9f-abcde: synced a1 950\nservice1 service1-other: not synced\n\
         service2: not synced\nservice3: not synced\nservice4: not synced\nservice9: not synced\n"
    );
}

#[test]
fn the_checkout_is_restored_to_what_it_was_before_the_steps() {
    // A git work tree with a committed file, an uncommitted edit and an untracked file
    // of the user's: the snapshot keeps them; the scenario's edit, its new crate and a
    // deletion are undone; the user's own changes survive.
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(repo.join("services/service1/src")).expect("mkdir");
    std::fs::create_dir_all(&artifacts).expect("mkdir");
    let r = with_e2e_functions(&format!(
        r#"
        cd {repo}
        export HOME={repo}/.. GIT_CONFIG_NOSYSTEM=1    # no git configuration of the machine's
        git init -q .
        printf 'pub const MESSAGE: &str = "hello";\n' >services/service1/src/lib.rs
        printf '[workspace]\nmembers = ["services/service1"]\n' >Cargo.toml
        printf 'keep\n' >stand.toml
        git add -A && git -c user.email=t@example.com -c user.name=t commit -qm init
        printf 'users edit\n' >>stand.toml          # uncommitted, the user's
        printf 'notes\n' >NOTES.txt                 # untracked, the user's
        E2E_ROOT={repo} E2E_ARTIFACTS={artifacts}
        snapshot_tree
        sed -i 's/hello/edited/' services/service1/src/lib.rs
        printf '[workspace]\nmembers = ["services/service1", "services/service3"]\n' >Cargo.toml
        mkdir -p services/service3/src && printf 'fn main() {{}}\n' >services/service3/src/main.rs
        rm stand.toml
        restore_tree 2>/dev/null
        cat services/service1/src/lib.rs Cargo.toml stand.toml NOTES.txt
        [[ ! -e services/service3 ]] && echo "service3 gone"
        git status --porcelain
        "#,
        repo = repo.display(),
        artifacts = artifacts.display()
    ));
    assert_eq!(r.code, Some(0), "{}", r.both());
    assert_eq!(
        r.stdout,
        "pub const MESSAGE: &str = \"hello\";\n[workspace]\nmembers = [\"services/service1\"]\n\
         keep\nusers edit\nnotes\nservice3 gone\n M stand.toml\n?? NOTES.txt\n"
    );
}
