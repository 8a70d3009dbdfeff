//! Performance insight: every operation the appliance performs (each
//! sensor's reads, each DbWriter batch, each HTTP route, each WebSocket
//! send, each read query) is timed into a named [`Op`] with a latency
//! histogram, an error count and a unit count (rows, messages); slow read
//! queries are kept with their SQL so that advice can explain them.
//!
//! The figures feed `GET /api/performance/stats`, `/metrics`, and the
//! evidence behind `GET /api/performance/recommendations` ([`advice`]).

pub mod advice;
pub mod histogram;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use histogram::Histogram;

use crate::vocab::check::{ConfigError, positive};
use crate::vocab::clock::{now_ms, rfc3339};

/// Slow queries remembered (distinct SQL texts).
pub const SLOW_QUERIES_KEPT: usize = 50;

/// `[performance]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Read queries slower than this are kept, with their SQL, as evidence
    /// (0 keeps every query, for diagnosis).
    pub slow_query_ms: u64,
    /// The share of one core sensor polling may use before longer intervals
    /// are recommended.
    pub sensor_cpu_budget_percent: f64,
    /// A WAL larger than this is worth a checkpoint.
    pub wal_large_mib: u64,
    /// Free pages above this share of the database are worth reclaiming.
    pub freelist_percent: f64,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            slow_query_ms: 100,
            sensor_cpu_budget_percent: 10.0,
            wal_large_mib: 64,
            freelist_percent: 20.0,
        }
    }
}

impl PerformanceConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("performance.wal_large_mib", self.wal_large_mib)?;
        for (key, v) in [
            (
                "performance.sensor_cpu_budget_percent",
                self.sensor_cpu_budget_percent,
            ),
            ("performance.freelist_percent", self.freelist_percent),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err(ConfigError::invalid(
                    key,
                    format!("{v} is not a percentage above 0"),
                ));
            }
        }
        Ok(())
    }
}

/// One kind of operation.
#[derive(Default)]
pub struct Op {
    pub latency: Histogram,
    errors: AtomicU64,
    units: AtomicU64,
}

impl Op {
    /// Records one execution and whether it succeeded.
    pub fn record(&self, took: Duration, ok: bool) {
        self.latency.record(took);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds things the operation handled (rows committed, messages sent).
    pub fn add_units(&self, n: u64) {
        self.units.fetch_add(n, Ordering::Relaxed);
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn units(&self) -> u64 {
        self.units.load(Ordering::Relaxed)
    }
}

/// An operation's figures, as the API shows them.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct OpStats {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    /// Rows, messages... the operation handled (0 where that means nothing).
    pub units: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub total_ms: f64,
}

/// A read query that took longer than `slow_query_ms`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SlowQuery {
    pub name: String,
    pub sql: String,
    pub count: u64,
    pub max_ms: f64,
    pub last_ms: f64,
    pub last_at: String,
}

/// The registry of operations. Cheap to share; record from any thread.
pub struct Perf {
    ops: RwLock<BTreeMap<String, Arc<Op>>>,
    slow: Mutex<VecDeque<SlowQuery>>,
    /// `performance.slow_query_ms`; changed live by a reload.
    slow_after_ms: AtomicU64,
    /// The `[performance]` section in force, for the recommendations.
    config: RwLock<PerformanceConfig>,
}

impl Perf {
    pub fn new(slow_query_ms: u64) -> Perf {
        Perf {
            ops: RwLock::default(),
            slow: Mutex::default(),
            slow_after_ms: AtomicU64::new(slow_query_ms),
            config: RwLock::new(PerformanceConfig {
                slow_query_ms,
                ..PerformanceConfig::default()
            }),
        }
    }

    /// A registry working from the `[performance]` section.
    pub fn with_config(config: PerformanceConfig) -> Perf {
        let perf = Perf::new(config.slow_query_ms);
        perf.set_config(config);
        perf
    }

    /// The `[performance]` section in force.
    pub fn config(&self) -> PerformanceConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies a new `[performance]` section from now on (a reload).
    pub fn set_config(&self, config: PerformanceConfig) {
        self.slow_after_ms
            .store(config.slow_query_ms, Ordering::Relaxed);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// The operation called `name`, created on first use. Callers that
    /// record often keep the returned handle.
    pub fn op(&self, name: &str) -> Arc<Op> {
        if let Some(op) = self.ops.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return op.clone();
        }
        self.ops
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Records a read query under `db.<name>`; if it was slow, keeps its SQL
    /// (built only then).
    pub fn record_query(&self, name: &str, took: Duration, ok: bool, sql: impl FnOnce() -> String) {
        self.op(&format!("db.{name}")).record(took, ok);
        if took < Duration::from_millis(self.slow_after_ms.load(Ordering::Relaxed)) {
            return;
        }
        let sql = sql();
        let ms = took.as_secs_f64() * 1000.0;
        let mut slow = self.slow.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = slow.iter_mut().find(|q| q.sql == sql) {
            q.count += 1;
            q.max_ms = q.max_ms.max(ms);
            q.last_ms = ms;
            q.last_at = rfc3339(now_ms());
            return;
        }
        if slow.len() == SLOW_QUERIES_KEPT {
            slow.pop_front();
        }
        slow.push_back(SlowQuery {
            name: name.to_owned(),
            sql,
            count: 1,
            max_ms: ms,
            last_ms: ms,
            last_at: rfc3339(now_ms()),
        });
    }

    pub fn slow_queries(&self) -> Vec<SlowQuery> {
        self.slow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Every operation's figures, by name.
    pub fn stats(&self) -> Vec<OpStats> {
        let ops = self.ops.read().unwrap_or_else(|p| p.into_inner());
        ops.iter()
            .map(|(name, op)| {
                let s = op.latency.summary();
                let ms = |us: u64| us as f64 / 1000.0;
                OpStats {
                    name: name.clone(),
                    count: s.count,
                    errors: op.errors(),
                    units: op.units(),
                    mean_ms: s.mean_us / 1000.0,
                    p50_ms: ms(s.p50_us),
                    p95_ms: ms(s.p95_us),
                    p99_ms: ms(s.p99_us),
                    max_ms: ms(s.max_us),
                    total_ms: ms(s.sum_us),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_shared_by_name_and_count_errors_and_units() {
        let p = Perf::new(100);
        let a = p.op("db.commit");
        a.record(Duration::from_millis(2), true);
        p.op("db.commit").record(Duration::from_millis(4), false);
        a.add_units(500);
        let s = &p.stats()[0];
        assert_eq!(
            (s.name.as_str(), s.count, s.errors, s.units),
            ("db.commit", 2, 1, 500)
        );
        assert!(s.max_ms >= 3.9 && s.mean_ms > 2.5, "{s:?}");
    }

    #[test]
    fn only_slow_queries_are_kept_with_their_sql() {
        let p = Perf::new(50);
        p.record_query("q", Duration::from_millis(10), true, || {
            panic!("not built when fast")
        });
        p.record_query("q", Duration::from_millis(80), true, || "SELECT 1".into());
        p.record_query("q", Duration::from_millis(90), true, || "SELECT 1".into());
        let slow = p.slow_queries();
        assert_eq!(slow.len(), 1);
        assert_eq!((slow[0].count, slow[0].max_ms), (2, 90.0));
        assert_eq!(p.op("db.q").latency.count(), 3);
    }

    #[test]
    fn percentages_are_checked() {
        let c = PerformanceConfig {
            freelist_percent: 0.0,
            ..PerformanceConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("performance.freelist_percent")
        );
    }
}
