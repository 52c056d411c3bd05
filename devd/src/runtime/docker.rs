//! The docker target: the stand as containers on this machine's Docker engine.
//!
//! Per environment: a network `<stand>-<env>`; per service whose database is
//! in-cluster a PostgreSQL container `<stand>-<env>-postgres-<svc>` (image
//! `stand/postgres:15`, network alias = the plan's database host, a named volume of the
//! same name when persistence is on); per service a container `<stand>-<env>-<svc>`
//! running the dev image (the shim as entrypoint) with the service port and the shim
//! port published on 127.0.0.1 (random host ports). Everything carries the labels
//! `dev.stand.stand`, `dev.stand.env`, `dev.stand.service`, `dev.stand.component`.
//!
//! [`DockerTarget::ensure_service`] is idempotent: a container of the same name whose
//! image and settings (a hash in the label `dev.stand.config`) are unchanged is kept
//! (and started if stopped); otherwise it is replaced.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, VolumeCreateOptions};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions, ListVolumesOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StartContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::shim::DirectHttp;
use super::{Instance, ShimTransport, Target, TargetError};
use crate::config::DbMode;
use crate::plan::{Plan, ServicePlan};
use crate::status::event::{Component, StepDone};
use crate::status::EventBody;

pub const LABEL_STAND: &str = "dev.stand.stand";
pub const LABEL_ENV: &str = "dev.stand.env";
pub const LABEL_SERVICE: &str = "dev.stand.service";
pub const LABEL_COMPONENT: &str = "dev.stand.component";
pub const LABEL_CONFIG: &str = "dev.stand.config";
pub const POSTGRES_IMAGE: &str = "stand/postgres:15";
pub use stand_shim_protocol::DEFAULT_PORT as SHIM_PORT;

/// Settings of the service containers that do not come from the plan.
#[derive(Clone, Debug)]
pub struct ServiceContainer {
    /// The dev image (`repository:tag`) to run.
    pub image: String,
    pub shim_token: String,
    /// `DB_PASSWORD`, when the service has a database.
    pub db_password: Option<String>,
}

pub struct DockerTarget {
    docker: Docker,
    transport: DirectHttp,
    stand: String,
    env: String,
    shim_token: String,
}

fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

impl DockerTarget {
    /// Connects to the engine (negotiating the API version).
    pub async fn connect(stand: &str, env: &str, shim_token: &str) -> Result<Self, TargetError> {
        let docker = Docker::connect_with_defaults().map_err(TargetError::DockerUnavailable)?;
        let docker = docker.negotiate_version().await.map_err(TargetError::DockerUnavailable)?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| TargetError::Other(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { docker, transport: DirectHttp::new(http), stand: stand.to_owned(), env: env.to_owned(), shim_token: shim_token.to_owned() })
    }

