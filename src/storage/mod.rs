//! Storage: SQLite through diesel, with embedded migrations, one writer
//! connection owned by the [`DbWriter`](writer::DbWriter) actor, and a pool of
//! read-only connections for the API.
//!
//! Order matters when opening: `busy_timeout` first on every connection;
//! `auto_vacuum` before the first table exists; `journal_mode=WAL` once,
//! before the pool opens its connections (r2d2 opens them all at once and
//! the switch would race); migrations last.

pub mod catalog;
pub mod chunk;
pub mod config;
pub mod export;
pub mod head;
pub mod inspect;
pub mod jobs;
pub mod maintenance;
pub mod points;
pub mod queue;
pub mod read;
pub mod recent;
pub mod retention;
pub mod rollup;
pub mod schema;
pub mod schemacheck;
pub mod sealer;
pub mod series;
#[cfg(test)]
pub(crate) mod testing;
pub mod walindex;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sql_types::Text;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::storage::config::StorageConfig;

/// The schema migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Read connections for the API.
pub type ReadPool = Pool<ConnectionManager<SqliteConnection>>;

/// What went wrong in storage, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database directory {0} does not exist")]
    MissingDirectory(PathBuf),
    #[error("database path {0} is not valid UTF-8")]
    BadPath(PathBuf),
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: diesel::ConnectionError,
    },
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("connection pool: {0}")]
    Pool(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the database writer is not running")]
    WriterUnavailable,
    /// Another process holds the database and the operation needs it alone.
    #[error("{0}")]
    InUse(String),
    #[error("database writes are suspended by the circuit breaker for another {retry_in_ms} ms")]
    Suspended { retry_in_ms: u64 },
    /// The database is not one this binary may use (see `schemacheck`).
    #[error(transparent)]
    Schema(Box<schemacheck::SchemaError>),
    /// A failure that SQLite reports without naming the file.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<StorageError>,
    },
}

impl StorageError {
    /// Whether the same operation may succeed later (locks, a full disk being
    /// cleared, a pool momentarily exhausted), as opposed to a broken path or
    /// schema.
    /// Names `path` in errors whose text would not (SQLite's "file is not a
    /// database", a failed migration).
    pub fn in_file(self, path: &Path) -> StorageError {
        match self {
            StorageError::Query(_) | StorageError::Migration(_) => StorageError::InFile {
                path: path.to_owned(),
                source: Box::new(self),
            },
            other => other,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Query(diesel::result::Error::DatabaseError(_, info)) => {
                let m = info.message().to_ascii_lowercase();
                m.contains("locked")
                    || m.contains("busy")
                    || m.contains("full")
                    || m.contains("readonly")
                    || m.contains("read-only")
                    || m.contains("disk i/o")
            }
            StorageError::InFile { source, .. } => source.is_transient(),
            StorageError::Pool(_)
            | StorageError::WriterUnavailable
            | StorageError::InUse(_)
            | StorageError::Suspended { .. } => true,
            _ => false,
        }
    }
}

fn path_str(path: &Path) -> Result<&str, StorageError> {
    path.to_str()
        .ok_or_else(|| StorageError::BadPath(path.to_owned()))
}

pub(crate) fn establish(path: &Path) -> Result<SqliteConnection, StorageError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(StorageError::MissingDirectory(dir.to_owned()));
    }
    let target = walindex::open_target(path_str(path)?, walindex::mode());
    SqliteConnection::establish(&target).map_err(|source| StorageError::Open {
        path: path.to_owned(),
        source,
    })
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

/// Creates or upgrades the database: page-level settings, WAL, migrations.
/// Returns the names of the migrations it applied. A database this binary
/// does not understand (a newer schema, tampered tables) is refused before
/// anything is written to it.
pub fn prepare(cfg: &StorageConfig) -> Result<Vec<String>, StorageError> {
    prepare_checked(cfg).map_err(|e| e.in_file(&cfg.path))
}

