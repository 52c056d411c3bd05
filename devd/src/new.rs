//! `devd new <name>`: add a service in one command.
//!
//! Writes a crate under `services/<name>` in the shape of the shipped services (it
//! depends on service-kit only, a one-line main, a lib that names the service, its port
//! and its greeting, a test that starts it), adds it to the workspace, adds its
//! `[services.<name>]` table to stand.toml and lists it in the chosen environments, then
//! regenerates the Helm values. Everything is checked before anything is written: the
//! new stand.toml must parse and cross-check, or nothing changes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use stand_cli::{NewArgs, Place, Usage};

use crate::config::{self, DbMode, Stand};
use crate::values;

/// The shim's port inside a dev container: no service may listen there.
const SHIM_PORT: u16 = stand_shim_protocol::DEFAULT_PORT;

/// What `devd new` did, for the summary it prints.
#[derive(Debug)]
pub struct Added {
    pub name: String,
    pub port: u16,
    pub envs: Vec<String>,
    pub files: Vec<String>,
}

pub fn run(place: &Place, args: NewArgs) -> anyhow::Result<Added> {
    let stand = crate::commands::load(place)?;
    let name = args.name.as_str();
    if !config::is_service_name(name) {
        return Err(Usage(format!(
            "`{name}` is not a valid service name: at most 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit (a DNS-1035 label)"
        ))
        .into());
    }
    if stand.service(name).is_some() {
        return Err(Usage(format!("service `{name}` already exists in {}", place.file.display())).into());
    }
    let rel_dir = format!("services/{name}");
    let dir = place.root.join(&rel_dir);
    if dir.exists() {
        return Err(Usage(format!("{} already exists; choose another name or remove it", dir.display())).into());
    }
    let used = used_ports(&stand);
    let port = match args.port {
        Some(0) => return Err(Usage("port 0 is not a port; give one in 1..=65535".to_owned()).into()),
        Some(p) => {
            if let Some(owner) = used.iter().find(|(q, _)| *q == p).map(|(_, o)| o) {
                return Err(Usage(format!("port {p} is already used by {owner}; choose another with --port")).into());
            }
            p
        }
        None => free_port(&used),
    };
    let envs = choose_envs(&stand, &args.envs)?;

    // stand.toml: the service's table, then the environments' lists and overrides.
    let original = std::fs::read_to_string(&place.file).with_context(|| format!("cannot read {}", place.file.display()))?;
    let text = insert_service_table(&stand, &original, name, port, args.database, &rel_dir);
    let text = list_in_envs(&stand, &text, name, args.database, &envs)?;
    let new_stand = Stand::parse(&text, &place.file).map_err(|e| {
        anyhow::anyhow!("devd new would leave {} invalid, so nothing was written:\n{e}", place.file.display())
    })?;

    // The workspace member.
    let manifest_path = place.root.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path).with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = add_member(&manifest, &rel_dir).with_context(|| format!("cannot add {rel_dir} to {}", manifest_path.display()))?;

    // Write: the crate, the workspace, stand.toml, the values.
    let lib_name = name.replace('-', "_");
    let mut files = Vec::new();
    for (rel, body) in crate_files(name, &lib_name, port, args.database) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))?;
        files.push(format!("{rel_dir}/{rel}"));
    }
    std::fs::write(&manifest_path, manifest).with_context(|| format!("cannot write {}", manifest_path.display()))?;
    files.push("Cargo.toml".to_owned());
    std::fs::write(&place.file, &text).with_context(|| format!("cannot write {}", place.file.display()))?;
    files.push(place.file.display().to_string());
    let (written, removed) = values::write_files(&new_stand, &place.root)?;
    files.extend(written);
    files.extend(removed);
    update_lock(&place.root)?;
    files.push("Cargo.lock".to_owned());
    Ok(Added { name: name.to_owned(), port, envs, files })
}

/// The summary `devd new` prints.
pub fn summary(a: &Added) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "added service {} on port {}", a.name, a.port);
    let _ = writeln!(
        s,
        "  environments: {}",
        if a.envs.is_empty() { "(none: list it in an [env.<name>] services)".to_owned() } else { a.envs.join(", ") }
    );
    for f in &a.files {
        let _ = writeln!(s, "  wrote {f}");
    }
    let _ = writeln!(s, "next: edit services/{}/src/lib.rs (its greeting and routes), then `cargo build -p {}`", a.name, a.name);
    s
}

fn used_ports(stand: &Stand) -> Vec<(u16, String)> {
    let mut used: Vec<(u16, String)> = stand
        .services
        .get_ref()
        .iter()
        .map(|(n, s)| (*s.port.get_ref(), format!("service `{}`", n.get_ref())))
        .collect();
    used.push((stand.api_port(), "devd's API (stand.api_port)".to_owned()));
    used.push((SHIM_PORT, "the shim of dev images".to_owned()));
    used
}

