//! The processes of a plane: free loopback ports, spawning with output to a log file, a process
//! group per plane, and stopping by pid (SIGTERM, then SIGKILL after a bound).
//!
//! A test that is killed (SIGKILL, a CI timeout) runs no `Drop`. So each plane's processes join
//! the process group of a small watchdog (`sh`) whose standard input is a pipe from this
//! process, on which it is told the plane's folder and each pid started: when this process dies,
//! however it dies, the kernel closes the pipe, and the watchdog reads end of file, SIGKILLs
//! those pids, removes the folder and SIGKILLs whatever else is left in its group, itself last.
//! (`prctl(PR_SET_PDEATHSIG)` would need `unsafe` in a `pre_exec`, which this crate forbids,
//! and could not remove the folder.) A normal stop SIGKILLs the watchdog itself, after stopping
//! the processes and before removing the folder. Only a watchdog killed from outside, alone,
//! would leave a plane running.
//!
//! A plane shared by several test processes (see the `shared` module) outlives the process that
//! started it: its watchdog is given an owner pid (the test runner), and after end of file it
//! waits for that process to end before it cleans up.

use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom, Write},
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// `count` distinct free TCP ports on 127.0.0.1 (held together while chosen, then released for
/// the processes to bind; another program could take one in between, as with envtest).
pub(crate) fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("finding a free loopback port")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// One started program, its output going to `log`.
pub(crate) struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(description)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("cannot be waited for: {err}")),
        }
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB are read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// The group leader of a plane's processes (see the module documentation).
pub(crate) struct Watchdog {
    child: Child,
    /// Held open for as long as the plane lives; its end of file is the watchdog's signal.
    pipe: Option<ChildStdin>,
}

/// What the watchdog runs: read the folder, then pids until end of file, then (given an
/// `OWNER` pid) wait for the owner to end, then clean up (`ALSO_REMOVE`, if set, too).
/// SIGTERM, SIGINT and SIGHUP are ignored so that only end of file or SIGKILL ends it (a
/// terminal's Ctrl-C reaches the foreground group only, but a `kill` might not).
const WATCHDOG: &str = r#"trap '' TERM INT HUP
IFS= read -r dir || exit 0
pids=
while read -r pid; do pids="$pids $pid"; done
if [ -n "$OWNER" ]; then while kill -0 "$OWNER" 2>/dev/null; do sleep 1; done; fi
[ -n "$pids" ] && kill -KILL $pids 2>/dev/null && sleep 1
rm -rf -- "$dir" ${ALSO_REMOVE:+"$ALSO_REMOVE"}
kill -KILL 0"#;

/// Whose end ends a plane.
#[derive(Clone, Debug)]
pub(crate) enum Lifetime {
    /// This process's (a plane dropped normally ends sooner).
    ThisProcess,
    /// The process `owner`'s, after this one released the plane; `also_remove` is a folder the
    /// watchdog removes with the plane's.
    Shared { owner: u32, also_remove: PathBuf },
    /// Released to its watchdog: nothing is left for this process to stop.
    Released,
}

impl Watchdog {
    /// Starts a watchdog that removes `dir` at the end of `lifetime`.
    pub fn start(dir: &Path, lifetime: &Lifetime) -> anyhow::Result<Self> {
        let mut command = Command::new("sh");
        if let Lifetime::Shared { owner, also_remove } = lifetime {
            command.env("OWNER", owner.to_string());
            command.env("ALSO_REMOVE", also_remove);
        }
        let mut child = command
            .args(["-c", WATCHDOG])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the watchdog (sh)")?;
        let mut pipe = child.stdin.take().context("the watchdog's stdin")?;
        let dir = dir.to_str().context("the folder's name is not UTF-8")?;
        writeln!(pipe, "{dir}").context("telling the watchdog the folder")?;
        Ok(Self {
            child,
            pipe: Some(pipe),
        })
    }

    /// The process group the plane's processes join.
    pub fn group(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the watchdog about a process of its group.
    pub fn watch(&mut self, pid: u32) -> anyhow::Result<()> {
        let pipe = self.pipe.as_mut().context("the watchdog was stopped")?;
        writeln!(pipe, "{pid}").context("telling the watchdog a pid")
    }

    /// Ends the watchdog without its clean-up (the caller stopped the processes and removes
    /// the folder).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(self.pipe.take());
    }

