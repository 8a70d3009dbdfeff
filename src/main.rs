//! The `vigil` command line: parses arguments, loads the configuration, sets
//! up logging and signals, and hands over to the library. Nothing else.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vigil::Config;

/// A supervised sensor runtime for long-running Raspberry Pi appliances.
///
/// Polls sensors, stores readings in SQLite, serves a JSON API, and restarts
/// whatever fails. With no config file it runs on the documented defaults
/// (see config/vigil.toml): vigil.db in the working directory, the system,
/// cpu_temp and simulated sensors, HTTP on 127.0.0.1:8080.
#[derive(Parser)]
#[command(name = "vigil", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance until SIGTERM or SIGINT.
    Serve {
        /// Config file (TOML). Without one, the embedded defaults are used.
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate {
        /// Config file naming the database (storage.path).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Optimize the database: statistics where stale, PRAGMA optimize,
    /// incremental vacuum and a WAL checkpoint, with sizes before and after.
    /// Safe next to a running server; --full (VACUUM and REINDEX) needs the
    /// database alone and is refused while anything else has it open.
    Optimize {
        /// Config file naming the database (storage.path).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
        /// Also rebuild the whole file (VACUUM) and its indexes (REINDEX).
        #[arg(long)]
        full: bool,
    },
    /// Write a consistent copy of the database into maintenance.backup_dir
    /// (VACUUM INTO) and keep the newest maintenance.backup_keep. Safe next
    /// to a running server.
    Backup {
        /// Config file naming the database and the backup settings.
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run a benchmark on temporary data and print its figures (medians).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Validate a config file (and VIGIL_* overrides); exit 0 if usable, 1
    /// with the offending key if not. Suited to systemd's ExecStartPre.
    CheckConfig {
        /// Config file to check; without one, the embedded defaults.
        path: Option<PathBuf>,
    },
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Migrate { config } => migrate(config),
        Command::CheckConfig { path } => check_config(path),
        Command::Optimize { config, full } => optimize(config, full),
        Command::Backup { config } => backup(config),
        Command::Bench { what } => bench(what),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: most of vigil's
/// errors already include their cause's text, which `{:#}` would repeat.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(Config::load(path.as_deref())?)
}

fn init_logging(config: &Config) {
    env_logger::Builder::new()
        .parse_filters(&config.log.filter)
        .format_timestamp_millis()
        .init();
}

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    // Every live-feed session holds sockets; the usual soft limit of 1024
    // is lower than the hard limit systemd and most shells allow.
    vigil::platform::raise_fd_limit();
    let addr = config.server.bind_addr()?;
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    actix_rt::System::new().block_on(async move {
        let result = vigil::run(config, listener, shutdown_signal()).await;
        // Everything is stored by now. Exit here rather than return: dropping
        // the runtime would wait for the blocking threads, and a driver hung
        // in the kernel would hold the process open forever.
        match result {
            Ok(_) => std::process::exit(0),
            Err(e) => {
                log::error!("{e}");
                eprintln!("vigil: {e}");
                std::process::exit(1)
            }
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen for SIGTERM: {e}; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT received"),
    }
}

fn migrate(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    let applied = vigil::storage::prepare(&config.storage)?;
    if applied.is_empty() {
        println!("{}: schema up to date", config.storage.path.display());
    } else {
        for m in applied {
            println!("{}: applied {m}", config.storage.path.display());
        }
    }
    Ok(())
}

/// Runs an admin operation through the server that holds the database
/// (`storage.wal_index = "heap"` keeps other processes out), printing its
/// report.
fn through_server(config: &Config, what: &str, path_and_query: &str) -> anyhow::Result<()> {
    let bind = config.server.bind.clone();
    let token = config.server.admin_token.clone();
    let path_and_query = path_and_query.to_owned();
    let report = actix_rt::System::new().block_on(async move {
        vigil::web::remote::post_admin(
            &bind,
            &token,
            &path_and_query,
            std::time::Duration::from_secs(3600),
        )
        .await
    })?;
    println!(
        "{}: a running server holds the database; it did the {what}",
        config.storage.path.display()
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn optimize(path: Option<PathBuf>, full: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    let st = &config.storage;
    vigil::storage::walindex::set_mode(st.wal_index);
    if vigil::storage::walindex::held_elsewhere(&st.path) {
        return through_server(
            &config,
            "optimize",
            &format!("/api/admin/optimize?full={full}"),
        );
    }
    let report = vigil::storage::maintenance::optimize_path(
        &st.path,
        st.busy_timeout_ms,
        full,
        vigil::clock::now_ms(),
    )
    .with_context(|| {
        if full {
            format!(
                "a full optimize needs the database alone; stop the server first, or ask it: \
                 curl -X POST 'http://{}/api/admin/optimize?full=true'",
                config.server.bind
            )
        } else {
            format!("optimizing {}", st.path.display())
        }
    })?;
    for s in &report.steps {
        println!(
            "{:<20} {:>10.1} ms  {}",
            s.step,
            s.ms,
            s.detail.as_deref().unwrap_or("")
        );
    }
    let (b, a) = (&report.before, &report.after);
    println!(
        "{}: file {} -> {} bytes, WAL {} -> {} bytes, pages {} -> {}, free pages {} -> {}",
        st.path.display(),
        b.db_bytes,
        a.db_bytes,
        b.wal_bytes,
        a.wal_bytes,
        b.page_count,
        a.page_count,
        b.freelist_count,
        a.freelist_count
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn backup(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    let st = &config.storage;
    vigil::storage::walindex::set_mode(st.wal_index);
    if vigil::storage::walindex::held_elsewhere(&st.path) {
        return through_server(&config, "backup", "/api/admin/backup");
    }
    let (dir, create) = config.maintenance.backup_dir_for(&st.path);
    let report = vigil::storage::maintenance::backup(
        &st.path,
        &dir,
        create,
        config.maintenance.backup_keep,
        vigil::clock::now_ms(),
        st.busy_timeout_ms,
    )
    .with_context(|| format!("backing up {} into {}", st.path.display(), dir.display()))?;
    println!("{} ({} bytes)", report.path, report.bytes);
    for old in &report.removed {
        println!("removed {old}");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let origin = path.as_ref().map_or_else(
        || "embedded defaults".to_owned(),
        |p| p.display().to_string(),
    );
    let config = load(path)?;
    let enabled: Vec<_> = config
        .sensors
        .iter()
        .filter(|s| s.enabled)
        .map(|s| format!("{} ({})", s.name, s.driver.kind()))
        .collect();
    println!(
        "{origin}: OK; database {}, listening on {}, sensors: {}",
        config.storage.path.display(),
        config.server.bind,
        if enabled.is_empty() {
            "none".to_owned()
        } else {
            enabled.join(", ")
        }
    );
    Ok(())
}

fn bench(what: Bench) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    match what {
        Bench::Query {
            rows,
            connections,
            seconds,
            runs,
            threads,
        } => {
            let o = vigil::bench::query::QueryOptions {
                rows,
                connections,
                seconds,
                runs,
                threads,
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
                "heap" => vigil::storage::walindex::WalIndex::Heap,
                "file" => vigil::storage::walindex::WalIndex::File,
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
                    "  run {}: writer {:.0} rows/s, raw SQLite {:.0} rows/s, ratio {:.2}",
                    i + 1,
                    r.writer_rows_per_s,
                    r.raw_rows_per_s,
                    r.ratio
                );
            }
            println!(
                "median: writer {:.0} rows/s, raw {:.0} rows/s, ratio {:.2} ({} rows, batches of {})",
                f.writer_rows_per_s, f.raw_rows_per_s, f.ratio, f.rows, f.batch_size
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
        } => {
            let f = vigil::bench::series::run(&vigil::bench::series::SeriesOptions {
                days,
                sensors,
                points,
                runs,
                queries,
            })?;
            vigil::bench::series::print(&f);
            println!("{}", serde_json::to_string(&f)?);
        }
        Bench::Retention {
            sensors,
            days,
            max_db_mb,
            chunk_rows,
        } => {
            let f = vigil::bench::retention::run(&vigil::bench::retention::RetentionOptions {
                sensors,
                days,
                max_db_mb,
                chunk_rows,
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
        } => {
            let o = vigil::bench::schema::SchemaOptions {
                rows,
                series,
                runs,
                queries,
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
            for f in &figures {
                println!(
                    "{:<42} {:>12.0} {:>10.1} {:>10.1}us {:>10.1}us {:>10.1}us {:>10.0} {:>10.0}",
                    f.layout,
                    f.insert_rows_per_s,
                    f.file_bytes_per_row,
                    f.latest_100_p50_us,
                    f.latest_100_p99_us,
                    f.hour_range_p50_us,
                    f.wal_bytes_per_row_commit_3,
                    f.wal_bytes_per_row_commit_30
                );
            }
            println!("{}", serde_json::to_string(&figures)?);
        }
    }
    Ok(())
}
