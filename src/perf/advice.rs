//! Recommendations derived from measured evidence, as a pure function:
//! the caller gathers [`Evidence`] (database pragmas, query plans of the
//! recorded slow queries, sensor timings, process CPU, queue drops) and
//! [`recommend`] turns it into advice. Every recommendation carries the
//! numbers that triggered it; with no evidence there is no advice.

use serde::Serialize;
use serde_json::json;

use super::{PerformanceConfig, SlowQuery};

/// A slow query and how SQLite plans it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlannedQuery {
    pub query: SlowQuery,
    /// `EXPLAIN QUERY PLAN` detail lines.
    pub plan: Vec<String>,
}

/// One sensor's measured polling cost.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SensorLoad {
    pub name: String,
    pub interval_ms: u64,
    pub reads: u64,
    pub mean_read_ms: f64,
}

/// Everything the advice is derived from.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Evidence {
    pub page_size: u64,
    pub page_count: u64,
    pub freelist_count: u64,
    pub db_bytes: u64,
    pub wal_bytes: u64,
    /// Rows in `readings` now, where counting them is affordable.
    pub readings_rows: Option<u64>,
    /// Rows in `readings` when statistics were last gathered (`ANALYZE`);
    /// `None` if never.
    pub readings_analyzed_rows: Option<u64>,
    pub slow_queries: Vec<PlannedQuery>,
    pub sensors: Vec<SensorLoad>,
    /// vigil's own CPU use, percent of one core, since it started.
    pub process_cpu_percent: Option<f64>,
    pub queue_dropped: u64,
    pub queue_capacity: usize,
    /// The database size cap, if one is configured.
    pub max_db_bytes: Option<u64>,
}

/// One piece of advice.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Recommendation {
    pub id: &'static str,
    /// `high`, `medium` or `low`.
    pub priority: &'static str,
    pub title: String,
    pub action: String,
    pub evidence: serde_json::Value,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The advice the evidence supports, most urgent first.
