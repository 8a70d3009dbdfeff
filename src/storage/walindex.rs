//! Where SQLite keeps the WAL index (`storage.wal_index`), and the opening
//! of connections that follows from it.
//!
//! SQLite normally keeps the WAL index in `<db>-shm`, a file every
//! connection maps into memory. A write to a mapped page that the
//! filesystem then refuses (the file made immutable, the filesystem gone
//! read-only) is not an error SQLite can report: the kernel kills the
//! process with SIGBUS, losing every queued reading. With `heap` (the
//! default) vigil opens the database through SQLite's `unix-excl` VFS,
//! which keeps the index in the process's own memory, shared by all of
//! vigil's connections, and holds a lock that keeps other processes out
//! while vigil runs; there is no `-shm` file to fail. `vigil optimize` and
//! `vigil backup` then reach a running server through its admin API. With
//! `file` the index lives in `-shm` as usual, other processes may open the
//! database meanwhile, and an unwritable `-shm` is fatal.
//!
//! The choice is process-wide, as it must be: connections of one process
//! that disagree would share one index but not one lock. [`set_mode`] is
//! called once, from the configuration, before the first connection.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;

/// `storage.wal_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WalIndex {
    /// In vigil's memory (`unix-excl`): no `-shm` file; other processes
    /// cannot open the database while vigil has it.
    #[default]
    Heap,
    /// In the `-shm` file: other processes may read (and optimize, back up)
    /// while vigil runs; a `-shm` that becomes unwritable kills vigil.
    File,
}

static FILE_MODE: AtomicBool = AtomicBool::new(false);

/// Sets the mode of every connection this process opens from now on.
pub fn set_mode(mode: WalIndex) {
    FILE_MODE.store(mode == WalIndex::File, Ordering::Release);
}

/// The mode in force.
pub fn mode() -> WalIndex {
    if FILE_MODE.load(Ordering::Acquire) {
        WalIndex::File
    } else {
        WalIndex::Heap
    }
}

/// What to hand `sqlite3_open_v2` (diesel opens with `SQLITE_OPEN_URI`) for
/// `path` in `mode`.
pub fn open_target(path: &str, mode: WalIndex) -> String {
    match mode {
        WalIndex::File => path.to_owned(),
        WalIndex::Heap => format!("file:{}?vfs=unix-excl", uri_path(path)),
    }
}

/// Percent-encodes what a URI path may not hold as such.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether another process holds the database so that this one cannot even
/// read it (a running vigil in `heap` mode): a read with no busy wait
/// answers "locked". A missing file is held by nobody.
pub fn held_elsewhere(path: &Path) -> bool {
    use diesel::connection::SimpleConnection;
    if !path.exists() {
        return false;
    }
    let Ok(mut conn) = super::establish(path) else {
        return false;
    };
    match conn.batch_execute("PRAGMA busy_timeout = 0; SELECT count(*) FROM sqlite_schema;") {
        Ok(()) => false,
        Err(e) => e.to_string().contains("locked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_uris_that_name_the_vfs() {
        assert_eq!(open_target("a/b.db", WalIndex::File), "a/b.db");
        assert_eq!(
            open_target("/data/my db?#%.db", WalIndex::Heap),
            "file:/data/my%20db%3F%23%25.db?vfs=unix-excl"
        );
    }

    #[test]
    fn heap_mode_leaves_no_shm_file_and_shares_the_index_between_connections() {
        use diesel::connection::SimpleConnection;
        use diesel::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let target = open_target(path.to_str().unwrap(), WalIndex::Heap);
        let mut a = SqliteConnection::establish(&target).unwrap();
        a.batch_execute("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let mut b = SqliteConnection::establish(&target).unwrap();
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query("SELECT count(*) AS n FROM t")
            .get_result(&mut b)
            .unwrap();
        assert_eq!(n.n, 1, "the second connection sees the first one's commit");
        assert!(dir.path().join("w.db-wal").exists(), "WAL mode");
        assert!(
            !dir.path().join("w.db-shm").exists(),
            "no shared-memory file"
        );
    }
}
