//! One state, everywhere, and giving up then coming back: an always-failing
//! sensor is given up although its breaker spaces the failures beyond the
//! restart window, a recovering one is revived with its counters, and the
//! tree, `/api/sensors` and `/metrics` name the same state for every kind
//! of fault.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::{TestServer, config};

/// Writes a `cpu-thermal` zone under `root` whose temp file holds `text`.
fn zone(root: &Path, text: &str) {
    let dir = root.join("thermal_zone0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("type"), "cpu-thermal\n").unwrap();
    let tmp = dir.join("temp.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("temp")).unwrap();
}

async fn tree_state(s: &TestServer, name: &str) -> Option<Value> {
    let sup = s.get_ok("/api/supervisor").await;
    let sensors = sup["tree"]["children"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "sensors")?
        .clone();
    sensors["children"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// The state `/metrics` gives `sensor` (the `vigil_sensor_state` sample at 1).
async fn metrics_state(s: &TestServer, sensor: &str) -> Option<String> {
    let mut res = s.client().get(s.url("/metrics")).send().await.unwrap();
    let text = String::from_utf8(res.body().limit(8 << 20).await.unwrap().to_vec()).unwrap();
    let prefix = format!("vigil_sensor_state{{sensor=\"{sensor}\",state=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find(|rest| rest.ends_with("\"} 1"))
        .map(|rest| rest.trim_end_matches("\"} 1").to_owned())
}

#[actix_rt::test]
async fn an_always_failing_sensor_is_given_up_and_a_recovering_one_is_revived() {
    let dir = tempfile::tempdir().unwrap();
    let thermal = dir.path().join("thermal");
    zone(&thermal, "not a number\n");
    let mut cfg = config(
        &dir,
        &format!(
            r#"
[[sensors]]
name = "broken"
kind = "simulated"
interval_ms = 20
[sensors.options]
error_rate = 1.0

[[sensors]]
name = "mending"
kind = "cpu_temp"
interval_ms = 20
[sensors.options]
thermal_root = "{}"
use_hwmon = false
"#,
            thermal.display()
        ),
    );
    // The restart intensity is out of reach: only the unhealthy spell,
    // which the breaker's growing waits stretch past the window, gives up.
    cfg.supervisor.backoff_base_ms = 10;
    cfg.supervisor.backoff_max_ms = 50;
    cfg.supervisor.max_restarts = 1000;
    cfg.supervisor.restart_window_secs = 1;
    cfg.supervisor.revive_interval_ms = 500;
    cfg.guard.sensors.open_wait_ms = 100;
    cfg.guard.sensors.open_wait_max_ms = 400;
    let s = TestServer::start_with(dir, cfg).await;

    for name in ["broken", "mending"] {
        s.wait_for(
            "the sensor to be given up",
            Duration::from_secs(30),
            async |s| s.sensor(name).await["status"] == "failed",
        )
        .await;
        let node = tree_state(&s, name).await.unwrap();
        assert_eq!(node["state"], "failed", "{node}");
        assert!(node["next_revive_at"].is_string(), "{node}");
    }
    let sup = s.get_ok("/api/supervisor").await;
    let gave_up: Vec<&Value> = sup["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "gave_up" && e["child"] == "broken")
        .collect();
    assert!(!gave_up.is_empty(), "{sup}");
    assert!(
        gave_up[0]["detail"]
            .as_str()
            .unwrap()
            .contains("without a healthy run"),
        "{}",
        gave_up[0]
    );
    assert_eq!(sup["policy"]["revive"], true);
    let broken = s.sensor("broken").await;
    assert!(broken["next_revive_at"].is_string(), "{broken}");
    assert_eq!(metrics_state(&s, "broken").await.as_deref(), Some("failed"));
    let errors_before = s.sensor("mending").await["errors"].as_u64().unwrap();

    // The zone mends: the next revive attempt reads and brings it back.
    zone(&thermal, "45000\n");
    s.wait_for(
        "the sensor to be revived",
        Duration::from_secs(30),
        async |s| {
            let m = s.sensor("mending").await;
            m["status"] == "running" && m["reads"].as_u64() >= Some(1)
        },
    )
    .await;
    let m = s.sensor("mending").await;
    assert!(
        m["errors"].as_u64().unwrap() >= errors_before,
        "counters kept: {m}"
    );
    assert!(m["restarts"].as_u64().unwrap() >= 1, "{m}");
    assert!(m["next_revive_at"].is_null(), "{m}");
    assert_eq!(tree_state(&s, "mending").await.unwrap()["state"], "running");
    let sup = s.get_ok("/api/supervisor").await;
    assert!(
        sup["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "revived" && e["child"] == "mending"),
        "{sup}"
    );
    // The always-failing one fails its attempts and stays failed.
    s.wait_for(
        "a failed revive attempt",
        Duration::from_secs(30),
        async |s| {
            let sup = s.get_ok("/api/supervisor").await;
            sup["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["event"] == "revive_attempt" && e["child"] == "broken")
        },
    )
    .await;
    s.wait_for(
        "broken to be failed again",
        Duration::from_secs(30),
        async |s| s.sensor("broken").await["status"] == "failed",
    )
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn tree_api_and_metrics_agree_on_state_for_every_fault_kind() {
    let dir = tempfile::tempdir().unwrap();
    let thermal = dir.path().join("pacing");
    zone(&thermal, "90000\n");
    let mut cfg = config(
        &dir,
        r#"
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
name = "hanging"
kind = "simulated"
interval_ms = 20
timeout_ms = 100
[sensors.options]
hang_every = 1
hang_ms = 200

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
name = "off"
kind = "simulated"
enabled = false

[[sensors]]
name = "held"
kind = "simulated"
interval_ms = 20
priority = "optional"
"#,
    );
    cfg.supervisor.backoff_base_ms = 10;
    cfg.supervisor.backoff_max_ms = 50;
    cfg.supervisor.max_restarts = 2;
    cfg.pacing.thermal_root = thermal.display().to_string();
    cfg.pacing.watchdog_interval_ms = 50;
    cfg.guard.sensors.open_wait_ms = 60_000;
    let s = TestServer::start_with(dir, cfg).await;
    let expected = [
        ("fine", "running"),
        ("panicking", "failed"),
        ("hanging", "failed"),
        ("erroring", "suspended"),
        ("absent", "unavailable"),
        ("off", "disabled"),
        ("held", "paused"),
    ];
    for (name, want) in expected {
        s.wait_for(
            &format!("{name} to be {want}"),
            Duration::from_secs(30),
            async |s| s.sensor(name).await["status"] == want,
        )
        .await;
    }
    for (name, want) in expected {
        assert_eq!(
            s.sensor(name).await["status"],
            want,
            "{name} in /api/sensors"
        );
        assert_eq!(
            metrics_state(&s, name).await.as_deref(),
            Some(want),
            "{name} in /metrics"
        );
        // Every configured sensor is a node, a disabled one in state
        // `disabled` (never started).
        let node = tree_state(&s, name)
            .await
            .unwrap_or_else(|| panic!("{name} missing from the tree"));
        assert_eq!(node["state"], want, "{name} in the tree: {node}");
    }
    s.stop().await;
}

/// At the default settings, in paused time: a sensor whose every read fails
/// (transient errors, everything else default) is `failed` within two
/// minutes, its revive attempts fail and it stays failed; a sensor whose
/// source mends is revived at its next attempt.
#[actix_rt::test]
async fn at_the_defaults_an_always_failing_sensor_is_failed_within_two_minutes() {
    use std::sync::Arc;

    use actix::Actor;
    use tokio::time::Instant;
    use vigil::{
        BuildEnv, Bus, EventLog, GetTree, GuardShared, IngestQueue, OverflowPolicy, PacingShared,
        RestartPolicy, SensorDeps, SensorShared, Supervisor, install_panic_hook, sensor_child,
    };

    install_panic_hook();
    let dir = tempfile::tempdir().unwrap();
    let thermal = dir.path().join("thermal");
    zone(&thermal, "not a number\n");
    let cfg = vigil::Config::from_toml(
        &format!(
            r#"
[pacing]
enabled = false

[[sensors]]
name = "broken"
kind = "simulated"
[sensors.options]
error_rate = 1.0

[[sensors]]
name = "mending"
kind = "cpu_temp"
[sensors.options]
thermal_root = "{}"
use_hwmon = false
"#,
            thermal.display()
        ),
        "test",
    )
    .unwrap();
    assert_eq!(cfg.sensors[0].interval_ms, 5000, "the default interval");
    tokio::time::pause();
    let bus = Bus::new();
    let deps = SensorDeps {
        env: Arc::new(BuildEnv::default()),
        queue: Arc::new(IngestQueue::new(100_000, OverflowPolicy::DropOldest, 1000)),
        bus: bus.clone(),
        pace: Arc::new(PacingShared::new(cfg.pacing.clone(), bus.clone())).subscribe(),
        perf: Arc::new(vigil::Perf::new(100)),
        guard: Arc::new(GuardShared::new(cfg.guard.clone(), bus.clone())),
    };
    let shared: Vec<Arc<SensorShared>> = cfg
        .sensors
        .iter()
        .map(|c| Arc::new(SensorShared::new(c.clone())))
        .collect();
    let specs = shared
        .iter()
        .map(|s| sensor_child(s.clone(), deps.clone()))
        .collect();
    let policy = RestartPolicy {
        revive: cfg.supervisor.revive_after(),
        ..RestartPolicy::from_config(&cfg.supervisor)
    };
    let sup = Supervisor::new(
        "sensors",
        policy,
        Duration::from_secs(5),
        specs,
        Arc::new(EventLog::new(bus)),
        None,
    )
    .start();
    let node = async |name: &str| -> Value {
        let tree = sup.send(GetTree).await.unwrap();
        serde_json::to_value(tree.find(name).unwrap()).unwrap()
    };
    let t0 = Instant::now();
    let until = async |what: &str, limit: Duration, name: &str, pred: &dyn Fn(&Value) -> bool| {
        let start = Instant::now();
        loop {
            let n = node(name).await;
            if pred(&n) {
                return Instant::now();
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}: {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let failed = |n: &Value| n["state"] == "failed" && n["reviving"] == false;
    let at = until("broken failed", Duration::from_secs(600), "broken", &failed).await;
    assert!(
        at - t0 <= Duration::from_secs(120),
        "given up after {:?} of virtual time",
        at - t0
    );
    let at = until(
        "mending failed",
        Duration::from_secs(600),
        "mending",
        &failed,
    )
    .await;
    assert!(at - t0 <= Duration::from_secs(120), "{:?}", at - t0);
    let n = node("mending").await;
    assert!(n["next_revive_in_ms"].as_u64().unwrap() <= 300_000, "{n}");
    let restarts = n["restarts"].as_u64().unwrap();

    // The zone mends; the attempt five minutes on brings it back.
    zone(&thermal, "45000\n");
    let back = until(
        "mending revived",
        Duration::from_secs(900),
        "mending",
        &|n| n["state"] == "running",
    )
    .await;
    assert!(back - at >= Duration::from_secs(299), "{:?}", back - at);
    let status = shared[1].status();
    assert!(status.reads >= 1 && status.errors >= 1, "{status:?}");
    assert!(node("mending").await["restarts"].as_u64().unwrap() > restarts);
    // The other one tried again too, and is failed again, not running.
    until(
        "broken's attempt",
        Duration::from_secs(900),
        "broken",
        &|n| n["restarts"].as_u64() > Some(0) && n["next_revive_in_ms"].as_u64().is_some(),
    )
    .await;
    assert_eq!(node("broken").await["state"], "failed");
    sup.send(vigil::Stop).await.unwrap();
}
