//! Command line and environment -> [`Config`]. Pure: no IO except the PATH lookup
//! in [`resolve_binary`].

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use stand_shim_protocol::DEFAULT_PORT;
use stand_shim_protocol::{PORT_ENV, TOKEN_ENV};
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_GRACE: Duration = Duration::from_millis(1000);
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

pub const USAGE: &str =
    "usage: stand-shim [--] <binary> [args...]   (or STAND_SHIM_BINARY=<binary> stand-shim)
env: STAND_SHIM_TOKEN (required for the HTTP endpoint), STAND_SHIM_PORT (7070),
     STAND_SHIM_STOP_TIMEOUT (seconds, 10), STAND_SHIM_GRACE_MS (1000),
     STAND_SHIM_LISTEN (addresses the shim listens on for the service; default
     ${BIND_ADDRESS:-0.0.0.0}:$PORT when PORT is set; `off`: none),
     STAND_SHIM_READY_TIMEOUT (seconds, 30)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the service binary (replaced by uploads).
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub port: u16,
    /// `None`: no HTTP endpoint (the child still runs).
    pub token: Option<String>,
    /// SIGTERM -> SIGKILL escalation when stopping the child.
    pub stop_timeout: Duration,
    /// A new binary that exits within this window after an upload is rolled back
    /// (the window ends early when a newer upload arrives: [`crate::api::Newer`]).
    pub grace: Duration,
    /// The service's listening sockets, owned by the shim and passed to every child
    /// (fd 3.., `LISTEN_FDS`). Empty: the child binds its own (swaps stop, then start).
    pub listen: Vec<SocketAddr>,
    /// With `listen`: how long a new child may take to report `READY=1`.
    pub ready_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no binary given: pass `stand-shim [--] <binary> [args...]` or set STAND_SHIM_BINARY")]
    NoBinary,
    #[error("{name}={value:?} is not valid: {expected}")]
    BadEnv {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("binary {0:?} not found on PATH")]
    NotOnPath(String),
}

/// `args` are the process arguments without argv[0]; `env` looks a variable up.
/// The binary path is returned as given (see [`resolve_binary`]).
pub fn parse(
    args: &[OsString],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let args = match args.first() {
        Some(first) if first == OsStr::new("--") => &args[1..],
        _ => args,
    };
    let (binary, rest) = match args.split_first() {
        Some((b, rest)) => (PathBuf::from(b), rest.to_vec()),
        None => match env("STAND_SHIM_BINARY").filter(|b| !b.is_empty()) {
            Some(b) => (PathBuf::from(b), Vec::new()),
            None => return Err(ConfigError::NoBinary),
        },
    };
    let port = match env(PORT_ENV).filter(|v| !v.is_empty()) {
        None => DEFAULT_PORT,
        Some(v) => v
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or(ConfigError::BadEnv {
                name: PORT_ENV,
                value: v,
                expected: "a port number 1-65535",
            })?,
    };
    let stop_timeout = match env("STAND_SHIM_STOP_TIMEOUT").filter(|v| !v.is_empty()) {
        None => DEFAULT_STOP_TIMEOUT,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or(ConfigError::BadEnv {
                name: "STAND_SHIM_STOP_TIMEOUT",
                value: v,
                expected: "seconds between 0 and 3600 (fractions allowed)",
            })?,
    };
    let grace = match env("STAND_SHIM_GRACE_MS").filter(|v| !v.is_empty()) {
        None => DEFAULT_GRACE,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= 600_000)
            .map(Duration::from_millis)
            .ok_or(ConfigError::BadEnv {
                name: "STAND_SHIM_GRACE_MS",
                value: v,
                expected: "milliseconds between 0 and 600000",
            })?,
    };
    let token = env(TOKEN_ENV).filter(|t| !t.trim().is_empty());
    let listen = listen_addrs(&env)?;
    let ready_timeout = match env("STAND_SHIM_READY_TIMEOUT").filter(|v| !v.is_empty()) {
        None => DEFAULT_READY_TIMEOUT,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or(ConfigError::BadEnv {
                name: "STAND_SHIM_READY_TIMEOUT",
                value: v,
                expected: "seconds between 0 and 3600 (fractions allowed)",
            })?,
    };
    Ok(Config {
        binary,
        args: rest,
        port,
        token,
        stop_timeout,
        grace,
        listen,
        ready_timeout,
    })
}

/// `STAND_SHIM_LISTEN`: `off`, or a comma-separated list of `port`, `ip:port`
/// (`[v6]:port`); unset: the service's own `BIND_ADDRESS` (default 0.0.0.0) and `PORT`.
fn listen_addrs(env: &impl Fn(&str) -> Option<String>) -> Result<Vec<SocketAddr>, ConfigError> {
    let bad = |value: String| ConfigError::BadEnv {
        name: "STAND_SHIM_LISTEN",
        value,
        expected: "`off`, or ports / ip:port addresses separated by commas",
    };
    let default_ip = env("BIND_ADDRESS")
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let Some(spec) = env("STAND_SHIM_LISTEN").map(|v| v.trim().to_owned()) else {
        return Ok(env("PORT")
            .and_then(|p| p.trim().parse::<u16>().ok())
            .filter(|p| *p != 0)
            .map(|port| vec![SocketAddr::new(default_ip, port)])
            .unwrap_or_default());
    };
    if spec.is_empty() || spec.eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let addr = match part.parse::<u16>() {
            Ok(port) if port != 0 => SocketAddr::new(default_ip, port),
            Ok(_) => return Err(bad(spec.clone())),
            Err(_) => part.parse::<SocketAddr>().map_err(|_| bad(spec.clone()))?,
        };
        if out.contains(&addr) {
            return Err(bad(spec.clone()));
        }
        out.push(addr);
    }
    Ok(out)
}

