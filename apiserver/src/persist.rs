//! Optional file persistence (for the `local` cluster driver): with
//! [`crate::ServerConfig::state_dir`] set, the server loads `state.json` from that directory at
//! start and writes it back while running and on shutdown.
//!
//! - The file holds every object as stored (uid, resourceVersion, creationTimestamp kept), the
//!   resourceVersion counter, and whether the server stopped cleanly. Service addresses and CRD
//!   types are rebuilt from the stored objects. Watch history is not kept: a watch from a
//!   resourceVersion older than the restart gets 410 Gone (clients re-list), as from a
//!   compacted etcd revision.
//! - Writes are atomic (temporary file, fsync, rename, fsync of the directory) and debounced: a
//!   change is written at most [`MIN_INTERVAL`] later, and while changes keep coming, no more
//!   often than every [`MIN_INTERVAL`] or twice the last write's duration, whichever is longer.
//! - After an unclean stop (kill -9) the changes of the last interval are lost; the counter then
//!   skips [`UNCLEAN_SKIP`] versions so that no resourceVersion handed out before the crash is
//!   handed out again for different content.
//! - A file that cannot be read or parsed is an error at start, never an empty server. A lock
//!   on `<dir>/lock` keeps a second server from using the same directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::errors::{Error, Result};
use crate::objects::Objects;

/// The state file in the state directory.
pub(crate) const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const FORMAT: u32 = 1;
/// Shortest time between two writes of the state.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// How far the resourceVersion counter skips after an unclean stop.
pub(crate) const UNCLEAN_SKIP: u64 = 1_000_000;

/// Objects loaded from a state file, ready for [`Objects::new`].
#[derive(Debug)]
pub(crate) struct Restored {
    /// The counter to continue from.
    pub resource_version: u64,
    /// Objects by store key (`group/plural`).
    pub tables: BTreeMap<String, Vec<Value>>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: u32,
    #[serde(rename = "resourceVersion")]
    resource_version: u64,
    clean: bool,
    tables: BTreeMap<&'a str, &'a [Arc<Value>]>,
}

#[derive(Deserialize)]
struct FileIn {
    format: u32,
    #[serde(rename = "resourceVersion")]
    resource_version: u64,
    clean: bool,
    tables: BTreeMap<String, Vec<Value>>,
}

/// An opened state directory: locked, and its state (if any) read.
pub(crate) struct StateDir {
    dir: PathBuf,
    /// Held (locked) for the life of the server.
    _lock: File,
    /// What was loaded; taken by the server at start.
    pub restored: Option<Restored>,
}

fn state_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::State {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl StateDir {
    /// Creates the directory if needed, locks it and reads its state file (absent: a new server).
    pub fn open(dir: &Path) -> Result<StateDir> {
        std::fs::create_dir_all(dir).map_err(|e| state_error(dir, format!("cannot create it: {e}")))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| state_error(&lock_path, e))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => {
                state_error(dir, "another API server is using this state directory")
            }
            std::fs::TryLockError::Error(e) => state_error(&lock_path, e),
        })?;
        let path = dir.join(STATE_FILE);
        let restored = match std::fs::read(&path) {
            Ok(bytes) => Some(parse(&path, &bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(state_error(&path, e)),
        };
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            restored,
        })
    }
}

