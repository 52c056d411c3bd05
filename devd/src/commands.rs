//! What the commands do: `devd check`, `devd generate`, `devd env list`, `devd plan`,
//! `devd context`, `devd up`, `devd build`, `devd status`, `devd rebuild|restart`,
//! `devd logs`, `devd down` and `devd image build`. Their arguments are the clap types
//! of the `stand-cli` crate; [`crate::cli::run`] calls these.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;
use stand_cli::{
    parse_target, ActionArgs, BuildArgs, ContextArgs, DownArgs, ImageBuildArgs, LogsArgs, Place, StatusArgs, UpArgs,
    Usage,
};

use crate::build::{BuildConfig, BuildRequest, BuildTarget, Builder};
use crate::client::{render_table, Client};
use crate::config::Stand;
use crate::daemon::{self, DaemonConfig};
use crate::plan;
use crate::statedir::StateDir;
use crate::values;

/// The host's target triple (see [`stand_cli::host_triple`]), with a warning when it is
/// a guess.
pub fn host_triple() -> String {
    stand_cli::host_triple().unwrap_or_else(|guess| {
        match &guess.why {
            stand_cli::host::Unknown::NoHostLine => {
                tracing::warn!("`rustc -vV` printed no host line; guessing the host triple");
            }
            stand_cli::host::Unknown::Failed(status) => {
                tracing::warn!(status = %status, "`rustc -vV` failed; guessing the host triple");
            }
            stand_cli::host::Unknown::NotRun(e) => {
                tracing::warn!(error = %e, "cannot run rustc; guessing the host triple");
            }
        }
        guess.triple
    })
}

/// The stand at `place`: parsed, cross-checked, the files it names checked.
pub fn load(place: &Place) -> anyhow::Result<Stand> {
    let stand = place.load()?;
    tracing::debug!(file = %place.file.display(), "stand.toml loaded");
    Ok(stand)
}

/// Everything a command prints on stdout goes through here. A reader that closed the
/// pipe (`devd plan --json | head -1`) ends the output, not the command: no panic, no
/// error (the rest had nowhere to go).
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        written => written.context("cannot write to stdout"),
    }
}

/// Set once a write found stdout's reader gone: a command that keeps printing
/// (`devd status --watch`) stops.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A line on stdout (see [`print`]).
pub(crate) fn print_line(line: impl std::fmt::Display) -> anyhow::Result<()> {
    print(&format!("{line}\n"))
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot serialize")?;
    text.push('\n');
    print(&text)
}

// ---- check ----------------------------------------------------------------------------

