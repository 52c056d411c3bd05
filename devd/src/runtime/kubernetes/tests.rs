use super::*;

fn node(name: &str, label: Option<&str>, info: &str) -> NodeArch {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": label.map(|a| serde_json::json!({ LABEL_ARCH: a })) },
        "status": { "nodeInfo": {
            "architecture": info, "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
            "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "operatingSystem": "linux",
            "osImage": "", "systemUUID": ""
        } }
    }))
    .expect("node json");
    NodeArch::from_node(&node)
}

#[test]
fn arch_to_triple() {
    assert_eq!(triple_for_arch("amd64"), Some("x86_64-unknown-linux-gnu"));
    assert_eq!(triple_for_arch("arm64"), Some("aarch64-unknown-linux-gnu"));
    assert_eq!(triple_for_arch("s390x"), None);
}

#[test]
fn label_wins_over_node_info() {
    assert_eq!(node("a", Some("arm64"), "amd64").arch.as_deref(), Some("arm64"));
    assert_eq!(node("a", None, "amd64").arch.as_deref(), Some("amd64"));
    assert_eq!(node("a", None, "").arch, None);
}

#[test]
fn one_triple_for_all_nodes() {
    let nodes = [node("a", Some("amd64"), "amd64"), node("b", None, "amd64"), node("c", None, "")];
    assert_eq!(triple_for_nodes(&nodes).ok(), Some("x86_64-unknown-linux-gnu"));
    let err = triple_for_nodes(&[node("a", None, "amd64"), node("b", None, "arm64"), node("c", None, "arm64")])
        .expect_err("mixed");
    assert!(err.to_string().contains("amd64 (a), arm64 (b, c)"), "{err}");
    assert!(matches!(triple_for_nodes(&[]), Err(KubeError::NoNodes)));
    let err = triple_for_nodes(&[node("z", None, "s390x")]).expect_err("unsupported");
    assert_eq!(
        err.to_string(),
        "node z has architecture s390x, which devd cannot build for (supported: amd64, arm64)"
    );
}

fn instance(name: &str, uid: &str, restarts: i32, phase: &str) -> PodInstance {
    PodInstance {
        name: name.into(),
        uid: uid.into(),
        service: "service1".into(),
        node: None,
        phase: phase.into(),
        ready: true,
        restart_count: restarts,
        terminating: false,
        shim_port: Some(7070),
        service_port: Some(5001),
        token: TokenRef { secret: "stand-devsync".into(), key: "token".into() },
    }
}

#[test]
fn tracker_tells_new_and_restarted_pods() {
    let mut t = PodTracker::default();
    assert_eq!(t.observe(&instance("p", "u1", 0, "Pending")), None, "not running yet");
    assert_eq!(t.observe(&instance("p", "u1", 0, "Running")), Some(SyncReason::NewPod));
    assert_eq!(t.observe(&instance("p", "u1", 0, "Running")), None, "an update of the same pod");
    assert_eq!(t.observe(&instance("p", "u1", 1, "Running")), Some(SyncReason::Restarted));
    assert_eq!(t.observe(&instance("p", "u2", 0, "Running")), Some(SyncReason::NewPod), "same name, new uid");
    assert!(t.forget("p"));
    assert!(!t.forget("p"));
}

#[test]
fn node_triple_wins_unless_the_arch_agrees() {
    assert_eq!(pick_triple("x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"), "aarch64-unknown-linux-gnu");
    assert_eq!(pick_triple("x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"), "x86_64-unknown-linux-musl");
}

#[test]
fn selectors_are_the_charts_labels() {
    assert_eq!(
        service_selector("stand", "service1"),
        "app.kubernetes.io/name=service1,app.kubernetes.io/instance=stand,app.kubernetes.io/component=service"
    );
    assert_eq!(release_selector("stand"), "app.kubernetes.io/instance=stand,app.kubernetes.io/component=service");
}
