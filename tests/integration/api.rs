//! The JSON API against a running appliance: sensors listed, readings paged
//! by cursor exactly once, bad parameters answered with named 400s, HEAD
//! answered like GET.

use std::collections::HashSet;
use std::time::Duration;

use crate::util::{TestServer, open_db};

const TWO_SENSORS: &str = r#"
[[sensors]]
name = "wave"
kind = "simulated"
interval_ms = 20
[sensors.options]
waveform = "sine"
period_ms = 2000

[[sensors]]
name = "walk"
kind = "simulated"
interval_ms = 30
[sensors.options]
waveform = "random_walk"
metric = "level"
unit = "cm"
"#;

#[actix_rt::test]
async fn sensors_are_listed_with_status_and_recent_values() {
    let s = TestServer::start(TWO_SENSORS).await;
    s.wait_for("both sensors to read", Duration::from_secs(10), async |s| {
        s.sensor("wave").await["reads"].as_u64() > Some(2)
            && s.sensor("walk").await["reads"].as_u64() > Some(2)
    })
    .await;
    let walk = s.sensor("walk").await;
    assert_eq!(walk["status"], "running");
    assert_eq!(walk["kind"], "simulated");
    assert_eq!(walk["interval_ms"], 30);
    assert_eq!(walk["restarts"], 0);
    assert_eq!(walk["last_values"][0]["metric"], "level");
    assert_eq!(walk["last_values"][0]["unit"], "cm");
    assert!(walk["last_read_at"].as_str().unwrap().ends_with('Z'));

    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    s.stop().await;
}

