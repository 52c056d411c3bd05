//! Harness: a real stand-shim process supervising a copy of `shim-test-child`
//! (behaviour set by a JSON trailer), real HTTP on loopback, polling with deadlines.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The shim under test: this package's build, or `STAND_SHIM_TEST_BIN` (e.g. the
/// static release build, to measure it).
pub fn shim_exe() -> String {
    std::env::var("STAND_SHIM_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stand-shim").to_string())
}
pub const TEST_CHILD: &str = env!("CARGO_BIN_EXE_shim-test-child");
pub const TOKEN: &str = "test-token-0123456789";
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The test child's bytes with `behaviour` appended as its trailer: a different binary.
pub fn variant(behaviour: Value) -> Vec<u8> {
    variant_padded(behaviour, 0)
}

/// Like [`variant`], padded with `pad` extra bytes (before the trailer) to make it
/// as large as a real service binary.
pub fn variant_padded(behaviour: Value, pad: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(TEST_CHILD).expect("read shim-test-child");
    bytes.extend((0..pad).map(|i| (i % 251) as u8));
    bytes.extend_from_slice(b"\n#STAND-TEST-CHILD#");
    bytes.extend_from_slice(behaviour.to_string().as_bytes());
    bytes
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` until it returns `Some`, or panics after `deadline` saying `what`.
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub struct Options {
    pub token: Option<&'static str>,
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: Some(TOKEN),
            env: vec![("STAND_SHIM_GRACE_MS", "600".into())],
        }
    }
}

pub struct Shim {
    pub process: Child,
    pub dir: tempfile::TempDir,
    pub binary: PathBuf,
    pub api: String,
    pub service: String,
    pub client: reqwest::Client,
    exited: Option<ExitStatus>,
}

impl Shim {
    /// Starts the shim on a copy of the test child with `behaviour`, waits until the
    /// endpoint answers and the child serves (when it has a `text`).
    pub async fn start(behaviour: Value) -> Shim {
        Shim::start_with(behaviour, Options::default()).await
    }

    pub async fn start_with(behaviour: Value, opts: Options) -> Shim {
        let shim = Shim::start_binary(&variant(behaviour.clone()), opts).await;
        if let Some(text) = behaviour.get("text").and_then(Value::as_str) {
            shim.wait_serving(text).await;
        }
        shim
    }

    /// Starts the shim on `bytes` as the service binary; waits for the endpoint only.
    pub async fn start_binary(bytes: &[u8], opts: Options) -> Shim {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("app");
        write_exe(&binary, bytes);
        let (api_port, svc_port) = (free_port(), free_port());
        let mut cmd = Command::new(shim_exe());
        cmd.arg("--")
            .arg(&binary)
            .env("STAND_SHIM_PORT", api_port.to_string())
            .env("PORT", svc_port.to_string())
            .env_remove("STAND_SHIM_TOKEN")
            .env_remove("STAND_SHIM_BINARY")
            .env("STAND_SHIM_LOG", "debug");
        if let Some(t) = opts.token {
            cmd.env("STAND_SHIM_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let process = cmd.spawn().expect("spawn stand-shim");
        let shim = Shim {
            process,
            dir,
            binary,
            api: format!("http://127.0.0.1:{api_port}"),
            service: format!("http://127.0.0.1:{svc_port}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            exited: None,
        };
        if opts.token.is_some() {
            poll("the shim's endpoint", DEADLINE, || async {
                shim.try_status().await
            })
            .await;
        }
        shim
    }

    pub fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    pub async fn try_status(&self) -> Option<Value> {
        let resp = self
            .client
            .get(format!("{}/v1/status", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        resp.json().await.ok()
    }

    pub async fn status(&self) -> Value {
        self.try_status().await.expect("GET /v1/status")
    }

    pub async fn upload(&self, bytes: Vec<u8>, sha: &str) -> (u16, Value) {
        let resp = self
            .client
            .put(format!("{}/v1/binary", self.api))
            .bearer_auth(TOKEN)
            .header("X-Stand-Sha256", sha)
            .body(bytes)
            .send()
            .await
            .expect("PUT /v1/binary");
        let code = resp.status().as_u16();
        (code, resp.json().await.expect("json body"))
    }

    pub async fn restart(&self) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/restart", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("POST /v1/restart");
        let code = resp.status().as_u16();
        (code, resp.json().await.expect("json body"))
    }

    /// What the child serves, with its pid (from the X-Pid header).
    pub async fn served(&self) -> Option<(String, i32)> {
        let resp = self
            .client
            .get(&self.service)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let pid = resp.headers().get("x-pid")?.to_str().ok()?.parse().ok()?;
        Some((resp.text().await.ok()?, pid))
    }

    pub async fn wait_serving(&self, text: &str) -> i32 {
        poll(
            &format!("the child to serve {text:?}"),
            DEADLINE,
            || async {
                self.served()
                    .await
                    .filter(|(t, _)| t == text)
                    .map(|(_, pid)| pid)
            },
        )
        .await
    }

    /// Waits (bounded) for the shim process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let process = &mut self.process;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = process.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                start.elapsed() < deadline,
                "stand-shim did not exit within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.exited = Some(status);
        status
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signal stand-shim");
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if self.exited.is_some() || matches!(self.process.try_wait(), Ok(Some(_))) {
            return;
        }
        // Let it stop its child; SIGKILL if that takes too long.
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if matches!(self.process.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub fn write_exe(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).expect("write binary");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub fn process_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// (pid, state, ppid) from /proc/<pid>/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Pids of zombie processes whose parent is `parent`.
pub fn zombie_children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some(('Z', ppid)) if ppid == parent))
        .collect()
}
