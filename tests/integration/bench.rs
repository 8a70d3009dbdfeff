//! Smoke runs of the shipped benchmarks at tiny sizes, so that none of them
//! can break unnoticed. They check that each produces sane figures, not how
//! fast anything is.

use std::path::Path;

#[test]
fn fanout_runs_at_a_tiny_size() {
    let o = vigil::bench::fanout::FanoutOptions {
        clients: 5,
        rate: 20,
        seconds: 1,
        runs: 1,
        warmup_secs: 1,
        threads: 1,
    };
    let f = vigil::bench::fanout::run(&o, Path::new(env!("CARGO_BIN_EXE_vigil"))).unwrap();
    assert_eq!(f.connected, 5);
    let r = &f.runs[0];
    assert!(r.messages > 0, "{f:?}");
    assert!(
        r.delivery_p99_ms >= r.delivery_p50_ms && r.delivery_p50_ms > 0.0,
        "{f:?}"
    );
    assert!(r.server_rss_mib > 0.0, "{f:?}");
}

#[test]
fn ingest_runs_at_a_tiny_size() {
    let o = vigil::bench::ingest::IngestOptions {
        rows: 5000,
        series: 5,
        per_push: 7,
        batch_size: 300,
        runs: 1,
        ..Default::default()
    };
    let f = vigil::bench::ingest::run(&o).unwrap();
    assert!(f.writer_rows_per_s > 0.0 && f.raw_rows_per_s > 0.0, "{f:?}");
    assert!((f.ratio - f.writer_rows_per_s / f.raw_rows_per_s).abs() < 1e-9);
}

#[test]
fn query_runs_at_a_tiny_size() {
    let o = vigil::bench::query::QueryOptions {
        rows: 20_000,
        sensors: 2,
        connections: 4,
        seconds: 0.5,
        runs: 1,
        limit: 100,
        threads: 1,
        seal: true,
    };
    let f = vigil::bench::query::run(Path::new(env!("CARGO_BIN_EXE_vigil")), &o).unwrap();
    assert!(f.sealed);
    let r = &f.runs[0];
    assert_eq!(r.errors, 0, "{f:?}");
    assert!(r.requests_per_s > 0.0 && r.p99_ms >= r.p50_ms, "{f:?}");
}

#[test]
fn restart_runs_at_a_tiny_size() {
    let o = vigil::bench::restart::RestartOptions {
        sensors: 2,
        runs: 1,
        backoff_base_ms: Some(100),
    };
    let f = vigil::bench::restart::run(Path::new(env!("CARGO_BIN_EXE_vigil")), &o).unwrap();
    assert_eq!(f.samples, 2, "{f:?}");
    assert!(f.gap_max_ms >= f.gap_p50_ms && f.gap_p50_ms >= 0.0, "{f:?}");
    // The first reading after a failure cannot precede the scheduled delay.
    assert!(f.overhead_p50_ms >= 0.0, "{f:?}");
}

#[test]
fn startup_runs_at_a_tiny_size() {
    let f = vigil::bench::startup::run(Path::new(env!("CARGO_BIN_EXE_vigil")), 1).unwrap();
    assert!(f.fresh_p50_ms > 0.0 && f.existing_p50_ms > 0.0, "{f:?}");
}

#[test]
fn footprint_runs_at_a_tiny_size() {
    let o = vigil::bench::footprint::FootprintOptions {
        seconds: 3,
        warmup_secs: 2,
        flush_interval_ms: Some(500),
    };
    let f = vigil::bench::footprint::run(Path::new(env!("CARGO_BIN_EXE_vigil")), &o).unwrap();
    assert!(f.readings_stored > 0 && f.readings_committed > 0, "{f:?}");
    assert!(
        f.rss_median_mib > 0.0 && f.rss_max_mib >= f.rss_median_mib,
        "{f:?}"
    );
    assert!(f.bytes_per_reading.is_finite(), "{f:?}");
}

#[test]
fn mqtt_runs_at_a_tiny_size() {
    let o = vigil::bench::mqtt::MqttOptions {
        sensors: 2,
        interval_ms: 50,
        window_s: 1,
        outage_s: 1,
        runs: 1,
    };
    let f = vigil::bench::mqtt::run(Path::new(env!("CARGO_BIN_EXE_vigil")), &o).unwrap();
    assert!(f.published_per_sec > 0.0, "{f:?}");
    let d = &f.drains[0];
    assert!(d.backlog > 0 && d.replayed > 0 && d.per_sec > 0.0, "{f:?}");
}
