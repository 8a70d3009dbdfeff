//! Alerts end to end: a simulated sensor crossing a threshold fires an alert
//! seen over HTTP and the live feed, it resolves, acknowledgement works,
//! state survives a restart, rules reload (and a bad reload changes nothing),
//! webhooks retry, and built-in rules fire on internal events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::live::Client;
use crate::util::{TestServer, config, set_temp};

/// A signal at 20 for 1.5 s, then 30 for 1.5 s, and so on.
const STEP: &str = r#"
[[sensors]]
name = "tank"
kind = "simulated"
interval_ms = 50
[sensors.options]
waveform = "step"
offset = 20.0
amplitude = 10.0
period_ms = 3000

[[alerts.rules]]
name = "tank high"
sensor = "tank"
condition = "above"
threshold = 25.0
severity = "critical"
"#;

/// A signal always above the threshold.
const ALWAYS_HIGH: &str = r#"
[[sensors]]
name = "tank"
kind = "simulated"
interval_ms = 50
[sensors.options]
waveform = "constant"
offset = 30.0

[[alerts.rules]]
name = "tank high"
sensor = "tank"
condition = "above"
threshold = 25.0
severity = "critical"
"#;

async fn alerts(s: &TestServer, query: &str) -> Vec<Value> {
    s.get_ok(&format!("/api/alerts{query}")).await["alerts"]
        .as_array()
        .unwrap()
        .clone()
}

async fn post(s: &TestServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = awc::Client::new().post(s.url(path));
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut res = req.send().await.unwrap();
    let body = res.json::<Value>().await.unwrap_or(Value::Null);
    (res.status().as_u16(), body)
}

#[actix_rt::test]
async fn a_threshold_alert_fires_once_resolves_and_is_acknowledged() {
    let s = TestServer::start(STEP).await;
    let mut feed = Client::connect(&s).await;

    // The step may already be high when the feed connects: wait for the
    // next alert to fire on the feed.
    let fired = loop {
        let m = feed.next_of_type("alert", Duration::from_secs(15)).await;
        if m["event"] == "fired" {
            break m;
        }
    };
    let id = fired["alert"]["id"].as_i64().unwrap();
    // One alert for the high phase, not one per reading; looked up by id
    // among all states, since a slow machine may see the phase end first.
    let all = alerts(&s, "").await;
    let since: Vec<_> = all
        .iter()
        .filter(|a| a["id"].as_i64() >= Some(id))
        .collect();
    assert_eq!(since.len(), 1, "one alert, not one per reading: {all:?}");
    let a = since[0];
    assert_eq!(a["id"], id);
    assert_eq!(a["rule"], "tank high");
    assert_eq!(a["severity"], "critical");
    assert!(a["value"].as_f64().unwrap() > 25.0);
    assert!(a["message"].as_str().unwrap().contains("tank/value"), "{a}");

    let resolved = feed.next_of_type("alert", Duration::from_secs(10)).await;
    assert_eq!(resolved["event"], "resolved");
    assert_eq!(resolved["alert"]["id"], id);
    assert!(
        alerts(&s, "?state=resolved")
            .await
            .iter()
            .any(|a| a["id"] == id)
    );
    // It fires again with the next high phase: a new alert.
    let again = feed.next_of_type("alert", Duration::from_secs(10)).await;
    assert_eq!(again["event"], "fired");
    assert_ne!(again["alert"]["id"], id);

    let (status, body) = post(&s, &format!("/api/alerts/{id}/ack"), None).await;
    assert_eq!(
        status, 200,
        "loopback may acknowledge without a token: {body}"
    );
    assert_eq!(body["acknowledged"], true);
    let (status, _) = post(&s, "/api/alerts/999999/ack", None).await;
    assert_eq!(status, 404);
    let (status, body) = post(&s, "/api/alerts/abc/ack", None).await;
    assert_eq!(
        (status, body["error"]["parameter"].as_str()),
        (400, Some("id"))
    );

    let (status, body) = s.get("/api/alerts?severity=loud").await;
    assert_eq!(
        (status, body["error"]["parameter"].as_str()),
        (400, Some("severity"))
    );
    s.stop().await;
}

