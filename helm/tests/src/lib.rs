//! Harness for the tests of the generic chart `helm/app`.
//!
//! Everything here drives the real tools: the `helm` binary and the
//! `kubernetes-validate` command. Both come from `bash scripts/setup`; when one is
//! missing the calling test fails (never skips) and says so.
//!
//! Secrets carry random passwords, so tests compare kinds, names and fields, never
//! secret data across renders.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use serde_json::Value;

/// Every environment, one `values-<env>.yaml` each.
pub const ENVIRONMENTS: [&str; 8] = [
    "local",
    "dev",
    "staging",
    "prod",
    "service1-only",
    "service2-only",
    "test",
    "minimal",
];

/// Release name used for every render.
pub const RELEASE: &str = "stand";
/// Namespace used for every render.
pub const NAMESPACE: &str = "stand-test";

const SETUP_HINT: &str = "run `bash scripts/setup` (it installs helm and kubernetes-validate)";

/// The chart directory, `helm/app`.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../app")
}

/// The values file of an environment.
pub fn values_file(env: &str) -> PathBuf {
    chart_dir().join(format!("values-{env}.yaml"))
}

fn find_tool(name: &str, env_var: &str, preferred: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    for p in preferred {
        let p = Path::new(p);
        if p.is_file() {
            return p.to_path_buf();
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("`{name}` not found (looked at ${env_var}, {preferred:?} and PATH): {SETUP_HINT}");
}

/// The helm binary: `$HELM`, `/usr/local/bin/helm`, or `helm` on PATH.
pub fn helm_bin() -> PathBuf {
    find_tool("helm", "HELM", &["/usr/local/bin/helm"])
}

/// The `kubernetes-validate` command: `$KUBERNETES_VALIDATE` or on PATH.
pub fn kubernetes_validate_bin() -> PathBuf {
    find_tool("kubernetes-validate", "KUBERNETES_VALIDATE", &[])
}

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}: {SETUP_HINT}", bin.display()))
}

/// The Kubernetes version manifests are validated against: `$STAND_K8S_VERSION`,
/// else the one docs/CONTRACTS.md records (the first `Kubernetes 1.NN` or
/// `KUBE_VERSION=1.NN` there), else `None`: the newest kubernetes-validate knows.
pub fn kubernetes_version() -> Option<String> {
    if let Ok(v) = std::env::var("STAND_K8S_VERSION") {
        if !v.is_empty() {
            return Some(v);
        }
    }
    let contracts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONTRACTS.md");
    recorded_version(&fs::read_to_string(contracts).ok()?)
}

