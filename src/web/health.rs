//! `GET /health`: liveness and readiness in one answer. 200 when the
//! database is writable (its circuit breaker closed) and the supervision
//! tree is healthy, 503 otherwise, always with the reasons; other open
//! breakers and memory pressure are warnings.

use actix_web::{HttpResponse, web};
use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use crate::mqtt::MqttView;
use crate::storage::writer::WriterStatus;
use crate::supervisor::ChildState;
use crate::vocab::clock::now_ms;
use crate::vocab::guard::Guarded;

#[derive(Serialize, JsonSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    status: &'static str,
    /// Why the appliance is not ready (makes the answer a 503).
    reasons: Vec<String>,
    /// Worth knowing, not worth failing readiness for.
    warnings: Vec<String>,
    uptime_s: i64,
    version: &'static str,
    writer: WriterStatus,
    mqtt: MqttView,
}

pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();

    let writer = state.writer.status();
    if !writer.running {
        reasons.push("the database writer is not running".to_owned());
    }
    if !writer.writable {
        reasons.push(format!(
            "the database is not writable: {}",
            writer.last_error.as_deref().unwrap_or("unknown error")
        ));
    }
    for b in state.guard.breakers.all() {
        let v = b.view();
        if v.state != "open" && v.state != "half_open" {
            continue;
        }
        let msg = format!(
            "circuit breaker {} is {}: {}{}",
            v.name,
            v.state.replace('_', "-"),
            v.last_reason.as_deref().unwrap_or("no reason recorded"),
            v.next_trial_at
                .map(|t| format!("; next trial at {t}"))
                .unwrap_or_default()
        );
        if v.guards == Guarded::Database {
            reasons.push(msg);
        } else {
            warnings.push(msg);
        }
    }
    let memory = state.guard.memory();
    if memory.above_soft_limit {
        warnings.push(format!(
            "memory: RSS {:.1} MiB is above the soft limit of {:.1} MiB",
            memory.rss_bytes.unwrap_or(0) as f64 / 1048576.0,
            memory.soft_limit_bytes as f64 / 1048576.0
        ));
    }
    if let (Some(since), Some(error)) = (&writer.sealing.failing_since, &writer.sealing.last_error)
    {
        warnings.push(format!(
            "sealing has failed since {since} ({} failed attempts since start): {error}; the unsealed readings \
             stay readable, the database grows until a seal succeeds",
            writer.sealing.failures
        ));
    }
    if writer.queue.dropped > 0 {
        warnings.push(format!(
            "{} readings dropped by the overflow policy",
            writer.queue.dropped
        ));
    }

    match state.tree().await {
        Err(e) => reasons.push(e.to_string()),
        Ok(tree) => {
            for node in tree.walk() {
                if node.state != ChildState::Failed {
                    continue;
                }
                let msg = format!(
                    "{} {} was given up after {} restarts: {}",
                    node.kind,
                    node.name,
                    node.restarts,
                    node.last_error.as_deref().unwrap_or("no error recorded")
                );
                if node.essential {
                    reasons.push(msg);
                } else {
                    warnings.push(msg);
                }
            }
        }
    }
    for s in &state.sensors.all() {
        let st = s.status();
        if s.config.enabled && !st.available {
            warnings.push(format!(
                "sensor {} unavailable: {}",
                s.config.name,
                st.unavailable_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            ));
        }
    }

    let mqtt = state.mqtt.view();
    if mqtt.enabled && !mqtt.connected {
        warnings.push(format!(
            "mqtt: not connected to {}: {}; readings are stored and will be replayed",
            mqtt.broker,
            mqtt.last_error.as_deref().unwrap_or("connecting")
        ));
    }

    let ok = reasons.is_empty();
    let body = Health {
        status: if ok { "ok" } else { "degraded" },
        reasons,
        warnings,
        uptime_s: (now_ms() - state.started_ms) / 1000,
        version: env!("CARGO_PKG_VERSION"),
        writer,
        mqtt,
    };
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