    pub fn for_plan(plan: &Plan) -> (String, String) {
        (plan.stand.clone(), plan.env.clone())
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn network_name(&self) -> String {
        format!("{}-{}", self.stand, self.env)
    }

    pub fn container_name(&self, service: &str) -> String {
        format!("{}-{}-{service}", self.stand, self.env)
    }

    pub fn postgres_name(&self, service: &str) -> String {
        format!("{}-{}-postgres-{service}", self.stand, self.env)
    }

    /// The dev image of `service` on this target: `<stand>/<service>:<tag>`, scoped by
    /// the stand's name (two stands on one engine never share a tag, whatever their
    /// stand.toml's `image` says; that repository is the cluster's, see [`crate::plan`]).
    pub fn image_name(&self, service: &ServicePlan) -> String {
        format!("{}/{}:{}", self.stand, service.name, service.image.tag)
    }

    fn labels(&self, service: Option<&str>, component: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_STAND.to_owned(), self.stand.clone()),
            (LABEL_ENV.to_owned(), self.env.clone()),
            (LABEL_COMPONENT.to_owned(), component.to_owned()),
        ]);
        if let Some(service) = service {
            labels.insert(LABEL_SERVICE.to_owned(), service.to_owned());
        }
        labels
    }

    fn filters(&self, extra: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_STAND}={}", self.stand), format!("{LABEL_ENV}={}", self.env)];
        labels.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        HashMap::from([("label".to_owned(), labels)])
    }

    /// Creates the environment's network unless it exists.
    pub async fn ensure_network(&self) -> Result<(), TargetError> {
        let name = self.network_name();
        match self.docker.inspect_network(&name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
            Ok(_) => return Ok(()),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(TargetError::docker(format!("inspect network {name}"))(e)),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(self.labels(None, "network")),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Created meanwhile by another devd of the same stand: fine.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(TargetError::docker(format!("create network {name}"))(e)),
        }
    }

    /// The PostgreSQL container of `service` (in-cluster database), created or kept.
    pub async fn ensure_database(&self, service: &ServicePlan, password: &str) -> Result<String, TargetError> {
        let db = &service.database;
        let name = self.postgres_name(&service.name);
        let alias = db.host.clone().unwrap_or_else(|| format!("postgres-{}", service.name));
        let mut host_config = HostConfig { network_mode: Some(self.network_name()), ..Default::default() };
        if db.persistence == Some(true) {
            // A named volume (created by the engine on first use) carrying our labels.
            let volume = VolumeCreateOptions {
                name: Some(name.clone()),
                labels: Some(self.labels(Some(&service.name), "database")),
                ..Default::default()
            };
            self.docker.create_volume(volume).await.map_err(TargetError::docker(format!("create volume {name}")))?;
            host_config.binds = Some(vec![format!("{name}:/var/lib/postgresql/data")]);
        }
        let body = ContainerCreateBody {
            image: Some(POSTGRES_IMAGE.to_owned()),
            env: Some(vec![
                format!("POSTGRES_USER={}", db.user.clone().unwrap_or_else(|| service.name.clone())),
                format!("POSTGRES_PASSWORD={password}"),
                format!("POSTGRES_DB={}", db.name.clone().unwrap_or_else(|| service.name.clone())),
            ]),
            labels: Some(self.labels(Some(&service.name), "database")),
            host_config: Some(host_config),
            networking_config: Some(self.endpoint(vec![alias])),
            ..Default::default()
        };
        self.ensure_container(&name, body).await
    }

    fn endpoint(&self, aliases: Vec<String>) -> NetworkingConfig {
        NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                self.network_name(),
                EndpointSettings { aliases: Some(aliases), ..Default::default() },
            )])),
        }
    }

    /// The environment variables of a service container.
    pub fn service_env(service: &ServicePlan, settings: &ServiceContainer) -> Vec<String> {
        let mut env = vec![
            format!("PORT={}", service.port),
            "RUST_LOG=info".to_owned(),
            "LOG_FORMAT=json".to_owned(),
            format!("{}={}", stand_shim_protocol::TOKEN_ENV, settings.shim_token),
            format!("{}={SHIM_PORT}", stand_shim_protocol::PORT_ENV),
        ];
        let db = &service.database;
        if db.mode != DbMode::None {
            if let Some(host) = &db.host {
                env.push(format!("DB_HOST={host}"));
            }
            env.push(format!("DB_PORT={}", db.port.unwrap_or(5432)));
            env.push(format!("DB_NAME={}", db.name.clone().unwrap_or_else(|| service.name.clone())));
            env.push(format!("DB_USER={}", db.user.clone().unwrap_or_else(|| service.name.clone())));
            if let Some(password) = &settings.db_password {
                env.push(format!("DB_PASSWORD={password}"));
            }
            let sslmode = match db.sslmode {
                Some(mode) => mode.to_string(),
                None => "disable".to_owned(), // in-cluster: plain TCP on the stand's network
            };
            env.push(format!("DB_SSLMODE={sslmode}"));
        }
        env
    }

    /// The service container, created or kept (see the module docs). Returns its id.
    pub async fn ensure_service(&self, service: &ServicePlan, settings: &ServiceContainer) -> Result<String, TargetError> {
        let body = self.service_body(service, settings);
        self.ensure_container(&self.container_name(&service.name), body).await
    }

    /// Removes the service container and creates it anew from `settings.image` (the
    /// image-rebuild path: what a stand without live sync does on every change).
    pub async fn replace_service(&self, service: &ServicePlan, settings: &ServiceContainer) -> Result<String, TargetError> {
        let name = self.container_name(&service.name);
        self.remove_container(&name).await?;
        let body = self.service_body(service, settings);
        self.ensure_container(&name, body).await
    }

    fn service_body(&self, service: &ServicePlan, settings: &ServiceContainer) -> ContainerCreateBody {
        let port = |p: u16| format!("{p}/tcp");
        let loopback = || Some(vec![PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: Some(String::new()) }]);
        ContainerCreateBody {
            image: Some(settings.image.clone()),
            env: Some(Self::service_env(service, settings)),
            labels: Some(self.labels(Some(&service.name), "service")),
            exposed_ports: Some(HashMap::from([(port(service.port), HashMap::new()), (port(SHIM_PORT), HashMap::new())])),
            host_config: Some(HostConfig {
                network_mode: Some(self.network_name()),
                port_bindings: Some(HashMap::from([(port(service.port), loopback()), (port(SHIM_PORT), loopback())])),
                ..Default::default()
            }),
            networking_config: Some(self.endpoint(vec![service.name.clone()])),
            ..Default::default()
        }
    }

    /// Creates and starts `name` from `body`, unless a container of that name already
    /// runs the same image with the same settings (then it is kept, and started).
    async fn ensure_container(&self, name: &str, mut body: ContainerCreateBody) -> Result<String, TargetError> {
        let image = body.image.clone().unwrap_or_default();
        let image_id = self
            .docker
            .inspect_image(&image)
            .await
            .map_err(TargetError::docker(format!("image {image} (for {name})")))?
            .id
            .unwrap_or_default();
        let config_hash = {
            let value = canonical(serde_json::to_value(&body).unwrap_or_default());
            hex::encode(Sha256::digest(value.to_string().as_bytes()))
        };
        body.labels.get_or_insert_with(HashMap::new).insert(LABEL_CONFIG.to_owned(), config_hash.clone());
        match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(existing) => {
                let same_config = existing.config.as_ref().and_then(|c| c.labels.as_ref()).and_then(|l| l.get(LABEL_CONFIG))
                    == Some(&config_hash);
                let same_image = existing.image.as_deref() == Some(image_id.as_str());
                let id = existing.id.clone().unwrap_or_else(|| name.to_owned());
                if same_config && same_image {
                    let running = existing.state.as_ref().and_then(|s| s.running).unwrap_or(false);
                    if !running {
                        self.start(&id).await?;
                    }
                    tracing::info!(container = name, "kept (same image and settings)");
                    return Ok(id);
                }
                tracing::info!(container = name, same_config, same_image, "replacing");
                self.remove_container(name).await?;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(TargetError::docker(format!("inspect container {name}"))(e)),
        }
        let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(TargetError::docker(format!("create container {name}")))?;
        self.start(&created.id).await?;
        tracing::info!(container = name, id = %created.id, "created");
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), TargetError> {
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(TargetError::docker(format!("start container {id}")))
    }

    async fn remove_container(&self, name: &str) -> Result<(), TargetError> {
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(TargetError::docker(format!("remove container {name}"))(e)),
        }
    }

    /// Removes one service's containers (the service and its PostgreSQL); named volumes,
    /// its data among them, stay until `devd down --volumes`. Returns what was removed.
    pub async fn remove_service(&self, service: &str) -> Result<Vec<String>, TargetError> {
        let mut removed = Vec::new();
        for name in [self.container_name(service), self.postgres_name(service)] {
            match self.docker.inspect_container(&name, None::<InspectContainerOptions>).await {
                Ok(_) => {
                    self.remove_container(&name).await?;
                    removed.push(format!("container {name}"));
                }
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(TargetError::docker(format!("inspect container {name}"))(e)),
            }
        }
        Ok(removed)
    }

    /// Removes the environment's containers and network; its volumes too with `volumes`.
    /// Returns what was removed, for people.
    pub async fn down(&self, volumes: bool) -> Result<Vec<String>, TargetError> {
        let mut removed = Vec::new();
        // Until a listing is empty: a container whose creation was under way when the
        // daemon stopped may appear after the first listing (bounded: 5 rounds).
        for _ in 0..5 {
            let options = ListContainersOptions { all: true, filters: Some(self.filters(&[])), ..Default::default() };
            let containers = self.docker.list_containers(Some(options)).await.map_err(TargetError::docker("list containers"))?;
            if containers.is_empty() {
                break;
            }
            for container in containers {
                let name = container.names.and_then(|n| n.into_iter().next()).unwrap_or_default();
                if let Some(id) = container.id {
                    self.remove_container(&id).await?;
                    removed.push(format!("container {}", name.trim_start_matches('/')));
                }
            }
        }
        let options = ListNetworksOptions { filters: Some(self.filters(&[])) };
        for network in self.docker.list_networks(Some(options)).await.map_err(TargetError::docker("list networks"))? {
            if let Some(name) = network.name {
                match self.docker.remove_network(&name).await {
                    Ok(()) => removed.push(format!("network {name}")),
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(TargetError::docker(format!("remove network {name}"))(e)),
                }
            }
        }
        if volumes {
            let options = ListVolumesOptions { filters: Some(self.filters(&[])) };
            let list = self.docker.list_volumes(Some(options)).await.map_err(TargetError::docker("list volumes"))?;
            for volume in list.volumes.unwrap_or_default() {
                match self.docker.remove_volume(&volume.name, Some(RemoveVolumeOptions { force: true })).await {
                    Ok(()) => removed.push(format!("volume {}", volume.name)),
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(TargetError::docker(format!("remove volume {}", volume.name))(e)),
                }
            }
        }
        Ok(removed)
    }

    async fn list_instances(&self, service: &str) -> Result<Vec<Instance>, TargetError> {
        let filters = self.filters(&[(LABEL_SERVICE, service), (LABEL_COMPONENT, "service")]);
        let options = ListContainersOptions { all: false, filters: Some(filters), ..Default::default() };
        let containers = self.docker.list_containers(Some(options)).await.map_err(TargetError::docker("list containers"))?;
        let mut instances = Vec::new();
        for summary in containers {
            let Some(id) = summary.id else { continue };
            let inspect = match self.docker.inspect_container(&id, None::<InspectContainerOptions>).await {
                Ok(inspect) => inspect,
                Err(e) if not_found(&e) => continue, // removed meanwhile
                Err(e) => return Err(TargetError::docker(format!("inspect container {id}"))(e)),
            };
            let state = inspect.state.clone().unwrap_or_default();
            if state.running != Some(true) {
                continue;
            }
            let port_of = |container_port: String| -> Option<String> {
                let ports = inspect.network_settings.as_ref()?.ports.as_ref()?;
                let binding = ports.get(&container_port)?.as_ref()?.first()?.clone();
                Some(format!("http://127.0.0.1:{}", binding.host_port?))
            };
            let env_port = inspect
                .config
                .as_ref()
                .and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PORT=").map(str::to_owned)))
                .unwrap_or_default();
            let (Some(service_url), Some(shim_url)) = (port_of(format!("{env_port}/tcp")), port_of(format!("{SHIM_PORT}/tcp")))
            else {
                continue; // ports not published yet
            };
            instances.push(Instance {
                id: id.chars().take(12).collect(),
                name: inspect.name.clone().unwrap_or_default().trim_start_matches('/').to_owned(),
                service: service.to_owned(),
                shim_url,
                shim_token: self.shim_token.clone(),
                service_url,
                started_at: state.started_at.clone(),
            });
        }
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(instances)
    }
}

