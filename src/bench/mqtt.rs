//! `vigil-bench mqtt`: how fast the bridge publishes readings to a local
//! mosquitto, and how fast it drains a backlog after an outage. The
//! appliance runs as its own process with fast simulated sensors and
//! `[mqtt]` pointed at a mosquitto the benchmark starts on a free port.
//!
//! - Throughput: readings arriving at a subscriber of `vigil/bench/#` per
//!   second over a window, with the appliance's CPU per thousand of them
//!   (the whole appliance: sensors, writer and bridge).
//! - Drain: the broker is stopped for `outage_s`, readings pile up in the
//!   database (`backlog` in `/health`); from the moment the bridge is
//!   connected again, replayed readings confirmed by the broker (PUBACK)
//!   per second until the backlog is empty and the replay is done, while
//!   live readings keep flowing.
//!
//! Each figure is the median of `runs`.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::appliance::Appliance;
use super::{BenchError, http, median_f64};
use crate::platform::proc::TICKS_PER_SEC;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

#[derive(Debug, Clone, Copy)]
pub struct MqttOptions {
    pub sensors: usize,
    pub interval_ms: u64,
    /// Seconds each throughput window lasts.
    pub window_s: u64,
    /// Seconds the broker is away before each drain.
    pub outage_s: u64,
    pub runs: usize,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            sensors: 10,
            interval_ms: 10,
            window_s: 5,
            outage_s: 20,
            runs: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DrainRun {
    pub backlog: u64,
    pub replayed: u64,
    pub drain_s: f64,
    pub per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MqttFigures {
    /// Readings per second the sensors produce.
    pub offered_per_sec: f64,
    /// Readings per second at the subscriber (median of the windows).
    pub published_per_sec: f64,
    /// Appliance CPU (ms) per 1,000 readings published.
    pub cpu_ms_per_1000: f64,
    pub windows: Vec<f64>,
    /// Readings waiting just before the broker came back (median).
    pub backlog: f64,
    /// Replayed readings per second (median).
    pub drain_per_sec: f64,
    pub drains: Vec<DrainRun>,
}

fn free_port() -> Result<u16, BenchError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A mosquitto of the benchmark's own.
struct Broker {
    port: u16,
    conf: std::path::PathBuf,
    child: Option<Child>,
}

impl Broker {
    fn new(dir: &Path) -> Result<Broker, BenchError> {
        if !Path::new(MOSQUITTO).exists() {
            return Err(BenchError::Setup(format!(
                "{MOSQUITTO} is missing (scripts/setup installs mosquitto)"
            )));
        }
        let port = free_port()?;
        let user = Command::new("id").arg("-un").output()?;
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user {user}\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
                 persistence false\nmax_queued_messages 0\nmax_inflight_messages 0\n"
            ),
        )?;
        let mut b = Broker {
            port,
            conf,
            child: None,
        };
        b.start()?;
        Ok(b)
    }

    fn start(&mut self) -> Result<(), BenchError> {
        self.child = Some(
            Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        wait("mosquitto to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        })
    }

    fn stop(&mut self) -> Result<(), BenchError> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` every 20 ms until it holds, or fails after `deadline`.
fn wait(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Result<(), BenchError> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(BenchError::Setup(format!("timed out waiting for {what}")))
}

/// Counts the messages on `vigil/bench/#` in a thread of its own.
fn subscriber(port: u16) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut o = rumqttc::MqttOptions::new("bench-sub", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut conn) = rumqttc::Client::new(o, 100);
        let _ = client.subscribe("vigil/bench/+/+", rumqttc::QoS::AtMostOnce);
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))) => {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    count
}

