//! The `devd` command line. Adding a subcommand is one [`Command`] variant and one arm
//! in [`run`].
//!
//! Exit codes (see [`exit_code`]): 0 ok, 1 runtime failure, 2 bad input or usage.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{self, ConfigErrors, DbMode, Stand, Target};
use crate::plan::{self, Plan, PlanError};
use crate::values;

/// devd: the stand's dev orchestrator.
#[derive(Debug, Parser)]
#[command(name = "devd", version, about, long_about = None)]
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
    New(crate::new::NewArgs),
    /// The environments stand.toml declares.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Resolve an environment into the plan devd and Tilt act on.
    Plan(PlanArgs),
    /// Whether an environment may deploy to a kube context (default: the current one).
    Context(crate::commands::ContextArgs),
    /// Run the stand: build, watch, rebuild what a change touches, serve the status API.
    Up(crate::commands::UpArgs),
    /// Build services once, in one cargo invocation, and print the artifacts.
    Build(crate::commands::BuildArgs),
    /// Show the running stand (from devd's status API).
    Status(crate::commands::StatusArgs),
    /// Ask the running devd to rebuild a service now.
    Rebuild(crate::commands::ActionArgs),
    /// Ask the running devd to restart a service's process in every instance.
    Restart(crate::commands::ActionArgs),
    /// What the services print: every instance's output, prefixed with its service.
    Logs(crate::commands::LogsArgs),
    /// Remove the docker target's containers and network (volumes with --volumes).
    Down(crate::commands::DownArgs),
    /// Dev images.
    #[command(subcommand)]
    Image(crate::commands::ImageCommand),
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

/// Bad input or usage that is not a stand.toml or plan error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Run one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let place = Place::find(cli.root.as_deref(), cli.file.as_deref())?;
    match cli.command {
        Command::Check => check(&place),
        Command::Generate => generate(&place),
        Command::New(args) => {
            let added = crate::new::run(&place, args)?;
            print(&crate::new::summary(&added))
        }
        Command::Env(EnvCommand::List(flag)) => env_list(&place, flag.json),
        Command::Plan(args) => plan_cmd(&place, args.env.as_deref(), args.json),
        Command::Context(args) => crate::commands::context(&place, args),
        Command::Up(args) => crate::commands::up(&place, args).await,
        Command::Build(args) => crate::commands::build(&place, args).await,
        Command::Status(args) => crate::commands::status(&place, args).await,
        Command::Rebuild(args) => crate::commands::action(&place, args, "rebuild").await,
        Command::Restart(args) => crate::commands::action(&place, args, "restart").await,
        Command::Logs(args) => crate::commands::logs(&place, args).await,
        Command::Down(args) => crate::commands::down(&place, args).await,
        Command::Image(crate::commands::ImageCommand::Build(args)) => crate::commands::image_build(&place, args).await,
    }
}

/// 2 for bad input (stand.toml, unknown environment, usage), else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let bad_input = error.chain().any(|e| {
        e.is::<ConfigErrors>()
            || e.is::<PlanError>()
            || e.is::<Usage>()
            || e.is::<clap::Error>()
            || e.is::<values::FileIssues>()
    });
    if bad_input {
        2
    } else {
        1
    }
}

/// The text printed for a failed command: stand.toml errors one per line, as
/// `file:line:column: ...`, anything else as `error: ...` with its causes.
pub fn render_error(error: &anyhow::Error) -> String {
    if let Some(errors) = error.downcast_ref::<ConfigErrors>() {
        let n = errors.0.len();
        let noun = if n == 1 { "error" } else { "errors" };
        return format!("{errors}\nerror: stand.toml is invalid ({n} {noun})");
    }
    if let Some(issues) = error.chain().find_map(|e| e.downcast_ref::<values::FileIssues>()) {
        let n = issues.0.len();
        let noun = if n == 1 { "file disagrees" } else { "files disagree" };
        return format!("{issues}\nerror: Helm values {noun} with stand.toml ({n})");
    }
    format!("error: {error:#}")
}

/// The log filter for a RUST_LOG value (default: warnings). kube's own logging
/// (`kube_client`'s `failed with error client error (Connect)` on every attempt,
/// `kube_runtime`'s watcher errors) is off unless RUST_LOG names it: devd reports the
/// API server's state itself, once per change.
pub fn log_filter(rust_log: Option<&str>) -> String {
    let base = rust_log.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("warn");
    let mut filter = base.to_owned();
    for quiet in ["kube_client", "kube_runtime"] {
        if !base.contains(quiet) {
            filter.push_str(&format!(",{quiet}=off"));
        }
    }
    filter
}

/// Logs to stderr, filtered by RUST_LOG (see [`log_filter`]).
pub fn init_tracing() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(rust_log.as_deref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(None)));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::progress::colour_on_stderr())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Where the stand is: its root and its stand.toml.
#[derive(Debug, Clone)]
pub struct Place {
    pub root: PathBuf,
    pub file: PathBuf,
}

