//! The `stand.toml` model: parse, cross-check, and say exactly where anything is wrong.
//!
//! Pure: [`Stand::parse`] takes the text and the name to report it under. The only IO is
//! [`load`] (reads the file) and [`Stand::validate_files`] (checks that the paths the
//! file names exist under the stand's root).
//!
//! Every error, whether TOML syntax, an unknown key, a wrong type, a missing key or a
//! cross-check, renders as
//! `stand.toml:LINE:COLUMN: key `a.b.c`: message; expected ...`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The file devd looks for at the root of a stand.
pub const FILE_NAME: &str = "stand.toml";
/// devd's status API port when `[stand] api_port` is not given.
pub const DEFAULT_API_PORT: u16 = 7700;
/// PostgreSQL's port, the default for external databases.
pub const DEFAULT_DB_PORT: u16 = 5432;
/// Volume size of an in-cluster database with persistence, when not given.
pub const DEFAULT_SIZE: &str = "1Gi";
/// Image tag when an environment gives no `image_tag`.
pub const DEFAULT_IMAGE_TAG: &str = "dev";
/// Key inside the database password Secret, when not given.
pub const DEFAULT_SECRET_KEY: &str = "password";

/// The kube contexts of clusters that run on the developer's machine, as Tilt
/// recognises them (its `allow_k8s_contexts` lets these through without being asked):
/// the default `contexts` of an environment with live sync.
pub const LOCAL_CONTEXTS: &[&str] = &[
    "kind-*",
    "k3d-*",
    "minikube",
    "docker-desktop",
    "docker-for-desktop",
    "rancher-desktop",
    "orbstack",
    "colima",
    "colima-*",
    "microk8s",
    "crc-*",
];

/// Whether kube context `context` matches glob `pattern`: `*` any run of characters,
/// `?` one character, everything else itself (case-sensitive, as context names are).
pub fn context_matches(pattern: &str, context: &str) -> bool {
    let (p, c): (Vec<char>, Vec<char>) = (pattern.chars().collect(), context.chars().collect());
    // Iterative glob match with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut ci) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ci < c.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == c[ci])) {
            pi += 1;
            ci += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ci));
            pi += 1;
        } else if let Some((sp, sc)) = star {
            pi = sp + 1;
            ci = sc + 1;
            star = Some((sp, sc + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&x| x == '*')
}

/// Whether `context` matches any of `patterns`.
pub fn context_allowed(patterns: &[String], context: &str) -> bool {
    patterns.iter().any(|p| context_matches(p, context))
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// A parsed and cross-checked `stand.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stand {
    /// `[stand]`: the stand as a whole.
    pub stand: Spanned<StandSection>,
    /// `[services.<name>]`, keyed by service name.
    pub services: Spanned<BTreeMap<Spanned<String>, Service>>,
    /// `[env.<name>]`, keyed by environment name.
    pub env: Spanned<BTreeMap<Spanned<String>, Env>>,
    /// Where the text came from, to place errors found after parsing.
    #[serde(skip)]
    source: Source,
}

#[derive(Debug, Clone, Default)]
struct Source {
    file: PathBuf,
    text: String,
}

/// `[stand]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandSection {
    pub name: Spanned<String>,
    /// Retired: each environment deploys into a namespace of its own
    /// ([`Env::namespace`]). Kept in the model only to say so at its line.
    pub namespace: Option<Spanned<toml::Value>>,
    pub chart: Spanned<String>,
    pub release: Spanned<String>,
    pub default_env: Spanned<String>,
    pub api_port: Option<Spanned<u16>>,
}

/// `[services.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub package: Spanned<String>,
    pub path: Spanned<String>,
    pub port: Spanned<u16>,
    #[serde(default)]
    pub database: bool,
    pub image: Spanned<String>,
}

/// `[env.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Env {
    #[serde(default)]
    pub description: String,
    pub services: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub target: Target,
    /// Extra hand-written Helm values files, layered after the generated
    /// `<chart>/values-<env>.yaml`; they may not set a topology key.
    #[serde(default)]
    pub values: Vec<Spanned<String>>,
    #[serde(default)]
    pub live_sync: bool,
    pub image_tag: Option<Spanned<String>>,
    pub replicas: Option<Spanned<u32>>,
    pub build_target: Option<Spanned<String>>,
    /// The Kubernetes namespace the environment deploys into; default
    /// `<stand.name>-<env>` ([`Stand::namespace_of`]). No two environments share one.
    pub namespace: Option<Spanned<String>>,
    /// The kube contexts the environment may deploy to, as glob patterns (`*`, `?`);
    /// default [`LOCAL_CONTEXTS`] with live sync, none without ([`Stand::contexts_of`]).
    pub contexts: Option<Spanned<Vec<Spanned<String>>>>,
    pub database: Option<Spanned<DatabaseSettings>>,
    #[serde(default)]
    pub overrides: BTreeMap<Spanned<String>, Override>,
    /// Helm's own settings for this environment (resources, env, pullPolicy, ...), as
    /// Helm values; merged into the generated values file under the topology keys,
    /// none of which it may set.
    pub helm: Option<Spanned<toml::Table>>,
}

/// `[env.<name>.overrides.<service>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub replicas: Option<Spanned<u32>>,
    pub database: Option<Spanned<DatabaseSettings>>,
}

/// `database = { ... }` of an environment or of one service's override. Every key is
/// optional here; what a mode needs is checked after merging.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub mode: Option<Spanned<DbMode>>,
    pub persistence: Option<Spanned<bool>>,
    pub size: Option<Spanned<String>>,
    pub storage_class: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub name: Option<Spanned<String>>,
    pub user: Option<Spanned<String>>,
    pub secret: Option<Spanned<String>>,
    pub secret_key: Option<Spanned<String>>,
    pub sslmode: Option<Spanned<SslMode>>,
}

/// Where an environment runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    #[default]
    Kubernetes,
    Docker,
}

/// Where a service's database lives in an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbMode {
    /// A PostgreSQL StatefulSet of the stand's own.
    InCluster,
    /// A managed database reached by host, password from an existing Secret.
    External,
    /// The service runs without a database.
    None,
}

/// TLS towards an external database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Kubernetes => "kubernetes",
            Target::Docker => "docker",
        })
    }
}

impl fmt::Display for DbMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DbMode::InCluster => "in-cluster",
            DbMode::External => "external",
            DbMode::None => "none",
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
        })
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A problem at one place of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the key, e.g. `env.local.services[1]`.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// What would be valid.
    pub expected: Option<String>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: key `{}`: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if let Some(expected) = &self.expected {
            write!(f, "; expected {expected}")?;
        }
        Ok(())
    }
}

