//! Pacing against the real actors: the thermal watchdog reading a thermal
//! zone file the test writes, the load monitor on a hand-set load source,
//! and sensor actors following the pace. The first tests run under paused
//! tokio time, so cadence is measured in virtual time, exactly; the last
//! ones drive the whole appliance over HTTP, as an operator would.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use vigil::Bus;
use vigil::CpuTempOptions;
use vigil::IngestQueue;
use vigil::Level;
use vigil::OverflowPolicy;
use vigil::load::{LoadError, LoadSample, LoadSource, LoadSourceFactory, ManualLoad};
use vigil::{
    AdaptiveConfig, PacingConfig, PacingShared, load_monitor_child, thermal_watchdog_child,
};
use vigil::{BuildEnv, DriverConfig, Priority, SensorConfig};
use vigil::{ChildSpec, EventLog, GetTree, RestartPolicy, Stop, Supervisor, install_panic_hook};
use vigil::{GuardConfig, GuardShared};
use vigil::{SensorDeps, SensorShared, SensorStatus, sensor_child};
use vigil::{SimulatedOptions, Waveform};

use crate::util::{TestServer, set_temp};

/// Pacing on the zone under `root` only: no hwmon, no vcgencmd, no load.
fn pacing_config(root: &Path) -> PacingConfig {
    PacingConfig {
        thermal_root: root.display().to_string(),
        use_hwmon: false,
        vcgencmd: String::new(),
        use_load: false,
        watchdog_interval_ms: 1000,
        load_interval_ms: 1000,
        min_dwell_ms: 5000,
        ..PacingConfig::default()
    }
}

fn simulated(name: &str, interval_ms: u64, priority: Priority) -> SensorConfig {
    let options = SimulatedOptions {
        waveform: Waveform::Constant,
        ..SimulatedOptions::default()
    };
    let mut c = SensorConfig::new(name, DriverConfig::Simulated(options));
    c.interval_ms = interval_ms;
    c.priority = priority;
    c
}

fn adaptive(tolerance: f64) -> Option<AdaptiveConfig> {
    Some(AdaptiveConfig {
        tolerance,
        step: 2.0,
        max_factor: 8.0,
        window: 3,
    })
}

/// Real sensor actors, the real thermal watchdog (and load monitor) under a
/// real supervisor, without storage or HTTP. Records when each sensor's
/// readings arrive, in (virtual) time.
struct Rig {
    pacing: Arc<PacingShared>,
    sensors: Vec<Arc<SensorShared>>,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    root: Addr<Supervisor>,
}

impl Rig {
    fn start(
        config: PacingConfig,
        sensors: Vec<SensorConfig>,
        load: Option<LoadSourceFactory>,
    ) -> Rig {
        install_panic_hook();
        let bus = Bus::new();
        let pacing = Arc::new(PacingShared::new(config, bus.clone()));
        let deps = SensorDeps {
            env: Arc::new(BuildEnv::default()),
            queue: Arc::new(IngestQueue::new(100_000, OverflowPolicy::DropOldest, 1000)),
            bus: bus.clone(),
            pace: pacing.subscribe(),
            perf: Arc::new(vigil::Perf::new(100)),
            guard: Arc::new(GuardShared::new(GuardConfig::default(), bus.clone())),
        };
        let sensors: Vec<_> = sensors
            .into_iter()
            .map(|c| Arc::new(SensorShared::new(c)))
            .collect();
        let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let mut readings = bus.subscribe_readings();
        let log = seen.clone();
        actix_rt::spawn(async move {
            loop {
                match readings.recv().await {
                    Ok(r) => log
                        .lock()
                        .unwrap()
                        .push((r.sensor.to_string(), Instant::now())),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                }
            }
        });
        let mut specs: Vec<ChildSpec> = sensors
            .iter()
            .map(|s| sensor_child(s.clone(), deps.clone()))
            .collect();
        specs.push(thermal_watchdog_child(pacing.clone()));
        if let Some(load) = load {
            specs.push(load_monitor_child(pacing.clone(), load));
        }
        let policy = RestartPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_restarts: 10,
            window: Duration::from_secs(60),
            revive: None,
        };
        let root = Supervisor::new(
            "root",
            policy,
            Duration::from_secs(5),
            specs,
            Arc::new(EventLog::new(bus)),
            None,
        )
        .start();
        Rig {
            pacing,
            sensors,
            seen,
            root,
        }
    }

    fn status(&self, name: &str) -> SensorStatus {
        self.sensors
            .iter()
            .find(|s| s.config.name == name)
            .unwrap_or_else(|| panic!("no sensor {name}"))
            .status()
    }

    /// When `name`'s readings arrived, from the last one at or before
    /// `from` on (all of them if `from` is `None`).
    fn reads(&self, name: &str, from: Option<Instant>) -> Vec<Instant> {
        let all: Vec<Instant> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect();
        let first = from.map_or(0, |f| all.iter().rposition(|t| *t <= f).unwrap_or(0));
        all[first..].to_vec()
    }

    /// Gaps (ms) between those readings.
    fn gaps(&self, name: &str, from: Option<Instant>) -> Vec<u64> {
        self.reads(name, from)
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect()
    }

    fn level(&self) -> Level {
        self.pacing.pace().level
    }

    /// Lets virtual time pass until `cond` holds; panics after `limit`.
    async fn until(&self, what: &str, limit: Duration, cond: impl Fn(&Rig) -> bool) -> Instant {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?} of virtual time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    }

    async fn stop(self) {
        let _ = self.root.send(Stop).await;
    }
}

