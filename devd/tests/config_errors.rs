//! Malformed stand.toml files, each rejected at an exact line and column with the
//! offending key named.

use std::path::Path;

use devd::config::{ConfigError, Stand};

/// A small valid stand; every case below changes one thing in it.
///
/// Lines:  1 [stand] .. 6 default_env, 8 [services.web] .. 13 image,
///         15 [env.local], 16 services, 17 values.
const BASE: &str = r#"[stand]
name = "s"
# every environment deploys into a namespace of its own: s-<env>
chart = "helm/app"
release = "s"
default_env = "local"

[services.web]
package = "web"
path = "services/web"
port = 5001
database = true
image = "s/web"

[env.local]
services = ["web"]
values = []
"#;

/// `BASE` with `from` (which must occur exactly once) replaced by `to`.
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur once in BASE"
    );
    BASE.replacen(from, to, 1)
}

/// `BASE` with `extra` appended: its first line is line 18.
fn append(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syntax,
    Schema,
    Invalid,
}

/// Parse `text` and assert that its first error is at `line`:`col`, of `kind`, and that
/// its key contains `key`. Returns the rendered error for further checks.
fn check(text: &str, kind: Kind, line: usize, col: usize, key: &str) -> String {
    let errors = match Stand::parse(text, Path::new("stand.toml")) {
        Ok(_) => panic!("accepted, expected an error at {line}:{col} on `{key}`:\n{text}"),
        Err(e) => e,
    };
    let first = errors.first().expect("at least one error");
    let (actual_kind, located) = match first {
        ConfigError::Syntax(l) => (Kind::Syntax, l),
        ConfigError::Schema(l) => (Kind::Schema, l),
        ConfigError::Invalid(l) => (Kind::Invalid, l),
        ConfigError::Read { .. } => panic!("read error from parse: {first}"),
    };
    let rendered = first.to_string();
    assert_eq!(
        (located.line, located.column),
        (line, col),
        "wrong place: {rendered}"
    );
    assert!(
        located.key.contains(key),
        "key `{}` lacks `{key}`: {rendered}",
        located.key
    );
    assert_eq!(actual_kind, kind, "{rendered}");
    let prefix = format!("stand.toml:{line}:{col}: key `");
    assert!(rendered.starts_with(&prefix), "{rendered}");
    assert!(
        located.expected.is_some(),
        "no hint at what is valid: {rendered}"
    );
    rendered
}

#[test]
fn base_is_valid() {
    if let Err(e) = Stand::parse(BASE, Path::new("stand.toml")) {
        panic!("{e}");
    }
}

// ---- TOML syntax ----------------------------------------------------------------------

#[test]
fn syntax_unterminated_string() {
    check(
        &edit("name = \"s\"", "name = \"s"),
        Kind::Syntax,
        2,
        10,
        "stand.name",
    );
}

#[test]
fn syntax_unclosed_table_header() {
    check(
        &edit("[services.web]", "[services.web"),
        Kind::Syntax,
        8,
        14,
        "services.web",
    );
}

#[test]
fn syntax_bad_value() {
    check(
        &edit("port = 5001", "port = 50 01"),
        Kind::Syntax,
        11,
        8,
        "services.web.port",
    );
}

#[test]
fn syntax_duplicate_key() {
    let r = check(
        &edit("# every environment deploys into a namespace of its own: s-<env>", "name = \"t\""),
        Kind::Syntax,
        3,
        1,
        "stand.name",
    );
    assert!(r.contains("duplicate key"), "{r}");
}

#[test]
fn syntax_unclosed_array() {
    // The array swallows the next line's key and trips over its `=`.
    check(
        &edit("services = [\"web\"]", "services = [\"web\","),
        Kind::Syntax,
        17,
        8,
        "env.local.services",
    );
}

// ---- unknown keys, at every level -----------------------------------------------------

#[test]
fn unknown_key_top_level() {
    let r = check(
        &append("[envs.other]\nservices = []\n"),
        Kind::Schema,
        18,
        2,
        "envs",
    );
    assert!(r.contains("one of \"stand\", \"services\", \"env\""), "{r}");
}

#[test]
fn unknown_key_in_stand() {
    let r = check(
        &edit("name = \"s\"", "nmae = \"s\""),
        Kind::Schema,
        2,
        1,
        "stand.nmae",
    );
    assert!(r.contains("unknown key `nmae`"), "{r}");
    assert!(r.contains("\"name\""), "lists the valid keys: {r}");
}