#[actix_rt::test]
async fn firing_alerts_and_acknowledgements_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Always above the threshold: fires once and stays firing.
    let cfg = config(&dir, ALWAYS_HIGH);
    let s = TestServer::start_with(dir, cfg.clone()).await;
    s.wait_for("the alert to fire", Duration::from_secs(15), async |s| {
        !alerts(s, "?state=firing").await.is_empty()
    })
    .await;
    let id = alerts(&s, "?state=firing").await[0]["id"].as_i64().unwrap();
    let (status, _) = post(&s, &format!("/api/alerts/{id}/ack"), None).await;
    assert_eq!(status, 200);
    // Stored before the stop: the changes reach the database promptly.
    s.wait_for(
        "the alert to be stored",
        Duration::from_secs(10),
        async |s| s.get_ok("/api/alerts/rules").await["pending_writes"] == 0,
    )
    .await;
    let (_, dir, _) = s.stop().await;

    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("the manager to load", Duration::from_secs(10), async |s| {
        !alerts(s, "").await.is_empty()
    })
    .await;
    // Readings keep breaching, yet no duplicate fires.
    s.wait_for(
        "readings after the restart",
        Duration::from_secs(10),
        async |s| s.sensor("tank").await["reads"].as_u64() > Some(20),
    )
    .await;
    let firing = alerts(&s, "?state=firing").await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["id"], id);
    assert_eq!(firing[0]["acknowledged"], true);
    s.stop().await;
}

#[actix_rt::test]
async fn admin_actions_need_the_token_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, STEP);
    cfg.server.admin_token = "s3cret".into();
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("an alert", Duration::from_secs(15), async |s| {
        !alerts(s, "").await.is_empty()
    })
    .await;
    let id = alerts(&s, "").await[0]["id"].as_i64().unwrap();
    let path = format!("/api/alerts/{id}/ack");
    let (status, body) = post(&s, &path, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(!body.to_string().contains("s3cret"));
    let (status, _) = post(&s, &path, Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = post(&s, &path, Some("s3cret")).await;
    assert_eq!(status, 200);
    for path in ["/api/admin/reload", "/api/admin/restart/tank"] {
        let (status, _) = post(&s, path, None).await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, _) = post(&s, "/api/admin/restart/tank", Some("s3cret")).await;
    assert_eq!(status, 202);
    s.stop().await;
}

/// A config file in `dir` and the part of it every reload test keeps: a
/// listener, a quiet log and a database in `dir`.
fn reloadable(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let base = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nworkers = 1\n[log]\nfilter = \"warn\"\n\
         [storage]\npath = \"{}\"\nflush_interval_ms = 100\n",
        dir.join("vigil.db").display()
    );
    (dir.join("vigil.toml"), base)
}

#[actix_rt::test]
async fn rules_reload_from_the_file_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (file, base) = reloadable(dir.path());
    let write = |rules: &str| std::fs::write(&file, format!("{base}\n{STEP}\n{rules}")).unwrap();
    write("");
    let cfg = vigil::Config::load(Some(&file)).unwrap();
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), cfg).await;
    let rules = s.get_ok("/api/alerts/rules").await;
    let names: Vec<_> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, [json!("tank high")]);

    write(
        "[[alerts.rules]]\nname = \"tank quiet\"\nsensor = \"tank\"\ncondition = \"silence\"\nsilence_ms = 60000\n",
    );
    let (status, body) = post(&s, "/api/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"], 2);
    let rules = s.get_ok("/api/alerts/rules").await;
    assert_eq!(rules["rules"].as_array().unwrap().len(), 2);

    write(
        "[[alerts.rules]]\nname = \"broken\"\nsensor = \"nowhere\"\ncondition = \"above\"\nthreshold = 1\n",
    );
    let (status, body) = post(&s, "/api/admin/reload", None).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("alerts.rules[broken].sensor") && msg.contains("nothing was changed"),
        "{msg}"
    );
    let rules = s.get_ok("/api/alerts/rules").await;
    assert_eq!(
        rules["rules"].as_array().unwrap().len(),
        2,
        "old rules kept"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn reload_without_a_config_file_is_a_conflict() {
    let s = TestServer::start(STEP).await;
    let (status, body) = post(&s, "/api/admin/reload", None).await;
    assert_eq!(status, 409, "{body}");
    s.stop().await;
}

/// An HTTP receiver that answers 500 to the first `failures` posts, then
/// 200; records the bodies it accepted.
async fn receiver(
    failures: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen2, count2) = (seen.clone(), count.clone());
    let server = actix_web::HttpServer::new(move || {
        let (seen, count) = (seen2.clone(), count2.clone());
        actix_web::App::new().default_service(actix_web::web::to(
            move |body: actix_web::web::Bytes| {
                let (seen, count) = (seen.clone(), count.clone());
                async move {
                    if count.fetch_add(1, Ordering::SeqCst) < failures {
                        return actix_web::HttpResponse::InternalServerError().finish();
                    }
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        seen.lock().unwrap().push(v);
                    }
                    actix_web::HttpResponse::Ok().finish()
                }
            },
        ))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    (addr, seen)
}

#[actix_rt::test]
async fn webhooks_are_retried_with_backoff_and_counted() {
    let (addr, seen) = receiver(2).await;
    let dir = tempfile::tempdir().unwrap();
    // A constant signal above the threshold: one "fired", never "resolved",
    // so the retried delivery is the only one.
    let cfg = config(
        &dir,
        &format!(
            "{ALWAYS_HIGH}\n[[alerts.webhooks]]\nurl = \"http://{addr}/hook\"\nseverities = [\"critical\"]\nbackoff_ms = 50\nmax_attempts = 5\n"
        ),
    );
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("a delivered webhook", Duration::from_secs(20), async |s| {
        s.get_ok("/api/alerts/rules").await["webhooks"][0]["sent"].as_u64() >= Some(1)
    })
    .await;
    let hook = s.get_ok("/api/alerts/rules").await["webhooks"][0].clone();
    assert_eq!(hook["retries"], 2, "{hook}");
    assert_eq!(hook["failed"], 0, "{hook}");
    assert!(
        hook["last_error"].as_str().unwrap().contains("500"),
        "{hook}"
    );
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first["event"], "fired");
    assert_eq!(first["alert"]["rule"], "tank high");
    s.stop().await;
}

