//! systemd: the unit and its Raspberry Pi drop-in pass `systemd-analyze
//! verify` without a warning, and the binary, run with a fake
//! `NOTIFY_SOCKET` (a Unix datagram socket this test listens on), says
//! READY=1, feeds the watchdog while healthy, stops feeding it while the
//! database writer is wedged behind another process's lock, resumes once
//! the lock is gone, and says STOPPING=1 on SIGTERM. Its STATUS= line names
//! every sensor by the state `/api/sensors` and the tree give it, for every
//! kind of fault.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const UNIT: &str = include_str!("../../systemd/vigil.service");
const PI_DROP_IN: &str = include_str!("../../systemd/raspberry-pi.conf");

#[test]
fn systemd_analyze_verifies_the_unit_and_the_pi_drop_in_without_warnings() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is not installed; scripts/setup installs it (package systemd)");
    };
    assert!(version.status.success());
    // The unit as installed, except that vigil is where cargo built it
    // (verify checks that ExecStart= exists and is executable).
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/local/bin/vigil", env!("CARGO_BIN_EXE_vigil"));
    assert_ne!(unit, UNIT, "the unit runs /usr/local/bin/vigil");
    let path = dir.path().join("vigil.service");
    std::fs::write(&path, unit).unwrap();
    let drop_ins = dir.path().join("vigil.service.d");
    std::fs::create_dir(&drop_ins).unwrap();
    std::fs::write(drop_ins.join("raspberry-pi.conf"), PI_DROP_IN).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown keys and bad values are only warnings to verify: none allowed.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecStartPre=/usr/local/bin/vigil check-config",
        "CPUQuota=",
        "MemoryHigh=",
        "MemoryMax=",
        "ProtectSystem=strict",
        "StateDirectory=vigil",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
    ] {
        assert!(
            UNIT.lines().any(|l| l.starts_with(key)),
            "the unit lacks {key}"
        );
    }
    assert!(PI_DROP_IN.contains("\nSupplementaryGroups=gpio i2c audio\n"));
}

/// Notifications as they arrive, with when.
struct Notifications {
    rx: mpsc::Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Notifications {
    fn listen(path: &Path) -> Notifications {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        if tx.send((Instant::now(), text)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                    Err(_) => return,
                }
            }
        });
        Notifications {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a notification for which `pred` holds; returns its index.
    fn wait_for(&mut self, what: &str, within: Duration, pred: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + within;
        let mut from = self.seen.len();
        loop {
            if let Some(i) = self.seen[from..].iter().position(|(_, m)| pred(m)) {
                return from + i;
            }
            from = self.seen.len();
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "no notification {what} within {within:?}; got {:?}",
                        self.texts()
                    )
                });
            if let Ok(n) = self.rx.recv_timeout(left) {
                self.seen.push(n);
            }
        }
    }

    /// Takes in what has arrived so far, so that a later `wait_for` sees only
    /// what arrives after this call.
    fn drain(&mut self) {
        while let Ok(n) = self.rx.try_recv() {
            self.seen.push(n);
        }
    }

    /// Collects what arrives for `span`.
    fn collect_for(&mut self, span: Duration) {
        let until = Instant::now() + span;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if let Ok(n) = self.rx.recv_timeout(left) {
                self.seen.push(n);
            }
        }
    }

    fn texts(&self) -> Vec<&str> {
        self.seen.iter().map(|(_, m)| m.as_str()).collect()
    }
}

fn is_ping(m: &str) -> bool {
    m.lines().any(|l| l == "WATCHDOG=1")
}

#[test]
fn the_watchdog_is_fed_while_healthy_and_starves_while_the_writer_is_wedged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notify.db");
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        r#"
[server]
bind = "127.0.0.1:0"
[log]
filter = "warn,vigil::app=info,vigil::systemd=info"
[storage]
flush_interval_ms = 50
# Behind another process's lock the writer waits (wedged) instead of failing.
busy_timeout_ms = 600000
# The index in a file, so that another process can take that lock.
wal_index = "file"
[guard.watchdog]
writer_deadline_ms = 500
[[sensors]]
name = "fast"
kind = "simulated"
interval_ms = 20
"#,
    )
    .unwrap();
    let socket = dir.path().join("notify.sock");
    let mut notes = Notifications::listen(&socket);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("VIGIL_DB", &db)
        .env("NOTIFY_SOCKET", &socket)
        // Ping every 100 ms.
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .env_remove("VIGIL_BIND")
        .env_remove("VIGIL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ready = notes.wait_for("READY=1", Duration::from_secs(30), |m| {
            m.lines().any(|l| l == "READY=1")
        });
        assert!(
            notes.seen[ready].1.contains("STATUS=serving http://"),
            "{:?}",
            notes.seen[ready]
        );
        for _ in 0..3 {
            notes.wait_for("WATCHDOG=1 while healthy", Duration::from_secs(10), is_ping);
        }
        notes.wait_for("a running STATUS=", Duration::from_secs(10), |m| {
            m.contains("STATUS=running: 1/1 sensors running")
        });

        // Another process holds the write lock; the writer blocks in SQLite.
        let mut other = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        other.batch_execute("BEGIN EXCLUSIVE").unwrap();
        let starved = notes.wait_for("the unhealthy STATUS=", Duration::from_secs(30), |m| {
            m.contains("STATUS=unhealthy: the database writer has not answered")
        });
        assert!(
            !is_ping(&notes.seen[starved].1),
            "{:?}",
            notes.seen[starved]
        );
        // For as long as the writer stays wedged, no ping (a hundred ms
        // apart while healthy, so ten would be due).
        notes.collect_for(Duration::from_secs(1));
        let after: Vec<&str> = notes.seen[starved..]
            .iter()
            .map(|(_, m)| m.as_str())
            .collect();
        assert!(
            !after.iter().any(|m| is_ping(m)),
            "pings while the writer is wedged: {after:?}"
        );

        other.batch_execute("COMMIT").unwrap();
        drop(other);
        let back = notes.wait_for("WATCHDOG=1 again", Duration::from_secs(30), is_ping);
        assert!(back > starved);
        notes.wait_for("a running STATUS= again", Duration::from_secs(10), |m| {
            m.contains("STATUS=running")
        });

        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let stopping = notes.wait_for("STOPPING=1", Duration::from_secs(30), |m| {
            m.lines().any(|l| l == "STOPPING=1")
        });
        assert!(notes.seen[stopping].1.contains("STATUS=stopping"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "vigil did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }));
    if let Err(failure) = result {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "vigil's log:\n{}",
            log.join().unwrap_or_default().join("\n")
        );
        std::panic::resume_unwind(failure);
    }
}

