//! CPU accounting from `/proc` (Linux): a process's CPU time (per-thread scheduler runtime from
//! `schedstat`, and utime+stime), the CPU time of this process's threads by name, and the
//! machine's busy time.

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second of the `/proc/*/stat` times (`getconf CLK_TCK`; 100 on Linux).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// utime+stime of a `stat` line (the fields after the `(comm)`), in clock ticks.
fn stat_ticks(stat: &str, with_children: bool) -> Option<u64> {
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3); utime = field 14 -> f[11], stime f[12], cutime f[13], cstime f[14].
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let mut t = n(11)? + n(12)?;
    if with_children {
        t += n(13)? + n(14)?;
    }
    Some(t)
}

/// utime+stime+cutime+cstime of process `pid` (all its threads, dead ones included, and its
/// waited-for children), in clock ticks.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_ticks(&s, true)
}

/// On-CPU nanoseconds of each live thread of `/proc/<proc_dir>/task` (the first field of
/// `schedstat`: the scheduler's precise runtime, not the tick-sampled utime/stime, which aliases
/// with a paced load), keeping threads whose name starts with `prefix` when one is given.
pub fn threads_ns(proc_dir: &str, prefix: Option<&str>) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{proc_dir}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let p = e.path();
        if let Some(prefix) = prefix {
            let Ok(comm) = fs::read_to_string(p.join("comm")) else {
                continue;
            };
            if !comm.trim_end().starts_with(prefix) {
                continue;
            }
        }
        if let Some(ns) = fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        {
            out.insert(tid, ns);
        }
    }
    out
}

/// CPU seconds between two [`threads_ns`] readings: threads present in both count their
/// difference, threads born in between their whole runtime; threads that exited in between are
/// lost (the long-lived runtime workers that do the work are not).
fn threads_delta_s(a: &HashMap<u32, u64>, b: &HashMap<u32, u64>) -> f64 {
    let ns: u64 = b.iter().map(|(tid, v)| v.saturating_sub(a.get(tid).copied().unwrap_or(0))).sum();
    ns as f64 / 1e9
}

/// (VmRSS, VmHWM) of process `pid`, in KiB.
pub fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// (busy, total) jiffies of all CPUs together, from the first line of `/proc/stat`.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest is in user.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A set of CPU counters taken at one moment.
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot {
    /// The gateway process: utime+stime ticks and per-thread runtimes (when there is one).
    pub server: Option<(u64, HashMap<u32, u64>)>,
    /// Runtimes of this process's mock threads.
    pub mock: HashMap<u32, u64>,
    /// Runtimes of this process's load driver threads.
    pub driver: HashMap<u32, u64>,
    /// Machine-wide busy and total jiffies.
    pub machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    /// Takes the counters now.
    pub fn take(server_pid: Option<u32>, mock_prefix: &str, driver_prefix: &str) -> Self {
        Self {
            server: server_pid.and_then(|pid| process_ticks(pid).map(|t| (t, threads_ns(&pid.to_string(), None)))),
            mock: threads_ns("self", Some(mock_prefix)),
            driver: threads_ns("self", Some(driver_prefix)),
            machine: machine_jiffies(),
        }
    }
}

/// CPU used between two snapshots, in seconds (and the machine's busy share).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUsage {
    /// Seconds of CPU of the gateway process (scheduler runtime of its threads).
    pub server_s: Option<f64>,
    /// The same from utime+stime (tick-sampled: only meaningful over seconds of steady load).
    pub server_ticks_s: Option<f64>,
    /// Seconds of CPU of the mock threads.
    pub mock_s: f64,
    /// Seconds of CPU of the driver threads.
    pub driver_s: f64,
    /// Busy share of all CPUs, 0..1.
    pub machine_busy: Option<f64>,
}

impl CpuUsage {
    /// The usage between `a` and `b` (`b` later).
    pub fn between(a: &CpuSnapshot, b: &CpuSnapshot, tck: u64) -> Self {
        let (server_s, server_ticks_s) = match (&a.server, &b.server) {
            (Some((ta, ra)), Some((tb, rb))) => (
                Some(threads_delta_s(ra, rb)).filter(|_| !rb.is_empty()),
                Some(tb.saturating_sub(*ta) as f64 / tck as f64),
            ),
            _ => (None, None),
        };
        Self {
            server_s: server_s.or(server_ticks_s),
            server_ticks_s,
            mock_s: threads_delta_s(&a.mock, &b.mock),
            driver_s: threads_delta_s(&a.driver, &b.driver),
            machine_busy: match (a.machine, b.machine) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let s = "1234 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 111 222 333 444 20 0 1 0";
        assert_eq!(stat_ticks(s, false), Some(333));
        assert_eq!(stat_ticks(s, true), Some(333 + 777));
    }

    #[test]
    fn reads_own_process() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(machine_jiffies().is_some());
        assert!(memory_kb(std::process::id()).is_some_and(|(rss, hwm)| rss > 0 && hwm >= rss));
        let me = std::thread::current();
        let name = me.name().unwrap_or("main").chars().take(15).collect::<String>();
        let t0 = threads_ns("self", Some(&name));
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        let t1 = threads_ns("self", Some(&name));
        if !t1.is_empty() {
            // schedstat is there (CONFIG_SCHED_INFO): the spin shows up.
            assert!(threads_delta_s(&t0, &t1) > 0.01, "{t0:?} {t1:?}");
        }
    }
}
