//! Keeping the database file healthy: `optimize` (statistics, free pages,
//! the WAL, and on request a full rebuild) and `backup` (a consistent copy
//! with `VACUUM INTO`, keeping the last N).
//!
//! Both are plain functions over a connection or a path. The server runs
//! optimize on the writer's connection, through the `DbWriter`, so it never
//! runs concurrently with a commit; the CLI runs it on its own connection
//! next to a running server, which is safe because every step is a short
//! transaction of its own (a full rebuild needs the database alone and is
//! refused otherwise: see [`lock_exclusively`]). A backup only reads, from
//! a snapshot, so it runs on a connection of its own and never stalls
//! ingestion.

use std::path::{Path, PathBuf};
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{BigInt, Text};
use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::vocab::check::{ConfigError, positive};
use crate::vocab::clock::rfc3339;

/// Free pages handed back to the file system per transaction, by retention
/// when the file is over the cap and by the incremental vacuum step.
pub const RELEASE_PAGES_PER_STEP: u32 = 128;

/// `ANALYZE` looks at about this many rows per index (`PRAGMA
/// analysis_limit`), so that statistics cost milliseconds even on a large
/// database.
pub const ANALYSIS_LIMIT: u32 = 1000;

/// `[maintenance]`: scheduled optimize and backups.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Seconds between scheduled optimize runs; 0 only when asked.
    pub optimize_interval_secs: u64,
    /// Seconds between scheduled backups; 0 only when asked.
    pub backup_interval_secs: u64,
    /// Directory for backups; empty means `backups` next to the database.
    pub backup_dir: PathBuf,
    /// Backups kept; older ones are deleted after each new one.
    pub backup_keep: u32,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            optimize_interval_secs: 86_400,
            backup_interval_secs: 0,
            backup_dir: PathBuf::new(),
            backup_keep: 7,
        }
    }
}

impl MaintenanceConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("maintenance.backup_keep", u64::from(self.backup_keep))
    }

    /// Where backups go for the database at `db`, and whether vigil may
    /// create that directory (only the default one, next to the database).
    pub fn backup_dir_for(&self, db: &Path) -> (PathBuf, bool) {
        if self.backup_dir.as_os_str().is_empty() {
            let parent = db.parent().unwrap_or(Path::new(""));
            (parent.join("backups"), true)
        } else {
            (self.backup_dir.clone(), false)
        }
    }
}

/// The page-level figures SQLite reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PageFigures {
    pub page_size: u64,
    pub page_count: u64,
    pub freelist_count: u64,
}

impl PageFigures {
    /// Bytes the database would occupy with its free pages released.
    pub fn used_bytes(&self) -> u64 {
        self.page_count.saturating_sub(self.freelist_count) * self.page_size
    }

    /// Bytes of the database as SQLite sees it (its file once checkpointed).
    pub fn file_bytes(&self) -> u64 {
        self.page_count * self.page_size
    }
}

#[derive(QueryableByName)]
struct Num {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn pragma_int(conn: &mut SqliteConnection, pragma: &str) -> QueryResult<u64> {
    diesel::sql_query(format!("SELECT {pragma} AS n FROM pragma_{pragma}"))
        .get_result::<Num>(conn)
        .map(|r| r.n.max(0) as u64)
}

/// Page size, page count and free pages, as of the connection's view.
pub fn page_figures(conn: &mut SqliteConnection) -> Result<PageFigures, StorageError> {
    Ok(PageFigures {
        page_size: pragma_int(conn, "page_size")?,
        page_count: pragma_int(conn, "page_count")?,
        freelist_count: pragma_int(conn, "freelist_count")?,
    })
}

/// The database's size on disk and in pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DbFigures {
    /// The main file's size.
    pub db_bytes: u64,
    /// The write-ahead log's size.
    pub wal_bytes: u64,
    pub page_size: u64,
    pub page_count: u64,
    pub freelist_count: u64,
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The `-wal` file next to a database.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

impl DbFigures {
    /// Bytes in use: pages minus free pages.
    pub fn used_bytes(&self) -> u64 {
        self.page_count.saturating_sub(self.freelist_count) * self.page_size
    }

