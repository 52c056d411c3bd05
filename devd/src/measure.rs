//! The two measures devd names things by, shared by the modules that build, replay,
//! store and deliver (a leaf: it imports no module of devd).

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// sha256 (hex) and size of a file: how devd names every binary it stores, ships or
/// finds in an image.
pub fn sha256_of_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// A duration in whole milliseconds (saturating), as events and the status carry them.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
