//! devd's state directory (`<root>/.stand`): the API token (0600) and the running
//! daemon's address, so that `devd status` and Tilt find it.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const DIR: &str = ".stand";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}")]
    Write { path: PathBuf, #[source] source: std::io::Error },
    #[error("cannot read {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("no devd is running for {root} (no {path}); start one with `devd up --env <env>`")]
    NotRunning { root: PathBuf, path: PathBuf },
    #[error("{path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the operating system gave no random bytes")]
    Random(#[source] getrandom::Error),
    #[error(
        "a devd is already running for {root} ({holder}); one devd per stand root: stop it first (Ctrl-C where it runs, or `kill {pid}`)",
        holder = holder.describe(),
        pid = holder.pid
    )]
    Running { root: PathBuf, holder: Holder },
}

/// `bytes` random bytes from the operating system, hex-encoded: devd's API token, the
/// shim token, generated database passwords.
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)?;
    Ok(hex::encode(buffer))
}

/// The devd that holds a root's daemon lock, as it wrote itself into the lock file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// 0 while the holder has not written itself yet (it is starting).
    pub pid: u32,
    pub env: String,
}

impl Holder {
    fn describe(&self) -> String {
        if self.pid == 0 {
            "starting".to_owned()
        } else {
            format!("pid {}, env {}", self.pid, self.env)
        }
    }
}

/// The running daemon's hold on its root (`.stand/devd.lock`, an exclusive flock held
/// until the process ends, however it ends): at most one `devd up` per stand root, so
/// `.stand/devd.json` and `.stand/token` are always the running one's, and `devd down`
/// can wait for the daemon to be gone.
#[derive(Debug)]
pub struct DaemonLock {
    _file: nix::fcntl::Flock<fs::File>,
}

/// Where a running daemon can be reached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    pub pid: u32,
    pub url: String,
    pub env: String,
    pub started_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    dir: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned(), dir: root.join(DIR) }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    pub fn info_path(&self) -> PathBuf {
        self.dir.join("devd.json")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("devd.lock")
    }

    /// Takes the daemon lock for a devd of `env` (this process), or names the devd that
    /// holds it.
    pub fn lock_daemon(&self, env: &str) -> Result<DaemonLock, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        self.ensure()?;
        let path = self.lock_path();
        let write = |source| StateError::Write { path: path.clone(), source };
        let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(write)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let holder = Holder { pid: std::process::id(), env: env.to_owned() };
                let json = serde_json::to_vec(&holder).unwrap_or_default();
                lock.set_len(0).and_then(|()| lock.write_all(&json)).and_then(|()| lock.sync_all()).map_err(write)?;
                Ok(DaemonLock { _file: lock })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(StateError::Running { root: self.root.clone(), holder: self.running().unwrap_or_default() })
            }
            Err((_, errno)) => Err(write(std::io::Error::from(errno))),
        }
    }

    /// The devd that holds the daemon lock, if one runs.
    pub fn running(&self) -> Option<Holder> {
        use nix::fcntl::{Flock, FlockArg};
        let file = fs::File::open(self.lock_path()).ok()?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_free) => None,
            Err((mut file, _)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Some(serde_json::from_str(&text).unwrap_or_default())
            }
        }
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    fn ensure(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(|source| StateError::Write { path: self.dir.clone(), source })?;
        // The token lives here: keep the directory private too.
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700));
        Ok(())
    }

    /// Writes `contents` to `path` atomically with the given mode.
    fn write_private(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
        self.ensure()?;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let _ = fs::remove_file(&tmp);
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|source| StateError::Write { path: path.to_owned(), source })
    }

    /// A fresh random token, written to `.stand/token` with mode 0600.
    pub fn new_token(&self) -> Result<String, StateError> {
        let token = random_hex(32).map_err(StateError::Random)?;
        self.write_private(&self.token_path(), token.as_bytes(), 0o600)?;
        Ok(token)
    }

    pub fn read_token(&self) -> Result<String, StateError> {
        let path = self.token_path();
        fs::read_to_string(&path)
            .map(|t| t.trim().to_owned())
            .map_err(|source| StateError::Read { path, source })
    }

    pub fn write_info(&self, info: &DaemonInfo) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(info).unwrap_or_default();
        self.write_private(&self.info_path(), &json, 0o600)
    }

    pub fn read_info(&self) -> Result<DaemonInfo, StateError> {
        let path = self.info_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotRunning { root: self.root.clone(), path })
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| StateError::Invalid { path, message: e.to_string() })
    }

    /// Removes the daemon's address (on shutdown), if it is still ours.
    pub fn clear_info(&self, pid: u32) {
        if self.read_info().is_ok_and(|info| info.pid == pid) {
            let _ = fs::remove_file(self.info_path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_private_and_readable_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let token = state.new_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(state.read_token().unwrap(), token);
        let mode = fs::metadata(state.token_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_ne!(state.new_token().unwrap(), token, "every start gets a new token");
    }

    #[test]
    fn one_daemon_lock_per_root_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.running(), None);
        let lock = state.lock_daemon("local").unwrap();
        let holder = Holder { pid: std::process::id(), env: "local".into() };
        assert_eq!(state.running(), Some(holder));
        let err = state.lock_daemon("test").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StateError::Running { .. }), "{message}");
        assert!(message.contains(&format!("pid {}, env local", std::process::id())), "{message}");
        drop(lock);
        assert_eq!(state.running(), None);
        let _again = state.lock_daemon("test").unwrap();
        assert_eq!(state.running().map(|h| h.env), Some("test".to_owned()));
    }

    #[test]
    fn missing_info_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = StateDir::new(dir.path()).read_info().unwrap_err();
        assert!(matches!(err, StateError::NotRunning { .. }), "{err}");
        assert!(err.to_string().contains("devd up"));
    }
}
