//! The storage lifecycle against the running appliance: chart series from
//! the right tier, streamed exports, admin endpoints and their guard,
//! optimize and backup while sensors write, the size cap, the schedule, and
//! `vigil optimize` / `vigil backup` next to a running server.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::cli::vigil;
use crate::util::{TestServer, config, open_db};

const FAST: &str = r#"
[[sensors]]
name = "fast"
kind = "simulated"
interval_ms = 5
[sensors.options]
waveform = "random_walk"
"#;

const DAY_MS: i64 = 86_400_000;

/// A test config with no sensors, plus `extra` (TOML tables).
fn quiet(dir: &tempfile::TempDir, extra: &str) -> vigil::Config {
    let mut cfg = config(dir, extra);
    cfg.sensors.clear();
    cfg
}

/// A database seeded with `rows` raw readings of sensor `bulk` (metrics `v`
/// and `w`, alternating, 500 ms apart from `start`) before any server runs.
fn seeded(rows: i64, start: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quiet(&dir, "");
    vigil::prepare(&cfg.storage).unwrap();
    open_db(&cfg.storage.path).execute(&format!(
        "INSERT INTO series (id, sensor, metric, unit) VALUES (1, 'bulk', 'v', 'kPa'), (2, 'bulk', 'w', 'a,b');
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})
         INSERT INTO readings SELECT 1 + (i % 2), {start} + i * 500, i * 0.25 FROM n;",
        last = rows - 1
    ));
    dir
}

fn now_ms() -> i64 {
    vigil::clock::now_ms()
}

#[derive(Debug, Default, Clone, Copy)]
struct Agg {
    count: i64,
    min: f64,
    max: f64,
    sum: f64,
}

/// The direct computation: the readings in `[lo, hi)` bucketed like the
/// answer's buckets.
fn direct(values: &[(i64, f64)], start: i64, width: i64, lo: i64, hi: i64) -> BTreeMap<i64, Agg> {
    let mut out: BTreeMap<i64, Agg> = BTreeMap::new();
    for &(ts, v) in values.iter().filter(|(ts, _)| *ts >= lo && *ts < hi) {
        let b = start + (ts - start).div_euclid(width) * width;
        let a = out.entry(b).or_insert(Agg {
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
        });
        a.count += 1;
        a.min = a.min.min(v);
        a.max = a.max.max(v);
        a.sum += v;
    }
    out
}

