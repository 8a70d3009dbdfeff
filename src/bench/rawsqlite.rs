//! The reference the ingest benchmark measures the writer against: plain
//! SQLite through its C API, one prepared single-row INSERT re-bound per row
//! inside one transaction per batch; nothing between the rows and the
//! library. Only benchmarks use it.

use std::ffi::{CStr, CString, c_int};
use std::path::Path;
use std::ptr;

use libsqlite3_sys as ffi;

use super::BenchError;

/// An open database connection.
pub struct RawDb {
    db: *mut ffi::sqlite3,
}

/// A prepared statement of a [`RawDb`].
pub struct RawStmt<'a> {
    stmt: *mut ffi::sqlite3_stmt,
    db: &'a RawDb,
}

impl RawDb {
    pub fn open(path: &Path) -> Result<RawDb, BenchError> {
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| BenchError::Setup("path holds a NUL byte".into()))?;
        let mut db = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
        // SAFETY: a valid C string and out-pointer; the handle is closed in
        // Drop even when opening fails (SQLite allocates one regardless).
        let rc = unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut db, flags, ptr::null()) };
        let raw = RawDb { db };
        raw.check(rc)?;
        Ok(raw)
    }

    fn check(&self, rc: c_int) -> Result<(), BenchError> {
        if rc == ffi::SQLITE_OK || rc == ffi::SQLITE_DONE || rc == ffi::SQLITE_ROW {
            return Ok(());
        }
        // SAFETY: errmsg returns a NUL-terminated string owned by SQLite,
        // valid until the next call on this handle; copied at once.
        let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db)) }
            .to_string_lossy()
            .into_owned();
        Err(BenchError::Setup(format!("sqlite error {rc}: {msg}")))
    }

    /// Runs SQL that returns no rows we need.
    pub fn exec(&self, sql: &str) -> Result<(), BenchError> {
        let c = CString::new(sql).map_err(|_| BenchError::Setup("SQL holds a NUL byte".into()))?;
        // SAFETY: a valid handle and C string; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(self.db, c.as_ptr(), None, ptr::null_mut(), ptr::null_mut())
        };
        self.check(rc)
    }

    pub fn prepare(&self, sql: &str) -> Result<RawStmt<'_>, BenchError> {
        let c = CString::new(sql).map_err(|_| BenchError::Setup("SQL holds a NUL byte".into()))?;
        let mut stmt = ptr::null_mut();
        // SAFETY: a valid handle, C string and out-pointer.
        let rc =
            unsafe { ffi::sqlite3_prepare_v2(self.db, c.as_ptr(), -1, &mut stmt, ptr::null_mut()) };
        self.check(rc)?;
        Ok(RawStmt { stmt, db: self })
    }
}

impl Drop for RawDb {
    fn drop(&mut self) {
        // SAFETY: every statement borrows the connection, so all are
        // finalized before it is closed.
        unsafe {
            ffi::sqlite3_close(self.db);
        }
    }
}

impl RawStmt<'_> {
    /// Binds (i64, i64, f64) to parameters 1-3, steps once, resets.
    pub fn insert3(&mut self, a: i64, b: i64, c: f64) -> Result<(), BenchError> {
        // SAFETY: a live prepared statement with three parameters.
        let rc = unsafe {
            ffi::sqlite3_bind_int64(self.stmt, 1, a);
            ffi::sqlite3_bind_int64(self.stmt, 2, b);
            ffi::sqlite3_bind_double(self.stmt, 3, c);
            let rc = ffi::sqlite3_step(self.stmt);
            ffi::sqlite3_reset(self.stmt);
            rc
        };
        self.db.check(rc)
    }
}

impl Drop for RawStmt<'_> {
    fn drop(&mut self) {
        // SAFETY: finalizing a statement this value owns, once.
        unsafe {
            ffi::sqlite3_finalize(self.stmt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = RawDb::open(&dir.path().join("r.db")).unwrap();
        db.exec("CREATE TABLE t (a INTEGER, b INTEGER, c REAL, PRIMARY KEY (a, b)) WITHOUT ROWID")
            .unwrap();
        let mut s = db.prepare("INSERT INTO t VALUES (?, ?, ?)").unwrap();
        s.insert3(1, 2, 3.5).unwrap();
        let e = s.insert3(1, 2, 4.5).unwrap_err();
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        assert!(db.exec("NOT SQL").is_err());
    }
}
