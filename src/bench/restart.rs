//! `vigil-bench restart`: how soon a panicked sensor delivers again. The
//! appliance runs as its own process with simulated sensors that panic on
//! their second read; for each sensor's first failure the benchmark takes
//! the supervisor's `failed` event and the timestamp of the first reading
//! after it, both stamped by the appliance's clock, and compares the gap
//! with the backoff the supervisor chose (jittered within
//! `[base / 2, base]` for a first failure). Target: the first new reading
//! within backoff base + 50 ms.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::appliance::Appliance;
use super::{BenchError, http, median_f64};

#[derive(Debug, Clone, Copy)]
pub struct RestartOptions {
    /// Panicking sensors per run; each gives one sample.
    pub sensors: usize,
    pub runs: usize,
    /// `supervisor.backoff_base_ms`; `None` keeps the default.
    pub backoff_base_ms: Option<u64>,
}

impl Default for RestartOptions {
    fn default() -> Self {
        RestartOptions {
            sensors: 20,
            runs: 5,
            backoff_base_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestartFigures {
    pub samples: usize,
    pub backoff_base_ms: u64,
    /// From the failure to the first new reading.
    pub gap_p50_ms: f64,
    pub gap_max_ms: f64,
    /// The same minus the delay the supervisor scheduled: what the restart
    /// itself costs (new actor, first read).
    pub overhead_p50_ms: f64,
    pub overhead_max_ms: f64,
    /// Samples whose gap exceeded backoff base + 50 ms.
    pub over_target: usize,
}

fn config(dir: &Path, o: &RestartOptions, base: u64) -> String {
    let mut c = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[log]\nfilter = \"error,vigil::app=info\"\n\
         [storage]\npath = \"{}\"\nflush_interval_ms = 50\n\
         [supervisor]\nbackoff_base_ms = {base}\nbackoff_max_ms = {}\nmax_restarts = 1000\n",
        dir.join("restart.db").display(),
        base * 8
    );
    for i in 0..o.sensors {
        c.push_str(&format!(
            "[[sensors]]\nname = \"p{i:02}\"\nkind = \"simulated\"\ninterval_ms = 1000\n\
             [sensors.options]\npanic_every = 2\n"
        ));
    }
    c
}

/// A sensor's first failure: when, and the restart delay chosen for it.
#[derive(Debug, Clone, Copy)]
struct FirstFailure {
    failed_ms: i64,
    delay_ms: i64,
}

/// Adds to `seen` every first failure in `events` (from `GET
/// /api/supervisor`): a `failed` event followed by the restart scheduled
/// for it as attempt 1. The event log is bounded, so the caller polls often
/// and keeps what it has seen.
fn note_first_failures(events: &serde_json::Value, seen: &mut HashMap<String, FirstFailure>) {
    let mut failed: HashMap<&str, i64> = HashMap::new();
    for e in events.as_array().into_iter().flatten() {
        let (Some(child), Some(kind), Some(at)) = (
            e["child"].as_str(),
            e["event"].as_str(),
            e["at_ms"].as_i64(),
        ) else {
            continue;
        };
        match kind {
            "failed" => {
                failed.insert(child, at);
            }
            "restart_scheduled" => {
                let detail = e["detail"].as_str().unwrap_or("");
                let delay = detail
                    .strip_prefix("in ")
                    .and_then(|d| d.split(' ').next())
                    .and_then(|d| d.parse().ok());
                if let (Some(&failed_ms), Some(delay_ms), true) =
                    (failed.get(child), delay, detail.ends_with("(attempt 1)"))
                {
                    seen.entry(child.to_owned()).or_insert(FirstFailure {
                        failed_ms,
                        delay_ms,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The timestamp of the sensor's first reading after `after_ms`.
fn first_reading_after(app: &Appliance, sensor: &str, after_ms: i64) -> Option<i64> {
    let path =
        format!("/api/readings?sensor={sensor}&from={after_ms}&order=asc&limit=1&fields=ts_ms");
    http::get_json(app.addr, &path)?["readings"][0]["ts_ms"].as_i64()
}

/// One appliance run: (gap, overhead) in ms per sensor.
fn one_run(exe: &Path, o: &RestartOptions, base: u64) -> Result<Vec<(f64, f64)>, BenchError> {
    let dir = tempfile::tempdir()?;
    let app = Appliance::start(exe, dir.path(), &config(dir.path(), o, base))?;
    let deadline = Instant::now() + Duration::from_secs(30) + Duration::from_millis(base * 2);
    let mut seen: HashMap<String, FirstFailure> = HashMap::new();
    let mut done: HashMap<String, (f64, f64)> = HashMap::new();
    while done.len() < o.sensors {
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "only {} of {} sensors delivered after their first restart",
                done.len(),
                o.sensors
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
        if let Some(sv) = http::get_json(app.addr, "/api/supervisor") {
            note_first_failures(&sv["events"], &mut seen);
        }
        for (child, f) in &seen {
            if done.contains_key(child) {
                continue;
            }
            if let Some(ts) = first_reading_after(&app, child, f.failed_ms) {
                let gap = (ts - f.failed_ms) as f64;
                done.insert(child.clone(), (gap, gap - f.delay_ms as f64));
            }
        }
    }
    app.stop(Duration::from_secs(30))?;
    Ok(done.into_values().collect())
}

pub fn run(exe: &Path, o: &RestartOptions) -> Result<RestartFigures, BenchError> {
    let base = o
        .backoff_base_ms
        .unwrap_or(crate::supervisor::config::SupervisorConfig::default().backoff_base_ms);
    let mut samples = Vec::new();
    for _ in 0..o.runs.max(1) {
        samples.extend(one_run(exe, o, base)?);
    }
    let mut gaps: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let mut overheads: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    Ok(RestartFigures {
        samples: samples.len(),
        backoff_base_ms: base,
        over_target: gaps.iter().filter(|g| **g > (base + 50) as f64).count(),
        gap_max_ms: max(&gaps),
        overhead_max_ms: max(&overheads),
        gap_p50_ms: median_f64(&mut gaps),
        overhead_p50_ms: median_f64(&mut overheads),
    })
}
