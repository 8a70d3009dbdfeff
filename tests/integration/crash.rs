//! Crash consistency: `vigil serve` under load, killed with SIGKILL at a
//! random moment, again and again on the same database: every other cycle
//! at any moment of start-up (migrations, opening, binding), the others at
//! any moment while it serves. After each kill the database must open, pass
//! `PRAGMA integrity_check`, and hold every row the writer had reported
//! committed over HTTP before the kill.
//!
//! `VIGIL_CRASH_CYCLES` sets the number of cycles (4 by default; the soak
//! script `scripts/crash-soak` runs hundreds), `VIGIL_CRASH_SEED` replays a
//! sequence of kill moments.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::util::open_db;

/// Several fast sensors: a few thousand readings a second, many commits.
const CONFIG: &str = r#"
[server]
bind = "127.0.0.1:0"
[log]
filter = "warn,vigil::app=info"
[storage]
flush_interval_ms = 20
batch_size = 500
[guard.http]
enabled = false
[[sensors]]
name = "a"
kind = "simulated"
interval_ms = 1
[sensors.options]
waveform = "random_walk"
[[sensors]]
name = "b"
kind = "simulated"
interval_ms = 2
[[sensors]]
name = "c"
kind = "simulated"
interval_ms = 3
[[sensors]]
name = "system"
kind = "system"
interval_ms = 100
"#;

/// Kills during start-up come within this long of spawning ...
const STARTUP_KILL_MS: u64 = 600;
/// ... kills while serving within this long of it saying so.
const SERVING_KILL_MS: u64 = 1500;

/// `committed_rows` from `/health`, if the appliance answers.
fn committed_rows(port: u16) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["writer"]["committed_rows"].as_u64()
}

/// Some read load besides: a page of readings.
fn read_page(port: u16) {
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(
            s,
            "GET /api/readings?sensor=a&limit=100 HTTP/1.0\r\nHost: localhost\r\n\r\n"
        );
        let _ = s.read_to_end(&mut Vec::new());
    }
}

#[test]
fn kill_9_at_random_moments_keeps_the_database_whole_with_every_reported_commit() {
    let cycles: usize = std::env::var("VIGIL_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("VIGIL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test: {cycles} cycles, VIGIL_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let db = dir.path().join("crash.db");
    let mut must_hold = 0i64;
    let mut killed_serving = 0;

    for cycle in 1..=cycles {
        let during_startup = cycle % 2 == 1;
        let kill_after = Duration::from_millis(if during_startup {
            rng.u64(0..=STARTUP_KILL_MS)
        } else {
            rng.u64(0..=SERVING_KILL_MS)
        });
        let crate::util::Served {
            mut child,
            port: rx,
            log,
        } = crate::util::spawn_serve(&config, &db);
        let started = Instant::now();
        // Watch the commits until the moment comes.
        let mut port: Option<u16> = None;
        let mut last_seen = 0u64;
        if !during_startup {
            port = rx.recv_timeout(Duration::from_secs(30)).ok().flatten();
            assert!(
                port.is_some(),
                "cycle {cycle}: vigil never said it was serving"
            );
        }
        let from = Instant::now();
        while from.elapsed() < kill_after {
            if port.is_none() {
                port = rx.try_recv().ok().flatten();
            }
            if let Some(p) = port {
                if let Some(n) = committed_rows(p) {
                    last_seen = last_seen.max(n);
                }
                read_page(p);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed, not exited");
        let lines = log.join().unwrap();
        if port.is_some() {
            killed_serving += 1;
        }
        if let Some(panic) = lines.iter().find(|l| l.contains("panicked")) {
            panic!("cycle {cycle}: vigil panicked: {panic}");
        }

        // Every row reported committed is there, and the file is whole.
        let found = if db.exists() {
            let mut conn = open_db(&db);
            let check = conn.integrity_check();
            assert_eq!(check, "ok", "cycle {cycle}: integrity_check");
            // Before the first migration completes there is no table yet.
            if conn.count("SELECT count(*) AS n FROM sqlite_master WHERE name = 'readings'") == 1 {
                conn.raw_count()
            } else {
                0
            }
        } else {
            0
        };
        eprintln!(
            "cycle {cycle}: SIGKILL {} ms after {}, {} ms after spawning, while {}; {last_seen} rows reported committed, {} rows new in the database",
            kill_after.as_millis(),
            if during_startup {
                "spawning"
            } else {
                "it said it was serving"
            },
            started.elapsed().as_millis(),
            if port.is_some() {
                "serving"
            } else {
                "starting"
            },
            found - must_hold
        );
        assert!(
            found >= must_hold + last_seen as i64,
            "cycle {cycle}: {found} rows, but {must_hold} were there before and {last_seen} more were reported committed (seed {seed})"
        );
        must_hold = found;
    }
    eprintln!(
        "crash test: {cycles} kills ({killed_serving} while serving), {must_hold} rows in the end, all checks passed"
    );
}
