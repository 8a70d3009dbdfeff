//! `vigil-bench series`: how fast a chart range comes back, measured two
//! ways on the same database: the storage query alone (tier choice, read,
//! bucketing) on a read-pool connection, and `GET /api/series` end to end
//! against the real server (HTTP/1.1 keep-alive on loopback, JSON body).
//!
//! The data: `sensors` series of 1 Hz readings over `days` days, written
//! through the writer's own commit path, so the rollups are the ones the
//! appliance would have. The target: 7 days as 1,000 points, p50 under
//! 5 ms. The same range read from raw readings is timed too, to show what
//! the minute tier saves.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;

use super::{median_f64, percentile};
use crate::app::config::Config;
use crate::storage::catalog::SeriesCatalog;
use crate::storage::config::StorageConfig;
use crate::storage::rollup::{DAY_MS, HOUR_MS, Tier};
use crate::storage::series::{query, query_tier};
use crate::storage::writer::{commit_gated, commit_import};
use crate::storage::{StorageError, open_writer, prepare, read_pool};
use crate::vocab::reading::{Reading, SeriesKey};

/// Sizes of the measurement.
#[derive(Debug, Clone, Copy)]
pub struct SeriesOptions {
    pub days: u32,
    pub sensors: usize,
    pub points: u32,
    pub runs: usize,
    pub queries: usize,
    /// Seal every ended hour first, as an appliance's history is.
    pub seal: bool,
    /// With `seal`: the newest minutes written through the live commit
    /// path, one commit a minute (the default flush window), so they lie
    /// in head blocks as an appliance's unsealed hour does (0: every hour
    /// sealed).
    pub head_block_mins: u32,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            days: 7,
            sensors: 10,
            points: 1000,
            runs: 3,
            queries: 200,
            seal: true,
            head_block_mins: 60,
        }
    }
}

/// Latencies of one kind of request, medians over the runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseFigures {
    pub case: String,
    pub tier: Tier,
    pub buckets: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SeriesFigures {
    pub rows: usize,
    /// Whether the readings were sealed into chunks.
    pub sealed: bool,
    /// Minutes of the newest readings left in head blocks.
    pub head_block_mins: u32,
    /// The readings in head blocks when the timing starts.
    pub head_block_readings: i64,
    pub db_bytes: u64,
    pub fill_s: f64,
    /// The storage query alone.
    pub query: Vec<CaseFigures>,
    /// `GET /api/series` through the real server.
    pub http: Vec<CaseFigures>,
}

/// Start of the simulated data: a UTC midnight.
pub(crate) const T0: i64 = 1_795_392_000_000;

fn bench_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Io {
        what: "benchmark".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Writes 1 Hz readings of `sensors` sensors over `[from, to)` as rows,
/// through the writer's import path, in batches of 1000 (time-ordered
/// across sensors, as the queue delivers them): the layout a database of
/// an earlier release, or an import, leaves and sealing starts from (live
/// commits write head blocks, sealed within the hour; a week of them
/// unsealed is no appliance's state). The value is a slow wave plus noise,
/// rounded to two decimals as a sensor's resolution rounds it.
pub(crate) fn fill(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    sensors: usize,
    from: i64,
    to: i64,
) -> Result<usize, StorageError> {
    fill_with(sensors, from, to, 1000, |batch| {
        commit_import(conn, catalog, batch).map(|_| ())
    })
}

/// Writes the same readings as [`fill`] through the live commit path, one
/// commit per flush window of `window_ms`, so they lie in head blocks as
/// an appliance's current hour does until it is sealed.
pub(crate) fn fill_live(
    conn: &mut SqliteConnection,
    catalog: &SeriesCatalog,
    sensors: usize,
    from: i64,
    to: i64,
    window_ms: i64,
) -> Result<usize, StorageError> {
    let per_batch = (window_ms / 1000).max(1) as usize * sensors;
    fill_with(sensors, from, to, per_batch, |batch| {
        commit_gated(conn, catalog, batch, true, None).map(|_| ())
    })
}

fn fill_with(
    sensors: usize,
    from: i64,
    to: i64,
    per_batch: usize,
    mut commit: impl FnMut(&[Reading]) -> Result<(), StorageError>,
) -> Result<usize, StorageError> {
    let keys: Vec<Arc<SeriesKey>> = (0..sensors)
        .map(|s| {
            Arc::new(SeriesKey {
                sensor: format!("sensor{s}").into(),
                metric: "value".into(),
                unit: "".into(),
            })
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut batch = Vec::with_capacity(per_batch);
    let mut rows = 0;
    let mut t = from;
    while t < to {
        for (s, key) in keys.iter().enumerate() {
            let phase = (t as f64 / 3.6e6) + s as f64;
            batch.push(Reading {
                series: key.clone(),
                ts_ms: t + s as i64 * 37,
                // Two decimals: a sensor's resolution, as stored.
                value: ((20.0 + 5.0 * phase.sin() + rng.f64()) * 100.0).round() / 100.0,
            });
            if batch.len() == per_batch {
                commit(&batch)?;
                rows += batch.len();
                batch.clear();
            }
        }
        t += 1000;
    }
    if !batch.is_empty() {
        commit(&batch)?;
    }
    Ok(rows + batch.len())
}

struct Case {
    name: &'static str,
    span: i64,
    forced: Option<Tier>,
}

const CASES: [Case; 4] = [
    Case {
        name: "1 hour",
        span: HOUR_MS,
        forced: None,
    },
    Case {
        name: "24 hours",
        span: DAY_MS,
        forced: None,
    },
    Case {
        name: "7 days",
        span: 7 * DAY_MS,
        forced: None,
    },
    Case {
        name: "7 days from raw readings",
        span: 7 * DAY_MS,
        forced: Some(Tier::Raw),
    },
];

/// A minimal HTTP/1.1 keep-alive client for one server.
struct Client {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            addr,
            reader: BufReader::new(s),
        })
    }

    /// GETs `path`; returns the status and body. A connection the server
    /// closed while idle (keep-alive timeout) is replaced once.
    fn get(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        match self.get_once(path) {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Client::connect(self.addr)?;
                self.get_once(path)
            }
        }
    }

    fn get_once(&mut self, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"
        )?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

