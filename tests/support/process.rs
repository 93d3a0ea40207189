//! A process's footprint from `/proc`: memory, open files, threads, and
//! the machine's load, for the benches that watch the operator.
use serde_json::{Value, json};

fn status_field(pid: u32, name: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `VmHWM` and `VmRSS` of a process, in MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    Some((
        status_field(pid, "VmHWM:")? / 1024.0,
        status_field(pid, "VmRSS:")? / 1024.0,
    ))
}

/// How many file descriptors the process holds open.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The process's operating-system threads.
pub fn threads(pid: u32) -> Option<usize> {
    status_field(pid, "Threads:").map(|n| n as usize)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let values: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!(values)
}