fn assert_matches(answer: &Value, want: &BTreeMap<i64, Agg>) {
    let buckets = answer["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), want.len(), "{answer}");
    for (b, (start, w)) in buckets.iter().zip(want) {
        assert_eq!(b["ts_ms"].as_i64(), Some(*start));
        assert_eq!(b["count"].as_i64(), Some(w.count));
        // (serde_json's default float parsing may be one ulp off.)
        let close = |got: &Value, want: f64| {
            let got = got.as_f64().unwrap();
            (got - want).abs() <= 1e-9 * want.abs().max(1.0)
        };
        assert!(close(&b["min"], w.min), "{b} vs {w:?}");
        assert!(close(&b["max"], w.max), "{b} vs {w:?}");
        assert!(close(&b["mean"], w.sum / w.count as f64), "{b} vs {w:?}");
    }
}

#[actix_rt::test]
async fn series_come_from_the_cheapest_adequate_tier_and_match_the_readings() {
    // Readings written through the writer (so with real rollups) ...
    let s = TestServer::start(FAST).await;
    s.wait_for("600 stored readings", Duration::from_secs(30), async |s| {
        s.get_ok("/health").await["writer"]["committed_rows"].as_u64() >= Some(600)
    })
    .await;
    let (_, dir, db) = s.stop().await;
    // ... then read back by a server without sensors, so nothing moves.
    let cfg = quiet(&dir, "");
    let s = TestServer::start_with(dir, cfg).await;
    let values = open_db(&db).values("fast", "value");
    assert!(values.len() >= 600);
    let (first, last) = (values[0].0, values[values.len() - 1].0);

    // A slice of the raw readings: 50 buckets of raw readings, exactly.
    let (from, to) = (values[100].0, values[500].0 + 1);
    let body = s
        .get_ok(&format!(
            "/api/series?sensor=fast&from={from}&to={to}&points=50"
        ))
        .await;
    let a = &body["series"][0];
    assert_eq!(a["tier"], "raw", "{body}");
    assert_eq!(a["metric"], "value");
    assert!(a["count"].as_u64().unwrap() <= 50);
    let (start, width) = (
        a["start_ms"].as_i64().unwrap(),
        a["bucket_ms"].as_i64().unwrap(),
    );
    assert_eq!(start, from);
    assert_matches(a, &direct(&values, start, width, from, to));

    // A day as 100 points (14.4-minute buckets): minute rollups, whole
    // minutes, and every reading counted once.
    let to = last + 1;
    let body = s
        .get_ok(&format!(
            "/api/series?sensor=fast&metric=value&to={to}&from={}&points=100",
            to - DAY_MS
        ))
        .await;
    let a = &body["series"][0];
    assert_eq!(a["tier"], "minute", "{body}");
    let (start, width) = (
        a["start_ms"].as_i64().unwrap(),
        a["bucket_ms"].as_i64().unwrap(),
    );
    assert_eq!(width % 60_000, 0);
    assert!(a["count"].as_u64().unwrap() <= 100);
    assert_matches(a, &direct(&values, start, width, first, to));

    // A week as 100 points: hours. A year as 100 points: days.
    for (span, points, tier) in [(7 * DAY_MS, 100, "hour"), (365 * DAY_MS, 100, "day")] {
        let body = s
            .get_ok(&format!(
                "/api/series?sensor=fast&to={to}&from={}&points={points}",
                to - span
            ))
            .await;
        let a = &body["series"][0];
        assert_eq!(a["tier"], tier, "{body}");
        let (start, width) = (
            a["start_ms"].as_i64().unwrap(),
            a["bucket_ms"].as_i64().unwrap(),
        );
        assert_matches(a, &direct(&values, start, width, first, to));
    }

    // Bad requests name their parameter.
    for (query, param) in [
        ("", "sensor"),
        ("sensor=fast&points=0", "points"),
        ("sensor=fast&points=10001", "points"),
        ("sensor=fast&from=yesterday", "from"),
        ("sensor=fast&from=2000&to=1000", "to"),
        ("sensor=fast&bucket=5", "bucket"),
        ("sensor=fast&from=-9223372036854775808", "from"),
        ("sensor=fast&to=9223372036854775807", "to"),
    ] {
        let (status, body) = s.get(&format!("/api/series?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["parameter"], param, "{query}: {body}");
    }
    let (status, _) = s.get("/api/series?sensor=nosuch").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("/api/series?sensor=fast&metric=nosuch").await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn export_streams_a_large_range_in_order_as_csv_and_ndjson() {
    let start = now_ms() - DAY_MS;
    let rows = 60_000;
    let dir = seeded(rows, start);
    let cfg = quiet(&dir, "");
    let s = TestServer::start_with(dir, cfg).await;

    let mut res = s
        .client()
        .get(s.url("/api/readings/export?sensor=bulk&format=csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/csv; charset=utf-8"
    );
    // Streamed: no length known up front.
    assert!(res.headers().get("content-length").is_none());
    let mut body = Vec::new();
    let mut pieces = 0;
    while let Some(chunk) = res.next().await {
        body.extend_from_slice(&chunk.unwrap());
        pieces += 1;
    }
    assert!(pieces > 1);
    let text = String::from_utf8(body).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("ts,ts_ms,sensor,metric,unit,value"));
    let mut n = 0i64;
    for line in lines {
        // Seeded in time order, one reading per 500 ms, metrics alternating.
        let ts_ms: i64 = line.split(',').nth(1).unwrap().parse().unwrap();
        assert_eq!(ts_ms, start + n * 500, "line {n}: {line}");
        if n % 2 == 1 {
            assert!(
                line.ends_with(&format!(",bulk,w,\"a,b\",{}", n as f64 * 0.25)),
                "{line}"
            );
        }
        n += 1;
    }
    assert_eq!(n, rows);

    // NDJSON over a sub-range and one metric.
    let (from, to) = (start + 1000 * 500, start + 3000 * 500);
    let mut res = s
        .client()
        .get(s.url(&format!(
            "/api/readings/export?sensor=bulk&metric=v&from={from}&to={to}&format=ndjson"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/x-ndjson"
    );
    let body = res.body().limit(64 << 20).await.unwrap();
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[0]["ts_ms"], from);
    assert_eq!(lines[0]["metric"], "v");
    assert_eq!(lines[0]["unit"], "kPa");

    for (query, param) in [
        ("format=xml", "format"),
        ("metric=v", "metric"),
        ("to=5&from=10", "to"),
    ] {
        let (status, body) = s.get(&format!("/api/readings/export?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["parameter"], param);
    }
    assert_eq!(s.get("/api/readings/export?sensor=nosuch").await.0, 404);
    // A `from` after now, without `to`, is an empty range, as for
    // /api/readings: the header and no reading.
    let future = vigil::clock::now_ms() + 86_400_000;
    let mut res = s
        .client()
        .get(s.url(&format!("/api/readings/export?sensor=bulk&from={future}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body = res.body().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body).lines().count(),
        1,
        "{body:?}"
    );
    // A chart from after now, without `to`, names `from`.
    let (status, body) = s
        .get(&format!("/api/series?sensor=bulk&from={future}"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["parameter"], "from", "{body}");
    s.stop().await;
}

#[actix_rt::test]
async fn admin_storage_endpoints_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = {
        let mut cfg = quiet(&dir, "");
        cfg.server.admin_token = "s3cret".into();
        cfg
    };
    let s = TestServer::start_with(dir, cfg).await;
    for path in [
        "/api/admin/optimize",
        "/api/admin/optimize?full=true",
        "/api/admin/backup",
        "/api/admin/retention",
    ] {
        let (status, body) = s.post(path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = s.post(path, Some("wrong")).await;
        assert_eq!(status, 401, "{path}");
        let (status, body) = s.post(path, Some("s3cret")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Checked before the parameters; then the parameters are.
    let (status, body) = s
        .post("/api/admin/optimize?full=maybe", Some("s3cret"))
        .await;
    assert_eq!(
        (status, &body["error"]["parameter"]),
        (400, &Value::from("full"))
    );
    let (status, _) = s.get("/api/admin/optimize").await;
    assert_eq!(status, 405);
    s.stop().await;
}

/// An IPv4 address of this machine other than loopback, if it has one.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks a route.
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[actix_rt::test]
async fn without_a_token_admin_endpoints_refuse_remote_clients() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("no non-loopback address on this machine: nothing to test from");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = quiet(&dir, "");
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = TestServer::start_on(dir, cfg, listener).await;
    for path in [
        "/api/admin/optimize",
        "/api/admin/backup",
        "/api/admin/retention",
    ] {
        let (status, body) = s.post_to(&format!("http://{ip}:{port}{path}"), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        // The same from loopback is admitted.
        assert_eq!(s.post(path, None).await.0, 200, "{path}");
    }
    s.stop().await;
}

fn committed(health: &Value) -> u64 {
    health["writer"]["committed_rows"].as_u64().unwrap()
}

#[actix_rt::test]
async fn optimize_reclaims_real_garbage_while_sensors_write() {
    let s = TestServer::start(FAST).await;
    s.wait_for("200 stored readings", Duration::from_secs(30), async |s| {
        committed(&s.get_ok("/health").await) >= 200
    })
    .await;
    // Garbage: a table of about 12 MB, filled and dropped next to the
    // writer (a second connection, as another process would).
    open_db(&s.db).execute(
        "PRAGMA busy_timeout = 10000;
         CREATE TABLE junk AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
           SELECT i, randomblob(50) AS b FROM n;
         DROP TABLE junk;",
    );
    let (status, report) = s.post("/api/admin/optimize", None).await;
    assert_eq!(status, 200, "{report}");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "analyze",
            "optimize",
            "incremental_vacuum",
            "wal_checkpoint"
        ]
    );
    let (b, a) = (&report["before"], &report["after"]);
    let n = |v: &Value| v.as_u64().unwrap();
    assert!(n(&b["freelist_count"]) > 2000, "{report}");
    assert_eq!(n(&a["freelist_count"]), 0, "{report}");
    assert!(n(&a["page_count"]) + 2000 < n(&b["page_count"]), "{report}");
    assert!(n(&a["wal_bytes"]) < n(&b["wal_bytes"]), "{report}");
    assert_eq!(
        n(&a["db_bytes"]),
        n(&a["page_count"]) * n(&a["page_size"]),
        "{report}"
    );

    // Sensors kept writing, and keep writing through a full optimize too.
    let before = committed(&s.get_ok("/health").await);
    let (status, report) = s.post("/api/admin/optimize?full=true", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["full"], true);
    assert!(report["steps"].to_string().contains("reindex"));
    s.wait_for(
        "more readings after optimize",
        Duration::from_secs(20),
        async |s| committed(&s.get_ok("/health").await) > before + 100,
    )
    .await;
    let health = s.get_ok("/health").await;
    assert_eq!(health["writer"]["failed_commits"], 0, "{health}");
    assert_eq!(health["writer"]["queue"]["dropped"], 0, "{health}");
    let storage = s.get_ok("/api/storage").await;
    assert_eq!(storage["jobs"]["optimize"]["outcome"], "done", "{storage}");
    assert_eq!(storage["jobs"]["optimize"]["full"], true);
    let (report, _dir, db) = s.stop().await;
    let mut db = open_db(&db);
    assert_eq!(db.integrity_check(), "ok");
    assert_eq!(db.raw_count() as u64, report.stored);
}

#[actix_rt::test]
async fn backups_are_consistent_copies_and_only_the_newest_are_kept() {
    let s = {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&dir, &format!("{FAST}\n[maintenance]\nbackup_keep = 2\n"));
        TestServer::start_with(dir, cfg).await
    };
    s.wait_for("200 stored readings", Duration::from_secs(30), async |s| {
        committed(&s.get_ok("/health").await) >= 200
    })
    .await;
    let mut reports = Vec::new();
    for _ in 0..3 {
        let stored = committed(&s.get_ok("/health").await) as i64;
        let (status, report) = s.post("/api/admin/backup", None).await;
        assert_eq!(status, 200, "{report}");
        let path = std::path::PathBuf::from(report["path"].as_str().unwrap());
        assert_eq!(path.parent().unwrap(), s.dir.path().join("backups"));
        assert_eq!(
            report["bytes"].as_u64(),
            Some(std::fs::metadata(&path).unwrap().len())
        );
        let mut copy = open_db(&path);
        assert_eq!(copy.integrity_check(), "ok");
        // It holds everything committed before it was asked for.
        let rows = copy.raw_count();
        assert!(rows >= stored, "{rows} < {stored}");
        // Its day rollups (closed days, and the open ones) count them all
        // but those in head blocks, which enter them when sealed.
        assert_eq!(
            copy.count(
                "SELECT (SELECT coalesce(sum(count), 0) FROM rollup_day) \
                 + (SELECT coalesce(sum(count), 0) FROM rollup_open WHERE tier = 3) \
                 + (SELECT coalesce(sum(count), 0) FROM head_blocks) AS n"
            ),
            rows
        );
        reports.push(report);
    }
    let kept: Vec<_> = std::fs::read_dir(s.dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(reports[2]["removed"][0], reports[0]["path"]);
    assert!(!std::path::Path::new(reports[0]["path"].as_str().unwrap()).exists());
    s.stop().await;
}

/// Whether a `storage_cap` alert is in `state`.
async fn cap_alert(s: &TestServer, state: &str) -> bool {
    s.get_ok(&format!("/api/alerts?state={state}")).await["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["rule"] == "storage_cap")
}

#[actix_rt::test]
async fn retention_enforces_the_cap_from_the_api() {
    // About 4 MB of raw readings from the last day: nothing past a horizon,
    // but four times a 1 MiB cap.
    let start = now_ms() - DAY_MS;
    let dir = seeded(150_000, start);
    let cfg = quiet(&dir, "[retention]\nmax_db_mb = 1\n");
    let s = TestServer::start_with(dir, cfg).await;
    let (status, report) = s.post("/api/admin/retention", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"]["raw"], 0, "{report}");
    let cap = &report["cap"];
    assert_eq!(cap["met"], true, "{report}");
    assert!(
        cap["pruned_raw_rows"].as_u64().unwrap() > 50_000,
        "{report}"
    );
    assert!(
        cap["used_bytes_after"].as_u64().unwrap() <= 1 << 20,
        "{report}"
    );
    let storage = s.get_ok("/api/storage").await;
    assert!(
        storage["used_bytes"].as_u64().unwrap() <= 1 << 20,
        "{storage}"
    );
    assert_eq!(storage["cap_bytes"], 1 << 20);
    assert_eq!(storage["jobs"]["retention"]["outcome"], "done");
    // The oldest readings went; the newest are there.
    let ts = open_db(&s.db).timestamps("bulk", "v");
    assert_eq!(ts.last(), Some(&(start + 149_998 * 500)));
    assert!(ts[0] > start);
    // The cap raised an alert; a later run that stays under it resolves it.
    s.wait_for("the cap alert", Duration::from_secs(10), async |s| {
        cap_alert(s, "firing").await
    })
    .await;
    let (status, report) = s.post("/api/admin/retention", None).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["cap"].is_null(), "{report}");
    s.wait_for(
        "the cap alert to resolve",
        Duration::from_secs(10),
        async |s| cap_alert(s, "resolved").await,
    )
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn scheduled_jobs_run_on_their_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &dir,
        &format!(
            "{FAST}\n[retention]\ninterval_secs = 1\n[maintenance]\noptimize_interval_secs = 1\nbackup_interval_secs = 1\nbackup_keep = 1\n"
        ),
    );
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "every job to have run",
        Duration::from_secs(30),
        async |s| {
            let jobs = &s.get_ok("/api/storage").await["jobs"];
            ["retention", "optimize", "backup"]
                .iter()
                .all(|j| jobs[*j]["outcome"] == "done")
        },
    )
    .await;
    let storage = s.get_ok("/api/storage").await;
    assert_eq!(storage["jobs"]["retention_every_s"], 1);
    let backups = std::fs::read_dir(s.dir.path().join("backups"))
        .unwrap()
        .count();
    assert_eq!(backups, 1);
    s.stop().await;
}

async fn run_cli(args: &[&str], db: &std::path::Path) -> std::process::Output {
    run_cli_at(args, db, None).await
}

/// The CLI, told where the running server listens (`VIGIL_BIND`), as its
/// config would tell it.
async fn run_cli_at(
    args: &[&str],
    db: &std::path::Path,
    server: Option<std::net::SocketAddr>,
) -> std::process::Output {
    let mut cmd = vigil();
    cmd.args(args).env("VIGIL_DB", db).env("VIGIL_LOG", "warn");
    if let Some(addr) = server {
        cmd.env("VIGIL_BIND", addr.to_string());
    }
    // Off the test's thread: the sensors run there and must keep writing.
    actix_rt::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// The JSON report a CLI command prints last.
fn report(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[actix_rt::test]
async fn the_cli_optimizes_and_backs_up_next_to_a_running_server() {
    let s = TestServer::start(FAST).await;
    s.wait_for("200 stored readings", Duration::from_secs(30), async |s| {
        committed(&s.get_ok("/health").await) >= 200
    })
    .await;
    // The server keeps the database to itself (storage.wal_index = "heap"):
    // the CLI asks it to do the work.
    let out = run_cli_at(&["optimize"], &s.db, Some(s.addr)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("a running server holds the database") && stdout.contains("wal_checkpoint"),
        "{stdout}"
    );
    // A full rebuild too, inside the server.
    let out = run_cli_at(&["optimize", "--full"], &s.db, Some(s.addr)).await;
    assert!(out.status.success(), "{out:?}");
    assert!(report(&out).to_string().contains("vacuum"), "{out:?}");
    // A server the CLI cannot reach is named.
    let out = run_cli(&["optimize"], &s.db).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach the running server"),
        "{out:?}"
    );

    let out = run_cli_at(&["backup"], &s.db, Some(s.addr)).await;
    assert!(out.status.success(), "{out:?}");
    let path = report(&out)["path"].as_str().unwrap().to_owned();
    assert!(
        path.starts_with(&s.dir.path().join("backups").display().to_string()),
        "{path}"
    );
    let mut copy = open_db(std::path::Path::new(&path));
    assert_eq!(copy.integrity_check(), "ok");
    assert!(copy.raw_count() >= 200);

    // The server never failed a commit meanwhile, and carries on.
    let before = committed(&s.get_ok("/health").await);
    s.wait_for("more readings", Duration::from_secs(20), async |s| {
        committed(&s.get_ok("/health").await) > before + 50
    })
    .await;
    assert_eq!(s.get_ok("/health").await["writer"]["failed_commits"], 0);
    let (_, dir, db) = s.stop().await;

    // Alone with the database, the full rebuild runs.
    let out = run_cli(&["optimize", "--full"], &db).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("vacuum"));
    assert_eq!(open_db(&db).integrity_check(), "ok");

    let out = run_cli(&["optimize"], &dir.path().join("absent.db")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no database"),
        "{out:?}"
    );
    assert!(
        !dir.path().join("absent.db").exists(),
        "nothing was created"
    );
}

#[actix_rt::test]
async fn readings_deleted_by_retention_are_not_served_from_memory() {
    // 200 readings from ten days ago (past the raw horizon of seven) and
    // 200 from an hour ago.
    let ten_days_ago = now_ms() - 10 * DAY_MS;
    let dir = seeded(200, ten_days_ago);
    let cfg_path = dir.path().join("vigil.db");
    open_db(&cfg_path).execute(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 199)
         INSERT INTO readings SELECT 1 + (i % 2), {} + i * 500, i FROM n;",
        now_ms() - 3_600_000
    ));
    let cfg = quiet(&dir, "");
    let s = TestServer::start_with(dir, cfg).await;
    let page = "/api/readings?sensor=bulk&limit=1000&fields=ts_ms";
    // The first request warms the cache from the database; the second is
    // answered from memory, old rows included.
    assert_eq!(s.get_ok(page).await["count"], 400);
    s.wait_for(
        "the cache to serve the page",
        Duration::from_secs(10),
        async |s| {
            let stats = s.get_ok("/api/performance/stats").await;
            let _ = s.get_ok(page).await;
            stats["operations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["name"] == "memory.readings_page")
        },
    )
    .await;
    let (status, report) = s.post("/api/admin/retention", None).await;
    assert_eq!(status, 200, "{report}");
    let horizon = now_ms() - 7 * DAY_MS;
    let after = s.get_ok(page).await;
    let rows = after["readings"].as_array().unwrap();
    assert_eq!(rows.len(), 200, "{after}");
    assert!(rows.iter().all(|r| r["ts_ms"].as_i64().unwrap() >= horizon));
    s.stop().await;
}
