//! The supervised child: one task owns it and is reached through a [`Handle`]
//! (restart, candidate/promote/discard, release, shutdown). Invariants:
//! - without shared listeners (`Spec::listen_fds == 0`) at most one child at a time:
//!   a new one is spawned only after the old one has been reaped and the rest of its
//!   process group killed (no port still bound by the old instance);
//! - with shared listeners a swap overlaps: a *candidate* starts beside the current
//!   child on the same sockets; it becomes the current one ([`Handle::promote`]) once
//!   it reported ready, and only then is the old one stopped (SIGTERM, it drains), in a
//!   task of its own; a candidate that dies or never gets ready is discarded and the
//!   current child never noticed;
//! - a child that exits on its own is restarted after a capped backoff, unless it
//!   is *held* (on probation after an upload: its exit goes to the uploader, who
//!   rolls back); a candidate is never restarted;
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
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout};

use crate::listen;
use crate::reaper::{Exit, Reaper};
use crate::status::{self, ExitCause, ExitRecord, Shared};
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
    /// Listening sockets the shim holds at fd 3.. for every child (`LISTEN_FDS`).
    pub listen_fds: usize,
}

/// A freshly started child.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub sha256: String,
    pub restarts: u64,
    /// Only for held starts: the child's exit report, if it exits while held.
    pub exit: Option<oneshot::Receiver<ExitRecord>>,
    /// With shared listeners: fires when the child reports `READY=1`.
    pub ready: Option<oneshot::Receiver<()>>,
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
    Candidate {
        sha_hint: Option<String>,
        reply: oneshot::Sender<Result<Started, RestartError>>,
    },
    Promote {
        reply: oneshot::Sender<Option<oneshot::Receiver<()>>>,
    },
    Discard {
        reply: oneshot::Sender<()>,
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
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(cmd(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Stops the current child (if any) and starts a new one from the binary on disk.
    /// `hold`: keep it on probation until [`Handle::release`]; `sha_hint`: the
    /// binary's known hash (saves hashing it again).
    pub async fn restart(
        &self,
        hold: bool,
        sha_hint: Option<String>,
    ) -> Result<Started, RestartError> {
        self.ask(|reply| Cmd::Restart {
            hold,
            sha_hint,
            reply,
        })
        .await
        .unwrap_or(Err(RestartError::ShuttingDown))
    }

    /// Starts a held candidate from the binary on disk beside the current child (on
    /// the same listening sockets); the current child is not touched.
    pub async fn candidate(&self, sha_hint: Option<String>) -> Result<Started, RestartError> {
        self.ask(|reply| Cmd::Candidate { sha_hint, reply })
            .await
            .unwrap_or(Err(RestartError::ShuttingDown))
    }

    /// Makes the candidate the current child and stops the previous one (SIGTERM, it
    /// drains) in the background; the receiver fires once that one is gone. The
    /// candidate stays held until [`Handle::release`].
    pub async fn promote(&self) -> Option<oneshot::Receiver<()>> {
        self.ask(|reply| Cmd::Promote { reply }).await.flatten()
    }

    /// Stops the candidate (if it still runs); the current child keeps running.
    pub async fn discard(&self) {
        let _ = self.ask(|reply| Cmd::Discard { reply }).await;
    }

    /// Ends the probation of a held child: from now on its exits are restarts.
    pub async fn release(&self) {
        let _ = self.tx.send(Cmd::Release).await;
    }

    /// Forwards `signal` to the child, waits for it (SIGKILL after the stop timeout)
    /// and returns the exit code the shim should exit with.
    pub async fn shutdown(&self, signal: Signal) -> i32 {
        self.ask(|reply| Cmd::Shutdown { signal, reply })
            .await
            .unwrap_or(1)
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
        candidate: None,
        retiring: Vec::new(),
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
    sha256: Option<String>,
    exit_rx: oneshot::Receiver<Exit>,
    tail: Arc<Mutex<Tail>>,
    tee_done: Option<oneshot::Receiver<()>>,
    started: Instant,
    started_at: String,
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
    CandidateExited(Exit),
    BackoffDone,
}

type FileId = (u64, u64, u64, i64, i64);

struct Supervisor {
    spec: Spec,
    reaper: Reaper,
    status: Shared,
    state: State,
    /// A new child on probation beside the current one (shared listeners only).
    candidate: Option<Running>,
    /// Previous children being stopped after a promotion.
    retiring: Vec<JoinHandle<()>>,
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

async fn candidate_event(candidate: &mut Option<Running>) -> Event {
    match candidate {
        Some(r) => match (&mut r.exit_rx).await {
            Ok(exit) => Event::CandidateExited(exit),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

impl Supervisor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let _ = self.start(false, None).await;
        loop {
            let event = tokio::select! {
                cmd = rx.recv() => Event::Cmd(cmd),
                ev = next_state_event(&mut self.state) => ev,
                ev = candidate_event(&mut self.candidate) => ev,
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
                Event::Cmd(Some(Cmd::Candidate { sha_hint, reply })) => {
                    let result = if self.shutting_down {
                        Err(RestartError::ShuttingDown)
                    } else {
                        self.start_candidate(sha_hint).await
                    };
                    let _ = reply.send(result);
                }
                Event::Cmd(Some(Cmd::Promote { reply })) => {
                    let _ = reply.send(self.promote());
                }
                Event::Cmd(Some(Cmd::Discard { reply })) => {
                    if let Some(candidate) = self.candidate.take() {
                        stop_child(candidate, Signal::SIGTERM, self.spec.stop_timeout, &self.status).await;
                    }
                    let _ = reply.send(());
                }
                Event::Cmd(Some(Cmd::Release)) => match &mut self.state {
                    State::Running(r) => r.held = None,
                    // A held child died just as its probation ended: restart it.
                    State::Idle if !self.shutting_down => self.schedule_restart(Duration::ZERO),
                    _ => {}
                },
                Event::Cmd(Some(Cmd::Shutdown { signal, reply })) => {
                    self.shutting_down = true;
                    if let Some(candidate) = self.candidate.take() {
                        stop_child(candidate, signal, self.spec.stop_timeout, &self.status).await;
                    }
                    let exit = self.stop_current(signal).await;
                    for retiring in self.retiring.drain(..) {
                        let _ = retiring.await;
                    }
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
                Event::CandidateExited(exit) => self.on_candidate_exit(exit).await,
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
        let record = reaped(&mut r, exit, ExitCause::Exited).await;
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
        let uptime = r.started.elapsed();
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

    /// The candidate exited before it was promoted: the uploader hears of it; the
    /// current child runs on.
    async fn on_candidate_exit(&mut self, exit: Exit) {
        let Some(mut r) = self.candidate.take() else {
            return;
        };
        let record = reaped(&mut r, exit, ExitCause::Exited).await;
        tracing::warn!(pid = r.pid, %exit, uptime_ms = record.uptime_ms, "new child exited before it was ready");
        self.status.update(|s| s.last_exit = Some(record.clone()));
        if let Some(held) = r.held.take() {
            let _ = held.send(record);
        }
    }

    /// The candidate becomes the current child; the previous one is stopped in a task
    /// of its own. Returns what fires once the previous one is gone.
    fn promote(&mut self) -> Option<oneshot::Receiver<()>> {
        let candidate = self.candidate.take()?;
        self.status.update(|s| {
            s.pid = Some(candidate.pid);
            s.sha256 = candidate.sha256.clone();
            s.started_at = Some(candidate.started_at.clone());
        });
        tracing::info!(pid = candidate.pid, "new child is ready: it is now the current one");
        let previous = std::mem::replace(&mut self.state, State::Running(candidate));
        self.backoff = BACKOFF_MIN;
        let (gone_tx, gone_rx) = oneshot::channel();
        match previous {
            State::Running(old) => {
                let status = self.status.clone();
                let stop_timeout = self.spec.stop_timeout;
                self.retiring.retain(|t| !t.is_finished());
                self.retiring.push(tokio::spawn(async move {
                    stop_child(old, Signal::SIGTERM, stop_timeout, &status).await;
                    let _ = gone_tx.send(());
                }));
            }
            State::Backoff(_) | State::Idle => {
                let _ = gone_tx.send(());
            }
        }
        Some(gone_rx)
    }

    /// Stops the running child (signal, then SIGKILL after the stop timeout), kills
    /// what is left of its process group and waits until it is reaped. Cancels a
    /// pending backoff restart.
    async fn stop_current(&mut self, signal: Signal) -> Option<Exit> {
        let State::Running(r) = std::mem::replace(&mut self.state, State::Idle) else {
            return None;
        };
        let exit = stop_child(r, signal, self.spec.stop_timeout, &self.status).await;
        self.status.update(|s| s.pid = None);
        exit
    }

    /// Starts the current child (none may be running).
    async fn start(
        &mut self,
        hold: bool,
        sha_hint: Option<String>,
    ) -> Result<Started, RestartError> {
        match self.spawn_child(hold, sha_hint).await {
            Ok((running, started)) => {
                self.status.update(|s| {
                    s.pid = Some(running.pid);
                    s.sha256 = running.sha256.clone();
                    s.started_at = Some(running.started_at.clone());
                });
                self.state = State::Running(running);
                Ok(started)
            }
            Err((record, sha256)) => {
                self.status.update(|s| {
                    s.pid = None;
                    s.sha256 = sha256;
                    s.last_exit = Some((*record).clone());
                });
                if hold {
                    self.state = State::Idle;
                } else {
                    let delay = self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    self.schedule_restart(delay);
                }
                Err(RestartError::Spawn(record))
            }
        }
    }

    /// Starts a held candidate beside the current child.
    async fn start_candidate(&mut self, sha_hint: Option<String>) -> Result<Started, RestartError> {
        if let Some(stale) = self.candidate.take() {
            stop_child(stale, Signal::SIGTERM, self.spec.stop_timeout, &self.status).await;
        }
        match self.spawn_child(true, sha_hint).await {
            Ok((running, started)) => {
                self.candidate = Some(running);
                Ok(started)
            }
            Err((record, _)) => {
                self.status.update(|s| s.last_exit = Some((*record).clone()));
                Err(RestartError::Spawn(record))
            }
        }
    }

    /// Spawns a child from the binary on disk; touches neither `state` nor the status'
    /// pid (the callers decide what the child is).
    async fn spawn_child(
        &mut self,
        hold: bool,
        sha_hint: Option<String>,
    ) -> Result<(Running, Started), (Box<ExitRecord>, Option<String>)> {
        let sha256 = self.binary_sha256(sha_hint).await;
        let shared = self.spec.listen_fds > 0;
        let (mut cmd, ready) = if shared {
            // Through the exec mode, which sets LISTEN_PID to the child's own pid.
            let mut cmd = Command::new(listen::self_exe());
            cmd.arg(listen::EXEC_FLAG)
                .arg(&self.spec.binary)
                .args(&self.spec.args)
                .env("LISTEN_FDS", self.spec.listen_fds.to_string())
                .env_remove("LISTEN_PID")
                .env_remove("LISTEN_FDNAMES");
            // Readiness matters for a held child (a candidate): the others start alone.
            let ready = match hold.then(listen::ready_socket) {
                Some(Ok((name, rx))) => {
                    cmd.env("NOTIFY_SOCKET", name);
                    Some(rx)
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot create the readiness socket");
                    cmd.env_remove("NOTIFY_SOCKET");
                    None
                }
                None => {
                    cmd.env_remove("NOTIFY_SOCKET");
                    None
                }
            };
            (cmd, ready)
        } else {
            let mut cmd = Command::new(&self.spec.binary);
            cmd.args(&self.spec.args)
                .env_remove("LISTEN_FDS")
                .env_remove("LISTEN_PID")
                .env_remove("LISTEN_FDNAMES")
                .env_remove("NOTIFY_SOCKET");
            (cmd, None)
        };
        cmd.env_remove(stand_shim_protocol::TOKEN_ENV)
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
                    cause: ExitCause::SpawnFailed,
                    at: status::now(),
                    uptime_ms: 0,
                    stderr_tail: Vec::new(),
                };
                tracing::error!("{}", record.description);
                return Err((Box::new(record), sha256));
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
        tracing::info!(
            pid,
            restarts,
            sha256 = sha256.as_deref().unwrap_or("?"),
            "child started"
        );
        let running = Running {
            pid,
            sha256: sha256.clone(),
            exit_rx,
            tail,
            tee_done,
            started: Instant::now(),
            started_at: status::now(),
            held: held_tx,
        };
        let started = Started {
            pid,
            sha256: sha256.unwrap_or_default(),
            restarts,
            exit: held_rx,
            ready,
        };
        Ok((running, started))
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

/// After the reap of a child that exited: its group killed, its report.
async fn reaped(r: &mut Running, exit: Exit, cause: ExitCause) -> ExitRecord {
    kill_group(r.pid);
    let tail = drain_tail(r).await;
    status::exit_record(r.pid, exit, cause, r.started.elapsed().as_millis() as u64, tail)
}

/// Stops a child: `signal`, SIGKILL after `stop_timeout`, the rest of its process
/// group killed, reaped; records the exit as `last_exit` (cause `stopped`).
async fn stop_child(
    mut r: Running,
    signal: Signal,
    stop_timeout: Duration,
    status: &Shared,
) -> Option<Exit> {
    let pid = Pid::from_raw(r.pid);
    let _ = kill(pid, signal);
    let exit = match timeout(stop_timeout, &mut r.exit_rx).await {
        Ok(result) => result.ok(),
        Err(_) => {
            tracing::warn!(
                pid = r.pid,
                timeout_ms = stop_timeout.as_millis() as u64,
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
    match exit {
        Some(exit) => {
            let record = reaped(&mut r, exit, ExitCause::Stopped).await;
            tracing::info!(pid = r.pid, %exit, "child stopped");
            status.update(|s| s.last_exit = Some(record));
        }
        None => kill_group(r.pid),
    }
    exit
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
