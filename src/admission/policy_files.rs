//! Which policy files the webhook loads: the top-level `*.yaml`/`*.yml`
//! files of the policies directory (so `policies/examples/` stays off), plus
//! any extra file or directory named on the command line.
use std::path::{Path, PathBuf};

use crate::policy::{PolicyError, PolicySet};

/// Why the webhook's policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFilesError {
    #[error("listing policy directory {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading policies from {path}: {source}")]
    Policy {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("no policy files (*.yaml, *.yml) found in {path}")]
    Empty { path: PathBuf },
}

/// Loads the top-level policy files of `dir`, then every `extra` path (a
/// file, or a directory loaded recursively).
pub fn load_policies(dir: &Path, extra: &[PathBuf]) -> Result<PolicySet, PolicyFilesError> {
    let mut files = top_level_yaml_files(dir)?;
    if files.is_empty() {
        return Err(PolicyFilesError::Empty {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    let mut set: Option<PolicySet> = None;
    let mut add = |loaded: PolicySet| match set.as_mut() {
        Some(existing) => existing.merge(loaded),
        None => set = Some(loaded),
    };
    for file in &files {
        add(load_file(file)?);
    }
    for path in extra {
        if path.is_dir() {
            add(
                PolicySet::load_dir(path).map_err(|source| PolicyFilesError::Policy {
                    path: path.clone(),
                    source,
                })?,
            );
        } else {
            add(load_file(path)?);
        }
    }
    set.ok_or_else(|| PolicyFilesError::Empty {
        path: dir.to_path_buf(),
    })
}

fn top_level_yaml_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyFilesError> {
    let list_error = |source| PolicyFilesError::List {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

fn load_file(path: &Path) -> Result<PolicySet, PolicyFilesError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyFilesError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    PolicySet::from_yaml(&text, &path.display().to_string()).map_err(|source| {
        PolicyFilesError::Policy {
            path: path.to_path_buf(),
            source,
        }
    })
}
