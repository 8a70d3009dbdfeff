//! The guards on the running appliance: per-client HTTP rate limits (429
//! with `Retry-After`, other clients unaffected, `X-Forwarded-For` only from
//! trusted proxies, idle clients forgotten), the admin operations' shared
//! limit, a sensor's circuit breaker, and the memory guard.

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil::BreakerConfig;
use vigil::HttpLimitConfig;

use crate::util::{TestServer, config};

const STEADY: &str = r#"
[[sensors]]
name = "steady"
kind = "simulated"
interval_ms = 50
"#;

/// An answer: status, `Retry-After` (seconds) and the JSON body.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

async fn request(s: &TestServer, method: &str, path: &str, forwarded_for: Option<&str>) -> Answer {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut req = match method {
        "POST" => client.post(s.url(path)),
        _ => client.get(s.url(path)),
    };
    if let Some(ip) = forwarded_for {
        req = req.insert_header(("X-Forwarded-For", ip));
    }
    let mut res = req.send().await.expect("request");
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
    let body = res.body().limit(10 << 20).await.expect("body");
    Answer {
        status: res.status().as_u16(),
        retry_after,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

/// Polls `path` (as client `as_client`) until `cond` holds, at most once
/// per `every` (the test's own rate limit), failing after `deadline`.
async fn poll_json(
    s: &TestServer,
    path: &str,
    as_client: &str,
    every: Duration,
    deadline: Duration,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let a = request(s, "GET", path, Some(as_client)).await;
        if a.status == 200 && cond(&a.body) {
            return a.body;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}: {}",
            a.body
        );
        actix_rt::time::sleep(every).await;
    }
}

fn limited(trusted_proxies: &[&str]) -> HttpLimitConfig {
    HttpLimitConfig {
        enabled: true,
        requests_per_sec: 1,
        burst: 5,
        max_clients: 10_000,
        trusted_proxies: trusted_proxies.iter().map(|s| s.to_string()).collect(),
    }
}

#[actix_rt::test]
async fn a_burst_over_the_quota_gets_429_while_other_clients_are_served_and_idle_clients_are_forgotten()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, STEADY);
    cfg.guard.http = limited(&["127.0.0.1"]);
    cfg.guard.trim_interval_ms = 100;
    let s = TestServer::start_with(dir, cfg).await;

    // Client A (behind the trusted local proxy) bursts: the first five pass,
    // then 429 with Retry-After and a JSON error.
    let a = "198.51.100.1";
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(request(&s, "GET", "/api/sensors", Some(a)).await);
    }
    assert!(answers[..5].iter().all(|r| r.status == 200));
    let refused = answers
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429 within 20 quick requests at 1/s, bursts of 5");
    assert!(refused.retry_after.is_some_and(|s| s >= 1), "Retry-After");
    assert_eq!(
        refused.body["error"]["code"], "rate_limited",
        "{}",
        refused.body
    );
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per client")
    );

    // Client B, and the proxy's own requests, are unaffected.
    let b = request(&s, "GET", "/api/sensors", Some("198.51.100.2")).await;
    assert_eq!(b.status, 200);
    let local = request(&s, "GET", "/health", None).await;
    assert_eq!(local.status, 200);

    // Many one-off clients: their state is kept, then forgotten once idle.
    for i in 0..30 {
        let ip = format!("203.0.113.{i}");
        assert_eq!(request(&s, "GET", "/health", Some(&ip)).await.status, 200);
    }
    let poller = "192.0.2.99";
    let g = request(&s, "GET", "/api/guards", Some(poller)).await.body;
    assert!(
        g["http"]["clients"].as_u64().unwrap() >= 33,
        "{}",
        g["http"]
    );
    assert!(g["http"]["rejected"].as_u64().unwrap() >= 1);
    let g = poll_json(
        &s,
        "/api/guards",
        poller,
        Duration::from_millis(1100),
        Duration::from_secs(30),
        "idle clients to be forgotten",
        |g| g["http"]["forgotten"].as_u64() >= Some(30) && g["http"]["clients"].as_u64() < Some(10),
    )
    .await;
    assert!(g["http"]["trims"].as_u64().unwrap() > 1);
    s.stop().await;
}

