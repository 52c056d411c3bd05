//! The clap types: one [`Command`] variant per subcommand, one `*Args` struct per
//! subcommand that takes any. Their doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use stand_model::config::Target;

/// devd: the stand's dev orchestrator.
//
// `about` is devd's package description, spelled out: a bare `about` would take this
// crate's. `version` is the workspace's, devd's as well.
#[derive(Debug, Parser)]
#[command(
    name = "devd",
    version,
    about = "The stand dev-orchestrator: stand.toml -> plan -> watch -> build -> deliver -> status",
    long_about = None
)]
pub struct Cli {
    /// The stand's root directory (where stand.toml is). Default: the directory of
    /// --file, else the current directory or the nearest parent holding stand.toml.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The stand file. Default: <root>/stand.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and cross-check stand.toml, including that the files it names exist and
    /// that every generated Helm values file is what stand.toml gives.
    Check,
    /// Write the Helm values files generated from stand.toml (helm/app/values-<env>.yaml).
    Generate,
    /// Add a service: its crate under services/, the workspace member, its stand.toml
    /// table, the environments that run it, and the regenerated Helm values.
    New(NewArgs),
    /// The environments stand.toml declares.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Resolve an environment into the plan devd and Tilt act on.
    Plan(PlanArgs),
    /// Whether an environment may deploy to a kube context (default: the current one).
    Context(ContextArgs),
    /// Run the stand: build, watch, rebuild what a change touches, serve the status API.
    Up(UpArgs),
    /// Build services once, in one cargo invocation, and print the artifacts.
    Build(BuildArgs),
    /// Show the running stand (from devd's status API).
    Status(StatusArgs),
    /// Ask the running devd to rebuild a service now.
    Rebuild(ActionArgs),
    /// Ask the running devd to restart a service's process in every instance.
    Restart(ActionArgs),
    /// What the services print: every instance's output, prefixed with its service.
    Logs(LogsArgs),
    /// Remove the docker target's containers and network (volumes with --volumes).
    Down(DownArgs),
    /// Dev images.
    #[command(subcommand)]
    Image(ImageCommand),
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List the environments.
    List(JsonFlag),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The environment (default: `[stand] default_env`).
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// Print the plan as stable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The service's name: a DNS-1035 label (a-z, 0-9, '-', starting with a letter).
    pub name: String,
    /// The port it listens on (default: one above the highest port in use).
    #[arg(long)]
    pub port: Option<u16>,
    /// It gets its own PostgreSQL database (`database = true`).
    #[arg(long)]
    pub database: bool,
    /// The environments that run it (repeatable; default: every environment that lists
    /// all current services).
    #[arg(long = "env", value_name = "ENV")]
    pub envs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ContextArgs {
    /// The environment (default: `[stand] default_env`).
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// The kube context to judge (default: the kubeconfig's current context).
    pub context: Option<String>,
    /// Print the verdict as JSON and exit 0 either way (what the Tilt extension reads).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The environment (default: `[stand] default_env`).
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// The status API's port (default: `[stand] api_port`; 0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Where the stand runs. Default: the environment's `target`; for kubernetes with no
    /// cluster answering (2 s) but a Docker engine that does, docker. docker: devd
    /// creates the network, databases and containers itself.
    #[arg(long, value_parser = ["docker", "kubernetes"])]
    pub target: Option<String>,
    /// Print no progress lines (warnings and errors still go to stderr).
    #[arg(long, short)]
    pub quiet: bool,
    /// kubernetes target: do not run `helm upgrade --install`, only build and sync
    /// (Tilt deploys; the stand Tilt extension passes this).
    #[arg(long)]
    pub no_deploy: bool,
    /// Make this the one environment of the stand here: first remove the stand's other
    /// environments from the current cluster (kubernetes: `helm uninstall` in each one's
    /// namespace, for those whose contexts allow this cluster; docker: their
    /// containers). Their databases' data stays (`devd down --env E --volumes` removes
    /// it). Under Tilt, Tilt removes what a switch drops itself.
    #[arg(long, conflicts_with = "no_deploy")]
    pub switch: bool,
}

/// `--target docker|kubernetes` (clap has checked the value).
pub fn parse_target(value: Option<&str>) -> Option<Target> {
    match value? {
        "docker" => Some(Target::Docker),
        _ => Some(Target::Kubernetes),
    }
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Services to build, in one cargo invocation (default: every service of the env).
    pub services: Vec<String>,
    /// The environment whose plan names the services and the target triple.
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// Print the artifacts as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// The service to act on.
    pub service: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Redraw the table on every event from devd.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
    /// Print the status API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The services (default: every service of the environment).
    pub services: Vec<String>,
    /// The environment (default: the running devd's, else `[stand] default_env`).
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// Keep printing, and follow new instances (a re-created container, a new pod).
    #[arg(long, short)]
    pub follow: bool,
    /// Only what was printed in the last DURATION (`30s`, `5m`, `1h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// Only the last N lines of each instance (then, with -f, what follows).
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u64>,
    /// Where the stand runs (default: the running devd's target, else as `devd up` picks).
    #[arg(long, value_parser = ["docker", "kubernetes"])]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// The environment (default: `[stand] default_env`).
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// Also remove the databases' volumes (kubernetes: their PersistentVolumeClaims).
    #[arg(long)]
    pub volumes: bool,
    /// Where the stand runs (default: as `devd up` chooses: the environment's target,
    /// docker when its cluster does not answer).
    #[arg(long, value_parser = ["docker", "kubernetes"])]
    pub target: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a service's dev image (host build + runtime image through the Docker API),
    /// tagged exactly `--ref` (Tilt's custom_build: `devd image build svc --ref $EXPECTED_REF`).
    Build(ImageBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The service.
    pub service: String,
    /// The image reference to tag, `image:tag`.
    #[arg(long = "ref", value_name = "IMAGE:TAG")]
    pub reference: String,
    /// The environment whose plan names the service and the target triple.
    #[arg(long, short, value_name = "ENV")]
    pub env: Option<String>,
    /// The `BASE_IMAGE` build arg (default: $STAND_BASE_IMAGE, else stand/base:bookworm
    /// when the engine has it, else the Dockerfile's).
    #[arg(long, value_name = "IMAGE")]
    pub base_image: Option<String>,
    /// The Dockerfile (its directory is the context dir; default: devd/docker/Dockerfile
    /// of the stand, else devd's own).
    #[arg(long, value_name = "FILE")]
    pub dockerfile: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
