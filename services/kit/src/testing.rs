//! Test harness for services: fresh databases on the shared PostgreSQL server, private
//! PostgreSQL clusters a test may stop and start, and service processes.
//!
//! Everything here fails loudly when PostgreSQL is missing: the suite never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where the shared test server is, as provisioned by `scripts/setup`.
pub fn admin_url() -> String {
    std::env::var("STAND_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://stand:stand@127.0.0.1:5432/postgres".to_owned())
}

/// Polls `probe` until it returns `Some`, at most until `timeout` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
        panic!("cannot reach the test PostgreSQL server ({e}); run `bash scripts/setup` first")
    });
    tokio::spawn(connection);
    client
}

/// A database of its own for one test, created on the shared server, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn create() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("t_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos);
        let admin = admin_url();
        admin_client(&admin).await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("STAND_TEST_PG_URL must end in /<database>: {admin}"),
        };
        Self { name, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs outside any runtime: use a short-lived one on its own thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

/// Directory of the PostgreSQL 15 server binaries.
fn pg_bin(tool: &str) -> PathBuf {
    let dir = std::env::var("STAND_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned());
    let path = Path::new(&dir).join(tool);
    assert!(path.exists(), "{} not found; run `bash scripts/setup` (installs PostgreSQL 15)", path.display());
    path
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (the server refuses root).
fn pg_command(tool: &str) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(pg_bin(tool));
        cmd
    } else {
        Command::new(pg_bin(tool))
    }
}

/// A PostgreSQL 15 cluster of the test's own, on a free loopback port, that the test
/// may stop and start (the shared server must not be disturbed).
pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stand-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if nix::unistd::geteuid().is_root() {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(&dir).status().expect("chown");
            assert!(status.success(), "chown postgres {}", dir.display());
        }
        let out = pg_command("initdb")
            .args(["-A", "trust", "-U", "stand", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Self { dir, port: free_port() };
        pg.resume();
        pg
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://stand@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let opts = format!("-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off", self.port, self.dir.display());
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-l"])
            .arg(self.dir.join("log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server the way an outage would look to clients (fast shutdown).
    pub fn halt(&self) {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A service binary running as a child process on a loopback port.
pub struct ServiceProcess {
    child: Child,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (plus PORT and BIND_ADDRESS) and waits for `/health`.
    pub async fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("stand-svc-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .env_remove("DATABASE_URL")
            .env_remove("DB_HOST")
            .env("PORT", port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary}: {e}"));
        let service = Self { child, port, base: format!("http://127.0.0.1:{port}"), log };
        let http = reqwest::Client::new();
        let url = service.url("/health");
        wait_for("the service to answer /health", Duration::from_secs(20), || {
            let http = http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        service
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_for("the service to exit", timeout, || {
            let exited = child.try_wait().expect("wait for child");
            async move { exited }
        })
        .await
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub async fn terminate(mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.sigterm();
        let status = self.wait_exit(timeout).await;
        (status, started.elapsed())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