#[actix_rt::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_pick_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, STEADY);
    cfg.guard.http = limited(&[]);
    let s = TestServer::start_with(dir, cfg).await;
    // Every request claims another address; all count against the peer.
    // Sent at once, so the bucket cannot refill between them however slow
    // the machine.
    let server = &s;
    let answers = futures_util::future::join_all((0..20).map(|i| async move {
        let ip = format!("198.51.100.{i}");
        request(server, "GET", "/api/sensors", Some(&ip)).await
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    s.stop().await;
}

#[actix_rt::test]
async fn expensive_admin_operations_share_one_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, STEADY);
    cfg.guard.admin.ops_per_minute = 1;
    cfg.guard.admin.burst = 1;
    let s = TestServer::start_with(dir, cfg).await;
    let first = request(&s, "POST", "/api/admin/restart/steady", None).await;
    assert_eq!(first.status, 202, "{}", first.body);
    // Another operation, right after: refused for about a minute.
    let second = request(&s, "POST", "/api/admin/reload", None).await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert!(second.retry_after.is_some_and(|s| s > 1 && s <= 60));
    let msg = second.body["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("reload refused"), "{msg}");
    let g = s.get_ok("/api/guards").await;
    assert_eq!(g["admin"]["admitted"], 1);
    assert_eq!(g["admin"]["rejected"], 1);
    s.stop().await;
}

/// The node called `name` anywhere in a supervision tree.
fn find_breaker<'a>(guards: &'a Value, name: &str) -> Option<&'a Value> {
    guards["breakers"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
}

#[actix_rt::test]
async fn a_slow_sensor_is_held_back_by_its_breaker_without_restarts_or_harm_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &dir,
        &format!(
            r#"{STEADY}
[[sensors]]
name = "slowpoke"
kind = "simulated"
interval_ms = 20
timeout_ms = 5000
priority = "optional"
[sensors.options]
slow_ms = 150
"#
        ),
    );
    cfg.guard.sensors = BreakerConfig {
        slow_call_ms: 100,
        window: 4,
        min_calls: 3,
        open_wait_ms: 300,
        open_wait_max_ms: 1200,
        ..BreakerConfig::sensors()
    };
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for("three trips", Duration::from_secs(30), async |s| {
        let g = s.get_ok("/api/guards").await;
        find_breaker(&g, "sensor:slowpoke").is_some_and(|b| b["trips"].as_u64() >= Some(3))
    })
    .await;
    // Reads first, then trips: a trial completing in between adds to both,
    // so the bound below holds whatever the timing.
    let p = s.sensor("slowpoke").await;
    let g = s.get_ok("/api/guards").await;
    let b = find_breaker(&g, "sensor:slowpoke").unwrap().clone();
    let trips = b["trips"].as_u64().unwrap();
    assert!(
        b["last_reason"]
            .as_str()
            .unwrap()
            .contains("slow-call rate"),
        "{b}"
    );
    assert_eq!(b["guards"], "sensor");
    // Three slow reads opened it; after that, one trial read per trip: no
    // reads while it is open.
    let reads = p["reads"].as_u64().unwrap();
    assert!(reads <= 3 + trips, "{reads} reads for {trips} trips: {p}");
    assert_eq!(p["restarts"], 0, "a breaker does not restart anything");
    assert!(
        ["suspended", "running"].contains(&p["status"].as_str().unwrap()),
        "{p}"
    );
    // It reports itself suspended while open.
    s.wait_for(
        "the sensor to show suspended",
        Duration::from_secs(10),
        async |s| {
            let p = s.sensor("slowpoke").await;
            p["status"] == "suspended" && p["breaker"] == "open"
        },
    )
    .await;
    // The alert fired; the healthy sensor kept its breaker closed and its pace.
    let alerts = s.get_ok("/api/alerts?state=firing").await;
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "breaker_open:sensor:slowpoke"),
        "{alerts}"
    );
    let steady = s.sensor("steady").await;
    assert_eq!(steady["breaker"], "closed");
    assert_eq!(steady["status"], "running");
    let (status, health) = s.get("/health").await;
    assert_eq!(
        status, 200,
        "an optional sensor's breaker only warns: {health}"
    );
    assert!(
        health["warnings"].to_string().contains("sensor:slowpoke"),
        "{health}"
    );
    s.stop().await;
}

#[actix_rt::test]
async fn memory_above_the_soft_limit_is_shed_announced_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, STEADY);
    // Any process is above 1 MiB.
    cfg.guard.memory.soft_limit_mib = 1;
    cfg.guard.memory.check_interval_ms = 50;
    let s = TestServer::start_with(dir, cfg).await;
    s.wait_for(
        "the memory_pressure alert",
        Duration::from_secs(20),
        async |s| {
            let a = s.get_ok("/api/alerts?state=firing").await;
            a["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["key"] == "memory_pressure")
        },
    )
    .await;
    let g = s.get_ok("/api/guards").await;
    let m = &g["memory"];
    assert_eq!(m["above_soft_limit"], true, "{m}");
    assert!(m["sheds"].as_u64().unwrap() >= 1, "{m}");
    assert!(m["rss_bytes"].as_u64().unwrap() > 1 << 20, "{m}");
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "memory pressure is a warning: {health}");
    assert!(
        health["warnings"].to_string().contains("soft limit"),
        "{health}"
    );
    // Shedding loses no accepted reading.
    let (report, _dir, db) = s.stop().await;
    let produced: u64 = report.produced.iter().map(|(_, n)| n).sum();
    assert_eq!(crate::util::open_db(&db).raw_count() as u64, produced);
    assert_eq!(report.queue.dropped, 0);
}