/// One thing wrong with a `stand.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML.
    #[error("{0}")]
    Syntax(Located),
    /// TOML, but not the shape of a stand.toml: unknown key, wrong type, missing key.
    #[error("{0}")]
    Schema(Located),
    /// Well-formed, but a cross-check failed.
    #[error("{0}")]
    Invalid(Located),
}

impl ConfigError {
    /// Where it happened, for all but read errors.
    pub fn located(&self) -> Option<&Located> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax(l) | ConfigError::Schema(l) | ConfigError::Invalid(l) => Some(l),
        }
    }
}

/// Everything wrong with a `stand.toml`, in the order of the file (never empty).
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// The first error in file order.
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

/// A cross-check failure before it is placed in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issue {
    span: Range<usize>,
    key: String,
    message: String,
    expected: Option<String>,
}

impl Issue {
    fn new(span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            span,
            key: key.into(),
            message: message.into(),
            expected: None,
        }
    }

    fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// Read and parse a `stand.toml`; errors are reported under `path` as given.
pub fn load(path: &Path) -> Result<Stand, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        ConfigErrors(vec![ConfigError::Read {
            file: path.to_path_buf(),
            source,
        }])
    })?;
    Stand::parse(&text, path)
}

impl Stand {
    /// Parse and cross-check the text of a `stand.toml`. `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Stand, ConfigErrors> {
        let locator = Locator { file, text };
        let mut stand: Stand =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![locator.toml_error(&e)]))?;
        stand.source = Source {
            file: file.to_path_buf(),
            text: text.to_owned(),
        };
        let issues = stand.issues();
        if issues.is_empty() {
            Ok(stand)
        } else {
            Err(locator.invalid(issues))
        }
    }

    /// Check that the paths named in the file exist under `root` (the directory of the
    /// stand.toml): the chart, every values file and every service's path.
    pub fn validate_files(&self, root: &Path) -> Result<(), ConfigErrors> {
        let mut issues = Vec::new();
        let chart = &self.stand.get_ref().chart;
        if !root.join(chart.get_ref()).is_dir() {
            issues.push(
                Issue::new(
                    chart.span(),
                    "stand.chart",
                    format!(
                        "no directory `{}` under {}",
                        chart.get_ref(),
                        root.display()
                    ),
                )
                .expected("the Helm chart's directory, relative to stand.toml"),
            );
        }
        for (name, service) in self.services.get_ref() {
            let path = &service.path;
            if !root.join(path.get_ref()).is_dir() {
                issues.push(
                    Issue::new(
                        path.span(),
                        format!("services.{}.path", key_part(name.get_ref())),
                        format!("no directory `{}` under {}", path.get_ref(), root.display()),
                    )
                    .expected("the service crate's directory, relative to stand.toml"),
                );
            }
        }
        for (env_name, env) in self.env.get_ref() {
            for (i, file) in env.values.iter().enumerate() {
                if !root.join(file.get_ref()).is_file() {
                    issues.push(
                        Issue::new(
                            file.span(),
                            format!("env.{}.values[{i}]", key_part(env_name.get_ref())),
                            format!("no file `{}` under {}", file.get_ref(), root.display()),
                        )
                        .expected("a Helm values file, relative to stand.toml"),
                    );
                }
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            let locator = Locator {
                file: &self.source.file,
                text: &self.source.text,
            };
            Err(locator.invalid(issues))
        }
    }

    /// The file this stand was parsed from, as given to [`Stand::parse`].
    pub fn file(&self) -> &Path {
        &self.source.file
    }

    /// The `[stand]` section.
    pub fn section(&self) -> &StandSection {
        self.stand.get_ref()
    }

    /// Service by name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get_ref().get(name)
    }

    /// Environment by name.
    pub fn environment(&self, name: &str) -> Option<&Env> {
        self.env.get_ref().get(name)
    }

    /// Environment names, sorted.
    pub fn env_names(&self) -> Vec<String> {
        self.env
            .get_ref()
            .keys()
            .map(|k| k.get_ref().clone())
            .collect()
    }

    /// Service names, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.services
            .get_ref()
            .keys()
            .map(|k| k.get_ref().clone())
            .collect()
    }

    /// devd's API port.
    pub fn api_port(&self) -> u16 {
        self.section()
            .api_port
            .as_ref()
            .map_or(DEFAULT_API_PORT, |p| *p.get_ref())
    }

    /// The namespace environment `env_name` deploys into: its own `namespace`, else
    /// `<stand.name>-<env>`. One per environment, so that a switch never updates
    /// another environment's objects in place (docs/CONTRACTS.md, "Switching").
    pub fn namespace_of(&self, env_name: &str, env: &Env) -> String {
        env.namespace.as_ref().map_or_else(
            || format!("{}-{env_name}", self.section().name.get_ref()),
            |ns| ns.get_ref().clone(),
        )
    }

    /// The kube context patterns environment `env` may deploy to: its own `contexts`,
    /// else the local clusters' ([`LOCAL_CONTEXTS`]) with live sync, none without.
    pub fn contexts_of(env: &Env) -> Vec<String> {
        match &env.contexts {
            Some(list) => list.get_ref().iter().map(|p| p.get_ref().clone()).collect(),
            None if env.live_sync => LOCAL_CONTEXTS.iter().map(|&p| p.to_owned()).collect(),
            None => Vec::new(),
        }
    }

    /// The database settings that apply to `service` in `env`: the service's override
    /// over the environment's, field by field. `None` when the service is not known.
    pub fn database_for<'a>(&self, env: &'a Env, service: &str) -> Option<Merged<'a>> {
        let svc = self.service(service)?;
        Some(merged(env, service, svc))
    }

    // ---- cross-checks ---------------------------------------------------------------

    fn issues(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        self.check_stand(&mut issues);
        self.check_services(&mut issues);
        self.check_envs(&mut issues);
        self.check_helm_tables(&mut issues);
        issues.sort_by_key(|i| (i.span.start, i.span.end));
        issues
    }

    fn check_stand(&self, issues: &mut Vec<Issue>) {
        let s = self.section();
        label_issue(&s.name, "stand.name", 63, issues);
        if let Some(ns) = &s.namespace {
            issues.push(
                Issue::new(ns.span(), "stand.namespace", "retired: each environment deploys into a namespace of its own, `<stand.name>-<env>` by default")
                    .expected("no [stand] namespace; `namespace = \"...\"` in an [env.<name>] table to choose one"),
            );
        }
        label_issue(&s.release, "stand.release", 53, issues);
        relative_path_issue(&s.chart, "stand.chart", issues);
        if let Some(port) = &s.api_port {
            if *port.get_ref() == 0 {
                issues.push(
                    Issue::new(port.span(), "stand.api_port", "port 0 is not a port")
                        .expected("an integer in 1..=65535"),
                );
            }
        }
        if !self
            .env
            .get_ref()
            .contains_key(s.default_env.get_ref().as_str())
        {
            issues.push(
                Issue::new(
                    s.default_env.span(),
                    "stand.default_env",
                    format!("no environment named `{}`", s.default_env.get_ref()),
                )
                .expected(one_of(self.env_names())),
            );
        }
    }

    fn check_services(&self, issues: &mut Vec<Issue>) {
        let services = self.services.get_ref();
        if services.is_empty() {
            issues.push(
                Issue::new(self.services.span(), "services", "no services declared")
                    .expected("at least one [services.<name>] table"),
            );
        }
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        if let Some(api) = &self.section().api_port {
            ports.insert(*api.get_ref(), "stand.api_port");
        } else {
            ports.insert(DEFAULT_API_PORT, "devd's API (the default stand.api_port)");
        }
        // Report duplicates at the later occurrence in the file.
        let mut by_position: Vec<(&Spanned<String>, &Service)> = services.iter().collect();
        by_position.sort_by_key(|(_, s)| s.port.span().start);
        let mut port_owners: BTreeMap<u16, String> =
            ports.into_iter().map(|(p, o)| (p, o.to_owned())).collect();
        for (name, service) in by_position {
            let n = name.get_ref();
            let prefix = format!("services.{}", key_part(n));
            if !is_service_name(n) {
                issues.push(
                    Issue::new(name.span(), prefix.clone(), format!("service name `{n}` is not a DNS-1035 label"))
                        .expected("at most 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit"),
                );
            }
            nonempty_issue(
                &service.package,
                &format!("{prefix}.package"),
                "a cargo package name",
                issues,
            );
            relative_path_issue(&service.path, &format!("{prefix}.path"), issues);
            image_issue(&service.image, &format!("{prefix}.image"), issues);
            let port = *service.port.get_ref();
            if port == 0 {
                issues.push(
                    Issue::new(
                        service.port.span(),
                        format!("{prefix}.port"),
                        "port 0 is not a port",
                    )
                    .expected("an integer in 1..=65535"),
                );
            } else if let Some(owner) = port_owners.get(&port) {
                issues.push(
                    Issue::new(
                        service.port.span(),
                        format!("{prefix}.port"),
                        format!("port {port} is already used by {owner}"),
                    )
                    .expected("a port no other service (nor devd's API) uses"),
                );
            } else {
                port_owners.insert(port, format!("service `{n}`"));
            }
        }
    }

    /// `[env.<name>.helm]` holds Helm's own settings only: a topology key there is an
    /// error naming where the fact belongs, and so is a service the environment does
    /// not deploy. Spans come from toml's span-keeping parse of the whole file.
    fn check_helm_tables(&self, issues: &mut Vec<Issue>) {
        let Ok(doc) = toml::de::DeTable::parse(&self.source.text) else {
            return;
        };
        let Some(toml::de::DeValue::Table(envs)) = doc.get_ref().get("env").map(|v| v.get_ref()) else {
            return;
        };
        for (env_key, env_value) in envs {
            let env_name: &str = env_key.get_ref();
            let toml::de::DeValue::Table(env_table) = env_value.get_ref() else {
                continue;
            };
            let Some(helm) = env_table.get("helm") else {
                continue;
            };
            let Some(env) = self.environment(env_name) else {
                continue;
            };
            let listed: Vec<String> = env.services.get_ref().iter().map(|s| s.get_ref().clone()).collect();
            let prefix = format!("env.{}.helm", key_part(env_name));
            let mut path = Vec::new();
            helm_table_issues(helm, &mut path, &prefix, env_name, &listed, issues);
        }
    }

    fn check_envs(&self, issues: &mut Vec<Issue>) {
        let envs = self.env.get_ref();
        if envs.is_empty() {
            issues.push(
                Issue::new(self.env.span(), "env", "no environments declared")
                    .expected("at least one [env.<name>] table"),
            );
        }
        let known = self.service_names();
        // No two environments share a namespace: a switch between them would update
        // one environment's objects into the other's in place.
        let mut namespaces: BTreeMap<String, &str> = BTreeMap::new();
        for (env_name, env) in envs {
            let ns = self.namespace_of(env_name.get_ref(), env);
            if let Some(first) = namespaces.get(&ns) {
                let span = env.namespace.as_ref().map_or_else(|| env_name.span(), Spanned::span);
                issues.push(
                    Issue::new(span, format!("env.{}.namespace", key_part(env_name.get_ref())), format!("namespace `{ns}` is env `{first}`'s too"))
                        .expected("a namespace of this environment's own"),
                );
            } else {
                namespaces.insert(ns, env_name.get_ref());
            }
        }
        for (env_name, env) in envs {
            let e = env_name.get_ref();
            let prefix = format!("env.{}", key_part(e));
            if !is_dns_label(e, 53) {
                issues.push(
                    Issue::new(env_name.span(), prefix.clone(), format!("environment name `{e}` is not a DNS-1123 label"))
                        .expected("at most 53 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"),
                );
            }
            if env.services.get_ref().is_empty() {
                issues.push(
                    Issue::new(
                        env.services.span(),
                        format!("{prefix}.services"),
                        "an environment needs at least one service",
                    )
                    .expected(format!("a list of {}", one_of(known.clone()))),
                );
            }
            let mut seen = BTreeSet::new();
            for (i, svc) in env.services.get_ref().iter().enumerate() {
                let key = format!("{prefix}.services[{i}]");
                let s = svc.get_ref();
                if self.service(s).is_none() {
                    issues.push(
                        Issue::new(svc.span(), key, format!("unknown service `{s}`"))
                            .expected(one_of(known.clone())),
                    );
                } else if !seen.insert(s.as_str()) {
                    issues.push(
                        Issue::new(svc.span(), key, format!("service `{s}` is listed twice"))
                            .expected("each service at most once"),
                    );
                }
            }
            for (i, file) in env.values.iter().enumerate() {
                relative_path_issue(file, &format!("{prefix}.values[{i}]"), issues);
            }
            if let Some(tag) = &env.image_tag {
                if !is_image_tag(tag.get_ref()) {
                    issues.push(
                        Issue::new(tag.span(), format!("{prefix}.image_tag"), format!("`{}` is not an image tag", tag.get_ref()))
                            .expected("1 to 128 characters of A-Z, a-z, 0-9, '_', '.', '-', not starting with '.' or '-'"),
                    );
                }
            }
            if let Some(r) = &env.replicas {
                replicas_issue(r, &format!("{prefix}.replicas"), issues);
            }
            if let Some(t) = &env.build_target {
                if !is_triple(t.get_ref()) {
                    issues.push(
                        Issue::new(
                            t.span(),
                            format!("{prefix}.build_target"),
                            format!("`{}` is not a target triple", t.get_ref()),
                        )
                        .expected("a rustc target triple such as \"x86_64-unknown-linux-musl\""),
                    );
                }
            }
            match &env.namespace {
                Some(ns) => label_issue(ns, &format!("{prefix}.namespace"), 63, issues),
                None => {
                    let ns = self.namespace_of(e, env);
                    if !is_dns_label(&ns, 63) {
                        issues.push(
                            Issue::new(env_name.span(), format!("{prefix}.namespace"), format!("the default namespace `{ns}` (<stand.name>-<env>) is not a DNS-1123 label"))
                                .expected("namespace = \"...\" in this table: at most 63 characters of a-z, 0-9 and '-'"),
                        );
                    }
                }
            }
            if let Some(contexts) = &env.contexts {
                for (i, c) in contexts.get_ref().iter().enumerate() {
                    nonempty_issue(c, &format!("{prefix}.contexts[{i}]"), "a kube context name or glob pattern, such as \"kind-*\"", issues);
                }
            }
            // The environment-wide database table, checked against its own mode.
            if let Some(db) = &env.database {
                let mode = db
                    .get_ref()
                    .mode
                    .as_ref()
                    .map_or(DbMode::InCluster, |m| *m.get_ref());
                settings_issues(db, mode, &format!("{prefix}.database"), issues);
            }
            let listed: BTreeSet<&str> = env
                .services
                .get_ref()
                .iter()
                .map(|s| s.get_ref().as_str())
                .collect();
            for (svc_name, ov) in &env.overrides {
                let s = svc_name.get_ref();
                let key = format!("{prefix}.overrides.{}", key_part(s));
                if !listed.contains(s.as_str()) {
                    let valid: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
                    issues.push(
                        Issue::new(
                            svc_name.span(),
                            key.clone(),
                            format!("service `{s}` is not in {prefix}.services"),
                        )
                        .expected(one_of(valid)),
                    );
                    continue;
                }
                if let Some(r) = &ov.replicas {
                    replicas_issue(r, &format!("{key}.replicas"), issues);
                }
                let Some(service) = self.service(s) else {
                    continue;
                };
                if let Some(db) = &ov.database {
                    let explicit = db.get_ref().mode.as_ref().map(|m| *m.get_ref());
                    if !service.database && explicit.is_some_and(|m| m != DbMode::None) {
                        let m = db
                            .get_ref()
                            .mode
                            .as_ref()
                            .map(|m| m.span())
                            .unwrap_or(db.span());
                        issues.push(
                            Issue::new(m, format!("{key}.database.mode"), format!("service `{s}` has no database (database = false in [services.{s}])"))
                                .expected("mode = \"none\", or database = true in the service's table"),
                        );
                        continue;
                    }
                    let effective = merged(env, s, service).mode();
                    settings_issues(db, effective, &format!("{key}.database"), issues);
                }
            }
            // What each listed service ends up with must be complete.
            for svc in env.services.get_ref() {
                let s = svc.get_ref();
                let Some(service) = self.service(s) else {
                    continue;
                };
                let m = merged(env, s, service);
                if m.mode() != DbMode::External {
                    continue;
                }
                let (table_span, table_key) = match (
                    env.overrides
                        .get(s.as_str())
                        .and_then(|o| o.database.as_ref()),
                    &env.database,
                ) {
                    (Some(o), _) => (
                        o.span(),
                        format!("{prefix}.overrides.{}.database", key_part(s)),
                    ),
                    (None, Some(d)) => (d.span(), format!("{prefix}.database")),
                    (None, None) => (env_name.span(), prefix.clone()),
                };
                let place = format!("[{prefix}.database] or [{prefix}.overrides.{s}.database]");
                if m.host.is_none() {
                    issues.push(
                        Issue::new(
                            table_span.clone(),
                            format!("{table_key}.host"),
                            format!("service `{s}` uses an external database but no host is set"),
                        )
                        .expected(format!("host = \"db.example.com\" in {place}")),
                    );
                }
                if m.secret.is_none() {
                    issues.push(
                        Issue::new(table_span.clone(), format!("{table_key}.secret"), format!("service `{s}` uses an external database but no Secret holds its password"))
                            .expected(format!("secret = \"<existing Secret name>\" (and secret_key, default \"password\") in {place}")),
                    );
                }
            }
        }
    }
}

