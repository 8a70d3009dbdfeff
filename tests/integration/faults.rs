//! Fault injection with simulated sensors: panicking, hanging, failing and
//! unavailable drivers are each contained to their own sensor, while a
//! healthy sensor beside them keeps its cadence.

use std::time::Duration;

use serde_json::Value;

use crate::util::{TestServer, open_db};

/// A healthy sensor polled every 50 ms, next to the faulty one.
const STEADY: &str = r#"
[[sensors]]
name = "steady"
kind = "simulated"
interval_ms = 50
[sensors.options]
waveform = "constant"
"#;

/// The largest gap between consecutive stored readings of `steady`, in ms.
fn steady_max_gap(db: &std::path::Path) -> (usize, i64) {
    let ts = open_db(db).timestamps("steady", "value");
    let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    (ts.len(), gap)
}

/// The node called `name` anywhere in a supervision tree.
fn find_node(node: &Value, name: &str) -> Option<Value> {
    if node["name"] == name {
        return Some(node.clone());
    }
    node["children"]
        .as_array()?
        .iter()
        .find_map(|c| find_node(c, name))
}

fn events(sup: &Value, child: &str, kind: &str) -> Vec<Value> {
    sup["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["child"] == child && e["event"] == kind)
        .cloned()
        .collect()
}

#[actix_rt::test]
async fn a_sensor_that_panics_every_third_read_keeps_producing_and_shows_restarts() {
    let s = TestServer::start(&format!(
        r#"{STEADY}
[[sensors]]
name = "panicky"
kind = "simulated"
interval_ms = 20
priority = "optional"
[sensors.options]
panic_every = 3
"#
    ))
    .await;
    s.wait_for("four restarts", Duration::from_secs(30), async |s| {
        s.sensor("panicky").await["restarts"].as_u64() >= Some(4)
    })
    .await;
    let p = s.sensor("panicky").await;
    assert!(p["reads"].as_u64().unwrap() >= 8, "{p}");
    assert!(
        p["last_error"]
            .as_str()
            .unwrap()
            .contains("simulated panic"),
        "{p}"
    );

    // The supervisor shows the restarts and their growing delays.
    let sup = s.get_ok("/api/supervisor").await;
    let node = find_node(&sup["tree"], "panicky").expect("panicky in the tree");
    assert!(node["restarts"].as_u64().unwrap() >= 4, "{node}");
    let delays: Vec<u64> = events(&sup, "panicky", "restart_scheduled")
        .iter()
        .map(|e| {
            let d = e["detail"].as_str().unwrap();
            d.trim_start_matches("in ")
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(delays.len() >= 4, "{delays:?}");
    // Each delay is jittered within [backoff / 2, backoff], and the backoff
    // doubles up to its cap: delays never shrink until the cap is reached,
    // after which two capped delays may come in either order.
    let base = sup["policy"]["backoff_base_ms"].as_u64().unwrap();
    let max = sup["policy"]["backoff_max_ms"].as_u64().unwrap();
    let below_cap = (0..)
        .take_while(|k| base << k < max)
        .count()
        .min(delays.len() - 1);
    assert!(
        delays[..=below_cap].windows(2).all(|w| w[0] <= w[1]),
        "delays never shrink before the cap: {delays:?}"
    );
    assert!(
        delays.iter().all(|d| *d <= max),
        "no delay beyond the cap: {delays:?}"
    );
    assert!(delays.last() > delays.first(), "delays grow: {delays:?}");
    assert_eq!(s.sensor("steady").await["restarts"], 0);

    let (report, _dir, db) = s.stop().await;
    let panicky_rows = open_db(&db).readings_of("panicky");
    assert!(
        panicky_rows >= 8,
        "readings keep coming between panics: {panicky_rows}"
    );
    let (n, gap) = steady_max_gap(&db);
    assert!(n > 20, "{n}");
    assert!(gap < 5000, "the healthy sensor stalled for {gap} ms");
    assert_eq!(report.queue.dropped, 0);
}

#[actix_rt::test]
async fn a_hanging_sensor_is_timed_out_and_restarted_without_stalling_others() {
    let s = TestServer::start(&format!(
        r#"{STEADY}
[[sensors]]
name = "stuck"
kind = "simulated"
interval_ms = 50
timeout_ms = 200
[sensors.options]
hang_every = 2
hang_ms = 6000
"#
    ))
    .await;
    s.wait_for(
        "two restarts of the hung sensor",
        Duration::from_secs(30),
        async |s| s.sensor("stuck").await["restarts"].as_u64() >= Some(2),
    )
    .await;
    let stuck = s.sensor("stuck").await;
    assert!(
        stuck["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out after 200 ms"),
        "{stuck}"
    );
    let (_, _dir, db) = s.stop().await;
    assert!(
        open_db(&db).readings_of("stuck") >= 2,
        "reads between hangs are stored"
    );
    let (n, gap) = steady_max_gap(&db);
    assert!(n > 10, "{n}");
    assert!(
        gap < 4000,
        "the healthy sensor stalled for {gap} ms while another hung"
    );
}

#[actix_rt::test]
async fn a_sensor_that_always_fails_is_given_up_after_the_intensity_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::util::config(
        &dir,
        &format!(
            r#"{STEADY}
[[sensors]]
name = "broken"
kind = "simulated"
interval_ms = 20
priority = "optional"
[sensors.options]
error_rate = 1.0
error_kind = "permanent"
"#
        ),
    );
    cfg.supervisor.max_restarts = 3;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "the sensor to be given up",
        Duration::from_secs(30),
        async |s| s.sensor("broken").await["status"] == "failed",
    )
    .await;
    let broken = s.sensor("broken").await;
    assert_eq!(broken["restarts"], 3, "{broken}");
    assert!(
        broken["last_error"]
            .as_str()
            .unwrap()
            .contains("simulated error")
    );
    let sup = s.get_ok("/api/supervisor").await;
    assert_eq!(events(&sup, "broken", "gave_up").len(), 1, "{sup}");

    // Stays down: no restart later.
    let before = s.sensor("broken").await["reads"].clone();
    let steady_before = s.sensor("steady").await["reads"].as_u64().unwrap();
    s.wait_for(
        "the steady sensor to read on",
        Duration::from_secs(10),
        async |s| s.sensor("steady").await["reads"].as_u64().unwrap() > steady_before + 10,
    )
    .await;
    let after = s.sensor("broken").await;
    assert_eq!(after["status"], "failed");
    assert_eq!(after["reads"], before);
    assert_eq!(after["restarts"], 3);

    // An optional sensor given up is a warning, not a failed readiness.
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(
        health["warnings"].to_string().contains("broken"),
        "{health}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn a_given_up_essential_sensor_makes_health_a_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::util::config(
        &dir,
        r#"
[[sensors]]
name = "vital"
kind = "simulated"
interval_ms = 20
priority = "essential"
[sensors.options]
panic_every = 1
"#,
    );
    cfg.supervisor.max_restarts = 1;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "the sensor to be given up",
        Duration::from_secs(20),
        async |s| s.sensor("vital").await["status"] == "failed",
    )
    .await;
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "degraded");
    assert!(
        health["reasons"][0].as_str().unwrap().contains("vital"),
        "{health}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn transient_errors_are_retried_and_too_many_in_a_row_restart_the_sensor() {
    let s = TestServer::start(
        r#"
[[sensors]]
name = "flaky"
kind = "simulated"
interval_ms = 20
max_consecutive_errors = 3
[sensors.options]
error_rate = 0.5
seed = 42
"#,
    )
    .await;
    s.wait_for(
        "errors, reads and a restart",
        Duration::from_secs(30),
        async |s| {
            let f = s.sensor("flaky").await;
            f["errors"].as_u64() > Some(5)
                && f["reads"].as_u64() > Some(5)
                && f["restarts"].as_u64() >= Some(1)
        },
    )
    .await;
    let sup = s.get_ok("/api/supervisor").await;
    let failed = events(&sup, "flaky", "failed");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("3 errors in a row"),
        "{failed:?}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn an_unavailable_source_is_a_state_not_a_restart_loop() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-thermal");
    let cfg = crate::util::config(
        &dir,
        &format!(
            r#"
[[sensors]]
name = "temp"
kind = "cpu_temp"
interval_ms = 20
unavailable_retry_ms = 100
[sensors.options]
thermal_root = "{}"
use_hwmon = false
"#,
            missing.display()
        ),
    );
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "the sensor to be unavailable",
        Duration::from_secs(10),
        async |s| s.sensor("temp").await["status"] == "unavailable",
    )
    .await;
    let t = s.sensor("temp").await;
    assert!(
        t["unavailable_reason"]
            .as_str()
            .unwrap()
            .contains("no-thermal"),
        "{t}"
    );
    assert_eq!(t["restarts"], 0);

    // The zone appears (a module loaded late): the sensor picks it up.
    let zone = missing.join("thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("type"), "cpu-thermal\n").unwrap();
    std::fs::write(zone.join("temp"), "47500\n").unwrap();
    s.wait_for(
        "the sensor to read the new zone",
        Duration::from_secs(10),
        async |s| s.sensor("temp").await["status"] == "running",
    )
    .await;
    let t = s.sensor("temp").await;
    assert_eq!(t["last_values"][0]["value"], 47.5);
    assert_eq!(t["restarts"], 0);
    let (status, _) = s.get("/health").await;
    assert_eq!(status, 200);
    s.stop().await;
}
