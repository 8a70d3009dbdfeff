//! `vigil-bench flood`: rounds of connection floods against the appliance
//! on loopback, and its resident memory before each round, at the round's
//! peak and after a settling time, to show that a flood costs a bounded
//! amount of memory and that the memory comes back once it is over.
//!
//! Each round opens `connections` TCP connections as fast as the kernel
//! takes them, each sending an unfinished request head (a "half-open" HTTP
//! connection, the cheapest flood there is), holds them until the server
//! has closed every one (refused at once beyond `[server.connections]`, or
//! timed out after `header_timeout_ms`), then lets the appliance idle for
//! `settle_secs` and reads its RSS again. Everything is bounded in count
//! and time; the target is the appliance's own loopback address.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BenchError;
use super::appliance::Appliance;
use crate::platform::proc::ProcStats;

#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// Connections per round.
    pub connections: usize,
    pub rounds: usize,
    /// Idle time after each round before its "after" figure.
    pub settle_secs: u64,
    /// Idle time after start-up before the first figure.
    pub warmup_secs: u64,
    /// `[server.connections]` limits for the run (`None`: the defaults).
    pub max_connections: Option<usize>,
    pub max_per_client: Option<usize>,
    /// `guard.memory.check_interval_ms` for the run (`None`: the default).
    /// The memory guard is what hands freed heap back to the kernel, so a
    /// huge interval shows the appliance without it.
    pub memory_check_ms: Option<u64>,
}

