//! `vigil-bench startup`: from spawning `vigil serve` to the first
//! `GET /health` answered 200 (migrations done, port bound, writer and tree
//! up), on a fresh database and on an existing one; medians of several runs.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, http, median};

#[derive(Debug, Clone, Serialize)]
pub struct StartupFigures {
    pub runs: usize,
    /// A new database (migrations run).
    pub fresh_p50_ms: f64,
    pub fresh_max_ms: f64,
    /// The same database again (migrations already applied).
    pub existing_p50_ms: f64,
    pub existing_max_ms: f64,
}

fn free_addr() -> Result<SocketAddr, BenchError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One start: spawn to the first 200 from `/health`, then SIGTERM.
fn once(exe: &Path, dir: &Path, db: &Path) -> Result<Duration, BenchError> {
    let addr = free_addr()?;
    let config = dir.join("startup.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"{addr}\"\n[log]\nfilter = \"error\"\n[storage]\npath = \"{}\"\n",
            db.display()
        ),
    )?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("VIGIL_DB")
        .env_remove("VIGIL_BIND")
        .env_remove("VIGIL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let ready = loop {
        if let Some((200, _)) = http::get(addr, "/health", Duration::from_millis(200)) {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) || child.try_wait()?.is_some() {
            let _ = child.kill();
            return Err(BenchError::Setup("the appliance never became ready".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(ready)
}

/// Runs `runs` fresh starts and `runs` starts on an existing database.
pub fn run(exe: &Path, runs: usize) -> Result<StartupFigures, BenchError> {
    let runs = runs.max(1);
    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    for i in 0..runs {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join(format!("startup-{i}.db"));
        fresh.push(once(exe, dir.path(), &db)?);
        existing.push(once(exe, dir.path(), &db)?);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let max = |v: &[Duration]| v.iter().copied().max().map_or(0.0, ms);
    Ok(StartupFigures {
        runs,
        fresh_max_ms: max(&fresh),
        existing_max_ms: max(&existing),
        fresh_p50_ms: ms(median(&mut fresh)),
        existing_p50_ms: ms(median(&mut existing)),
    })
}