/// Lets `d` of virtual time pass (the actors run meanwhile).
async fn let_pass(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Every gap is `ms`, within a millisecond: timers fire on whole
/// milliseconds, so a deadline can round up by one.
#[track_caller]
fn assert_gaps(gaps: &[u64], ms: u64, what: &str) {
    assert!(gaps.len() >= 2, "{what}: too few readings: {gaps:?}");
    assert!(
        gaps.iter().all(|g| g.abs_diff(ms) <= 1),
        "{what}: expected gaps of {ms} ms, got {gaps:?}"
    );
}

/// The gaps begin with `expected`, each within a millisecond.
#[track_caller]
fn assert_starts_with(gaps: &[u64], expected: &[u64]) {
    assert!(
        gaps.len() >= expected.len() && gaps.iter().zip(expected).all(|(g, e)| g.abs_diff(*e) <= 1),
        "expected gaps starting {expected:?}, got {gaps:?}"
    );
}

#[actix_rt::test]
async fn heat_stretches_cadence_pauses_optional_sensors_and_cooling_restores_it() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    set_temp(dir.path(), 50.0);
    let rig = Rig::start(
        pacing_config(dir.path()),
        vec![
            simulated("ess", 1000, Priority::Essential),
            simulated("opt", 1000, Priority::Optional),
        ],
        None,
    );
    let_pass(Duration::from_secs(10)).await;
    assert_eq!(rig.level(), Level::Normal);
    assert_gaps(&rig.gaps("ess", None), 1000, "ess at normal");
    assert_gaps(&rig.gaps("opt", None), 1000, "opt at normal");

    // Hot: every interval doubles, from the wait already in progress on.
    set_temp(dir.path(), 77.0);
    let hot = rig
        .until("hot", Duration::from_secs(3), |r| r.level() == Level::Hot)
        .await;
    let_pass(Duration::from_secs(12)).await;
    assert_gaps(&rig.gaps("ess", Some(hot)), 2000, "ess when hot");
    assert_gaps(&rig.gaps("opt", Some(hot)), 2000, "opt when hot");
    assert_eq!(rig.status("ess").effective_interval_ms, 2000);

    // Critical: essential sensors ×4, optional ones stop reading.
    set_temp(dir.path(), 85.0);
    let critical = rig
        .until("critical", Duration::from_secs(3), |r| {
            r.level() == Level::Critical
        })
        .await;
    let_pass(Duration::from_secs(20)).await;
    assert_gaps(&rig.gaps("ess", Some(critical)), 4000, "ess when critical");
    let opt_reads = rig.reads("opt", None).len();
    assert_eq!(
        rig.reads("opt", Some(critical)).len(),
        1,
        "opt read after the change to critical"
    );
    let (ess, opt) = (rig.status("ess"), rig.status("opt"));
    assert!(opt.paused && !ess.paused);
    assert_eq!(ess.effective_interval_ms, 4000);

    // ±1 °C of noise around the critical threshold changes nothing.
    for i in 0..20 {
        set_temp(dir.path(), if i % 2 == 0 { 79.0 } else { 81.0 });
        let_pass(Duration::from_millis(1000)).await;
    }
    assert_eq!(rig.level(), Level::Critical);
    assert_eq!(rig.reads("opt", None).len(), opt_reads, "opt stayed paused");

    // Cooling: back to normal once the dwell has passed, not before; the
    // paused sensor resumes on the change itself.
    set_temp(dir.path(), 50.0);
    let cooled = Instant::now();
    let normal = rig
        .until("normal", Duration::from_secs(10), |r| {
            r.level() == Level::Normal
        })
        .await;
    assert!(normal - cooled >= Duration::from_secs(5), "dwell respected");
    let_pass(Duration::from_secs(10)).await;
    let resumed = rig.reads("opt", Some(cooled))[1];
    assert!(
        resumed <= normal && resumed >= cooled + Duration::from_secs(5),
        "opt resumed when the level dropped"
    );
    assert_gaps(&rig.gaps("ess", Some(normal)), 1000, "ess after cooling");
    assert_gaps(&rig.gaps("opt", Some(normal)), 1000, "opt after cooling");
    assert!(!rig.status("opt").paused);
    assert_eq!(rig.status("opt").effective_interval_ms, 1000);

    // Exactly three changes, each with the figure that caused it.
    let changes: Vec<(Level, Level, Option<f64>)> = rig
        .pacing
        .status()
        .changes
        .iter()
        .map(|c| (c.from, c.to, c.why.temperature_c))
        .collect();
    assert_eq!(
        changes,
        [
            (Level::Normal, Level::Hot, Some(77.0)),
            (Level::Hot, Level::Critical, Some(85.0)),
            (Level::Critical, Level::Normal, Some(50.0)),
        ]
    );
    rig.stop().await;
}

