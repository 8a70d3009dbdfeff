//! Sealed chunks seen from outside: a database written by the release
//! before chunks (every reading a row) is sealed in place by the running
//! appliance, hour by hour, and every API answers the same before and
//! after; `vigil serve` killed with SIGKILL at random moments while it
//! seals (rows of that release, or head blocks of hours the appliance had
//! not sealed yet) keeps the file whole and every reading exactly once, bit
//! for bit, every live reading it reported committed, and the next start
//! resumes where the last seal left off; a seal that keeps failing is
//! reported by `/health` and `/metrics` until it succeeds.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use serde_json::Value;

use crate::util::{TestServer, config, open_db};

const HOUR: i64 = 3_600_000;

/// A database as the release before chunks left it: the schema of every
/// migration but the chunks', with `series` series of readings every
/// `step_ms` over `hours` whole hours ending two hours before now, their
/// rollups computed by the rollup migration as on an upgrade.
fn old_database(path: &Path, series: i64, hours: i64, step_ms: i64) -> i64 {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;")
        .unwrap();
    let migrations = diesel::migration::MigrationSource::<diesel::sqlite::Sqlite>::migrations(
        &vigil::MIGRATIONS,
    )
    .unwrap();
    let (later, earlier): (Vec<_>, Vec<_>) = migrations.into_iter().partition(|m| {
        let name = m.name().to_string();
        name.ends_with("_chunks") || name.ends_with("_head_blocks")
    });
    assert_eq!(later.len(), 2, "the chunks and head blocks migrations");
    let now = vigil::clock::now_ms();
    let end = (now / HOUR - 2) * HOUR;
    let start = end - hours * HOUR;
    // Creates diesel's table of applied migrations.
    conn.applied_migrations().unwrap();
    for (i, m) in earlier.iter().enumerate() {
        conn.run_migration(&**m).unwrap();
        if i == 0 {
            for s in 1..=series {
                conn.batch_execute(&format!(
                    "INSERT INTO series (id, sensor, metric, unit) VALUES ({s}, 'old{s}', 'temperature', '°C');
                     WITH RECURSIVE n(t) AS (SELECT {start} + {s} UNION ALL SELECT t + {step_ms} FROM n WHERE t + {step_ms} < {end})
                     INSERT INTO readings SELECT {s}, t, round(20 + ((t / 1000 + {s} * 37) % 1500) / 100.0, 2) FROM n;"
                ))
                .unwrap();
            }
        }
    }
    conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    start
}

