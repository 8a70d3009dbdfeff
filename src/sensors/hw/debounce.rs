//! Debouncing a digital input, as a pure function over timestamped edges.
//!
//! A mechanical contact bounces for a few milliseconds when it closes or
//! opens, and a PIR output can glitch. A level counts only once the line has
//! held it for the debounce window; the change is then dated to the edge
//! that started it, not to when it was confirmed. Edges come from an
//! interrupt callback and are judged later, at each read, so the debouncer
//! also takes "now": a level that has held until now for a whole window is
//! accepted even though no later edge has arrived to close it.

/// One raw transition of the input, already translated to the logical
/// level (`active`, after any active-low inversion), at epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub ts_ms: i64,
    pub active: bool,
}

/// A debounced change of the logical level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// When the line first took the new level.
    pub ts_ms: i64,
    pub active: bool,
}

/// The debouncer's state between reads: the accepted level, and the raw
/// level with when it began (still to be confirmed if it differs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debouncer {
    window_ms: i64,
    stable: bool,
    raw: bool,
    raw_since: i64,
}

impl Debouncer {
    /// Starts from a known level at `now_ms` (the pin read at start-up).
    pub fn new(window_ms: u64, active: bool, now_ms: i64) -> Debouncer {
        Debouncer {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            stable: active,
            raw: active,
            raw_since: now_ms,
        }
    }

    #[cfg(test)]
    /// The accepted (debounced) level.
    pub fn level(&self) -> bool {
        self.stable
    }

    /// Feeds `edges` (in arrival order) and appends to `out` every change
    /// confirmed by `now_ms`. A level that has not yet held for the window
    /// stays pending for the next call. Edges dated before the current raw
    /// level began (late deliveries) are treated as happening at that time,
    /// so the debouncer's view of time never runs backwards.
    pub fn advance(&mut self, edges: &[Edge], now_ms: i64, out: &mut Vec<Change>) {
        for edge in edges {
            if edge.active == self.raw {
                // A repeated edge (one in between was missed): no new level.
                continue;
            }
            let ts = edge.ts_ms.max(self.raw_since);
            self.settle(ts, out);
            self.raw = edge.active;
            self.raw_since = ts;
        }
        self.settle(now_ms, out);
    }

    /// Accepts the pending raw level if it has held from `raw_since` to `until`.
    fn settle(&mut self, until: i64, out: &mut Vec<Change>) {
        if self.raw != self.stable && until.saturating_sub(self.raw_since) >= self.window_ms {
            self.stable = self.raw;
            out.push(Change {
                ts_ms: self.raw_since,
                active: self.raw,
            });
        }
    }
}

#[cfg(test)]
/// Debounces a whole edge history from a known starting level: the pure
/// form of [`Debouncer`], for one-shot use.
pub fn debounce(
    window_ms: u64,
    initial: bool,
    start_ms: i64,
    edges: &[Edge],
    now_ms: i64,
) -> Vec<Change> {
    let mut d = Debouncer::new(window_ms, initial, start_ms);
    let mut out = Vec::new();
    d.advance(edges, now_ms, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ts_ms: i64, active: bool) -> Edge {
        Edge { ts_ms, active }
    }

    fn c(ts_ms: i64, active: bool) -> Change {
        Change { ts_ms, active }
    }

    #[test]
    fn a_clean_press_and_release_are_two_changes_at_their_edges() {
        let out = debounce(50, false, 0, &[e(100, true), e(400, false)], 1000);
        assert_eq!(out, [c(100, true), c(400, false)]);
    }

    #[test]
    fn contact_bounce_collapses_into_one_change_dated_at_the_settling_edge() {
        // Closing a contact: it chatters for 6 ms, then holds.
        let edges = [
            e(100, true),
            e(101, false),
            e(103, true),
            e(104, false),
            e(106, true),
        ];
        let out = debounce(20, false, 0, &edges, 500);
        assert_eq!(out, [c(106, true)]);
    }

    #[test]
    fn a_glitch_shorter_than_the_window_is_ignored() {
        let out = debounce(50, false, 0, &[e(100, true), e(130, false)], 1000);
        assert!(out.is_empty(), "{out:?}");
        // Exactly the window is long enough.
        let out = debounce(50, false, 0, &[e(100, true), e(150, false)], 1000);
        assert_eq!(out, [c(100, true), c(150, false)]);
    }

    #[test]
    fn a_level_is_confirmed_by_time_alone_once_it_has_held_long_enough() {
        let mut d = Debouncer::new(50, false, 0);
        let mut out = Vec::new();
        // The press arrives, but at the read only 20 ms have passed: pending.
        d.advance(&[e(100, true)], 120, &mut out);
        assert!(out.is_empty());
        assert!(!d.level());
        // The next read, with no new edge, confirms it, dated at the edge.
        d.advance(&[], 200, &mut out);
        assert_eq!(out, [c(100, true)]);
        assert!(d.level());
    }

    #[test]
    fn repeated_edges_of_one_level_do_not_restart_the_window() {
        // A rising edge was missed between two falling ones.
        let out = debounce(50, true, 0, &[e(100, false), e(120, false)], 160);
        assert_eq!(out, [c(100, false)]);
    }

    #[test]
    fn late_edges_never_move_time_backwards() {
        let mut d = Debouncer::new(10, false, 1000);
        let mut out = Vec::new();
        // An edge dated before the debouncer started (delivered late).
        d.advance(&[e(990, true)], 1005, &mut out);
        assert!(out.is_empty());
        d.advance(&[], 1010, &mut out);
        assert_eq!(out, [c(1000, true)]);
    }

    #[test]
    fn bouncing_back_to_the_accepted_level_emits_nothing() {
        let out = debounce(30, true, 0, &[e(10, false), e(20, true)], 1000);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn changes_are_strictly_ordered_in_time() {
        // A noisy but slow signal: every level held for 1..=60 ms.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut ts = 0;
        let mut level = false;
        let mut edges = Vec::new();
        for _ in 0..500 {
            ts += rng.i64(1..=60);
            level = !level;
            edges.push(e(ts, level));
        }
        let out = debounce(25, false, 0, &edges, ts + 1000);
        assert!(!out.is_empty());
        assert!(out.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms), "{out:?}");
        assert!(
            out.windows(2).all(|w| w[0].active != w[1].active),
            "{out:?}"
        );
        // Every accepted level held for at least the window.
        for ch in &out {
            if let Some(next) = edges.iter().find(|x| x.ts_ms > ch.ts_ms) {
                assert!(next.ts_ms - ch.ts_ms >= 25, "{ch:?} ended at {next:?}");
            }
        }
    }
}
