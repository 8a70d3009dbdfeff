//! The memory guard's decision, as plain state with an injected clock: the
//! process's resident memory against a soft limit, with hysteresis so that
//! RSS hovering at the limit does not flap, and how often to shed while
//! above it. Reading RSS is the one bit of I/O here ([`rss_bytes`]).
//!
//! Above the limit the Guard actor sheds what vigil can give back without
//! losing an accepted reading: spare queue capacity, SQLite page caches,
//! idle rate-limiter state, and the oldest pending live-feed updates (the
//! clients are told how many they missed).

use std::time::Duration;

use tokio::time::Instant;

/// The limit is left once RSS is below this fraction of it.
pub const RELEASE_FRACTION: f64 = 0.9;
/// While above the limit, shedding is repeated this often.
pub const SHED_REPEAT: Duration = Duration::from_secs(30);

/// The process's resident set size, from `/proc/self/status` (`None` where
/// there is no procfs).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// `Some(true)`: just went above the limit; `Some(false)`: back below.
    pub crossed: Option<bool>,
    /// Shed buffers and caches now.
    pub shed: bool,
}

/// Hysteresis and shedding cadence around a soft limit.
#[derive(Debug, Clone)]
pub struct MemoryWatch {
    soft_limit: u64,
    above: bool,
    last_shed: Option<Instant>,
    sheds: u64,
    last_rss: Option<u64>,
}

impl MemoryWatch {
    pub fn new(soft_limit_bytes: u64) -> MemoryWatch {
        MemoryWatch {
            soft_limit: soft_limit_bytes,
            above: false,
            last_shed: None,
            sheds: 0,
            last_rss: None,
        }
    }

    pub fn above(&self) -> bool {
        self.above
    }

    pub fn sheds(&self) -> u64 {
        self.sheds
    }

    /// Takes a reading of RSS at `now`.
    pub fn observe(&mut self, rss: u64, now: Instant) -> Verdict {
        self.last_rss = Some(rss);
        let crossed = if !self.above && rss >= self.soft_limit {
            self.above = true;
            Some(true)
        } else if self.above && (rss as f64) < self.soft_limit as f64 * RELEASE_FRACTION {
            self.above = false;
            Some(false)
        } else {
            None
        };
        let shed = self.above
            && (crossed == Some(true)
                || self
                    .last_shed
                    .is_none_or(|t| now.saturating_duration_since(t) >= SHED_REPEAT));
        if shed {
            self.last_shed = Some(now);
            self.sheds += 1;
        }
        Verdict { crossed, shed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn reads_vm_rss_in_bytes() {
        let status = "Name:\tvigil\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        // This process has a resident set.
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn crossing_up_sheds_at_once_then_every_repeat_interval() {
        let t0 = Instant::now();
        let mut w = MemoryWatch::new(100 * MIB);
        let v = w.observe(50 * MIB, t0);
        assert_eq!((v.crossed, v.shed), (None, false));
        let v = w.observe(100 * MIB, t0);
        assert_eq!((v.crossed, v.shed), (Some(true), true));
        let v = w.observe(120 * MIB, t0 + Duration::from_secs(5));
        assert_eq!((v.crossed, v.shed), (None, false), "shed recently");
        let v = w.observe(120 * MIB, t0 + SHED_REPEAT);
        assert_eq!((v.crossed, v.shed), (None, true));
        assert_eq!(w.sheds(), 2);
    }

    #[test]
    fn leaving_needs_rss_below_the_release_fraction() {
        let t0 = Instant::now();
        let mut w = MemoryWatch::new(100 * MIB);
        w.observe(101 * MIB, t0);
        // Just under the limit is not enough to leave.
        assert_eq!(w.observe(95 * MIB, t0).crossed, None);
        assert!(w.above());
        let v = w.observe(89 * MIB, t0);
        assert_eq!((v.crossed, v.shed), (Some(false), false));
        // And a rise just under the limit does not re-enter.
        assert_eq!(w.observe(99 * MIB, t0).crossed, None);
        assert_eq!(w.observe(100 * MIB, t0).crossed, Some(true));
    }
}