pub fn recommend(e: &Evidence, cfg: &PerformanceConfig) -> Vec<Recommendation> {
    let mut out = Vec::new();

    if e.page_count > 100 {
        let free = e.freelist_count as f64 / e.page_count as f64 * 100.0;
        if free > cfg.freelist_percent {
            out.push(Recommendation {
                id: "reclaim_free_pages",
                priority: "medium",
                title: format!("{free:.0} % of the database file is free pages"),
                action: format!(
                    "Run POST /api/admin/optimize (or `vigil optimize`) to reclaim {:.1} MiB with an incremental vacuum.",
                    e.freelist_count as f64 * e.page_size as f64 / MIB
                ),
                evidence: json!({
                    "page_count": e.page_count,
                    "freelist_count": e.freelist_count,
                    "page_size": e.page_size,
                    "free_percent": free,
                    "threshold_percent": cfg.freelist_percent,
                }),
            });
        }
    }

    match (e.readings_rows, e.readings_analyzed_rows) {
        (Some(rows), None) if rows > 1000 => out.push(Recommendation {
            id: "analyze",
            priority: "medium",
            title: "the query planner has no statistics for the readings table".into(),
            action: "Run POST /api/admin/optimize (it runs ANALYZE where statistics are stale)."
                .into(),
            evidence: json!({ "readings_rows": rows, "analyzed_rows": null }),
        }),
        (Some(rows), Some(analyzed)) if rows > 1000 && rows > analyzed.saturating_mul(2) => out
            .push(Recommendation {
                id: "analyze",
                priority: "low",
                title: format!(
                    "statistics describe {analyzed} readings; the table now holds {rows}"
                ),
                action:
                    "Run POST /api/admin/optimize to refresh the planner's statistics (ANALYZE)."
                        .into(),
                evidence: json!({ "readings_rows": rows, "analyzed_rows": analyzed }),
            }),
        _ => {}
    }

    for q in &e.slow_queries {
        let Some(table) = full_scan(&q.plan) else {
            continue;
        };
        let columns = filter_columns(&q.query.sql);
        if columns.is_empty() {
            continue;
        }
        out.push(Recommendation {
            id: "index_for_slow_query",
            priority: "high",
            title: format!(
                "`{}` scans the whole {table} table ({} slow runs, up to {:.0} ms)",
                q.query.name, q.query.count, q.query.max_ms
            ),
            action: format!(
                "Add an index: CREATE INDEX {table}_by_{} ON {table} ({});",
                columns.join("_"),
                columns.join(", ")
            ),
            evidence: json!({
                "sql": q.query.sql,
                "plan": q.plan,
                "slow_runs": q.query.count,
                "max_ms": q.query.max_ms,
            }),
        });
    }

    let busy: Vec<(&SensorLoad, f64)> = e
        .sensors
        .iter()
        .filter(|s| s.reads > 0 && s.interval_ms > 0)
        .map(|s| (s, s.mean_read_ms / s.interval_ms as f64 * 100.0))
        .collect();
    let duty: f64 = busy.iter().map(|(_, d)| d).sum();
    if let Some(cpu) = e.process_cpu_percent
        && duty > cfg.sensor_cpu_budget_percent
        && cpu > cfg.sensor_cpu_budget_percent
    {
        let stretch = duty / cfg.sensor_cpu_budget_percent;
        let mut top = busy.clone();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Only the sensors that carry a real share of the load.
        let advice: Vec<String> = top
            .iter()
            .filter(|(_, d)| *d >= duty / 10.0)
            .take(3)
            .map(|(s, _)| {
                format!(
                    "{}: {} ms → {} ms",
                    s.name,
                    s.interval_ms,
                    (s.interval_ms as f64 * stretch).round() as u64
                )
            })
            .collect();
        out.push(Recommendation {
            id: "longer_intervals",
            priority: "medium",
            title: format!(
                "sensor reads keep the appliance busy {duty:.0} % of the time (budget {:.0} %)",
                cfg.sensor_cpu_budget_percent
            ),
            action: format!(
                "Lengthen the busiest sensors' interval_ms: {}.",
                advice.join("; ")
            ),
            evidence: json!({
                "process_cpu_percent": cpu,
                "sensor_busy_percent": duty,
                "budget_percent": cfg.sensor_cpu_budget_percent,
                "sensors": top.iter().map(|(s, d)| json!({
                    "name": s.name, "interval_ms": s.interval_ms,
                    "mean_read_ms": s.mean_read_ms, "busy_percent": d,
                })).collect::<Vec<_>>(),
            }),
        });
    }

    if let Some(cap) = e.max_db_bytes.filter(|c| *c > 0) {
        let used = (e.db_bytes + e.wal_bytes) as f64 / cap as f64 * 100.0;
        if used >= 90.0 {
            out.push(Recommendation {
                id: "near_size_cap",
                priority: "high",
                title: format!("the database uses {used:.0} % of its size cap"),
                action: "Shorten retention, raise storage.max_db_mb, or move the database to a larger disk; older raw readings are being pruned early.".into(),
                evidence: json!({ "db_bytes": e.db_bytes, "wal_bytes": e.wal_bytes, "cap_bytes": cap }),
            });
        }
    }

    if e.wal_bytes > cfg.wal_large_mib * 1024 * 1024 {
        out.push(Recommendation {
            id: "checkpoint",
            priority: "low",
            title: format!("the write-ahead log has grown to {:.1} MiB", e.wal_bytes as f64 / MIB),
            action: "Run POST /api/admin/optimize: its wal_checkpoint(TRUNCATE) folds the log into the database; a long-running reader may be holding checkpoints back.".into(),
            evidence: json!({ "wal_bytes": e.wal_bytes, "threshold_mib": cfg.wal_large_mib }),
        });
    }

    if e.queue_dropped > 0 {
        out.push(Recommendation {
            id: "queue_overflow",
            priority: "high",
            title: format!("{} readings were dropped because the ingest queue was full", e.queue_dropped),
            action: format!(
                "Find why commits fell behind (see /health and /api/performance/stats db.commit); if bursts are expected, raise storage.queue_capacity above {}.",
                e.queue_capacity
            ),
            evidence: json!({ "dropped": e.queue_dropped, "queue_capacity": e.queue_capacity }),
        });
    }

    let rank = |p: &str| match p {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    };
    out.sort_by_key(|r| rank(r.priority));
    out
}