impl Target for DockerTarget {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn instances<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, TargetError>> {
        Box::pin(self.list_instances(service))
    }

    fn transport(&self) -> &dyn ShimTransport {
        &self.transport
    }
}

/// `value` with every object's keys in order (maps like labels and env iterate in
/// random order; the settings hash must not).
fn canonical(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let sorted: std::collections::BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// A secret devd generates once and keeps in its state dir (0600): the shim token, a
/// database password. Kept across runs, so that reused containers and volumes match.
pub fn kept_secret(state_dir: &Path, name: &str) -> std::io::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = state_dir.join("secrets");
    let path: PathBuf = dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if !text.trim().is_empty() {
            return Ok(text.trim().to_owned());
        }
    }
    std::fs::create_dir_all(&dir)?;
    let secret = crate::statedir::random_hex(24)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(secret)
}

/// The password of an external database for the docker target: the file
/// `<state dir>/secrets/<secret name>` (the Kubernetes Secret's stand-in), else
/// `$STAND_DB_PASSWORD`.
pub fn external_password(state_dir: &Path, service: &ServicePlan) -> Option<String> {
    let from_file = service
        .database
        .secret
        .as_ref()
        .and_then(|s| std::fs::read_to_string(state_dir.join("secrets").join(&s.name)).ok())
        .map(|t| t.trim().to_owned());
    from_file.or_else(|| std::env::var("STAND_DB_PASSWORD").ok())
}

