//! An environment resolved: what devd (and Tilt, and Helm) will run for it.
//!
//! [`resolve`] is a pure function of the parsed stand.toml, the environment's name and
//! the host's target triple (found at the edge, see [`host_triple_from_rustc`]). The
//! plan serializes to stable JSON: structs in declaration order, services sorted by
//! name, maps as `BTreeMap`.

use serde::Serialize;

use crate::config::{
    DbMode, Merged, SslMode, Stand, Target, DEFAULT_DB_PORT, DEFAULT_IMAGE_TAG,
    DEFAULT_SECRET_KEY, DEFAULT_SIZE,
};

/// The address of devd's status API: loopback only.
pub const API_HOST: &str = "127.0.0.1";

/// One environment, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The environment's name, e.g. `local`.
    pub env: String,
    pub description: String,
    pub target: Target,
    /// `[stand] name`.
    pub stand: String,
    /// The environment's own namespace (`<stand>-<env>` unless it names one).
    pub namespace: String,
    /// The kube contexts (glob patterns) the environment may deploy to; empty: none.
    pub contexts: Vec<String>,
    pub release: String,
    /// The chart's directory, relative to the stand's root.
    pub chart: String,
    /// Helm values files, relative to the stand's root: the generated
    /// `<chart>/values-<env>.yaml` first (topology and the environment's `helm` table),
    /// then the environment's extra hand-written files in the order given.
    pub values: Vec<String>,
    pub live_sync: bool,
    pub api: Api,
    pub build: Build,
    /// Enabled services, sorted by name.
    pub services: Vec<ServicePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Api {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// The rustc target triple service binaries are built for.
    pub target_triple: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    pub name: String,
    /// Cargo package.
    pub package: String,
    /// Crate directory, relative to the stand's root.
    pub path: String,
    pub port: u16,
    pub image: Image,
    pub replicas: u32,
    pub database: DatabasePlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    pub repository: String,
    pub tag: String,
}

/// A service's database in this environment. Keys that mean nothing for the mode are
/// null: everything but `mode` for none; `size` when persistence is off; `sslmode` for
/// in-cluster; `persistence`, `size`, `storage_class` for external.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabasePlan {
    pub mode: DbMode,
    pub persistence: Option<bool>,
    pub size: Option<String>,
    /// `""` means the cluster's default StorageClass.
    pub storage_class: Option<String>,
    /// For in-cluster databases the chart's Service `postgres-<service>`.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub user: Option<String>,
    /// Where the password is: the existing Secret for external databases, the chart's
    /// `postgres-<service>` Secret for in-cluster ones.
    pub secret: Option<SecretRef>,
    pub sslmode: Option<SslMode>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// Why an environment could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown environment `{env}`; valid: {}", valid.join(", "))]
    UnknownEnv { env: String, valid: Vec<String> },
    /// Only for a `Stand` built without [`Stand::parse`]'s cross-checks.
    #[error("environment `{env}` names unknown service `{service}`; valid: {}", valid.join(", "))]
    UnknownService {
        env: String,
        service: String,
        valid: Vec<String>,
    },
}

/// Why an environment may not deploy to a kube context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextRefused {
    #[error("env `{env}` may not deploy to kube context `{context}`: its contexts are {} (stand.toml, [env.{env}] contexts)", patterns.join(", "))]
    NotListed { env: String, context: String, patterns: Vec<String> },
    #[error("env `{env}` may not deploy to kube context `{context}`: it names no context it may deploy to (stand.toml: contexts = [\"<your cluster's context>\"] in [env.{env}])")]
    NoneListed { env: String, context: String },
}

impl Plan {
    /// Whether this environment may deploy to kube context `context`.
    pub fn allows_context(&self, context: &str) -> Result<(), ContextRefused> {
        if crate::config::context_allowed(&self.contexts, context) {
            return Ok(());
        }
        let (env, context) = (self.env.clone(), context.to_owned());
        Err(if self.contexts.is_empty() {
            ContextRefused::NoneListed { env, context }
        } else {
            ContextRefused::NotListed { env, context, patterns: self.contexts.clone() }
        })
    }
}

