//! Which Helm values are topology: facts that stand.toml owns and devd generates into
//! `values-<env>.yaml`. Nothing hand-written (an environment's `helm` table, an extra
//! values file, the chart's `values.yaml`) may set one of them.
//!
//! A key path is the list of map keys from the values' root, e.g.
//! `["services", "service1", "port"]`.

/// Where a topology key of the Helm values is written in stand.toml, or `None` when the
/// key is Helm's alone. `path` is a full key path of a hand-written value; a value that
/// is not a map and sits on the way to a topology key (`services.x.database = "y"`) is
/// topology too, since it would replace them.
pub fn owner(path: &[&str], is_map: bool) -> Option<String> {
    match path {
        ["devSync", "enabled"] | ["rbac", "create"] => {
            Some("`live_sync` of the environment in stand.toml".to_owned())
        }
        ["devSync", "port"] => Some("devd itself: the shim's port is not a setting".to_owned()),
        ["devSync"] | ["rbac"] if !is_map => owner(&[path[0], "enabled"], true),
        ["services"] if !is_map => Some(
            "stand.toml: [services.<name>] tables and each environment's `services` list"
                .to_owned(),
        ),
        ["services", service, rest @ ..] => service_owner(service, rest, is_map),
        _ => None,
    }
}

/// The topology keys of one service's values, relative to `services.<name>`.
const SERVICE_KEYS: [&[&str]; 17] = [
    &["enabled"],
    &["port"],
    &["replicas"],
    &["image", "repository"],
    &["image", "tag"],
    &["database", "mode"],
    &["database", "name"],
    &["database", "user"],
    &["database", "inCluster", "persistence", "enabled"],
    &["database", "inCluster", "persistence", "size"],
    &["database", "inCluster", "persistence", "storageClass"],
    &["database", "external", "host"],
    &["database", "external", "port"],
    &["database", "external", "sslmode"],
    &["database", "external", "existingSecret", "name"],
    &["database", "external", "existingSecret", "key"],
    &["database", "external", "existingSecret"],
];

fn service_owner(service: &str, rest: &[&str], is_map: bool) -> Option<String> {
    let hit = SERVICE_KEYS.iter().any(|k| {
        *k == rest || (!is_map && k.len() > rest.len() && k.starts_with(rest))
    }) || (rest.is_empty() && !is_map);
    if !hit {
        return None;
    }
    Some(match rest.first().copied() {
        None | Some("enabled") => format!(
            "stand.toml: [services.{service}] and the environment's `services` list"
        ),
        Some("port") => format!("`port` in [services.{service}] of stand.toml"),
        Some("replicas") => format!(
            "`replicas` of the environment or of [env.<env>.overrides.{service}] in stand.toml"
        ),
        Some("image") if rest.get(1) == Some(&"tag") => {
            "`image_tag` of the environment in stand.toml".to_owned()
        }
        Some("image") => format!("`image` in [services.{service}] of stand.toml"),
        _ => format!(
            "`database` of the environment or of [env.<env>.overrides.{service}] in stand.toml"
        ),
    })
}

/// Every topology key set in a JSON-shaped value (e.g. a parsed values file), with where
/// it belongs, in key order.
pub fn keys_in_json(value: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk_json(value, &mut Vec::new(), &mut out);
    out
}

fn walk_json<'v>(value: &'v serde_json::Value, path: &mut Vec<&'v str>, out: &mut Vec<(String, String)>) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (key, child) in map {
        path.push(key);
        let is_map = child.is_object();
        if let Some(owner) = owner(path, is_map) {
            out.push((path.join("."), owner));
        } else if is_map {
            walk_json(child, path, out);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn topology_and_helm_only_keys() {
        let is = |p: &str| owner(&p.split('.').collect::<Vec<_>>(), false).is_some();
        assert!(is("services.a.port"));
        assert!(is("services.a.replicas"));
        assert!(is("services.a.image.tag"));
        assert!(is("services.a.image.repository"));
        assert!(is("services.a.database.mode"));
        assert!(is("services.a.database.inCluster.persistence.size"));
        assert!(is("services.a.database.external.existingSecret.name"));
        assert!(is("devSync.enabled"));
        assert!(is("devSync.port"));
        assert!(is("rbac.create"));
        assert!(is("services.a.database"), "a scalar replacing the block");
        assert!(!is("services.a.resources"));
        assert!(!is("services.a.env"));
        assert!(!is("services.a.image.pullPolicy"));
        assert!(!is("services.a.database.inCluster.image"));
        assert!(!is("services.a.database.inCluster.password"));
        assert!(!is("devSync.tokenSecret"));
        assert!(!is("tests.enabled"));
        assert!(!is("partOf"));
    }

    #[test]
    fn finds_keys_in_nested_maps_with_their_owner() {
        let v = json!({
            "services": {"svc": {"resources": {"limits": {"cpu": "1"}}, "image": {"pullPolicy": "Always", "tag": "x"},
                                 "database": {"inCluster": {"persistence": {"size": "2Gi"}}}}},
            "rbac": {"create": true},
            "tests": {"enabled": false}
        });
        let keys = keys_in_json(&v);
        let paths: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            paths,
            ["rbac.create", "services.svc.database.inCluster.persistence.size", "services.svc.image.tag"]
        );
        assert!(keys[1].1.contains("`database` of the environment"), "{}", keys[1].1);
        assert!(keys[2].1.contains("`image_tag`"), "{}", keys[2].1);
    }
}
