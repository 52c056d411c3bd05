//! The Helm values of an environment, generated from stand.toml.
//!
//! `helm/app/values-<env>.yaml` is written by `devd generate` and committed, so that a
//! plain `helm upgrade --install <release> <chart> -f <chart>/values-<env>.yaml` deploys
//! exactly what `devd plan --env <env>` says. Its topology keys (see [`crate::topology`])
//! come from the plan; the environment's `helm` table of stand.toml (Helm's own
//! settings: resources, extra env, pull policy, test image, ...) is merged under them.
//! [`render`] is deterministic: keys sorted, one text per stand and environment.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::config::{DbMode, Stand};
use crate::plan::{self, DatabasePlan, Plan, PlanError, ServicePlan};

/// The command that writes every generated values file.
pub const REGENERATE: &str = "devd generate";

/// The path of an environment's generated values file, relative to the stand's root.
pub fn file_for(chart: &str, env: &str) -> String {
    format!("{}/values-{env}.yaml", chart.trim_end_matches('/'))
}

/// The generated values of environment `env`: the environment's `helm` table with the
/// plan's topology merged over it.
pub fn values(stand: &Stand, env: &str) -> Result<Value, PlanError> {
    // The values do not depend on the build triple.
    let plan = plan::resolve(stand, env, "")?;
    let mut out = stand
        .environment(env)
        .and_then(|e| e.helm.as_ref())
        .map_or_else(|| Value::Object(Map::new()), |t| toml_to_json(&toml::Value::Table(t.get_ref().clone())));
    merge(&mut out, topology(&plan));
    Ok(out)
}

/// Why an environment's values could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Files(FileIssues),
}

/// The text of `values-<env>.yaml`: a header saying where it comes from, then YAML.
pub fn render(stand: &Stand, env: &str) -> Result<String, ValuesError> {
    let values = values(stand, env)?;
    let file = stand_file_name(stand);
    let mut text = format!(
        "# GENERATED from {file} ([env.{env}]) by `{REGENERATE}`. Do not edit: edit {file} and\n\
         # run `{REGENERATE}`; `devd check` fails while this file differs from what {file} gives.\n\
         # Topology (services, ports, replicas, images, databases, live sync) is written once, in\n\
         # {file}; Helm's own settings (resources, env, pullPolicy, ...) go in its [env.{env}.helm].\n"
    );
    text.push_str(&to_yaml(&values, 0));
    Ok(text)
}

/// The first line of every generated values file; a file that starts with it and
/// belongs to no environment any more is removed by `devd generate`.
const HEADER_START: &str = "# GENERATED from ";

/// One generated file: where it goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Relative to the stand's root.
    pub path: String,
    pub text: String,
}

/// Every generated values file of the stand, one per environment, in name order.
pub fn generate_all(stand: &Stand) -> Result<Vec<Generated>, ValuesError> {
    let chart = stand.section().chart.get_ref();
    stand
        .env_names()
        .into_iter()
        .map(|env| Ok(Generated { path: file_for(chart, &env), text: render(stand, &env)? }))
        .collect()
}

/// A hand-written or generated values file that disagrees with stand.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIssue {
    /// Relative to the stand's root.
    pub file: String,
    /// The Helm value's key path, when the issue is one key.
    pub key: Option<String>,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for FileIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}; {}", self.message, self.fix)
    }
}

/// Everything wrong with the values files of a stand (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileIssues(pub Vec<FileIssue>);