/// Resolve environment `env` of `stand`. `host_triple` is the triple to build for when the
/// environment names no `build_target` (the host's, from [`host_triple_from_rustc`]).
pub fn resolve(stand: &Stand, env: &str, host_triple: &str) -> Result<Plan, PlanError> {
    let Some(e) = stand.environment(env) else {
        return Err(PlanError::UnknownEnv {
            env: env.to_owned(),
            valid: stand.env_names(),
        });
    };
    let section = stand.section();
    let tag = e
        .image_tag
        .as_ref()
        .map_or(DEFAULT_IMAGE_TAG, |t| t.get_ref().as_str())
        .to_owned();

    let mut names: Vec<&str> = e
        .services
        .get_ref()
        .iter()
        .map(|s| s.get_ref().as_str())
        .collect();
    names.sort_unstable();
    names.dedup();

    let mut services = Vec::with_capacity(names.len());
    for name in names {
        let Some(svc) = stand.service(name) else {
            return Err(PlanError::UnknownService {
                env: env.to_owned(),
                service: name.to_owned(),
                valid: stand.service_names(),
            });
        };
        let over = e.overrides.get(name);
        let replicas = over
            .and_then(|o| o.replicas.as_ref())
            .or(e.replicas.as_ref())
            .map_or(1, |r| *r.get_ref());
        let image = Image {
            repository: svc.image.get_ref().clone(),
            tag: tag.clone(),
        };
        let database = match stand.database_for(e, name) {
            Some(m) => database_plan(name, &m),
            None => DatabasePlan::none(),
        };
        services.push(ServicePlan {
            name: name.to_owned(),
            package: svc.package.get_ref().clone(),
            path: svc.path.get_ref().clone(),
            port: *svc.port.get_ref(),
            image,
            replicas,
            database,
        });
    }
    Ok(Plan {
        env: env.to_owned(),
        description: e.description.clone(),
        target: e.target,
        stand: section.name.get_ref().clone(),
        namespace: stand.namespace_of(env, e),
        contexts: Stand::contexts_of(e),
        release: section.release.get_ref().clone(),
        chart: section.chart.get_ref().clone(),
        values: std::iter::once(crate::values::file_for(section.chart.get_ref(), env))
            .chain(e.values.iter().map(|v| v.get_ref().clone()))
            .collect(),
        live_sync: e.live_sync,
        api: Api {
            host: API_HOST.to_owned(),
            port: stand.api_port(),
        },
        build: Build {
            target_triple: e
                .build_target
                .as_ref()
                .map_or_else(|| host_triple.to_owned(), |t| t.get_ref().clone()),
        },
        services,
    })
}

impl DatabasePlan {
    fn none() -> Self {
        DatabasePlan {
            mode: DbMode::None,
            persistence: None,
            size: None,
            storage_class: None,
            host: None,
            port: None,
            name: None,
            user: None,
            secret: None,
            sslmode: None,
        }
    }
}

fn database_plan(service: &str, m: &Merged<'_>) -> DatabasePlan {
    let string = |v: Option<&toml::Spanned<String>>, default: &str| {
        v.map_or_else(|| default.to_owned(), |s| s.get_ref().clone())
    };
    match m.mode() {
        DbMode::None => DatabasePlan::none(),
        DbMode::InCluster => {
            let persistence = m.persistence.is_none_or(|p| *p.get_ref());
            DatabasePlan {
                mode: DbMode::InCluster,
                persistence: Some(persistence),
                size: persistence.then(|| string(m.size, DEFAULT_SIZE)),
                storage_class: persistence.then(|| string(m.storage_class, "")),
                host: Some(format!("postgres-{service}")),
                port: Some(DEFAULT_DB_PORT),
                name: Some(string(m.name, &default_db_identifier(service))),
                user: Some(string(m.user, &default_db_identifier(service))),
                secret: Some(SecretRef {
                    name: format!("postgres-{service}"),
                    key: DEFAULT_SECRET_KEY.to_owned(),
                }),
                sslmode: None,
            }
        }
        DbMode::External => DatabasePlan {
            mode: DbMode::External,
            persistence: None,
            size: None,
            storage_class: None,
            host: m.host.map(|h| h.get_ref().clone()),
            port: Some(m.port.map_or(DEFAULT_DB_PORT, |p| *p.get_ref())),
            name: Some(string(m.name, &default_db_identifier(service))),
            user: Some(string(m.user, &default_db_identifier(service))),
            secret: m.secret.map(|s| SecretRef {
                name: s.get_ref().clone(),
                key: string(m.secret_key, DEFAULT_SECRET_KEY),
            }),
            sslmode: Some(m.sslmode.map_or(SslMode::default(), |s| *s.get_ref())),
        },
    }
}