/// Parses and checks a state file.
fn parse(path: &Path, bytes: &[u8]) -> Result<Restored> {
    let file: FileIn =
        serde_json::from_slice(bytes).map_err(|e| state_error(path, format!("corrupt: {e}")))?;
    if file.format != FORMAT {
        return Err(state_error(
            path,
            format!("format {} is not the supported {FORMAT}", file.format),
        ));
    }
    for (table, objects) in &file.tables {
        for object in objects {
            let meta = &object["metadata"];
            let rv = meta["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse::<u64>().ok());
            let named = meta["name"].as_str().is_some_and(|n| !n.is_empty());
            if !named || rv.is_none_or(|rv| rv > file.resource_version) {
                return Err(state_error(
                    path,
                    format!(
                        "corrupt: an object in {table} lacks a name or has a resourceVersion \
                         beyond the stored counter: {}",
                        truncate(&meta.to_string(), 200)
                    ),
                ));
            }
        }
    }
    let resource_version = if file.clean {
        file.resource_version
    } else {
        file.resource_version + UNCLEAN_SKIP
    };
    Ok(Restored {
        resource_version,
        tables: file.tables,
    })
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// What one write cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub resource_version: u64,
    pub objects: usize,
    pub bytes: usize,
}

/// Writes the state of `objects` into `dir` atomically. `clean` marks a final write at shutdown.
pub(crate) fn save(objects: &Objects, dir: &Path, clean: bool) -> std::io::Result<Written> {
    let (resource_version, tables) = objects.store.lock().snapshot();
    let file = FileOut {
        format: FORMAT,
        resource_version,
        clean,
        tables: tables.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect(),
    };
    let bytes = serde_json::to_vec(&file)?;
    write_atomic(dir, &bytes)?;
    Ok(Written {
        resource_version,
        objects: tables.iter().map(|(_, v)| v.len()).sum(),
        bytes: bytes.len(),
    })
}

fn write_atomic(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    // The rename itself must survive a crash too.
    File::open(dir)?.sync_all()
}

/// The background writer of a persisted server.
pub(crate) struct Persister {
    dir: PathBuf,
    objects: Arc<Objects>,
    /// Serializes writes; holds the resourceVersion last written.
    written: Arc<Mutex<Option<u64>>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    _state_dir: StateDir,
}

impl Persister {
    /// Writes the loaded state once (so that the file exists and is marked as not cleanly
    /// stopped) and starts the debounced writer.
    pub fn start(state_dir: StateDir, objects: Arc<Objects>) -> Result<Persister> {
        let dir = state_dir.dir.clone();
        let written = Arc::new(Mutex::new(None));
        write_locked(&objects, &dir, &written, false, true).map_err(|e| state_error(&dir, e))?;
        let changed = Arc::new(Notify::new());
        objects.store.lock().set_change_notify(changed.clone());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let (objects, dir, written) = (objects.clone(), dir.clone(), written.clone());
            async move {
                let mut interval = MIN_INTERVAL;
                loop {
                    tokio::select! {
                        _ = changed.notified() => {}
                        _ = stopped.wait_for(|s| *s) => break,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stopped.wait_for(|s| *s) => break,
                    }
                    let started = Instant::now();
                    let (objects, dir, written) = (objects.clone(), dir.clone(), written.clone());
                    let result = tokio::task::spawn_blocking(move || {
                        write_locked(&objects, &dir, &written, false, false)
                    })
                    .await;
                    match result {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "could not write the API server state"),
                        Err(e) => tracing::error!(error = %e, "the state writer failed"),
                    }
                    interval = MIN_INTERVAL.max(started.elapsed() * 2);
                }
            }
        });
        Ok(Persister {
            dir,
            objects,
            written,
            stop,
            task: Mutex::new(Some(task)),
            _state_dir: state_dir,
        })
    }

    /// Stops the writer and writes the final state, marked clean.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let (objects, dir, written) = (self.objects.clone(), self.dir.clone(), self.written.clone());
        match tokio::task::spawn_blocking(move || write_locked(&objects, &dir, &written, true, true)).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(w))) => {
                tracing::info!(dir = %self.dir.display(), objects = w.objects, bytes = w.bytes,
                resource_version = w.resource_version, "API server state written")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "could not write the API server state at shutdown"),
            Err(e) => tracing::error!(error = %e, "the state writer failed"),
        }
    }
}

/// One write under the write lock; skipped (None written) when nothing changed since the last
/// one, unless `force`.
fn write_locked(
    objects: &Objects,
    dir: &Path,
    written: &Mutex<Option<u64>>,
    clean: bool,
    force: bool,
) -> std::io::Result<Option<Written>> {
    let mut last = written.lock().unwrap_or_else(|p| p.into_inner());
    if !force && *last == Some(objects.store.lock().resource_version()) {
        return Ok(None);
    }
    let started = Instant::now();
    let w = save(objects, dir, clean)?;
    tracing::debug!(objects = w.objects, bytes = w.bytes, took = ?started.elapsed(), "API server state written");
    *last = Some(w.resource_version);
    Ok(Some(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_what_it_cannot_trust() {
        let path = Path::new("state.json");
        let err = |bytes: &str| parse(path, bytes.as_bytes()).unwrap_err().to_string();
        assert!(err("{\"format\": 1, \"resourceVer").contains("corrupt"));
        assert!(err("").contains("corrupt"));
        assert!(
            err(r#"{"format": 2, "resourceVersion": 1, "clean": true, "tables": {}}"#).contains("format 2")
        );
        let beyond = r#"{"format": 1, "resourceVersion": 1, "clean": true,
            "tables": {"/configmaps": [{"metadata": {"name": "a", "resourceVersion": "2"}}]}}"#;
        assert!(err(beyond).contains("beyond"));
        let ok = r#"{"format": 1, "resourceVersion": 7, "clean": true,
            "tables": {"/configmaps": [{"metadata": {"name": "a", "resourceVersion": "2"}}]}}"#;
        assert_eq!(parse(path, ok.as_bytes()).unwrap().resource_version, 7);
        let unclean = ok.replace("true", "false");
        assert_eq!(
            parse(path, unclean.as_bytes()).unwrap().resource_version,
            7 + UNCLEAN_SKIP
        );
    }
}