fn helm_table_issues(
    value: &Spanned<toml::de::DeValue<'_>>,
    path: &mut Vec<String>,
    prefix: &str,
    env: &str,
    listed: &[String],
    issues: &mut Vec<Issue>,
) {
    let toml::de::DeValue::Table(table) = value.get_ref() else {
        return;
    };
    for (key, child) in table {
        path.push(key.get_ref().to_string());
        let is_map = matches!(child.get_ref(), toml::de::DeValue::Table(_));
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let dotted = format!("{prefix}.{}", parts.iter().map(|p| key_part(p)).collect::<Vec<_>>().join("."));
        if let ["services", service] = parts.as_slice() {
            if !listed.iter().any(|l| l == service) {
                issues.push(
                    Issue::new(key.span(), dotted, format!("service `{service}` is not deployed in env.{env} (not in its `services`)"))
                        .expected(format!("settings of {} only, or add `{service}` to env.{env}.services", one_of(listed.to_vec()))),
                );
                path.pop();
                continue;
            }
        }
        if let Some(owner) = crate::topology::owner(&parts, is_map) {
            let env_owner = owner.replace("<env>", env);
            issues.push(
                Issue::new(key.span(), dotted, format!("`{}` is topology, generated from stand.toml", parts.join(".")))
                    .expected(format!("Helm's own settings only here; the fact belongs in {env_owner}")),
            );
        } else if is_map {
            helm_table_issues(child, path, prefix, env, listed, issues);
        }
        path.pop();
    }
}