/// The first version written right after `Kubernetes ` or `KUBE_VERSION=`.
fn recorded_version(text: &str) -> Option<String> {
    ["Kubernetes ", "Kubernetes v", "KUBE_VERSION="]
        .iter()
        .flat_map(|marker| {
            text.match_indices(marker)
                .map(move |(i, _)| i + marker.len())
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .find_map(|start| version_at(&text[start..]))
}

/// `1.NN` or `1.NN.N` at the start of `s`.
fn version_at(s: &str) -> Option<String> {
    let minor: String = s
        .strip_prefix("1.")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if minor.len() != 2 {
        return None;
    }
    let rest = &s[2 + minor.len()..];
    let patch: String = rest
        .strip_prefix('.')
        .map(|p| p.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    Some(if patch.is_empty() {
        format!("1.{minor}")
    } else {
        format!("1.{minor}.{patch}")
    })
}

/// Arguments selecting an environment's values file.
pub fn env_args(env: &str) -> Vec<String> {
    let file = values_file(env);
    assert!(file.is_file(), "missing values file {}", file.display());
    vec!["-f".to_owned(), file.display().to_string()]
}

/// The chart's defaults carry no service (each environment's generated values file
/// lists them), so "the defaults" in these tests are `values.yaml` plus a file holding
/// only the `services` of the generated local environment: the shipped services, read
/// from that file, with every other setting left at the chart's default.
pub fn default_args() -> Vec<String> {
    let local = fs::read_to_string(values_file("local")).expect("values-local.yaml");
    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(&local).expect("values-local.yaml is YAML");
    let services = values.get("services").expect("values-local.yaml has services").clone();
    let mut only = serde_yaml_ng::Mapping::new();
    only.insert("services".into(), services);
    let text = serde_yaml_ng::to_string(&only).expect("YAML");
    let path = temp_file("default-services", &text);
    vec!["-f".to_owned(), path.display().to_string()]
}

/// `helm template` with extra arguments; Ok(stdout) or Err(stderr).
pub fn helm_template(extra: &[String]) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["template", RELEASE, &chart, "--namespace", NAMESPACE];
    args.extend(extra.iter().map(String::as_str));
    let out = run(&helm_bin(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    }
}

/// `helm lint --strict` with extra arguments; Ok(output) or Err(output).
pub fn helm_lint(extra: &[String]) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    let mut args = vec!["lint", "--strict", &chart];
    args.extend(extra.iter().map(String::as_str));
    let out = run(&helm_bin(), &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// A parsed render: the manifests as JSON values, in helm's order.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub yaml: String,
    pub objects: Vec<Value>,
}

impl Rendered {
    pub fn parse(yaml: &str) -> Rendered {
        let mut objects = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let value = serde_yaml_ng::Value::deserialize(doc).expect("helm output is valid YAML");
            let json: Value = serde_json::to_value(&value).expect("manifest converts to JSON");
            if !json.is_null() {
                objects.push(json);
            }
        }
        Rendered {
            yaml: yaml.to_owned(),
            objects,
        }
    }

    /// The set of (kind, name) rendered.
    pub fn keys(&self) -> BTreeSet<(String, String)> {
        self.objects.iter().map(key_of).collect()
    }

    /// The object of that kind and name; panics with the rendered set if absent.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind}/{name} rendered; have {:?}", self.keys()))
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }
}

/// (kind, name) of a manifest.
pub fn key_of(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or("?").to_owned(),
        o["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
    )
}

/// Render an environment (plus extra arguments); panics with helm's error.
pub fn render_env(env: &str, extra: &[&str]) -> Rendered {
    let mut args = env_args(env);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    match helm_template(&args) {
        Ok(yaml) => Rendered::parse(&yaml),
        Err(e) => panic!("helm template for {env} {extra:?} failed:\n{e}"),
    }
}

/// Render with only the chart's defaults (see [`default_args`]) plus extra arguments.
pub fn render_default(extra: &[&str]) -> Rendered {
    let mut args = default_args();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    match helm_template(&args) {
        Ok(yaml) => Rendered::parse(&yaml),
        Err(e) => panic!("helm template {extra:?} failed:\n{e}"),
    }
}

static TMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh file in the system temp dir holding `contents`.
pub fn temp_file(label: &str, contents: &str) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join("stand-chart-tests");
    fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(format!("{label}-{}-{n}.yaml", std::process::id()));
    fs::write(&path, contents).expect("write temp file");
    path
}

/// Run `kubernetes-validate --strict` over a multi-document manifest; panics with
/// its report when any object fails.
pub fn validate_strict(label: &str, yaml: &str) -> String {
    let path = temp_file(label, yaml);
    let file = path.display().to_string();
    let mut args = vec!["--strict", "--quiet"];
    let version = kubernetes_version();
    if let Some(v) = version.as_deref() {
        args.extend(["--kubernetes-version", v]);
    }
    args.push(&file);
    let out = run(&kubernetes_validate_bin(), &args);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_file(&path);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict (version {}) rejected {label}:\n{report}",
        version.as_deref().unwrap_or("newest")
    );
    report
}

/// A JSON pointer that must exist.
pub fn at<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer)
        .unwrap_or_else(|| panic!("{} has no {pointer}", describe(v)))
}

/// `Kind/name` of a manifest for messages.
pub fn describe(v: &Value) -> String {
    let (k, n) = key_of(v);
    format!("{k}/{n}")
}

/// The env var `name` of a container: its `value`/`valueFrom` object.
pub fn container_env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[cfg(test)]
mod tests {
    use super::recorded_version;

    #[test]
    fn recorded_version_reads_contracts_wording() {
        let v = |t: &str| recorded_version(t);
        assert_eq!(
            v("validated against Kubernetes 1.33 (strict)"),
            Some("1.33".into())
        );
        assert_eq!(
            v("kubernetes-validate 1.37.0, KUBE_VERSION=1.33"),
            Some("1.33".into())
        );
        assert_eq!(v("Kubernetes v1.34.2 schemas"), Some("1.34.2".into()));
        assert_eq!(v("Kubernetes API; helm v4.1.4"), None);
        assert_eq!(v("nothing here"), None);
    }
}
