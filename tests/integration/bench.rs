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
    };
    let f = vigil::bench::ingest::run(&o).unwrap();
    assert!(f.writer_rows_per_s > 0.0 && f.raw_rows_per_s > 0.0, "{f:?}");
    assert!((f.ratio - f.writer_rows_per_s / f.raw_rows_per_s).abs() < 1e-9);
}