/// The database settings of one service in one environment, the override's value
/// before the environment's for every key.
#[derive(Debug, Clone, Copy)]
pub struct Merged<'a> {
    /// Whether the service needs a database at all (`[services.x] database`).
    pub needs_database: bool,
    pub mode: Option<&'a Spanned<DbMode>>,
    pub persistence: Option<&'a Spanned<bool>>,
    pub size: Option<&'a Spanned<String>>,
    pub storage_class: Option<&'a Spanned<String>>,
    pub host: Option<&'a Spanned<String>>,
    pub port: Option<&'a Spanned<u16>>,
    pub name: Option<&'a Spanned<String>>,
    pub user: Option<&'a Spanned<String>>,
    pub secret: Option<&'a Spanned<String>>,
    pub secret_key: Option<&'a Spanned<String>>,
    pub sslmode: Option<&'a Spanned<SslMode>>,
}

impl Merged<'_> {
    /// The mode in force: none for a service without a database, else the mode given,
    /// else in-cluster.
    pub fn mode(&self) -> DbMode {
        if !self.needs_database {
            return DbMode::None;
        }
        self.mode.map_or(DbMode::InCluster, |m| *m.get_ref())
    }
}

fn merged<'a>(env: &'a Env, service_name: &str, service: &Service) -> Merged<'a> {
    let over = env
        .overrides
        .get(service_name)
        .and_then(|o| o.database.as_ref())
        .map(|d| d.get_ref());
    let base = env.database.as_ref().map(|d| d.get_ref());
    macro_rules! pick {
        ($field:ident) => {
            over.and_then(|d| d.$field.as_ref())
                .or_else(|| base.and_then(|d| d.$field.as_ref()))
        };
    }
    Merged {
        needs_database: service.database,
        mode: pick!(mode),
        persistence: pick!(persistence),
        size: pick!(size),
        storage_class: pick!(storage_class),
        host: pick!(host),
        port: pick!(port),
        name: pick!(name),
        user: pick!(user),
        secret: pick!(secret),
        secret_key: pick!(secret_key),
        sslmode: pick!(sslmode),
    }
}

