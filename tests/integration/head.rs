//! The queryable head against the real appliance with the default 60 s
//! flush window: readings, series and exports answer from the moment a
//! reading is accepted; cursor pages return every reading exactly once
//! across a commit between two pages; `/metrics` carries every metric's
//! latest value and passes `promtool`.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::util::{TestServer, config};

const SENSORS: &str = r#"
[[sensors]]
name = "sim"
kind = "simulated"
interval_ms = 20
"#;

/// An appliance with the default flush window (and batch size), so
/// nothing is committed during the test unless the test forces it.
async fn start() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, SENSORS);
    let defaults = vigil::StorageConfig::default();
    cfg.storage.flush_interval_ms = defaults.flush_interval_ms;
    cfg.storage.batch_size = defaults.batch_size;
    assert_eq!(cfg.storage.flush_interval_ms, 60_000);
    TestServer::start_with(dir, cfg).await
}

/// Rows the writer has committed, from /health, which answers 503 (with
/// the same body) while the writer is restarting.
async fn committed(s: &TestServer) -> u64 {
    let (status, body) = s.get("/health").await;
    assert!(matches!(status, 200 | 503), "GET /health: {status} {body}");
    body["writer"]["committed_rows"].as_u64().unwrap()
}

#[actix_rt::test]
async fn readings_series_and_exports_answer_before_any_commit() {
    let s = start().await;
    s.wait_for("readings at once", Duration::from_secs(5), async |s| {
        s.get_ok("/api/readings?sensor=sim&limit=5").await["count"] == 5
    })
    .await;
    // Nothing was committed: these came from the head.
    assert_eq!(committed(&s).await, 0);
    let page = s.get_ok("/api/readings?sensor=sim&limit=5").await;
    let oldest = page["committed_through_ms"]
        .as_i64()
        .expect("not durable yet");
    for r in page["readings"].as_array().unwrap() {
        assert!(r["ts_ms"].as_i64().unwrap() >= oldest, "{page}");
    }

    s.wait_for(
        "series buckets at once",
        Duration::from_secs(5),
        async |s| {
            let body = s.get_ok("/api/series?sensor=sim&metric=value").await;
            body["series"][0]["count"].as_u64().unwrap_or(0) > 0
        },
    )
    .await;
    let body = s.get_ok("/api/series?sensor=sim&metric=value").await;
    assert!(body["series"][0]["committed_through_ms"].is_i64(), "{body}");

    let mut res = s
        .client()
        .get(s.url("/api/readings/export?sensor=sim"))
        .send()
        .await
        .unwrap();
    let csv = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert!(csv.lines().count() > 5, "{csv}");

    // After the commit, the same readings come from the table.
    let (status, _) = s.post("/api/admin/restart/writer", None).await;
    assert_eq!(status, 202);
    s.wait_for("a commit", Duration::from_secs(10), async |s| {
        committed(s).await > 0
    })
    .await;
    s.stop().await;
}

/// Every page of `query` (which bounds the range, so readings arriving
/// meanwhile stay out of it), following cursors; `between` runs after the
/// first page.
async fn all_pages(s: &TestServer, query: &str, between: impl AsyncFnOnce()) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut between = Some(between);
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/readings?{query}&cursor={c}"),
            None => format!("/api/readings?{query}"),
        };
        let page = s.get_ok(&path).await;
        seen.extend(page["readings"].as_array().unwrap().iter().cloned());
        if let Some(f) = between.take() {
            f().await;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
    }
}

fn keys(rows: &[Value]) -> Vec<(i64, String)> {
    rows.iter()
        .map(|r| {
            (
                r["ts_ms"].as_i64().unwrap(),
                r["metric"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn pages_return_each_reading_once_across_a_commit_between_them() {
    let s = start().await;
    s.wait_for("some readings", Duration::from_secs(5), async |s| {
        s.get_ok("/api/readings?sensor=sim&limit=60").await["count"] == 60
    })
    .await;
    for order in ["desc", "asc"] {
        // A closed range: what is accepted from now on stays outside it.
        let to = vigil::clock::now_ms();
        let before = committed(&s).await;
        let query = format!("sensor=sim&to={to}&limit=7&order={order}");
        let seen = all_pages(&s, &query, async || {
            let (status, _) = s.post("/api/admin/restart/writer", None).await;
            assert_eq!(status, 202);
            s.wait_for("the commit", Duration::from_secs(10), async |s| {
                committed(s).await > before
            })
            .await;
        })
        .await;
        let got = keys(&seen);
        let unique: HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "a reading came twice ({order})");
        // The whole range in one page, now that it is committed.
        let whole = s
            .get_ok(&format!(
                "/api/readings?sensor=sim&to={to}&limit=1000&order={order}"
            ))
            .await;
        let want = keys(whole["readings"].as_array().unwrap());
        assert!(want.len() > 14, "{}", want.len());
        assert_eq!(got, want, "{order}");
    }
    s.stop().await;
}

#[actix_rt::test]
async fn metrics_carry_every_latest_value_and_pass_promtool() {
    let s = start().await;
    s.wait_for("a reading", Duration::from_secs(5), async |s| {
        s.get_ok("/api/readings?sensor=sim&limit=1").await["count"] == 1
    })
    .await;
    let mut res = s.client().get(s.url("/metrics")).send().await.unwrap();
    let text = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("vigil_sensor_value{sensor=\"sim\",metric=\"value\",unit=\"\"}"))
        .unwrap_or_else(|| panic!("no value gauge in\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value.is_finite(), "{line}");
    assert!(
        text.contains("vigil_sensor_value_age_seconds{sensor=\"sim\",metric=\"value\"}"),
        "{text}"
    );
    crate::util::promtool_check_metrics(&text);
    s.stop().await;
}
