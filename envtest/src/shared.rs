//! Planes shared by every test process of one test run.
//!
//! cargo-nextest runs each test in a process of its own, so planes started per process would
//! start once per test (seconds each). Instead, the first test of a run that asks for planes
//! under a key starts them and leaves them running for the others: under a lock file it writes
//! their kubeconfigs to a state file in a folder named after the run's *owner*, and hands the
//! planes to their watchdogs, which wait for the owner to end before they stop the planes and
//! remove the folder. The owner is the nextest runner (the parent of every test process) under
//! nextest, and the test process itself under libtest (`cargo test`), which runs a binary's
//! tests as threads of one process. Either way: one set of planes per key and run, gone when
//! the run ends, however it ends.
//!
//! Tests that must not run beside each other on shared planes (each test's syncer watches the
//! whole virtual cluster) lease one of several pairs for their exclusive use
//! ([`SharedPlanes::lease_pair`]).

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::{ControlPlane, Role, processes::Lifetime};

/// Planes started once per test run and key (see the module documentation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedPlanes {
    planes: Vec<SharedPlane>,
    /// How long the planes took to start (by the process that started them).
    started_in: Duration,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SharedPlane {
    name: String,
    kubeconfig: PathBuf,
    server: String,
    pids: Vec<u32>,
}

/// The name of the state file in the shared folder.
const STATE: &str = "planes.json";

impl SharedPlanes {
    /// A host and a virtual plane (named `host` and `virtual`) for this run and `key`, started
    /// from the binaries in `assets` by the first caller.
    pub async fn pair(assets: &Path, key: &str) -> anyhow::Result<Self> {
        Self::get(assets, key, &[("host", Role::Host), ("virtual", Role::Virtual)]).await
    }

    /// The exclusive use of one of `count` pairs of this run and `key` (`key-0` ...): a free
    /// one if there is (started by the first to take it), else the next to be freed of one
    /// chosen by this process's id. Tests that cannot share a pair with another running test
    /// still run `count` at a time.
    pub async fn lease_pair(assets: &Path, key: &str, count: usize) -> anyhow::Result<(Self, Exclusive)> {
        let owner = Owner::of_this_run()?;
        let slot = |index: usize| format!("{}-{}-{key}-{index}", owner.pid, owner.started);
        let count = count.max(1);
        let mut leased = None;
        for index in 0..count {
            if let Some(exclusive) = Exclusive::try_take(&slot(index))? {
                leased = Some((index, exclusive));
                break;
            }
        }
        let (index, exclusive) = match leased {
            Some(leased) => leased,
            None => {
                let index = std::process::id() as usize % count;
                (index, Exclusive::take(&slot(index))?)
            }
        };
        let planes = Self::pair(assets, &format!("{key}-{index}")).await?;
        Ok((planes, exclusive))
    }

    /// One plane (named `host`) for this run and `key`.
    pub async fn single(assets: &Path, key: &str) -> anyhow::Result<Self> {
        Self::get(assets, key, &[("host", Role::Host)]).await
    }

    async fn get(assets: &Path, key: &str, wanted: &[(&str, Role)]) -> anyhow::Result<Self> {
        let owner = Owner::of_this_run()?;
        let dir = std::env::temp_dir().join(format!("vcsync-envtest-{}-{}-{key}", owner.pid, owner.started));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = File::create(dir.join("lock")).context("the shared planes' lock file")?;
        // Blocks this thread while another test process starts the planes: nothing else of a
        // test can go on before it has them.
        lock.lock().context("locking the shared planes")?;
        let state = dir.join(STATE);
        if state.exists() {
            let text = fs::read_to_string(&state)?;
            let planes: Self =
                serde_json::from_str(&text).with_context(|| format!("reading {}", state.display()))?;
            planes.check_alive()?;
            return Ok(planes);
        }
        let started = Instant::now();
        let lifetime = Lifetime::Shared {
            owner: owner.pid,
            also_remove: dir.clone(),
        };
        let starts = wanted
            .iter()
            .map(|(name, role)| ControlPlane::start_in(assets, name, *role, &dir, lifetime.clone()));
        // At once: a pair starts in the time of one. On an error the others are dropped,
        // stopped and removed.
        let started_planes = futures::future::try_join_all(starts).await?;
        let planes = Self {
            planes: started_planes
                .iter()
                .map(|plane| SharedPlane {
                    name: plane.name().to_string(),
                    kubeconfig: plane.kubeconfig().to_path_buf(),
                    server: plane.server().to_string(),
                    pids: plane.pids(),
                })
                .collect(),
            started_in: started.elapsed(),
        };
        let temporary = dir.join(format!("{STATE}.new"));
        fs::write(&temporary, serde_json::to_vec_pretty(&planes)?)?;
        fs::rename(&temporary, &state)?;
        for plane in started_planes {
            plane.release();
        }
        eprintln!(
            "envtest: started {} for this test run in {:.1} s (folder {}; they stop when process \
             {} ends)",
            wanted
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(" and "),
            planes.started_in.as_secs_f64(),
            dir.display(),
            owner.pid
        );
        Ok(planes)
    }