impl Place {
    /// From --root and --file; with neither, the current directory or the nearest parent
    /// that has a stand.toml.
    pub fn find(root: Option<&Path>, file: Option<&Path>) -> anyhow::Result<Place> {
        match (root, file) {
            (Some(root), Some(file)) => Ok(Place {
                root: root.to_path_buf(),
                file: file.to_path_buf(),
            }),
            (Some(root), None) => Ok(Place {
                root: root.to_path_buf(),
                file: root.join(config::FILE_NAME),
            }),
            (None, Some(file)) => {
                let root = match file.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                Ok(Place {
                    root,
                    file: file.to_path_buf(),
                })
            }
            (None, None) => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                for dir in cwd.ancestors() {
                    let candidate = dir.join(config::FILE_NAME);
                    if candidate.is_file() {
                        // Keep messages short: `stand.toml`, `../stand.toml`, ...
                        let up = cwd.ancestors().position(|a| a == dir).unwrap_or(0);
                        let rel: PathBuf = std::iter::repeat_n("..", up)
                            .collect::<PathBuf>()
                            .join(config::FILE_NAME);
                        let root = rel
                            .parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                        return Ok(Place { root, file: rel });
                    }
                }
                Err(Usage(format!(
                    "no {} in {} or any parent directory; run devd from the stand's root, or pass --root or --file",
                    config::FILE_NAME,
                    cwd.display()
                ))
                .into())
            }
        }
    }

    /// Parse, cross-check and check the files stand.toml names.
    pub fn load(&self) -> anyhow::Result<Stand> {
        let stand = config::load(&self.file)?;
        stand.validate_files(&self.root)?;
        tracing::debug!(file = %self.file.display(), "stand.toml loaded");
        Ok(stand)
    }
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot serialize")?;
    text.push('\n');
    print(&text)
}

// ---- check ----------------------------------------------------------------------------

fn check(place: &Place) -> anyhow::Result<()> {
    let stand = place.load()?;
    values::check_files(&stand, &place.root).map_err(values_error)?;
    let services = stand.service_names().len();
    let envs = stand.env_names().len();
    print(&format!(
        "ok: {}: {} {}, {} {} (default: {})\n",
        place.file.display(),
        services,
        if services == 1 { "service" } else { "services" },
        envs,
        if envs == 1 {
            "environment"
        } else {
            "environments"
        },
        stand.section().default_env.get_ref(),
    ))
}

/// A values error as anyhow: the file issues as themselves (exit 2), the rest as is.
fn values_error(e: values::ValuesError) -> anyhow::Error {
    match e {
        values::ValuesError::Files(issues) => issues.into(),
        other => other.into(),
    }
}

// ---- generate -------------------------------------------------------------------------

fn generate(place: &Place) -> anyhow::Result<()> {
    let stand = place.load()?;
    let (written, removed) = values::write_files(&stand, &place.root).map_err(values_error)?;
    let mut text = String::new();
    for w in &written {
        let _ = writeln!(text, "wrote {w}");
    }
    for r in &removed {
        let _ = writeln!(text, "removed {r}");
    }
    if written.is_empty() && removed.is_empty() {
        let _ = writeln!(text, "ok: every generated values file is up to date with {}", place.file.display());
    }
    print(&text)
}

// ---- env list -------------------------------------------------------------------------

/// One row of `devd env list --json`.
#[derive(Debug, Serialize)]
pub struct EnvSummary {
    pub name: String,
    pub default: bool,
    pub description: String,
    pub target: Target,
    pub services: Vec<String>,
    /// Per service (sorted by name) its database mode.
    pub databases: std::collections::BTreeMap<String, DbMode>,
    pub live_sync: bool,
    pub values: Vec<String>,
}

/// The environments of a stand, sorted by name.
pub fn env_summaries(stand: &Stand) -> Result<Vec<EnvSummary>, PlanError> {
    let default = stand.section().default_env.get_ref();
    stand
        .env_names()
        .into_iter()
        .map(|name| {
            // The triple plays no part in a summary.
            let p = plan::resolve(stand, &name, "")?;
            Ok(EnvSummary {
                default: &name == default,
                name,
                description: p.description,
                target: p.target,
                services: p.services.iter().map(|s| s.name.clone()).collect(),
                databases: p
                    .services
                    .iter()
                    .map(|s| (s.name.clone(), s.database.mode))
                    .collect(),
                live_sync: p.live_sync,
                values: p.values,
            })
        })
        .collect()
}