#[actix_rt::test]
async fn a_given_up_child_raises_a_builtin_alert_that_an_operator_restart_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &dir,
        r#"
[[sensors]]
name = "doomed"
kind = "simulated"
interval_ms = 20
priority = "optional"
[sensors.options]
panic_every = 1
"#,
    );
    cfg.supervisor.max_restarts = 1;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("the built-in alert", Duration::from_secs(20), async |s| {
        alerts(s, "?state=firing")
            .await
            .iter()
            .any(|a| a["rule"] == "child_given_up")
    })
    .await;
    let a = alerts(&s, "?state=firing").await;
    let a = a.iter().find(|a| a["rule"] == "child_given_up").unwrap();
    assert_eq!(a["severity"], "critical");
    assert!(
        a["key"].as_str().unwrap().ends_with("sensors/doomed"),
        "{a}"
    );
    let (status, _) = post(&s, "/api/admin/restart/doomed", None).await;
    assert_eq!(status, 202);
    s.wait_for("the alert to resolve", Duration::from_secs(20), async |s| {
        alerts(s, "?state=resolved")
            .await
            .iter()
            .any(|a| a["rule"] == "child_given_up")
    })
    .await;
    s.stop().await;
}

#[actix_rt::test]
async fn reload_applies_pacing_retention_and_performance_live_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (file, base) = reloadable(dir.path());
    std::fs::write(&file, format!("{base}\n{STEP}\n")).unwrap();
    let cfg = vigil::Config::load(Some(&file)).unwrap();
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), cfg).await;
    let pacing = s.get_ok("/api/pacing").await;
    assert_eq!(pacing["thresholds"]["temp_c"][0], 65.0);

    // The change the defaults' users make most: thresholds and the cap.
    std::fs::write(
        &file,
        format!(
            "{base}\n{STEP}\n[pacing]\ntemp_warm_c = 60.0\n[retention]\nmax_db_mb = 500\n\
             [maintenance]\nbackup_keep = 3\n[performance]\nslow_query_ms = 7\n"
        ),
    )
    .unwrap();
    let (status, body) = post(&s, "/api/admin/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["applied"],
        json!(["pacing", "retention", "maintenance", "performance"]),
        "{body}"
    );
    assert_eq!(body["needs_restart"], json!([]), "{body}");
    let pacing = s.get_ok("/api/pacing").await;
    assert_eq!(pacing["thresholds"]["temp_c"][0], 60.0);
    let storage = s.get_ok("/api/storage").await;
    assert_eq!(storage["cap_bytes"], 500 * 1024 * 1024, "{storage}");
    assert_eq!(storage["retention"]["max_db_mb"], 500, "{storage}");
    // A changed schedule restarts the maintenance scheduler to follow it;
    // backup_keep alone does not change the schedule, so it started once.
    let started = |sup: &Value| {
        sup["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["child"] == "maintenance" && e["event"] == "started")
            .count()
    };
    assert_eq!(started(&s.get_ok("/api/supervisor").await), 1);

    // A monitor key and the listener need a restart: named, not applied,
    // and named again by the next reload, since the old values still run.
    std::fs::write(
        &file,
        format!(
            "{base}\n{STEP}\n[pacing]\ntemp_warm_c = 60.0\nwatchdog_interval_ms = 1234\n\
             [retention]\nmax_db_mb = 500\n[maintenance]\nbackup_keep = 3\n\
             optimize_interval_secs = 7200\n[performance]\nslow_query_ms = 7\n\
             [live]\nmax_sessions = 7\n"
        ),
    )
    .unwrap();
    for applied in [json!(["maintenance"]), json!([])] {
        let (status, body) = post(&s, "/api/admin/reload", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["applied"], applied, "{body}");
        assert_eq!(body["needs_restart"], json!(["live", "pacing"]), "{body}");
    }
    s.wait_for(
        "the scheduler to restart on its new schedule",
        Duration::from_secs(10),
        async |s| started(&s.get_ok("/api/supervisor").await) == 2,
    )
    .await;
    let storage = s.get_ok("/api/storage").await;
    assert_eq!(storage["jobs"]["optimize_every_s"], 7200, "{storage}");
    s.stop().await;
}

