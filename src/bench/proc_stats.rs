//! What /proc says of a process: its CPU seconds and memory.

use std::process::Command;

use anyhow::Context;

/// CPU seconds, current and peak resident memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProcStats {
    pub(super) cpu_s: f64,
    pub(super) rss: u64,
    pub(super) hwm: u64,
}

pub(super) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

pub(super) fn proc_stats(pid: u32, ticks: f64) -> anyhow::Result<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after "(comm) ": state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu_s = (tick(11) + tick(12)) / ticks;
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok(ProcStats {
        cpu_s,
        rss: kb("VmRSS:"),
        hwm: kb("VmHWM:"),
    })
}
