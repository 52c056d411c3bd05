//! The artifact store: each executable kept as `<dir>/<sha256>`, hashed while it is
//! copied (or moved), written under a temp name and renamed, so an artifact is immutable.

use super::*;

/// Copies `exe` into `dir/<sha256>`, hashing on the way; returns (path, sha256, size).
/// `take`: `exe` is this build's own output that nothing else needs (a replayed rustc
/// wrote it; cargo rebuilds a missing output when asked): it is moved instead, when
/// `dir` is on the same file system, and hashed in place (a 16 MB copy and its fsync
/// cost ~50 ms here). The store is a cache: every build stores its binaries anew.
pub(super) fn store_artifact(exe: &Path, dir: &Path, take: bool) -> std::io::Result<(PathBuf, String, u64)> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".incoming-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let result = (|| {
        let (sha256, size) = if take && std::fs::rename(exe, &tmp).is_ok() {
            sha256_of_file(&tmp)?
        } else {
            copy_hashed(exe, &tmp)?
        };
        let path = dir.join(&sha256);
        std::fs::rename(&tmp, &path)?;
        Ok((path, sha256, size))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Copies `from` to `to` (same permissions, synced), hashing on the way.
pub(super) fn copy_hashed(from: &Path, to: &Path) -> std::io::Result<(String, u64)> {
    let mut source = std::fs::File::open(from)?;
    let mut out = std::fs::File::create(to)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    // Ends at end of file.
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    out.set_permissions(source.metadata()?.permissions())?;
    out.sync_all()?;
    Ok((hex::encode(hasher.finalize()), size))
}
