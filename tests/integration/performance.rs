//! Performance insight against the real appliance: every kind of operation
//! is measured, `/metrics` passes `promtool check metrics`, and
//! recommendations appear when (and only when) their evidence exists.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::Value;
use vigil::Perf;
use vigil::advice::{Evidence, PlannedQuery, recommend};
use vigil::inspect;

use crate::live::Client;
use crate::util::{TestServer, config};

const SENSORS: &str = r#"
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 20
"#;

fn op<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats["operations"]
        .as_array()?
        .iter()
        .find(|o| o["name"] == name)
}

#[actix_rt::test]
async fn every_kind_of_operation_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, SENSORS);
    cfg.performance.slow_query_ms = 0;
    let s = TestServer::start_with(dir, cfg).await;
    let mut feed = Client::connect(&s).await;
    feed.send(serde_json::json!({"type": "subscribe"})).await;
    feed.next_of_type("readings", Duration::from_secs(5)).await;
    // Five readings readable is not five committed (the head serves them
    // first): wait for both.
    s.wait_for("commits and reads", Duration::from_secs(15), async |s| {
        s.get_ok("/api/readings?limit=5").await["count"] == 5
            && s.get_ok("/health").await["writer"]["committed_rows"]
                .as_u64()
                .is_some_and(|n| n >= 5)
    })
    .await;
    let stats = s.get_ok("/api/performance/stats").await;
    let read = op(&stats, "sensor.read.sim").expect("sensor reads measured");
    assert!(read["count"].as_u64().unwrap() >= 5, "{read}");
    assert!(read["p99_ms"].as_f64().unwrap() >= read["p50_ms"].as_f64().unwrap());
    let commit = op(&stats, "db.commit").expect("commits measured");
    assert!(
        commit["count"].as_u64().unwrap() >= 1 && commit["units"].as_u64().unwrap() >= 5,
        "{commit}"
    );
    let route = op(&stats, "http GET /api/readings").expect("routes measured by pattern");
    assert!(route["count"].as_u64().unwrap() >= 1);
    assert!(op(&stats, "ws.send").unwrap()["count"].as_u64().unwrap() >= 1);
    assert!(
        op(&stats, "db.readings_page").unwrap()["count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // With slow_query_ms = 0 the readings query is kept, with SQL that
    // SQLite can plan.
    let slow = &stats["slow_queries"][0];
    assert_eq!(slow["name"], "readings_page");
    assert!(
        slow["sql"].as_str().unwrap().contains("FROM readings"),
        "{slow}"
    );
    assert!(stats["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(stats["database"]["page_count"].as_u64().unwrap() > 0);
    assert_eq!(stats["live_sessions"], 1);

    // It is indexed: no index advice, and on a fresh database no advice at all.
    let r = s.get_ok("/api/performance/recommendations").await;
    assert_eq!(r["recommendations"], serde_json::json!([]), "{r}");
    assert_eq!(
        r["evidence"]["slow_queries"][0]["plan"][0]
            .as_str()
            .map(|p| p.starts_with("SEARCH")),
        Some(true),
        "{r}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn metrics_pass_promtool() {
    let s = TestServer::start(SENSORS).await;
    s.wait_for("some activity", Duration::from_secs(10), async |s| {
        s.get_ok("/api/readings?limit=1").await["count"] == 1
    })
    .await;
    let mut res = awc::Client::new()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    for family in [
        "vigil_operation_duration_seconds",
        "vigil_readings_committed_total",
        "vigil_sensor_reads_total",
        "vigil_child_restarts_total",
        "vigil_alerts_firing",
        "vigil_pacing_level",
        "vigil_database_size_bytes",
        "vigil_process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert!(text.contains("vigil_sensor_reads_total{sensor=\"sim\"}"));
    crate::util::promtool_check_metrics(&text);
    s.stop().await;
}

#[actix_rt::test]
async fn a_fragmented_database_is_advised_to_reclaim_space() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, SENSORS);
    // Garbage before start: a table filled and emptied leaves free pages
    // (incremental auto-vacuum does not give them back by itself).
    vigil::prepare(&cfg.storage).unwrap();
    let mut conn = SqliteConnection::establish(cfg.storage.path.to_str().unwrap()).unwrap();
    conn.batch_execute(
        "CREATE TABLE scratch (x BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO scratch SELECT zeroblob(2000) FROM n;
         DROP TABLE scratch;",
    )
    .unwrap();
    drop(conn);
    let s = TestServer::start_with(dir, cfg).await;
    let r = s.get_ok("/api/performance/recommendations").await;
    let advice = &r["recommendations"][0];
    assert_eq!(advice["id"], "reclaim_free_pages", "{r}");
    assert!(
        advice["evidence"]["freelist_count"].as_u64().unwrap() > 500,
        "{advice}"
    );
    assert!(advice["action"].as_str().unwrap().contains("optimize"));
    s.stop().await;
}

#[test]
fn a_slow_full_scan_on_a_real_database_gets_an_index_recommendation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = vigil::StorageConfig {
        path: dir.path().join("p.db"),
        ..vigil::StorageConfig::default()
    };
    vigil::prepare(&cfg).unwrap();
    let mut conn = vigil::open_writer(&cfg).unwrap();
    let perf = Perf::new(0);
    // A query by a column nothing indexes, measured like any other.
    let sql = "SELECT id FROM alerts WHERE message = ?";
    let started = std::time::Instant::now();
    diesel::sql_query(sql)
        .bind::<diesel::sql_types::Text, _>("disk full")
        .execute(&mut conn)
        .unwrap();
    perf.record_query("alerts_by_message", started.elapsed(), true, || sql.into());
    let planned: Vec<PlannedQuery> = perf
        .slow_queries()
        .into_iter()
        .map(|q| PlannedQuery {
            plan: inspect::query_plan(&mut conn, &q.sql).unwrap(),
            query: q,
        })
        .collect();
    let advice = recommend(
        &Evidence {
            slow_queries: planned,
            ..Evidence::default()
        },
        &vigil::PerformanceConfig::default(),
    );
    assert_eq!(advice.len(), 1, "{advice:?}");
    assert_eq!(advice[0].id, "index_for_slow_query");
    assert!(
        advice[0].action.contains("ON alerts (message)"),
        "{}",
        advice[0].action
    );
}
