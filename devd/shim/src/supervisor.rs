//! The supervised child: one task owns it and is reached through a [`Handle`]
//! (restart, release, shutdown). Invariants:
//! - at most one child at a time: a new one is spawned only after the old one has
//!   been reaped and the rest of its process group killed (no duplicate process, no
//!   port still bound by the old instance);
//! - a child that exits on its own is restarted after a capped backoff, unless it
//!   is *held* (on probation after an upload: its exit goes to the uploader, who
//!   rolls back);
//! - stderr is inherited through a tee: every byte goes on to our stderr, the last
//!   lines are kept for exit and rollback reports.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout};

use crate::reaper::{Exit, Reaper};
use crate::status::{self, ExitRecord, Shared};
use crate::upload;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A child that ran this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// After SIGKILL, how long to wait for the reap before giving up on the pid.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// After an exit, how long to wait for the stderr pipe to drain.
const TEE_DRAIN: Duration = Duration::from_millis(200);
const TAIL_LINES: usize = 20;
const TAIL_LINE_MAX: usize = 400;

pub struct Spec {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub stop_timeout: Duration,
}

/// A freshly started child.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub sha256: String,
    pub restarts: u64,
    /// Only for held starts: the child's exit report, if it exits while held.
    pub exit: Option<oneshot::Receiver<ExitRecord>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("the shim is shutting down")]
    ShuttingDown,
    #[error("{}", .0.description)]
    Spawn(Box<ExitRecord>),
}

enum Cmd {
    Restart {
        hold: bool,
        sha_hint: Option<String>,
        reply: oneshot::Sender<Result<Started, RestartError>>,
    },
    Release,
    Shutdown {
        signal: Signal,
        reply: oneshot::Sender<i32>,
    },
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Cmd>,
}

impl Handle {
    /// Stops the current child (if any) and starts a new one from the binary on disk.
    /// `hold`: keep it on probation until [`Handle::release`]; `sha_hint`: the
    /// binary's known hash (saves hashing it again).
    pub async fn restart(
        &self,
        hold: bool,
        sha_hint: Option<String>,
    ) -> Result<Started, RestartError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Restart {
                hold,
                sha_hint,
                reply,
            })
            .await
            .map_err(|_| RestartError::ShuttingDown)?;
        rx.await.map_err(|_| RestartError::ShuttingDown)?
    }

    /// Ends the probation of a held child: from now on its exits are restarts.
    pub async fn release(&self) {
        let _ = self.tx.send(Cmd::Release).await;
    }

    /// Forwards `signal` to the child, waits for it (SIGKILL after the stop timeout)
    /// and returns the exit code the shim should exit with.
    pub async fn shutdown(&self, signal: Signal) -> i32 {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown { signal, reply }).await.is_err() {
            return 1;
        }
        rx.await.unwrap_or(1)
    }
}

/// Starts the supervising task; it spawns the first child at once.
pub fn spawn(spec: Spec, reaper: Reaper, status: Shared) -> Handle {
    let (tx, rx) = mpsc::channel(16);
    let sup = Supervisor {
        spec,
        reaper,
        status,
        state: State::Idle,
        backoff: BACKOFF_MIN,
        started_once: false,
        shutting_down: false,
        hash_cache: None,
    };
    tokio::spawn(sup.run(rx));
    Handle { tx }
}

struct Running {
    pid: i32,
    exit_rx: oneshot::Receiver<Exit>,
    tail: Arc<Mutex<Tail>>,
    tee_done: Option<oneshot::Receiver<()>>,
    started: Instant,
    held: Option<oneshot::Sender<ExitRecord>>,
}

enum State {
    Running(Running),
    Backoff(tokio::time::Instant),
    /// No child and none scheduled: shutting down, or a held child died.
    Idle,
}

enum Event {
    Cmd(Option<Cmd>),
    Exited(Exit),
    BackoffDone,
}

type FileId = (u64, u64, u64, i64, i64);

struct Supervisor {
    spec: Spec,
    reaper: Reaper,
    status: Shared,
    state: State,
    backoff: Duration,
    started_once: bool,
    shutting_down: bool,
    hash_cache: Option<(FileId, String)>,
}

