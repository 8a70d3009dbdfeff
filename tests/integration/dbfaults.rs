//! The database failing under a running appliance: locked by another
//! process, made read-only (immutable files, as an SD card that went
//! read-only looks to an open connection), and full (a small tmpfs). Each
//! time: no panic, the breaker opens, `/health` is degraded, the alert and
//! the live event come, reads keep being served, and after recovery the
//! queue drains so that the stored count is exactly the produced count
//! minus what the overflow policy dropped and counted.
//!
//! The read-only and full cases change file attributes and mount a tmpfs,
//! which needs root; as another user they are skipped with a notice.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::Value;
use vigil::BreakerConfig;

use crate::live::Client;
use crate::util::{TestServer, config, open_db};

/// A fast sensor, so that a fault's backlog grows quickly.
pub(crate) const FAST: &str = r#"
[[sensors]]
name = "fast"
kind = "simulated"
interval_ms = 10
[sensors.options]
waveform = "random_walk"
"#;

/// A database breaker that reacts within a second or two.
pub(crate) fn quick_breaker() -> BreakerConfig {
    BreakerConfig {
        window: 4,
        min_calls: 2,
        open_wait_ms: 200,
        open_wait_max_ms: 1000,
        ..BreakerConfig::database()
    }
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A directory on the build's own disk (not a tmpfs /tmp, whose files
/// ignore the immutable flag for open descriptors).
pub(crate) fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under target/tmp")
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets or clears the immutable flag on files; clears it when dropped, so
/// a failed test leaves nothing undeletable behind.
pub(crate) struct Immutable(Vec<PathBuf>);

impl Immutable {
    pub(crate) fn set(files: Vec<PathBuf>) -> Immutable {
        for f in &files {
            run("chattr", &["+i", f.to_str().unwrap()]);
        }
        Immutable(files)
    }

    pub(crate) fn clear(&mut self) {
        for f in self.0.drain(..) {
            run("chattr", &["-i", f.to_str().unwrap()]);
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

/// Checks that writes through an already open descriptor fail on an
/// immutable file in `dir`, as they must for the read-only simulation.
fn immutability_is_enforced(dir: &Path) -> bool {
    use std::io::Write;
    let probe = dir.join("probe");
    let mut f = std::fs::File::create(&probe).unwrap();
    let mut flag = Immutable::set(vec![probe.clone()]);
    let refused = f.write_all(b"x").and_then(|_| f.sync_all()).is_err();
    flag.clear();
    drop(f);
    let _ = std::fs::remove_file(&probe);
    refused
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = disk_dir();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `file`'s directory until it refuses more.
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).unwrap();
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

async fn breaker(s: &TestServer, name: &str) -> Value {
    let g = s.get_ok("/api/guards").await;
    g["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn firing(s: &TestServer) -> Vec<String> {
    let a = s.get_ok("/api/alerts?state=firing").await;
    a["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits for the fault to show everywhere an operator looks; the writer's
/// last error.
async fn expect_degraded(s: &TestServer) -> String {
    s.wait_for(
        "the database breaker to open",
        Duration::from_secs(30),
        async |s| breaker(s, "database").await["state"] == "open",
    )
    .await;
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "degraded");
    // Open, or half-open while a trial commit is under way.
    assert!(
        health["reasons"]
            .to_string()
            .contains("circuit breaker database is "),
        "{health}"
    );
    s.wait_for("the alerts", Duration::from_secs(10), async |s| {
        let f = firing(s).await;
        f.iter().any(|k| k == "breaker_open:database")
            && f.iter().any(|k| k == "database_write_failing")
    })
    .await;
    // Reads are still served while writes fail.
    let r = s.get_ok("/api/readings?sensor=fast&limit=5").await;
    assert!(r["count"].as_u64() >= Some(1), "{r}");
    // Nothing panicked or restarted.
    let sup = s.get_ok("/api/supervisor").await;
    assert!(
        !sup["events"].to_string().contains("panicked"),
        "{}",
        sup["events"]
    );
    health["writer"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits for the breaker to close and the queue to drain on its own.
async fn expect_recovered(s: &TestServer) {
    s.wait_for(
        "the breaker to close and the queue to drain",
        Duration::from_secs(60),
        async |s| {
            let (status, h) = s.get("/health").await;
            status == 200
                && breaker(s, "database").await["state"] == "closed"
                && h["writer"]["queue"]["len"].as_u64() < Some(200)
        },
    )
    .await;
    s.wait_for(
        "the alerts to resolve",
        Duration::from_secs(10),
        async |s| {
            let f = firing(s).await;
            !f.iter()
                .any(|k| k == "breaker_open:database" || k == "database_write_failing")
        },
    )
    .await;
}

/// Stops the appliance; stored rows, produced values and dropped values.
async fn finish(s: TestServer) -> (i64, u64, u64) {
    let (report, _dir, db) = s.stop().await;
    let produced = report.produced.iter().map(|(_, n)| n).sum();
    let mut conn = open_db(&db);
    assert_eq!(conn.integrity_check(), "ok");
    let stored = conn.raw_count();
    (stored, produced, report.queue.dropped)
}

pub(crate) async fn committed(s: &TestServer) -> u64 {
    s.get("/health").await.1["writer"]["committed_rows"]
        .as_u64()
        .unwrap_or(0)
}

#[actix_rt::test]
async fn a_database_locked_by_another_process_is_survived_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, FAST);
    cfg.storage.busy_timeout_ms = 100;
    cfg.storage.flush_interval_ms = 50;
    cfg.guard.database = quick_breaker();
    let db = cfg.storage.path.clone();
    let s = TestServer::start_with(dir, cfg).await;
    let mut live = Client::connect(&s).await;
    s.wait_for("commits", Duration::from_secs(10), async |s| {
        committed(s).await > 0
    })
    .await;

    // Another process takes the write lock and keeps it.
    let mut other = SqliteConnection::establish(db.to_str().unwrap()).expect("a second connection");
    // Waiting out a commit of the writer's that may be under way.
    other
        .batch_execute("PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE")
        .unwrap();
    let error = expect_degraded(&s).await;
    assert!(error.contains("locked"), "{error}");
    // The live feed was told.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .expect("a breaker event on the live feed");
        let m = live.next_of_type("status", left).await;
        if m["event"]["kind"] == "breaker" && m["event"]["to"] == "open" {
            assert_eq!(m["event"]["breaker"], "database");
            break;
        }
    }

    other.batch_execute("COMMIT").unwrap();
    drop(other);
    expect_recovered(&s).await;
    let (stored, produced, dropped) = finish(s).await;
    assert_eq!(dropped, 0);
    assert_eq!(stored as u64, produced, "every produced reading is stored");
}

#[actix_rt::test]
async fn a_database_made_read_only_then_writable_again_loses_nothing_below_the_bound() {
    if !is_root() {
        eprintln!("skipped: making files immutable needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = disk_dir();
    assert!(
        immutability_is_enforced(data.path()),
        "{} does not refuse writes to immutable files; put target/ on ext4/xfs/btrfs",
        data.path().display()
    );
    let mut cfg = config(&dir, FAST);
    cfg.storage.path = data.path().join("vigil.db");
    cfg.storage.flush_interval_ms = 50;
    cfg.guard.database = quick_breaker();
    let db = cfg.storage.path.clone();
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("commits", Duration::from_secs(10), async |s| {
        committed(s).await > 0
    })
    .await;

    // The database and its WAL refuse every write from now on (the shared
    // memory index stays writable, as it is mapped).
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let mut ro = Immutable::set(vec![db.clone(), wal]);
    let error = expect_degraded(&s).await;
    eprintln!("read-only: {error}");
    assert!(
        error.contains("I/O") || error.contains("readonly"),
        "{error}"
    );
    // The backlog grows in memory meanwhile.
    s.wait_for("a backlog", Duration::from_secs(10), async |s| {
        s.get("/health").await.1["writer"]["queue"]["len"].as_u64() > Some(300)
    })
    .await;

    ro.clear();
    expect_recovered(&s).await;
    let (stored, produced, dropped) = finish(s).await;
    assert_eq!(dropped, 0);
    assert_eq!(stored as u64, produced, "every produced reading is stored");
}

/// Fills the database's filesystem under a running appliance, waits for the
/// fault to show (and, with `overflow`, for the bounded queue to drop), frees
/// the space and waits for the drain. Stored, produced and dropped counts.
async fn full_disk(queue_capacity: usize, overflow: bool) -> (i64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount("8m");
    let mut cfg = config(&dir, FAST);
    cfg.storage.path = disk.path().join("vigil.db");
    cfg.storage.flush_interval_ms = 50;
    cfg.storage.batch_size = 50;
    cfg.storage.queue_capacity = queue_capacity;
    cfg.guard.database = quick_breaker();
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("commits", Duration::from_secs(10), async |s| {
        committed(s).await > 0
    })
    .await;

    let filler = disk.path().join("filler");
    fill(&filler);
    let error = expect_degraded(&s).await;
    assert!(error.contains("full"), "{error}");
    if overflow {
        // Beyond the queue's bound the oldest are dropped, counted and alerted.
        s.wait_for("drops", Duration::from_secs(30), async |s| {
            s.get("/health").await.1["writer"]["queue"]["dropped"].as_u64() > Some(100)
        })
        .await;
        s.wait_for("the drops alert", Duration::from_secs(10), async |s| {
            firing(s).await.iter().any(|k| k == "readings_dropped")
        })
        .await;
    } else {
        s.wait_for("a backlog", Duration::from_secs(10), async |s| {
            s.get("/health").await.1["writer"]["queue"]["len"].as_u64() > Some(300)
        })
        .await;
    }

    std::fs::remove_file(&filler).unwrap();
    expect_recovered(&s).await;
    let counts = finish(s).await;
    drop(disk);
    counts
}

#[actix_rt::test]
async fn a_full_disk_then_freed_loses_nothing_below_the_bound() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let (stored, produced, dropped) = full_disk(100_000, false).await;
    assert_eq!(dropped, 0);
    assert_eq!(stored as u64, produced, "every produced reading is stored");
}

#[actix_rt::test]
async fn a_full_disk_beyond_the_queue_bound_loses_exactly_the_counted_readings() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let (stored, produced, dropped) = full_disk(300, true).await;
    assert!(dropped > 100, "{dropped}");
    assert_eq!(
        stored as u64,
        produced - dropped,
        "exactly the dropped readings are missing"
    );
}