/// A key of a database table and where it was set, if it was.
type KeySpan<'k> = (&'k str, Option<Range<usize>>);

/// Checks one database table against the mode that applies to it: values well-formed,
/// no keys that mean nothing in that mode.
fn settings_issues(
    db: &Spanned<DatabaseSettings>,
    mode: DbMode,
    prefix: &str,
    issues: &mut Vec<Issue>,
) {
    let d = db.get_ref();
    let in_cluster_only = [
        ("persistence", d.persistence.as_ref().map(|v| v.span())),
        ("size", d.size.as_ref().map(|v| v.span())),
        ("storage_class", d.storage_class.as_ref().map(|v| v.span())),
    ];
    let external_only = [
        ("host", d.host.as_ref().map(|v| v.span())),
        ("port", d.port.as_ref().map(|v| v.span())),
        ("secret", d.secret.as_ref().map(|v| v.span())),
        ("secret_key", d.secret_key.as_ref().map(|v| v.span())),
        ("sslmode", d.sslmode.as_ref().map(|v| v.span())),
    ];
    let either = [
        ("name", d.name.as_ref().map(|v| v.span())),
        ("user", d.user.as_ref().map(|v| v.span())),
    ];
    let (misplaced, valid): (Vec<KeySpan<'_>>, &str) = match mode {
        DbMode::InCluster => (
            external_only.to_vec(),
            "mode, persistence, size, storage_class, name, user",
        ),
        DbMode::External => (
            in_cluster_only.to_vec(),
            "mode, host, port, name, user, secret, secret_key, sslmode",
        ),
        DbMode::None => (
            in_cluster_only
                .iter()
                .chain(&external_only)
                .chain(&either)
                .cloned()
                .collect(),
            "mode",
        ),
    };
    for (key, span) in misplaced {
        if let Some(span) = span {
            issues.push(
                Issue::new(
                    span,
                    format!("{prefix}.{key}"),
                    format!("`{key}` does not apply to mode = \"{mode}\""),
                )
                .expected(format!("only {valid} with this mode")),
            );
        }
    }
    if let Some(size) = &d.size {
        if !is_size(size.get_ref()) {
            issues.push(
                Issue::new(
                    size.span(),
                    format!("{prefix}.size"),
                    format!("`{}` is not a volume size", size.get_ref()),
                )
                .expected("a whole number followed by Mi, Gi or Ti, such as \"1Gi\""),
            );
        } else if d.persistence.as_ref().is_some_and(|p| !*p.get_ref()) {
            issues.push(
                Issue::new(
                    size.span(),
                    format!("{prefix}.size"),
                    "a size means nothing with persistence = false",
                )
                .expected("persistence = true, or no size"),
            );
        }
    }
    if let Some(sc) = &d.storage_class {
        if !sc.get_ref().is_empty() && !is_dns_subdomain(sc.get_ref()) {
            issues.push(
                Issue::new(
                    sc.span(),
                    format!("{prefix}.storage_class"),
                    format!("`{}` is not a StorageClass name", sc.get_ref()),
                )
                .expected("a DNS-1123 subdomain, or \"\" for the cluster's default"),
            );
        }
    }
    if let Some(host) = &d.host {
        let h = host.get_ref();
        if h.is_empty()
            || h.len() > 253
            || h.chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
        {
            issues.push(
                Issue::new(
                    host.span(),
                    format!("{prefix}.host"),
                    format!("`{h}` is not a host name"),
                )
                .expected("a DNS name or IP address, such as \"db.example.com\""),
            );
        }
    }
    if let Some(port) = &d.port {
        if *port.get_ref() == 0 {
            issues.push(
                Issue::new(
                    port.span(),
                    format!("{prefix}.port"),
                    "port 0 is not a port",
                )
                .expected("an integer in 1..=65535"),
            );
        }
    }
    for (key, v) in [("name", &d.name), ("user", &d.user)] {
        if let Some(v) = v {
            let s = v.get_ref();
            if !is_pg_identifier(s) {
                issues.push(
                    Issue::new(
                        v.span(),
                        format!("{prefix}.{key}"),
                        format!("`{s}` is not a PostgreSQL identifier the chart accepts"),
                    )
                    .expected("1 to 63 characters of a-z, 0-9 and '_', not starting with a digit"),
                );
            }
        }
    }
    if let Some(secret) = &d.secret {
        if !is_dns_subdomain(secret.get_ref()) {
            issues.push(
                Issue::new(
                    secret.span(),
                    format!("{prefix}.secret"),
                    format!("`{}` is not a Secret name", secret.get_ref()),
                )
                .expected("a DNS-1123 subdomain: a-z, 0-9, '-' and '.', at most 253 characters"),
            );
        }
    }
    if let Some(key) = &d.secret_key {
        let k = key.get_ref();
        if k.is_empty()
            || k.len() > 253
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            issues.push(
                Issue::new(
                    key.span(),
                    format!("{prefix}.secret_key"),
                    format!("`{k}` is not a Secret key"),
                )
                .expected("a-z, A-Z, 0-9, '-', '_' and '.'"),
            );
        }
    }
}