impl Default for FloodOptions {
    fn default() -> Self {
        FloodOptions {
            connections: 10_000,
            rounds: 5,
            settle_secs: 30,
            warmup_secs: 5,
            max_connections: None,
            max_per_client: None,
            memory_check_ms: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodRound {
    pub before_mib: f64,
    pub peak_mib: f64,
    pub after_mib: f64,
    /// Connections the client managed to open.
    pub opened: usize,
    /// ... answered 503 by the connection limit.
    pub refused: usize,
    /// ... held by the server until it closed them.
    pub held: usize,
    /// The most file descriptors the appliance had open during the round.
    pub peak_fds: usize,
    /// From the first connection to the last one closed by the server.
    pub flood_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    pub connections: usize,
    pub memory_check_ms: u64,
    pub max_connections: usize,
    pub max_per_client: usize,
    pub start_mib: f64,
    pub rounds: Vec<FloodRound>,
    /// The highest peak of any round.
    pub peak_max_mib: f64,
    /// The median of the rounds' peaks.
    pub peak_median_mib: f64,
    /// The last round's "after", less the start.
    pub end_above_start_mib: f64,
    /// Idle file descriptors before the first round.
    pub start_fds: usize,
}

fn rss_mib(pid: u32) -> f64 {
    ProcStats::read(pid).map_or(0.0, |s| s.rss_kib as f64 / 1024.0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Samples RSS (KiB) and descriptors every 20 ms until stopped; the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak_kib: Arc<AtomicU64>,
    peak_fds: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak_fds = Arc::new(AtomicU64::new(0));
        let (s, k, f) = (stop.clone(), peak_kib.clone(), peak_fds.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(st) = ProcStats::read(pid) {
                    k.fetch_max(st.rss_kib, Ordering::Relaxed);
                }
                f.fetch_max(fds(pid) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            stop,
            peak_kib,
            peak_fds,
            thread: Some(thread),
        }
    }

    /// Stops; peak RSS in MiB and peak descriptors.
    fn finish(mut self) -> (f64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0,
            self.peak_fds.load(Ordering::Relaxed) as usize,
        )
    }
}

/// What became of one flood connection.
enum Fate {
    Refused,
    Held,
}

/// Waits (at most until `deadline`) for the server to end `c`.
fn fate(mut c: TcpStream, deadline: Instant) -> Fate {
    let mut buf = [0u8; 512];
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || c.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if seen.len() < 64 {
                    seen.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    if seen.starts_with(b"HTTP/1.1 503") {
        Fate::Refused
    } else {
        Fate::Held
    }
}

fn flood_round(
    pid: u32,
    addr: SocketAddr,
    o: &FloodOptions,
    give_up: Duration,
) -> Result<FloodRound, BenchError> {
    let before_mib = rss_mib(pid);
    let sampler = Sampler::start(pid);
    let started = Instant::now();
    let open_deadline = started + give_up;
    let mut conns = Vec::with_capacity(o.connections);
    for _ in 0..o.connections {
        if Instant::now() > open_deadline {
            break;
        }
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            continue;
        };
        // An unfinished request head: the server waits for the rest.
        let _ = c.write_all(b"GET /health HTTP/1.1\r\nHost: vigil\r\n");
        conns.push(c);
    }
    let opened = conns.len();
    let close_deadline = Instant::now() + give_up;
    let (mut refused, mut held) = (0, 0);
    for c in conns {
        match fate(c, close_deadline) {
            Fate::Refused => refused += 1,
            Fate::Held => held += 1,
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let (peak_mib, peak_fds) = sampler.finish();
    std::thread::sleep(Duration::from_secs(o.settle_secs));
    Ok(FloodRound {
        before_mib,
        peak_mib,
        after_mib: rss_mib(pid),
        opened,
        refused,
        held,
        peak_fds,
        flood_secs,
    })
}

/// Runs the benchmark against the vigil binary at `exe`.
pub fn run(exe: &Path, o: &FloodOptions) -> Result<FloodFigures, BenchError> {
    crate::platform::raise_fd_limit();
    let defaults = crate::web::connlimit::ConnectionLimits::default();
    let max_connections = o.max_connections.unwrap_or(defaults.max_connections);
    let max_per_client = o.max_per_client.unwrap_or(defaults.max_per_client);
    let memory_check_ms = o
        .memory_check_ms
        .unwrap_or(crate::guard::config::MemoryConfig::default().check_interval_ms);
    let dir = tempfile::tempdir()?;
    let config = format!(
        r#"
[server]
bind = "127.0.0.1:0"
[server.connections]
max_connections = {max_connections}
max_per_client = {max_per_client}
[live]
max_sessions = {max_sessions}
[log]
filter = "warn,vigil::app=info"
[storage]
path = "{db}"
# Every connection comes from one address, and this measures memory, not
# request rates.
[guard.http]
enabled = false
[guard.memory]
check_interval_ms = {memory_check_ms}
"#,
        db = dir.path().join("flood.db").display(),
        // Below the connection limit, as the configuration demands.
        max_sessions = crate::web::live::LiveConfig::default()
            .max_sessions
            .min(max_connections.saturating_sub(1))
            .max(1),
    );
    let app = Appliance::start(exe, dir.path(), &config)?;
    let pid = app.pid();
    std::thread::sleep(Duration::from_secs(o.warmup_secs));
    let start_mib = rss_mib(pid);
    let start_fds = fds(pid);
    // Beyond the header timeout, a connection the server fails to close
    // would be a finding; do not wait for it forever.
    let give_up = Duration::from_millis(defaults.header_timeout_ms) * 6;
    let mut rounds = Vec::with_capacity(o.rounds);
    for _ in 0..o.rounds {
        rounds.push(flood_round(pid, app.addr, o, give_up)?);
    }
    app.stop(Duration::from_secs(30))?;
    let mut peaks: Vec<f64> = rounds.iter().map(|r| r.peak_mib).collect();
    let peak_max_mib = peaks.iter().copied().fold(0.0, f64::max);
    let peak_median_mib = super::median_f64(&mut peaks);
    let end_above_start_mib = rounds.last().map_or(0.0, |r| r.after_mib - start_mib);
    Ok(FloodFigures {
        connections: o.connections,
        memory_check_ms,
        max_connections,
        max_per_client,
        start_mib,
        rounds,
        peak_max_mib,
        peak_median_mib,
        end_above_start_mib,
        start_fds,
    })
}
