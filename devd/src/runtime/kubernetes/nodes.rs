//! The build target from the nodes: their architectures ([`triple_for_nodes`]) and the
//! plan's triple against theirs ([`pick_triple`]).

use super::*;

pub(super) fn describe_arches(arches: &BTreeMap<String, Vec<String>>) -> String {
    arches
        .iter()
        .map(|(arch, nodes)| format!("{arch} ({})", nodes.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kubernetes architectures devd builds for, and their Rust target triples. The
/// services link against the image's glibc, hence `-gnu`.
pub const SUPPORTED_ARCHES: &[(&str, &str)] = &[
    ("amd64", "x86_64-unknown-linux-gnu"),
    ("arm64", "aarch64-unknown-linux-gnu"),
];

/// The Rust target triple for a Kubernetes architecture (`amd64`, `arm64`).
pub fn triple_for_arch(arch: &str) -> Option<&'static str> {
    SUPPORTED_ARCHES.iter().find(|(a, _)| *a == arch).map(|(_, t)| *t)
}

/// One node and its architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeArch {
    pub node: String,
    /// `kubernetes.io/arch`, else `status.nodeInfo.architecture`; `None` if neither.
    pub arch: Option<String>,
}

impl NodeArch {
    pub fn from_node(node: &Node) -> Self {
        let label = node.metadata.labels.as_ref().and_then(|l| l.get(LABEL_ARCH)).cloned();
        let info = node
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .map(|i| i.architecture.clone())
            .filter(|a| !a.is_empty());
        NodeArch { node: node.metadata.name.clone().unwrap_or_default(), arch: label.or(info) }
    }
}

/// The one target triple for all nodes: every node with a known architecture must
/// have the same one, and devd must be able to build for it.
pub fn triple_for_nodes(nodes: &[NodeArch]) -> Result<&'static str, KubeError> {
    let mut arches: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes {
        if let Some(arch) = &n.arch {
            arches.entry(arch.clone()).or_default().push(n.node.clone());
        }
    }
    if arches.len() > 1 {
        return Err(KubeError::MixedArch { arches });
    }
    let Some((arch, nodes)) = arches.into_iter().next() else {
        return Err(KubeError::NoNodes);
    };
    triple_for_arch(&arch).ok_or_else(|| KubeError::UnsupportedArch {
        node: nodes.first().cloned().unwrap_or_default(),
        arch,
    })
}

/// The triple to build for, given the plan's and the nodes': the plan's when its
/// architecture is the nodes' (e.g. a `-musl` build_target on amd64 nodes), else the
/// nodes' (the build then cross-compiles, or says what to install).
pub fn pick_triple(plan_triple: &str, node_triple: &str) -> String {
    let arch = |t: &str| t.split('-').next().unwrap_or(t).to_owned();
    if arch(plan_triple) == arch(node_triple) {
        plan_triple.to_owned()
    } else {
        node_triple.to_owned()
    }
}
