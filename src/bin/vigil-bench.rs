//! `vigil-bench`: the benchmarks behind docs/BENCHMARKS.md, as a tool of
//! their own beside the appliance. Built only with the `bench` feature
//! (`cargo run --release --features bench --bin vigil-bench -- <what>`),
//! so the appliance binary carries no load generator, WebSocket client or
//! raw-SQLite code. Benchmarks that run the appliance start the `vigil`
//! binary next to this one (or the one `--vigil` names).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks of a vigil appliance on temporary data; each prints its
/// figures (medians) and a JSON line.
#[derive(Parser)]
#[command(name = "vigil-bench", version)]
struct Cli {
    /// The appliance binary to benchmark (default: `vigil` next to this one).
    #[arg(long, global = true, env = "VIGIL_BIN")]
    vigil: Option<PathBuf>,
    #[command(subcommand)]
    what: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// GET /api/readings?sensor=…&limit=100 on a large database under
    /// concurrent keep-alive load.
    Query {
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Load-generator threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Keep every reading a row instead of sealing ended hours first.
        #[arg(long)]
        unsealed: bool,
    },
    /// Spawn to ready (/health 200), on a fresh and on an existing database.
    Startup {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// The idle appliance with default sensors: memory, CPU, and bytes
    /// written per stored reading.
    Footprint {
        /// Length of the measured window.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Run with this flush window instead of the default.
        #[arg(long)]
        flush_ms: Option<u64>,
    },
    /// Readings published to a local mosquitto per second, and the
    /// backlog's drain rate after a broker outage.
    Mqtt {
        #[arg(long, default_value_t = 10)]
        sensors: usize,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// Seconds per throughput window.
        #[arg(long, default_value_t = 5)]
        window_s: u64,
        /// Seconds the broker is away before each drain.
        #[arg(long, default_value_t = 20)]
        outage_s: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A panicked sensor's restart: from the failure to its first new
    /// reading, against the supervisor's backoff.
    Restart {
        /// Panicking sensors per run (one sample each).
        #[arg(long, default_value_t = 20)]
        sensors: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// supervisor.backoff_base_ms (default: the appliance's default).
        #[arg(long)]
        backoff_ms: Option<u64>,
    },
    /// Ingest through the DbWriter against raw SQLite inserts of the same
    /// rows, in the same run.
    Ingest {
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the writer's WAL index lives: heap or file.
        #[arg(long, default_value = "heap")]
        wal_index: String,
    },
    /// Live-feed delivery latency with many WebSocket clients on loopback,
    /// plus the server's CPU and memory.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Live updates per second.
        #[arg(long, default_value_t = 10)]
        rate: u32,
        /// Seconds per measurement run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Chart series latency: ranges of a 1 Hz sensor as N points, from the
    /// tier the API would choose (and from raw readings, for comparison).
    Series {
        /// Days of 1 Hz readings per sensor.
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[arg(long, default_value_t = 10)]
        sensors: usize,
        #[arg(long, default_value_t = 1000)]
        points: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Keep every reading a row instead of sealing ended hours first.
        #[arg(long)]
        unsealed: bool,
        /// Minutes of the newest readings committed as the appliance does,
        /// one commit a minute into head blocks, unsealed (0: all sealed).
        #[arg(long, default_value_t = 60)]
        head_block_mins: u32,
    },
    /// A year of 10 sensors at 1 Hz under the tiered retention and a size
    /// cap: size per tier, rows deleted, the longest write-lock hold.
    Retention {
        #[arg(long, default_value_t = 10)]
        sensors: usize,
        /// Days simulated.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// retention.max_db_mb for the run (0: no cap).
        #[arg(long, default_value_t = 150)]
        max_db_mb: u64,
        #[arg(long, default_value_t = 5000)]
        chunk_rows: u32,
        /// retention.raw_days for the run: the newest raw_days + 1 days are
        /// built as real readings.
        #[arg(long, default_value_t = 7)]
        raw_days: u32,
        /// Keep every reading a row, as with storage.seal_interval_secs = 0.
        #[arg(long)]
        unsealed: bool,
    },
    /// Rounds of half-open connection floods on loopback: the appliance's
    /// RSS before, at the peak of, and after each round.
    Flood {
        /// Connections per round.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Idle seconds after each round before its "after" figure.
        #[arg(long, default_value_t = 30)]
        settle_secs: u64,
        /// server.connections.max_connections for the run (default: the default).
        #[arg(long)]
        max_connections: Option<usize>,
        /// server.connections.max_per_client for the run.
        #[arg(long)]
        max_per_client: Option<usize>,
        /// guard.memory.check_interval_ms for the run (a huge value: no
        /// memory guard, so no freed heap handed back).
        #[arg(long)]
        memory_check_ms: Option<u64>,
    },
    /// Compare readings-table layouts: insert rate, size, query latency, WAL
    /// bytes per small commit.
    Schema {
        #[arg(long, default_value_t = 2_000_000)]
        rows: usize,
        #[arg(long, default_value_t = 10)]
        series: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 2000)]
        queries: usize,
        /// Decimal places of the values, as a sensor's resolution gives
        /// them; `--decimals full` keeps every bit of a noisy f64.
        #[arg(long, default_value = "2")]
        decimals: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exe = match cli.vigil.map_or_else(appliance_next_to_me, appliance_at) {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("vigil-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match bench(cli.what, &exe) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The appliance binary `--vigil` names, which must exist.
fn appliance_at(exe: PathBuf) -> anyhow::Result<PathBuf> {
    if !exe.is_file() {
        anyhow::bail!("--vigil {}: no such file", exe.display());
    }
    Ok(exe)
}

/// `vigil` in the directory of this executable, where cargo builds both.
fn appliance_next_to_me() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let exe = me.with_file_name("vigil");
    if !exe.is_file() {
        anyhow::bail!(
            "no appliance binary at {} (build it with `cargo build --release`, or name one with --vigil)",
            exe.display()
        );
    }
    Ok(exe)
}

fn bench(what: Bench, exe: &Path) -> anyhow::Result<()> {
    let exe = exe.to_path_buf();
    match what {
        Bench::Query {
            rows,
            connections,
            seconds,
            runs,
            threads,
            unsealed,
        } => {
            let o = vigil::bench::query::QueryOptions {
                rows,
                connections,
                seconds,
                runs,
                threads,
                seal: !unsealed,
                ..Default::default()
            };
            let f = vigil::bench::query::run(&exe, &o)?;
            println!(
                "database of {} rows built in {:.1} s",
                f.rows, f.build_seconds
            );
            for (i, r) in f.runs.iter().enumerate() {
                println!(
                    "  run {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors, server CPU {:.0} %",
                    i + 1,
                    r.requests_per_s,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.errors,
                    r.server_cpu_percent
                );
            }
            println!(
                "median over runs: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} connections)",
                f.requests_per_s, f.p50_ms, f.p99_ms, f.connections
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Startup { runs } => {
            let f = vigil::bench::startup::run(&exe, runs)?;
            println!(
                "start to ready over {} runs: fresh database p50 {:.1} ms (max {:.1}), existing p50 {:.1} ms (max {:.1})",
                f.runs, f.fresh_p50_ms, f.fresh_max_ms, f.existing_p50_ms, f.existing_max_ms
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Footprint { seconds, flush_ms } => {
            let o = vigil::bench::footprint::FootprintOptions {
                seconds,
                flush_interval_ms: flush_ms,
                ..Default::default()
            };
            let f = vigil::bench::footprint::run(&exe, &o)?;
            println!(
                "{:.0} s idle, flush every {} ms: RSS median {:.1} MiB (max {:.1}), CPU {:.2} % of one core, \
                 {} readings ({:.2}/s), {} bytes written = {:.0} bytes per reading ({:.0} handed to write); \
                 pacing {} (x{})",
                f.seconds,
                f.flush_interval_ms,
                f.rss_median_mib,
                f.rss_max_mib,
                f.cpu_percent,
                f.readings_stored,
                f.readings_per_second,
                f.bytes_written,
                f.bytes_per_reading,
                f.wchar_per_reading,
                f.pacing_level,
                f.pacing_multiplier
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Mqtt {
            sensors,
            interval_ms,
            window_s,
            outage_s,
            runs,
        } => {
            let o = vigil::bench::mqtt::MqttOptions {
                sensors,
                interval_ms,
                window_s,
                outage_s,
                runs,
            };
            let f = vigil::bench::mqtt::run(&exe, &o)?;
            println!(
                "{:.0} readings/s offered: {:.0}/s at the subscriber (median of {}), {:.1} ms appliance CPU \
                 per 1,000; after {} s outages, a backlog of {:.0} drained at {:.0} replayed/s (median)",
                f.offered_per_sec,
                f.published_per_sec,
                f.windows.len(),
                f.cpu_ms_per_1000,
                outage_s,
                f.backlog,
                f.drain_per_sec
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Restart {
            sensors,
            runs,
            backoff_ms,
        } => {
            let o = vigil::bench::restart::RestartOptions {
                sensors,
                runs,
                backoff_base_ms: backoff_ms,
            };
            let f = vigil::bench::restart::run(&exe, &o)?;
            println!(
                "{} restarts, backoff base {} ms: failure to first new reading p50 {:.0} ms, max {:.0} ms \
                 ({} over base + 50 ms); beyond the scheduled delay p50 {:.0} ms, max {:.0} ms",
                f.samples,
                f.backoff_base_ms,
                f.gap_p50_ms,
                f.gap_max_ms,
                f.over_target,
                f.overhead_p50_ms,
                f.overhead_max_ms
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Ingest {
            rows,
            runs,
            wal_index,
        } => {
            let wal_index = match wal_index.as_str() {
                "heap" => vigil::walindex::WalIndex::Heap,
                "file" => vigil::walindex::WalIndex::File,
                other => anyhow::bail!("--wal-index: `{other}` is neither heap nor file"),
            };
            let o = vigil::bench::ingest::IngestOptions {
                rows,
                runs,
                wal_index,
                ..Default::default()
            };
            let f = vigil::bench::ingest::run(&o)?;
            for (i, r) in f.runs.iter().enumerate() {
                println!(
                    "  run {}: writer {:.0} rows/s, raw SQLite {:.0} rows/s, ratio {:.2}; sealing {:.0} rows/s, writer and sealing {:.2} of raw",
                    i + 1,
                    r.writer_rows_per_s,
                    r.raw_rows_per_s,
                    r.ratio,
                    r.seal_rows_per_s,
                    r.with_sealing_ratio
                );
            }
            println!(
                "median: writer {:.0} rows/s, raw {:.0} rows/s, ratio {:.2}; with sealing {:.2} ({} rows, batches of {})",
                f.writer_rows_per_s,
                f.raw_rows_per_s,
                f.ratio,
                f.with_sealing_ratio,
                f.rows,
                f.batch_size
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Fanout {
            clients,
            rate,
            seconds,
            runs,
        } => {
            let o = vigil::bench::fanout::FanoutOptions {
                clients,
                rate,
                seconds,
                runs,
                ..Default::default()
            };
            let f = vigil::bench::fanout::run(&o, &exe)?;
            println!(
                "fan-out: {} of {} clients connected, {} updates/s",
                f.connected, f.clients, f.rate
            );
            for (i, r) in f.runs.iter().enumerate() {
                println!(
                    "  run {}: {} messages, delivery p50 {:.2} ms p99 {:.2} ms max {:.2} ms, \
                     end-to-end p50 {:.2} ms p99 {:.2} ms, server CPU {:.1} %, RSS {:.1} MiB",
                    i + 1,
                    r.messages,
                    r.delivery_p50_ms,
                    r.delivery_p99_ms,
                    r.delivery_max_ms,
                    r.end_to_end_p50_ms,
                    r.end_to_end_p99_ms,
                    r.server_cpu_percent,
                    r.server_rss_mib
                );
            }
            println!(
                "median: delivery p50 {:.2} ms, p99 {:.2} ms; end-to-end p99 {:.2} ms; \
                 server CPU {:.1} % of one core; peak RSS {:.1} MiB",
                f.delivery_p50_ms,
                f.delivery_p99_ms,
                f.end_to_end_p99_ms,
                f.server_cpu_percent,
                f.server_peak_rss_mib
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Series {
            days,
            sensors,
            points,
            runs,
            queries,
            unsealed,
            head_block_mins,
        } => {
            let f = vigil::bench::series::run(&vigil::bench::series::SeriesOptions {
                days,
                sensors,
                points,
                runs,
                queries,
                seal: !unsealed,
                head_block_mins,
            })?;
            vigil::bench::series::print(&f);
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Retention {
            sensors,
            days,
            max_db_mb,
            chunk_rows,
            raw_days,
            unsealed,
        } => {
            let f = vigil::bench::retention::run(&vigil::bench::retention::RetentionOptions {
                sensors,
                days,
                max_db_mb,
                chunk_rows,
                raw_days,
                seal: !unsealed,
            })?;
            vigil::bench::retention::print(&f);
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Flood {
            connections,
            rounds,
            settle_secs,
            max_connections,
            max_per_client,
            memory_check_ms,
        } => {
            let o = vigil::bench::flood::FloodOptions {
                connections,
                rounds,
                settle_secs,
                max_connections,
                max_per_client,
                memory_check_ms,
                ..Default::default()
            };
            let f = vigil::bench::flood::run(&exe, &o)?;
            println!(
                "{} connections a round, limits {} total / {} per client; RSS at start {:.1} MiB, {} fds",
                f.connections, f.max_connections, f.max_per_client, f.start_mib, f.start_fds
            );
            for (i, r) in f.rounds.iter().enumerate() {
                println!(
                    "  round {}: RSS {:.1} -> peak {:.1} -> {:.1} MiB after {} s; {} opened, {} refused, {} held, peak {} fds, {:.1} s",
                    i + 1,
                    r.before_mib,
                    r.peak_mib,
                    r.after_mib,
                    settle_secs,
                    r.opened,
                    r.refused,
                    r.held,
                    r.peak_fds,
                    r.flood_secs
                );
            }
            println!(
                "peak median {:.1} MiB, max {:.1} MiB; after the last round {:+.1} MiB from the start",
                f.peak_median_mib, f.peak_max_mib, f.end_above_start_mib
            );
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Schema {
            rows,
            series,
            runs,
            queries,
            decimals,
        } => {
            let decimals = match decimals.as_str() {
                "full" => None,
                d => Some(d.parse::<u32>().ok().filter(|d| *d <= 15).ok_or_else(|| {
                    anyhow::anyhow!("--decimals: `{d}` is neither 0..=15 nor `full`")
                })?),
            };
            let o = vigil::bench::schema::SchemaOptions {
                rows,
                series,
                runs,
                queries,
                decimals,
            };
            let figures = vigil::bench::schema::run(&o)?;
            println!(
                "{:<42} {:>12} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10}",
                "layout",
                "insert/s",
                "B/row",
                "last100 p50",
                "last100 p99",
                "1h p50",
                "WAL B/r@3",
                "WAL B/r@30"
            );
            let wal = |b: Option<f64>| b.map_or_else(|| "-".to_owned(), |b| format!("{b:.0}"));
            for f in &figures {
                println!(
                    "{:<42} {:>12.0} {:>10.1} {:>10.1}us {:>10.1}us {:>10.1}us {:>10} {:>10}",
                    f.layout,
                    f.insert_rows_per_s,
                    f.file_bytes_per_row,
                    f.latest_100_p50_us,
                    f.latest_100_p99_us,
                    f.hour_range_p50_us,
                    wal(f.wal_bytes_per_row_commit_3),
                    wal(f.wal_bytes_per_row_commit_30)
                );
            }
            println!("{}", serde_json::to_string(&figures)?);
        }
    }
    Ok(())
}