#[actix_rt::test]
async fn cursor_pagination_returns_every_row_exactly_once() {
    let s = TestServer::start(TWO_SENSORS).await;
    s.wait_for("a few hundred rows", Duration::from_secs(20), async |s| {
        let (_, b) = s.get("/api/readings?limit=1000&fields=ts_ms").await;
        b["count"].as_u64() >= Some(300)
    })
    .await;
    // Fix the range to rows already committed, then page through it while
    // the sensors keep writing newer rows.
    // A second before the newest committed row: every reading taken by then
    // has long been committed.
    let (_, newest) = s.get("/api/readings?limit=1").await;
    let cut = newest["readings"][0]["ts_ms"].as_i64().unwrap() - 1000;
    let mut expected = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/api/readings?limit=1000&to={}&order=asc", cut + 1);
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let page = s.get_ok(&q).await;
        for r in page["readings"].as_array().unwrap() {
            expected.push((
                r["ts_ms"].as_i64().unwrap(),
                r["sensor"].to_string(),
                r["metric"].to_string(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }

    for (limit, order) in [(7, "desc"), (13, "asc"), (1, "desc")] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut q = format!("/api/readings?limit={limit}&to={}&order={order}", cut + 1);
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page = s.get_ok(&q).await;
            let rows = page["readings"].as_array().unwrap();
            assert!(rows.len() <= limit);
            for r in rows {
                seen.push((
                    r["ts_ms"].as_i64().unwrap(),
                    r["sensor"].to_string(),
                    r["metric"].to_string(),
                ));
            }
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
            if limit == 1 && pages == 50 {
                break;
            }
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a row appeared twice (limit {limit})"
        );
        if limit == 1 {
            // Newest-first pages of one: the first 50 rows, in order.
            let mut newest_first: Vec<i64> = expected.iter().map(|r| r.0).collect();
            newest_first.sort_by_key(|t| std::cmp::Reverse(*t));
            let seen_ts: Vec<i64> = seen.iter().map(|r| r.0).collect();
            assert_eq!(seen_ts, newest_first[..50]);
            continue;
        }
        let as_set: HashSet<_> = expected.iter().cloned().collect();
        assert_eq!(unique, as_set, "limit {limit} {order}");
    }

    // Every row up to the cut that the database holds was returned.
    let (_, dir, db) = s.stop().await;
    let stored = open_db(&db).raw_count_upto(cut);
    assert_eq!(stored, expected.len());
    drop(dir);
}

#[actix_rt::test]
async fn readings_filter_by_sensor_metric_range_and_fields() {
    let s = TestServer::start(TWO_SENSORS).await;
    s.wait_for("rows from both", Duration::from_secs(10), async |s| {
        let (_, b) = s.get("/api/readings?sensor=walk&limit=10").await;
        let (_, c) = s.get("/api/readings?sensor=wave&limit=10").await;
        b["count"] == 10 && c["count"] == 10
    })
    .await;
    let page = s
        .get_ok("/api/readings?sensor=walk&metric=level&limit=5&fields=value,ts_ms")
        .await;
    let rows = page["readings"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for r in rows {
        let keys: HashSet<_> = r.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            HashSet::from(["value".to_owned(), "ts_ms".to_owned()])
        );
    }
    let newest = rows[0]["ts_ms"].as_i64().unwrap();
    let oldest = rows[4]["ts_ms"].as_i64().unwrap();
    assert!(newest > oldest, "newest first by default");

    let ranged = s
        .get_ok(&format!(
            "/api/readings?sensor=walk&from={oldest}&to={newest}&order=asc"
        ))
        .await;
    let ts: Vec<i64> = ranged["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ts_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(ts.first(), Some(&oldest), "from is inclusive");
    assert!(ts.iter().all(|t| *t < newest), "to is exclusive");
    assert!(ranged["readings"][0]["ts"].as_str().unwrap().ends_with('Z'));
    let only_walk = s.get_ok("/api/readings?sensor=walk&limit=50").await;
    assert!(
        only_walk["readings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["sensor"] == "walk")
    );
    s.stop().await;
}

#[actix_rt::test]
async fn bad_parameters_are_400s_naming_the_parameter() {
    let s = TestServer::start(TWO_SENSORS).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=ten", "limit"),
        ("from=yesterday", "from"),
        ("to=2026-13-45", "to"),
        ("from=2000&to=1000", "to"),
        ("order=sideways", "order"),
        ("cursor=not-a-cursor", "cursor"),
        ("fields=ts,colour", "fields"),
        ("metric=level", "metric"),
        ("limt=5", "limt"),
        ("limit=5&limit=6", "limit"),
    ] {
        let (status, body) = s.get(&format!("/api/readings?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{query}");
        assert_eq!(body["error"]["parameter"], param, "{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = s.get("/api/readings?sensor=nonexistent").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.get("/api/nothing-here").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    s.stop().await;
}

#[actix_rt::test]
async fn every_response_has_a_process_time_and_compression_is_honoured() {
    let s = TestServer::start(TWO_SENSORS).await;
    let client = awc::Client::builder().disable_redirects().finish();
    let res = client
        .get(s.url("/api/sensors"))
        .insert_header(("Accept-Encoding", "gzip"))
        .no_decompress()
        .send()
        .await
        .unwrap();
    let t: f64 = res
        .headers()
        .get("x-process-time")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(t >= 0.0);
    assert_eq!(res.headers().get("content-encoding").unwrap(), "gzip");
    let res = client.get(s.url("/nowhere")).send().await.unwrap();
    assert!(res.headers().contains_key("x-process-time"));
    s.stop().await;
}

/// HEAD answers wherever GET does, with GET's status and headers and no
/// body (uptime probes use it); a method a path does not take is a 405
/// naming GET and HEAD.
#[actix_rt::test]
async fn head_answers_like_get_without_a_body() {
    let s = TestServer::start(TWO_SENSORS).await;
    let client = s.client();
    for path in [
        "/health",
        "/api/sensors",
        "/metrics",
        "/api/readings?limit=5",
        "/api/readings/export",
    ] {
        let mut res = client.head(s.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "HEAD {path}");
        let get = client.get(s.url(path)).send().await.unwrap();
        assert_eq!(
            res.headers().get("content-type"),
            get.headers().get("content-type"),
            "{path}"
        );
        assert!(
            res.body().await.unwrap().is_empty(),
            "HEAD {path} has a body"
        );
    }
    let res = client.delete(s.url("/health")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers().get("allow").unwrap(), "GET, HEAD");
    s.stop().await;
}