#[actix_rt::test]
async fn load_stretches_cadence_but_never_pauses_and_an_absent_source_is_a_state() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    set_temp(dir.path(), 40.0);
    let load = ManualLoad::new(10.0);
    let config = PacingConfig {
        use_load: true,
        ..pacing_config(dir.path())
    };
    let rig = Rig::start(
        config,
        vec![
            simulated("ess", 1000, Priority::Essential),
            simulated("opt", 1000, Priority::Optional),
        ],
        Some(load.factory()),
    );
    let_pass(Duration::from_secs(5)).await;
    assert_eq!(rig.level(), Level::Normal);

    load.set_cpu(90.0);
    let hot = rig
        .until("hot by load", Duration::from_secs(3), |r| {
            r.level() == Level::Hot
        })
        .await;
    load.set_cpu(100.0);
    let_pass(Duration::from_secs(12)).await;
    assert_eq!(rig.level(), Level::Hot, "load alone never reaches critical");
    assert_gaps(&rig.gaps("ess", Some(hot)), 2000, "ess under load");
    assert_gaps(&rig.gaps("opt", Some(hot)), 2000, "opt under load");
    let status = rig.pacing.status();
    assert_eq!(status.why.cpu_percent, Some(90.0));
    assert_eq!(status.load.sample.as_ref().unwrap().cpu_percent, 100.0);

    load.set_cpu(10.0);
    let eased = Instant::now();
    let normal = rig
        .until("normal", Duration::from_secs(10), |r| {
            r.level() == Level::Normal
        })
        .await;
    assert!(normal - eased >= Duration::from_secs(5));
    let_pass(Duration::from_secs(5)).await;
    assert_gaps(&rig.gaps("ess", Some(normal)), 1000, "ess after load");

    load.set(Err(LoadError::Unavailable("no /proc here".into())));
    let_pass(Duration::from_secs(3)).await;
    let status = rig.pacing.status();
    assert!(!status.load.available);
    assert!(
        status
            .load
            .unavailable_reason
            .as_deref()
            .unwrap()
            .contains("no /proc here")
    );
    assert_eq!(rig.level(), Level::Normal);
    assert_eq!(status.changes.len(), 2, "{:?}", status.changes);
    rig.stop().await;
}