/// Makes the binary path absolute: relative paths with a `/` against `cwd`, bare
/// names through `path_var` (PATH). The file itself may be replaced later, so it is
/// not canonicalized.
pub fn resolve_binary(
    binary: &Path,
    cwd: &Path,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, ConfigError> {
    if binary.is_absolute() {
        return Ok(binary.to_path_buf());
    }
    if binary.components().count() > 1 || binary.to_string_lossy().contains('/') {
        return Ok(cwd.join(binary));
    }
    let dirs = path_var.map(std::env::split_paths).into_iter().flatten();
    for dir in dirs {
        let candidate = if dir.is_absolute() {
            dir.join(binary)
        } else {
            cwd.join(dir).join(binary)
        };
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(ConfigError::NotOnPath(
        binary.to_string_lossy().into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&args, |k| env.get(k).cloned())
    }

    #[test]
    fn args_and_defaults() {
        let c = check(
            &["--", "/app/svc", "--flag", "x"],
            &[("STAND_SHIM_TOKEN", "t")],
        )
        .expect("ok");
        assert_eq!(c.binary, PathBuf::from("/app/svc"));
        assert_eq!(c.args, vec![OsString::from("--flag"), OsString::from("x")]);
        assert_eq!(c.port, 7070);
        assert_eq!(c.token.as_deref(), Some("t"));
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.grace, Duration::from_millis(1000));
        assert_eq!(c.listen, Vec::<SocketAddr>::new(), "no PORT: nothing to listen on");
        assert_eq!(c.ready_timeout, Duration::from_secs(30));
        // Without `--` the first argument is the binary too.
        assert_eq!(check(&["/a"], &[]).expect("ok").binary, PathBuf::from("/a"));
    }

    #[test]
    fn env_binary_and_settings() {
        let c = check(
            &[],
            &[
                ("STAND_SHIM_BINARY", "/usr/local/bin/service1"),
                ("STAND_SHIM_PORT", "7171"),
                ("STAND_SHIM_STOP_TIMEOUT", "0.5"),
                ("STAND_SHIM_GRACE_MS", "250"),
                ("STAND_SHIM_TOKEN", "  "),
            ],
        )
        .expect("ok");
        assert_eq!(c.binary, PathBuf::from("/usr/local/bin/service1"));
        assert_eq!(c.port, 7171);
        assert_eq!(c.stop_timeout, Duration::from_millis(500));
        assert_eq!(c.grace, Duration::from_millis(250));
        assert_eq!(c.token, None, "a blank token disables the endpoint");
    }

    #[test]
    fn listen_addresses() {
        let listen = |env: &[(&str, &str)]| check(&["/a"], env).map(|c| c.listen);
        let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
        assert_eq!(listen(&[("PORT", "5001")]), Ok(vec![addr("0.0.0.0:5001")]));
        assert_eq!(
            listen(&[("PORT", "5001"), ("BIND_ADDRESS", "127.0.0.1")]),
            Ok(vec![addr("127.0.0.1:5001")])
        );
        assert_eq!(listen(&[("PORT", "5001"), ("STAND_SHIM_LISTEN", "off")]), Ok(vec![]));
        assert_eq!(
            listen(&[("PORT", "5001"), ("STAND_SHIM_LISTEN", "6000, 127.0.0.1:6001,[::1]:6002")]),
            Ok(vec![addr("0.0.0.0:6000"), addr("127.0.0.1:6001"), addr("[::1]:6002")])
        );
        for bad in ["0", "x", "6000,6000", "1.2.3.4"] {
            let err = listen(&[("STAND_SHIM_LISTEN", bad)]).expect_err(bad);
            assert!(err.to_string().contains("STAND_SHIM_LISTEN"), "{err}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(check(&[], &[]), Err(ConfigError::NoBinary));
        assert_eq!(check(&["--"], &[]), Err(ConfigError::NoBinary));
        for (name, value) in [
            ("STAND_SHIM_PORT", "0"),
            ("STAND_SHIM_PORT", "70000"),
            ("STAND_SHIM_STOP_TIMEOUT", "-1"),
            ("STAND_SHIM_GRACE_MS", "1s"),
            ("STAND_SHIM_READY_TIMEOUT", "0"),
        ] {
            let err = check(&["/a"], &[(name, value)]).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn resolve() {
        let cwd = Path::new("/work");
        assert_eq!(
            resolve_binary(Path::new("/x/y"), cwd, None),
            Ok(PathBuf::from("/x/y"))
        );
        assert_eq!(
            resolve_binary(Path::new("./y"), cwd, None),
            Ok(PathBuf::from("/work/./y"))
        );
        assert!(matches!(
            resolve_binary(
                Path::new("no-such-binary-here"),
                cwd,
                Some(OsStr::new("/nonexistent"))
            ),
            Err(ConfigError::NotOnPath(_))
        ));
    }
}
