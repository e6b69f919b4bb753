//! Files that hold credentials (kubeconfigs, snapshots with the cluster's Secrets): created or
//! truncated readable by their owner only.

use std::{fs::File, os::unix::fs::OpenOptionsExt, path::Path};

/// Opens `path` (created with mode 0600, or truncated) for writing.
pub fn create(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