#[actix_rt::test]
async fn a_constant_signal_stretches_to_the_maximum_and_composes_with_pacing() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    set_temp(dir.path(), 40.0);
    let mut flat = simulated("flat", 100, Priority::Essential);
    flat.adaptive = adaptive(0.0);
    let rig = Rig::start(pacing_config(dir.path()), vec![flat], None);
    let_pass(Duration::from_secs(6)).await;
    let gaps = rig.gaps("flat", None);
    assert_starts_with(&gaps, &[100, 100, 200, 400, 800]);
    assert_gaps(&gaps[4..], 800, "flat at its maximum");
    let st = rig.status("flat");
    assert_eq!((st.adaptive_factor, st.effective_interval_ms), (8.0, 800));

    // base × adaptive factor × pacing multiplier.
    set_temp(dir.path(), 77.0);
    let hot = rig
        .until("hot", Duration::from_secs(3), |r| r.level() == Level::Hot)
        .await;
    let_pass(Duration::from_secs(8)).await;
    assert_gaps(&rig.gaps("flat", Some(hot)), 1600, "flat when hot");
    assert_eq!(rig.status("flat").effective_interval_ms, 1600);
    rig.stop().await;
}

#[actix_rt::test]
async fn a_step_change_snaps_the_interval_back_at_once() {
    tokio::time::pause();
    let pacing_dir = tempfile::tempdir().unwrap();
    set_temp(pacing_dir.path(), 40.0);
    // A cpu_temp sensor reading its own zone file: a signal the test sets.
    let signal = tempfile::tempdir().unwrap();
    set_temp(signal.path(), 20.0);
    let options = CpuTempOptions {
        thermal_root: signal.path().display().to_string(),
        zone_type: String::new(),
        use_hwmon: false,
    };
    let mut probe = SensorConfig::new("probe", DriverConfig::CpuTemp(options));
    probe.interval_ms = 100;
    probe.adaptive = adaptive(0.5);
    let rig = Rig::start(pacing_config(pacing_dir.path()), vec![probe], None);
    let_pass(Duration::from_secs(5)).await;
    assert_eq!(rig.status("probe").adaptive_factor, 8.0);

    set_temp(signal.path(), 20.3);
    let_pass(Duration::from_secs(2)).await;
    assert_eq!(rig.status("probe").adaptive_factor, 8.0, "within tolerance");

    set_temp(signal.path(), 25.0);
    let changed = Instant::now();
    let_pass(Duration::from_secs(3)).await;
    let reads = rig.reads("probe", Some(changed));
    let gaps: Vec<u64> = reads[1..]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    // The first read to see 25 °C snaps back to the base interval, then
    // the interval stretches again as the new value holds.
    assert_starts_with(&gaps, &[100, 100, 200, 400]);
    assert!(reads[1] - changed <= Duration::from_millis(800));
    rig.stop().await;
}

/// A load source whose first instance panics at its first sample; later
/// instances report a busy CPU.
struct FirstInstancePanics {
    instance: u32,
}

impl LoadSource for FirstInstancePanics {
    fn sample(&mut self) -> Result<LoadSample, LoadError> {
        if self.instance == 1 {
            panic!("load source on fire");
        }
        Ok(LoadSample {
            cpu_percent: 90.0,
            cores: 1,
            ..LoadSample::default()
        })
    }
}

#[actix_rt::test]
async fn a_panicking_load_source_is_restarted_by_the_supervisor() {
    tokio::time::pause();
    let dir = tempfile::tempdir().unwrap();
    set_temp(dir.path(), 40.0);
    let made = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = made.clone();
    let factory: LoadSourceFactory = Arc::new(move || {
        let instance = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Box::new(FirstInstancePanics { instance }) as Box<dyn LoadSource>
    });
    let config = PacingConfig {
        use_load: true,
        ..pacing_config(dir.path())
    };
    let rig = Rig::start(
        config,
        vec![simulated("ess", 1000, Priority::Essential)],
        Some(factory),
    );
    rig.until("hot from the second source", Duration::from_secs(10), |r| {
        r.level() == Level::Hot
    })
    .await;
    let tree = rig.root.send(GetTree).await.unwrap();
    let node = tree.find("load_monitor").unwrap();
    assert_eq!(node.restarts, 1, "{node:?}");
    let error = node.last_error.as_deref().unwrap();
    assert!(error.contains("load source on fire"), "{error}");
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The thermal watchdog and the sensor were not disturbed.
    assert_eq!(tree.find("thermal_watchdog").unwrap().restarts, 0);
    assert_eq!(tree.find("ess").unwrap().restarts, 0);
    assert!(rig.status("ess").reads >= 2);
    rig.stop().await;
}

