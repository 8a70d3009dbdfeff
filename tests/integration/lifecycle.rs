//! Start-up and shutdown of the whole appliance: a graceful stop stores every
//! reading produced before it, the database is left checkpointed and
//! consistent, and a restart on the same file carries on.

use std::time::Duration;

use crate::util::{TestServer, config, open_db};

const BUSY: &str = r#"
[[sensors]]
name = "a"
kind = "simulated"
interval_ms = 10

[[sensors]]
name = "b"
kind = "simulated"
interval_ms = 15
[sensors.options]
waveform = "random_walk"
"#;

#[actix_rt::test]
async fn shutdown_flushes_every_produced_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, BUSY);
    // Nothing is committed by time or size during the run: shutdown alone
    // must store it all.
    cfg.storage.flush_interval_ms = 3_600_000;
    cfg.storage.batch_size = 100_000;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "a few hundred readings",
        Duration::from_secs(20),
        async |s| s.sensor("a").await["reads"].as_u64() > Some(150),
    )
    .await;
    let (_, health) = s.get("/health").await;
    assert_eq!(health["writer"]["committed_rows"], 0, "{health}");
    assert!(health["writer"]["queue"]["len"].as_u64().unwrap() > 150);

    let (report, _dir, db) = s.stop().await;
    let produced: u64 = report.produced.iter().map(|(_, n)| n).sum();
    assert!(produced > 150);
    assert_eq!(report.queue.len, 0);
    assert_eq!(report.queue.dropped, 0);
    assert_eq!(report.stored, produced);
    // The WAL was checkpointed into the main file and removed on close.
    assert!(!db.with_extension("db-wal").exists());
    let mut db_conn = open_db(&db);
    assert_eq!(db_conn.raw_count() as u64, produced);
    for (name, n) in &report.produced {
        assert_eq!(db_conn.readings_of(name) as u64, *n, "sensor {name}");
    }
    assert_eq!(db_conn.integrity_check(), "ok");
}

#[actix_rt::test]
async fn a_restart_on_the_same_database_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, BUSY);
    let s = TestServer::start_with(dir, cfg.clone()).await;
    s.wait_for("readings", Duration::from_secs(10), async |s| {
        s.get_ok("/api/readings?limit=5").await["count"] == 5
    })
    .await;
    let (first, dir, db) = s.stop().await;

    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "readings of the second run",
        Duration::from_secs(10),
        async |s| {
            let h = s.get_ok("/health").await;
            h["writer"]["committed_rows"].as_u64() > Some(5)
        },
    )
    .await;
    let (second, _dir, _) = s.stop().await;
    let total = open_db(&db).raw_count() as u64;
    assert_eq!(total, first.stored + second.stored);
    assert_eq!(open_db(&db).count("SELECT count(*) AS n FROM series"), 2);
}

#[actix_rt::test]
async fn the_writer_commits_by_size_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, BUSY);
    cfg.storage.flush_interval_ms = 3_600_000;
    cfg.storage.batch_size = 50;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "commits triggered by size",
        Duration::from_secs(20),
        async |s| s.get_ok("/health").await["writer"]["committed_batches"].as_u64() >= Some(3),
    )
    .await;
    let h = s.get_ok("/health").await;
    let w = &h["writer"];
    assert!(w["last_batch_rows"].as_u64().unwrap() <= 50, "{w}");
    // The queue drains: commits by size keep up with the sensors (the first
    // ones, which create the series, may leave a backlog behind them).
    s.wait_for("the queue to drain", Duration::from_secs(20), async |s| {
        s.get_ok("/health").await["writer"]["queue"]["len"].as_u64() < Some(100)
    })
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn the_writer_commits_by_latency_below_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &dir,
        r#"
[[sensors]]
name = "slow"
kind = "simulated"
interval_ms = 100
"#,
    );
    cfg.storage.flush_interval_ms = 200;
    cfg.storage.batch_size = 10_000;
    cfg.storage.queue_capacity = 10_000;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "commits triggered by time",
        Duration::from_secs(20),
        async |s| s.get_ok("/health").await["writer"]["committed_batches"].as_u64() >= Some(3),
    )
    .await;
    // About 2 readings per 200 ms commit; well under 50 even if the writer
    // is held up for a few seconds, and far below the batch size.
    let h = s.get_ok("/health").await;
    assert!(h["writer"]["last_batch_rows"].as_u64().unwrap() < 50, "{h}");
    s.stop().await;
}