impl fmt::Display for FileIssues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Checks the values files under `root` against `stand`: every generated file is what
/// stand.toml gives (no stale, missing or orphaned one), the chart's `values.yaml`
/// declares no service, and no extra hand-written file sets a topology key.
pub fn check_files(stand: &Stand, root: &Path) -> Result<(), ValuesError> {
    let mut issues = Vec::new();
    let file_name = stand_file_name(stand);
    let chart = stand.section().chart.get_ref();
    for generated in generate_all(stand)? {
        let fix = format!("run `{REGENERATE}` (it writes the file from {file_name})");
        match std::fs::read_to_string(root.join(&generated.path)) {
            Ok(text) if text == generated.text => {}
            Ok(text) => issues.push(FileIssue {
                file: generated.path.clone(),
                key: None,
                message: format!("stale: differs from what {file_name} gives, first at line {}", first_difference(&text, &generated.text)),
                fix,
            }),
            Err(e) => issues.push(FileIssue {
                file: generated.path.clone(),
                key: None,
                message: format!("missing generated values file ({e})"),
                fix,
            }),
        }
    }
    for orphan in orphans(stand, root) {
        issues.push(FileIssue {
            file: orphan,
            key: None,
            message: format!("generated for an environment {file_name} no longer declares"),
            fix: format!("run `{REGENERATE}` (it removes the file)"),
        });
    }
    let defaults = format!("{}/values.yaml", chart.trim_end_matches('/'));
    if let Some(v) = read_yaml(root, &defaults, &mut issues) {
        if v.get("services").is_some_and(|s| s.as_object().is_none_or(|m| !m.is_empty())) {
            issues.push(FileIssue {
                file: defaults.clone(),
                key: Some("services".to_owned()),
                message: "the chart's defaults declare services, which every environment would deploy".to_owned(),
                fix: format!("keep `services: {{}}` there; services are [services.<name>] tables of {file_name}"),
            });
        }
    }
    for (env_name, env) in stand.env.get_ref() {
        for file in &env.values {
            let file = file.get_ref();
            if let Some(v) = read_yaml(root, file, &mut issues) {
                for (key, owner) in crate::topology::keys_in_json(&v) {
                    issues.push(FileIssue {
                        file: file.clone(),
                        key: Some(key),
                        message: format!("a topology key in a hand-written values file of env.{}", env_name.get_ref()),
                        fix: format!("remove it; the fact belongs in {}", owner.replace("<env>", env_name.get_ref())),
                    });
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ValuesError::Files(FileIssues(issues)))
    }
}

/// Writes every generated values file under `root` and removes orphaned ones. Returns
/// the paths written (changed or new) and removed, relative to `root`.
pub fn write_files(stand: &Stand, root: &Path) -> Result<(Vec<String>, Vec<String>), ValuesError> {
    let mut written = Vec::new();
    for generated in generate_all(stand)? {
        let path = root.join(&generated.path);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == generated.text) {
            continue;
        }
        std::fs::write(&path, &generated.text).map_err(|source| ValuesError::Write { path: path.clone(), source })?;
        written.push(generated.path);
    }
    let mut removed = Vec::new();
    for orphan in orphans(stand, root) {
        let path = root.join(&orphan);
        std::fs::remove_file(&path).map_err(|source| ValuesError::Write { path, source })?;
        removed.push(orphan);
    }
    Ok((written, removed))
}

/// Generated values files in the chart's directory whose environment is gone.
fn orphans(stand: &Stand, root: &Path) -> Vec<String> {
    let chart = stand.section().chart.get_ref().trim_end_matches('/');
    let Ok(entries) = std::fs::read_dir(root.join(chart)) else {
        return Vec::new();
    };
    let envs = stand.env_names();
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            let env = name.strip_prefix("values-")?.strip_suffix(".yaml")?;
            (!envs.iter().any(|e| e == env)).then(|| format!("{chart}/{name}"))
        })
        .filter(|path| std::fs::read_to_string(root.join(path)).is_ok_and(|t| t.starts_with(HEADER_START)))
        .collect();
    out.sort();
    out
}

fn read_yaml(root: &Path, file: &str, issues: &mut Vec<FileIssue>) -> Option<Value> {
    let text = match std::fs::read_to_string(root.join(file)) {
        Ok(t) => t,
        Err(e) => {
            issues.push(FileIssue { file: file.to_owned(), key: None, message: format!("cannot read: {e}"), fix: "restore the file".to_owned() });
            return None;
        }
    };
    match serde_yaml_ng::from_str::<Value>(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            issues.push(FileIssue { file: file.to_owned(), key: None, message: format!("not YAML: {e}"), fix: "fix the YAML".to_owned() });
            None
        }
    }
}