async fn next_state_event(state: &mut State) -> Event {
    match state {
        State::Running(r) => match (&mut r.exit_rx).await {
            Ok(exit) => Event::Exited(exit),
            // The reaper never drops a registered sender; if it did, wait for orders.
            Err(_) => std::future::pending().await,
        },
        State::Backoff(until) => {
            sleep_until(*until).await;
            Event::BackoffDone
        }
        State::Idle => std::future::pending().await,
    }
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let _ = self.start(false, None).await;
        loop {
            let event = tokio::select! {
                cmd = rx.recv() => Event::Cmd(cmd),
                ev = next_state_event(&mut self.state) => ev,
            };
            match event {
                Event::Cmd(None) => return,
                Event::Cmd(Some(Cmd::Restart {
                    hold,
                    sha_hint,
                    reply,
                })) => {
                    let result = if self.shutting_down {
                        Err(RestartError::ShuttingDown)
                    } else {
                        self.stop_current(Signal::SIGTERM).await;
                        self.backoff = BACKOFF_MIN;
                        self.start(hold, sha_hint).await
                    };
                    let _ = reply.send(result);
                }
                Event::Cmd(Some(Cmd::Release)) => match &mut self.state {
                    State::Running(r) => r.held = None,
                    // A held child died just as its probation ended: restart it.
                    State::Idle if !self.shutting_down => self.schedule_restart(Duration::ZERO),
                    _ => {}
                },
                Event::Cmd(Some(Cmd::Shutdown { signal, reply })) => {
                    self.shutting_down = true;
                    let exit = self.stop_current(signal).await;
                    let code = match exit {
                        Some(e) => e.as_code(),
                        None => self
                            .status
                            .get()
                            .last_exit
                            .and_then(|e| e.code.or(e.signal.map(|s| 128 + s)))
                            .unwrap_or(0),
                    };
                    let _ = reply.send(code);
                }
                Event::Exited(exit) => self.on_exit(exit).await,
                Event::BackoffDone => {
                    self.state = State::Idle;
                    let _ = self.start(false, None).await;
                }
            }
        }
    }

    fn schedule_restart(&mut self, delay: Duration) {
        self.state = State::Backoff(tokio::time::Instant::now() + delay);
    }

    /// The child exited on its own.
    async fn on_exit(&mut self, exit: Exit) {
        let State::Running(mut r) = std::mem::replace(&mut self.state, State::Idle) else {
            return;
        };
        kill_group(r.pid);
        let tail = drain_tail(&mut r).await;
        let uptime = r.started.elapsed();
        let record = ExitRecord::new(r.pid, exit, "exited", uptime.as_millis() as u64, tail);
        tracing::warn!(pid = r.pid, %exit, uptime_ms = record.uptime_ms, "child exited");
        self.status.update(|s| {
            s.pid = None;
            s.last_exit = Some(record.clone());
        });
        if let Some(held) = r.held.take() {
            if held.send(record).is_ok() {
                return; // the uploader decides (rollback)
            }
        }
        if self.shutting_down {
            return;
        }
        if uptime >= STABLE_AFTER {
            self.backoff = BACKOFF_MIN;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "restarting the child after backoff"
        );
        self.schedule_restart(delay);
    }

    /// Stops the running child (signal, then SIGKILL after the stop timeout), kills
    /// what is left of its process group and waits until it is reaped. Cancels a
    /// pending backoff restart.
    async fn stop_current(&mut self, signal: Signal) -> Option<Exit> {
        let State::Running(mut r) = std::mem::replace(&mut self.state, State::Idle) else {
            return None;
        };
        let pid = Pid::from_raw(r.pid);
        let _ = kill(pid, signal);
        let exit = match timeout(self.spec.stop_timeout, &mut r.exit_rx).await {
            Ok(result) => result.ok(),
            Err(_) => {
                tracing::warn!(
                    pid = r.pid,
                    timeout_ms = self.spec.stop_timeout.as_millis() as u64,
                    "child did not exit after {signal}; sending SIGKILL"
                );
                let _ = kill(pid, Signal::SIGKILL);
                match timeout(KILL_WAIT, &mut r.exit_rx).await {
                    Ok(result) => result.ok(),
                    Err(_) => {
                        tracing::error!(pid = r.pid, "child not reaped after SIGKILL");
                        None
                    }
                }
            }
        };
        kill_group(r.pid);
        let tail = drain_tail(&mut r).await;
        if let Some(exit) = exit {
            let record = ExitRecord::new(
                r.pid,
                exit,
                "stopped",
                r.started.elapsed().as_millis() as u64,
                tail,
            );
            tracing::info!(pid = r.pid, %exit, "child stopped");
            self.status.update(|s| s.last_exit = Some(record));
        }
        self.status.update(|s| s.pid = None);
        exit
    }

    async fn start(
        &mut self,
        hold: bool,
        sha_hint: Option<String>,
    ) -> Result<Started, RestartError> {
        let sha256 = self.binary_sha256(sha_hint).await;
        let mut cmd = Command::new(&self.spec.binary);
        cmd.args(&self.spec.args)
            .env_remove("STAND_SHIM_TOKEN")
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            // Its own process group: leftovers of an old instance can be killed as a group.
            .process_group(0);
        let restarts = if self.started_once {
            self.status.update(|s| {
                s.restarts += 1;
                s.restarts
            })
        } else {
            0
        };
        self.started_once = true;
        let (mut child, exit_rx) = match self.reaper.spawn(&mut cmd) {
            Ok(spawned) => spawned,
            Err(e) => {
                let record = ExitRecord {
                    pid: 0,
                    code: None,
                    signal: None,
                    description: format!("failed to start {}: {e}", self.spec.binary.display()),
                    cause: "spawn_failed",
                    at: status::now(),
                    uptime_ms: 0,
                    stderr_tail: Vec::new(),
                };
                tracing::error!("{}", record.description);
                self.status.update(|s| {
                    s.pid = None;
                    s.sha256 = sha256.clone();
                    s.last_exit = Some(record.clone());
                });
                if hold {
                    self.state = State::Idle;
                } else {
                    let delay = self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    self.schedule_restart(delay);
                }
                return Err(RestartError::Spawn(Box::new(record)));
            }
        };
        let pid = child.id() as i32;
        let tail = Arc::new(Mutex::new(Tail::default()));
        let (done_tx, done_rx) = oneshot::channel();
        let tee_done = match child.stderr.take() {
            Some(stderr) => {
                let tail = tail.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("stderr-tee".into())
                        .spawn(move || {
                            tee(stderr, &tail);
                            let _ = done_tx.send(());
                        });
                spawned.ok().map(|_| done_rx)
            }
            None => None,
        };
        drop(child); // never waited on through std: the reaper owns the exit
        let (held_tx, held_rx) = if hold {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.state = State::Running(Running {
            pid,
            exit_rx,
            tail,
            tee_done,
            started: Instant::now(),
            held: held_tx,
        });
        let started_at = status::now();
        self.status.update(|s| {
            s.pid = Some(pid);
            s.sha256 = sha256.clone();
            s.started_at = Some(started_at);
        });
        tracing::info!(
            pid,
            restarts,
            sha256 = sha256.as_deref().unwrap_or("?"),
            "child started"
        );
        Ok(Started {
            pid,
            sha256: sha256.unwrap_or_default(),
            restarts,
            exit: held_rx,
        })
    }

    /// sha256 of the binary on disk, cached by file identity.
    async fn binary_sha256(&mut self, hint: Option<String>) -> Option<String> {
        let path = self.spec.binary.clone();
        let id = file_id(&path).ok()?;
        if let Some(hint) = hint {
            self.hash_cache = Some((id, hint.clone()));
            return Some(hint);
        }
        if let Some((cached_id, sha)) = &self.hash_cache {
            if *cached_id == id {
                return Some(sha.clone());
            }
        }
        let sha = tokio::task::spawn_blocking(move || upload::hash_file(&path))
            .await
            .ok()?
            .ok()?;
        self.hash_cache = Some((id, sha.clone()));
        Some(sha)
    }
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Kills whatever is left in the child's process group (pgid = the child's pid).
fn kill_group(pgid: i32) {
    // ESRCH (nothing left) is the usual answer.
    if killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
        tracing::info!(pgid, "killed leftover processes of the old child");
    }
}

