//! Giving freed heap memory back to the kernel after a burst.
//!
//! A connection flood allocates tens of thousands of small buffers across
//! the HTTP workers' malloc arenas; when the connections close, glibc's
//! allocator keeps the freed memory for reuse and returns to the kernel
//! only what lies at the very top of each heap, so one live allocation
//! above the freed ones pins them all: the process's RSS stays at the
//! flood's peak for good (`docs/BENCHMARKS.md`, "Connection floods").
//! `malloc_trim(0)` releases the free pages inside every arena too. It
//! costs a walk over the free lists, so it runs only when RSS stands
//! [`TRIM_STEP_BYTES`] above the lowest it has been, checked on the memory
//! guard's interval, and less often while trims give nothing back (an
//! appliance that has really grown). [`TrimPolicy`] is that decision,
//! pure; [`release_free_heap`] is the call.

/// RSS above the lowest seen after a trim that makes a check trim.
pub const TRIM_STEP_BYTES: u64 = 4 * 1024 * 1024;

/// The longest pause, in checks, between trims that give nothing back.
pub const MAX_COOLDOWN_CHECKS: u32 = 4;

/// When to trim. RSS at least `step` above the floor (the lowest RSS seen,
/// before or after a trim) calls for one: during a burst a trim gives
/// little, after it the floor comes back. A trim that gives back less than
/// `step` doubles the checks skipped before the next one (up to
/// [`MAX_COOLDOWN_CHECKS`]), so an appliance that has legitimately grown
/// is not trimmed at every check; one that gives back resets the pause.
#[derive(Debug, Clone)]
pub struct TrimPolicy {
    floor: Option<u64>,
    step: u64,
    cooldown: u32,
    skip: u32,
}

impl Default for TrimPolicy {
    fn default() -> Self {
        TrimPolicy::new(TRIM_STEP_BYTES)
    }
}

impl TrimPolicy {
    pub fn new(step: u64) -> TrimPolicy {
        TrimPolicy {
            floor: None,
            step,
            cooldown: 0,
            skip: 0,
        }
    }

    /// Whether an RSS of `rss` bytes calls for a trim now.
    pub fn should_trim(&mut self, rss: u64) -> bool {
        let floor = *self.floor.get_or_insert(rss);
        if rss < floor.saturating_add(self.step) {
            self.floor = Some(floor.min(rss));
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Records a trim's effect: RSS just before and just after it.
    pub fn trimmed(&mut self, before: u64, after: u64) {
        if before.saturating_sub(after) >= self.step {
            self.cooldown = 0;
        } else {
            self.cooldown = (self.cooldown.max(1) * 2).min(MAX_COOLDOWN_CHECKS);
        }
        self.skip = self.cooldown;
        if let Some(f) = &mut self.floor {
            *f = (*f).min(after);
        }
    }
}

/// Returns the allocator's free memory to the kernel, where the allocator
/// can (glibc); elsewhere does nothing. Whether anything was released.
pub fn release_free_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it
        // locks each arena in turn).
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_above_the_floor_and_backs_off_when_nothing_comes_back() {
        let mb = 1024 * 1024;
        let mut p = TrimPolicy::new(4 * mb);
        assert!(!p.should_trim(20 * mb), "the first look sets the floor");
        assert!(!p.should_trim(23 * mb));
        // A burst: trims give little while it lasts, and back off.
        assert!(p.should_trim(120 * mb));
        p.trimmed(120 * mb, 119 * mb);
        assert!(!p.should_trim(130 * mb), "one check skipped");
        assert!(!p.should_trim(130 * mb), "two");
        assert!(p.should_trim(130 * mb));
        p.trimmed(130 * mb, 129 * mb);
        for _ in 0..MAX_COOLDOWN_CHECKS {
            assert!(!p.should_trim(130 * mb));
        }
        assert!(p.should_trim(130 * mb));
        p.trimmed(130 * mb, 129 * mb);
        for _ in 0..MAX_COOLDOWN_CHECKS {
            assert!(!p.should_trim(130 * mb), "the pause stops growing");
        }
        // Over: the next trim gives the burst back, and the pause resets.
        assert!(p.should_trim(130 * mb));
        p.trimmed(130 * mb, 22 * mb);
        assert!(!p.should_trim(22 * mb), "within a step of the floor");
        assert!(
            p.should_trim(25 * mb),
            "no pause after a trim that gave back"
        );
    }

    #[test]
    fn a_grown_appliance_is_trimmed_rarely() {
        let mb = 1024 * 1024;
        let mut p = TrimPolicy::new(4 * mb);
        assert!(!p.should_trim(20 * mb));
        let mut trims = 0;
        for _ in 0..1000 {
            if p.should_trim(60 * mb) {
                trims += 1;
                p.trimmed(60 * mb, 60 * mb);
            }
        }
        let most = 1000 / (MAX_COOLDOWN_CHECKS as usize + 1) + 2;
        assert!(trims <= most, "{trims} trims in 1000 checks");
    }

    #[test]
    fn freed_memory_can_be_released() {
        // Many small blocks, all freed: what a closed flood leaves behind.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|_| vec![1u8; 2048]).collect();
        let keep: Vec<u8> = std::iter::repeat_n(2u8, 64).collect();
        drop(blocks);
        let released = release_free_heap();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(released, "glibc had free pages to return");
        }
        assert_eq!(keep[0], 2);
    }
}
