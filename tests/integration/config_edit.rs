//! Configuration from the API: sensors and alert rules added, changed,
//! disabled and removed through `/api/admin/config/*`, validated with the
//! file's rules, written back to the file with its comments (atomically),
//! and applied live with only the changed sensor's actor restarted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{BASE, TestServer};

const WAIT: Duration = Duration::from_secs(20);

/// A config file in `dir`: the test base, a commented sensor `steady`.
fn config_file(dir: &Path) -> PathBuf {
    let text = BASE.replace(
        "[storage]\n",
        &format!("[storage]\npath = \"{}\"\n", dir.join("vigil.db").display()),
    ) + r#"
# steady: read every 100 ms, and never touched by the edits below.
[[sensors]]
name = "steady"
kind = "simulated"
interval_ms = 100 # fast on purpose
[sensors.options]
waveform = "constant"
offset = 1.0
"#;
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start_from_file() -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path());
    let cfg = vigil::Config::load(Some(&path)).unwrap();
    (TestServer::start_with(dir, cfg).await, path)
}

/// The node of sensor `name` in the supervision tree.
async fn node(s: &TestServer, name: &str) -> Option<Value> {
    let sup = s.get_ok("/api/supervisor").await;
    sup["tree"]["children"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "sensors")?["children"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

fn sim(name: &str, interval_ms: u64) -> Value {
    json!({
        "name": name, "kind": "simulated", "interval_ms": interval_ms,
        "priority": "optional",
        "options": {"waveform": "constant", "offset": 5.0, "metric": "level", "unit": "cm"}
    })
}

#[actix_rt::test]
async fn an_added_sensor_reads_at_once_and_the_others_keep_running() {
    let (s, path) = start_from_file().await;
    s.wait_for("steady to read", WAIT, async |s| {
        s.sensor("steady").await["reads"].as_u64() > Some(2)
    })
    .await;
    let before = node(&s, "steady").await.unwrap();

    let (status, report) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 100))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["sensors_added"], json!(["tank"]), "{report}");
    assert_eq!(report["applied"], json!(["sensors"]), "{report}");
    assert_eq!(report["needs_restart"], json!([]), "{report}");
    assert_eq!(report["created"], false);
    s.wait_for("tank to read", WAIT, async |s| {
        s.get_ok("/api/readings?sensor=tank").await["readings"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
    assert_eq!(s.sensor("tank").await["status"], "running");

    // The file has the new entry and still every comment it had.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# steady: read every 100 ms"), "{text}");
    assert!(
        text.contains("interval_ms = 100 # fast on purpose"),
        "{text}"
    );
    assert!(text.contains("# Tests poll every 20 ms"), "{text}");
    assert!(text.contains("name = \"tank\""), "{text}");
    let from_file = vigil::Config::load(Some(&path)).unwrap();
    assert_eq!(from_file.sensors.len(), 2);

    // Changing and disabling `tank` restarts or stops only `tank`.
    let (status, report) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 200))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["sensors_changed"], json!(["tank"]), "{report}");
    s.wait_for("tank's new interval", WAIT, async |s| {
        s.sensor("tank").await["interval_ms"] == 200
    })
    .await;
    let mut off = sim("tank", 200);
    off["enabled"] = json!(false);
    let (status, report) = s.post_json("/api/admin/config/sensors", &off).await;
    assert_eq!(status, 200, "{report}");
    s.wait_for("tank's node to be disabled", WAIT, async |s| {
        node(s, "tank")
            .await
            .is_some_and(|n| n["state"] == "disabled")
    })
    .await;
    assert_eq!(s.sensor("tank").await["status"], "disabled");
    let metrics = crate::util::http_get_fresh(s.addr, "/metrics").await;
    assert!(
        metrics.contains(r#"vigil_sensor_state{sensor="tank",state="disabled"} 1"#),
        "{metrics}"
    );
    let (status, report) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 200))
        .await;
    assert_eq!(status, 200, "{report}");
    s.wait_for("tank to run again", WAIT, async |s| {
        node(s, "tank")
            .await
            .is_some_and(|n| n["state"] == "running")
    })
    .await;

    // A dry run of the removal names it and removes nothing.
    let (status, report) = s
        .post("/api/admin/config/sensors/tank/remove?dry_run=true", None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["sensors_removed"], json!(["tank"]), "{report}");
    assert!(node(&s, "tank").await.is_some());

    // Removed: gone from the tree, the views and the file.
    let (status, report) = s.post("/api/admin/config/sensors/tank/remove", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["sensors_removed"], json!(["tank"]), "{report}");
    s.wait_for("tank to leave the tree", WAIT, async |s| {
        node(s, "tank").await.is_none()
    })
    .await;
    let sensors = s.get_ok("/api/sensors").await;
    assert_eq!(sensors["sensors"].as_array().unwrap().len(), 1, "{sensors}");
    let guards = s.get_ok("/api/guards").await;
    let breakers: Vec<_> = guards["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !breakers.contains(&"sensor:tank".to_owned()),
        "{breakers:?}"
    );
    assert!(
        breakers.contains(&"sensor:steady".to_owned()),
        "{breakers:?}"
    );
    assert!(!std::fs::read_to_string(&path).unwrap().contains("\"tank\""));
    let (status, _) = s.post("/api/admin/config/sensors/tank/remove", None).await;
    assert_eq!(status, 404);

    // Through all of it, steady ran on as the same instance, reading.
    let after = node(&s, "steady").await.unwrap();
    assert_eq!(after["restarts"], before["restarts"], "{after}");
    assert_eq!(after["running_since"], before["running_since"], "{after}");
    assert_eq!(s.sensor("steady").await["effective_interval_ms"], 100);
    let reads = s.sensor("steady").await["reads"].as_u64().unwrap();
    s.wait_for("steady to go on reading", WAIT, async |s| {
        s.sensor("steady").await["reads"].as_u64() > Some(reads)
    })
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn bad_values_are_refused_naming_the_field_and_the_file_is_untouched() {
    let (s, path) = start_from_file().await;
    let original = std::fs::read(&path).unwrap();
    let cases = [
        (sim("tank", 0), "sensors[tank].interval_ms"),
        (
            json!({"name": "tank", "kind": "thermometer"}),
            "sensors[tank].kind",
        ),
        (
            json!({"name": "tank", "kind": "simulated", "options": {"waveform": "square"}}),
            "sensors[tank].options",
        ),
        (
            json!({"name": "bad name!", "kind": "system"}),
            "sensors[bad name!].name",
        ),
        (
            json!({"name": "steady", "kind": "system", "colour": "red"}),
            "sensors",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = s.post_json("/api/admin/config/sensors", &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        let parameter = err["error"]["parameter"].as_str().unwrap_or_default();
        assert!(parameter.starts_with(field), "{body}: {err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains(parameter),
            "{err}"
        );
    }
    let (status, err) = s.post_json("/api/admin/config/sensors", &json!([1])).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = s
        .post_json("/api/admin/config/sensors", &json!({"kind": "system"}))
        .await;
    assert_eq!((status, &err["error"]["parameter"]), (400, &json!("name")));
    // A rule on a sensor that does not exist, and removing a watched sensor.
    let rule = json!({"name": "r", "sensor": "nowhere", "condition": "above", "threshold": 1.0});
    let (status, err) = s.post_json("/api/admin/config/rules", &rule).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["parameter"], "alerts.rules[r].sensor", "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), original, "nothing written");

    let rule = json!({"name": "high", "sensor": "steady", "condition": "above", "threshold": 50});
    let (status, report) = s.post_json("/api/admin/config/rules", &rule).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], json!(["alerts"]), "{report}");
    let rules = s.get_ok("/api/alerts/rules").await;
    assert!(
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "high"),
        "{rules}"
    );
    // A restarted alert manager runs the edited rules, not its first ones.
    let (status, _) = s.post("/api/admin/restart/alerts", None).await;
    assert_eq!(status, 202);
    s.wait_for("the restarted manager", WAIT, async |s| {
        let sup = s.get_ok("/api/supervisor").await;
        let restarted = sup["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["child"] == "alerts" && e["event"] == "restarted");
        restarted && s.get("/api/alerts/rules").await.0 == 200
    })
    .await;
    let rules = s.get_ok("/api/alerts/rules").await;
    assert!(
        rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "high"),
        "after a restart: {rules}"
    );
    let (status, err) = s
        .post("/api/admin/config/sensors/steady/remove", None)
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(
        err["error"]["parameter"], "alerts.rules[high].sensor",
        "{err}"
    );
    let (status, _) = s.post("/api/admin/config/rules/high/remove", None).await;
    assert_eq!(status, 200);
    let view = s.get_ok("/api/admin/config").await;
    assert_eq!(view["rules"], json!([]), "{view}");
    assert_eq!(view["sensors"][0]["name"], "steady", "{view}");
    assert_eq!(view["exists"], true);
    s.stop().await;
}

