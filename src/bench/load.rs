//! A small HTTP/1.1 load generator: `connections` keep-alive connections,
//! each sending GETs back to back (one in flight per connection) for a fixed
//! time, recording every response's latency. Enough for loopback
//! measurements without an external tool; it costs the server's machine
//! some CPU, which the benchmark reports alongside.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BenchError;

/// The outcome of one load run.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies in µs, sorted.
    pub latencies_us: Vec<u32>,
    pub bytes: u64,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// The latency at quantile `q` (0..=1) in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let n = self.latencies_us.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(self.latencies_us[rank - 1]) / 1000.0
    }
}

/// Reads one response; returns its body length.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, BenchError> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| BenchError::Setup("response head is not text".into()))?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(BenchError::Setup(format!(
                    "answered {}",
                    head.lines().next().unwrap_or_default()
                )));
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| BenchError::Setup("no content-length".into()))?;
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(BenchError::Setup("connection closed mid-body".into()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(len);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(BenchError::Setup("connection closed".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn connection(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    offset: usize,
    until: Instant,
) -> Result<(u64, u64, Vec<u32>), BenchError> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let requests: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes())
        .collect();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut latencies = Vec::with_capacity(100_000);
    let (mut errors, mut bytes) = (0u64, 0u64);
    let mut i = offset;
    while Instant::now() < until {
        let started = Instant::now();
        s.write_all(&requests[i % requests.len()]).await?;
        match read_response(&mut s, &mut buf).await {
            Ok(len) => {
                latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                bytes += len as u64;
            }
            Err(_) => {
                errors += 1;
                s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                buf.clear();
            }
        }
        i += 1;
    }
    Ok((errors, bytes, latencies))
}

/// Sends GETs of `paths` (rotating) over `connections` connections for
/// `seconds`, on `threads` threads.
pub fn run(
    addr: SocketAddr,
    paths: Vec<String>,
    connections: usize,
    seconds: f64,
    threads: usize,
) -> Result<LoadResult, BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let paths = Arc::new(paths);
    rt.block_on(async move {
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..connections.max(1))
            .map(|c| tokio::spawn(connection(addr, paths.clone(), c, until)))
            .collect();
        let mut result = LoadResult::default();
        for t in tasks {
            let (errors, bytes, lat) = t.await.map_err(|e| BenchError::Setup(e.to_string()))??;
            result.errors += errors;
            result.bytes += bytes;
            result.latencies_us.extend(lat);
        }
        result.seconds = started.elapsed().as_secs_f64();
        result.requests = result.latencies_us.len() as u64;
        result.latencies_us.sort_unstable();
        Ok(result)
    })
}