/// A service's database and user name when stand.toml gives none: the service's name
/// with `-` as `_`, since PostgreSQL identifiers (and the chart's schema) take no `-`.
pub fn default_db_identifier(service: &str) -> String {
    service.replace('-', "_")
}

/// The host triple from the output of `rustc -vV` (its `host:` line).
pub fn host_triple_from_rustc(rustc_vv: &str) -> Option<String> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("host:"))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const TRIPLE: &str = "x86_64-unknown-linux-gnu";

    fn stand(text: &str) -> Stand {
        match Stand::parse(text, Path::new("stand.toml")) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    use crate::testing::SERVICES as BASE;

    #[test]
    fn rustc_host_line() {
        let out = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nhost: aarch64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(
            host_triple_from_rustc(out).as_deref(),
            Some("aarch64-unknown-linux-gnu")
        );
        assert_eq!(host_triple_from_rustc("rustc 1.0\n"), None);
    }

    #[test]
    fn defaults_are_in_cluster_with_persistence() {
        let s = stand(&format!(
            "{BASE}\n[env.a]\nservices = [\"web\", \"api\"]\nvalues = []\n"
        ));
        let p = resolve(&s, "a", TRIPLE).expect("resolves");
        let names: Vec<&str> = p.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"], "sorted by name");
        let api = &p.services[0];
        assert_eq!(api.database.mode, DbMode::InCluster);
        assert_eq!(api.database.persistence, Some(true));
        assert_eq!(api.database.size.as_deref(), Some("1Gi"));
        assert_eq!(api.database.host.as_deref(), Some("postgres-api"));
        assert_eq!(api.replicas, 1);
        assert_eq!(api.image.tag, "dev");
        assert_eq!(
            p.services[1].database,
            DatabasePlan::none(),
            "web has no database"
        );
        assert_eq!(p.build.target_triple, TRIPLE);
        assert_eq!(p.api.port, 7700);
        assert_eq!(api.image.repository, "s/api");
        assert_eq!(p.values, ["helm/app/values-a.yaml"], "the generated file, then none");
    }

    #[test]
    fn overrides_win_over_the_environment() {
        let s = stand(&format!(
            "{BASE}
[env.a]
services = [\"api\"]
values = []
replicas = 2
image_tag = \"1.0\"
build_target = \"aarch64-unknown-linux-musl\"
database = {{ mode = \"external\", host = \"db\", secret = \"all-db\", sslmode = \"disable\" }}
[env.a.overrides.api]
replicas = 3
database = {{ host = \"api-db\", secret_key = \"pw\" }}
[env.a.helm.services.api.env]
RUST_LOG = \"debug\"
"
        ));
        let p = resolve(&s, "a", TRIPLE).expect("resolves");
        let api = &p.services[0];
        assert_eq!(api.replicas, 3);
        assert_eq!(api.image.tag, "1.0");
        assert_eq!(api.database.host.as_deref(), Some("api-db"));
        assert_eq!(
            api.database.secret,
            Some(SecretRef {
                name: "all-db".into(),
                key: "pw".into()
            })
        );
        assert_eq!(api.database.sslmode, Some(SslMode::Disable));
        assert_eq!(api.database.port, Some(5432));
        assert_eq!(api.database.persistence, None);
        assert_eq!(p.build.target_triple, "aarch64-unknown-linux-musl");
        let values = crate::values::values(&s, "a").expect("values");
        assert_eq!(values["services"]["api"]["env"]["RUST_LOG"], "debug", "the helm table reaches the values");
    }

    #[test]
    fn each_environment_has_its_namespace_and_contexts() {
        let s = stand(&format!(
            "{BASE}\n[env.a]\nservices = [\"web\"]\nlive_sync = true\n\n\
             [env.b]\nservices = [\"web\"]\nnamespace = \"bee\"\ncontexts = [\"kind-b\", \"b-*\"]\n\n\
             [env.c]\nservices = [\"web\"]\n"
        ));
        let a = resolve(&s, "a", TRIPLE).expect("a");
        assert_eq!(a.namespace, "s-a", "<stand.name>-<env> by default");
        assert_eq!(a.contexts, crate::config::LOCAL_CONTEXTS, "live sync: local clusters only");
        let b = resolve(&s, "b", TRIPLE).expect("b");
        assert_eq!(b.namespace, "bee");
        assert_eq!(b.contexts, ["kind-b", "b-*"], "its own list, as given");
        let c = resolve(&s, "c", TRIPLE).expect("c");
        assert_eq!(c.namespace, "s-c");
        assert!(c.contexts.is_empty(), "no live sync and no list: no context");
    }

    #[test]
    fn a_context_outside_the_list_is_refused_with_the_list() {
        let s = stand(&format!(
            "{BASE}\n[env.a]\nservices = [\"web\"]\nlive_sync = true\n\n[env.c]\nservices = [\"web\"]\n"
        ));
        let a = resolve(&s, "a", TRIPLE).expect("a");
        assert_eq!(a.allows_context("kind-stand"), Ok(()));
        let refused = a.allows_context("prod-eu").expect_err("prod-eu is not a local cluster");
        let text = refused.to_string();
        assert!(text.starts_with("env `a` may not deploy to kube context `prod-eu`: its contexts are kind-*, k3d-*, minikube"), "{text}");
        let c = resolve(&s, "c", TRIPLE).expect("c");
        let refused = c.allows_context("kind-stand").expect_err("c names none");
        assert!(matches!(refused, ContextRefused::NoneListed { .. }), "{refused}");
        assert!(refused.to_string().contains("contexts = [\"<your cluster's context>\"] in [env.c]"), "{refused}");
    }

    #[test]
    fn no_persistence_means_no_size() {
        let s = stand(&format!(
            "{BASE}\n[env.a]\nservices = [\"api\"]\nvalues = []\ndatabase = {{ persistence = false }}\n"
        ));
        let p = resolve(&s, "a", TRIPLE).expect("resolves");
        assert_eq!(p.services[0].database.persistence, Some(false));
        assert_eq!(p.services[0].database.size, None);
    }

    #[test]
    fn unknown_env_lists_the_valid_ones() {
        let s = stand(&format!(
            "{BASE}\n[env.a]\nservices = [\"api\"]\nvalues = []\n[env.b]\nservices = [\"web\"]\nvalues = []\n"
        ));
        let err = resolve(&s, "nope", TRIPLE).expect_err("unknown env");
        assert_eq!(err.to_string(), "unknown environment `nope`; valid: a, b");
    }

    #[test]
    fn resolving_is_deterministic() {
        let s = stand(&format!(
            "{BASE}\n[env.a]\nservices = [\"web\", \"api\"]\nvalues = []\n"
        ));
        let a = serde_json::to_string(&resolve(&s, "a", TRIPLE).expect("resolves")).expect("json");
        let b = serde_json::to_string(&resolve(&s, "a", TRIPLE).expect("resolves")).expect("json");
        assert_eq!(a, b);
        assert!(
            a.starts_with("{\"env\":\"a\",\"description\":\"\",\"target\":\"kubernetes\""),
            "{a}"
        );
    }
}