/// What [`DockerStand::ensure`] reports as it goes.
#[derive(Debug)]
pub enum EnsureProgress<'a> {
    /// A line of the image build (Docker's output, the shim's cargo).
    Line(&'a str),
    /// A step done, as its event: [`EventBody::ImageBuilt`] or [`EventBody::ImageKept`],
    /// [`EventBody::DatabaseStarted`], [`EventBody::ContainerStarted`].
    Done(EventBody),
}

fn millis_since(start: std::time::Instant) -> u64 {
    crate::measure::millis(start.elapsed())
}

/// What a docker step did, in how long since `start`.
fn done(name: String, start: std::time::Instant) -> StepDone {
    StepDone { duration_ms: millis_since(start), name, target: crate::config::Target::Docker }
}

/// What `devd up --target docker` needs besides the target: images and containers per
/// service, set up once per service after its first successful build.
pub struct DockerStand {
    pub target: std::sync::Arc<DockerTarget>,
    root: PathBuf,
    state_dir: PathBuf,
    host_triple: String,
    shim: Option<PathBuf>,
    /// Services whose containers devd started, with their settings.
    deployed: std::collections::BTreeMap<String, (ServicePlan, ServiceContainer)>,
}

impl DockerStand {
    /// Connects, with the shim token kept in the state dir.
    pub async fn connect(plan: &Plan, root: &Path, state_dir: &Path, host_triple: &str) -> Result<Self, TargetError> {
        let token = kept_secret(state_dir, "shim-token")
            .map_err(|e| TargetError::Other(format!("cannot keep the shim token in {}: {e}", state_dir.display())))?;
        let target = DockerTarget::connect(&plan.stand, &plan.env, &token).await?;
        Ok(Self {
            target: std::sync::Arc::new(target),
            root: root.to_owned(),
            state_dir: state_dir.to_owned(),
            host_triple: host_triple.to_owned(),
            shim: None,
            deployed: Default::default(),
        })
    }

