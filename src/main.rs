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
    /// Import readings from a file that /api/readings/export wrote (NDJSON
    /// or CSV, told by its first line; `-` reads standard input), through
    /// the writer's commit path with rollups. A reading whose series already
    /// holds one at the same millisecond is skipped, so importing twice
    /// changes nothing. Needs the database alone: stop the server first.
    Import {
        /// Config file naming the database (storage.path).
        #[arg(short, long, env = "VIGIL_CONFIG")]
        config: Option<PathBuf>,
        /// The file to read, or `-` for standard input.
        path: PathBuf,
    },
    /// Validate a config file (and VIGIL_* overrides); exit 0 if usable, 1
    /// with the offending key if not. Suited to systemd's ExecStartPre.
    CheckConfig {
        /// Config file to check; without one, the embedded defaults.
        path: Option<PathBuf>,
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
        Command::Import { config, path } => import(config, path),
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
    vigil::logging::init(&config.log.filter);
}

fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    // Every live-feed session holds sockets; the usual soft limit of 1024
    // is lower than the hard limit systemd and most shells allow.
    vigil::raise_fd_limit();
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
    let applied = vigil::prepare(&config.storage)?;
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
    let server = config.server.clone();
    let path_and_query = path_and_query.to_owned();
    let report = actix_rt::System::new().block_on(async move {
        vigil::remote::post_admin(
            &server,
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
    vigil::walindex::set_mode(st.wal_index);
    if vigil::walindex::held_elsewhere(&st.path) {
        return through_server(
            &config,
            "optimize",
            &format!("/api/admin/optimize?full={full}"),
        );
    }
    let report = vigil::maintenance::optimize_path(
        &st.path,
        st.busy_timeout_ms,
        full,
        vigil::clock::now_ms(),
    )
    .with_context(|| {
        if full {
            format!(
                "a full optimize needs the database alone; stop the server first, or ask it: \
                 curl -X POST '{}://{}/api/admin/optimize?full=true'",
                config.server.scheme(),
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
    vigil::walindex::set_mode(st.wal_index);
    if vigil::walindex::held_elsewhere(&st.path) {
        return through_server(&config, "backup", "/api/admin/backup");
    }
    let (dir, create) = config.maintenance.backup_dir_for(&st.path);
    let report = vigil::maintenance::backup(
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

/// Counts the bytes read through it, for the progress line.
struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

fn import(config: Option<PathBuf>, path: PathBuf) -> anyhow::Result<()> {
    use std::io::{BufReader, IsTerminal, Read, Write};
    let config = load(config)?;
    init_logging(&config);
    let st = &config.storage;
    let (input, size, name): (Box<dyn Read>, Option<u64>, String) = if path.as_os_str() == "-" {
        (
            Box::new(std::io::stdin().lock()),
            None,
            "standard input".into(),
        )
    } else {
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size, path.display().to_string())
    };
    vigil::walindex::set_mode(st.wal_index);
    if vigil::walindex::held_elsewhere(&st.path) {
        anyhow::bail!(
            "{} is held by a running server; stop it first (for example `systemctl stop vigil`), import, then start it again",
            st.path.display()
        );
    }
    vigil::prepare(st)?;
    let mut conn = vigil::open_writer(st)?;
    vigil::maintenance::lock_exclusively(&mut conn, &st.path)
        .context("an import needs the database alone; stop the server first")?;
    let counting = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: input,
            read: counting.clone(),
        },
    );
    let terminal = std::io::stderr().is_terminal();
    let mut last_shown = std::time::Instant::now();
    let report = vigil::import::Importer::new(&mut conn)?
        .run(reader, |r| {
            if !terminal || last_shown.elapsed() < std::time::Duration::from_millis(250) {
                return;
            }
            last_shown = std::time::Instant::now();
            let read = counting.get();
            let share = size
                .filter(|&s| s > 0)
                .map(|s| format!(" ({:.0} %)", read as f64 * 100.0 / s as f64))
                .unwrap_or_default();
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\rimported {} readings, skipped {}, {} MiB read{share}   ",
                r.imported,
                r.skipped,
                read / (1024 * 1024)
            );
            let _ = err.flush();
        })
        .with_context(|| format!("importing {name} into {}", st.path.display()));
    if terminal {
        eprintln!();
    }
    let report = report?;
    println!(
        "{}: imported {} readings from {name} ({} skipped as already stored, {} new series)",
        st.path.display(),
        report.imported,
        report.skipped,
        report.series_created
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let origin = path.as_ref().map_or_else(
        || "embedded defaults".to_owned(),
        |p| p.display().to_string(),
    );
    let config = load(path)?;
    // The certificate files are read and matched as the server would.
    config.server.tls()?;
    // `serve` would refuse a database in a missing directory (it does not
    // create directories): a typo in the path is caught here.
    if let Some(dir) = config
        .storage
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(vigil::ConfigError::invalid(
            "storage.path",
            format!("directory {} does not exist", dir.display()),
        )
        .in_origin(&origin)
        .into());
    }
    let scheme = config.server.scheme();
    let enabled: Vec<_> = config
        .sensors
        .iter()
        .filter(|s| s.enabled)
        .map(|s| format!("{} ({})", s.name, s.driver.kind()))
        .collect();
    println!(
        "{origin}: OK; database {}, listening on {scheme}://{}, sensors: {}",
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