/// 1-based number of the first line where two texts differ.
fn first_difference(a: &str, b: &str) -> usize {
    let mut left = a.lines();
    let mut right = b.lines();
    let mut n = 1;
    loop {
        match (left.next(), right.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            (None, None) => return n,
            _ => return n,
        }
    }
}

fn stand_file_name(stand: &Stand) -> String {
    stand.file().file_name().map_or_else(|| "stand.toml".to_owned(), |f| f.to_string_lossy().into_owned())
}

/// The topology part of the values: what the chart needs to render the plan.
fn topology(plan: &Plan) -> Value {
    let services: Map<String, Value> = plan
        .services
        .iter()
        .map(|s| (s.name.clone(), service(s)))
        .collect();
    json!({
        "devSync": {"enabled": plan.live_sync},
        "rbac": {"create": plan.live_sync},
        "services": services,
    })
}

fn service(s: &ServicePlan) -> Value {
    json!({
        "enabled": true,
        "image": {"repository": s.image.repository, "tag": s.image.tag},
        "port": s.port,
        "replicas": s.replicas,
        "database": database(&s.database),
    })
}

fn database(d: &DatabasePlan) -> Value {
    let mut db = json!({"mode": match d.mode {
        DbMode::InCluster => "inCluster",
        DbMode::External => "external",
        DbMode::None => "none",
    }});
    if let Some(name) = &d.name {
        db["name"] = json!(name);
    }
    if let Some(user) = &d.user {
        db["user"] = json!(user);
    }
    match d.mode {
        DbMode::InCluster => {
            let mut persistence = json!({"enabled": d.persistence.unwrap_or(true)});
            if let Some(size) = &d.size {
                persistence["size"] = json!(size);
            }
            if let Some(class) = &d.storage_class {
                persistence["storageClass"] = json!(class);
            }
            db["inCluster"] = json!({"persistence": persistence});
        }
        DbMode::External => {
            let mut external = json!({});
            if let Some(host) = &d.host {
                external["host"] = json!(host);
            }
            if let Some(port) = d.port {
                external["port"] = json!(port);
            }
            if let Some(sslmode) = d.sslmode {
                external["sslmode"] = json!(sslmode.to_string());
            }
            if let Some(secret) = &d.secret {
                external["existingSecret"] = json!({"name": secret.name, "key": secret.key});
            }
            db["external"] = external;
        }
        DbMode::None => {}
    }
    db
}

/// Helm's merge of values: maps merge key by key, anything else is replaced by `over`.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A TOML value as the JSON shape Helm's values have (datetimes become strings).
pub fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => json!(s),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => json!(f),
        toml::Value::Boolean(b) => json!(b),
        toml::Value::Datetime(d) => json!(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect())
        }
    }
}

/// Block-style YAML of a JSON value, keys in the map's (sorted) order.
///
/// Written here rather than with serde_yaml_ng's serializer: that one leaves strings
/// such as `yes`, `on` or `n` plain, which Helm's YAML 1.1 parser reads as booleans.
/// Every string here is a double-quoted JSON string, which YAML 1.1 and 1.2 both read
/// as that same string; numbers, booleans and null stay plain.
fn to_yaml(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = Value::String(k.clone());
                match child {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n{}", plain_key(k).unwrap_or(&key.to_string()), to_yaml(child, indent + 2)));
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{}:\n{}", plain_key(k).unwrap_or(&key.to_string()), to_yaml(child, indent + 2)));
                    }
                    // Scalars and empty containers: JSON is YAML's flow style.
                    scalar => out.push_str(&format!("{pad}{}: {scalar}\n", plain_key(k).unwrap_or(&key.to_string()))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        let body = to_yaml(item, indent + 2);
                        out.push_str(&format!("{pad}- {}\n", body.trim_start().trim_end_matches('\n')));
                    }
                    other => out.push_str(&format!("{pad}- {other}\n")),
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{scalar}\n")),
    }
    out
}