/// A database an appliance left with hours it had not sealed yet (it was
/// switched off, or sealing failed for a while): the current schema, and
/// `series` series of readings every `step_ms` over `hours` whole hours
/// ending two hours before now as head blocks, one per series and minute,
/// as its commits wrote them.
fn unsealed_database(path: &Path, series: i64, hours: i64, step_ms: i64) {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;")
        .unwrap();
    conn.run_pending_migrations(vigil::MIGRATIONS).unwrap();
    let now = vigil::clock::now_ms();
    let end = (now / HOUR - 2) * HOUR;
    let start = end - hours * HOUR;
    conn.batch_execute("BEGIN").unwrap();
    for s in 1..=series {
        conn.batch_execute(&format!(
            "INSERT INTO series (id, sensor, metric, unit) VALUES ({s}, 'old{s}', 'temperature', '°C');"
        ))
        .unwrap();
        let mut minute = start;
        while minute < end {
            let points: Vec<(i64, f64)> = (minute + s..minute + 60_000)
                .step_by(step_ms as usize)
                .map(|t| {
                    (
                        t,
                        (2000.0 + ((t / 1000 + s * 37) % 1500) as f64).round() / 100.0,
                    )
                })
                .collect();
            let data = vigil::chunk::codec::encode(&points).unwrap();
            diesel::sql_query(
                "INSERT INTO head_blocks (series_id, start_ts, first_ts, last_ts, count, data) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind::<diesel::sql_types::BigInt, _>(s)
            .bind::<diesel::sql_types::BigInt, _>(minute - minute.rem_euclid(HOUR))
            .bind::<diesel::sql_types::BigInt, _>(points[0].0)
            .bind::<diesel::sql_types::BigInt, _>(points[points.len() - 1].0)
            .bind::<diesel::sql_types::BigInt, _>(points.len() as i64)
            .bind::<diesel::sql_types::Binary, _>(data)
            .execute(&mut conn)
            .unwrap();
            minute += 60_000;
        }
    }
    conn.batch_execute("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}

/// Every raw reading in the file as (series, ts, value bits), through the
/// store's own read of rows and chunks.
fn everything(path: &Path) -> BTreeSet<(i64, i64, u64)> {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    if open_db(path).count("SELECT count(*) AS n FROM sqlite_master WHERE name = 'chunks'") == 0 {
        // The release before chunks: rows only.
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            series_id: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            ts: i64,
            #[diesel(sql_type = diesel::sql_types::Double)]
            value: f64,
        }
        let rows: Vec<Row> = diesel::sql_query("SELECT series_id, ts, value FROM readings")
            .load(&mut conn)
            .unwrap();
        return rows
            .into_iter()
            .map(|r| (r.series_id, r.ts, r.value.to_bits()))
            .collect();
    }
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let ids: Vec<Id> = diesel::sql_query("SELECT id FROM series")
        .load(&mut conn)
        .unwrap();
    let mut all = BTreeSet::new();
    for Id { id } in ids {
        let points = vigil::chunk::points(
            &mut conn,
            id,
            i64::MIN,
            i64::MAX,
            vigil::Order::Asc,
            usize::MAX,
        )
        .unwrap();
        all.extend(points.into_iter().map(|(t, v)| (id, t, v.to_bits())));
    }
    all
}

/// Every reading of the API, page by page by cursor, oldest first.
async fn all_pages(s: &TestServer, to: i64, limit: usize, order: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/api/readings?limit={limit}&order={order}&to={to}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = s.get_ok(&q).await;
        out.extend(page["readings"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// What the read API says of the old readings (before `end`; the default
/// sensors add new ones meanwhile): pages both ways, a raw and a rolled-up
/// chart, an export and the latest readings of one sensor.
async fn answers(s: &TestServer, start: i64, end: i64) -> Vec<Value> {
    let mut got = vec![
        Value::from(all_pages(s, end, 997, "asc").await),
        Value::from(all_pages(s, end, 250, "desc").await),
        s.get_ok(&format!(
            "/api/series?sensor=old1&metric=temperature&from={}&to={}",
            start + HOUR / 2,
            start + 2 * HOUR
        ))
        .await,
        s.get_ok(&format!(
            "/api/series?sensor=old2&metric=temperature&from={start}&to={}",
            start + 30 * HOUR
        ))
        .await,
        s.get_ok("/api/readings?sensor=old3&limit=100").await,
    ];
    let mut res = s
        .client()
        .get(s.url(&format!("/api/readings/export?format=ndjson&to={end}")))
        .send()
        .await
        .unwrap();
    let body = res.body().limit(64 << 20).await.unwrap();
    got.push(Value::from(String::from_utf8(body.to_vec()).unwrap()));
    for a in &mut got {
        strip_volatile(a);
    }
    got
}

/// Removes what says when an answer was made rather than what it holds.
fn strip_volatile(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        for k in ["generated_at", "took_ms", "committed_through_ms", "now_ms"] {
            o.remove(k);
        }
        for x in o.values_mut() {
            strip_volatile(x);
        }
    } else if let Some(a) = v.as_array_mut() {
        a.iter_mut().for_each(strip_volatile);
    }
}

#[actix_rt::test]
async fn an_old_database_is_sealed_in_place_and_every_api_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (series, hours) = (3, 30);
    let start = old_database(&dir.path().join("vigil.db"), series, hours, 10_000);
    let before = everything(&dir.path().join("vigil.db"));

    let mut cfg = config(&dir, "");
    cfg.storage.seal_interval_secs = 0;
    let s = TestServer::start_with(dir, cfg.clone()).await;
    let unsealed = answers(&s, start, start + hours * HOUR).await;
    assert_eq!(
        unsealed[0].as_array().unwrap().len(),
        before.len(),
        "pages hold every reading"
    );
    let (_, dir, db) = s.stop().await;
    assert_eq!(
        open_db(&db).count("SELECT count(*) AS n FROM chunks"),
        0,
        "nothing sealed with sealing off"
    );

    cfg.storage.seal_interval_secs = 1;
    let s = TestServer::start_with(dir, cfg).await;
    let want = series * hours;
    s.wait_for(
        "every old hour sealed",
        Duration::from_secs(120),
        async |s| {
            let h = s.get_ok("/health").await;
            let sealing = &h["writer"]["sealing"];
            sealing["chunks_sealed"].as_i64() == Some(want) && !sealing["caught_up_at"].is_null()
        },
    )
    .await;
    let sealed = answers(&s, start, start + hours * HOUR).await;
    // A backup of the sealed database holds the same readings.
    let (status, report) = s.post("/api/admin/backup", None).await;
    assert_eq!(status, 200, "{report}");
    let copy = std::path::PathBuf::from(report["path"].as_str().unwrap());
    let in_copy: BTreeSet<_> = everything(&copy)
        .into_iter()
        .filter(|r| r.0 <= series)
        .collect();
    assert!(in_copy == before, "the backup holds every reading");
    let mut res = s.client().get(s.url("/metrics")).send().await.unwrap();
    let metrics = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(
        metrics.contains(&format!("\nvigil_readings_sealed_total {}\n", before.len()))
            && metrics.contains(&format!("\nvigil_chunks_sealed_total {want}\n")),
        "{metrics}"
    );
    let (_, _dir, db) = s.stop().await;
    for (i, (a, b)) in unsealed.iter().zip(&sealed).enumerate() {
        if a != b {
            let (a, b) = (a.to_string(), b.to_string());
            let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
            let from = at.saturating_sub(200);
            panic!(
                "answer {i} changed by sealing at byte {at}:\n before: {}\n after:  {}",
                &a[from..(at + 200).min(a.len())],
                &b[from..(at + 200).min(b.len())]
            );
        }
    }
    let mut conn = open_db(&db);
    // The default sensors' new readings are rows; the old ones all sealed.
    let old = format!("series_id <= {series}");
    assert_eq!(
        conn.count(&format!("SELECT count(*) AS n FROM readings WHERE {old}")),
        0
    );
    assert_eq!(
        conn.count(&format!("SELECT count(*) AS n FROM chunks WHERE {old}")),
        want
    );
    assert_eq!(conn.integrity_check(), "ok");
    let after: BTreeSet<_> = everything(&db)
        .into_iter()
        .filter(|r| r.0 <= series)
        .collect();
    assert!(after == before, "every reading, bit for bit");
}

/// `committed_rows` and sealing's count from `/health`, if it answers.
fn health(port: u16) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

const SERVE: &str = r#"
[server]
bind = "127.0.0.1:0"
[log]
filter = "warn,vigil::app=info"
[storage]
seal_interval_secs = 1
flush_interval_ms = 50
[guard.http]
enabled = false
[[sensors]]
name = "live"
kind = "simulated"
interval_ms = 5
"#;

/// Spawns `vigil serve` on `db`; the child, the port it serves on and
/// its log.
fn spawn(
    config: &Path,
    db: &Path,
) -> (
    std::process::Child,
    u16,
    std::thread::JoinHandle<Vec<String>>,
) {
    let served = crate::util::spawn_serve(config, db);
    let port = served
        .port
        .recv_timeout(Duration::from_secs(60))
        .ok()
        .flatten()
        .expect("vigil never said it was serving");
    (served.child, port, served.log)
}

/// The old readings (series 1..=series) in the file.
fn old_of(path: &Path, series: i64) -> BTreeSet<(i64, i64, u64)> {
    everything(path)
        .into_iter()
        .filter(|r| r.0 <= series)
        .collect()
}

#[test]
fn kill_9_while_sealing_an_old_database_keeps_every_reading_once_and_resumes() {
    kill_9_while_sealing(|db, series, hours| old_database(db, series, hours, 5_000));
}

#[test]
fn kill_9_while_sealing_head_blocks_keeps_every_reading_once_and_resumes() {
    kill_9_while_sealing(|db, series, hours| unsealed_database(db, series, hours, 5_000));
}

/// Kills `vigil serve` at random moments while it seals a database `make`
/// writes; after each kill the file is whole, every reading it held is
/// there once, bit for bit, and so is every live reading `/health` had
/// reported committed; a last run seals everything.
fn kill_9_while_sealing<T>(make: impl Fn(&Path, i64, i64) -> T) {
    let seed: u64 = std::env::var("VIGIL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("sealing crash test: VIGIL_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, SERVE).unwrap();
    let db = dir.path().join("old.db");
    let (series, hours) = (10, 96);
    make(&db, series, hours);
    let before = old_of(&db, series);
    let total_hours = series * hours;
    let mut sealed_counts = Vec::new();

    for cycle in 1..=5 {
        let live_before = live_count(&db, series);
        let (mut child, port, log) = spawn(&config, &db);
        let kill_after = Duration::from_millis(rng.u64(700..=3500));
        let mut reported = 0;
        let from = Instant::now();
        while from.elapsed() < kill_after {
            if let Some(h) = health(port) {
                reported = h["writer"]["committed_rows"].as_i64().unwrap_or(reported);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("SIGKILL");
        assert!(!child.wait().unwrap().success());
        let lines = log.join().unwrap();
        if let Some(p) = lines.iter().find(|l| l.contains("panicked")) {
            panic!("cycle {cycle}: vigil panicked: {p}");
        }
        let mut conn = open_db(&db);
        assert_eq!(conn.integrity_check(), "ok", "cycle {cycle}");
        let chunks = conn.count("SELECT count(*) AS n FROM chunks WHERE series_id <= 10");
        sealed_counts.push(chunks);
        eprintln!(
            "cycle {cycle}: SIGKILL {} ms after serving; {chunks} of {total_hours} hours sealed",
            kill_after.as_millis()
        );
        assert!(
            old_of(&db, series) == before,
            "cycle {cycle}: the old readings changed (seed {seed})"
        );
        let live_after = live_count(&db, series);
        assert!(
            live_after >= live_before + reported,
            "cycle {cycle}: {reported} live readings reported committed, {} in the file (seed {seed})",
            live_after - live_before
        );
    }
    assert!(
        sealed_counts.windows(2).all(|w| w[0] <= w[1]),
        "sealing only moves forward: {sealed_counts:?}"
    );

    // A last run seals the rest and stops cleanly.
    let (mut child, port, log) = spawn(&config, &db);
    let from = Instant::now();
    loop {
        let done = health(port).is_some_and(|h| !h["writer"]["sealing"]["caught_up_at"].is_null());
        if done {
            break;
        }
        assert!(
            from.elapsed() < Duration::from_secs(120),
            "sealing did not catch up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM: a clean stop.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());
    drop(log);
    let mut conn = open_db(&db);
    assert_eq!(conn.integrity_check(), "ok");
    assert_eq!(
        conn.count("SELECT count(*) AS n FROM chunks WHERE series_id <= 10"),
        total_hours
    );
    assert_eq!(
        conn.count("SELECT count(*) AS n FROM readings WHERE series_id <= 10"),
        0
    );
    assert_eq!(
        conn.count("SELECT count(*) AS n FROM head_blocks WHERE series_id <= 10"),
        0
    );
    assert!(old_of(&db, series) == before, "(seed {seed})");
}

/// The live sensor's readings in the file (series after the old ones).
fn live_count(path: &Path, series: i64) -> i64 {
    everything(path).iter().filter(|r| r.0 > series).count() as i64
}

/// `GET /metrics` as text.
async fn metrics(s: &TestServer) -> String {
    let mut res = s.client().get(s.url("/metrics")).send().await.unwrap();
    String::from_utf8(res.body().await.unwrap().to_vec()).unwrap()
}

/// Sealing that keeps failing (here a block whose bytes were damaged on the
/// card) holds back nothing else, and is visible: the other series of its
/// hour and the later hours are sealed, `/health` warns with the error and
/// since when, without failing readiness, and `/metrics` counts the
/// failures and shows a gauge to alert on; once the block is repaired the
/// next pass seals its hour, and the warning and gauge clear, every
/// reading still there.
#[actix_web::test]
async fn failing_sealing_is_reported_until_a_seal_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (series, hours) = (2, 2);
    let path = dir.path().join("vigil.db");
    unsealed_database(&path, series, hours, 10_000);
    let before = everything(&path);
    // The oldest block's bytes are damaged; a copy is kept to repair it.
    open_db(&path).execute(
        "CREATE TABLE saved_block AS SELECT id, data FROM head_blocks WHERE id = (SELECT min(id) FROM head_blocks);
         UPDATE head_blocks SET data = X'00FF00FF' WHERE id = (SELECT id FROM saved_block);",
    );

    let mut cfg = config(&dir, "");
    cfg.storage.seal_interval_secs = 1;
    let s = TestServer::start_with(dir, cfg).await;
    let warning = |h: &Value| {
        h["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str())
            .find(|w| w.starts_with("sealing has failed since"))
            .map(str::to_owned)
    };
    s.wait_for(
        "a warning about sealing",
        Duration::from_secs(60),
        async |s| {
            let (status, h) = s.get("/health").await;
            status == 200
                && warning(&h).is_some()
                && h["writer"]["sealing"]["failures"].as_u64() >= Some(2)
                && h["writer"]["sealing"]["chunks_sealed"].as_i64() == Some(series * hours - 1)
        },
    )
    .await;
    let (_, h) = s.get("/health").await;
    let text = warning(&h).unwrap();
    assert!(text.contains("damaged chunk"), "{text}");
    assert!(h["writer"]["sealing"]["caught_up_at"].is_null(), "{h}");
    assert!(h["writer"]["sealing"]["failing_since"].is_string(), "{h}");
    let m = metrics(&s).await;
    assert!(m.contains("\nvigil_sealing_failing 1\n"), "{m}");
    let failures: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("vigil_sealing_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 2, "{m}");

    // The block is repaired while the appliance runs.
    open_db(&s.db).execute(
        "PRAGMA busy_timeout = 10000;
         UPDATE head_blocks SET data = (SELECT data FROM saved_block) WHERE id = (SELECT id FROM saved_block);
         DROP TABLE saved_block;",
    );
    let want = series * hours;
    s.wait_for("every hour sealed", Duration::from_secs(60), async |s| {
        let h = s.get_ok("/health").await;
        h["writer"]["sealing"]["chunks_sealed"].as_i64() == Some(want)
            && !h["writer"]["sealing"]["caught_up_at"].is_null()
    })
    .await;
    let h = s.get_ok("/health").await;
    assert!(warning(&h).is_none(), "{h}");
    assert!(h["writer"]["sealing"]["failing_since"].is_null(), "{h}");
    assert!(h["writer"]["sealing"]["last_error"].is_null(), "{h}");
    let m = metrics(&s).await;
    assert!(m.contains("\nvigil_sealing_failing 0\n"), "{m}");
    let (_, _dir, db) = s.stop().await;
    let after: BTreeSet<_> = everything(&db)
        .into_iter()
        .filter(|r| r.0 <= series)
        .collect();
    assert!(after == before, "every reading, bit for bit");
    assert_eq!(
        open_db(&db).count(&format!(
            "SELECT count(*) AS n FROM head_blocks WHERE series_id <= {series}"
        )),
        0
    );
}

/// Rows that cannot be sealed (their hour's chunk is damaged) hold back
/// only that hour of their series: its later hours and the other series'
/// rows are sealed in the same passes, and the failure is reported.
#[actix_web::test]
async fn a_series_that_cannot_be_sealed_holds_back_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let (series, hours) = (2, 2);
    let path = dir.path().join("vigil.db");
    let start = old_database(&path, series, hours, 60_000);
    {
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        conn.run_pending_migrations(vigil::MIGRATIONS).unwrap();
    }
    open_db(&path).execute(&format!(
        "INSERT INTO chunks (series_id, start_ts, first_ts, last_ts, count, data) \
         VALUES (1, {start}, {start}, {start}, 1, X'00FF00FF');"
    ));
    let rows_of = |db: &Path, id: i64| {
        open_db(db).count(&format!(
            "SELECT count(*) AS n FROM readings WHERE series_id = {id}"
        ))
    };
    let first_hour_1 = open_db(&path).count(&format!(
        "SELECT count(*) AS n FROM readings WHERE series_id = 1 AND ts < {}",
        start - start.rem_euclid(HOUR) + HOUR
    ));
    assert!(first_hour_1 > 0 && first_hour_1 < rows_of(&path, 1));

    let mut cfg = config(&dir, "");
    cfg.storage.seal_interval_secs = 1;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "the other series sealed, the failure reported",
        Duration::from_secs(60),
        async |s| {
            let h = s.get_ok("/health").await;
            let sealing = &h["writer"]["sealing"];
            sealing["chunks_sealed"].as_i64() == Some(series * hours - 1)
                && sealing["failures"].as_u64() >= Some(2)
                && sealing["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("damaged chunk"))
        },
    )
    .await;
    let h = s.get_ok("/health").await;
    assert!(h["writer"]["sealing"]["caught_up_at"].is_null(), "{h}");
    let (_, _dir, db) = s.stop().await;
    assert_eq!(rows_of(&db, 2), 0, "series 2 is sealed");
    assert_eq!(
        rows_of(&db, 1),
        first_hour_1,
        "series 1 keeps the rows of its damaged hour, and only those"
    );
    assert_eq!(open_db(&db).integrity_check(), "ok");
}