#[actix_rt::test]
async fn a_firing_breaker_alert_stays_current_and_its_updates_are_pushed() {
    // Every read fails, but never enough in a row to restart the sensor:
    // the breaker opens, its trial fails, it opens again with a later
    // trial; one alert stays firing and its message follows each trial.
    let s = TestServer::start(
        r#"
[[sensors]]
name = "flaky"
kind = "simulated"
interval_ms = 20
max_consecutive_errors = 0
[sensors.options]
error_rate = 1.0

[guard.sensors]
window = 2
min_calls = 2
open_wait_ms = 100
open_wait_max_ms = 2000
"#,
    )
    .await;
    let mut feed = Client::connect(&s).await;
    let key = "breaker_open:sensor:flaky";
    // The first version of the alert the feed shows (its firing, or an
    // update if it fired before the feed connected), then the next update.
    let mut first: Option<Value> = None;
    let updated = loop {
        let m = feed.next_of_type("alert", Duration::from_secs(20)).await;
        if m["alert"]["key"] != key {
            continue;
        }
        match (m["event"].as_str(), &first) {
            (Some("fired" | "updated"), None) => first = Some(m["alert"].clone()),
            (Some("updated"), Some(_)) => break m,
            (other, _) => panic!("unexpected {other:?}: {m}"),
        }
    };
    let first = first.expect("a first version");
    let now = &updated["alert"];
    assert_eq!(now["id"], first["id"], "the same alert, updated in place");
    assert_eq!(now["state"], "firing");
    assert_ne!(now["message"], first["message"], "{now}");
    assert!(
        now["message"].as_str().unwrap().contains("next trial at"),
        "{now}"
    );
    assert!(
        now["value"].as_f64() > first["value"].as_f64(),
        "trips grow: {now}"
    );
    // The API shows the current message, not the first one.
    s.wait_for(
        "the API to show an update",
        Duration::from_secs(10),
        async |s| {
            let firing = alerts(s, "?state=firing").await;
            let a = firing.iter().find(|a| a["key"] == key).unwrap().clone();
            a["message"] != first["message"]
        },
    )
    .await;
    let firing = alerts(&s, "?state=firing").await;
    assert_eq!(firing.iter().filter(|a| a["key"] == key).count(), 1);
    s.stop().await;
}