/// Runs `vigil serve` on `config` with a fake `NOTIFY_SOCKET` in `dir`.
fn serve_notified(dir: &Path, config: &str) -> (std::process::Child, Notifications) {
    let file = dir.join("vigil.toml");
    std::fs::write(&file, config).unwrap();
    let socket = dir.join("notify.sock");
    let notes = Notifications::listen(&socket);
    let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["serve", "--config"])
        .arg(&file)
        .env("VIGIL_DB", dir.join("vigil.db"))
        .env("NOTIFY_SOCKET", &socket)
        // STATUS= is refreshed with every ping, every 100 ms.
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .env_remove("VIGIL_BIND")
        .env_remove("VIGIL_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, notes)
}

/// The sensor part of a STATUS= line ("1/6 sensors running (1 paused, ...)").
fn status_sensors(line: &str) -> Option<&str> {
    let status = line
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=running: "))?;
    status.split(';').next()
}

#[actix_rt::test]
async fn the_status_line_names_each_sensor_by_the_state_the_api_gives_it() {
    let dir = tempfile::tempdir().unwrap();
    let thermal = dir.path().join("thermal");
    let zone = thermal.join("thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("type"), "cpu-thermal\n").unwrap();
    std::fs::write(zone.join("temp"), "90000\n").unwrap();
    let (mut child, mut notes) = serve_notified(
        dir.path(),
        &format!(
            r#"
[server]
bind = "127.0.0.1:0"
[log]
filter = "error"
[storage]
flush_interval_ms = 100
[supervisor]
backoff_base_ms = 10
backoff_max_ms = 50
max_restarts = 2
[pacing]
use_load = false
use_hwmon = false
vcgencmd = ""
thermal_root = "{}"
watchdog_interval_ms = 50
[guard.http]
enabled = false
[guard.sensors]
open_wait_ms = 60000

[[sensors]]
name = "fine"
kind = "simulated"
interval_ms = 20

[[sensors]]
name = "panicking"
kind = "simulated"
interval_ms = 20
[sensors.options]
panic_every = 1

[[sensors]]
name = "erroring"
kind = "simulated"
interval_ms = 20
max_consecutive_errors = 0
[sensors.options]
error_rate = 1.0

[[sensors]]
name = "absent"
kind = "cpu_temp"
interval_ms = 20
[sensors.options]
thermal_root = "/nonexistent/vigil-test-thermal"
use_hwmon = false

[[sensors]]
name = "held"
kind = "simulated"
interval_ms = 20
priority = "optional"
"#,
            thermal.display()
        ),
    );
    let result = async {
        let ready = notes.wait_for("READY=1", Duration::from_secs(30), |m| {
            m.lines().any(|l| l == "READY=1")
        });
        let addr = notes.seen[ready]
            .1
            .split("serving http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("READY's STATUS= names the address")
            .to_owned();
        let client = awc::Client::default();
        let sensors = async || -> Vec<(String, String)> {
            let mut res = client
                .get(format!("http://{addr}/api/sensors"))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = res.json().limit(1 << 20).await.unwrap();
            body["sensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["name"].as_str().unwrap().to_owned(),
                        s["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let want = [
            ("fine", "running"),
            ("panicking", "failed"),
            ("erroring", "suspended"),
            ("absent", "unavailable"),
            ("held", "paused"),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = sensors().await;
            if want
                .iter()
                .all(|(n, st)| now.iter().any(|(m, s)| m == n && s == st))
            {
                break;
            }
            assert!(Instant::now() < deadline, "states never settled: {now:?}");
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        // A STATUS= line written after the states settled (the second one
        // to arrive, as the first may have been on its way) counts the same
        // states, in the order it lists them.
        let expected = "1/5 sensors running (1 paused, 1 suspended, 1 unavailable, 1 failed)";
        notes.drain();
        for _ in 0..2 {
            notes.wait_for(
                "a STATUS= after the states settled",
                Duration::from_secs(10),
                |m| status_sensors(m).is_some(),
            );
        }
        let at = notes.seen.len() - 1;
        let line = status_sensors(&notes.seen[at].1).unwrap().to_owned();
        assert_eq!(line, expected, "{:?}", notes.seen[at].1);
        assert_eq!(sensors().await.len(), 5);
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(failure) = outcome {
        std::panic::resume_unwind(failure);
    }
}
