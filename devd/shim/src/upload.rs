//! Files on disk: staging an uploaded binary next to the current one (streamed,
//! hashed, verified, fsynced, 0755), installing it atomically with the previous
//! one kept as `<binary>.prev`, and restoring that one.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("sha256 mismatch: header says {expected}, body is {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> UploadError + 'a {
    move |source| UploadError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A verified binary in a temp file beside the target; removed on drop unless installed.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    pub sha256: String,
    pub size: u64,
    installed: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `.<name>.<tag>-<pid>-<n>` in the binary's directory (same filesystem: rename is atomic).
fn temp_path(binary: &Path, tag: &str) -> PathBuf {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    binary.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

pub fn prev_path(binary: &Path) -> PathBuf {
    kept_path(binary, Kept::Prev)
}

/// A binary kept beside `<binary>` for a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// `<binary>.prev`: the binary the last install replaced.
    Prev,
    /// `<binary>.good`: the last binary that lived through a whole probation, kept
    /// while `.prev` holds one that gave way before its probation was over.
    Good,
}

pub fn kept_path(binary: &Path, kept: Kept) -> PathBuf {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = match kept {
        Kept::Prev => "prev",
        Kept::Good => "good",
    };
    binary.with_file_name(format!("{name}.{suffix}"))
}

/// Streams `body` into a temp file while hashing; checks the hash, fsyncs, chmods 0755.
pub async fn stage(
    binary: &Path,
    body: Body,
    expected: &str,
    max_bytes: u64,
) -> Result<Staged, UploadError> {
    let path = temp_path(binary, "upload");
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .await
        .map_err(io("creating", &path))?;
    // From here the temp file is removed on every early return.
    let mut staged = Staged {
        path: path.clone(),
        sha256: String::new(),
        size: 0,
        installed: false,
    };
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UploadError::Body(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        staged.size += data.len() as u64;
        if staged.size > max_bytes {
            return Err(UploadError::TooLarge(max_bytes));
        }
        hasher.update(&data);
        out.write_all(&data).await.map_err(io("writing", &path))?;
    }
    out.flush().await.map_err(io("writing", &path))?;
    let file = out.into_inner();
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(UploadError::HashMismatch {
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    file.sync_all().await.map_err(io("fsyncing", &path))?;
    file.set_permissions(fs::Permissions::from_mode(0o755))
        .await
        .map_err(io("chmod", &path))?;
    drop(file);
    staged.sha256 = actual;
    Ok(staged)
}

/// Keeps the current binary as `<binary>.prev` and renames the staged file over
/// `<binary>`; fsyncs the directory. Blocking.
pub fn install(binary: &Path, mut staged: Staged) -> Result<(), UploadError> {
    if binary.exists() {
        replace_with_copy(binary, &prev_path(binary))?;
    }
    fs::rename(&staged.path, binary).map_err(io("renaming over", binary))?;
    staged.installed = true;
    sync_dir(binary)
}

/// Puts a kept binary back at `<binary>` (the kept file stays). Blocking.
pub fn restore(binary: &Path, from: Kept) -> Result<(), UploadError> {
    replace_with_copy(&kept_path(binary, from), binary)?;
    sync_dir(binary)
}

/// Keeps `<binary>.prev` as `<binary>.good` too (a hard link when possible), before
/// the next install replaces `.prev`. Blocking.
pub fn keep_good(binary: &Path) -> Result<(), UploadError> {
    replace_with_copy(&prev_path(binary), &kept_path(binary, Kept::Good))?;
    sync_dir(binary)
}

/// Removes `<binary>.good`, if there is one. Blocking.
pub fn forget_good(binary: &Path) -> Result<(), UploadError> {
    let good = kept_path(binary, Kept::Good);
    match fs::remove_file(&good) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &good)(e)),
        _ => Ok(()),
    }
}

/// Atomically makes `to` a copy of `from` (a hard link when possible).
fn replace_with_copy(from: &Path, to: &Path) -> Result<(), UploadError> {
    let tmp = temp_path(to, "tmp");
    if fs::hard_link(from, &tmp).is_err() {
        fs::copy(from, &tmp).map_err(io("copying", from))?;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("fsyncing", &tmp))?;
    }
    fs::rename(&tmp, to).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        UploadError::Io {
            what: "renaming over",
            path: to.to_path_buf(),
            source: e,
        }
    })
}

