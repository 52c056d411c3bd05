//! The cross-checks of a parsed stand.toml: what serde cannot see (names, ports,
//! references between tables, the environments' database settings, the Helm tables),
//! each an [`Issue`] at the span of the key it is about.

use super::*;

impl Stand {
    // ---- cross-checks ---------------------------------------------------------------

    pub(super) fn issues(&self) -> Vec<Issue> {
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