pub fn check(place: &Place) -> anyhow::Result<()> {
    let stand = load(place)?;
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

pub fn generate(place: &Place) -> anyhow::Result<()> {
    let stand = load(place)?;
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

pub fn env_list(place: &Place, json: bool) -> anyhow::Result<()> {
    let stand = load(place)?;
    let rows = stand_cli::env_summaries(&stand)?;
    if json {
        return print_json(&rows);
    }
    print(&stand_cli::env_table(&rows))
}

// ---- plan -----------------------------------------------------------------------------

pub fn plan(place: &Place, env: Option<&str>, json: bool) -> anyhow::Result<()> {
    let stand = load(place)?;
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
        print(&stand_cli::plan_summary(&plan))
    }
}

// ---- the daemon's side ----------------------------------------------------------------

fn env_or_default(place: &Place, env: Option<String>) -> anyhow::Result<(Stand, String)> {
    let stand = load(place)?;
    let env = env.unwrap_or_else(|| stand.section().default_env.get_ref().clone());
    Ok((stand, env))
}

pub async fn up(place: &Place, args: UpArgs) -> anyhow::Result<()> {
    let (stand, env) = env_or_default(place, args.env)?;
    // Refused before anything is deployed; the daemon takes the lock itself.
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    if let Some(holder) = StateDir::new(&root).running() {
        return Err(crate::statedir::StateError::Running { root, holder }.into());
    }
    let env_plan = plan::resolve(&stand, &env, "")?;
    let forced = parse_target(args.target.as_deref());
    // Before the probe below: not one request to a cluster the environment may not use.
    guard_context("up", &env_plan, forced)?;
    let choice = crate::runtime::choice::choose(&env, env_plan.target, forced, args.no_deploy).await?;
    if let Some(note) = &choice.note {
        eprintln!("{note}");
    }
    let target = Some(choice.target);
    if args.switch {
        switch_away(place, &stand, &env, choice.target).await?;
    }
    if !args.no_deploy {
        deploy(place, &stand, &env, target).await?;
    }
    let config = DaemonConfig {
        root: place.root.clone(),
        file: place.file.clone(),
        env,
        host_triple: host_triple(),
        port: args.port,
        target_dir: std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
        target,
        deploy: !args.no_deploy,
        progress: !args.quiet,
    };
    let (env, quiet) = (config.env.clone(), args.quiet);
    daemon::run(config, shutdown_signal()).await?;
    if target == Some(crate::config::Target::Docker) && !args.no_deploy && !quiet {
        eprintln!("devd: stopped; the stand's containers keep running (`devd down --env {env}` removes them, `--volumes` their data too)");
    }
    Ok(())
}

/// An environment that runs on kubernetes (its own target, or `forced`) deploys and
/// syncs only where its `contexts` allow: the kubeconfig's current context is checked
/// before any request (exit 2 naming the context, the environment and its list).
pub fn guard_context(command: &str, plan: &crate::plan::Plan, forced: Option<crate::config::Target>) -> anyhow::Result<()> {
    if forced.unwrap_or(plan.target) != crate::config::Target::Kubernetes {
        return Ok(());
    }
    let Some(context) = crate::runtime::choice::current_context() else {
        return Ok(());
    };
    plan.allows_context(&context).map_err(|refused| {
        Usage(format!(
            "{refused}. Nothing was sent to it. Switch to an allowed context (`kubectl config use-context <name>`), \
             add this one to the environment's contexts if it is meant for it, or run here without a cluster: \
             `devd {command} --env {} --target docker`",
            plan.env
        ))
        .into()
    })
}

/// `devd context`: whether an environment may deploy to a kube context, by the same
/// rule `devd up` applies (the Tilt extension asks this, Tilt's own allow list being
/// exact names). Refused: exit 2, unless `--json` (the verdict is the answer).
pub fn context(place: &Place, args: ContextArgs) -> anyhow::Result<()> {
    let (stand, env) = env_or_default(place, args.env)?;
    let verdict = stand_cli::context_verdict(&stand, &env, args.context.or_else(crate::runtime::choice::current_context))?;
    if args.json {
        print_json(&verdict)?;
        return Ok(());
    }
    match (&verdict.context, verdict.allowed) {
        (Some(c), true) => {
            print_line(format_args!("env `{env}` may deploy to kube context `{c}` ({})", verdict.contexts.join(", ")))?;
            Ok(())
        }
        _ => Err(Usage(verdict.reason.unwrap_or_default()).into()),
    }
}

/// `devd up` on the kubernetes target: the values files regenerated from stand.toml,
/// then `helm upgrade --install` with the plan's values files (see [`crate::helm`]). Without any Kubernetes config there is
/// nothing to deploy to: devd says so and only builds.
async fn deploy(
    place: &Place,
    stand: &crate::config::Stand,
    env: &str,
    target: Option<crate::config::Target>,
) -> anyhow::Result<()> {
    let plan = plan::resolve(stand, env, &host_triple())?;
    if target.unwrap_or(plan.target) != crate::config::Target::Kubernetes {
        return Ok(());
    }
    if !crate::runtime::kubernetes::config_available().await {
        eprintln!("devd: no Kubernetes config (kubeconfig or in-cluster): not deploying (`devd up --no-deploy` skips this check)");
        return Ok(());
    }
    // The values files are generated from stand.toml: deploy what it says now.
    let (written, removed) = crate::values::write_files(stand, &place.root)?;
    for path in written.iter().chain(&removed) {
        eprintln!("devd: regenerated {path} from {}", place.file.display());
    }
    let helm = crate::helm::program();
    eprintln!("devd: helm {}", crate::helm::upgrade_args(&plan).join(" "));
    let out = crate::helm::upgrade(&helm, &place.root, &plan).await?;
    eprint!("{}", out.stdout);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn build(place: &Place, args: BuildArgs) -> anyhow::Result<()> {
    let (stand, env) = env_or_default(place, args.env)?;
    let plan = plan::resolve(&stand, &env, &host_triple())?;
    let known: BTreeSet<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
    for name in &args.services {
        if !known.contains(name.as_str()) {
            let valid: Vec<&str> = known.iter().copied().collect();
            return Err(Usage(format!("no service `{name}` in env `{env}`; valid: {}", valid.join(", "))).into());
        }
    }
    let targets: Vec<BuildTarget> = plan
        .services
        .iter()
        .filter(|s| args.services.is_empty() || args.services.contains(&s.name))
        .map(|s| BuildTarget::package(s.package.clone()))
        .collect();
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    let state = StateDir::new(&root);
    let mut config = BuildConfig::new(&root, state.path());
    config.target = Some(plan.build.target_triple.clone());
    // As the daemon's builds do, so that both share cargo's units (see devd::replay).
    config.rustc_recorder = crate::build::rustc_recorder();
    let output = Builder::new(config)
        .build(&BuildRequest { targets, cause: BTreeSet::new(), replay: None, static_link: BTreeSet::new() }, None)
        .await
        .map_err(|e| anyhow::anyhow!("{}\n{}", e.message, e.rendered))?;
    if args.json {
        print_json(&output.artifacts)?;
    } else {
        for a in &output.artifacts {
            print_line(format_args!("{}  {}  {} bytes  {} ms  {}", a.package, &a.sha256[..12], a.size, a.build_duration_ms, a.path.display()))?;
        }
    }
    Ok(())
}

pub async fn status(place: &Place, args: StatusArgs) -> anyhow::Result<()> {
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    let client = Client::connect(StateDir::new(&root))?;
    if args.json {
        let status = client.status().await?;
        print_json(&status)?;
        return Ok(());
    }
    let draw = |status: &crate::status::StandStatus, clear: bool| {
        // Clear the screen and go home, then draw (a closed pipe ends the watch).
        let clear = if clear { "\x1b[2J\x1b[H" } else { "" };
        let _ = print(&format!("{clear}{}", render_table(status, chrono::Utc::now())));
    };
    let first = client.status().await?;
    draw(&first, args.watch);
    if !args.watch {
        return Ok(());
    }
    // Events redraw with a fresh status; every second redraws the relative times.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let follower = Client::connect(StateDir::new(&root))?;
    let mut after = first.event_seq;
    tokio::spawn(async move {
        loop {
            // A dropped stream is reopened after the last event seen.
            let mut seen = false;
            let followed = follower
                .follow(after, |_| {
                    seen = true;
                    events_tx.send(Ok(())).is_ok()
                })
                .await;
            match followed {
                Ok(last) if seen || last > after => after = last,
                Ok(_) => {
                    let _ = events_tx.send(Err("devd closed the event stream (it is shutting down)".to_owned()));
                    return;
                }
                Err(e) => {
                    let _ = events_tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    let mut current = first;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // Until the reader of stdout is gone (`devd status --watch | head`), or devd stops.
    while !stdout_closed() {
        tokio::select! {
            _ = tick.tick() => draw(&current, true),
            event = events.recv() => match event {
                Some(Ok(())) => {
                    // Several events at once: one redraw.
                    while let Ok(Ok(())) = events.try_recv() {}
                    current = client.status().await?;
                    draw(&current, true);
                }
                Some(Err(message)) => anyhow::bail!(message),
                None => anyhow::bail!("devd closed the event stream (it is shutting down)"),
            },
        }
    }
    Ok(())
}

/// Asks the running devd to act on a service (the token is read from the state dir).
pub async fn action(place: &Place, args: ActionArgs, action: &str) -> anyhow::Result<()> {
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    let client = Client::connect(StateDir::new(&root))?;
    match client.action(&args.service, action).await {
        // The API names the known services: bad input, exit 2.
        Err(crate::client::ClientError::Status { status, body, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
            return Err(Usage(body).into());
        }
        other => other?,
    }
    print_line(format_args!("{action} of {} requested", args.service))?;
    Ok(())
}

/// `devd logs`: the services' output, from the target the stand runs on.
pub async fn logs(place: &Place, args: LogsArgs) -> anyhow::Result<()> {
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    // The running devd (if any) says which environment and target.
    let running = match Client::connect(StateDir::new(&root)) {
        Ok(client) => client.status().await.ok(),
        Err(_) => None,
    };
    let running = running.filter(|s| args.env.as_deref().is_none_or(|e| e == s.env));
    let (stand, default_env) = env_or_default(place, None)?;
    let env = args.env.or_else(|| running.as_ref().map(|s| s.env.clone())).unwrap_or(default_env);
    let plan = plan::resolve(&stand, &env, "")?;
    for name in &args.services {
        if !plan.services.iter().any(|s| &s.name == name) {
            let valid: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
            return Err(Usage(format!("no service `{name}` in env `{env}`; valid: {}", valid.join(", "))).into());
        }
    }
    let target = match (parse_target(args.target.as_deref()), running.as_ref().map(|s| s.target.as_str())) {
        (Some(target), _) => target,
        (None, Some("docker")) => crate::config::Target::Docker,
        (None, Some(_)) => crate::config::Target::Kubernetes,
        (None, None) => crate::runtime::choice::choose(&env, plan.target, None, false).await?.target,
    };
    let request = crate::logs::LogRequest { services: args.services, follow: args.follow, since: args.since, tail: args.tail };
    let colour = crate::progress::colour_on(&std::io::stdout());
    crate::logs::run(&plan, target, request, colour).await
}

/// How long `devd down` waits for a running devd of the environment to stop.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// `devd down`: removes what `devd up` deployed for the environment. A devd running
/// that environment on this root is stopped first (SIGTERM, then its lock is awaited):
/// it would bring back what is removed. docker: the containers and the network (with
/// `--volumes` the databases' volumes). kubernetes: the release (`helm uninstall` in
/// the environment's namespace; with `--volumes` the databases' claims), after the
/// kube context is checked as `devd up` checks it.
pub async fn down(place: &Place, args: DownArgs) -> anyhow::Result<()> {
    let (stand, env) = env_or_default(place, args.env)?;
    let plan = plan::resolve(&stand, &env, "")?;
    let forced = parse_target(args.target.as_deref());
    guard_context("down", &plan, forced)?;
    let choice = crate::runtime::choice::choose(&env, plan.target, forced, false).await?;
    if let Some(note) = &choice.note {
        // Its cluster did not answer: say so, what is removed here is docker's.
        eprintln!("{note}; `devd down --env {env} --target kubernetes` removes its release when the cluster answers");
    }
    let target = choice.target;
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    stop_daemon(&StateDir::new(&root), &env).await?;
    let lines = match target {
        crate::config::Target::Kubernetes => {
            let client = crate::undeploy::client().await?;
            let removed = crate::undeploy::remove(&client, &place.root, &plan, args.volumes).await?;
            crate::undeploy::describe(&plan, &removed)
        }
        crate::config::Target::Docker => {
            let removed = docker_down(&plan, args.volumes).await?;
            if removed.is_empty() {
                vec![format!("nothing to remove for {}-{}", plan.stand, plan.env)]
            } else {
                removed
            }
        }
    };
    for line in lines {
        print_line(line)?;
    }
    Ok(())
}

/// What `devd down` says it removed of the environment's docker containers, network
/// (and with `volumes` its volumes): one `removed ...` line each, none when nothing was there.
async fn docker_down(plan: &crate::plan::Plan, volumes: bool) -> anyhow::Result<Vec<String>> {
    let target = crate::runtime::docker::DockerTarget::connect(&plan.stand, &plan.env, "").await?;
    Ok(target.down(volumes).await?.into_iter().map(|what| format!("removed {what}")).collect())
}

/// `devd up --switch`: the stand's other environments that can be where `env` goes
/// are removed first, their data kept (see [`crate::undeploy`]).
async fn switch_away(place: &Place, stand: &crate::config::Stand, env: &str, target: crate::config::Target) -> anyhow::Result<()> {
    let plans = stand.env_names().iter().map(|e| plan::resolve(stand, e, "")).collect::<Result<Vec<_>, _>>()?;
    let replaced: Vec<&crate::plan::Plan> = match target {
        crate::config::Target::Kubernetes => {
            // guard_context has let this context through for `env`.
            let context = crate::runtime::choice::current_context().unwrap_or_default();
            crate::undeploy::replaced_by(&plans, env, &context)
        }
        crate::config::Target::Docker => plans.iter().filter(|p| p.env != env).collect(),
    };
    // One client for every environment removed (kubernetes only).
    let client = match target {
        crate::config::Target::Kubernetes if !replaced.is_empty() => Some(crate::undeploy::client().await?),
        _ => None,
    };
    for other in replaced {
        let lines = match &client {
            Some(client) => {
                let removed = crate::undeploy::remove(client, &place.root, other, false).await.with_context(|| {
                    format!("switch to {env}: removing env `{}` (namespace {}) first", other.env, other.namespace)
                })?;
                if !removed.installed {
                    continue; // not on this cluster: nothing to say
                }
                crate::undeploy::describe(other, &removed)
            }
            None => docker_down(other, false)
                .await
                .with_context(|| format!("switch to {env}: removing env `{}`'s containers first", other.env))?,
        };
        for line in lines {
            eprintln!("devd: switch to {env}: {line}");
        }
    }
    Ok(())
}

/// Stops the devd running `env` on this root, if one does, and waits until it is gone.
async fn stop_daemon(state: &StateDir, env: &str) -> anyhow::Result<()> {
    let Some(holder) = state.running() else { return Ok(()) };
    if holder.pid == 0 {
        anyhow::bail!("a devd is starting for this stand; run `devd down` again once it is up (or stop it)");
    }
    if holder.env != env {
        return Ok(()); // it runs another environment, whose containers are not removed
    }
    let started = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(holder.pid).context("pid out of range")?);
    eprintln!("devd: stopping the devd that runs env {env} (pid {})", holder.pid);
    match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => anyhow::bail!("cannot stop devd (pid {}): {e}", holder.pid),
    }
    // Bounded: STOP_DEADLINE in steps of 50 ms.
    while state.running().is_some() {
        if started.elapsed() > STOP_DEADLINE {
            anyhow::bail!(
                "devd (pid {}) did not stop within {} s; stop it (Ctrl-C where it runs) and run `devd down` again",
                holder.pid,
                STOP_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("devd: stopped (pid {}) in {} ms", holder.pid, started.elapsed().as_millis());
    Ok(())
}

pub async fn image_build(place: &Place, args: ImageBuildArgs) -> anyhow::Result<()> {
    use crate::image;
    let (stand, env) = env_or_default(place, args.env)?;
    let plan = plan::resolve(&stand, &env, &host_triple())?;
    let Some(service) = plan.services.iter().find(|s| s.name == args.service) else {
        let valid: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
        return Err(Usage(format!("no service `{}` in env `{env}`; valid: {}", args.service, valid.join(", "))).into());
    };
    let root = place.root.canonicalize().unwrap_or_else(|_| place.root.clone());
    let state = StateDir::new(&root);
    let mut config = BuildConfig::new(&root, state.path());
    config.target = Some(plan.build.target_triple.clone());
    // As the daemon's builds do, so that both share cargo's units (see devd::replay).
    config.rustc_recorder = crate::build::rustc_recorder();
    config.target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
    // cargo's progress to stderr as it comes; Docker's to stdout.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(progress) = rx.recv().await {
            if let crate::build::BuildProgress::Stderr(line) = progress {
                eprintln!("{line}");
            }
        }
    });
    let request = BuildRequest { targets: vec![BuildTarget::package(service.package.clone())], cause: BTreeSet::new(), replay: None, static_link: BTreeSet::new() };
    let output = Builder::new(config).build(&request, Some(tx)).await;
    let _ = printer.await;
    let output = output.map_err(|e| anyhow::anyhow!("{}\n{}", e.message, e.rendered))?;
    let artifact = output.artifacts.first().context("the build produced no artifact")?;
    let shim = image::ensure_shim(&root, &host_triple(), |line| eprintln!("{line}")).await?;
    let docker = image::connect().await?;
    let base_image = image::base_image(&docker, args.base_image).await;
    let spec = image::ImageSpec {
        libs: artifact.libs.clone(),
        service: service.name.clone(),
        binary: artifact.path.clone(),
        binary_name: artifact.bin.clone(),
        binary_sha256: artifact.sha256.clone(),
        shim,
        tag: args.reference.clone(),
        base_image,
        dockerfile: args.dockerfile.or_else(|| image::stand_dockerfile(&root)),
        labels: Default::default(),
    };
    let built = image::build(&docker, &spec, |line| {
        let _ = print_line(line);
    })
    .await?;
    if let Some(previous) = &built.previous {
        image::remove_if_unused(&docker, previous).await;
    }
    print_line(format_args!("built {} ({})", built.tag, built.id))?;
    Ok(())
}