/// The table a plan scans without an index, if any.
pub fn full_scan(plan: &[String]) -> Option<String> {
    plan.iter().find_map(|line| {
        let rest = line.trim().strip_prefix("SCAN ")?;
        if rest.contains("USING") || rest.starts_with("CONSTANT") {
            return None;
        }
        let table = rest.strip_prefix("TABLE ").unwrap_or(rest);
        Some(
            table
                .split_whitespace()
                .next()?
                .trim_matches('`')
                .trim_matches('"')
                .to_owned(),
        )
    })
}

/// Columns compared in a query's WHERE clause, equality tests first (the
/// order an index serves them best).
pub fn filter_columns(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let Some(start) = lower.find(" where ") else {
        return Vec::new();
    };
    let end = [" order by ", " group by ", " limit ", " having "]
        .iter()
        .filter_map(|k| lower[start..].find(k).map(|i| start + i))
        .min()
        .unwrap_or(sql.len());
    let clause = &sql[start + 7..end];
    let tokens: Vec<&str> = clause
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|t| !t.is_empty())
        .collect();
    let (mut eq, mut range) = (Vec::new(), Vec::new());
    for pair in tokens.windows(2) {
        let column = pair[0].rsplit('.').next().unwrap_or(pair[0]);
        let column = column.trim_matches('`').trim_matches('"');
        if column.is_empty()
            || !column
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let target = match pair[1].to_ascii_lowercase().as_str() {
            "=" | "==" | "in" | "is" => &mut eq,
            "<" | "<=" | ">" | ">=" | "like" | "between" => &mut range,
            _ => continue,
        };
        if !target.iter().any(|c: &String| c == column) {
            target.push(column.to_owned());
        }
    }
    range.retain(|c| !eq.contains(c));
    eq.extend(range.into_iter().take(1));
    eq
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PerformanceConfig {
        PerformanceConfig::default()
    }

    #[test]
    fn no_evidence_no_advice() {
        assert!(recommend(&Evidence::default(), &cfg()).is_empty());
        let healthy = Evidence {
            page_size: 4096,
            page_count: 10_000,
            freelist_count: 10,
            readings_rows: Some(50_000),
            readings_analyzed_rows: Some(40_000),
            process_cpu_percent: Some(0.3),
            sensors: vec![SensorLoad {
                name: "sim".into(),
                interval_ms: 1000,
                reads: 100,
                mean_read_ms: 0.1,
            }],
            ..Evidence::default()
        };
        assert!(recommend(&healthy, &cfg()).is_empty());
    }

    #[test]
    fn a_fragmented_database_gets_reclaim_advice_with_its_numbers() {
        let e = Evidence {
            page_size: 4096,
            page_count: 1000,
            freelist_count: 400,
            ..Evidence::default()
        };
        let r = recommend(&e, &cfg());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, "reclaim_free_pages");
        assert_eq!(r[0].evidence["freelist_count"], 400);
        assert!(r[0].action.contains("1.6 MiB"), "{}", r[0].action);
    }

    #[test]
    fn stale_or_missing_statistics() {
        let never = Evidence {
            readings_rows: Some(5000),
            ..Evidence::default()
        };
        assert_eq!(recommend(&never, &cfg())[0].id, "analyze");
        let stale = Evidence {
            readings_rows: Some(50_000),
            readings_analyzed_rows: Some(1000),
            ..Evidence::default()
        };
        assert_eq!(recommend(&stale, &cfg())[0].id, "analyze");
        let small = Evidence {
            readings_rows: Some(500),
            ..Evidence::default()
        };
        assert!(recommend(&small, &cfg()).is_empty());
    }

    #[test]
    fn a_slow_full_scan_gets_an_index_suggestion() {
        let plan = |p: &str| {
            PlannedQuery {
            query: SlowQuery {
                name: "alerts_by_message".into(),
                sql: "SELECT * FROM alerts WHERE alerts.message = ? AND fired_at >= ? ORDER BY fired_at".into(),
                count: 3,
                max_ms: 250.0,
                last_ms: 200.0,
                last_at: String::new(),
            },
            plan: vec![p.into()],
        }
        };
        let e = Evidence {
            slow_queries: vec![plan("SCAN alerts")],
            ..Evidence::default()
        };
        let r = recommend(&e, &cfg());
        assert_eq!(r[0].id, "index_for_slow_query");
        assert!(
            r[0].action.contains("ON alerts (message, fired_at)"),
            "{}",
            r[0].action
        );
        // A slow query that already uses an index gets no index advice.
        let e = Evidence {
            slow_queries: vec![plan(
                "SEARCH alerts USING INDEX alerts_fired_at (fired_at>?)",
            )],
            ..Evidence::default()
        };
        assert!(recommend(&e, &cfg()).is_empty());
    }

    #[test]
    fn polling_over_the_cpu_budget_gets_longer_intervals() {
        let e = Evidence {
            process_cpu_percent: Some(30.0),
            sensors: vec![
                SensorLoad {
                    name: "slow".into(),
                    interval_ms: 1000,
                    reads: 60,
                    mean_read_ms: 250.0,
                },
                SensorLoad {
                    name: "quick".into(),
                    interval_ms: 1000,
                    reads: 60,
                    mean_read_ms: 1.0,
                },
            ],
            ..Evidence::default()
        };
        let r = recommend(&e, &cfg());
        assert_eq!(r[0].id, "longer_intervals");
        assert!(
            r[0].action.contains("slow: 1000 ms → 2510 ms"),
            "{}",
            r[0].action
        );
        assert!(!r[0].action.contains("quick"), "{}", r[0].action);
        // Busy sensors but an idle process: the reads wait, they do not burn CPU.
        let idle = Evidence {
            process_cpu_percent: Some(1.0),
            ..e
        };
        assert!(recommend(&idle, &cfg()).is_empty());
    }

    #[test]
    fn a_large_wal_near_cap_and_drops_are_reported() {
        let e = Evidence {
            db_bytes: 95 * 1024 * 1024,
            wal_bytes: 70 * 1024 * 1024,
            max_db_bytes: Some(150 * 1024 * 1024),
            queue_dropped: 12,
            queue_capacity: 1000,
            ..Evidence::default()
        };
        let ids: Vec<_> = recommend(&e, &cfg()).iter().map(|r| r.id).collect();
        assert_eq!(ids, ["near_size_cap", "queue_overflow", "checkpoint"]);
    }

    #[test]
    fn plans_and_where_clauses_are_read() {
        assert_eq!(
            full_scan(&["SCAN TABLE alerts".into()]),
            Some("alerts".into())
        );
        assert_eq!(
            full_scan(&["SCAN readings USING COVERING INDEX x".into()]),
            None
        );
        assert_eq!(
            full_scan(&["SEARCH readings USING PRIMARY KEY (series_id=?)".into()]),
            None
        );
        assert_eq!(
            filter_columns("select a from t where t.b = ? and c > ? and d = ? limit 5"),
            ["b", "d", "c"]
        );
        assert!(filter_columns("select 1").is_empty());
    }
}