#[test]
fn unknown_key_in_service() {
    check(
        &edit("port = 5001", "prot = 5001"),
        Kind::Schema,
        11,
        1,
        "services.web.prot",
    );
}

#[test]
fn unknown_key_in_env() {
    check(
        &append("live-sync = true\n"),
        Kind::Schema,
        18,
        1,
        "env.local.live-sync",
    );
}

#[test]
fn unknown_key_in_env_database() {
    check(
        &append("database = { mode = \"in-cluster\", sise = \"1Gi\" }\n"),
        Kind::Schema,
        18,
        35,
        "env.local.database.sise",
    );
}

#[test]
fn unknown_key_in_override() {
    check(
        &append("[env.local.overrides.web]\nreplica = 2\n"),
        Kind::Schema,
        19,
        1,
        "env.local.overrides.web.replica",
    );
}

// ---- wrong types ----------------------------------------------------------------------

#[test]
fn wrong_type_port_string() {
    let r = check(
        &edit("port = 5001", "port = \"5001\""),
        Kind::Schema,
        11,
        8,
        "services.web.port",
    );
    assert!(r.contains("1..=65535"), "{r}");
}

#[test]
fn wrong_type_services_not_a_list() {
    check(
        &edit("services = [\"web\"]", "services = \"web\""),
        Kind::Schema,
        16,
        12,
        "env.local.services",
    );
}

#[test]
fn wrong_type_list_element() {
    check(
        &edit("services = [\"web\"]", "services = [\"web\", 3]"),
        Kind::Schema,
        16,
        20,
        "env.local.services",
    );
}

#[test]
fn wrong_type_database_flag() {
    check(
        &edit("database = true", "database = \"yes\""),
        Kind::Schema,
        12,
        12,
        "services.web.database",
    );
}

#[test]
fn negative_replicas() {
    check(
        &append("replicas = -1\n"),
        Kind::Schema,
        18,
        12,
        "env.local.replicas",
    );
}

// ---- missing required keys ------------------------------------------------------------

#[test]
fn missing_stand_name() {
    let r = check(
        &edit("name = \"s\"\n", ""),
        Kind::Schema,
        1,
        1,
        "stand.name",
    );
    assert!(r.contains("required key is missing"), "{r}");
}

#[test]
fn missing_service_port() {
    check(
        &edit("port = 5001\n", ""),
        Kind::Schema,
        8,
        1,
        "services.web.port",
    );
}

#[test]
fn missing_env_services() {
    check(
        &edit("services = [\"web\"]\n", ""),
        Kind::Schema,
        15,
        1,
        "env.local.services",
    );
}

#[test]
fn missing_env_table() {
    let text = BASE.split("[env.local]").next().expect("prefix").to_owned();
    check(&text, Kind::Schema, 1, 1, "env");
}

// ---- enumerations ---------------------------------------------------------------------

#[test]
fn bad_target() {
    let r = check(
        &append("target = \"k8s\"\n"),
        Kind::Schema,
        18,
        10,
        "env.local.target",
    );
    assert!(r.contains("\"kubernetes\", \"docker\""), "{r}");
}

#[test]
fn bad_database_mode() {
    let r = check(
        &append("database = { mode = \"incluster\" }\n"),
        Kind::Schema,
        18,
        21,
        "env.local.database.mode",
    );
    assert!(r.contains("\"in-cluster\", \"external\", \"none\""), "{r}");
}

#[test]
fn bad_sslmode() {
    check(
        &append("database = { mode = \"external\", host = \"db\", secret = \"db\", sslmode = \"require\" }\n"),
        Kind::Schema,
        18,
        71,
        "env.local.database.sslmode",
    );
}

// ---- ports ----------------------------------------------------------------------------

#[test]
fn port_zero() {
    check(
        &edit("port = 5001", "port = 0"),
        Kind::Invalid,
        11,
        8,
        "services.web.port",
    );
}

#[test]
fn port_too_large() {
    let r = check(
        &edit("port = 5001", "port = 70000"),
        Kind::Schema,
        11,
        8,
        "services.web.port",
    );
    assert!(r.contains("70000"), "{r}");
}

#[test]
fn duplicate_port() {
    let r = check(
        &append("\n[services.api]\npackage = \"api\"\npath = \"services/api\"\nport = 5001\nimage = \"s/api\"\n"),
        Kind::Invalid,
        22,
        8,
        "services.api.port",
    );
    assert!(r.contains("already used by service `web`"), "{r}");
}

#[test]
fn port_of_devd_api() {
    check(
        &edit("port = 5001", "port = 7700"),
        Kind::Invalid,
        11,
        8,
        "services.web.port",
    );
}