fn label_issue(value: &Spanned<String>, key: &str, max: usize, issues: &mut Vec<Issue>) {
    if !is_dns_label(value.get_ref(), max) {
        issues.push(
            Issue::new(value.span(), key, format!("`{}` is not a DNS-1123 label", value.get_ref()))
                .expected(format!("at most {max} characters of a-z, 0-9 and '-', starting and ending with a letter or digit")),
        );
    }
}

fn nonempty_issue(value: &Spanned<String>, key: &str, what: &str, issues: &mut Vec<Issue>) {
    if value.get_ref().trim().is_empty() {
        issues.push(Issue::new(value.span(), key, "empty").expected(what));
    }
}

fn relative_path_issue(value: &Spanned<String>, key: &str, issues: &mut Vec<Issue>) {
    let p = value.get_ref();
    if p.trim().is_empty() {
        issues.push(
            Issue::new(value.span(), key, "empty path").expected("a path relative to stand.toml"),
        );
    } else if Path::new(p).is_absolute()
        || Path::new(p)
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        issues.push(
            Issue::new(value.span(), key, format!("`{p}` leaves the stand"))
                .expected("a path relative to stand.toml, inside the stand, without '..'"),
        );
    }
}

fn image_issue(value: &Spanned<String>, key: &str, issues: &mut Vec<Issue>) {
    if !is_image_repository(value.get_ref()) {
        issues.push(
            Issue::new(value.span(), key, format!("`{}` is not an image repository", value.get_ref()))
                .expected("a lowercase repository without tag, such as \"stand/service1\" or \"registry:5000/stand/service1\""),
        );
    }
}

fn replicas_issue(value: &Spanned<u32>, key: &str, issues: &mut Vec<Issue>) {
    if *value.get_ref() == 0 {
        issues.push(
            Issue::new(value.span(), key, "0 replicas")
                .expected("at least 1; to leave a service out, remove it from `services`"),
        );
    }
}

fn one_of(names: Vec<String>) -> String {
    if names.is_empty() {
        return "nothing (none declared)".to_owned();
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("one of {}", quoted.join(", "))
}

// ---------------------------------------------------------------------------------------
// Value rules (pure predicates)
// ---------------------------------------------------------------------------------------

/// A DNS-1123 label of at most `max` characters (Kubernetes object names).
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A service name: a DNS-1035 label (a DNS-1123 label that starts with a letter), as the
/// chart's values schema demands, since it names Deployments, Services and Secrets.
pub fn is_service_name(s: &str) -> bool {
    is_dns_label(s, 63) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A database or role name as the chart accepts it: `^[a-z_][a-z0-9_]{0,62}$`.
pub fn is_pg_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 63))
}

/// A Kubernetes quantity as devd accepts it for volumes: `1Gi`, `500Mi`, `2Ti`.
pub fn is_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
        && matches!(unit, "Mi" | "Gi" | "Ti")
}

/// An image tag (OCI distribution rules).
pub fn is_image_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// An image repository without tag or digest, optionally with a registry host:port.
pub fn is_image_repository(s: &str) -> bool {
    if s.is_empty() || s.contains('@') {
        return false;
    }
    let mut parts: Vec<&str> = s.split('/').collect();
    // A registry host may carry a port and upper case is not allowed anywhere.
    if parts.len() > 1
        && (parts[0].contains(':') || parts[0].contains('.') || parts[0] == "localhost")
    {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, "1"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            || port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
        {
            return false;
        }
    }
    parts.iter().all(|p| {
        let b = p.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
    })
}

/// Looks like a rustc target triple: 2 to 4 dash-separated parts of [a-z0-9_.].
pub fn is_triple(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    (2..=4).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        })
}

/// A key as it appears in a dotted path: bare when it can be, quoted otherwise.
pub fn key_part(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        format!("\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

// ---------------------------------------------------------------------------------------
// Placing errors: byte spans -> line, column and dotted key
// ---------------------------------------------------------------------------------------

struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.text, offset)
    }

    fn located(
        &self,
        offset: usize,
        key: String,
        message: String,
        expected: Option<String>,
    ) -> Located {
        let (line, column) = self.line_col(offset);
        Located {
            file: self.file.to_path_buf(),
            line,
            column,
            key,
            message,
            expected,
        }
    }

    fn invalid(&self, issues: Vec<Issue>) -> ConfigErrors {
        ConfigErrors(
            issues
                .into_iter()
                .map(|i| {
                    ConfigError::Invalid(self.located(i.span.start, i.key, i.message, i.expected))
                })
                .collect(),
        )
    }

    /// Turn a toml/serde error into a located one, with the dotted key found from the
    /// document's spans and serde's message rephrased in stand.toml's terms.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let (tree, parse_errors) = toml::de::DeTable::parse_recoverable(self.text);
        let mut entries = Vec::new();
        collect_entries(tree.get_ref(), "", &mut entries);
        let syntax = !parse_errors.is_empty();
        let msg = e.message().trim().to_owned();
        if syntax {
            let key = syntax_key(&entries, self.text, &span);
            let (message, expected) = match msg.split_once(", expected ") {
                Some((m, x)) => (m.to_owned(), Some(x.to_owned())),
                None if msg == "duplicate key" => (
                    msg.clone(),
                    Some("each key at most once in a table".to_owned()),
                ),
                None => (msg.clone(), None),
            };
            return ConfigError::Syntax(self.located(span.start, key, message, expected));
        }
        let base = innermost(&entries, &span)
            .map(|e| e.path.clone())
            .unwrap_or_default();
        let (key, message, expected) = rephrase(&base, &msg);
        ConfigError::Schema(self.located(span.start, key, message, expected))
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

#[derive(Debug)]
struct Entry {
    path: String,
    key: Range<usize>,
    value: Range<usize>,
}

