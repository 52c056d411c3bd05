//! [`KubeApi`]: every request devd makes to the API server about its objects: pods,
//! nodes, the shim token's Secret, and the pod proxy bases of each shim and service
//! (the requests through the proxy are [`super::PodProxy`]'s).

use super::*;

/// The one way devd talks to the Kubernetes API.
#[derive(Clone)]
pub struct KubeApi {
    pub(super) client: Client,
    namespace: String,
    release: String,
    cluster: Cluster,
    tokens: std::sync::Arc<Mutex<HashMap<TokenRef, String>>>,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi").field("namespace", &self.namespace).field("release", &self.release).finish()
    }
}

impl KubeApi {
    /// Over an existing client (tests: `Client::new(tower_mock, namespace)`).
    pub fn new(client: Client, namespace: impl Into<String>, release: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            release: release.into(),
            cluster: Cluster { context: "(given client)".into(), server: "(given client)".into() },
            tokens: std::sync::Arc::default(),
        }
    }

    /// Names the cluster in messages (the kubeconfig context and the API server).
    #[must_use]
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = cluster;
        self
    }

    /// From the kubeconfig's current context (`KUBECONFIG` or `~/.kube/config`), else
    /// the in-cluster service account. Objects are looked up in `namespace` (the
    /// plan's), whatever the context's default namespace is.
    pub async fn connect(namespace: impl Into<String>, release: impl Into<String>) -> Result<Self, KubeError> {
        let config = kube::Config::infer().await.map_err(KubeError::Config)?;
        // The context's name is only in the kubeconfig (Config keeps the server's URL).
        let context = kube::config::Kubeconfig::read()
            .ok()
            .and_then(|k| k.current_context)
            .unwrap_or_else(|| "in-cluster".to_owned());
        let cluster = Cluster { context, server: config.cluster_url.to_string().trim_end_matches('/').to_owned() };
        let client = Client::try_from(config).map_err(KubeError::Client)?;
        Ok(Self::new(client, namespace, release).with_cluster(cluster))
    }

    /// The cluster this client talks to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// Every node's architecture (`GET /api/v1/nodes`).
    pub async fn node_arches(&self) -> Result<Vec<NodeArch>, KubeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(|source| KubeError::Api { what: "listing nodes".into(), source })?;
        Ok(list.items.iter().map(NodeArch::from_node).collect())
    }

    /// The build target of the cluster's nodes (see [`triple_for_nodes`]).
    pub async fn build_triple(&self) -> Result<&'static str, KubeError> {
        triple_for_nodes(&self.node_arches().await?)
    }

    /// The pods of `service` (all phases) and the list's resourceVersion.
    pub async fn service_pods(&self, service: &str) -> Result<(Vec<PodInstance>, String), KubeError> {
        self.list_pods(&service_selector(&self.release, service), &format!("listing the pods of {service}")).await
    }

    /// Every service pod of the release and the list's resourceVersion.
    pub async fn release_pods(&self) -> Result<(Vec<PodInstance>, String), KubeError> {
        self.list_pods(&release_selector(&self.release), "listing the service pods").await
    }

    async fn list_pods(&self, selector: &str, what: &str) -> Result<(Vec<PodInstance>, String), KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| KubeError::Api { what: format!("{what} in namespace {}", self.namespace), source })?;
        let version = list.metadata.resource_version.clone().unwrap_or_default();
        let mut items: Vec<PodInstance> =
            list.items.iter().map(|p| PodInstance::from_pod(p, &self.release)).collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((items, version))
    }

    /// The running pods of `service` (see [`PodInstance::is_running`]).
    pub async fn running_pods(&self, service: &str) -> Result<Vec<PodInstance>, KubeError> {
        let (pods, _) = self.service_pods(service).await?;
        Ok(pods.into_iter().filter(PodInstance::is_running).collect())
    }

    /// One pod, as it is now.
    pub async fn pod(&self, name: &str) -> Result<PodInstance, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pod = pods
            .get(name)
            .await
            .map_err(|source| KubeError::Api { what: format!("reading pod {name}"), source })?;
        Ok(PodInstance::from_pod(&pod, &self.release))
    }

    /// Watches the release's service pods from `resource_version`; the stream ends
    /// when the API server closes the watch (after about [`WATCH_TIMEOUT_SECS`]).
    pub async fn watch_pods(
        &self,
        resource_version: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<WatchEvent<Pod>, kube::Error>> + use<>, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = WatchParams::default().labels(&release_selector(&self.release)).timeout(WATCH_TIMEOUT_SECS);
        pods.watch(&params, resource_version)
            .await
            .map_err(|source| KubeError::Api { what: "watching the service pods".into(), source })
    }

    /// The shim token of a pod, from its Secret (cached per Secret and key).
    pub async fn shim_token(&self, pod: &PodInstance) -> Result<String, KubeError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(&pod.token) {
            return Ok(t.clone());
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets.get(&pod.token.secret).await.map_err(|source| KubeError::Api {
            what: format!("reading secret {} (the shim token)", pod.token.secret),
            source,
        })?;
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&pod.token.key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(&pod.token.key)).cloned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KubeError::NoToken {
                secret: pod.token.secret.clone(),
                key: pod.token.key.clone(),
                pod: pod.name.clone(),
            })?;
        tokens.insert(pod.token.clone(), value.clone());
        Ok(value)
    }

    /// Forgets cached tokens (after the shim said 401: the Secret may have changed).
    pub async fn forget_tokens(&self) {
        self.tokens.lock().await.clear();
    }

    /// The pod's service proxy base (`.../pods/{pod}:{http port}/proxy`).
    pub fn service_base(&self, pod: &PodInstance) -> Option<String> {
        pod.service_port.map(|port| format!("/api/v1/namespaces/{}/pods/{}:{port}/proxy", self.namespace, pod.name))
    }
}