#[test]
fn api_port_zero() {
    check(
        &edit(
            "default_env = \"local\"",
            "default_env = \"local\"\napi_port = 0",
        ),
        Kind::Invalid,
        7,
        12,
        "stand.api_port",
    );
}

// ---- names ----------------------------------------------------------------------------

#[test]
fn service_name_not_dns() {
    let text = edit("[services.web]", "[services.web_1]").replace("[\"web\"]", "[\"web_1\"]");
    let r = check(&text, Kind::Invalid, 8, 11, "services.web_1");
    assert!(r.contains("DNS-1035"), "{r}");
}

#[test]
fn service_name_too_long() {
    let long = "a".repeat(64);
    let text = edit("[services.web]", &format!("[services.{long}]"))
        .replace("[\"web\"]", &format!("[\"{long}\"]"));
    check(&text, Kind::Invalid, 8, 11, &long);
}

#[test]
fn stand_namespace_is_retired() {
    let r = check(
        &edit("# every environment deploys into a namespace of its own: s-<env>", "namespace = \"My_NS\""),
        Kind::Invalid,
        3,
        13,
        "stand.namespace",
    );
    assert!(r.contains("retired") && r.contains("[env.<name>]"), "{r}");
}

#[test]
fn env_namespace_not_dns() {
    check(&append("namespace = \"My_NS\"\n"), Kind::Invalid, 18, 13, "env.local.namespace");
}

#[test]
fn two_environments_in_one_namespace() {
    let r = check(
        &append("namespace = \"shared\"\n\n[env.other]\nservices = [\"web\"]\nnamespace = \"shared\"\n"),
        Kind::Invalid,
        22,
        13,
        "env.other.namespace",
    );
    assert!(r.contains("namespace `shared` is env `local`'s too"), "{r}");
    // The default namespace counts too: `s-local` named by another environment.
    let r = check(
        &append("\n[env.other]\nservices = [\"web\"]\nnamespace = \"s-local\"\n"),
        Kind::Invalid,
        21,
        13,
        "env.other.namespace",
    );
    assert!(r.contains("namespace `s-local` is env `local`'s too"), "{r}");
}

#[test]
fn a_default_namespace_too_long_names_the_environment() {
    let env = "e".repeat(53);
    let text = edit("name = \"s\"", &format!("name = \"{}\"", "s".repeat(20))).replace("[env.local]", &format!("[env.{env}]")).replace("default_env = \"local\"", &format!("default_env = \"{env}\""));
    let r = check(&text, Kind::Invalid, 15, 6, &format!("env.{env}.namespace"));
    assert!(r.contains("is not a DNS-1123 label") && r.contains("namespace = "), "{r}");
}

#[test]
fn an_empty_context_pattern() {
    check(&append("contexts = [\"kind-*\", \"\"]\n"), Kind::Invalid, 18, 23, "env.local.contexts[1]");
}

#[test]
fn default_env_unknown() {
    let r = check(
        &edit("default_env = \"local\"", "default_env = \"prod\""),
        Kind::Invalid,
        6,
        15,
        "stand.default_env",
    );
    assert!(r.contains("one of \"local\""), "{r}");
}

#[test]
fn image_with_tag() {
    check(
        &edit("image = \"s/web\"", "image = \"s/web:1.0\""),
        Kind::Invalid,
        13,
        9,
        "services.web.image",
    );
}

// ---- environments ---------------------------------------------------------------------

#[test]
fn env_names_unknown_service() {
    let r = check(
        &edit("services = [\"web\"]", "services = [\"web\", \"db\"]"),
        Kind::Invalid,
        16,
        20,
        "env.local.services[1]",
    );
    assert!(
        r.contains("unknown service `db`") && r.contains("one of \"web\""),
        "{r}"
    );
}

#[test]
fn env_lists_service_twice() {
    check(
        &edit("services = [\"web\"]", "services = [\"web\", \"web\"]"),
        Kind::Invalid,
        16,
        20,
        "env.local.services[1]",
    );
}

#[test]
fn env_without_services() {
    check(
        &edit("services = [\"web\"]", "services = []"),
        Kind::Invalid,
        16,
        12,
        "env.local.services",
    );
}

#[test]
fn override_for_service_not_in_env() {
    check(
        &append("[env.local.overrides.api]\nreplicas = 2\n"),
        Kind::Invalid,
        18,
        22,
        "env.local.overrides.api",
    );
}

