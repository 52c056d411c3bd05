//! The chart's value rules and stand.toml's are one set of facts: for a table of
//! values, the model's predicates (what `devd check` accepts) and the chart's schema
//! (what `helm template` accepts) agree. values.schema.json is a hand copy of these
//! rules; this test is what keeps the two from drifting.

use chart_tests::{default_args, helm_template, temp_file};
use stand_model::config;

/// Where a value goes in the chart's values (a YAML snippet under one service whose
/// database is in-cluster, or external for the external keys), and the model's rule.
struct Rule {
    name: &'static str,
    /// `{}` is replaced by the value, as a YAML double-quoted string or a number.
    yaml: &'static str,
    model: fn(&str) -> bool,
    cases: &'static [&'static str],
}

fn port(v: &str) -> bool {
    v.parse::<u16>().is_ok_and(|p| p > 0)
}

const RULES: &[Rule] = &[
    Rule {
        name: "service name",
        yaml: "services:\n  {}:\n    enabled: true\n    image: {repository: stand/x, tag: dev}\n    port: 5099\n",
        model: config::is_service_name,
        cases: &["svc", "a", "a-b-9", "9svc", "-a", "a-", "Svc", "a_b", "a.b", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabc", "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcd"],
    },
    Rule {
        name: "port",
        yaml: "services:\n  zz-rule:\n    enabled: true\n    image: {repository: stand/x, tag: dev}\n    port: {}\n",
        model: port,
        cases: &["1", "5001", "65535", "0", "65536", "-1"],
    },
    Rule {
        name: "volume size",
        yaml: "services:\n  zz-rule:\n    enabled: true\n    image: {repository: stand/x, tag: dev}\n    port: 5099\n    database: {mode: inCluster, inCluster: {persistence: {enabled: true, size: {}}}}\n",
        model: config::is_size,
        cases: &["1Gi", "500Mi", "2Ti", "10Gi", "0Gi", "01Gi", "1GB", "1G", "Gi", "1.5Gi", "1gi"],
    },
    Rule {
        name: "database name",
        yaml: "services:\n  zz-rule:\n    enabled: true\n    image: {repository: stand/x, tag: dev}\n    port: 5099\n    database: {mode: inCluster, name: {}}\n",
        model: config::is_pg_identifier,
        cases: &["svc", "_svc", "svc_1", "1svc", "svc-1", "Svc", ""],
    },
    Rule {
        name: "image tag",
        yaml: "services:\n  zz-rule:\n    enabled: true\n    image: {repository: stand/x, tag: {}}\n    port: 5099\n",
        model: config::is_image_tag,
        cases: &["dev", "0.1.0", "_x", "v1-rc.2", ".x", "-x", "a:b", "", "a/b"],
    },
    Rule {
        name: "image repository",
        yaml: "services:\n  zz-rule:\n    enabled: true\n    image: {repository: {}, tag: dev}\n    port: 5099\n",
        model: config::is_image_repository,
        cases: &["stand/x", "x", "registry.example.com:5000/stand/x", "localhost:5001/a/b", "Stand/x", "stand//x", "stand/x:dev", "", "a@sha256:00"],
    },
    Rule {
        name: "storage class",
        yaml: "services:\n  zz-rule:\n    enabled: true\n    image: {repository: stand/x, tag: dev}\n    port: 5099\n    database: {mode: inCluster, inCluster: {persistence: {enabled: true, storageClass: {}}}}\n",
        model: |v| v.is_empty() || config::is_dns_subdomain(v),
        cases: &["", "standard", "fast.ssd", "Fast", "a_b", "-a"],
    },
];

fn yaml_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() {
        v.to_owned()
    } else {
        serde_json::Value::String(v.to_owned()).to_string()
    }
}

#[test]
fn the_model_and_the_chart_schema_accept_the_same_values() {
    let mut disagreements = Vec::new();
    for rule in RULES {
        for (i, case) in rule.cases.iter().enumerate() {
            let text = if rule.name == "service name" {
                rule.yaml.replace("{}:", &format!("{}:", yaml_value(case)))
            } else {
                rule.yaml.replacen(": {}", &format!(": {}", yaml_value(case)), 1)
            };
            let file = temp_file(&format!("rule-{i}"), &text);
            let mut args = default_args();
            args.extend(["-f".to_owned(), file.display().to_string()]);
            let chart = helm_template(&args).is_ok();
            let model = (rule.model)(case);
            if chart != model {
                disagreements.push(format!("{} {case:?}: stand.toml {} it, the chart {} it\n{text}", rule.name, verdict(model), verdict(chart)));
            }
        }
    }
    assert!(disagreements.is_empty(), "the rules disagree:\n{}", disagreements.join("\n"));
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "accepts"
    } else {
        "rejects"
    }
}