/// `<binary's dir>/.stand-libs/<sha256>/<name>`: where a shared library a binary was
/// linked against lives (its rpath names the directory).
pub fn lib_path(binary: &Path, sha256: &str, name: &str) -> PathBuf {
    binary
        .parent()
        .unwrap_or(Path::new("/"))
        .join(stand_shim_protocol::LIBS_DIR)
        .join(sha256)
        .join(name)
}

/// Puts a staged library at `path` (its directory made first by the caller's
/// [`stage`] call site). A library's file is written once and never replaced: the
/// binaries linked against it may be running. Blocking.
pub fn install_lib(path: &Path, mut staged: Staged) -> Result<(), UploadError> {
    fs::rename(&staged.path, path).map_err(io("renaming to", path))?;
    staged.installed = true;
    sync_dir(path)
}

fn sync_dir(binary: &Path) -> Result<(), UploadError> {
    let dir = binary.parent().unwrap_or(Path::new("/"));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsyncing directory", dir))
}

pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

/// A sha256 in hex: exactly 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stage_install_restore() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("svc");
        fs::write(&bin, b"old").expect("write");
        let new = b"new binary".to_vec();
        let sha = hex::encode(Sha256::digest(&new));

        let err = stage(&bin, Body::from(new.clone()), &"0".repeat(64), 1 << 20)
            .await
            .expect_err("mismatch");
        assert!(matches!(err, UploadError::HashMismatch { .. }), "{err}");
        let err = stage(&bin, Body::from(new.clone()), &sha, 3)
            .await
            .expect_err("too large");
        assert!(matches!(err, UploadError::TooLarge(3)), "{err}");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "temp files removed"
        );

        let staged = stage(&bin, Body::from(new.clone()), &sha.to_uppercase(), 1 << 20)
            .await
            .expect("stage");
        assert_eq!(staged.sha256, sha);
        install(&bin, staged).expect("install");
        assert_eq!(fs::read(&bin).expect("read"), new);
        assert_eq!(fs::read(prev_path(&bin)).expect("read prev"), b"old");
        assert_eq!(
            fs::metadata(&bin).expect("meta").permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(hash_file(&bin).expect("hash"), sha);

        restore(&bin, Kept::Prev).expect("restore");
        assert_eq!(fs::read(&bin).expect("read"), b"old");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            2,
            "binary and .prev only"
        );
    }

    #[tokio::test]
    async fn a_good_binary_outlives_the_next_installs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("svc");
        fs::write(&bin, b"good").expect("write");
        let put = |bytes: &'static [u8]| {
            let bin = bin.clone();
            async move {
                let sha = hex::encode(Sha256::digest(bytes));
                let staged = stage(&bin, Body::from(bytes), &sha, 1 << 20).await.expect("stage");
                install(&bin, staged).expect("install");
            }
        };
        put(b"gave way").await;
        keep_good(&bin).expect("keep .prev as .good");
        put(b"newest").await;
        assert_eq!(fs::read(prev_path(&bin)).expect("read prev"), b"gave way");
        restore(&bin, Kept::Good).expect("restore the good one");
        assert_eq!(fs::read(&bin).expect("read"), b"good");
        forget_good(&bin).expect("forget");
        forget_good(&bin).expect("forgetting twice is no error");
        assert!(!kept_path(&bin, Kept::Good).exists());
    }

    #[tokio::test]
    async fn a_library_lands_under_its_sha256_beside_the_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("svc");
        let bytes = b"\x7fELF library".to_vec();
        let sha = hex::encode(Sha256::digest(&bytes));
        let path = lib_path(&bin, &sha, "libx-1.so");
        assert_eq!(path, dir.path().join(".stand-libs").join(&sha).join("libx-1.so"));
        fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let err = stage(&path, Body::from(bytes.clone()), &"0".repeat(64), 1 << 20).await.expect_err("mismatch");
        assert!(matches!(err, UploadError::HashMismatch { .. }), "{err}");
        let staged = stage(&path, Body::from(bytes.clone()), &sha, 1 << 20).await.expect("stage");
        install_lib(&path, staged).expect("install");
        assert_eq!(fs::read(&path).expect("read"), bytes);
        assert_eq!(fs::read_dir(path.parent().expect("dir")).expect("ls").count(), 1, "no temp file left");
    }

    #[test]
    fn sha_format() {
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"g".repeat(64)));
        assert!(!is_sha256_hex("abc"));
    }
}