#[actix_rt::test]
async fn a_change_needing_a_restart_says_so_before_anything_is_saved() {
    let (s, path) = start_from_file().await;
    // An edit by hand that a running appliance cannot take.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("slow_request_ms = 10000", "slow_request_ms = 20000");
    std::fs::write(&path, &text).unwrap();
    let (status, report) = s
        .post_json("/api/admin/config/sensors?dry_run=true", &sim("tank", 100))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["needs_restart"], json!(["server"]), "{report}");
    assert_eq!(report["dry_run"], true);
    // A dry run says what it would do to the sensors, as the edit would.
    assert_eq!(report["sensors_added"], json!(["tank"]), "{report}");
    assert_eq!(report["sensors_changed"], json!([]), "{report}");
    assert_eq!(report["sensors_removed"], json!([]), "{report}");
    let (status, err) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 100))
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[server]"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "nothing saved"
    );
    assert!(node(&s, "tank").await.is_none());
    let (status, report) = s
        .post_json(
            "/api/admin/config/sensors?accept_restart=true",
            &sim("tank", 100),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["sensors_added"], json!(["tank"]));
    assert!(std::fs::read_to_string(&path).unwrap().contains("\"tank\""));
    s.stop().await;
}

#[actix_rt::test]
async fn a_failed_write_leaves_the_file_and_the_appliance_as_they_were() {
    let (s, path) = start_from_file().await;
    let original = std::fs::read(&path).unwrap();
    // The temporary file's place is taken, so the write cannot start.
    let blocker = path.with_file_name(".vigil.toml.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let (status, err) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 100))
        .await;
    assert_eq!(status, 503, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unchanged"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), original);
    assert!(node(&s, "tank").await.is_none(), "not applied either");
    std::fs::remove_dir(&blocker).unwrap();
    let (status, _) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 100))
        .await;
    assert_eq!(status, 200);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("toml"))
        .collect();
    assert_eq!(names, ["vigil.toml"], "no temporary file left");
    s.stop().await;
}

