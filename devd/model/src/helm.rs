//! The `helm` command line of a plan: a pure function, run by devd (`devd up` without
//! Tilt) and tested for every environment.

use crate::plan::Plan;

/// The arguments of `helm` for the plan, to be run in the stand's root (the plan's
/// chart and values paths are relative to it):
/// `upgrade --install <release> <chart> --namespace <ns> --create-namespace
/// [-f <values>]...`: the generated values file first, then the environment's extra
/// files. No `--set`: everything the plan says is in the generated file, so a plain
/// `helm upgrade --install ... -f <chart>/values-<env>.yaml` deploys the same.
pub fn upgrade_args(plan: &Plan) -> Vec<String> {
    let mut args = vec![
        "upgrade".to_owned(),
        "--install".to_owned(),
        plan.release.clone(),
        plan.chart.clone(),
        "--namespace".to_owned(),
        plan.namespace.clone(),
        "--create-namespace".to_owned(),
    ];
    for file in &plan.values {
        args.push("-f".to_owned());
        args.push(file.clone());
    }
    args
}

/// The arguments of `helm` that remove the plan's release from its namespace:
/// `uninstall <release> --namespace <ns> --ignore-not-found` (`devd down`, and
/// `devd up --switch` for the environments it replaces). Helm deletes what the release
/// rendered; the PersistentVolumeClaims of the databases' `volumeClaimTemplates` are
/// not part of it and stay, and so does the namespace.
pub fn uninstall_args(plan: &Plan) -> Vec<String> {
    ["uninstall", &plan.release, "--namespace", &plan.namespace, "--ignore-not-found"]
        .map(str::to_owned)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config;
    use crate::plan;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every environment of the shipped stand.toml: the release, chart and namespace
    /// come first, then its values files in order (each exists, the generated one
    /// first), and nothing else.
    #[test]
    fn argv_for_every_shipped_environment() {
        let root = root();
        let stand = match config::load(&root.join("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let envs = stand.env_names();
        assert!(envs.len() >= 8, "{envs:?}");
        for env in envs {
            let plan = plan::resolve(&stand, &env, "x86_64-unknown-linux-gnu").expect("resolves");
            let args = upgrade_args(&plan);
            let head: Vec<&str> = args.iter().take(7).map(String::as_str).collect();
            let namespace = format!("stand-{env}");
            assert_eq!(
                head,
                ["upgrade", "--install", "stand", "helm/app", "--namespace", namespace.as_str(), "--create-namespace"],
                "{env}: each environment in a namespace of its own"
            );
            let rest = &args[7..];
            let files: Vec<&str> = rest
                .chunks(2)
                .filter(|c| c[0] == "-f")
                .map(|c| c[1].as_str())
                .collect();
            assert_eq!(files, plan.values.iter().map(String::as_str).collect::<Vec<_>>(), "{env}");
            assert_eq!(files.first().copied(), Some(format!("helm/app/values-{env}.yaml").as_str()), "{env}: {files:?}");
            for f in &files {
                assert!(root.join(f).is_file(), "{env}: {f} does not exist");
            }
            assert_eq!(rest.len(), 2 * files.len(), "{env}: only -f pairs");
        }
    }

    #[test]
    fn local_argv_exactly() {
        let stand = match config::load(&root().join("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let plan = plan::resolve(&stand, "local", "x86_64-unknown-linux-gnu").expect("resolves");
        assert_eq!(
            upgrade_args(&plan).join(" "),
            "upgrade --install stand helm/app --namespace stand-local --create-namespace -f helm/app/values-local.yaml"
        );
    }

    #[test]
    fn uninstall_argv_names_the_release_in_each_environments_namespace() {
        let stand = match config::load(&root().join("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        for env in stand.env_names() {
            let plan = plan::resolve(&stand, &env, "x86_64-unknown-linux-gnu").expect("resolves");
            assert_eq!(
                uninstall_args(&plan).join(" "),
                format!("uninstall stand --namespace stand-{env} --ignore-not-found"),
                "{env}"
            );
        }
    }
}
