//! The `devd` command line: [`run`] dispatches a parsed [`stand_cli::Cli`] to the
//! command functions ([`crate::commands`], [`crate::new`]). The clap types, exit codes
//! and error text are in the `stand-cli` crate. Adding a subcommand is one
//! [`stand_cli::Command`] variant and one arm in [`run`].
//!
//! Exit codes (see [`stand_cli::exit_code`]): 0 ok, 1 runtime failure, 2 bad input or usage.

use stand_cli::{Cli, Command, EnvCommand, ImageCommand, Place};

use crate::commands;

/// Run one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let place = Place::find(cli.root.as_deref(), cli.file.as_deref())?;
    match cli.command {
        Command::Check => commands::check(&place),
        Command::Generate => commands::generate(&place),
        Command::New(args) => {
            let added = crate::new::run(&place, args)?;
            commands::print(&crate::new::summary(&added))
        }
        Command::Env(EnvCommand::List(flag)) => commands::env_list(&place, flag.json),
        Command::Plan(args) => commands::plan(&place, args.env.as_deref(), args.json),
        Command::Context(args) => commands::context(&place, args),
        Command::Up(args) => commands::up(&place, args).await,
        Command::Build(args) => commands::build(&place, args).await,
        Command::Status(args) => commands::status(&place, args).await,
        Command::Rebuild(args) => commands::action(&place, args, "rebuild").await,
        Command::Restart(args) => commands::action(&place, args, "restart").await,
        Command::Logs(args) => commands::logs(&place, args).await,
        Command::Down(args) => commands::down(&place, args).await,
        Command::Image(ImageCommand::Build(args)) => commands::image_build(&place, args).await,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_logging_is_off_unless_rust_log_names_it() {
        assert_eq!(log_filter(None), "warn,kube_client=off,kube_runtime=off");
        assert_eq!(log_filter(Some("devd=debug")), "devd=debug,kube_client=off,kube_runtime=off");
        assert_eq!(log_filter(Some("kube_client=debug")), "kube_client=debug,kube_runtime=off");
        for f in [log_filter(None), log_filter(Some("info,kube_runtime=trace"))] {
            assert!(tracing_subscriber::EnvFilter::try_new(&f).is_ok(), "{f}");
        }
    }
}