#[actix_rt::test]
async fn on_the_embedded_defaults_the_first_edit_creates_the_file_and_says_where() {
    // What `vigil serve` without a file runs: the defaults, with the
    // database where VIGIL_DB (here: the test) puts it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = vigil::Config {
        storage: vigil::StorageConfig {
            path: dir.path().join("vigil.db"),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = TestServer::start_with(dir, cfg).await;
    let expected = s.dir.path().join("vigil.toml");
    let view = s.get_ok("/api/admin/config").await;
    assert_eq!(view["exists"], false, "{view}");
    assert_eq!(view["path"], expected.display().to_string());
    let (status, report) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 100))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["created"], true, "{report}");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains(&expected.display().to_string()) && message.contains("--config"),
        "{message}"
    );
    // The file is the documented defaults, comments and all, plus the edit.
    let text = std::fs::read_to_string(&expected).unwrap();
    assert!(text.contains("# Sensors. Leaving out every [[sensors]] entry"));
    let c = vigil::Config::load(Some(&expected)).unwrap();
    assert!(c.sensors.iter().any(|x| x.name == "tank"));
    assert_eq!(c.storage.path, s.db, "the file leads back to the database");
    s.wait_for("tank to read", WAIT, async |s| {
        s.sensor("tank").await["reads"].as_u64() > Some(0)
    })
    .await;
    // From now on the appliance edits and reloads that file.
    let view = s.get_ok("/api/admin/config").await;
    assert_eq!(view["exists"], true, "{view}");
    let (status, body) = s.post("/api/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await;
}

#[actix_rt::test]
async fn edits_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::util::config(&dir, "");
    cfg.server.admin_token = "s3cret".into();
    let s = TestServer::start_with(dir, cfg).await;
    let (status, _) = s
        .post_json("/api/admin/config/sensors", &sim("tank", 100))
        .await;
    assert_eq!(status, 401);
    let (status, _) = s.get("/api/admin/config").await;
    assert_eq!(status, 401);
    assert!(!s.dir.path().join("vigil.toml").exists());
    s.stop().await;
}