fn free_port(used: &[(u16, String)]) -> u16 {
    let taken: BTreeSet<u16> = used.iter().map(|(p, _)| *p).collect();
    let services_max = used.iter().filter(|(_, o)| o.starts_with("service")).map(|(p, _)| *p).max().unwrap_or(5000);
    (services_max.saturating_add(1)..=u16::MAX).find(|p| !taken.contains(p)).unwrap_or(services_max)
}

fn choose_envs(stand: &Stand, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    if !wanted.is_empty() {
        let names = stand.env_names();
        for w in wanted {
            if !names.contains(w) {
                return Err(Usage(format!("unknown environment `{w}`; valid: {}", names.join(", "))).into());
            }
        }
        let mut out = wanted.to_vec();
        out.sort();
        out.dedup();
        return Ok(out);
    }
    let all: BTreeSet<String> = stand.service_names().into_iter().collect();
    Ok(stand
        .env
        .get_ref()
        .iter()
        .filter(|(_, e)| {
            let listed: BTreeSet<String> = e.services.get_ref().iter().map(|s| s.get_ref().clone()).collect();
            listed == all
        })
        .map(|(n, _)| n.get_ref().clone())
        .collect())
}

/// The new `[services.<name>]` table, placed after the last service's table.
fn insert_service_table(stand: &Stand, text: &str, name: &str, port: u16, database: bool, dir: &str) -> String {
    let block = format!(
        "\n[services.{name}]\npackage = \"{name}\"\npath = \"{dir}\"\nport = {port}\ndatabase = {database}\nimage = \"{}/{name}\"\n",
        stand.section().name.get_ref()
    );
    // The end of the line holding the last key of the last service table in the file.
    let end = stand
        .services
        .get_ref()
        .values()
        .flat_map(|s| [s.package.span().end, s.path.span().end, s.port.span().end, s.image.span().end])
        .max();
    match end {
        Some(offset) => {
            let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i + 1);
            let mut out = String::with_capacity(text.len() + block.len());
            out.push_str(&text[..line_end]);
            out.push_str(&block);
            out.push_str(&text[line_end..]);
            out
        }
        None => format!("{text}{block}"),
    }
}

/// Adds the service to each environment's `services` list and, where the environment's
/// databases are external, its own database override, modelled on a sibling's (the
/// sibling's name replaced by the new one in its host and Secret).
fn list_in_envs(stand: &Stand, text: &str, name: &str, database: bool, envs: &[String]) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().context("stand.toml does not parse as TOML")?;
    for env_name in envs {
        let Some(env) = stand.environment(env_name) else { continue };
        let services = doc["env"][env_name.as_str()]["services"]
            .as_array_mut()
            .with_context(|| format!("env.{env_name}.services is not an array"))?;
        services.push(name);
        if !database {
            continue;
        }
        let mode = env.database.as_ref().and_then(|d| d.get_ref().mode.as_ref()).map_or(DbMode::InCluster, |m| *m.get_ref());
        let base = env.database.as_ref().map(|d| d.get_ref());
        if mode != DbMode::External || (base.is_some_and(|d| d.host.is_some() && d.secret.is_some())) {
            continue;
        }
        // Find a sibling whose override gives host and secret.
        let sibling = env.overrides.iter().find_map(|(svc, o)| {
            let d = o.database.as_ref()?.get_ref();
            Some((svc.get_ref().clone(), d.host.as_ref()?.get_ref().clone(), d.secret.as_ref()?.get_ref().clone()))
        });
        let Some((sib, host, secret)) = sibling.filter(|(sib, host, secret)| host.contains(sib.as_str()) && secret.contains(sib.as_str())) else {
            return Err(Usage(format!(
                "env.{env_name} uses external databases and devd cannot tell which host and Secret `{name}` would use; \
                 leave it out (--env for the others) and add [env.{env_name}.overrides.{name}] database = {{ host = \"...\", secret = \"...\" }} by hand"
            ))
            .into());
        };
        let mut table = toml_edit::InlineTable::new();
        table.insert("host", host.replace(sib.as_str(), name).into());
        table.insert("secret", secret.replace(sib.as_str(), name).into());
        let mut over = toml_edit::Table::new();
        over.insert("database", toml_edit::value(table));
        let overrides = doc["env"][env_name.as_str()]
            .as_table_mut()
            .with_context(|| format!("env.{env_name} is not a table"))?
            .entry("overrides")
            .or_insert_with(|| {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                toml_edit::Item::Table(t)
            });
        let overrides = overrides.as_table_mut().with_context(|| format!("env.{env_name}.overrides is not a table"))?;
        // Place it right after the sibling's override table.
        if let Some(pos) = overrides.get(sib.as_str()).and_then(|t| t.as_table()).and_then(|t| t.position()) {
            over.set_position(pos);
        }
        overrides.insert(name, toml_edit::Item::Table(over));
    }
    Ok(doc.to_string())
}

