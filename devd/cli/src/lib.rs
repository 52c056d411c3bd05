//! devd's command line, apart from what the commands do: the clap types ([`Cli`] and
//! every subcommand's arguments; their doc comments are `devd --help`), where the stand
//! is ([`Place`]), how a failure ends ([`exit_code`], [`render_error`]) and the pure
//! answers of `devd env list`, `devd plan` and `devd context`.
//!
//! No async runtime, no Docker, Kubernetes or HTTP client: devd runs the commands, and
//! the Tilt extension's tests parse the argv Tilt would run and answer its
//! `local('devd ... --json')` calls with this crate and `stand-model` only.
//!
//! Adding a subcommand is one [`Command`] variant here and one arm in devd's `cli::run`.

pub mod args;
pub mod error;
pub mod host;
pub mod output;
pub mod place;

pub use args::{
    parse_target, ActionArgs, BuildArgs, Cli, Command, ContextArgs, DownArgs, EnvCommand, ImageBuildArgs, ImageCommand,
    JsonFlag, LogsArgs, NewArgs, PlanArgs, StatusArgs, UpArgs,
};
pub use error::{exit_code, render_error, Usage};
pub use host::host_triple;
pub use output::{context_verdict, env_summaries, env_table, plan_summary, ContextVerdict, EnvSummary};
pub use place::Place;