fn config(dir: &Path, o: &MqttOptions, port: u16) -> String {
    let mut c = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[log]\nfilter = \"error,vigil::app=info\"\n\
         [storage]\npath = \"{}\"\n\
         [mqtt]\nenabled = true\nurl = \"mqtt://127.0.0.1:{port}\"\nnode_id = \"bench\"\n\
         discovery = false\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n\
         [guard.brokers]\nenabled = false\n",
        dir.join("mqtt.db").display()
    );
    for i in 0..o.sensors {
        c.push_str(&format!(
            "[[sensors]]\nname = \"s{i:02}\"\nkind = \"simulated\"\ninterval_ms = {}\n",
            o.interval_ms
        ));
    }
    c
}

fn mqtt_health(addr: SocketAddr) -> Option<serde_json::Value> {
    http::get_json(addr, "/health").map(|h| h["mqtt"].clone())
}

fn field(addr: SocketAddr, key: &str) -> Option<serde_json::Value> {
    mqtt_health(addr).map(|m| m[key].clone())
}

pub fn run(exe: &Path, o: &MqttOptions) -> Result<MqttFigures, BenchError> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::new(dir.path())?;
    let count = subscriber(broker.port);
    let app = Appliance::start(exe, dir.path(), &config(dir.path(), o, broker.port))?;
    let addr = app.addr;
    wait("the bridge to connect", Duration::from_secs(30), || {
        field(addr, "connected") == Some(serde_json::Value::Bool(true))
    })?;
    wait("the first readings", Duration::from_secs(30), || {
        count.load(Ordering::Relaxed) > 0
    })?;

    let mut windows = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..o.runs {
        let (n0, p0, t0) = (count.load(Ordering::Relaxed), app.stats()?, Instant::now());
        std::thread::sleep(Duration::from_secs(o.window_s));
        let (n1, p1, secs) = (
            count.load(Ordering::Relaxed),
            app.stats()?,
            t0.elapsed().as_secs_f64(),
        );
        let n = (n1 - n0) as f64;
        windows.push(n / secs);
        let cpu_ms = p1.cpu_ticks.saturating_sub(p0.cpu_ticks) as f64 * 1000.0 / TICKS_PER_SEC;
        cpu.push(if n > 0.0 { cpu_ms / n * 1000.0 } else { 0.0 });
    }

    let mut drains = Vec::new();
    for _ in 0..o.runs {
        broker.stop()?;
        wait(
            "the bridge to see the outage",
            Duration::from_secs(30),
            || field(addr, "connected") == Some(serde_json::Value::Bool(false)),
        )?;
        std::thread::sleep(Duration::from_secs(o.outage_s));
        let replayed0 = field(addr, "replayed")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let backlog = field(addr, "backlog").and_then(|v| v.as_u64()).unwrap_or(0);
        broker.start()?;
        wait("the bridge to reconnect", Duration::from_secs(30), || {
            field(addr, "connected") == Some(serde_json::Value::Bool(true))
        })?;
        let t0 = Instant::now();
        let mut last = None;
        wait("the backlog to drain", Duration::from_secs(600), || {
            last = mqtt_health(addr);
            last.as_ref().is_some_and(|m| {
                m["backlog"].as_u64() == Some(0) && m["replaying"] == serde_json::Value::Bool(false)
            })
        })?;
        let drain_s = t0.elapsed().as_secs_f64();
        let replayed = last
            .and_then(|m| m["replayed"].as_u64())
            .unwrap_or(0)
            .saturating_sub(replayed0);
        drains.push(DrainRun {
            backlog,
            replayed,
            drain_s,
            per_sec: replayed as f64 / drain_s.max(1e-3),
        });
    }
    app.stop(Duration::from_secs(20))?;
    drop(broker);
    Ok(MqttFigures {
        offered_per_sec: o.sensors as f64 * 1000.0 / o.interval_ms as f64,
        published_per_sec: median_f64(&mut windows.clone()),
        cpu_ms_per_1000: median_f64(&mut cpu),
        windows,
        backlog: median_f64(&mut drains.iter().map(|d| d.backlog as f64).collect::<Vec<_>>()),
        drain_per_sec: median_f64(&mut drains.iter().map(|d| d.per_sec).collect::<Vec<_>>()),
        drains,
    })
}
