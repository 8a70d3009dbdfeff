//! `GET /metrics`: the appliance's figures in the Prometheus text format
//! (version 0.0.4), with HELP and TYPE lines: operation latencies as
//! summaries, the writer and ingest queue, sensors, supervision, the live
//! feed, alerts, pacing, circuit breakers and rate limits, the database and
//! the process. CI checks the output
//! with `promtool check metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{HttpResponse, web};

use super::AppState;
use super::performance::{db_figures, process_figures};
use crate::alerts::{AlertFilter, GetAlerts};
use crate::supervisor::ChildState;

/// The text being built; each family's HELP and TYPE are written once,
/// before its first sample.
#[derive(Default)]
struct Exposition {
    text: String,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// A family with one sample per subject, each labelled `label="…"`.
    fn per<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        self.family(name, kind, help);
        for (subject, value) in samples {
            self.sample(name, &[(label, subject)], value);
        }
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v == 0.0 || (1e-5..1e16).contains(&v.abs()) {
        // The shortest text that parses back to the same f64: a sensor's
        // value exactly as the API gives it.
        format!("{v}")
    } else {
        // Very small or large: the same, with an exponent rather than a
        // run of zeros.
        format!("{v:e}")
    }
}

/// `GET /metrics`
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut m = Exposition::default();
    let b = |v: bool| if v { 1.0 } else { 0.0 };

    m.family("vigil_build_info", "gauge", "Build information; always 1.");
    m.sample(
        "vigil_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    if let Some(p) = process_figures(&state) {
        m.single(
            "vigil_uptime_seconds",
            "gauge",
            "Seconds since the appliance started.",
            p.uptime_s,
        );
        m.single(
            "vigil_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process.",
            p.rss_bytes as f64,
        );
        m.single(
            "vigil_process_cpu_seconds_total",
            "counter",
            "CPU time used by the process.",
            p.cpu_seconds,
        );
    }

    let ops = state.perf.stats();
    m.family(
        "vigil_operation_duration_seconds",
        "summary",
        "Duration of each kind of operation (sensor reads, commits, HTTP routes, WebSocket sends, queries).",
    );
    for o in &ops {
        for (q, v) in [("0.5", o.p50_ms), ("0.95", o.p95_ms), ("0.99", o.p99_ms)] {
            m.sample(
                "vigil_operation_duration_seconds",
                &[("op", &o.name), ("quantile", q)],
                v / 1000.0,
            );
        }
        m.sample(
            "vigil_operation_duration_seconds_sum",
            &[("op", &o.name)],
            o.total_ms / 1000.0,
        );
        m.sample(
            "vigil_operation_duration_seconds_count",
            &[("op", &o.name)],
            o.count as f64,
        );
    }
    m.per(
        "vigil_operation_errors_total",
        "counter",
        "Operations that failed.",
        "op",
        ops.iter().map(|o| (&*o.name, o.errors as f64)),
    );
    m.per(
        "vigil_operation_units_total",
        "counter",
        "Things operations handled: rows committed, and so on.",
        "op",
        ops.iter()
            .filter(|o| o.units > 0)
            .map(|o| (&*o.name, o.units as f64)),
    );

    let w = state.writer.status();
    m.single(
        "vigil_database_writable",
        "gauge",
        "1 while the last commit succeeded.",
        b(w.writable),
    );
    m.single(
        "vigil_readings_committed_total",
        "counter",
        "Readings committed to the database since start.",
        w.committed_rows as f64,
    );
    m.single(
        "vigil_commit_failures_total",
        "counter",
        "Commits that failed (their readings stayed queued).",
        w.failed_commits as f64,
    );
    m.single(
        "vigil_readings_sealed_total",
        "counter",
        "Readings moved from rows into compressed hour chunks since start.",
        w.sealing.readings_sealed as f64,
    );
    m.single(
        "vigil_chunks_sealed_total",
        "counter",
        "Hours of one series sealed into a chunk since start.",
        w.sealing.chunks_sealed as f64,
    );
    m.single(
        "vigil_sealing_failures_total",
        "counter",
        "Seal attempts that failed since start (retried at the next pass).",
        w.sealing.failures as f64,
    );
    m.single(
        "vigil_sealing_failing",
        "gauge",
        "1 while sealing fails without a seal succeeding in between, else 0.",
        if w.sealing.failing_since.is_some() {
            1.0
        } else {
            0.0
        },
    );
    m.single(
        "vigil_readings_accepted_total",
        "counter",
        "Readings accepted into the ingest queue.",
        w.queue.accepted as f64,
    );
    m.single(
        "vigil_readings_dropped_total",
        "counter",
        "Readings dropped by the ingest queue's overflow policy.",
        w.queue.dropped as f64,
    );
    m.single(
        "vigil_ingest_queue_readings",
        "gauge",
        "Readings waiting to be committed.",
        w.queue.len as f64,
    );
    m.single(
        "vigil_ingest_queue_capacity_readings",
        "gauge",
        "Capacity of the ingest queue.",
        w.queue.capacity as f64,
    );

    // One status snapshot per sensor for all its families.
    let all = state.sensors.all();
    let sensors: Vec<_> = all
        .iter()
        .map(|s| (&*s.config.name, s.config.enabled, s.status()))
        .collect();
    m.per(
        "vigil_sensor_reads_total",
        "counter",
        "Successful reads per sensor.",
        "sensor",
        sensors.iter().map(|(n, _, st)| (*n, st.reads as f64)),
    );
    m.per(
        "vigil_sensor_errors_total",
        "counter",
        "Failed reads per sensor.",
        "sensor",
        sensors.iter().map(|(n, _, st)| (*n, st.errors as f64)),
    );
    m.per(
        "vigil_sensor_rejected_total",
        "counter",
        "Inputs a sensor's driver refused (an MQTT payload that is not a number), per sensor.",
        "sensor",
        sensors.iter().map(|(n, _, st)| (*n, st.rejected as f64)),
    );
    let enabled = || sensors.iter().filter(|(_, enabled, _)| *enabled);
    m.per(
        "vigil_sensor_available",
        "gauge",
        "1 while a sensor's data source is present.",
        "sensor",
        enabled().map(|(n, _, st)| (*n, b(st.available))),
    );
    m.per(
        "vigil_sensor_interval_seconds",
        "gauge",
        "A sensor's polling interval now (after pacing).",
        "sensor",
        enabled().map(|(n, _, st)| (*n, st.effective_interval_ms as f64 / 1000.0)),
    );

    // The readings themselves: the latest accepted value of every series,
    // and how old it is.
    let latest = state.writer.queue.head().latest();
    let now = crate::vocab::clock::now_ms();
    m.family(
        "vigil_sensor_value",
        "gauge",
        "The latest value of each sensor's metric, in its unit.",
    );
    for l in &latest {
        let k = &l.series;
        m.sample(
            "vigil_sensor_value",
            &[
                ("sensor", &k.sensor),
                ("metric", &k.metric),
                ("unit", &k.unit),
            ],
            l.value,
        );
    }
    m.family(
        "vigil_sensor_value_age_seconds",
        "gauge",
        "Seconds since the latest value of each sensor's metric was taken.",
    );
    for l in &latest {
        let k = &l.series;
        m.sample(
            "vigil_sensor_value_age_seconds",
            &[("sensor", &k.sensor), ("metric", &k.metric)],
            (now - l.ts_ms).max(0) as f64 / 1000.0,
        );
    }

    if let Ok(tree) = state.tree().await {
        // The same state as the tree and /api/sensors, one sample per state.
        let sensors_node = tree.find("sensors");
        let node_of =
            |name: &str| sensors_node.and_then(|n| n.children.iter().find(|c| c.name == name));
        m.family(
            "vigil_sensor_state",
            "gauge",
            "1 for the state each sensor is in (running, paused, suspended, unavailable, restarting, failed, disabled, stopped).",
        );
        for (name, enabled, _) in &sensors {
            let now = ChildState::of_sensor(*enabled, node_of(name).map(|n| n.state));
            for st in ChildState::SENSOR_STATES {
                m.sample(
                    "vigil_sensor_state",
                    &[("sensor", name), ("state", st.as_str())],
                    b(st == now),
                );
            }
        }
        m.family(
            "vigil_sensor_revive_in_seconds",
            "gauge",
            "Seconds until a failed sensor is tried again.",
        );
        for (name, _, _) in &sensors {
            if let Some(ms) = node_of(name).and_then(|n| n.next_revive_in_ms) {
                m.sample(
                    "vigil_sensor_revive_in_seconds",
                    &[("sensor", name)],
                    ms as f64 / 1000.0,
                );
            }
        }
        let nodes: Vec<_> = tree.walk().into_iter().skip(1).collect();
        m.family(
            "vigil_child_restarts_total",
            "counter",
            "Restarts of each supervised child.",
        );
        for n in &nodes {
            m.sample(
                "vigil_child_restarts_total",
                &[("child", &n.name), ("kind", &n.kind)],
                f64::from(n.restarts),
            );
        }
        m.family(
            "vigil_child_up",
            "gauge",
            "1 while a supervised child is running.",
        );
        for n in &nodes {
            m.sample(
                "vigil_child_up",
                &[("child", &n.name), ("kind", &n.kind)],
                b(n.state == ChildState::Running),
            );
        }
    }

    let live = &state.live.stats;
    m.single(
        "vigil_live_sessions",
        "gauge",
        "Open live-feed sessions.",
        state.live.session_count() as f64,
    );
    m.single(
        "vigil_live_messages_sent_total",
        "counter",
        "Messages sent to live-feed clients.",
        live.messages_sent.load(Ordering::Relaxed) as f64,
    );
    m.single(
        "vigil_live_updates_dropped_total",
        "counter",
        "Updates slow live-feed clients lost.",
        live.updates_dropped.load(Ordering::Relaxed) as f64,
    );
    m.single(
        "vigil_http_connections",
        "gauge",
        "HTTP connections open.",
        state.connections.open() as f64,
    );

    let mq = state.mqtt.view();
    if mq.enabled {
        for (name, kind, help, v) in [
            (
                "vigil_mqtt_connected",
                "gauge",
                "1 while connected to the MQTT broker.",
                mq.connected as u64,
            ),
            (
                "vigil_mqtt_published_total",
                "counter",
                "Live readings confirmed by the MQTT broker.",
                mq.published,
            ),
            (
                "vigil_mqtt_replayed_total",
                "counter",
                "Readings replayed from storage and confirmed by the MQTT broker.",
                mq.replayed,
            ),
            (
                "vigil_mqtt_dropped_total",
                "counter",
                "Live publishes dropped (no connection, lag, full queue); each is replayed from storage.",
                mq.dropped,
            ),
            (
                "vigil_mqtt_backlog",
                "gauge",
                "Readings waiting to be replayed to the MQTT broker, as seen this run.",
                mq.backlog,
            ),
            (
                "vigil_mqtt_unconfirmed",
                "gauge",
                "Readings published and not yet confirmed by the MQTT broker.",
                mq.unconfirmed,
            ),
            (
                "vigil_mqtt_alert_backlog",
                "gauge",
                "Alert rules whose current state waits for the next MQTT connection.",
                mq.alert_backlog,
            ),
            (
                "vigil_mqtt_alerts_republished_total",
                "counter",
                "Alert states published again to the MQTT broker after a gap.",
                mq.alerts_republished,
            ),
            (
                "vigil_mqtt_connects_total",
                "counter",
                "Connections made to the MQTT broker.",
                mq.connects,
            ),
            (
                "vigil_mqtt_connection_failures_total",
                "counter",
                "MQTT connections lost or attempts failed.",
                mq.connection_failures,
            ),
        ] {
            m.single(name, kind, help, v as f64);
        }
        m.single(
            "vigil_mqtt_position_timestamp_seconds",
            "gauge",
            "Every reading up to this time is confirmed at the MQTT broker.",
            mq.position_ms as f64 / 1000.0,
        );
    }

    if let Some(addr) = state.alerts.current() {
        let filter = AlertFilter {
            state: Some("firing".into()),
            limit: 10_000,
            ..AlertFilter::default()
        };
        if let Ok(Ok(firing)) =
            tokio::time::timeout(Duration::from_secs(2), addr.send(GetAlerts(filter))).await
        {
            let mut by: BTreeMap<&str, f64> = ["info", "warning", "critical", "emergency"]
                .into_iter()
                .map(|s| (s, 0.0))
                .collect();
            for a in &firing {
                if let Some(n) = by.get_mut(a.severity.as_str()) {
                    *n += 1.0;
                }
            }
            m.family(
                "vigil_alerts_firing",
                "gauge",
                "Alerts firing now, by severity.",
            );
            for (sev, n) in by {
                m.sample("vigil_alerts_firing", &[("severity", sev)], n);
            }
        }
    }

    let p = state.pacing.status();
    m.single(
        "vigil_pacing_level",
        "gauge",
        "Pacing level: 0 normal, 1 warm, 2 hot, 3 critical.",
        p.level.index() as f64,
    );
    m.single(
        "vigil_pacing_multiplier",
        "gauge",
        "Polling interval multiplier now.",
        p.multiplier,
    );
    if let Some(t) = p.thermal.temperature_c {
        m.single(
            "vigil_soc_temperature_celsius",
            "gauge",
            "SoC temperature seen by the thermal watchdog.",
            t,
        );
    }

    let g = state.guard.view();
    let breakers: Vec<_> = g
        .breakers
        .iter()
        .filter(|b| b.state != "disabled")
        .collect();
    if !breakers.is_empty() {
        m.family(
            "vigil_breaker_state",
            "gauge",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        );
        for b in &breakers {
            let v = match b.state {
                "open" => 2.0,
                "half_open" => 1.0,
                _ => 0.0,
            };
            m.sample("vigil_breaker_state", &[("breaker", &b.name)], v);
        }
        m.family(
            "vigil_breaker_trips_total",
            "counter",
            "Times a circuit breaker opened.",
        );
        for b in &breakers {
            m.sample(
                "vigil_breaker_trips_total",
                &[("breaker", &b.name)],
                b.trips as f64,
            );
        }
        m.family(
            "vigil_breaker_rejected_total",
            "counter",
            "Calls a circuit breaker refused.",
        );
        for b in &breakers {
            m.sample(
                "vigil_breaker_rejected_total",
                &[("breaker", &b.name)],
                b.rejected as f64,
            );
        }
    }
    m.single(
        "vigil_rate_limited_requests_total",
        "counter",
        "HTTP requests refused with 429 by the per-client limit.",
        g.http.rejected as f64,
    );
    m.single(
        "vigil_rate_limit_clients",
        "gauge",
        "Clients the per-client rate limiter holds a state for.",
        g.http.clients as f64,
    );
    m.single(
        "vigil_admin_ops_limited_total",
        "counter",
        "Expensive admin operations refused by their shared limit.",
        g.admin.rejected as f64,
    );
    m.single(
        "vigil_memory_above_soft_limit",
        "gauge",
        "1 while vigil's RSS is above guard.memory.soft_limit_mib.",
        f64::from(u8::from(g.memory.above_soft_limit)),
    );
    m.single(
        "vigil_memory_sheds_total",
        "counter",
        "Times buffers and caches were shed under memory pressure.",
        g.memory.sheds as f64,
    );

    if let Ok(db) = db_figures(&state).await {
        m.family(
            "vigil_database_size_bytes",
            "gauge",
            "Size of the database files.",
        );
        m.sample(
            "vigil_database_size_bytes",
            &[("file", "main")],
            db.db_bytes as f64,
        );
        m.sample(
            "vigil_database_size_bytes",
            &[("file", "wal")],
            db.wal_bytes as f64,
        );
        m.family(
            "vigil_database_pages",
            "gauge",
            "Pages of the database, and how many are free.",
        );
        m.sample(
            "vigil_database_pages",
            &[("state", "total")],
            db.page_count as f64,
        );
        m.sample(
            "vigil_database_pages",
            &[("state", "free")],
            db.freelist_count as f64,
        );
    }

    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values_are_escaped_and_formatted() {
        let mut m = Exposition::default();
        m.family("x_total", "counter", "a \\ b\nc");
        m.sample("x_total", &[("l", "a\"b\\c\nd")], 1.5);
        m.sample("x_total", &[], f64::INFINITY);
        m.sample("x_total", &[], 0.338 / 1000.0);
        m.sample("x_total", &[], 42.0);
        m.sample("x_total", &[], 1.5e-10);
        m.sample("x_total", &[], -1e300);
        m.sample("x_total", &[], 16.704411776123457);
        assert_eq!(
            m.text,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{l=\"a\\\"b\\\\c\\nd\"} 1.5\nx_total +Inf\nx_total 0.00033800000000000003\nx_total 42\nx_total 1.5e-10\nx_total -1e300\nx_total 16.704411776123457\n"
        );
        // Every finite value parses back to itself.
        for v in [0.1 + 0.2, 1.5e-10, 9.99e15, 1e16, -2.5e-6, 123456.789] {
            assert_eq!(
                number(v).parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{v}"
            );
        }
    }
}
