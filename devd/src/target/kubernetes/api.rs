//! [`KubeApi`]: every request devd makes to the API server: pods, nodes, the shim
//! token's Secret, and the pod proxy to each shim and service.

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

    /// `GET /v1/status` of a pod's shim.
    pub async fn shim_status(&self, pod: &PodInstance) -> Result<ShimStatus, KubeError> {
        let (base, token) = self.shim_of(pod).await?;
        let body = self.proxy(&pod.name, &base, &token, Method::GET, STATUS_PATH, None).await?;
        parse_answer(&pod.name, &format!("GET {STATUS_PATH}"), &body)
    }

    /// `PUT /v1/binary`: the artifact's bytes, to be verified against `sha256`.
    pub async fn deliver(&self, pod: &PodInstance, binary: Vec<u8>, sha256: &str) -> Result<ShimReply, KubeError> {
        let (base, token) = self.shim_of(pod).await?;
        let body = self.proxy(&pod.name, &base, &token, Method::PUT, BINARY_PATH, Some((binary, sha256))).await?;
        parse_answer(&pod.name, &format!("PUT {BINARY_PATH}"), &body)
    }

    /// [`KubeApi::deliver`] of the file at `path`.
    pub async fn deliver_file(&self, pod: &PodInstance, path: &Path, sha256: &str) -> Result<ShimReply, KubeError> {
        let binary = read_artifact(path).await?;
        self.deliver(pod, binary, sha256).await
    }

    /// `POST /v1/restart`: the shim restarts the service.
    pub async fn restart(&self, pod: &PodInstance) -> Result<ShimReply, KubeError> {
        let (base, token) = self.shim_of(pod).await?;
        let body = self.proxy(&pod.name, &base, &token, Method::POST, RESTART_PATH, None).await?;
        parse_answer(&pod.name, &format!("POST {RESTART_PATH}"), &body)
    }

    /// The pod's service proxy base (`.../pods/{pod}:{http port}/proxy`).
    pub fn service_base(&self, pod: &PodInstance) -> Option<String> {
        pod.service_port.map(|port| format!("/api/v1/namespaces/{}/pods/{}:{port}/proxy", self.namespace, pod.name))
    }

    /// `GET {service_base}/health` through the pod proxy: ok, degraded or unreachable.
    pub async fn health_at(&self, service_base: &str) -> HealthReport {
        let Ok(request) = Request::get(format!("{service_base}/health")).body(Body::empty()) else {
            return HealthReport::unreachable(format!("bad service URL {service_base}"));
        };
        let response = match self.client.send(request).await {
            Ok(response) => response,
            Err(e) => return HealthReport::unreachable(format!("no answer from /health through the pod proxy: {e}")),
        };
        let status = response.status().as_u16();
        match response.into_body().collect_bytes().await {
            Ok(body) => HealthReport::from_answer(status, &body),
            Err(e) => HealthReport::unreachable(format!("/health answer cut off: {e}")),
        }
    }

    /// `GET /health` of the service itself through the pod proxy: true on 2xx.
    pub async fn healthy(&self, pod: &PodInstance) -> bool {
        match self.service_base(pod) {
            Some(base) => self.health_at(&base).await.health.answers(),
            None => false,
        }
    }

    /// Polls [`KubeApi::healthy`] every `every` until it is true or `within` has passed.
    pub async fn wait_healthy(&self, pod: &PodInstance, within: Duration, every: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.healthy(pod).await {
                return true;
            }
            if tokio::time::Instant::now() + every > deadline {
                return false;
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The shim's proxy base and token of a pod.
    async fn shim_of(&self, pod: &PodInstance) -> Result<(String, String), KubeError> {
        let base = pod.shim_base(&self.namespace).ok_or_else(|| KubeError::NoShim { pod: pod.name.clone() })?;
        let token = self.shim_token(pod).await?;
        Ok((base, token))
    }

    /// One request to a shim through the pod proxy: `{base}{path}` with the token in
    /// `X-Stand-Token`, and for an upload the body with `X-Stand-Sha256`. Returns the
    /// body of a 2xx answer; anything else is an error that says who answered.
    pub async fn proxy(
        &self,
        pod: &str,
        base: &str,
        token: &str,
        method: Method,
        path: &str,
        upload: Option<(Vec<u8>, &str)>,
    ) -> Result<Vec<u8>, KubeError> {
        let what = format!("{method} {path}");
        let mut request = Request::builder().method(method).uri(format!("{base}{path}")).header(TOKEN_HEADER, token);
        let body = match upload {
            Some((bytes, sha256)) => {
                request = request
                    .header(SHA_HEADER, sha256)
                    .header(http::header::CONTENT_TYPE, "application/octet-stream");
                Body::from(bytes)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| KubeError::BadAnswer {
            pod: pod.into(),
            what: what.clone(),
            detail: format!("cannot build the request: {e}"),
        })?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|source| KubeError::Api { what: format!("{what} to the shim of pod {pod}"), source })?;
        let status = response.status();
        let bytes = response.into_body().collect_bytes().await.map_err(|source| KubeError::Api {
            what: format!("reading the answer of the shim of pod {pod} to {what}"),
            source,
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(error_answer(pod, &what, status, &bytes))
    }
}

pub(super) async fn read_artifact(path: &Path) -> Result<Vec<u8>, KubeError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| KubeError::Artifact { path: path.display().to_string(), source })
}

/// A non-2xx answer on the proxy path: the API server's own `Status` (the pod is gone,
/// RBAC, the shim is not listening) or the shim's JSON error, passed through.
pub(super) fn error_answer(pod: &str, what: &str, status: StatusCode, body: &[u8]) -> KubeError {
    if let Ok(s) = serde_json::from_slice::<kube::core::Status>(body) {
        if s.message.is_empty() && s.reason.is_empty() {
            // not a Status after all
        } else {
            let mut s = s;
            if s.code == 0 {
                s.code = status.as_u16();
            }
            return KubeError::Api {
                what: format!("{what} to the shim of pod {pod}"),
                source: kube::Error::Api(s.boxed()),
            };
        }
    }
    let (code, message) = match Refusal::from_answer(status.as_u16(), body) {
        Refusal::RolledBack { reason } => (code::ROLLED_BACK.to_owned(), reason),
        Refusal::Other { code, message, .. } => (code, message),
    };
    let code = Some(code).filter(|c| !c.is_empty());
    KubeError::Shim { pod: pod.into(), what: what.into(), status: status.as_u16(), code, message }
}

pub(super) fn parse_answer<T: serde::de::DeserializeOwned>(pod: &str, what: &str, body: &[u8]) -> Result<T, KubeError> {
    serde_json::from_slice(body).map_err(|e| KubeError::BadAnswer {
        pod: pod.into(),
        what: what.into(),
        detail: format!("{e}: {}", String::from_utf8_lossy(body).chars().take(200).collect::<String>()),
    })
}
