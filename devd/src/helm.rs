//! `devd up` deploys the stand with the helm CLI: `helm upgrade --install`; `devd
//! down` (and `devd up --switch`, for the environments it replaces) removes it with
//! `helm uninstall`.
//!
//! [`upgrade_args`] and [`uninstall_args`] are pure functions of the plan (tested for
//! every environment); [`upgrade`] and [`uninstall`] run them. Without Tilt this is how the chart gets to the cluster; with
//! Tilt, Tilt deploys and `devd up --no-deploy` only syncs.
//!
//! No `--wait`: devd watches the pods itself and syncs each one as it starts, so
//! waiting for helm would only delay the first sync (and helm 4's `--wait` takes a
//! strategy whose default differs from helm 3's).

use std::path::{Path, PathBuf};
use std::process::Stdio;

pub use stand_model::helm::{uninstall_args, upgrade_args};
use stand_model::plan::Plan;

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

/// What a finished helm command printed.
#[derive(Debug, Clone)]
pub struct HelmOutput {
    pub command: String,
    pub stdout: String,
}

/// Runs `helm` (`program`, e.g. `helm` from PATH) with [`upgrade_args`] in `root`.
pub async fn upgrade(program: &Path, root: &Path, plan: &Plan) -> Result<HelmOutput, HelmError> {
    tracing::info!(release = %plan.release, namespace = %plan.namespace, "deploying with helm");
    run(program, root, &upgrade_args(plan)).await
}

/// Runs `helm` with [`uninstall_args`] in `root`: the release is gone afterwards (or
/// was not there), its PersistentVolumeClaims stay.
pub async fn uninstall(program: &Path, root: &Path, plan: &Plan) -> Result<HelmOutput, HelmError> {
    tracing::info!(release = %plan.release, namespace = %plan.namespace, "removing the release with helm");
    run(program, root, &uninstall_args(plan)).await
}

async fn run(program: &Path, root: &Path, args: &[String]) -> Result<HelmOutput, HelmError> {
    let command = std::iter::once(program.display().to_string())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running helm");
    let mut helm = tokio::process::Command::new(program);
    // helm talks to the cluster devd checked: the kubeconfig's current context. Its own
    // overrides would point it elsewhere (HELM_KUBECONTEXT=prod while the current
    // context is kind-stand), past the context guard.
    for var in HELM_CLUSTER_OVERRIDES {
        helm.env_remove(var);
    }
    let output = helm
        .args(args)
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

/// helm's environment variables that choose another cluster, user or API server than
/// the kubeconfig's current context (helm's `--kube-*` flags).
pub const HELM_CLUSTER_OVERRIDES: &[&str] = &[
    "HELM_KUBECONTEXT",
    "HELM_KUBEAPISERVER",
    "HELM_KUBETOKEN",
    "HELM_KUBEASUSER",
    "HELM_KUBEASGROUPS",
    "HELM_KUBECAFILE",
    "HELM_KUBEINSECURE_SKIP_TLS_VERIFY",
    "HELM_KUBETLS_SERVER_NAME",
];

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

    /// A `helm` in `dir` that runs `script` (sh).
    fn fake_helm(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let fake = dir.join("helm");
        std::fs::write(&fake, format!("#!/bin/sh\n{script}\n")).expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        fake
    }

    fn local_plan() -> Plan {
        let stand = match config::load(&root().join("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        plan::resolve(&stand, "local", "x86_64-unknown-linux-gnu").expect("resolves")
    }

    #[tokio::test]
    async fn a_failing_helm_says_what_it_ran_and_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = fake_helm(dir.path(), "echo \"Error: Kubernetes cluster unreachable ($1 $2 $3)\" >&2\nexit 1");
        let plan = local_plan();
        let err = upgrade(&fake, &root(), &plan).await.expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("upgrade --install stand helm/app"), "{text}");
        assert!(text.contains("Kubernetes cluster unreachable (upgrade --install stand)"), "{text}");
        let err = upgrade(&dir.path().join("nope"), &root(), &plan).await.expect_err("no helm");
        assert!(matches!(err, HelmError::Spawn { .. }), "{err}");
    }

    /// helm never gets a cluster other than the kubeconfig's current context, the one
    /// devd's context guard judged: its HELM_KUBE* overrides are not passed on.
    #[tokio::test]
    async fn helm_does_not_inherit_overrides_of_the_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = fake_helm(dir.path(), "echo \"$1 context=${HELM_KUBECONTEXT:-unset} server=${HELM_KUBEAPISERVER:-unset} token=${HELM_KUBETOKEN:-unset}\"");
        // nextest runs each test in a process of its own: this changes no other test.
        std::env::set_var("HELM_KUBECONTEXT", "prod");
        std::env::set_var("HELM_KUBEAPISERVER", "https://prod.example:6443");
        std::env::set_var("HELM_KUBETOKEN", "s3cr3t");
        let plan = local_plan();
        for out in [uninstall(&fake, &root(), &plan).await.expect("runs"), upgrade(&fake, &root(), &plan).await.expect("runs")] {
            assert!(out.stdout.contains("context=unset server=unset token=unset"), "{}", out.stdout);
        }
    }
}