fn add_member(manifest: &str, member: &str) -> anyhow::Result<String> {
    let mut doc: toml_edit::DocumentMut = manifest.parse().context("not TOML")?;
    let members = doc["workspace"]["members"].as_array_mut().context("no [workspace] members array")?;
    if !members.iter().any(|m| m.as_str() == Some(member)) {
        // Keep it next to the other services when there are any.
        let after = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.as_str().is_some_and(|s| s.starts_with("services/")))
            .map(|(i, _)| i)
            .last();
        match after {
            Some(i) => members.insert(i + 1, member),
            None => members.push(member),
        }
        // One member a line, as the file has them.
        for m in members.iter_mut() {
            m.decor_mut().set_prefix("\n    ");
            m.decor_mut().set_suffix("");
        }
        members.set_trailing("\n");
        members.set_trailing_comma(true);
    }
    Ok(doc.to_string())
}

/// Cargo.lock gains the new workspace member, so that `--locked` builds keep working.
/// `cargo update --workspace --offline` resolves from the index alone: the new crate
/// depends on crates the lock already has, and nothing else moves. (`cargo metadata
/// --offline` would also write the lock, but it needs the sources of every locked
/// package for every platform, which a machine that only built for itself lacks.)
fn update_lock(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(&cargo)
        .args(["update", "--workspace", "--offline", "--quiet"])
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        anyhow::bail!(
            "`cargo update --workspace --offline` could not update Cargo.lock: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn crate_files(name: &str, lib: &str, port: u16, database: bool) -> Vec<(&'static str, String)> {
    let manifest = format!(
        r#"[package]
name = "{name}"
description = "stand application service {name} (axum + tokio-postgres)"
edition.workspace = true
rust-version.workspace = true
version.workspace = true
license.workspace = true
publish.workspace = true

[dependencies]
service-kit.workspace = true

[dev-dependencies]
service-kit = {{ workspace = true, features = ["testing"] }}
reqwest.workspace = true
serde_json.workspace = true
tokio.workspace = true

[lints]
workspace = true
"#
    );
    let lib_rs = format!(
        r#"//! {name}: a stand application service. Everything generic lives in `service-kit`;
//! this crate names the service and says what is its own.

use service_kit::routes::ITEMS_MIGRATIONS;
use service_kit::{{ServiceInfo, ServiceSpec}};

pub const NAME: &str = "{name}";
pub const DEFAULT_PORT: u16 = {port};

/// The service's greeting at `GET /api/{name}`.
pub const MESSAGE: &str = "hello from {name}";

pub fn spec() -> ServiceSpec {{
    ServiceSpec {{
        info: ServiceInfo {{ name: NAME, version: env!("CARGO_PKG_VERSION"), message: MESSAGE }},
        default_port: DEFAULT_PORT,
        migrations: ITEMS_MIGRATIONS,
    }}
}}
"#
    );
    let main_rs = format!(
        "fn main() -> std::process::ExitCode {{\n    service_kit::server::main({lib}::spec())\n}}\n"
    );
    let db_note = if database {
        "it has a database in stand.toml; here it runs without one"
    } else {
        "it runs without a database"
    };
    let test_rs = format!(
        r#"//! {name} runs the kit (tested in depth in services/kit); here: its own name, greeting
//! and routes, through the real binary ({db_note}).

use reqwest::StatusCode;
use serde_json::Value;
use service_kit::testing::ServiceProcess;

const BIN: &str = env!("CARGO_BIN_EXE_{name}");

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {{
    let response = http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {{url}}: {{e}}"));
    (response.status(), response.json().await.expect("JSON body"))
}}

#[tokio::test]
async fn starts_and_says_who_it_is() {{
    let svc = ServiceProcess::start(BIN, &[]).await;
    let http = reqwest::Client::new();
    let (status, health) = get(&http, svc.url("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let (status, about) = get(&http, svc.url("/api/{name}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(about["name"], {lib}::NAME);
    assert_eq!(about["message"], {lib}::MESSAGE);
    // Without a database its items are unavailable, not an error of the service.
    assert_eq!(get(&http, svc.url("/api/{name}/items")).await.0, StatusCode::SERVICE_UNAVAILABLE);
}}
"#
    );
    vec![
        ("Cargo.toml", manifest),
        ("src/lib.rs", lib_rs),
        ("src/main.rs", main_rs),
        ("tests/service.rs", test_rs),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_stay_one_a_line_next_to_the_services() {
        let manifest = "[workspace]\nresolver = \"2\"\nmembers = [\n    \"services/kit\",\n    \"services/a\",\n    \"devd\",\n]\n";
        let out = add_member(manifest, "services/b").expect("adds");
        assert_eq!(
            out,
            "[workspace]\nresolver = \"2\"\nmembers = [\n    \"services/kit\",\n    \"services/a\",\n    \"services/b\",\n    \"devd\",\n]\n"
        );
        assert_eq!(add_member(&out, "services/b").expect("idempotent"), out);
    }

    #[test]
    fn a_free_port_is_above_the_services() {
        let used = vec![(5001, "service `a`".to_owned()), (5002, "service `b`".to_owned()), (5003, "devd".to_owned())];
        assert_eq!(free_port(&used), 5004);
    }
}
