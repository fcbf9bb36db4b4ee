//! CPU time and memory of a process from `/proc` (Linux).

use serde::Serialize;

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` in MiB.
    pub mem_total_mb: f64,
    /// `uname -r`-like kernel release, when readable.
    pub kernel: String,
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_total_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| field_kb(&s, "MemTotal:"))
        .map_or(0.0, |kb| kb as f64 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_total_mb,
        kernel,
    }
}

fn field_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l[key.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident set size of `pid` in KiB (`VmRSS`), or 0.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| field_kb(&s, "VmRSS:"))
        .unwrap_or(0)
}

/// Anonymous resident memory of `pid` in KiB (`RssAnon`: heap and stacks, no file pages), or 0.
pub fn rss_anon_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| field_kb(&s, "RssAnon:"))
        .unwrap_or(0)
}

/// Peak resident set size of `pid` in KiB since it started (`VmHWM`), or 0.
pub fn hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| field_kb(&s, "VmHWM:"))
        .unwrap_or(0)
}

/// Clock ticks per second for `/proc/<pid>/stat` (from `getconf CLK_TCK`, else 100).
pub fn ticks_per_sec() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds of `pid` (including its reaped children: no), or 0.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks_per_sec()
}

/// Fields of `/proc/<pid>/stat` after the `(comm)`: index 0 is the state (field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rfind(')').map(|i| &stat[i + 1..])?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Direct children of `ppid` (scans `/proc`).
pub fn children(ppid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid)
                .and_then(|f| f.get(1).and_then(|v| v.parse::<u32>().ok()))
                .is_some_and(|p| p == ppid)
        })
        .collect()
}

/// CPU seconds of a server and its worker processes, as PostgreSQL runs them: the
/// postmaster's own user + system time, its reaped children's (`cutime` + `cstime`: backends
/// that exited) and every live child's user + system time.
pub fn tree_cpu_secs(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    let field = |i: usize| -> f64 { f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // utime 14, stime 15, cutime 16, cstime 17 (1-based) = indices 11..=14 here.
    let own = (field(11) + field(12) + field(13) + field(14)) / ticks_per_sec();
    own + children(pid).into_iter().map(cpu_secs).sum::<f64>()
}
