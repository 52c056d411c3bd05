//! The `devd` binary: parse the command line, build the runtime, run, map the outcome to
//! an exit code (0 ok, 1 runtime failure, 2 bad input or usage). Everything else is in
//! the library (`devd::cli`) and the `stand-cli` crate (the clap types, exit codes,
//! error text).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // Run by cargo as its rustc wrapper during devd's own builds (see devd::replay).
    if let Some(code) = devd::replay::wrapper_main() {
        return code;
    }
    let cli = match stand_cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    devd::cli::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(devd::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", stand_cli::render_error(&e));
            ExitCode::from(stand_cli::exit_code(&e))
        }
    }
}
