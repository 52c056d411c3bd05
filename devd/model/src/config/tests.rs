use super::*;

#[test]
fn dns_labels() {
    assert!(is_dns_label("service1", 63));
    assert!(is_dns_label("a", 63));
    assert!(is_dns_label("a-b-9", 63));
    assert!(!is_dns_label("", 63));
    assert!(!is_dns_label("-a", 63));
    assert!(!is_dns_label("a-", 63));
    assert!(!is_dns_label("Service1", 63));
    assert!(!is_dns_label("a_b", 63));
    assert!(!is_dns_label("a.b", 63));
    assert!(is_dns_label(&"a".repeat(63), 63));
    assert!(!is_dns_label(&"a".repeat(64), 63));
}

#[test]
fn context_globs() {
    for (pattern, context, ok) in [
        ("kind-*", "kind-kind", true),
        ("kind-*", "kind-", true),
        ("kind-*", "kind", false),
        ("kind-*", "xkind-a", false),
        ("minikube", "minikube", true),
        ("minikube", "minikube2", false),
        ("*", "", true),
        ("*", "gke_proj_europe-west1_prod", true),
        ("prod-?", "prod-1", true),
        ("prod-?", "prod-12", false),
        ("*-prod-*", "eu-prod-1", true),
        ("*-prod-*", "eu-prod", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("a**", "a", true),
        ("", "", true),
        ("", "x", false),
        ("Kind-*", "kind-x", false),
    ] {
        assert_eq!(context_matches(pattern, context), ok, "{pattern:?} vs {context:?}");
    }
    let local: Vec<String> = LOCAL_CONTEXTS.iter().map(|&p| p.to_owned()).collect();
    for context in ["kind-stand", "k3d-dev", "minikube", "docker-desktop", "rancher-desktop", "orbstack", "colima", "colima-work"] {
        assert!(context_allowed(&local, context), "{context}");
    }
    for context in ["prod-eu", "gke_acme_europe-west1_prod", "arn:aws:eks:eu-west-1:1:cluster/prod", "kind", ""] {
        assert!(!context_allowed(&local, context), "{context}");
    }
}

#[test]
fn sizes() {
    for ok in ["1Gi", "500Mi", "2Ti", "10Gi"] {
        assert!(is_size(ok), "{ok}");
    }
    for bad in ["2GB", "1G", "Gi", "0Gi", "01Gi", "1.5Gi", "", "1gi", "-1Gi"] {
        assert!(!is_size(bad), "{bad}");
    }
}

#[test]
fn images() {
    for ok in [
        "stand/service1",
        "service1",
        "localhost:5000/stand/service1",
        "registry.example.com/a/b-c_d.e",
    ] {
        assert!(is_image_repository(ok), "{ok}");
    }
    for bad in [
        "",
        "Stand/service1",
        "stand/service1:dev",
        "stand//x",
        "/x",
        "x/",
        "a@sha256:00",
    ] {
        assert!(!is_image_repository(bad), "{bad}");
    }
    assert!(is_image_tag("dev"));
    assert!(is_image_tag("v1.2.3-rc_1"));
    assert!(!is_image_tag(".x"));
    assert!(!is_image_tag("a/b"));
}

#[test]
fn triples() {
    assert!(is_triple("x86_64-unknown-linux-gnu"));
    assert!(is_triple("aarch64-unknown-linux-musl"));
    assert!(is_triple("aarch64-apple-darwin"));
    assert!(!is_triple("linux"));
    assert!(!is_triple("X86-linux"));
}

#[test]
fn line_and_column() {
    let t = "ab\ncdé\nf";
    assert_eq!(line_col(t, 0), (1, 1));
    assert_eq!(line_col(t, 3), (2, 1));
    assert_eq!(line_col(t, 7), (2, 4));
    assert_eq!(line_col(t, t.len()), (3, 2));
}

#[test]
fn keys_are_quoted_when_needed() {
    assert_eq!(key_part("service1"), "service1");
    assert_eq!(key_part("a.b"), "\"a.b\"");
    assert_eq!(key_part(""), "\"\"");
}
