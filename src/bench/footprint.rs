//! `vigil-bench footprint`: the appliance left to run with its default
//! sensors and settings (only the database path and port changed, or the
//! flush window when comparing), measured from outside: resident memory,
//! CPU share of one core, and bytes written to storage per stored reading
//! (`write_bytes` of `/proc/<pid>/io`, what reaches the block layer,
//! divided by the readings committed in the same window).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::appliance::Appliance;
use super::{BenchError, http, median_f64};
use crate::platform::proc::ProcStats;

#[derive(Debug, Clone, Copy)]
pub struct FootprintOptions {
    /// The measured window.
    pub seconds: u64,
    /// Time to settle before measuring (start-up, first commits).
    pub warmup_secs: u64,
    /// The writer's flush window; `None` keeps the default.
    pub flush_interval_ms: Option<u64>,
}

impl Default for FootprintOptions {
    fn default() -> Self {
        FootprintOptions {
            seconds: 600,
            warmup_secs: 15,
            flush_interval_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FootprintFigures {
    pub seconds: f64,
    pub flush_interval_ms: u64,
    pub rss_median_mib: f64,
    pub rss_max_mib: f64,
    pub cpu_percent: f64,
    /// Readings accepted for storage in the window: the divisor.
    pub readings_stored: u64,
    /// Readings committed in the window (differs by what the flushes at
    /// either end of it carried).
    pub readings_committed: u64,
    pub readings_per_second: f64,
    pub bytes_written: u64,
    pub bytes_per_reading: f64,
    /// Bytes handed to write(2), cached or not.
    pub wchar_per_reading: f64,
    /// The pacing level at the end: on a busy machine the appliance backs
    /// off, produces fewer readings, and each commit carries fewer.
    pub pacing_level: String,
    pub pacing_multiplier: f64,
}

/// Readings accepted for storage (less those dropped) and readings
/// committed, so far.
fn counts(app: &Appliance) -> Result<(u64, u64), BenchError> {
    let h = http::get_json(app.addr, "/health")
        .ok_or_else(|| BenchError::Setup("no /health".into()))?;
    let w = &h["writer"];
    let field = |v: &serde_json::Value| {
        v.as_u64()
            .ok_or_else(|| BenchError::Setup(format!("/health lacks writer counts: {w}")))
    };
    let accepted = field(&w["queue"]["accepted"])? - field(&w["queue"]["dropped"])?;
    Ok((accepted, field(&w["committed_rows"])?))
}

/// Runs the appliance for the window and measures it.
pub fn run(exe: &Path, o: &FootprintOptions) -> Result<FootprintFigures, BenchError> {
    let dir = tempfile::tempdir()?;
    let flush = o
        .flush_interval_ms
        .unwrap_or(crate::storage::config::StorageConfig::default().flush_interval_ms);
    let config = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[log]\nfilter = \"warn,vigil::app=info\"\n\
         [storage]\npath = \"{}\"\nflush_interval_ms = {flush}\n",
        dir.path().join("footprint.db").display()
    );
    let app = Appliance::start(exe, dir.path(), &config)?;
    std::thread::sleep(Duration::from_secs(o.warmup_secs));

    let (a0, c0) = counts(&app)?;
    let s0 = app.stats()?;
    let started = Instant::now();
    let mut rss = Vec::new();
    let end = started + Duration::from_secs(o.seconds);
    while Instant::now() < end {
        rss.push(app.stats()?.rss_kib as f64 / 1024.0);
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
    }
    // The readings to divide by are those accepted in the window: all of
    // them are committed (at the latest on the flush after the window),
    // while counting commits would tie the figure to where the window's
    // ends fall between flushes (up to one flush window of readings either
    // way). Pages written back by the kernel lag their commit by up to its
    // dirty-page expiry (30 s), evenly at both ends of a long window.
    let (a1, c1) = counts(&app)?;
    let s1 = app.stats()?;
    let secs = started.elapsed().as_secs_f64();
    let pacing = http::get_json(app.addr, "/api/pacing").unwrap_or_default();
    app.stop(Duration::from_secs(30))?;

    let readings = a1.saturating_sub(a0);
    let written = s1.write_bytes.saturating_sub(s0.write_bytes);
    let per = |bytes: u64| {
        if readings == 0 {
            f64::NAN
        } else {
            bytes as f64 / readings as f64
        }
    };
    let rss_max = rss.iter().copied().fold(0.0, f64::max);
    Ok(FootprintFigures {
        seconds: secs,
        flush_interval_ms: flush,
        rss_median_mib: median_f64(&mut rss),
        rss_max_mib: rss_max,
        cpu_percent: ProcStats::cpu_percent(&s0, &s1, secs),
        readings_stored: readings,
        readings_committed: c1.saturating_sub(c0),
        readings_per_second: readings as f64 / secs,
        bytes_written: written,
        bytes_per_reading: per(written),
        wchar_per_reading: per(s1.wchar.saturating_sub(s0.wchar)),
        pacing_level: pacing["level"].as_str().unwrap_or("unknown").to_owned(),
        pacing_multiplier: pacing["multiplier"].as_f64().unwrap_or(f64::NAN),
    })
}
