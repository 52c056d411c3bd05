//! Bad values are rejected, by the schema or by `stand.validateValues`, with a
//! message that names the offending key.

use chart_tests::{default_args, env_args, helm_template, temp_file};

/// How a bad value is given to helm.
enum Input {
    /// `--set` / `--set-string` arguments on top of an environment (or defaults).
    Args(Option<&'static str>, &'static [&'static str]),
    /// A values file with this content, on top of the defaults.
    File(&'static str),
}

/// Render must fail, and helm's error must contain every `names` string.
fn check(label: &str, input: Input, names: &[&str]) {
    let args: Vec<String> = match input {
        Input::Args(env, sets) => {
            let mut args = env.map_or_else(default_args, env_args);
            args.extend(sets.iter().map(|s| (*s).to_owned()));
            args
        }
        Input::File(yaml) => {
            let path = temp_file(label, yaml);
            vec!["-f".to_owned(), path.display().to_string()]
        }
    };
    match helm_template(&args) {
        Ok(_) => panic!("{label}: helm accepted bad values {args:?}"),
        Err(err) => {
            for name in names {
                assert!(
                    err.contains(name),
                    "{label}: the error does not name `{name}`:\n{err}"
                );
            }
        }
    }
}

macro_rules! bad {
    ($name:ident, $input:expr, $($key:literal),+ $(,)?) => {
        #[test]
        fn $name() {
            check(stringify!($name), $input, &[$($key),+]);
        }
    };
}

use Input::{Args, File};

bad!(
    negative_replicas,
    Args(None, &["--set", "services.service1.replicas=-1"]),
    "/services/service1/replicas",
    "minimum"
);
bad!(
    port_not_a_number,
    Args(None, &["--set", "services.service2.port=http"]),
    "/services/service2/port",
    "want integer"
);
bad!(
    port_out_of_range,
    Args(None, &["--set", "services.service1.port=70000"]),
    "/services/service1/port"
);
bad!(
    size_in_gigabytes,
    Args(
        Some("dev"),
        &[
            "--set",
            "services.service1.database.inCluster.persistence.size=2GB"
        ]
    ),
    "/services/service1/database/inCluster/persistence/size",
    "2GB"
);
bad!(
    unknown_service_key,
    Args(None, &["--set", "services.service1.replica=2"]),
    "/services/service1",
    "replica"
);
bad!(
    unknown_top_level_key,
    File("devsync:\n  enabled: true\n"),
    "devsync"
);
bad!(
    unknown_database_mode,
    Args(None, &["--set", "services.service1.database.mode=cloud"]),
    "/services/service1/database/mode",
    "inCluster"
);
bad!(
    external_without_host,
    Args(
        Some("staging"),
        &["--set", "services.service2.database.external.host="]
    ),
    "services.service2.database.external.host",
    "--set services.service2.database.external.host="
);
bad!(
    external_without_secret,
    Args(
        Some("staging"),
        &[
            "--set",
            "services.service1.database.external.existingSecret.name="
        ]
    ),
    "services.service1.database.external.existingSecret.name",
    "kubectl create secret generic service1-db"
);
bad!(
    service_name_not_dns_label,
    File("services:\n  Zz_Fixture:\n    enabled: true\n    image: {repository: stand/zz-fixture, tag: dev}\n    port: 5003\n"),
    "at '/services': additional properties 'Zz_Fixture' not allowed",
    "does not match pattern"
);
bad!(
    enabled_not_boolean,
    Args(None, &["--set-string", "services.service1.enabled=yes"]),
    "/services/service1/enabled",
    "want boolean"
);
bad!(
    env_value_not_string,
    Args(None, &["--set", "services.service1.env.WORKERS=4"]),
    "/services/service1/env/WORKERS"
);
bad!(
    env_overrides_chart_setting,
    Args(
        None,
        &["--set-string", "services.service1.env.DB_HOST=elsewhere"]
    ),
    "services.service1.env.DB_HOST"
);
bad!(
    shim_port_clashes,
    Args(Some("local"), &["--set", "devSync.port=5002"]),
    "services.service2.port",
    "devSync.port"
);
bad!(
    sslmode_require_unsupported,
    Args(
        Some("prod"),
        &[
            "--set",
            "services.service1.database.external.sslmode=require"
        ]
    ),
    "/services/service1/database/external/sslmode"
);
bad!(
    memory_in_megabytes,
    Args(
        Some("prod"),
        &["--set", "services.service2.resources.limits.memory=256MB"]
    ),
    "/services/service2/resources/limits/memory"
);
bad!(
    pull_policy_case,
    Args(
        None,
        &["--set", "services.service2.image.pullPolicy=always"]
    ),
    "/services/service2/image/pullPolicy"
);
bad!(
    token_secret_not_a_name,
    Args(None, &["--set", "devSync.tokenSecret=My_Token"]),
    "/devSync/tokenSecret"
);
bad!(
    database_name_not_identifier,
    Args(None, &["--set", "services.service1.database.name=my-db"]),
    "/services/service1/database/name"
);
bad!(
    rbac_create_string,
    Args(None, &["--set-string", "rbac.create=true"]),
    "/rbac/create",
    "want boolean"
);
bad!(
    no_service_enabled,
    File("services:\n  zz-fixture:\n    enabled: false\n    image: {repository: stand/zz-fixture, tag: dev}\n    port: 5003\n"),
    "services.<name>.enabled=true"
);
bad!(
    name_too_long_for_database,
    File("services:\n  a-very-long-service-name-that-is-fine-alone-x:\n    enabled: true\n    image: {repository: stand/x, tag: dev}\n    port: 5003\n    database: {mode: inCluster}\n"),
    "services.a-very-long-service-name-that-is-fine-alone-x",
    "at most 43"
);
bad!(
    new_service_without_port,
    File("services:\n  zz-fixture:\n    enabled: true\n    image: {repository: stand/zz-fixture, tag: dev}\n"),
    "/services/zz-fixture",
    "port"
);

// Quantities that are valid syntax but meaningless, and requests above their limits.
bad!(
    zero_memory_request,
    Args(Some("dev"), &["--set", "services.service1.resources.requests.memory=0Mi"]),
    "/services/service1/resources/requests/memory"
);
bad!(
    zero_cpu_request,
    Args(Some("dev"), &["--set-string", "services.service1.resources.requests.cpu=0"]),
    "/services/service1/resources/requests/cpu"
);
bad!(
    zero_cpu_limit_as_a_number,
    Args(Some("dev"), &["--set", "services.service1.resources.limits.cpu=0"]),
    "/services/service1/resources/limits/cpu"
);
bad!(
    memory_request_above_its_limit,
    Args(Some("dev"), &["--set", "services.service1.resources.requests.memory=512Mi", "--set", "services.service1.resources.limits.memory=256Mi"]),
    "services.service1.resources.requests.memory (512Mi) is above services.service1.resources.limits.memory (256Mi)"
);
bad!(
    memory_request_above_its_limit_across_units,
    Args(Some("dev"), &["--set", "services.service2.resources.requests.memory=2Gi", "--set", "services.service2.resources.limits.memory=1536Mi"]),
    "services.service2.resources.requests.memory (2Gi) is above services.service2.resources.limits.memory (1536Mi)"
);
bad!(
    cpu_request_above_its_limit,
    Args(Some("dev"), &["--set-string", "services.service1.resources.requests.cpu=1500m", "--set-string", "services.service1.resources.limits.cpu=1"]),
    "services.service1.resources.requests.cpu (1500m) is above services.service1.resources.limits.cpu (1)"
);
// Absent nested blocks are named, never a nil pointer in a template.
bad!(tests_null, Args(Some("dev"), &["--set", "tests=null"]), "missing property 'tests'");
bad!(tests_image_null, Args(Some("dev"), &["--set", "tests.image=null"]), "at '/tests': missing property 'image'");

#[test]
fn requests_at_or_below_their_limits_render() {
    for sets in [
        &["--set", "services.service1.resources.requests.memory=1Gi", "--set", "services.service1.resources.limits.memory=1024Mi"][..],
        &["--set-string", "services.service1.resources.requests.cpu=500m", "--set", "services.service1.resources.limits.cpu=0.5"][..],
        &["--set-string", "services.service1.resources.requests.cpu=0.25", "--set-string", "services.service1.resources.limits.cpu=1"][..],
    ] {
        let mut args = env_args("dev");
        args.extend(sets.iter().map(|s| (*s).to_owned()));
        if let Err(e) = helm_template(&args) {
            panic!("{sets:?} must render:\n{e}");
        }
    }
}
// A per-service map's error names the service, the map and the key.
bad!(
    env_var_name_not_a_name,
    Args(Some("dev"), &["--set-string", "services.service1.env.1BAD=x"]),
    "at '/services/service1/env': additional properties '1BAD' not allowed"
);

/// Every table (object-valued key) of an environment's values set to null, one at a
/// time: helm either renders (the block is optional) or fails with a message that names
/// the key, never a nil pointer inside a template.
#[test]
fn every_block_set_to_null_is_named_never_a_nil_pointer() {
    fn tables(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = v {
            if !path.is_empty() {
                out.push(path.to_owned());
            }
            for (k, child) in map {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                tables(child, &p, out);
            }
        }
    }
    let mut cases: Vec<(&str, String)> = Vec::new();
    for env in ["dev", "prod", "local"] {
        let mut merged = serde_json::Value::Null;
        for file in [chart_tests::chart_dir().join("values.yaml"), chart_tests::values_file(env)] {
            let text = std::fs::read_to_string(&file).expect("values file");
            let v: serde_json::Value = serde_yaml_ng::from_str(&text).expect("YAML");
            merge(&mut merged, v);
        }
        let mut paths = Vec::new();
        tables(&merged, "", &mut paths);
        cases.extend(paths.into_iter().map(|p| (env, p)));
    }
    assert!(cases.len() > 40, "{cases:?}");
    let failures: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<Vec<(&str, String)>> = cases.chunks(cases.len().div_ceil(4)).map(<[(&str, String)]>::to_vec).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    for (env, path) in chunk {
                        let mut args = env_args(env);
                        args.extend(["--set".to_owned(), format!("{path}=null")]);
                        if let Err(err) = helm_template(&args) {
                            let last = path.rsplit('.').next().unwrap_or(&path);
                            if err.contains("nil pointer") || err.contains("panic") || !err.contains(last) {
                                bad.push(format!("{env}: {path}=null: {}", err.trim()));
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
    });
    assert!(failures.is_empty(), "{} of {} blocks:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}
