//! What `devd down` and `devd up --switch` remove from a cluster, and what they keep.
//!
//! An environment on the kubernetes target is one Helm release in the environment's
//! own namespace (plan `namespace`). Removing it is `helm uninstall` there: helm
//! deletes what the release rendered (workloads, Services, ConfigMaps, Secrets, RBAC)
//! and its own release Secrets. The databases' PersistentVolumeClaims come from the
//! StatefulSets' `volumeClaimTemplates`, are not part of the release, and stay, as
//! does the namespace: installing the environment again finds its data. Only
//! `devd down --volumes` deletes those claims (by the labels the chart gives them).
//!
//! Nothing here asks the cluster before the caller has checked the kube context
//! ([`crate::commands::guard_context`]).

use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::api::{Api, DeleteParams, ListParams};

use crate::helm;
use crate::plan::Plan;

/// The label selector of the claims of a release's in-cluster databases.
pub fn claims_selector(release: &str) -> String {
    format!("app.kubernetes.io/instance={release},app.kubernetes.io/component=database")
}

#[derive(Debug, thiserror::Error)]
pub enum UndeployError {
    #[error(transparent)]
    Helm(#[from] helm::HelmError),
    #[error("cannot build a client for the kubeconfig's cluster: {0}")]
    Client(#[source] kube::Error),
    #[error("the kubeconfig is not usable: {0}")]
    Config(#[source] kube::config::InferConfigError),
    #[error("{what} in namespace {namespace}: {source}")]
    Api {
        what: &'static str,
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// What removing one environment did, in lines for the user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Whether the release was installed (helm says `uninstalled` either way).
    pub installed: bool,
    /// helm's own words (`release "stand" uninstalled`), trimmed; empty when devd did
    /// not run it (no release).
    pub helm: String,
    /// The claims deleted (`--volumes`) or kept, by name.
    pub claims: Vec<String>,
    pub claims_deleted: bool,
}

/// Removes `plan`'s release from its namespace (`helm uninstall`); with `volumes`, also
/// the claims of its databases. Returns what it did; the claims it kept are listed too.
/// `client` talks to the kubeconfig's current context ([`client`]).
pub async fn remove(client: &kube::Client, root: &Path, plan: &Plan, volumes: bool) -> Result<Removed, UndeployError> {
    let namespace = plan.namespace.clone();
    // helm's release records (its storage driver's Secrets): `helm uninstall
    // --ignore-not-found` says "uninstalled" whether or not there was one.
    let records: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let installed = !records
        .list_metadata(&ListParams::default().labels(&format!("name={},owner=helm", plan.release)))
        .await
        .map_err(|source| UndeployError::Api { what: "listing helm's release records", namespace: namespace.clone(), source })?
        .items
        .is_empty();
    let helm = if installed { helm::uninstall(&helm::program(), root, plan).await?.stdout.trim().to_owned() } else { String::new() };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let selector = ListParams::default().labels(&claims_selector(&plan.release));
    let found = claims
        .list(&selector)
        .await
        .map_err(|source| UndeployError::Api { what: "listing the PersistentVolumeClaims", namespace: namespace.clone(), source })?;
    let names = names(&found.items);
    if volumes && !names.is_empty() {
        // What was listed is what is reported: the API may answer a collection delete
        // with the list of what it deletes or with a bare Status.
        claims
            .delete_collection(&DeleteParams::background(), &selector)
            .await
            .map_err(|source| UndeployError::Api { what: "deleting the PersistentVolumeClaims", namespace, source })?;
    }
    Ok(Removed { installed, helm, claims: names, claims_deleted: volumes })
}

fn names(claims: &[PersistentVolumeClaim]) -> Vec<String> {
    let mut names: Vec<String> = claims.iter().filter_map(|c| c.metadata.name.clone()).collect();
    names.sort();
    names
}

/// A client for the kubeconfig's current context (the one the context guard judged).
pub async fn client() -> Result<kube::Client, UndeployError> {
    let config = kube::Config::infer().await.map_err(UndeployError::Config)?;
    kube::Client::try_from(config).map_err(UndeployError::Client)
}

/// The lines `devd down` prints for one environment.
pub fn describe(plan: &Plan, removed: &Removed) -> Vec<String> {
    let mut lines = vec![if removed.installed {
        format!("{} (namespace {})", removed.helm, plan.namespace)
    } else {
        format!("no release {} in namespace {}", plan.release, plan.namespace)
    }];
    match (removed.claims_deleted, removed.claims.is_empty()) {
        (true, true) => lines.push(format!("no database volumes in namespace {}", plan.namespace)),
        (true, false) => lines.extend(removed.claims.iter().map(|c| format!("removed volume claim {}/{c}", plan.namespace))),
        (false, true) => {}
        (false, false) => lines.push(format!(
            "kept the databases' data in namespace {}: {} (`devd down --env {} --volumes` removes it)",
            plan.namespace,
            removed.claims.join(", "),
            plan.env
        )),
    }
    lines
}

/// The environments `devd up --env <env> --switch` replaces: every other environment of
/// the stand that runs on kubernetes, may deploy to `context` (so it can be on this
/// cluster) and has a namespace of its own (no two share one).
pub fn replaced_by<'a>(plans: &'a [Plan], env: &str, context: &str) -> Vec<&'a Plan> {
    plans
        .iter()
        .filter(|p| p.env != env && p.target == crate::config::Target::Kubernetes && p.allows_context(context).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config;

    fn plans() -> Vec<Plan> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let stand = match config::load(&root.join("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        stand.env_names().iter().map(|e| crate::plan::resolve(&stand, e, "").expect("resolves")).collect()
    }

    /// On a local cluster a switch to `test` replaces the other live-sync environments;
    /// staging and prod never deploy there, so nothing of theirs is touched. On a
    /// staging context only staging itself may be there.
    #[test]
    fn a_switch_replaces_the_environments_that_may_be_on_the_same_cluster() {
        let plans = plans();
        let envs = |env: &str, context: &str| -> Vec<String> { replaced_by(&plans, env, context).iter().map(|p| p.env.clone()).collect() };
        let on_kind = envs("test", "kind-stand");
        assert!(on_kind.contains(&"local".to_owned()), "{on_kind:?}");
        assert!(!on_kind.contains(&"test".to_owned()), "{on_kind:?}");
        assert!(!on_kind.iter().any(|e| e == "staging" || e == "prod"), "{on_kind:?}");
        assert!(envs("staging", "staging-eu").is_empty());
        assert_eq!(envs("prod", "staging-eu"), ["staging"]);
    }

    #[test]
    fn what_down_says_kept_and_deleted() {
        let plans = plans();
        let local = plans.iter().find(|p| p.env == "local").expect("local");
        let kept = Removed { installed: true, helm: "release \"stand\" uninstalled".into(), claims: vec!["data-postgres-service1-0".into()], claims_deleted: false };
        assert_eq!(
            describe(local, &kept),
            [
                "release \"stand\" uninstalled (namespace stand-local)",
                "kept the databases' data in namespace stand-local: data-postgres-service1-0 (`devd down --env local --volumes` removes it)",
            ]
        );
        let deleted = Removed { claims_deleted: true, ..kept };
        assert_eq!(describe(local, &deleted)[1], "removed volume claim stand-local/data-postgres-service1-0");
        let none = Removed::default();
        assert_eq!(describe(local, &none), ["no release stand in namespace stand-local"]);
        assert_eq!(claims_selector("stand"), "app.kubernetes.io/instance=stand,app.kubernetes.io/component=database");
    }
}