    /// Fails, naming the plane and its log folder, when a process of a plane has died.
    fn check_alive(&self) -> anyhow::Result<()> {
        for plane in &self.planes {
            if let Some(pid) = plane.pids.iter().find(|pid| !alive(**pid)) {
                bail!(
                    "process {pid} of the shared {} plane has ended; its logs are in {}",
                    plane.name,
                    plane.kubeconfig.parent().unwrap_or(Path::new("?")).display()
                );
            }
        }
        Ok(())
    }

    fn plane(&self, name: &str) -> &SharedPlane {
        self.planes
            .iter()
            .find(|plane| plane.name == name)
            .unwrap_or_else(|| panic!("no {name} plane among the shared planes"))
    }

    /// The admin kubeconfig of the host plane.
    pub fn host_kubeconfig(&self) -> &Path {
        &self.plane("host").kubeconfig
    }

    /// The admin kubeconfig of the virtual plane (of a [`SharedPlanes::pair`]).
    pub fn virtual_kubeconfig(&self) -> &Path {
        &self.plane("virtual").kubeconfig
    }

    /// How long the planes took to start.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }
}

/// The exclusive use of something shared by the test processes of a machine, named by a string
/// (the servers of a set of planes, say): held until dropped, waited for while another holds it.
pub struct Exclusive {
    _lock: File,
}

impl Exclusive {
    /// Waits (blocking this thread) until no other holder of `name` is left, then holds it.
    pub fn take(name: &str) -> anyhow::Result<Self> {
        let (path, lock) = Self::file(name)?;
        lock.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _lock: lock })
    }

    /// Holds `name` if nobody else does, at once.
    pub fn try_take(name: &str) -> anyhow::Result<Option<Self>> {
        let (path, lock) = Self::file(name)?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(Self { _lock: lock })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(err)) => {
                Err(err).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// The lock file of `name` (in the temporary directory, named by a digest of `name`).
    fn file(name: &str) -> anyhow::Result<(std::path::PathBuf, File)> {
        let digest: u64 = name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = std::env::temp_dir().join(format!("vcsync-envtest-exclusive-{digest:016x}"));
        let lock = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((path, lock))
    }
}

/// The process whose end ends the shared planes, and when it started (pids are reused).
struct Owner {
    pid: u32,
    started: u64,
}

impl Owner {
    fn of_this_run() -> anyhow::Result<Self> {
        // nextest sets this in every test process it starts, each a child of its runner.
        let pid = match std::env::var("NEXTEST_EXECUTION_MODE").as_deref() {
            Ok("process-per-test") => std::os::unix::process::parent_id(),
            _ => std::process::id(),
        };
        Ok(Self {
            pid,
            started: start_time(pid)?,
        })
    }
}

/// The start time of `pid` (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (in parentheses, which may hold spaces) start at field 3.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    after_name
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|field| field.parse().ok())
        .with_context(|| format!("no start time in /proc/{pid}/stat"))
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.starts_with(" Z"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_of_this_process_is_read() {
        let mine = start_time(std::process::id()).unwrap();
        let parent = start_time(std::os::unix::process::parent_id()).unwrap();
        assert!(
            parent <= mine,
            "a parent starts before its child: {parent} > {mine}"
        );
        assert!(alive(std::process::id()));
    }

    #[test]
    fn an_exclusive_use_waits_for_the_holder() {
        let name = format!("test-{}", std::process::id());
        let held = Exclusive::take(&name).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = Exclusive::take(&name).unwrap();
            sender.send(()).unwrap();
        });
        assert!(
            receiver.recv_timeout(Duration::from_millis(300)).is_err(),
            "taken twice at once"
        );
        assert!(
            Exclusive::try_take(&format!("test-{}", std::process::id()))
                .unwrap()
                .is_none()
        );
        drop(held);
        receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("taken once the holder let go");
        waiter.join().unwrap();
    }
}
