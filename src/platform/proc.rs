//! What can be read of a process from `/proc`: CPU time, resident memory
//! and bytes written to storage; for the appliance's own figures and for
//! benchmarks observing it.

use std::io;

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every
/// mainstream architecture (x86_64 and aarch64 included).
pub const TICKS_PER_SEC: f64 = 100.0;

/// A snapshot of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// User plus system CPU time, in ticks.
    pub cpu_ticks: u64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
    /// Bytes the process caused to be written to storage (`write_bytes`).
    pub write_bytes: u64,
    /// Bytes passed to write calls, cached or not (`wchar`).
    pub wchar: u64,
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl ProcStats {
    /// Reads `/proc/<pid>/{stat,status,io}`.
    pub fn read(pid: u32) -> io::Result<ProcStats> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let io_text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        Ok(ProcStats {
            cpu_ticks: parse_cpu_ticks(&stat)
                .ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat")))?,
            rss_kib: field(&status, "VmRSS:").unwrap_or(0),
            hwm_kib: field(&status, "VmHWM:").unwrap_or(0),
            write_bytes: field(&io_text, "write_bytes:").unwrap_or(0),
            wchar: field(&io_text, "wchar:").unwrap_or(0),
        })
    }

    #[cfg(any(test, feature = "bench"))]
    /// CPU use between two snapshots `secs` apart, in percent of one core.
    pub fn cpu_percent(before: &ProcStats, after: &ProcStats, secs: f64) -> f64 {
        let ticks = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
        if secs <= 0.0 {
            0.0
        } else {
            ticks / TICKS_PER_SEC / secs * 100.0
        }
    }
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 overall, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_this_process() {
        let me = ProcStats::read(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
        let busy = ProcStats {
            cpu_ticks: me.cpu_ticks + 50,
            ..me
        };
        assert_eq!(ProcStats::cpu_percent(&me, &busy, 1.0), 50.0);
    }
}