/// A map key that YAML 1.1 and 1.2 both read as the same string when written plain.
fn plain_key(k: &str) -> Option<&str> {
    let word = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    let special = matches!(
        k.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
    );
    (word && !special).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVS: &str = r#"
[env.a]
services = ["web", "api"]
live_sync = true
database = { mode = "in-cluster", size = "3Gi" }

[env.b]
services = ["api"]
replicas = 2
image_tag = "1.0"
database = { mode = "external", host = "db.example.com", secret = "api-db" }

[env.b.helm.services.api]
resources = { requests = { cpu = "50m" } }
env = { RUST_LOG = "debug", "odd key" = "yes" }
"#;

    fn stand() -> Stand {
        crate::testing::stand(ENVS)
    }

    #[test]
    fn topology_of_an_in_cluster_environment() {
        let v = values(&stand(), "a").expect("values");
        assert_eq!(v["devSync"], json!({"enabled": true}));
        assert_eq!(v["rbac"], json!({"create": true}));
        assert_eq!(
            v["services"]["api"],
            json!({"enabled": true, "image": {"repository": "s/api", "tag": "dev"}, "port": 5002, "replicas": 1,
                   "database": {"mode": "inCluster", "name": "api", "user": "api",
                                "inCluster": {"persistence": {"enabled": true, "size": "3Gi", "storageClass": ""}}}})
        );
        assert_eq!(v["services"]["web"]["database"], json!({"mode": "none"}));
    }

    #[test]
    fn external_database_and_the_helm_table() {
        let v = values(&stand(), "b").expect("values");
        let services = v["services"].as_object().expect("map");
        assert_eq!(services.keys().collect::<Vec<_>>(), ["api"], "only the environment's services");
        let api = &v["services"]["api"];
        assert_eq!(api["replicas"], 2);
        assert_eq!(api["image"]["tag"], "1.0");
        assert_eq!(
            api["database"]["external"],
            json!({"host": "db.example.com", "port": 5432, "sslmode": "prefer",
                   "existingSecret": {"name": "api-db", "key": "password"}})
        );
        assert_eq!(api["resources"], json!({"requests": {"cpu": "50m"}}));
        assert_eq!(api["env"]["RUST_LOG"], "debug");
        assert_eq!(v["devSync"]["enabled"], false);
    }

    #[test]
    fn rendered_text_has_a_header_and_round_trips() {
        let text = render(&stand(), "b").expect("render");
        assert!(text.starts_with("# GENERATED from stand.toml ([env.b]) by `devd generate`."), "{text}");
        assert!(text.contains("\n    port: 5002\n"), "{text}");
        assert!(text.contains("\n      \"odd key\": \"yes\"\n"), "{text}");
        assert!(text.contains("\n      tag: \"1.0\"\n"), "{text}");
        assert_eq!(render(&stand(), "b").expect("render"), text, "deterministic");
        // The YAML is the JSON value, as Helm would read it.
        let parsed: Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
        assert_eq!(parsed, values(&stand(), "b").expect("values"));
    }

    #[test]
    fn keys_that_need_quotes() {
        assert_eq!(plain_key("port"), Some("port"));
        assert_eq!(plain_key("service-1"), Some("service-1"));
        assert_eq!(plain_key("RUST_LOG"), Some("RUST_LOG"));
        for k in ["yes", "No", "on", "y", "true", "1", "a b", "", "-a", "a.b"] {
            assert_eq!(plain_key(k), None, "{k}");
        }
    }

    #[test]
    fn lists_and_empty_containers() {
        let v = json!({"a": [1, {"b": "c", "d": [true]}], "e": {}, "f": []});
        let text = to_yaml(&v, 0);
        let parsed: Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
        assert_eq!(parsed, v, "{text}");
    }
}