fn env_list(place: &Place, json: bool) -> anyhow::Result<()> {
    let stand = place.load()?;
    let rows = env_summaries(&stand)?;
    if json {
        return print_json(&rows);
    }
    let mut table = vec![[
        "ENV".to_owned(),
        "TARGET".to_owned(),
        "SERVICES".to_owned(),
        "DATABASE".to_owned(),
        "LIVE SYNC".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for r in &rows {
        let mut modes: Vec<String> = r.databases.values().map(ToString::to_string).collect();
        modes.dedup();
        table.push([
            if r.default {
                format!("{} *", r.name)
            } else {
                r.name.clone()
            },
            r.target.to_string(),
            r.services.join(","),
            modes.join(","),
            if r.live_sync { "on" } else { "off" }.to_owned(),
            r.description.clone(),
        ]);
    }
    let mut out = render_table(&table);
    out.push_str("(* = default_env)\n");
    print(&out)
}

fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---- plan -----------------------------------------------------------------------------

fn plan_cmd(place: &Place, env: Option<&str>, json: bool) -> anyhow::Result<()> {
    let stand = place.load()?;
    let env = env.unwrap_or(stand.section().default_env.get_ref());
    let needs_host = stand
        .environment(env)
        .is_some_and(|e| e.build_target.is_none());
    let triple = if needs_host {
        host_triple()
    } else {
        String::new()
    };
    let plan = plan::resolve(&stand, env, &triple)?;
    if json {
        print_json(&plan)
    } else {
        print(&plan_summary(&plan))
    }
}

/// The host's target triple from `rustc -vV` (honouring $RUSTC); a guess from the
/// compile-time platform when rustc cannot be run.
pub fn host_triple() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(&rustc).arg("-vV").output();
    match out {
        Ok(o) if o.status.success() => {
            if let Some(t) = plan::host_triple_from_rustc(&String::from_utf8_lossy(&o.stdout)) {
                return t;
            }
            tracing::warn!("`rustc -vV` printed no host line; guessing the host triple");
        }
        Ok(o) => tracing::warn!(status = %o.status, "`rustc -vV` failed; guessing the host triple"),
        Err(e) => tracing::warn!(error = %e, "cannot run rustc; guessing the host triple"),
    }
    format!(
        "{}-unknown-{}-gnu",
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// The human form of a plan.
pub fn plan_summary(p: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "env        {}{}",
        p.env,
        if p.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", p.description)
        }
    );
    let _ = writeln!(s, "target     {}", p.target);
    let _ = writeln!(
        s,
        "helm       release {} in namespace {}, chart {}",
        p.release, p.namespace, p.chart
    );
    let _ = writeln!(
        s,
        "values     {}",
        if p.values.is_empty() {
            "(none)".to_owned()
        } else {
            p.values.join(", ")
        }
    );
    let _ = writeln!(s, "live sync  {}", if p.live_sync { "on" } else { "off" });
    let _ = writeln!(s, "api        http://{}:{}", p.api.host, p.api.port);
    let _ = writeln!(s, "build      {}", p.build.target_triple);
    let _ = writeln!(s, "services");
    let mut rows = Vec::new();
    for svc in &p.services {
        let db = &svc.database;
        let db_text = match db.mode {
            DbMode::None => "no database".to_owned(),
            DbMode::InCluster => format!(
                "in-cluster {}:{}/{} ({})",
                db.host.as_deref().unwrap_or("?"),
                db.port.unwrap_or(0),
                db.name.as_deref().unwrap_or("?"),
                match (db.persistence, db.size.as_deref()) {
                    (Some(true), Some(size)) => format!("{size} volume"),
                    _ => "no persistence".to_owned(),
                }
            ),
            DbMode::External => format!(
                "external {}:{}/{} (password: secret {})",
                db.host.as_deref().unwrap_or("?"),
                db.port.unwrap_or(0),
                db.name.as_deref().unwrap_or("?"),
                db.secret
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), |r| format!("{}/{}", r.name, r.key)),
            ),
        };
        rows.push([
            format!("  {}", svc.name),
            format!(":{}", svc.port),
            format!("{}:{}", svc.image.repository, svc.image.tag),
            format!("x{}", svc.replicas),
            db_text,
        ]);
    }
    s.push_str(&render_table(&rows));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn kube_logging_is_off_unless_rust_log_names_it() {
        assert_eq!(log_filter(None), "warn,kube_client=off,kube_runtime=off");
        assert_eq!(log_filter(Some("devd=debug")), "devd=debug,kube_client=off,kube_runtime=off");
        assert_eq!(log_filter(Some("kube_client=debug")), "kube_client=debug,kube_runtime=off");
        for f in [log_filter(None), log_filter(Some("info,kube_runtime=trace"))] {
            assert!(tracing_subscriber::EnvFilter::try_new(&f).is_ok(), "{f}");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&anyhow::Error::new(Usage("x".into()))), 2);
        let plan_err = PlanError::UnknownEnv {
            env: "x".into(),
            valid: vec![],
        };
        assert_eq!(exit_code(&anyhow::Error::new(plan_err)), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("helm failed")), 1);
    }

    #[test]
    fn tables_align() {
        let t = render_table(&[
            ["a".to_owned(), "bb".to_owned()],
            ["ccc".to_owned(), "d".to_owned()],
        ]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }
}