    /// Leaves the plane to the watchdog (closes its pipe): a watchdog of a shared plane then
    /// waits for its owner to end.
    pub fn release(mut self) {
        drop(self.pipe.take());
    }

    /// Closes its pipe as the death of this process would, and waits for it to clean up.
    #[cfg(test)]
    fn orphan(&mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// Starts `program` with `args` in the watchdog's process group and tells the watchdog its pid;
/// stdout and stderr go to `<dir>/<name>.log`.
pub(crate) fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    dir: &Path,
    watchdog: &mut Watchdog,
) -> anyhow::Result<Process> {
    let log = dir.join(format!("{name}.log"));
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("log file")?)
        .stderr(file)
        .process_group(watchdog.group())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let process = Process {
        name: name.to_string(),
        child,
        log,
    };
    watchdog.watch(process.pid())?;
    Ok(process)
}

/// Stops every process: SIGTERM to all at once, then SIGKILL to those still running after
/// `grace` ([`STOP_GRACE`]); reaps them all.
pub(crate) fn stop_all<'a>(processes: impl IntoIterator<Item = &'a mut Process>, grace: Duration) {
    let mut processes: Vec<&mut Process> = processes.into_iter().collect();
    let running: Vec<String> = processes
        .iter_mut()
        .filter_map(|process| process.exited().is_none().then(|| process.pid().to_string()))
        .collect();
    if !running.is_empty() {
        // std can only send SIGKILL; `kill` sends the polite one without `unsafe` or libc.
        let _ = Command::new("kill")
            .arg("-TERM")
            .args(&running)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + grace;
    for process in processes.iter_mut() {
        while process.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process.exited().is_none() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// Removes `dir` and everything in it, quietly (a plane's folder at stop).
pub(crate) fn remove_dir(dir: &Path) {
    if let Err(err) = fs::remove_dir_all(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("control plane: cannot remove {}: {err}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(8).unwrap();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vcsync-cp-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn alive(pid: u32) -> bool {
        // A zombie still has /proc/<pid>; its state is Z.
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.starts_with(" Z"))
        })
    }

    #[test]
    fn stop_ends_a_process_that_ignores_sigterm() {
        let dir = scratch("stop");
        let mut watchdog = Watchdog::start(&dir, &Lifetime::ThisProcess).unwrap();
        // An ignored signal stays ignored across exec: `sleep` ignores SIGTERM too.
        let args = ["-c", "trap '' TERM; echo up; exec sleep 60"].map(String::from);
        let process = spawn("stubborn", Path::new("sh"), &args, &dir, &mut watchdog).unwrap();
        let mut processes = vec![process];
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let grace = Duration::from_millis(300);
        stop_all(&mut processes, grace);
        assert!(processes[0].exited().is_some());
        assert!(started.elapsed() >= grace);
        assert_eq!(processes[0].log_tail(5), "up");
        watchdog.stop();
        assert!(dir.exists(), "a normal stop leaves the folder to its owner");
        remove_dir(&dir);
        assert!(!dir.exists());
    }

    #[test]
    fn an_orphaned_watchdog_kills_its_group_and_removes_the_folder() {
        let dir = scratch("orphan");
        let mut watchdog = Watchdog::start(&dir, &Lifetime::ThisProcess).unwrap();
        let args = ["60".to_string()];
        let watched = spawn("watched", Path::new("sleep"), &args, &dir, &mut watchdog).unwrap();
        // In the group without the watchdog knowing its pid: the group kill gets it.
        let stray = Command::new("sleep")
            .arg("60")
            .process_group(watchdog.group())
            .spawn()
            .unwrap();
        let pids = [watched.pid(), stray.id()];
        watchdog.orphan();
        // The sleeps are this test's children, so they stay zombies until reaped here.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !pids.iter().any(|&pid| alive(pid)),
            "{pids:?} outlived the watchdog"
        );
        assert!(!dir.exists(), "the watchdog removes the folder");
        drop((watched, stray));
    }
}