#[test]
fn zero_replicas() {
    check(
        &append("replicas = 0\n"),
        Kind::Invalid,
        18,
        12,
        "env.local.replicas",
    );
}

#[test]
fn absolute_values_file() {
    check(
        &edit("values = []", "values = [\"/etc/values.yaml\"]"),
        Kind::Invalid,
        17,
        11,
        "env.local.values[0]",
    );
}

#[test]
fn bad_build_target() {
    check(
        &append("build_target = \"linux\"\n"),
        Kind::Invalid,
        18,
        16,
        "env.local.build_target",
    );
}

// ---- databases ------------------------------------------------------------------------

#[test]
fn external_database_without_host() {
    let r = check(
        &append("database = { mode = \"external\", secret = \"db\" }\n"),
        Kind::Invalid,
        18,
        12,
        "env.local.database.host",
    );
    assert!(r.contains("no host"), "{r}");
}

#[test]
fn external_database_without_secret() {
    let r = check(
        &append("database = { mode = \"external\", host = \"db.example.com\" }\n"),
        Kind::Invalid,
        18,
        12,
        "env.local.database.secret",
    );
    assert!(r.contains("secret = "), "says what to write: {r}");
}

#[test]
fn external_database_in_an_override_table() {
    let text = append("database = { mode = \"external\", host = \"db\" }\n[env.local.overrides.web]\ndatabase = { port = 5433 }\n");
    check(
        &text,
        Kind::Invalid,
        20,
        12,
        "env.local.overrides.web.database.secret",
    );
}

#[test]
fn bad_size() {
    let r = check(
        &append("database = { size = \"2GB\" }\n"),
        Kind::Invalid,
        18,
        21,
        "env.local.database.size",
    );
    assert!(r.contains("\"1Gi\""), "{r}");
}

#[test]
fn size_without_persistence() {
    check(
        &append("database = { persistence = false, size = \"1Gi\" }\n"),
        Kind::Invalid,
        18,
        42,
        "env.local.database.size",
    );
}

#[test]
fn host_with_in_cluster_database() {
    check(
        &append("database = { mode = \"in-cluster\", host = \"db\" }\n"),
        Kind::Invalid,
        18,
        42,
        "env.local.database.host",
    );
}

#[test]
fn database_mode_for_service_without_database() {
    let text = edit("database = true", "database = false")
        + "[env.local.overrides.web]\ndatabase = { mode = \"in-cluster\" }\n";
    check(
        &text,
        Kind::Invalid,
        19,
        21,
        "env.local.overrides.web.database.mode",
    );
}

#[test]
fn bad_database_name() {
    check(
        &append("database = { name = \"my-db\" }\n"),
        Kind::Invalid,
        18,
        21,
        "env.local.database.name",
    );
}

// ---- all errors, in file order --------------------------------------------------------

#[test]
fn every_cross_check_error_is_reported_in_file_order() {
    let text = edit("default_env = \"local\"", "default_env = \"nope\"")
        .replace("port = 5001", "port = 0")
        + "replicas = 0\n";
    let errors = Stand::parse(&text, Path::new("stand.toml")).expect_err("invalid");
    let places: Vec<(usize, usize)> = errors
        .0
        .iter()
        .filter_map(|e| e.located().map(|l| (l.line, l.column)))
        .collect();
    assert_eq!(places, [(6, 15), (11, 8), (18, 12)], "{errors}");
    assert_eq!(errors.to_string().lines().count(), 3);
}

// ---- files named by the stand exist (the one check that reads the disk) --------------

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("devd/ has a parent")
}

#[test]
fn missing_values_file_is_located() {
    let text = edit("values = []", "values = [\"helm/app/values-nope.yaml\"]")
        .replace("services/web", "services/service1");
    let stand = match Stand::parse(&text, Path::new("stand.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let errors = stand
        .validate_files(repo_root())
        .expect_err("values file is missing");
    let l = errors
        .first()
        .and_then(ConfigError::located)
        .expect("located");
    assert_eq!(
        (l.line, l.column, l.key.as_str()),
        (17, 11, "env.local.values[0]"),
        "{errors}"
    );
}

#[test]
fn missing_service_path_is_located() {
    let stand = match Stand::parse(BASE, Path::new("stand.toml")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let errors = stand
        .validate_files(repo_root())
        .expect_err("services/web does not exist");
    let l = errors
        .first()
        .and_then(ConfigError::located)
        .expect("located");
    assert_eq!(
        (l.line, l.column, l.key.as_str()),
        (10, 8, "services.web.path"),
        "{errors}"
    );
}
