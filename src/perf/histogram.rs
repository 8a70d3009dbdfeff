//! A lock-free latency histogram: log-linear buckets (16 per power of two)
//! over microseconds, so any percentile is within 1/16 (6.25 %) of the true
//! value, memory is constant (a few KiB) however many samples arrive, and
//! recording from any thread is a handful of relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two.
const SUB: u64 = 16;
const SUB_BITS: u32 = 4;
/// Values up to 2^MAX_EXP µs (about 9.5 hours) are bucketed; larger ones
/// land in the last bucket (and still count exactly in `max` and `sum`).
const MAX_EXP: u32 = 35;
const BUCKETS: usize = (SUB + (MAX_EXP as u64 - SUB_BITS as u64 + 1) * SUB) as usize;

/// Counts of durations by bucket, plus count, sum and max.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (us >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as usize
}

/// The smallest and largest value of a bucket.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    let low = (1u64 << exp) + sub * width;
    (low, low + width - 1)
}

/// A summary of a histogram at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub sum_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        self.record_us(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn record_us(&self, us: u64) {
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding
    /// that rank, never above the true maximum.
    fn quantile(&self, counts: &[u64], total: u64, q: f64, max: u64) -> u64 {
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_range(i);
                return (lo + (hi - lo) / 2).min(max);
            }
        }
        max
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let sum_us = self.sum_us.load(Ordering::Relaxed);
        let max = self.max_us.load(Ordering::Relaxed);
        Summary {
            count: total,
            sum_us,
            mean_us: if total == 0 {
                0.0
            } else {
                sum_us as f64 / total as f64
            },
            p50_us: self.quantile(&counts, total, 0.50, max),
            p95_us: self.quantile(&counts, total, 0.95, max),
            p99_us: self.quantile(&counts, total, 0.99, max),
            max_us: max,
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_contiguously() {
        let mut expected_low = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_range(i);
            assert_eq!(lo, expected_low, "bucket {i}");
            assert!(hi >= lo);
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi), i);
            expected_low = hi + 1;
        }
    }

    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn percentiles_are_within_one_sixteenth_of_the_exact_ones() {
        let mut rng = fastrand::Rng::with_seed(3);
        // A long-tailed mix: mostly ~200 µs, some ms, a few tens of ms.
        let mut values: Vec<u64> = (0..20_000)
            .map(|_| match rng.u8(..100) {
                0..=89 => rng.u64(100..400),
                90..=98 => rng.u64(1_000..5_000),
                _ => rng.u64(20_000..80_000),
            })
            .collect();
        let h = Histogram::default();
        for v in &values {
            h.record_us(*v);
        }
        values.sort_unstable();
        let s = h.summary();
        for (q, got) in [(0.50, s.p50_us), (0.95, s.p95_us), (0.99, s.p99_us)] {
            let want = exact(&values, q);
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 1.0 / 16.0, "q{q}: {got} vs {want}");
        }
        assert_eq!(s.max_us, *values.last().unwrap());
        assert_eq!(s.count, 20_000);
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((s.mean_us - mean).abs() < 1e-6);
    }

    #[test]
    fn empty_and_huge_values_are_safe() {
        let h = Histogram::default();
        assert_eq!(h.summary(), Summary::default());
        h.record(Duration::from_secs(365 * 86_400));
        let s = h.summary();
        assert_eq!(s.count, 1);
        assert_eq!(s.p99_us, s.max_us.min(s.p99_us));
        assert!(s.max_us >= 365 * 86_400 * 1_000_000);
    }
}
