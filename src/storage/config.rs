//! `[storage]`: the database file, how hard it syncs, and the single
//! writer's batching and buffering.

use std::path::PathBuf;

use serde::Deserialize;

use crate::vocab::check::{ConfigError, positive};

/// How hard SQLite syncs to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// Syncs at checkpoints only: a power cut may lose the last commits, never
    /// consistency. Process crashes lose nothing committed.
    Normal,
    /// Syncs the WAL on every commit: a power cut loses nothing committed.
    Full,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// What the ingest queue does when it is full.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Make room by dropping the oldest queued readings (fresh data wins).
    DropOldest,
    /// Refuse the incoming readings (history wins).
    DropNewest,
}

/// `[storage]`: the SQLite database and its single writer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Database file; relative paths are resolved from the working directory.
    pub path: PathBuf,
    /// `normal` or `full`.
    pub synchronous: Synchronous,
    /// The writer commits when this many readings are waiting.
    pub batch_size: usize,
    /// ... or when the oldest waiting reading is this old.
    pub flush_interval_ms: u64,
    /// Readings held in memory waiting for (or, on database faults, retrying) a commit.
    pub queue_capacity: usize,
    /// `drop_oldest` or `drop_newest`.
    pub overflow: OverflowPolicy,
    /// How long a connection waits for a lock before giving up.
    pub busy_timeout_ms: u64,
    /// Read-only connections for the API.
    pub read_pool_size: u32,
    /// Page cache per connection, in KiB.
    pub cache_kib: u32,
    /// Memory-mapped I/O per connection, in MiB (0 disables).
    pub mmap_mib: u32,
    /// Where the WAL index lives: `heap` (no `-shm` file; other processes
    /// are kept out while vigil runs) or `file` (`-shm`, shared with them).
    pub wal_index: super::walindex::WalIndex,
    /// Minutes after an hour ends before its readings are sealed into one
    /// compressed chunk per series (`storage::chunk`).
    pub seal_delay_mins: u32,
    /// Seconds between sealing passes; 0 keeps every reading as a row.
    pub seal_interval_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("vigil.db"),
            synchronous: Synchronous::Normal,
            batch_size: 1000,
            flush_interval_ms: 60_000,
            queue_capacity: 100_000,
            overflow: OverflowPolicy::DropOldest,
            busy_timeout_ms: 5000,
            read_pool_size: 4,
            cache_kib: 8192,
            mmap_mib: 64,
            wal_index: super::walindex::WalIndex::Heap,
            seal_delay_mins: 10,
            seal_interval_secs: 60,
        }
    }
}

impl StorageConfig {
    /// Checks every value that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let st = self;
        if st.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.path", "must not be empty"));
        }
        positive("storage.batch_size", st.batch_size as u64)?;
        positive("storage.flush_interval_ms", st.flush_interval_ms)?;
        positive("storage.queue_capacity", st.queue_capacity as u64)?;
        if st.queue_capacity < st.batch_size {
            return Err(ConfigError::invalid(
                "storage.queue_capacity",
                format!(
                    "{} is smaller than storage.batch_size ({}); a batch could never fill",
                    st.queue_capacity, st.batch_size
                ),
            ));
        }
        positive("storage.read_pool_size", u64::from(st.read_pool_size))?;
        // Each is an open SQLite connection with its own page cache, opened
        // at start: a handful serves a Pi; thousands exhaust its memory.
        if st.read_pool_size > 64 {
            return Err(ConfigError::invalid(
                "storage.read_pool_size",
                "must be at most 64 (each is an open connection with its own cache)",
            ));
        }
        if st.seal_delay_mins > 7 * 24 * 60 {
            return Err(ConfigError::invalid(
                "storage.seal_delay_mins",
                format!("{} is more than a week", st.seal_delay_mins),
            ));
        }
        Ok(())
    }
}