/// A stand-in for the Pi firmware's `vcgencmd`, reporting under-voltage and
/// throttling now and since boot.
fn fake_vcgencmd(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("vcgencmd");
    std::fs::write(
        &path,
        "#!/bin/sh\ncase \"$1\" in\n  get_throttled) echo throttled=0x50005 ;;\n  measure_temp) echo \"temp=40.0'C\" ;;\n  *) exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn cadence<'a>(pacing: &'a Value, name: &str) -> &'a Value {
    pacing["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {pacing}"))
}

#[actix_rt::test]
async fn writing_heat_into_the_thermal_file_of_a_running_appliance_paces_it_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let thermal = dir.path().join("thermal");
    set_temp(&thermal, 50.0);
    let vcgencmd = fake_vcgencmd(dir.path());
    let mut cfg = crate::util::config(
        &dir,
        r#"
[[sensors]]
name = "steady"
kind = "simulated"
interval_ms = 100
[sensors.options]
waveform = "constant"

[[sensors]]
name = "extra"
kind = "simulated"
interval_ms = 100
priority = "optional"
"#,
    );
    cfg.pacing.thermal_root = thermal.display().to_string();
    cfg.pacing.vcgencmd = vcgencmd;
    cfg.pacing.watchdog_interval_ms = 50;
    cfg.pacing.min_dwell_ms = 500;
    let s = TestServer::start_with(dir, cfg).await;

    s.wait_for(
        "the watchdog's first reading",
        Duration::from_secs(10),
        async |s| {
            let p = s.get_ok("/api/pacing").await;
            p["thermal"]["temperature_c"] == 50.0 && p["thermal"]["throttled_available"] == true
        },
    )
    .await;
    let p = s.get_ok("/api/pacing").await;
    assert_eq!(p["enabled"], true);
    assert_eq!(p["level"], "normal");
    assert_eq!(p["multiplier"], 1.0);
    assert!(
        p["thermal"]["source"]
            .as_str()
            .unwrap()
            .contains("cpu-thermal")
    );
    assert_eq!(p["thermal"]["throttled_raw"], "0x50005");
    let flags = &p["thermal"]["throttled"];
    assert_eq!(flags["under_voltage"], true, "{p}");
    assert_eq!(flags["throttled_since_boot"], true, "{p}");
    assert_eq!(flags["soft_temp_limit"], false, "{p}");
    assert_eq!(p["load"]["enabled"], false);
    assert_eq!(cadence(&p, "steady")["effective_interval_ms"], 100);

    // Heat: every interval ×4, the optional sensor paused.
    set_temp(&thermal, 85.0);
    s.wait_for(
        "critical, seen by the sensors",
        Duration::from_secs(10),
        async |s| {
            let p = s.get_ok("/api/pacing").await;
            p["level"] == "critical"
                && cadence(&p, "steady")["effective_interval_ms"] == 400
                && p["paused_sensors"] == serde_json::json!(["extra"])
        },
    )
    .await;
    let p = s.get_ok("/api/pacing").await;
    assert_eq!(p["multiplier"], 4.0);
    assert_eq!(p["optional_paused"], true);
    assert_eq!(p["why"]["cause"], "temperature");
    assert_eq!(p["why"]["temperature_c"], 85.0);
    let extra = s.sensor("extra").await;
    assert_eq!(extra["status"], "paused", "{extra}");
    assert_eq!(extra["paused"], true);
    assert_eq!(s.sensor("steady").await["effective_interval_ms"], 400);
    let paused_reads = extra["reads"].as_u64().unwrap();
    let steady_reads = s.sensor("steady").await["reads"].as_u64().unwrap();
    s.wait_for(
        "the steady sensor to read on",
        Duration::from_secs(20),
        async |s| s.sensor("steady").await["reads"].as_u64().unwrap() >= steady_reads + 3,
    )
    .await;
    assert_eq!(
        s.sensor("extra").await["reads"].as_u64().unwrap(),
        paused_reads,
        "a paused sensor does not read"
    );
    // Pacing at critical is a built-in alert.
    s.wait_for("the pacing alert", Duration::from_secs(10), async |s| {
        let a = s.get_ok("/api/alerts?state=firing").await;
        a["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "pacing_critical")
    })
    .await;

    // Cooling restores normal cadence, and the paused sensor reads again.
    set_temp(&thermal, 50.0);
    s.wait_for("normal again", Duration::from_secs(10), async |s| {
        let p = s.get_ok("/api/pacing").await;
        p["level"] == "normal"
            && cadence(&p, "steady")["effective_interval_ms"] == 100
            && cadence(&p, "extra")["effective_interval_ms"] == 100
            && p["paused_sensors"] == serde_json::json!([])
    })
    .await;
    s.wait_for(
        "the optional sensor to resume",
        Duration::from_secs(10),
        async |s| s.sensor("extra").await["reads"].as_u64().unwrap() > paused_reads,
    )
    .await;
    assert_eq!(s.sensor("extra").await["status"], "running");
    s.wait_for(
        "the pacing alert to resolve",
        Duration::from_secs(10),
        async |s| {
            let a = s.get_ok("/api/alerts?state=resolved").await;
            a["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["rule"] == "pacing_critical")
        },
    )
    .await;
    let p = s.get_ok("/api/pacing").await;
    let changes: Vec<(String, String)> = p["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["from"].to_string(), c["to"].to_string()))
        .collect();
    assert_eq!(
        changes,
        [
            ("\"normal\"".into(), "\"critical\"".into()),
            ("\"critical\"".into(), "\"normal\"".into())
        ],
        "no flapping"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn the_load_monitor_reports_this_host_and_the_api_refuses_other_methods() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::util::config(&dir, "");
    cfg.pacing.use_load = true;
    cfg.pacing.load_interval_ms = 200;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("a load sample", Duration::from_secs(10), async |s| {
        s.get_ok("/api/pacing").await["load"]["available"] == true
    })
    .await;
    let p = s.get_ok("/api/pacing").await;
    let load = &p["load"];
    let cpu = load["cpu_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{load}");
    assert!(load["cores"].as_u64().unwrap() >= 1, "{load}");
    assert!(load["process_rss_bytes"].as_u64().unwrap() > 0, "{load}");
    assert!(load["memory_available_bytes"].as_u64().is_some(), "{load}");
    // No thermal source in the test configuration: a state, with reasons.
    assert_eq!(p["thermal"]["available"], false);
    let why = p["thermal"]["unavailable_reason"].as_str().unwrap();
    assert!(why.contains("no thermal zone"), "{why}");
    let tree = s.get_ok("/api/supervisor").await;
    for child in ["thermal_watchdog", "load_monitor"] {
        let node = tree["tree"]["children"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == child)
            .unwrap_or_else(|| panic!("no {child} in {tree}"));
        assert_eq!(node["state"], "running", "{node}");
        assert_eq!(node["kind"], "pacing");
    }

    let res = awc::Client::new()
        .post(s.url("/api/pacing"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    s.stop().await;
}

#[actix_rt::test]
async fn with_pacing_disabled_nothing_watches_and_nothing_stretches() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::util::config(
        &dir,
        "[[sensors]]\nname = \"s\"\nkind = \"simulated\"\ninterval_ms = 50\n",
    );
    cfg.pacing.enabled = false;
    let s = TestServer::start_with(dir, cfg).await;
    let p = s.get_ok("/api/pacing").await;
    assert_eq!(p["enabled"], false);
    assert_eq!(p["level"], "normal");
    assert_eq!(p["thermal"]["unavailable_reason"], "pacing is disabled");
    assert_eq!(cadence(&p, "s")["effective_interval_ms"], 50);
    let tree = s.get_ok("/api/supervisor").await;
    assert!(!tree.to_string().contains("thermal_watchdog"), "{tree}");
    s.stop().await;
}