#[actix_rt::test]
async fn a_firing_threshold_alert_follows_the_worst_value_seen() {
    // Always above 25, swinging between 26 and 34: the alert fires once and
    // its value and message follow the highest reading while it fires.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &dir,
        r#"
[[sensors]]
name = "tank"
kind = "simulated"
interval_ms = 50
[sensors.options]
waveform = "sine"
offset = 30.0
amplitude = 4.0
period_ms = 2000

[[alerts.rules]]
name = "tank high"
sensor = "tank"
condition = "above"
threshold = 25.0
severity = "critical"
"#,
    );
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "the alert to follow the peak",
        Duration::from_secs(20),
        async |s| {
            let firing = alerts(s, "?state=firing").await;
            firing.first().is_some_and(|a| {
                a["value"].as_f64().is_some_and(|v| v >= 33.5)
                    && a["message"].as_str().is_some_and(|m| m.contains("rose to"))
            })
        },
    )
    .await;
    let firing = alerts(&s, "?state=firing").await;
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert!(firing[0]["value"].as_f64().unwrap() <= 34.0, "{firing:?}");
    s.stop().await;
}

/// The next `updated` of the alert `key` after a first version of it, both
/// as the live feed showed them. A resolve starts over: the alert that fires
/// next is a new one.
async fn first_and_update(feed: &mut Client, key: &str) -> (Value, Value) {
    let mut first: Option<Value> = None;
    loop {
        let m = feed.next_of_type("alert", Duration::from_secs(20)).await;
        if m["alert"]["key"] != key {
            continue;
        }
        match (m["event"].as_str(), &first) {
            (Some("fired" | "updated"), None) => first = Some(m["alert"].clone()),
            (Some("updated"), Some(f)) => return (f.clone(), m["alert"].clone()),
            (Some("resolved"), Some(_)) => first = None,
            (other, _) => panic!("unexpected {other:?}: {m}"),
        }
    }
}

#[actix_rt::test]
async fn a_firing_rate_alert_follows_the_fastest_change() {
    // A signal the test drives: a zone file a cpu_temp sensor reads, flat
    // until the feed is connected, then accelerating (10 t² °C after t
    // seconds), so its change per minute keeps growing however the reads
    // fall. The alert fires once the change passes 600 per minute, and its
    // value (the change per minute) and message follow the faster changes
    // that come after, in place. A signal whose fastest change comes early
    // (a sine) can leave nothing faster to follow.
    let zone = tempfile::tempdir().unwrap();
    set_temp(zone.path(), 20.0);
    let probe = format!(
        r#"
[[sensors]]
name = "probe"
kind = "cpu_temp"
interval_ms = 20
[sensors.options]
thermal_root = "{}"
use_hwmon = false

[[alerts.rules]]
name = "probe fast"
sensor = "probe"
metric = "temperature"
condition = "rate"
threshold = 600.0
clear = 0.0
window_ms = 1000
"#,
        zone.path().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), config(&dir, &probe)).await;
    let mut feed = Client::connect(&s).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let (stop, root) = (stop.clone(), zone.path().to_owned());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            // Stops by itself should the test fail before telling it to.
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(120)
            {
                let t = start.elapsed().as_secs_f64();
                set_temp(&root, 20.0 + 10.0 * t * t);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let (first, now) = first_and_update(&mut feed, "probe fast:probe/temperature").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    driver.join().unwrap();
    assert_eq!(now["id"], first["id"], "the same alert, updated in place");
    assert!(
        now["value"].as_f64() > first["value"].as_f64(),
        "{first} -> {now}"
    );
    let message = now["message"].as_str().unwrap();
    assert!(
        message.contains("probe/temperature changes by"),
        "{message}"
    );
    assert!(message.contains("faster than 600"), "{message}");
    assert_ne!(now["message"], first["message"]);
    s.stop().await;
}

#[actix_rt::test]
async fn a_firing_silence_alert_says_how_long_it_has_been_silent() {
    // A sensor that never reads: the silence alert fires after a second and
    // is renewed each second with the silence's length.
    let s = TestServer::start(
        r#"
[[sensors]]
name = "mute"
kind = "simulated"
interval_ms = 50
max_consecutive_errors = 0
[sensors.options]
error_rate = 1.0

[[alerts.rules]]
name = "mute quiet"
sensor = "mute"
condition = "silence"
silence_ms = 1000
"#,
    )
    .await;
    let mut feed = Client::connect(&s).await;
    let (first, now) = first_and_update(&mut feed, "mute quiet:mute/value").await;
    assert_eq!(now["id"], first["id"]);
    let (a, b) = (
        first["value"].as_f64().unwrap(),
        now["value"].as_f64().unwrap(),
    );
    assert!(a >= 1.0 && b >= a + 1.0, "{first} -> {now}");
    let message = now["message"].as_str().unwrap();
    assert_eq!(message, format!("no reading of mute/value for {b:.0} s"));
    s.stop().await;
}
