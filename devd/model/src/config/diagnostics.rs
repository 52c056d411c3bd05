//! Placing errors: byte spans to line, column and dotted key, and serde's words
//! rephrased in stand.toml's terms.

use super::*;

pub(super) struct Locator<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
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

    pub(super) fn invalid(&self, issues: Vec<Issue>) -> ConfigErrors {
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
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
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
    // `invalid type: <found>, expected <what>` / `invalid value: <found>, expected <what>`.
    let found_message = |found: &str| -> Option<String> {
        if let Some(found) = found.strip_prefix("invalid type: ") {
            return Some(format!("wrong type: found {}", plain_found(found)));
        }
        found.strip_prefix("invalid value: ").map(|found| format!("{} is out of range", plain_found(found)))
    };
    if let Some((found, expected)) = msg.split_once(", expected ") {
        if let Some(message) = found_message(found) {
            let expected = hint(leaf_name(base)).map_or_else(|| plain_type(expected), str::to_owned);
            return (key_or_doc(), message, Some(expected));
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

    /// The five kinds of serde error stand.toml's diagnostics rephrase, produced by the
    /// toml and serde in Cargo.lock (not written by hand): if an upgrade changes their
    /// words, this fails naming the kind, instead of the diagnostics silently falling
    /// back to serde's raw text. (The key path never depends on these words: it comes
    /// from toml's spans.)
    #[test]
    fn serdes_own_messages_are_the_ones_rephrased() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Probe {
            port: u16,
            target: Target,
        }
        for (kind, doc, want) in [
            ("unknown field", "port = 1\ntarget = \"docker\"\nbogus = 1\n", "unknown key `bogus`"),
            ("missing field", "target = \"docker\"\n", "required key is missing"),
            ("unknown variant", "port = 1\ntarget = \"k8s\"\n", "unknown value \"k8s\""),
            ("invalid type", "port = \"x\"\ntarget = \"docker\"\n", "wrong type: found string \"x\""),
            ("invalid value", "port = 70000\ntarget = \"docker\"\n", "integer `70000` is out of range"),
        ] {
            let raw = match toml::from_str::<Probe>(doc) {
                Ok(p) => panic!("{kind}: {doc:?} parsed as {p:?}"),
                Err(e) => e.message().trim().to_owned(),
            };
            let (_, message, expected) = rephrase("probe", &raw);
            assert_eq!(message, want, "{kind}: serde/toml now say {raw:?}; update rephrase()");
            assert!(expected.is_some(), "{kind}: no `expected` from {raw:?}");
        }
    }
}
