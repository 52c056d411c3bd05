//! `devd up` deploys the stand with the helm CLI: `helm upgrade --install`.
//!
//! [`upgrade_args`] is a pure function of the plan (tested for every environment);
//! [`upgrade`] runs it. Without Tilt this is how the chart gets to the cluster; with
//! Tilt, Tilt deploys and `devd up --no-deploy` only syncs.
//!
//! No `--wait`: devd watches the pods itself and syncs each one as it starts, so
//! waiting for helm would only delay the first sync (and helm 4's `--wait` takes a
//! strategy whose default differs from helm 3's).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("cannot run {program}: {source} (install helm: https://helm.sh/docs/intro/install/, or run `bash scripts/setup`)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed { command: String, status: String, stderr: String },
}

/// A value for `helm --set`: helm splits on `,` and treats `\` as an escape, so both
/// are escaped; everything else is taken as it is.
pub fn escape_set_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The arguments of `helm` for the plan, to be run in the stand's root (the plan's
/// chart and values paths are relative to it):
/// `upgrade --install <release> <chart> --namespace <ns> --create-namespace
/// [-f <values>]... [--set <key>=<value>]...`. `--set` comes after the values files
/// and wins over them, as in the plan.
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
    for (key, value) in &plan.set {
        args.push("--set".to_owned());
        args.push(format!("{key}={}", escape_set_value(value)));
    }
    args
}

/// What a finished `helm upgrade --install` printed.
#[derive(Debug, Clone)]
pub struct HelmOutput {
    pub command: String,
    pub stdout: String,
}

/// Runs `helm` (`program`, e.g. `helm` from PATH) with [`upgrade_args`] in `root`.
pub async fn upgrade(program: &Path, root: &Path, plan: &Plan) -> Result<HelmOutput, HelmError> {
    let args = upgrade_args(plan);
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(%command, "deploying with helm");
    let output = tokio::process::Command::new(program)
        .args(&args)
        .current_dir(root)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| HelmError::Spawn { program: program.display().to_string(), source })?;
    if !output.status.success() {
        return Err(HelmError::Failed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(HelmOutput { command, stdout: String::from_utf8_lossy(&output.stdout).into_owned() })
}

/// The helm to run: `$STAND_HELM`, else `helm` from PATH.
pub fn program() -> PathBuf {
    std::env::var_os("STAND_HELM").map_or_else(|| PathBuf::from("helm"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config;
    use crate::plan;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
    }

    #[test]
    fn set_values_are_escaped() {
        assert_eq!(escape_set_value("plain"), "plain");
        assert_eq!(escape_set_value("a,b"), "a\\,b");
        assert_eq!(escape_set_value("c:\\x"), "c:\\\\x");
        assert_eq!(escape_set_value("k=v"), "k=v");
    }

    /// Every environment of the shipped stand.toml: the release, chart and namespace
    /// come first, then its values files in order (each exists), then one `--set` per
    /// plan override, the service images among them.
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
            assert_eq!(
                head,
                ["upgrade", "--install", "stand", "helm/app", "--namespace", "stand", "--create-namespace"],
                "{env}"
            );
            let rest = &args[7..];
            let files: Vec<&str> = rest
                .chunks(2)
                .filter(|c| c[0] == "-f")
                .map(|c| c[1].as_str())
                .collect();
            assert_eq!(files, plan.values.iter().map(String::as_str).collect::<Vec<_>>(), "{env}");
            assert!(files.contains(&format!("helm/app/values-{env}.yaml").as_str()), "{env}: {files:?}");
            for f in &files {
                assert!(root.join(f).is_file(), "{env}: {f} does not exist");
            }
            let sets: Vec<&str> = rest
                .chunks(2)
                .filter(|c| c[0] == "--set")
                .map(|c| c[1].as_str())
                .collect();
            assert_eq!(rest.len(), 2 * (files.len() + sets.len()), "{env}: only -f and --set pairs");
            assert_eq!(sets.len(), plan.set.len(), "{env}");
            assert!(
                rest.iter().position(|a| a == "--set").unwrap_or(usize::MAX)
                    > rest.iter().rposition(|a| a == "-f").unwrap_or(0),
                "{env}: --set after the values files"
            );
            for svc in &plan.services {
                let repo = format!("services.{}.image.repository={}", svc.name, svc.image.repository);
                let tag = format!("services.{}.image.tag={}", svc.name, svc.image.tag);
                assert!(sets.contains(&repo.as_str()), "{env}: {repo} in {sets:?}");
                assert!(sets.contains(&tag.as_str()), "{env}: {tag} in {sets:?}");
            }
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
            "upgrade --install stand helm/app --namespace stand --create-namespace \
             -f helm/app/values-local.yaml \
             --set services.service1.image.repository=stand/service1 --set services.service1.image.tag=dev \
             --set services.service2.image.repository=stand/service2 --set services.service2.image.tag=dev"
        );
    }

    #[tokio::test]
    async fn a_failing_helm_says_what_it_ran_and_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("helm");
        std::fs::write(&fake, "#!/bin/sh\necho \"Error: Kubernetes cluster unreachable ($1 $2 $3)\" >&2\nexit 1\n")
            .expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let stand = match config::load(&root().join("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let plan = plan::resolve(&stand, "local", "x86_64-unknown-linux-gnu").expect("resolves");
        let err = upgrade(&fake, &root(), &plan).await.expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("upgrade --install stand helm/app"), "{text}");
        assert!(text.contains("Kubernetes cluster unreachable (upgrade --install stand)"), "{text}");
        let err = upgrade(&dir.path().join("nope"), &root(), &plan).await.expect_err("no helm");
        assert!(matches!(err, HelmError::Spawn { .. }), "{err}");
    }
}
