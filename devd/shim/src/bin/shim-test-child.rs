//! Test fixture for stand-shim's integration tests, not shipped. A tiny service
//! whose behaviour comes from a JSON trailer appended to its own executable
//! (`\n#STAND-TEST-CHILD#{...}`), so tests make *different binaries* by appending
//! different trailers to copies of it:
//! - `text`: served to every HTTP request on the listener passed by the shim (fd 3,
//!   `LISTEN_FDS`/`LISTEN_PID`), else on 127.0.0.1:$PORT (when PORT is set); once it
//!   accepts, it reports `READY=1` on `NOTIFY_SOCKET`;
//! - `no_ready`: never report ready; `exit_after_ready_ms`: exit with code 4 that
//!   long after reporting ready;
//! - `exit_at_start`: write a fatal line to stderr and exit with this code at once;
//! - `term_exit_code`: exit code on SIGTERM/SIGINT (default 0); `ignore_term`: ignore them;
//! - `orphans`: `{count, linger_ms, pid_file}`: at start, leave `count` orphaned
//!   grandchildren that exit after `linger_ms` (their pids go to `pid_file`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::FromRawFd;
use std::net::{TcpListener, TcpStream};
use std::process::{exit, Command};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use serde::Deserialize;

const MARKER: &[u8] = b"\n#STAND-TEST-CHILD#";

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Behaviour {
    text: String,
    no_ready: bool,
    exit_after_ready_ms: Option<u64>,
    exit_at_start: Option<i32>,
    term_exit_code: i32,
    ignore_term: bool,
    orphans: Option<Orphans>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Orphans {
    count: u32,
    linger_ms: u64,
    pid_file: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--orphan-parent") => orphan_parent(&args[2..]),
        Some("--linger") => {
            let ms = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            exit(0);
        }
        _ => {}
    }
    let b = behaviour();
    let pid = std::process::id();
    eprintln!("test-child[{pid}]: starting, text={:?}", b.text);
    if let Some(code) = b.exit_at_start {
        eprintln!("test-child[{pid}]: fatal: refusing to start (configured exit {code})");
        exit(code);
    }
    // Block the stop signals before any thread exists; the main thread waits for them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if stop.thread_block().is_err() {
        exit(70);
    }
    if let Some(o) = &b.orphans {
        let me = std::env::current_exe().unwrap_or_else(|_| exit(71));
        let status = Command::new(me)
            .args([
                "--orphan-parent",
                &o.count.to_string(),
                &o.linger_ms.to_string(),
                &o.pid_file,
            ])
            .status();
        if !status.is_ok_and(|s| s.success()) {
            exit(72);
        }
    }
    let listener = match inherited_listener() {
        Some(l) => Some(l),
        None => std::env::var("PORT").ok().map(|port| {
            TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap_or(0))).unwrap_or_else(|e| {
                eprintln!("test-child[{pid}]: cannot bind 127.0.0.1:{port}: {e}");
                exit(98);
            })
        }),
    };
    if let Some(listener) = listener {
        // The socket's flags are shared with the shim's other children: nonblocking.
        if listener.set_nonblocking(true).is_err() {
            exit(73);
        }
        let text = b.text.clone();
        std::thread::spawn(move || loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let text = text.clone();
                    std::thread::spawn(move || answer(stream, &text, pid));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        });
        if !b.no_ready {
            notify_ready();
        }
        if let Some(ms) = b.exit_after_ready_ms {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(ms));
                eprintln!("test-child[{pid}]: fatal: giving up after {ms} ms");
                exit(4);
            });
        }
    }
    loop {
        let sig = stop.wait().unwrap_or(Signal::SIGTERM);
        if b.ignore_term {
            eprintln!("test-child[{pid}]: ignoring {sig}");
            continue;
        }
        eprintln!(
            "test-child[{pid}]: got {sig}, exiting with {}",
            b.term_exit_code
        );
        exit(b.term_exit_code);
    }
}

/// fd 3 when `LISTEN_FDS` and `LISTEN_PID` say it was passed to this process.
#[allow(unsafe_code)]
fn inherited_listener() -> Option<TcpListener> {
    let for_us = std::env::var("LISTEN_PID").ok()? == std::process::id().to_string();
    let count: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if !for_us || count == 0 {
        return None;
    }
    // SAFETY: by the socket-activation protocol checked above, fd 3 was opened for this
    // process by its parent and nothing else here owns it; taken once, at start.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(3) };
    Some(TcpListener::from(fd))
}

fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    let Ok(name) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Some(abstract_name) = name.strip_prefix('@') else {
        return;
    };
    let sent = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
        .and_then(|addr| {
            std::os::unix::net::UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr)
        });
    if let Err(e) = sent {
        eprintln!("test-child: cannot report ready: {e}");
    }
}

fn behaviour() -> Behaviour {
    let read = || -> Option<Behaviour> {
        let mut f = std::fs::File::open(std::env::current_exe().ok()?).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).ok()?;
        let at = tail.windows(MARKER.len()).rposition(|w| w == MARKER)?;
        match serde_json::from_slice(&tail[at + MARKER.len()..]) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("test-child: bad trailer: {e}");
                exit(64);
            }
        }
    };
    read().unwrap_or_default()
}

fn answer(mut stream: TcpStream, text: &str, pid: u32) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Pid: {pid}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// Spawns the lingering grandchildren, records their pids and exits at once,
/// so they are orphaned (reparented to the nearest subreaper or PID 1).
fn orphan_parent(args: &[String]) -> ! {
    let (Some(count), Some(linger), Some(pid_file)) = (args.first(), args.get(1), args.get(2))
    else {
        exit(2);
    };
    let me = std::env::current_exe().unwrap_or_else(|_| exit(3));
    let mut pids = Vec::new();
    for _ in 0..count.parse::<u32>().unwrap_or(0) {
        match Command::new(&me).args(["--linger", linger]).spawn() {
            Ok(child) => pids.push(child.id().to_string()),
            Err(_) => exit(4),
        }
    }
    let tmp = format!("{pid_file}.tmp");
    if std::fs::write(&tmp, pids.join("\n"))
        .and_then(|()| std::fs::rename(&tmp, pid_file))
        .is_err()
    {
        exit(5);
    }
    exit(0);
}
