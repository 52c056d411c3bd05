//! The restart wrapper of the bench's path (d), Tilt's recipe for compiled languages
//! (bench/README.md): what `docker_build_with_restart` puts in front of the entrypoint
//! (tilt-restart-wrapper, entr underneath). It runs the command, watches a trigger file
//! (inotify, through notify), and on every change of it stops the command (SIGTERM,
//! then waits for it) and starts it again. Not part of devd: only the bench image runs it.
//!
//! Usage: restart_wrapper <trigger file> -- <command> [args...]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use notify::{RecursiveMode, Watcher as _};

fn main() {
    if let Err(e) = run() {
        eprintln!("restart_wrapper: {e}");
        std::process::exit(2);
    }
}

fn start(command: &[String]) -> Result<Child, String> {
    Command::new(&command[0]).args(&command[1..]).spawn().map_err(|e| format!("cannot start {}: {e}", command[0]))
}

fn stop(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let _ = child.wait();
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (trigger, command) = match args.split_first() {
        Some((trigger, rest)) if rest.first().map(String::as_str) == Some("--") && rest.len() > 1 => (PathBuf::from(trigger), rest[1..].to_vec()),
        _ => return Err("usage: restart_wrapper <trigger file> -- <command> [args...]".into()),
    };
    let dir = trigger.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let (tx, rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })
    .map_err(|e| e.to_string())?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let mut child = start(&command)?;
    loop {
        // A child that exits by itself is started again on the next trigger, as entr does.
        let event = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("the watcher stopped".into()),
        };
        let touched = event.paths.iter().any(|p| p.file_name() == trigger.file_name());
        let written = matches!(event.kind, notify::EventKind::Create(_) | notify::EventKind::Modify(_));
        if touched && written {
            stop(&mut child);
            child = start(&command)?;
        }
    }
}
