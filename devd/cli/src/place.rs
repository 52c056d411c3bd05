//! Where the stand is: `--root`, `--file`, or the nearest stand.toml up from here.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use stand_model::config::{self, Stand};

use crate::error::Usage;

/// Where the stand is: its root and its stand.toml.
#[derive(Debug, Clone)]
pub struct Place {
    pub root: PathBuf,
    pub file: PathBuf,
}

impl Place {
    /// From --root and --file; with neither, the current directory or the nearest parent
    /// that has a stand.toml.
    pub fn find(root: Option<&Path>, file: Option<&Path>) -> anyhow::Result<Place> {
        match (root, file) {
            (Some(root), Some(file)) => Ok(Place {
                root: root.to_path_buf(),
                file: file.to_path_buf(),
            }),
            (Some(root), None) => Ok(Place {
                root: root.to_path_buf(),
                file: root.join(config::FILE_NAME),
            }),
            (None, Some(file)) => {
                let root = match file.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                Ok(Place {
                    root,
                    file: file.to_path_buf(),
                })
            }
            (None, None) => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                for dir in cwd.ancestors() {
                    let candidate = dir.join(config::FILE_NAME);
                    if candidate.is_file() {
                        // Keep messages short: `stand.toml`, `../stand.toml`, ...
                        let up = cwd.ancestors().position(|a| a == dir).unwrap_or(0);
                        let rel: PathBuf = std::iter::repeat_n("..", up)
                            .collect::<PathBuf>()
                            .join(config::FILE_NAME);
                        let root = rel
                            .parent()
                            .filter(|p| !p.as_os_str().is_empty())
                            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                        return Ok(Place { root, file: rel });
                    }
                }
                Err(Usage(format!(
                    "no {} in {} or any parent directory; run devd from the stand's root, or pass --root or --file",
                    config::FILE_NAME,
                    cwd.display()
                ))
                .into())
            }
        }
    }

    /// Parse, cross-check and check the files stand.toml names.
    pub fn load(&self) -> anyhow::Result<Stand> {
        let stand = config::load(&self.file)?;
        stand.validate_files(&self.root)?;
        Ok(stand)
    }
}