    /// Sizes and page counts of the database at `db`, through `conn`.
    pub fn read(conn: &mut SqliteConnection, db: &Path) -> Result<DbFigures, StorageError> {
        let p = page_figures(conn)?;
        Ok(DbFigures {
            db_bytes: file_len(db),
            wal_bytes: file_len(&wal_path(db)),
            page_size: p.page_size,
            page_count: p.page_count,
            freelist_count: p.freelist_count,
        })
    }
}

/// One step of an optimize run.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StepReport {
    pub step: &'static str,
    pub ms: f64,
    /// What the step found or did, when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What an optimize run did, with the figures before and after.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct OptimizeReport {
    pub full: bool,
    pub finished_at: String,
    pub steps: Vec<StepReport>,
    pub before: DbFigures,
    pub after: DbFigures,
    pub took_ms: f64,
}

#[derive(QueryableByName)]
struct Checkpoint {
    #[diesel(sql_type = BigInt)]
    busy: i64,
    #[diesel(sql_type = BigInt)]
    log: i64,
    #[diesel(sql_type = BigInt)]
    checkpointed: i64,
}

/// The tables whose statistics SQLite considers stale: never gathered, or
/// gathered when the table was a tenth or ten times its present size.
/// `PRAGMA optimize` with the "check all tables" bit, in its dry-run mode,
/// lists the `ANALYZE` statements it would run, one per row, in a column
/// named after the pragma.
pub fn stale_tables(conn: &mut SqliteConnection) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        optimize: String,
    }
    let lines: Vec<Line> = diesel::sql_query("PRAGMA optimize(0x10003)").load(conn)?;
    // Each line reads `ANALYZE "main"."readings"`. `head_blocks` has no
    // index, so statistics cannot change a plan of it, and an empty one
    // (every hour sealed) would be named as never analyzed forever.
    Ok(lines
        .iter()
        .filter_map(|l| l.optimize.rsplit("\".\"").next())
        .map(|name| name.trim_end_matches('"').replace("\"\"", "\""))
        .filter(|name| name != "head_blocks")
        .collect())
}

fn timed<T>(
    steps: &mut Vec<StepReport>,
    step: &'static str,
    f: impl FnOnce() -> Result<(T, Option<String>), StorageError>,
) -> Result<T, StorageError> {
    let started = Instant::now();
    let (out, detail) = f()?;
    steps.push(StepReport {
        step,
        ms: started.elapsed().as_secs_f64() * 1000.0,
        detail,
    });
    Ok(out)
}

/// Hands every free page back to the file system, a bounded number per
/// transaction. Returns the pages released.
pub fn release_free_pages(conn: &mut SqliteConnection) -> Result<u64, StorageError> {
    let mut released = 0;
    loop {
        let free = page_figures(conn)?.freelist_count;
        if free == 0 {
            return Ok(released);
        }
        let pages = free.min(u64::from(RELEASE_PAGES_PER_STEP));
        conn.immediate_transaction(|c| {
            c.batch_execute(&format!("PRAGMA incremental_vacuum({pages});"))
        })?;
        let left = page_figures(conn)?.freelist_count;
        if left >= free {
            // auto_vacuum is not incremental on this file (a database made
            // by something else): nothing more can be released this way.
            return Ok(released);
        }
        released += free - left;
    }
}