    pub fn is_ready(&self, service: &str) -> bool {
        self.deployed.contains_key(service)
    }

    /// A service that left the environment: its containers go (its volume stays), and
    /// `keep_up` no longer brings it back.
    pub async fn remove(&mut self, service: &str) -> Result<Vec<String>, TargetError> {
        self.deployed.remove(service);
        self.target.remove_service(service).await
    }

    /// Is the container `name` running (or restarting)? An engine that does not answer
    /// counts as yes: try again later.
    async fn running(&self, name: &str) -> bool {
        match self.target.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => c.state.as_ref().is_none_or(|s| s.running.unwrap_or(false) || s.restarting.unwrap_or(false)),
            Err(e) if not_found(&e) => false,
            Err(_) => true,
        }
    }

    /// Plays the controller Docker does not have: a database or service container that
    /// was removed or stopped by hand is created or started again (the database first;
    /// a service container from its image, with its old binary: delivery then re-syncs
    /// it; the service reconnects to its database by itself). Returns (service,
    /// component) of every container it had to bring back.
    pub async fn keep_up(&self) -> Vec<(String, Component)> {
        let mut revived = Vec::new();
        for (name, (service, settings)) in &self.deployed {
            if let (DbMode::InCluster, Some(password)) = (service.database.mode, &settings.db_password) {
                if !self.running(&self.target.postgres_name(name)).await {
                    match self.target.ensure_database(service, password).await {
                        Ok(_) => revived.push((name.clone(), Component::Database)),
                        Err(e) => tracing::warn!(service = %name, error = %e, "cannot bring the database container back"),
                    }
                }
            }
            if self.running(&self.target.container_name(name)).await {
                continue;
            }
            match self.target.ensure_service(service, settings).await {
                Ok(_) => revived.push((name.clone(), Component::Service)),
                Err(e) => tracing::warn!(service = %name, error = %e, "cannot bring the container back"),
            }
        }
        revived
    }

    /// Builds the service's dev image from `artifact` unless the image of its name was
    /// built from the same inputs ([`crate::image::input_hash`]: everything but the
    /// service binary), and brings up its database and container (kept when unchanged:
    /// a devd restart leaves a running stand as it is). `progress` gets the image
    /// build's lines and each step as it is done ([`EnsureProgress::Done`]).
    pub async fn ensure(
        &mut self,
        service: &ServicePlan,
        artifact: &crate::build::Artifact,
        progress: &mut (dyn FnMut(EnsureProgress<'_>) + Send),
    ) -> Result<(), String> {
        let started = std::time::Instant::now();
        let shim = match &self.shim {
            Some(shim) => shim.clone(),
            None => {
                let shim = crate::image::ensure_shim(&self.root, &self.host_triple, |line| progress(EnsureProgress::Line(line)))
                    .await
                    .map_err(|e| e.to_string())?;
                self.shim = Some(shim.clone());
                shim
            }
        };
        let tag = self.target.image_name(service);
        let mut spec = crate::image::ImageSpec {
            service: service.name.clone(),
            binary: artifact.path.clone(),
            binary_name: artifact.bin.clone(),
            binary_sha256: artifact.sha256.clone(),
            libs: artifact.libs.clone(),
            shim,
            tag: tag.clone(),
            base_image: crate::image::base_image(self.target.docker(), None).await,
            dockerfile: crate::image::stand_dockerfile(&self.root),
            labels: Default::default(),
        };
        let docker = self.target.docker();
        let base_id = match &spec.base_image {
            Some(base) => docker.inspect_image(base).await.ok().and_then(|i| i.id),
            None => None,
        };
        let inputs = {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || crate::image::input_hash(&spec, base_id.as_deref()))
                .await
                .map_err(|e| format!("image inputs task failed: {e}"))?
                .map_err(|e| e.to_string())?
        };
        spec.labels.insert(crate::image::LABEL_INPUTS.to_owned(), inputs.clone());
        spec.labels.insert(LABEL_STAND.to_owned(), self.target.stand.clone());
        let existing = docker.inspect_image(&tag).await.ok();
        let label = |key: &str| existing.as_ref()?.config.as_ref()?.labels.as_ref()?.get(key).cloned();
        let built = if label(crate::image::LABEL_INPUTS).as_deref() == Some(inputs.as_str())
            && label(LABEL_STAND).as_deref() == Some(self.target.stand.as_str())
        {
            progress(EnsureProgress::Done(EventBody::ImageKept(done(tag.clone(), started))));
            None
        } else {
            let built = crate::image::build(docker, &spec, |line| progress(EnsureProgress::Line(line)))
                .await
                .map_err(|e| e.to_string())?;
            progress(EnsureProgress::Done(EventBody::ImageBuilt(done(tag.clone(), started))));
            Some(built)
        };
        self.target.ensure_network().await.map_err(|e| e.to_string())?;
        let db_password = match service.database.mode {
            DbMode::None => None,
            DbMode::InCluster => {
                let password = kept_secret(&self.state_dir, &format!("postgres-{}", service.name))
                    .map_err(|e| format!("cannot keep the database password: {e}"))?;
                let step = std::time::Instant::now();
                self.target.ensure_database(service, &password).await.map_err(|e| e.to_string())?;
                let what = self.target.postgres_name(&service.name);
                progress(EnsureProgress::Done(EventBody::DatabaseStarted(done(what, step))));
                Some(password)
            }
            DbMode::External => external_password(&self.state_dir, service),
        };
        let settings = ServiceContainer { image: tag, shim_token: self.target.shim_token.clone(), db_password };
        let step = std::time::Instant::now();
        self.target.ensure_service(service, &settings).await.map_err(|e| e.to_string())?;
        let what = self.target.container_name(&service.name);
        progress(EnsureProgress::Done(EventBody::ContainerStarted(done(what, step))));
        if let Some(previous) = built.as_ref().and_then(|b| b.previous.as_ref()) {
            crate::image::remove_if_unused(self.target.docker(), previous).await;
        }
        self.deployed.insert(service.name.clone(), (service.clone(), settings));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(mode: DbMode) -> ServicePlan {
        let stand = crate::config::Stand::parse(
            r#"
[stand]
name = "s"
chart = "c"
release = "s"
default_env = "in"

[services.api]
package = "api"
path = "api"
port = 5002
database = true
image = "s/api"

[env.in]
services = ["api"]
values = []
database = { mode = "in-cluster", persistence = false }

[env.ext]
services = ["api"]
values = []
database = { mode = "external", host = "db.example", secret = "api-db", name = "apidb", user = "apiuser" }

[env.none]
services = ["api"]
values = []
database = { mode = "none" }
"#,
            Path::new("stand.toml"),
        )
        .expect("stand.toml");
        let env = match mode {
            DbMode::InCluster => "in",
            DbMode::External => "ext",
            DbMode::None => "none",
        };
        crate::plan::resolve(&stand, env, "x86_64-unknown-linux-gnu").expect("plan").services.remove(0)
    }

    #[test]
    fn service_env_follows_the_plan_database() {
        let settings = |pw: Option<&str>| ServiceContainer {
            image: "s/api:dev".into(),
            shim_token: "tok".into(),
            db_password: pw.map(str::to_owned),
        };
        let env = DockerTarget::service_env(&service(DbMode::InCluster), &settings(Some("pw")));
        for want in ["PORT=5002", "STAND_SHIM_TOKEN=tok", "STAND_SHIM_PORT=7070", "DB_HOST=postgres-api", "DB_PORT=5432", "DB_NAME=api", "DB_USER=api", "DB_PASSWORD=pw", "DB_SSLMODE=disable", "LOG_FORMAT=json"] {
            assert!(env.contains(&want.to_owned()), "{want} missing from {env:?}");
        }
        let env = DockerTarget::service_env(&service(DbMode::External), &settings(Some("secret")));
        for want in ["DB_HOST=db.example", "DB_NAME=apidb", "DB_USER=apiuser", "DB_PASSWORD=secret", "DB_SSLMODE=prefer"] {
            assert!(env.contains(&want.to_owned()), "{want} missing from {env:?}");
        }
        let env = DockerTarget::service_env(&service(DbMode::None), &settings(None));
        assert!(!env.iter().any(|e| e.starts_with("DB_")), "{env:?}");
    }

    #[test]
    fn the_settings_hash_does_not_depend_on_map_order() {
        let a = serde_json::json!({"labels": {"b": "2", "a": "1"}, "env": ["X=1"]});
        let b = serde_json::json!({"env": ["X=1"], "labels": {"a": "1", "b": "2"}});
        assert_eq!(canonical(a).to_string(), canonical(b).to_string());
        let keys: Vec<String> = match canonical(serde_json::json!({"z": 1, "a": 2})) {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        };
        assert_eq!(keys, ["a", "z"]);
    }
}
