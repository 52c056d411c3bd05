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

mod checks;
mod diagnostics;
mod names;
#[cfg(test)]
mod tests;

use diagnostics::Locator;
pub use diagnostics::line_col;
pub use names::*;

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