fn collect_entries(table: &toml::de::DeTable<'_>, prefix: &str, out: &mut Vec<Entry>) {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            key_part(k.get_ref())
        } else {
            format!("{prefix}.{}", key_part(k.get_ref()))
        };
        out.push(Entry {
            path: path.clone(),
            key: k.span(),
            value: v.span(),
        });
        collect_value(v, &path, out);
    }
}

fn collect_value(v: &Spanned<toml::de::DeValue<'_>>, path: &str, out: &mut Vec<Entry>) {
    match v.get_ref() {
        toml::de::DeValue::Table(t) => collect_entries(t, path, out),
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(Entry {
                    path: p.clone(),
                    key: item.span(),
                    value: item.span(),
                });
                collect_value(item, &p, out);
            }
        }
        _ => {}
    }
}

fn contains(r: &Range<usize>, span: &Range<usize>) -> bool {
    r.start <= span.start && span.end <= r.end && r.start < r.end
}

/// The entry whose key or value most tightly encloses `span`.
fn innermost<'e>(entries: &'e [Entry], span: &Range<usize>) -> Option<&'e Entry> {
    entries
        .iter()
        .filter_map(|e| {
            let k = contains(&e.key, span).then(|| e.key.len());
            let v = contains(&e.value, span).then(|| e.value.len());
            k.into_iter().chain(v).min().map(|len| (len, e))
        })
        .min_by_key(|(len, e)| (*len, std::cmp::Reverse(e.path.len())))
        .map(|(_, e)| e)
}

/// The key a syntax error belongs to: the value around it (an unclosed array, string,
/// inline table), else what the line says (a `[table]` header, or `key =` under the
/// last header), else the document.
fn syntax_key(entries: &[Entry], text: &str, span: &Range<usize>) -> String {
    // Header tables' spans are unreliable once recovery has run; values' are not.
    let values: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.value.start >= e.key.start)
        .collect();
    let around = values
        .iter()
        .filter(|e| contains(&e.value, span) || contains(&e.key, span))
        .min_by_key(|e| (e.value.len(), std::cmp::Reverse(e.path.len())));
    if let Some(e) = around {
        return e.path.clone();
    }
    let offset = span.start.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if let Some(header) = header_of(line) {
        return header;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| header_of(l.trim()));
    let key = line
        .split_once('=')
        .map(|(k, _)| dotted(k.trim()))
        .filter(|k| !k.is_empty());
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k,
        (Some(t), None) => t,
        (None, None) => "(document)".to_owned(),
    }
}

/// `[a.b]` or `[[a.b]]` (possibly unclosed) -> `a.b`.
fn header_of(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    let inner = inner.split(']').next().unwrap_or(inner);
    let key = dotted(inner.trim());
    (!key.is_empty()).then_some(key)
}

/// `a . "b c"` -> `a."b c"`: a dotted key as written, without the spaces.
fn dotted(k: &str) -> String {
    k.split('.').map(str::trim).collect::<Vec<_>>().join(".")
}

