//! Name and value rules: pure predicates over strings (Kubernetes names, image
//! references, sizes, target triples, kube context patterns), used by the cross-checks
//! and by devd where it names things itself.

/// The kube contexts of clusters that run on the developer's machine, as Tilt
/// recognises them (its `allow_k8s_contexts` lets these through without being asked):
/// the default `contexts` of an environment with live sync.
pub const LOCAL_CONTEXTS: &[&str] = &[
    "kind-*",
    "k3d-*",
    "minikube",
    "docker-desktop",
    "docker-for-desktop",
    "rancher-desktop",
    "orbstack",
    "colima",
    "colima-*",
    "microk8s",
    "crc-*",
];

/// Whether kube context `context` matches glob `pattern`: `*` any run of characters,
/// `?` one character, everything else itself (case-sensitive, as context names are).
pub fn context_matches(pattern: &str, context: &str) -> bool {
    let (p, c): (Vec<char>, Vec<char>) = (pattern.chars().collect(), context.chars().collect());
    // Iterative glob match with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut ci) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ci < c.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == c[ci])) {
            pi += 1;
            ci += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ci));
            pi += 1;
        } else if let Some((sp, sc)) = star {
            pi = sp + 1;
            ci = sc + 1;
            star = Some((sp, sc + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&x| x == '*')
}

/// Whether `context` matches any of `patterns`.
pub fn context_allowed(patterns: &[String], context: &str) -> bool {
    patterns.iter().any(|p| context_matches(p, context))
}

/// A DNS-1123 label of at most `max` characters (Kubernetes object names).
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A service name: a DNS-1035 label (a DNS-1123 label that starts with a letter), as the
/// chart's values schema demands, since it names Deployments, Services and Secrets.
pub fn is_service_name(s: &str) -> bool {
    is_dns_label(s, 63) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A database or role name as the chart accepts it: `^[a-z_][a-z0-9_]{0,62}$`.
pub fn is_pg_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 63))
}

/// A Kubernetes quantity as devd accepts it for volumes: `1Gi`, `500Mi`, `2Ti`.
pub fn is_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
        && matches!(unit, "Mi" | "Gi" | "Ti")
}

/// An image tag (OCI distribution rules).
pub fn is_image_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// An image repository without tag or digest, optionally with a registry host:port.
pub fn is_image_repository(s: &str) -> bool {
    if s.is_empty() || s.contains('@') {
        return false;
    }
    let mut parts: Vec<&str> = s.split('/').collect();
    // A registry host may carry a port and upper case is not allowed anywhere.
    if parts.len() > 1
        && (parts[0].contains(':') || parts[0].contains('.') || parts[0] == "localhost")
    {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, "1"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            || port.is_empty()
            || !port.chars().all(|c| c.is_ascii_digit())
        {
            return false;
        }
    }
    parts.iter().all(|p| {
        let b = p.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
    })
}

/// Looks like a rustc target triple: 2 to 4 dash-separated parts of [a-z0-9_.].
pub fn is_triple(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    (2..=4).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        })
}

/// A key as it appears in a dotted path: bare when it can be, quoted otherwise.
pub fn key_part(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_owned()
    } else {
        format!("\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