async fn drain_tail(r: &mut Running) -> Vec<String> {
    if let Some(done) = r.tee_done.take() {
        let _ = timeout(TEE_DRAIN, done).await;
    }
    r.tail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .lines()
}

fn tee(mut from: impl Read, tail: &Mutex<Tail>) {
    let mut buf = [0u8; 8192];
    let mut out = std::io::stderr();
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]);
                tail.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The last lines of a byte stream.
#[derive(Default)]
pub struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    pub fn push(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            self.take_partial(&bytes[..nl]);
            bytes = &bytes[nl + 1..];
        }
        let room = TAIL_LINE_MAX.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn take_partial(&mut self, rest: &[u8]) {
        let room = TAIL_LINE_MAX.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        if out.len() > TAIL_LINES {
            out.drain(..out.len() - TAIL_LINES);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_across_chunks() {
        let mut t = Tail::default();
        t.push(b"one\ntw");
        t.push(b"o\r\nthree");
        assert_eq!(t.lines(), vec!["one", "two", "three"]);
        for i in 0..100 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let lines = t.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last().map(String::as_str), Some("line 99"));
        t.push(&[b'x'; 10_000]);
        t.push(b"\n");
        assert_eq!(t.lines().last().map(String::len), Some(TAIL_LINE_MAX));
    }
}