fn prepare_checked(cfg: &StorageConfig) -> Result<Vec<String>, StorageError> {
    walindex::set_mode(cfg.wal_index);
    let mut conn = establish(&cfg.path)?;
    conn.batch_execute(&format!("PRAGMA busy_timeout = {};", cfg.busy_timeout_ms))?;
    schemacheck::check(&mut conn, &cfg.path)?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA auto_vacuum = INCREMENTAL;",
        cfg.busy_timeout_ms
    ))?;
    let mode: JournalMode = diesel::sql_query("PRAGMA journal_mode = WAL").get_result(&mut conn)?;
    if !mode.journal_mode.eq_ignore_ascii_case("wal") {
        log::warn!(
            "{}: journal_mode is {} (WAL unsupported on this filesystem?); readers may block the writer",
            cfg.path.display(),
            mode.journal_mode
        );
    }
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| StorageError::Migration(e.to_string()))?;
    Ok(applied.iter().map(|m| m.to_string()).collect())
}

/// The writer's connection, with the durability the config asks for.
pub fn open_writer(cfg: &StorageConfig) -> Result<SqliteConnection, StorageError> {
    let mut conn = establish(&cfg.path)?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {};
         PRAGMA synchronous = {};
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{};",
        cfg.busy_timeout_ms,
        cfg.synchronous.pragma_value(),
        cfg.cache_kib,
    ))?;
    Ok(conn)
}

/// Applies the read pragmas to every pooled connection. `query_only` makes
/// the single-writer rule a property of the connections, not a convention.
#[derive(Debug, Clone, Copy)]
struct ReadPragmas {
    busy_timeout_ms: u64,
    cache_kib: u32,
    mmap_bytes: u64,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReadPragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {};
             PRAGMA query_only = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -{};
             PRAGMA mmap_size = {};",
            self.busy_timeout_ms, self.cache_kib, self.mmap_bytes
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The pool of read-only connections. Call after [`prepare`].
pub fn read_pool(cfg: &StorageConfig) -> Result<ReadPool, StorageError> {
    let manager = ConnectionManager::<SqliteConnection>::new(walindex::open_target(
        path_str(&cfg.path)?,
        walindex::mode(),
    ));
    Pool::builder()
        .max_size(cfg.read_pool_size)
        .connection_timeout(Duration::from_millis(cfg.busy_timeout_ms.max(1000)))
        .test_on_check_out(false)
        .connection_customizer(Box::new(ReadPragmas {
            busy_timeout_ms: cfg.busy_timeout_ms,
            cache_kib: cfg.cache_kib,
            mmap_bytes: u64::from(cfg.mmap_mib) * 1024 * 1024,
        }))
        .build(manager)
        .map_err(|e| StorageError::Pool(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> StorageConfig {
        StorageConfig {
            path: dir.join("t.db"),
            ..StorageConfig::default()
        }
    }

    #[test]
    fn prepare_creates_a_wal_database_with_incremental_vacuum() {
        use diesel::migration::MigrationSource;
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        let applied = prepare(&c).unwrap();
        assert_eq!(
            applied.len(),
            MigrationSource::<diesel::sqlite::Sqlite>::migrations(&MIGRATIONS)
                .unwrap()
                .len()
        );
        assert!(prepare(&c).unwrap().is_empty(), "migrations run once");

        #[derive(QueryableByName)]
        struct Num {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            auto_vacuum: i64,
        }
        let mut conn = open_writer(&c).unwrap();
        let av: Num = diesel::sql_query("PRAGMA auto_vacuum")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(av.auto_vacuum, 2, "INCREMENTAL");
        let jm: JournalMode = diesel::sql_query("PRAGMA journal_mode")
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(jm.journal_mode, "wal");
    }

    #[test]
    fn pool_connections_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path());
        prepare(&c).unwrap();
        let pool = read_pool(&c).unwrap();
        let mut conn = pool.get().unwrap();
        let e = conn
            .batch_execute("INSERT INTO series (sensor, metric) VALUES ('a', 'b')")
            .unwrap_err();
        assert!(e.to_string().contains("readonly"), "{e}");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let c = StorageConfig {
            path: PathBuf::from("/nonexistent-dir/x.db"),
            ..StorageConfig::default()
        };
        let e = prepare(&c).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir"), "{e}");
    }
}