/// Rephrase serde's words ("field", "u16", "a sequence") in stand.toml's terms, and
/// extend the key with the field a message names.
fn rephrase(base: &str, msg: &str) -> (String, String, Option<String>) {
    let join = |leaf: &str| {
        if base.is_empty() {
            key_part(leaf)
        } else {
            format!("{base}.{}", key_part(leaf))
        }
    };
    let key_or_doc = || {
        if base.is_empty() {
            "(document)".to_owned()
        } else {
            base.to_owned()
        }
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            let expected = tail.trim_start_matches(',').trim();
            let valid = if expected == "there are no fields" {
                "no keys here".to_owned()
            } else {
                format!(
                    "one of {}",
                    list_of(
                        expected
                            .trim_start_matches("expected ")
                            .trim_start_matches("one of ")
                    )
                )
            };
            // The span of an unknown key is the key itself, so `base` already ends in it.
            let key = if base.rsplit('.').next() == Some(field) {
                base.to_owned()
            } else {
                join(field)
            };
            return (key, format!("unknown key `{field}`"), Some(valid));
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some((field, _)) = rest.split_once('`') {
            let key = join(field);
            let hint = hint(field).unwrap_or("a value").to_owned();
            return (key, "required key is missing".to_owned(), Some(hint));
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((variant, tail)) = rest.split_once('`') {
            let expected = tail
                .trim_start_matches(',')
                .trim()
                .trim_start_matches("expected ")
                .trim_start_matches("one of ");
            return (
                key_or_doc(),
                format!("unknown value \"{variant}\""),
                Some(format!("one of {}", list_of(expected))),
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let leaf = leaf_name(base);
            let expected = hint(leaf)
                .map(str::to_owned)
                .unwrap_or_else(|| plain_type(expected));
            return (
                key_or_doc(),
                format!("wrong type: found {}", plain_found(found)),
                Some(expected),
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let leaf = leaf_name(base);
            let expected = hint(leaf)
                .map(str::to_owned)
                .unwrap_or_else(|| plain_type(expected));
            return (
                key_or_doc(),
                format!("{} is out of range", plain_found(found)),
                Some(expected),
            );
        }
    }
    (key_or_doc(), msg.to_owned(), None)
}

/// The last key of a dotted path; empty for an array element, whose hint is its type.
fn leaf_name(path: &str) -> &str {
    if path.ends_with(']') {
        return "";
    }
    path.rsplit('.').next().unwrap_or(path)
}

/// "`a`, `b` or `c`" / "`a` or `b`" -> "\"a\", \"b\", \"c\"".
fn list_of(expected: &str) -> String {
    let names: Vec<String> = expected
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| format!("\"{s}\""))
        .collect();
    if names.is_empty() {
        expected.to_owned()
    } else {
        names.join(", ")
    }
}

fn plain_found(found: &str) -> String {
    found.replace("sequence", "array").replace("map", "table")
}

fn plain_type(expected: &str) -> String {
    match expected {
        "u16" => "an integer in 0..=65535".to_owned(),
        "u32" => "a non-negative integer".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a boolean" => "true or false".to_owned(),
        e if e.starts_with("struct ") || e == "a map" => "a table".to_owned(),
        e => e.to_owned(),
    }
}

/// What a key takes, for messages about missing keys and wrong types.
fn hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "stand" => "a [stand] table with name, chart, release and default_env",
        "services" => "a list of service names, such as [\"service1\", \"service2\"]",
        "env" => "[env.<name>] tables",
        "name" => "a name (string)",
        "namespace" => "a Kubernetes namespace (DNS-1123 label)",
        "contexts" => "a list of kube context names or glob patterns, such as [\"kind-*\", \"minikube\"]",
        "chart" => "the Helm chart's directory, such as \"helm/app\"",
        "release" => "a Helm release name (DNS-1123 label)",
        "default_env" => "the name of an [env.<name>] table, such as \"local\"",
        "api_port" | "port" => "an integer port in 1..=65535",
        "package" => "the cargo package name (string)",
        "path" => "the crate's directory relative to stand.toml, such as \"services/service1\"",
        "image" => "an image repository, such as \"stand/service1\"",
        "database" => "true or false in [services.<name>]; a table in [env.<name>]",
        "values" => "a list of extra hand-written Helm values files, such as [\"helm/app/site.yaml\"]",
        "live_sync" | "persistence" => "true or false",
        "target" => "\"kubernetes\" or \"docker\"",
        "mode" => "\"in-cluster\", \"external\" or \"none\"",
        "sslmode" => "\"disable\" or \"prefer\"",
        "replicas" => "an integer, at least 1",
        "size" => "a volume size such as \"1Gi\"",
        "image_tag" => "an image tag (string), such as \"dev\"",
        "build_target" => "a rustc target triple (string)",
        "description" | "host" | "user" | "secret" | "secret_key" | "storage_class" => "a string",
        "overrides" => "[env.<name>.overrides.<service>] tables",
        "helm" => "a table of Helm values (Helm's own settings, no topology)",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("service1", 63));
        assert!(is_dns_label("a", 63));
        assert!(is_dns_label("a-b-9", 63));
        assert!(!is_dns_label("", 63));
        assert!(!is_dns_label("-a", 63));
        assert!(!is_dns_label("a-", 63));
        assert!(!is_dns_label("Service1", 63));
        assert!(!is_dns_label("a_b", 63));
        assert!(!is_dns_label("a.b", 63));
        assert!(is_dns_label(&"a".repeat(63), 63));
        assert!(!is_dns_label(&"a".repeat(64), 63));
    }

    #[test]
    fn context_globs() {
        for (pattern, context, ok) in [
            ("kind-*", "kind-kind", true),
            ("kind-*", "kind-", true),
            ("kind-*", "kind", false),
            ("kind-*", "xkind-a", false),
            ("minikube", "minikube", true),
            ("minikube", "minikube2", false),
            ("*", "", true),
            ("*", "gke_proj_europe-west1_prod", true),
            ("prod-?", "prod-1", true),
            ("prod-?", "prod-12", false),
            ("*-prod-*", "eu-prod-1", true),
            ("*-prod-*", "eu-prod", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a**", "a", true),
            ("", "", true),
            ("", "x", false),
            ("Kind-*", "kind-x", false),
        ] {
            assert_eq!(context_matches(pattern, context), ok, "{pattern:?} vs {context:?}");
        }
        let local: Vec<String> = LOCAL_CONTEXTS.iter().map(|&p| p.to_owned()).collect();
        for context in ["kind-stand", "k3d-dev", "minikube", "docker-desktop", "rancher-desktop", "orbstack", "colima", "colima-work"] {
            assert!(context_allowed(&local, context), "{context}");
        }
        for context in ["prod-eu", "gke_acme_europe-west1_prod", "arn:aws:eks:eu-west-1:1:cluster/prod", "kind", ""] {
            assert!(!context_allowed(&local, context), "{context}");
        }
    }

    #[test]
    fn sizes() {
        for ok in ["1Gi", "500Mi", "2Ti", "10Gi"] {
            assert!(is_size(ok), "{ok}");
        }
        for bad in ["2GB", "1G", "Gi", "0Gi", "01Gi", "1.5Gi", "", "1gi", "-1Gi"] {
            assert!(!is_size(bad), "{bad}");
        }
    }

    #[test]
    fn images() {
        for ok in [
            "stand/service1",
            "service1",
            "localhost:5000/stand/service1",
            "registry.example.com/a/b-c_d.e",
        ] {
            assert!(is_image_repository(ok), "{ok}");
        }
        for bad in [
            "",
            "Stand/service1",
            "stand/service1:dev",
            "stand//x",
            "/x",
            "x/",
            "a@sha256:00",
        ] {
            assert!(!is_image_repository(bad), "{bad}");
        }
        assert!(is_image_tag("dev"));
        assert!(is_image_tag("v1.2.3-rc_1"));
        assert!(!is_image_tag(".x"));
        assert!(!is_image_tag("a/b"));
    }

    #[test]
    fn triples() {
        assert!(is_triple("x86_64-unknown-linux-gnu"));
        assert!(is_triple("aarch64-unknown-linux-musl"));
        assert!(is_triple("aarch64-apple-darwin"));
        assert!(!is_triple("linux"));
        assert!(!is_triple("X86-linux"));
    }

    #[test]
    fn line_and_column() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 7), (2, 4));
        assert_eq!(line_col(t, t.len()), (3, 2));
    }

    #[test]
    fn keys_are_quoted_when_needed() {
        assert_eq!(key_part("service1"), "service1");
        assert_eq!(key_part("a.b"), "\"a.b\"");
        assert_eq!(key_part(""), "\"\"");
    }

    #[test]
    fn rephrases_serde_messages() {
        let (k, m, x) = rephrase(
            "stand.bogus",
            "unknown field `bogus`, expected one of `name`, `namespace`",
        );
        assert_eq!(k, "stand.bogus");
        assert_eq!(m, "unknown key `bogus`");
        assert_eq!(x.as_deref(), Some("one of \"name\", \"namespace\""));
        let (k, m, _) = rephrase("services.a", "missing field `port`");
        assert_eq!(
            (k.as_str(), m.as_str()),
            ("services.a.port", "required key is missing")
        );
        let (_, m, x) = rephrase(
            "env.local.target",
            "unknown variant `k8s`, expected `kubernetes` or `docker`",
        );
        assert_eq!(m, "unknown value \"k8s\"");
        assert_eq!(x.as_deref(), Some("one of \"kubernetes\", \"docker\""));
        let (k, m, x) = rephrase(
            "env.a.services[1]",
            "invalid type: integer `3`, expected a string",
        );
        assert_eq!(k, "env.a.services[1]");
        assert_eq!(m, "wrong type: found integer `3`");
        assert_eq!(
            x.as_deref(),
            Some("a string"),
            "an element's type, not the list's hint"
        );
    }
}