/// Runs the real appliance (no sensors) on `db` until `stop` fires.
fn serve(
    db: &StorageConfig,
) -> Result<
    (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    ),
    StorageError,
> {
    let mut config = Config::from_toml(
        // One client asks for everything: the per-client rate limit would
        // answer most of it with 429.
        "sensors = []\n[server]\nworkers = 1\nslow_request_ms = 60000\n[log]\nfilter = \"warn\"\n\
         [retention]\ninterval_secs = 0\n[maintenance]\noptimize_interval_secs = 0\n\
         [guard.http]\nenabled = false\n",
        "bench config",
    )
    .map_err(bench_err)?;
    config.storage = db.clone();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(bench_err)?;
    let addr = listener.local_addr().map_err(bench_err)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let result = actix_rt::System::new().block_on(crate::run(config, listener, async move {
            let _ = rx.await;
        }));
        if let Err(e) = result {
            log::error!("benchmark server: {e}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Client::connect(addr)
            && let Ok((200, _)) = c.get("/health")
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(bench_err("the benchmark server did not start"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((addr, tx, thread))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Fills a database, then times each case `queries` times per run.
pub fn run(o: &SeriesOptions) -> Result<SeriesFigures, StorageError> {
    let dir = tempfile::tempdir().map_err(bench_err)?;
    let cfg = StorageConfig {
        path: dir.path().join("series.db"),
        // Sealed up front or not at all: no pass runs during the timing.
        seal_interval_secs: 0,
        ..StorageConfig::default()
    };
    prepare(&cfg)?;
    let end = T0 + i64::from(o.days) * DAY_MS;
    let started = Instant::now();
    let (rows, head_block_readings) = {
        let mut conn = open_writer(&cfg)?;
        let catalog = SeriesCatalog::default();
        let head_from = if o.seal {
            (end - i64::from(o.head_block_mins) * 60_000).max(T0)
        } else {
            end
        };
        let sensors = o.sensors.max(1);
        let mut rows = fill(&mut conn, &catalog, sensors, T0, head_from)?;
        if o.seal {
            super::seal_all(&mut conn, head_from)?;
            rows += fill_live(&mut conn, &catalog, sensors, head_from, end, 60_000)?;
        }
        diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn)?;
        (rows, crate::storage::chunk::blocks::count_all(&mut conn)?)
    };
    let fill_s = started.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(0);

    let pool = read_pool(&cfg)?;
    let mut conn = pool.get().map_err(|e| StorageError::Pool(e.to_string()))?;
    let catalog = SeriesCatalog::load(&mut conn)?;
    let series = catalog.all();
    let (addr, stop, server) = serve(&cfg)?;
    let mut client = Client::connect(addr).map_err(bench_err)?;

    let mut rng = fastrand::Rng::with_seed(9);
    let mut query_runs: Vec<Vec<CaseFigures>> = Vec::new();
    let mut http_runs: Vec<Vec<CaseFigures>> = Vec::new();
    for _ in 0..o.runs.max(1) {
        let mut q_figs = Vec::new();
        let mut h_figs = Vec::new();
        for case in &CASES {
            let span = case.span.min(end - T0);
            let mut q_times = Vec::with_capacity(o.queries);
            let mut h_times = Vec::with_capacity(o.queries);
            let (mut tier, mut buckets) = (Tier::Raw, 0);
            for _ in 0..o.queries.max(1) {
                let s = &series[rng.usize(0..series.len())];
                let to = end - rng.i64(0..600_000);
                let from = (to - span).max(T0);
                let t = Instant::now();
                let a = match case.forced {
                    Some(forced) => query_tier(&mut conn, None, s.id, from, to, o.points, forced)?,
                    None => query(&mut conn, s.id, from, to, o.points)?,
                };
                q_times.push(t.elapsed());
                (tier, buckets) = (a.tier, a.buckets.len());
                if case.forced.is_none() {
                    let path = format!(
                        "/api/series?sensor={}&metric={}&from={from}&to={to}&points={}",
                        s.sensor, s.metric, o.points
                    );
                    let t = Instant::now();
                    let (status, body) = client.get(&path).map_err(bench_err)?;
                    h_times.push(t.elapsed());
                    if status != 200 || body.is_empty() {
                        return Err(bench_err(format!("GET {path}: status {status}")));
                    }
                }
            }
            q_times.sort_unstable();
            q_figs.push(CaseFigures {
                case: case.name.to_owned(),
                tier,
                buckets,
                p50_ms: ms(percentile(&q_times, 50.0)),
                p99_ms: ms(percentile(&q_times, 99.0)),
            });
            if !h_times.is_empty() {
                h_times.sort_unstable();
                h_figs.push(CaseFigures {
                    case: case.name.to_owned(),
                    tier,
                    buckets,
                    p50_ms: ms(percentile(&h_times, 50.0)),
                    p99_ms: ms(percentile(&h_times, 99.0)),
                });
            }
        }
        query_runs.push(q_figs);
        http_runs.push(h_figs);
    }
    drop(client);
    let _ = stop.send(());
    let _ = server.join();

    let medians = |runs: &[Vec<CaseFigures>]| -> Vec<CaseFigures> {
        (0..runs[0].len())
            .map(|i| {
                let mut p50: Vec<f64> = runs.iter().map(|r| r[i].p50_ms).collect();
                let mut p99: Vec<f64> = runs.iter().map(|r| r[i].p99_ms).collect();
                CaseFigures {
                    p50_ms: median_f64(&mut p50),
                    p99_ms: median_f64(&mut p99),
                    ..runs[0][i].clone()
                }
            })
            .collect()
    };
    Ok(SeriesFigures {
        rows,
        sealed: o.seal,
        head_block_mins: if o.seal { o.head_block_mins } else { 0 },
        head_block_readings,
        db_bytes,
        fill_s,
        query: medians(&query_runs),
        http: medians(&http_runs),
    })
}

/// Prints the figures as a table.
pub fn print(f: &SeriesFigures) {
    println!(
        "{} readings{}, database {:.1} MB, written in {:.1} s",
        f.rows,
        match (f.sealed, f.head_block_mins) {
            (false, _) => String::new(),
            (true, 0) => ", sealed".to_owned(),
            (true, m) => format!(", sealed but the newest {m} min in head blocks"),
        },
        f.db_bytes as f64 / 1e6,
        f.fill_s
    );
    for (what, cases) in [("storage query", &f.query), ("GET /api/series", &f.http)] {
        println!("{what}:");
        println!(
            "  {:<28} {:>7} {:>8} {:>10} {:>10}",
            "range", "tier", "buckets", "p50 ms", "p99 ms"
        );
        for c in cases.iter() {
            println!(
                "  {:<28} {:>7} {:>8} {:>10.3} {:>10.3}",
                c.case,
                c.tier.name(),
                c.buckets,
                c.p50_ms,
                c.p99_ms
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_run_at_a_tiny_size() {
        let f = run(&SeriesOptions {
            days: 1,
            sensors: 2,
            points: 100,
            runs: 1,
            // More than the per-client rate limit's burst: the bench server must
            // not be rate limited.
            queries: 50,
            seal: true,
            head_block_mins: 60,
        })
        .unwrap();
        assert!(f.sealed);
        assert_eq!(f.rows, 2 * 86_400);
        // The newest hour through the live path, one commit a minute.
        assert_eq!(f.head_block_readings, 2 * 3_600);
        assert_eq!(f.query.len(), 4);
        assert_eq!(f.http.len(), 3);
        assert_eq!(f.query[0].tier, Tier::Raw);
        assert_eq!(f.query[1].tier, Tier::Minute);
        assert!(
            f.query
                .iter()
                .all(|c| c.buckets > 0 && c.buckets <= 100 && c.p50_ms > 0.0)
        );
        assert!(f.http.iter().all(|c| c.p50_ms > 0.0));
    }
}
