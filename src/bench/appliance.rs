//! The appliance under measurement, as a separate process: the very binary
//! running the benchmark, started with `serve` on a config the benchmark
//! writes, so its CPU, memory and I/O are its own and load generators do not
//! share its runtime.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BenchError;
use crate::platform::proc::ProcStats;

/// A running `vigil serve`.
pub struct Appliance {
    child: Child,
    pub addr: SocketAddr,
    /// Time from spawning the process to its "serving" log line.
    pub started_in: Duration,
    pub dir: PathBuf,
}

impl Appliance {
    /// Starts `exe serve` (the vigil binary) with `config` (TOML) written
    /// into `dir`. The config must bind port 0 and keep `vigil::app`
    /// logging at info.
    pub fn start(exe: &Path, dir: &Path, config: &str) -> Result<Appliance, BenchError> {
        let path = dir.join("vigil.toml");
        std::fs::write(&path, config)?;
        let spawned = Instant::now();
        let mut child = Command::new(exe)
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("VIGIL_DB")
            .env_remove("VIGIL_BIND")
            .env_remove("VIGIL_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| BenchError::Setup("no stderr".into()))?;
        let (tx, rx) = mpsc::channel();
        // Drain the log for the process's whole life, or it would block on a
        // full pipe; pass on the address line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                } else if line.contains("ERROR") {
                    eprintln!("appliance: {line}");
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                return Err(BenchError::Setup(
                    "the appliance did not start within 30 s".into(),
                ));
            }
        };
        let started_in = spawned.elapsed();
        let addr = addr
            .parse()
            .map_err(|_| BenchError::Setup(format!("bad address in log: {addr}")))?;
        Ok(Appliance {
            child,
            addr,
            started_in,
            dir: dir.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stats(&self) -> Result<ProcStats, BenchError> {
        Ok(ProcStats::read(self.pid())?)
    }

    /// SIGTERM, then waits for the exit (killing it after `within`).
    pub fn stop(mut self, within: Duration) -> Result<ExitStatus, BenchError> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(BenchError::Setup("the appliance did not stop".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
