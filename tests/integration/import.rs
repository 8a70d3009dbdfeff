//! `vigil import` as an operator uses it: what one appliance exported is
//! imported into another's database and exported again byte for byte, in
//! both formats, with its rollups; importing twice changes nothing; a
//! running server keeps the database to itself; a bad line is named.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use vigil::clock::now_ms;

use crate::cli::vigil;
use crate::util::{TestServer, config, open_db};

/// The whole body of a GET.
async fn body(s: &TestServer, path: &str) -> String {
    let mut res = s.client().get(s.url(path)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{path}");
    let mut out = Vec::new();
    while let Some(chunk) = res.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

/// `vigil import` of `file` into the database `db`.
fn import(db: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    vigil()
        .arg("import")
        .arg(file)
        .env("VIGIL_DB", db)
        .env("VIGIL_LOG", "warn")
        .output()
        .unwrap()
}

#[actix_rt::test]
async fn an_export_imported_into_another_appliance_exports_the_same() {
    // Appliance A: a sine sampled fast, so values use every bit of an f64.
    let a = TestServer::start(
        r#"
[[sensors]]
name = "tank"
kind = "simulated"
interval_ms = 10
[sensors.options]
waveform = "sine"
offset = 20.0
amplitude = 3.3
period_ms = 1700
"#,
    )
    .await;
    let from = now_ms() - 60_000;
    a.wait_for("readings", Duration::from_secs(30), async |s| {
        s.get_ok("/api/readings?sensor=tank&limit=1000").await["count"]
            .as_u64()
            .is_some_and(|n| n >= 300)
    })
    .await;
    // A closed range in the past: what later reads add cannot change it.
    let to = now_ms() - 100;
    let range = format!("sensor=tank&from={from}&to={to}");
    let csv = body(&a, &format!("/api/readings/export?{range}&format=csv")).await;
    let ndjson = body(&a, &format!("/api/readings/export?{range}&format=ndjson")).await;
    let exported = ndjson.lines().count();
    assert!(exported >= 200, "{exported}");
    let _ = a.stop().await;

    let work = tempfile::tempdir().unwrap();
    let csv_file = work.path().join("tank.csv");
    let json_file = work.path().join("tank.ndjson");
    std::fs::write(&csv_file, &csv).unwrap();
    std::fs::write(&json_file, &ndjson).unwrap();

    // Appliance B's database, made by the import itself.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vigil.db");
    let out = import(&db, &csv_file);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("imported {exported} readings")),
        "{stdout}"
    );
    // The same readings again, in the other format: all already stored.
    let out = import(&db, &json_file);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported 0 readings")
            && stdout.contains(&format!("{exported} skipped as already stored")),
        "{stdout}"
    );
    assert_eq!(open_db(&db).raw_count(), exported as i64);

    let cfg = config(&dir, "");
    let b = TestServer::start_with(dir, cfg).await;
    assert_eq!(
        body(&b, &format!("/api/readings/export?{range}&format=csv")).await,
        csv
    );
    assert_eq!(
        body(&b, &format!("/api/readings/export?{range}&format=ndjson")).await,
        ndjson
    );
    // The rollups took them in: one bucket over two days comes from the
    // day tier and counts every reading.
    let span = format!("from={}&to={}", to - 2 * 86_400_000, to + 86_400_000);
    let answer = b
        .get_ok(&format!(
            "/api/series?sensor=tank&metric=value&{span}&points=1"
        ))
        .await;
    let series = &answer["series"][0];
    assert_eq!(series["tier"], "day", "{answer}");
    let counted: u64 = series["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, exported as u64, "{answer}");

    // While B runs, an import is refused and says why.
    let out = import(&b.db, &csv_file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop"), "{err}");
    let (_, _dir, db) = b.stop().await;

    // From standard input, with a bad line: named, and what came before it
    // is kept.
    let mut child = vigil()
        .args(["import", "-"])
        .env("VIGIL_DB", &db)
        .env("VIGIL_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"sensor,metric,unit,value,ts_ms\nother,v,V,1.25,1000\nother,v,V,high,2000\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3: `value` is not a number: \"high\""),
        "{err}"
    );
    assert_eq!(open_db(&db).values("other", "v"), [(1000, 1.25)]);
}
