//! `vigil-bench fanout`: live-feed delivery latency with many WebSocket
//! clients on loopback.
//!
//! Starts the appliance as its own process with one simulated sensor read
//! `rate` times a second, connects `clients` WebSocket clients (each
//! subscribed to everything), and measures, per message, the time from the
//! hub sending a batch (`sent_us`, stamped by the server) to the client
//! receiving it ("delivery"), and from each reading being taken to its
//! arrival ("end to end", which includes the throttle window). Server CPU
//! and memory come from `/proc`. Several measurement windows on the same
//! connections give the medians.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::appliance::Appliance;
use super::wsclient::WsClient;
use super::{BenchError, median_f64};
use crate::platform::proc::ProcStats;

/// Sizes of the fan-out run.
#[derive(Debug, Clone, Copy)]
pub struct FanoutOptions {
    pub clients: usize,
    /// Sensor reads (and so live updates) per second.
    pub rate: u32,
    /// Length of each measurement window.
    pub seconds: u64,
    pub runs: usize,
    /// Time after all clients connect before measuring.
    pub warmup_secs: u64,
    /// Threads driving the clients.
    pub threads: usize,
}

impl Default for FanoutOptions {
    fn default() -> Self {
        FanoutOptions {
            clients: 1000,
            rate: 10,
            seconds: 10,
            runs: 3,
            warmup_secs: 3,
            threads: 2,
        }
    }
}

/// One measurement window.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRun {
    pub messages: usize,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub delivery_max_ms: f64,
    pub end_to_end_p50_ms: f64,
    pub end_to_end_p99_ms: f64,
    pub server_cpu_percent: f64,
    pub server_rss_mib: f64,
}

/// The result: medians over the runs, and the runs themselves.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutFigures {
    pub clients: usize,
    pub connected: usize,
    pub rate: u32,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub end_to_end_p99_ms: f64,
    pub server_cpu_percent: f64,
    pub server_peak_rss_mib: f64,
    pub runs: Vec<FanoutRun>,
}

#[derive(Deserialize)]
struct Msg {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sent_us: i64,
    #[serde(default)]
    readings: Vec<WireReading>,
}

#[derive(Deserialize)]
struct WireReading {
    ts_ms: i64,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Latency samples (µs) gathered while `recording` is on.
#[derive(Default)]
struct Samples {
    recording: AtomicBool,
    delivery: std::sync::Mutex<Vec<u32>>,
    end_to_end: std::sync::Mutex<Vec<u32>>,
}

impl Samples {
    fn take(&self) -> (Vec<u32>, Vec<u32>) {
        let lock = |m: &std::sync::Mutex<Vec<u32>>| {
            std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
        };
        (lock(&self.delivery), lock(&self.end_to_end))
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

async fn client(
    addr: std::net::SocketAddr,
    samples: Arc<Samples>,
    connected: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<(), BenchError> {
    let mut ws = {
        let _permit = gate.acquire().await;
        let mut ws = WsClient::connect(addr, None).await?;
        ws.send_text(r#"{"type":"subscribe"}"#).await?;
        ws
    };
    connected.fetch_add(1, Ordering::Relaxed);
    loop {
        let Some(text) = ws.next_text(Duration::from_secs(3600)).await? else {
            continue;
        };
        let received = now_us();
        if !samples.recording.load(Ordering::Relaxed) {
            continue;
        }
        let Ok(msg) = serde_json::from_str::<Msg>(&text) else {
            continue;
        };
        if msg.kind != "readings" {
            continue;
        }
        let delivery = (received - msg.sent_us).max(0) as u32;
        samples
            .delivery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(delivery);
        let mut e2e = samples.end_to_end.lock().unwrap_or_else(|p| p.into_inner());
        for r in msg.readings {
            e2e.push((received - r.ts_ms * 1000).max(0) as u32);
        }
    }
}

/// Runs the benchmark against the vigil binary at `exe`.
pub fn run(o: &FanoutOptions, exe: &std::path::Path) -> Result<FanoutFigures, BenchError> {
    crate::platform::raise_fd_limit();
    let dir = tempfile::tempdir()?;
    let interval_ms = (1000 / o.rate.max(1)).max(1);
    let config = format!(
        r#"
[server]
bind = "127.0.0.1:0"
[server.connections]
max_connections = {conns}
max_per_client = {conns}
[log]
filter = "warn,vigil::app=info"
[storage]
path = "{db}"
[live]
max_sessions = {max}
# A thousand clients connect from one address.
[guard.http]
enabled = false
[[sensors]]
name = "feed"
kind = "simulated"
interval_ms = {interval_ms}
"#,
        db = dir.path().join("fanout.db").display(),
        max = o.clients + 16,
        conns = o.clients + 64,
    );
    let appliance = Appliance::start(exe, dir.path(), &config)?;
    let addr = appliance.addr;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads.max(1))
        .enable_all()
        .build()?;
    let samples = Arc::new(Samples::default());
    let connected = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut runs = Vec::new();
    rt.block_on(async {
        for _ in 0..o.clients {
            let (s, c, g) = (samples.clone(), connected.clone(), gate.clone());
            tokio::spawn(async move {
                if let Err(e) = client(addr, s, c, g).await {
                    eprintln!("client: {e}");
                }
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while connected.load(Ordering::Relaxed) < o.clients
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(o.warmup_secs)).await;
        for _ in 0..o.runs.max(1) {
            samples.take();
            let before = appliance.stats()?;
            let start = std::time::Instant::now();
            samples.recording.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(o.seconds)).await;
            samples.recording.store(false, Ordering::Relaxed);
            let after = appliance.stats()?;
            let secs = start.elapsed().as_secs_f64();
            let (mut delivery, mut e2e) = samples.take();
            delivery.sort_unstable();
            e2e.sort_unstable();
            runs.push(FanoutRun {
                messages: delivery.len(),
                delivery_p50_ms: pct(&delivery, 50.0),
                delivery_p99_ms: pct(&delivery, 99.0),
                delivery_max_ms: pct(&delivery, 100.0),
                end_to_end_p50_ms: pct(&e2e, 50.0),
                end_to_end_p99_ms: pct(&e2e, 99.0),
                server_cpu_percent: ProcStats::cpu_percent(&before, &after, secs),
                server_rss_mib: after.rss_kib as f64 / 1024.0,
            });
        }
        Ok::<_, BenchError>(())
    })?;
    let peak = appliance
        .stats()
        .map(|s| s.hwm_kib as f64 / 1024.0)
        .unwrap_or(0.0);
    let connected = connected.load(Ordering::Relaxed);
    rt.shutdown_background();
    appliance.stop(Duration::from_secs(30))?;
    let med = |f: fn(&FanoutRun) -> f64| median_f64(&mut runs.iter().map(f).collect::<Vec<_>>());
    Ok(FanoutFigures {
        clients: o.clients,
        connected,
        rate: o.rate,
        delivery_p50_ms: med(|r| r.delivery_p50_ms),
        delivery_p99_ms: med(|r| r.delivery_p99_ms),
        end_to_end_p99_ms: med(|r| r.end_to_end_p99_ms),
        server_cpu_percent: med(|r| r.server_cpu_percent),
        server_peak_rss_mib: peak,
        runs,
    })
}