/// Runs the optimize steps on `conn`, the connection to the database at
/// `db`: statistics where stale, `PRAGMA optimize`, then either a full
/// `VACUUM` and `REINDEX` (`full`) or an incremental vacuum, and a
/// `wal_checkpoint(TRUNCATE)` last so that the file sizes after are real.
pub fn optimize(
    conn: &mut SqliteConnection,
    db: &Path,
    full: bool,
    now_ms: i64,
) -> Result<OptimizeReport, StorageError> {
    let started = Instant::now();
    let before = DbFigures::read(conn, db)?;
    let mut steps = Vec::new();

    timed(&mut steps, "analyze", || {
        let stale = stale_tables(conn)?;
        conn.batch_execute(&format!("PRAGMA analysis_limit = {ANALYSIS_LIMIT};"))?;
        for table in &stale {
            conn.batch_execute(&format!("ANALYZE \"{}\";", table.replace('"', "\"\"")))?;
        }
        conn.batch_execute("PRAGMA analysis_limit = 0;")?;
        let detail = if stale.is_empty() {
            "statistics are current".to_owned()
        } else {
            format!("analyzed {}", stale.join(", "))
        };
        Ok(((), Some(detail)))
    })?;
    timed(&mut steps, "optimize", || {
        conn.batch_execute("PRAGMA optimize;")?;
        Ok(((), None))
    })?;
    if full {
        timed(&mut steps, "vacuum", || {
            conn.batch_execute("VACUUM;")?;
            Ok(((), None))
        })?;
        timed(&mut steps, "reindex", || {
            conn.batch_execute("REINDEX;")?;
            Ok(((), None))
        })?;
    } else {
        timed(&mut steps, "incremental_vacuum", || {
            let pages = release_free_pages(conn)?;
            Ok(((), Some(format!("released {pages} free pages"))))
        })?;
    }
    timed(&mut steps, "wal_checkpoint", || {
        let c: Checkpoint =
            diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").get_result(conn)?;
        let detail = if c.busy != 0 {
            format!(
                "readers kept the WAL busy: {} of {} frames checkpointed",
                c.checkpointed, c.log
            )
        } else {
            "WAL checkpointed and truncated".to_owned()
        };
        Ok(((), Some(detail)))
    })?;
    let after = DbFigures::read(conn, db)?;
    Ok(OptimizeReport {
        full,
        finished_at: rfc3339(now_ms),
        steps,
        before,
        after,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Takes the database for this connection alone (`locking_mode =
/// EXCLUSIVE`), failing at once with [`StorageError::InUse`] if any other
/// connection, in this process or another, has it open. The lock lasts as
/// long as the connection.
pub fn lock_exclusively(conn: &mut SqliteConnection, db: &Path) -> Result<(), StorageError> {
    conn.batch_execute("PRAGMA busy_timeout = 0; PRAGMA locking_mode = EXCLUSIVE;")?;
    match conn.batch_execute("BEGIN EXCLUSIVE; COMMIT;") {
        Ok(()) => Ok(()),
        Err(diesel::result::Error::DatabaseError(kind, info))
            if matches!(kind, DatabaseErrorKind::Unknown)
                && (info.message().contains("locked") || info.message().contains("busy")) =>
        {
            Err(StorageError::InUse(format!(
                "{} is in use by another process (a running `vigil serve`?)",
                db.display()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Optimize on a connection of its own, for `vigil optimize`: alongside a
/// running server (each step a short transaction; the server's writer waits
/// at most its `busy_timeout` for one), except `full`, which needs the
/// database alone and fails with [`StorageError::InUse`] otherwise.
pub fn optimize_path(
    db: &Path,
    busy_timeout_ms: u64,
    full: bool,
    now_ms: i64,
) -> Result<OptimizeReport, StorageError> {
    if !db.is_file() {
        return Err(StorageError::Io {
            what: format!("no database at {}", db.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let mut conn = super::establish(db)?;
    if full {
        lock_exclusively(&mut conn, db)?;
    }
    conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_timeout_ms};"))?;
    optimize(&mut conn, db, full, now_ms)
}

/// A backup written.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BackupReport {
    pub path: String,
    pub bytes: u64,
    pub finished_at: String,
    pub took_ms: f64,
    /// Older backups deleted to keep the configured number.
    pub removed: Vec<String>,
    /// Backups now in the directory.
    pub kept: usize,
}

const BACKUP_TIME_FORMAT: &str = "%Y%m%dT%H%M%S%3fZ";

/// The file name of a backup of a database whose file stem is `stem`,
/// taken at `ms`: sortable by time.
pub fn backup_name(stem: &str, ms: i64) -> String {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).unwrap_or_default();
    format!("{stem}-{}.db", t.format(BACKUP_TIME_FORMAT))
}

/// Whether `name` is a backup [`backup_name`] made for `stem`. Only those
/// are ever deleted.
pub fn is_backup_name(stem: &str, name: &str) -> bool {
    name.strip_prefix(stem)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".db"))
        .is_some_and(|t| chrono::NaiveDateTime::parse_from_str(t, BACKUP_TIME_FORMAT).is_ok())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StorageError {
    let what = what.into();
    move |source| StorageError::Io { what, source }
}

/// Writes a consistent copy of the database at `db` into `dir` with
/// `VACUUM INTO` (from a read snapshot: writers carry on), syncs it, gives
/// it its final name only once complete, then deletes all but the newest
/// `keep` backups of this database in `dir`.
pub fn backup(
    db: &Path,
    dir: &Path,
    create_dir: bool,
    keep: u32,
    now_ms: i64,
    busy_timeout_ms: u64,
) -> Result<BackupReport, StorageError> {
    let started = Instant::now();
    if !db.is_file() {
        return Err(StorageError::Io {
            what: format!("no database at {}", db.display()),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    if !dir.is_dir() {
        if create_dir {
            std::fs::create_dir_all(dir)
                .map_err(io(format!("creating backup directory {}", dir.display())))?;
        } else {
            return Err(StorageError::MissingDirectory(dir.to_owned()));
        }
    }
    let stem = db
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("vigil")
        .to_owned();
    let name = backup_name(&stem, now_ms);
    let final_path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&partial);

    let mut conn = super::establish(db)?;
    conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_timeout_ms};"))?;
    let target = super::path_str(&partial)?;
    let written = diesel::sql_query("VACUUM INTO ?")
        .bind::<Text, _>(target)
        .execute(&mut conn);
    drop(conn);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e.into());
    }
    let synced = std::fs::File::open(&partial).and_then(|f| f.sync_all());
    if let Err(e) = synced {
        let _ = std::fs::remove_file(&partial);
        return Err(io(format!("syncing {}", partial.display()))(e));
    }
    std::fs::rename(&partial, &final_path)
        .map_err(io(format!("renaming {} into place", partial.display())))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let bytes = file_len(&final_path);

    let mut backups: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_backup_name(&stem, n))
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep.max(1) as usize);
    let mut removed = Vec::new();
    for old in backups.drain(..excess) {
        let p = dir.join(&old);
        match std::fs::remove_file(&p) {
            Ok(()) => removed.push(p.display().to_string()),
            Err(e) => log::warn!("cannot delete old backup {}: {e}", p.display()),
        }
    }
    Ok(BackupReport {
        path: final_path.display().to_string(),
        bytes,
        finished_at: rfc3339(now_ms),
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        removed,
        kept: backups.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::catalog::SeriesCatalog;
    use crate::storage::config::StorageConfig;
    use crate::storage::testing::{TestDb, writer_db};
    use crate::storage::writer::commit_import;
    use crate::vocab::reading::{Reading, SeriesKey};
    use std::sync::Arc;

    /// A database of `rows` readings stored as rows (imports write rows,
    /// and so did the releases before head blocks), which these tests
    /// delete from and count directly.
    fn filled(rows: i64) -> (tempfile::TempDir, StorageConfig, SqliteConnection) {
        let TestDb {
            dir,
            cfg,
            mut conn,
            catalog,
        } = writer_db();
        let k = Arc::new(SeriesKey {
            sensor: "s".into(),
            metric: "v".into(),
            unit: "".into(),
        });
        let batch: Vec<_> = (0..rows)
            .map(|i| Reading {
                series: k.clone(),
                ts_ms: 1_000_000 + i * 1000,
                value: i as f64 * 0.5,
            })
            .collect();
        for chunk in batch.chunks(10_000) {
            commit_import(&mut conn, &catalog, chunk).unwrap();
        }
        (dir, cfg, conn)
    }

    fn count(conn: &mut SqliteConnection, sql: &str) -> i64 {
        diesel::sql_query(sql).get_result::<Num>(conn).unwrap().n
    }

    #[test]
    fn optimize_releases_the_garbage_deletes_leave_and_reports_real_figures() {
        let (_d, cfg, mut conn) = filled(100_000);
        conn.batch_execute("DELETE FROM readings WHERE ts < 80000000;")
            .unwrap();
        let report = optimize(&mut conn, &cfg.path, false, 0).unwrap();
        let names: Vec<_> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "analyze",
                "optimize",
                "incremental_vacuum",
                "wal_checkpoint"
            ]
        );
        let (b, a) = (report.before, report.after);
        assert!(b.freelist_count > 100, "{b:?}");
        assert_eq!(a.freelist_count, 0, "{a:?}");
        assert!(a.page_count < b.page_count, "{b:?} -> {a:?}");
        assert_eq!(a.wal_bytes, 0, "the WAL was truncated");
        assert_eq!(a.db_bytes, a.page_count * a.page_size);
        assert!(b.wal_bytes > 0);
        // Never-analyzed tables with rows were analyzed, and their
        // statistics now exist.
        let detail = report.steps[0].detail.clone().unwrap();
        assert!(detail.contains("readings"), "{detail}");
        assert!(
            count(
                &mut conn,
                "SELECT count(*) AS n FROM sqlite_stat1 WHERE tbl = 'readings'"
            ) > 0
        );
        // Run again: nothing stale, nothing to release.
        let again = optimize(&mut conn, &cfg.path, false, 0).unwrap();
        assert_eq!(
            again.steps[0].detail.as_deref(),
            Some("statistics are current")
        );
        assert_eq!(
            again.steps[2].detail.as_deref(),
            Some("released 0 free pages")
        );
    }

    #[test]
    fn a_full_optimize_vacuums_and_reindexes() {
        let (_d, cfg, mut conn) = filled(50_000);
        conn.batch_execute("DELETE FROM readings WHERE ts % 3000 = 0;")
            .unwrap();
        let report = optimize(&mut conn, &cfg.path, true, 0).unwrap();
        let names: Vec<_> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            ["analyze", "optimize", "vacuum", "reindex", "wal_checkpoint"]
        );
        assert_eq!(report.after.freelist_count, 0);
        assert!(report.after.page_count < report.before.page_count);
        assert_eq!(
            count(&mut conn, "SELECT count(*) AS n FROM readings"),
            50_000 - 50_000 / 3
        );
    }

    #[test]
    fn exclusive_lock_is_refused_while_another_connection_is_open() {
        let (_d, cfg, writer) = filled(10);
        // (Plain connections: an r2d2 pool closes its connections in the
        // background after it is dropped.)
        let mut reader = super::super::establish(&cfg.path).unwrap();
        assert_eq!(count(&mut reader, "SELECT count(*) AS n FROM readings"), 10);
        let mut conn = super::super::establish(&cfg.path).unwrap();
        let e = lock_exclusively(&mut conn, &cfg.path).unwrap_err();
        assert!(matches!(e, StorageError::InUse(_)), "{e}");
        assert!(e.to_string().contains("in use"), "{e}");
        drop(conn);
        drop(reader);
        // An idle connection is enough to refuse.
        let mut conn = super::super::establish(&cfg.path).unwrap();
        let e = lock_exclusively(&mut conn, &cfg.path).unwrap_err();
        assert!(matches!(e, StorageError::InUse(_)), "the writer alone: {e}");
        drop(conn);
        drop(writer);
        let mut conn = super::super::establish(&cfg.path).unwrap();
        lock_exclusively(&mut conn, &cfg.path).unwrap();
        // Now nobody else gets in.
        let mut other = super::super::establish(&cfg.path).unwrap();
        other.batch_execute("PRAGMA busy_timeout = 0;").unwrap();
        assert!(
            diesel::sql_query("SELECT count(*) AS n FROM readings")
                .get_result::<Num>(&mut other)
                .is_err()
        );
    }

    #[test]
    fn backup_names_sort_by_time_and_nothing_else_matches() {
        let a = backup_name("vigil", 1_795_441_045_211);
        assert_eq!(a, "vigil-20261123T133725211Z.db");
        assert!(is_backup_name("vigil", &a));
        assert!(!is_backup_name("garden", &a));
        assert!(!is_backup_name("vigil", "vigil-notes.db"));
        assert!(!is_backup_name("vigil", "vigil.db"));
        assert!(!is_backup_name("vigil", &format!(".{a}.partial")));
        assert!(backup_name("vigil", 1_795_441_045_212) > a);
    }

    #[test]
    fn backup_writes_a_consistent_copy_and_keeps_the_newest_n() {
        let (d, cfg, mut writer) = filled(20_000);
        let dir = d.path().join("bk");
        // An explicit directory must exist.
        let e = backup(&cfg.path, &dir, false, 2, 0, 1000).unwrap_err();
        assert!(matches!(e, StorageError::MissingDirectory(_)), "{e}");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
        let mut reports = Vec::new();
        for i in 0..3 {
            // Uncheckpointed commits must be in the copy too.
            let more: Vec<_> = (0..10)
                .map(|j| Reading {
                    series: Arc::new(SeriesKey {
                        sensor: "s".into(),
                        metric: "v".into(),
                        unit: "".into(),
                    }),
                    ts_ms: 1 + i * 100 + j,
                    value: 1.0,
                })
                .collect();
            let catalog = SeriesCatalog::load(&mut writer).unwrap();
            commit_import(&mut writer, &catalog, &more).unwrap();
            reports.push(backup(&cfg.path, &dir, false, 2, 1_000 * i, 1000).unwrap());
        }
        let last = reports.last().unwrap();
        assert_eq!(last.kept, 2);
        assert_eq!(last.removed, [reports[0].path.clone()]);
        assert!(!Path::new(&reports[0].path).exists());
        assert!(dir.join("notes.txt").exists());
        assert_eq!(last.bytes, file_len(Path::new(&last.path)));

        let mut copy = SqliteConnection::establish(&last.path).unwrap();
        #[derive(QueryableByName)]
        struct Check {
            #[diesel(sql_type = Text)]
            integrity_check: String,
        }
        let check: Check = diesel::sql_query("PRAGMA integrity_check")
            .get_result(&mut copy)
            .unwrap();
        assert_eq!(check.integrity_check, "ok");
        assert_eq!(
            count(&mut copy, "SELECT count(*) AS n FROM readings"),
            20_030
        );
        assert_eq!(
            count(
                &mut copy,
                "SELECT (SELECT coalesce(sum(count), 0) FROM rollup_day) \
                 + (SELECT coalesce(sum(count), 0) FROM rollup_open WHERE tier = 3) AS n"
            ),
            20_030
        );
    }

    #[test]
    fn backup_dir_defaults_next_to_the_database() {
        let c = MaintenanceConfig::default();
        assert_eq!(
            c.backup_dir_for(Path::new("/var/lib/vigil/vigil.db")),
            (PathBuf::from("/var/lib/vigil/backups"), true)
        );
        assert_eq!(
            c.backup_dir_for(Path::new("vigil.db")),
            (PathBuf::from("backups"), true)
        );
        let c = MaintenanceConfig {
            backup_dir: "/mnt/usb".into(),
            ..c
        };
        assert_eq!(
            c.backup_dir_for(Path::new("vigil.db")),
            (PathBuf::from("/mnt/usb"), false)
        );
    }
}
