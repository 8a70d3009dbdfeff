//! Outbound webhooks: an HTTP or HTTPS (rustls) POST of the alert as JSON to each configured
//! URL whose severities include the alert's. Each delivery runs on a task of
//! its own with a timeout and retries with exponential backoff, so a slow or
//! dead receiver never blocks the alert manager; deliveries in flight are
//! bounded, and every outcome is counted for the API and metrics.
//!
//! Each URL has a circuit breaker (kept by the guard, so it outlives reloads
//! and restarts of the alert manager). Every attempt is a call through it;
//! while it is open, attempts are not made at all (`short_circuited`), so a
//! dead receiver costs nothing until the breaker's trial, and a notification
//! whose attempts all fall in that time counts as failed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rules::Severity;
use crate::guard::{CircuitBreaker, GuardShared};
use crate::vocab::alert::AlertView;
use crate::vocab::check::{ConfigError, positive};

/// Deliveries allowed in flight across all webhooks; more are dropped and
/// counted.
pub const MAX_IN_FLIGHT: usize = 32;

fn all_severities() -> Vec<Severity> {
    vec![
        Severity::Info,
        Severity::Warning,
        Severity::Critical,
        Severity::Emergency,
    ]
}
fn default_timeout() -> u64 {
    5000
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    1000
}

/// What a webhook's body looks like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"event": ..., "alert": {...}}`.
    #[default]
    Json,
    /// ntfy (ntfy.sh or a self-hosted server): the message as plain text,
    /// `Title`, `Priority` and `Tags` from the rule, the event and the
    /// severity.
    Ntfy,
}

/// One request body with its headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

/// The request a webhook of `format` sends for `event` of `alert`.
pub fn request(
    format: WebhookFormat,
    event: &str,
    alert: &AlertView,
    severity: Severity,
) -> Request {
    match format {
        WebhookFormat::Json => Request {
            body: json!({ "event": event, "alert": alert }).to_string(),
            headers: vec![("Content-Type", "application/json".to_owned())],
        },
        WebhookFormat::Ntfy => {
            let resolved = event == "resolved";
            // ntfy's priorities: 1 min ... 3 default ... 5 max.
            let priority = match (resolved, severity) {
                (true, _) | (false, Severity::Info) => 3,
                (false, Severity::Warning) => 4,
                (false, Severity::Critical | Severity::Emergency) => 5,
            };
            let tag = match (resolved, severity) {
                (true, _) => "white_check_mark",
                (false, Severity::Info) => "information_source",
                (false, Severity::Warning) => "warning",
                (false, Severity::Critical) => "rotating_light",
                (false, Severity::Emergency) => "sos",
            };
            Request {
                body: alert.message.clone(),
                headers: vec![
                    ("Content-Type", "text/plain; charset=utf-8".to_owned()),
                    ("Title", format!("vigil: {} {event}", alert.rule)),
                    ("Priority", priority.to_string()),
                    ("Tags", format!("{tag},{}", severity.as_str())),
                ],
            }
        }
    }
}

/// One `[[alerts.webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` or `https://...` (TLS on rustls, with the
    /// system's roots and `ca_file`).
    pub url: String,
    /// A PEM file of extra CA certificates for an `https://` URL.
    #[serde(default)]
    pub ca_file: String,
    /// `json` (the event and the alert) or `ntfy` (the message as the
    /// body; title, priority and tags as ntfy's headers).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Alerts of these severities are sent (default: all).
    #[serde(default = "all_severities")]
    pub severities: Vec<Severity>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Tries per notification before it counts as failed.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
}

impl WebhookConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"))
            .ok_or_else(|| {
                ConfigError::invalid(
                    format!("{key}.url"),
                    format!("`{}` is not an http:// or https:// URL", self.url),
                )
            })?;
        if !self.ca_file.is_empty() && !self.url.starts_with("https://") {
            return Err(ConfigError::invalid(
                format!("{key}.ca_file"),
                "is only used with an https:// URL",
            ));
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Err(ConfigError::invalid(format!("{key}.url"), "has no host"));
        }
        positive(&format!("{key}.timeout_ms"), self.timeout_ms)?;
        positive(&format!("{key}.max_attempts"), u64::from(self.max_attempts))?;
        if self.severities.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.severities"),
                "is empty; omit it for all",
            ));
        }
        Ok(())
    }
}

/// Delivery counters of one webhook.
#[derive(Debug, Default)]
struct HookStats {
    sent: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    short_circuited: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct Hook {
    config: WebhookConfig,
    stats: HookStats,
    breaker: Arc<CircuitBreaker>,
    /// The TLS client config of an `https://` URL; an error (an unusable
    /// CA file) fails every delivery with its message.
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
}

/// A webhook as `/api/alerts/rules` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct WebhookView {
    pub url: String,
    pub severities: Vec<Severity>,
    pub sent: u64,
    pub failed: u64,
    pub retries: u64,
    pub dropped: u64,
    /// Attempts not made because the URL's circuit breaker was open.
    pub short_circuited: u64,
    pub breaker: &'static str,
    pub last_error: Option<String>,
}

/// The configured webhooks and their delivery state.
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
    in_flight: Arc<AtomicUsize>,
}

impl Webhooks {
    pub fn new(configs: &[WebhookConfig], guard: &GuardShared) -> Webhooks {
        Webhooks {
            hooks: configs
                .iter()
                .map(|c| {
                    let tls = c.url.starts_with("https://").then(|| {
                        let ca = (!c.ca_file.is_empty()).then(|| std::path::Path::new(&c.ca_file));
                        crate::platform::tls::client_config(ca)
                    });
                    if let Some(Err(e)) = &tls {
                        log::error!("webhook {}: {e}", c.url);
                    }
                    Arc::new(Hook {
                        config: c.clone(),
                        stats: HookStats::default(),
                        breaker: guard.webhook(&c.url, Duration::from_millis(c.timeout_ms)),
                        tls,
                    })
                })
                .collect(),
            in_flight: Arc::default(),
        }
    }

    pub fn views(&self) -> Vec<WebhookView> {
        self.hooks
            .iter()
            .map(|h| WebhookView {
                url: h.config.url.clone(),
                severities: h.config.severities.clone(),
                sent: h.stats.sent.load(Ordering::Relaxed),
                failed: h.stats.failed.load(Ordering::Relaxed),
                retries: h.stats.retries.load(Ordering::Relaxed),
                dropped: h.stats.dropped.load(Ordering::Relaxed),
                short_circuited: h.stats.short_circuited.load(Ordering::Relaxed),
                breaker: h.breaker.state(),
                last_error: h
                    .stats
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            })
            .collect()
    }

    /// Starts delivering `event` (fired / resolved / acknowledged) of
    /// `alert` to every webhook that wants its severity. Returns at once;
    /// must run inside the actix runtime.
    pub fn notify(&self, event: &str, alert: &AlertView, severity: Severity) {
        for hook in &self.hooks {
            if !hook.config.severities.contains(&severity) {
                continue;
            }
            if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                hook.stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "webhook {}: too many deliveries in flight; one dropped",
                    hook.config.url
                );
                continue;
            }
            let body = request(hook.config.format, event, alert, severity);
            let (hook, in_flight) = (hook.clone(), self.in_flight.clone());
            actix_rt::spawn(async move {
                deliver(&hook, body).await;
                in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}

async fn deliver(hook: &Hook, body: Request) {
    let c = &hook.config;
    let builder = awc::Client::builder().timeout(Duration::from_millis(c.timeout_ms));
    let client = match &hook.tls {
        None => builder.finish(),
        Some(Ok(tls)) => builder
            .connector(awc::Connector::new().rustls_0_23(tls.clone()))
            .finish(),
        Some(Err(e)) => {
            hook.stats.failed.fetch_add(1, Ordering::Relaxed);
            *hook
                .stats
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
            return;
        }
    };
    for attempt in 1..=c.max_attempts {
        let error = match hook.breaker.try_call() {
            Err(rejected) => {
                hook.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
                format!(
                    "not attempted: circuit breaker open for another {} ms",
                    rejected.retry_in.as_millis()
                )
            }
            Ok(call) => {
                let mut req = client.post(&c.url);
                for (name, value) in &body.headers {
                    req = req.insert_header((*name, value.as_str()));
                }
                let result = req.send_body(body.body.clone()).await;
                let ok = matches!(&result, Ok(res) if res.status().is_success());
                call.finish(ok);
                match result {
                    Ok(res) if res.status().is_success() => {
                        hook.stats.sent.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(res) => format!("answered {}", res.status()),
                    Err(e) => e.to_string(),
                }
            }
        };
        *hook
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
        if attempt == c.max_attempts {
            hook.stats.failed.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "webhook {}: giving up after {attempt} attempts: {error}",
                c.url
            );
            return;
        }
        hook.stats.retries.fetch_add(1, Ordering::Relaxed);
        let base = c.backoff_ms.saturating_mul(1 << (attempt - 1).min(16));
        let delay = Duration::from_millis(base).mul_f64(0.5 + 0.5 * fastrand::f64());
        actix_rt::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_request() -> Request {
        Request {
            body: "{}".into(),
            headers: vec![("Content-Type", "application/json".to_owned())],
        }
    }

    #[test]
    fn the_ntfy_preset_takes_title_priority_and_tags_from_the_alert() {
        let alert = AlertView {
            id: 1,
            key: "tank high".into(),
            rule: "tank high".into(),
            severity: "critical".into(),
            state: "firing".into(),
            message: "tank is 30 (above 25)".into(),
            value: Some(30.0),
            fired_at: String::new(),
            fired_at_ms: 0,
            resolved_at: None,
            acknowledged: false,
            acked_at: None,
        };
        let r = request(WebhookFormat::Ntfy, "fired", &alert, Severity::Critical);
        assert_eq!(r.body, "tank is 30 (above 25)");
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("Title").as_deref(), Some("vigil: tank high fired"));
        assert_eq!(h("Priority").as_deref(), Some("5"));
        assert_eq!(h("Tags").as_deref(), Some("rotating_light,critical"));
        let r = request(WebhookFormat::Ntfy, "resolved", &alert, Severity::Critical);
        let h = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("Priority").as_deref(), Some("3"));
        assert!(h("Tags").unwrap().starts_with("white_check_mark"));
        let r = request(WebhookFormat::Json, "fired", &alert, Severity::Warning);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["event"], "fired");
        assert_eq!(v["alert"]["rule"], "tank high");
    }

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ca_file: String::new(),
            format: WebhookFormat::Json,
            severities: all_severities(),
            timeout_ms: 1000,
            max_attempts: 3,
            backoff_ms: 10,
        }
    }

    #[test]
    fn urls_are_http_or_https_and_a_ca_file_needs_https() {
        assert!(hook("https://ntfy.example/topic").validate("w").is_ok());
        let e = hook("ftp://x/").validate("w").unwrap_err().to_string();
        assert!(e.contains("w.url"), "{e}");
        let e = WebhookConfig {
            ca_file: "/ca.pem".into(),
            ..hook("http://x/")
        }
        .validate("w")
        .unwrap_err()
        .to_string();
        assert!(e.contains("w.ca_file"), "{e}");
    }

    #[actix_rt::test]
    async fn a_dead_receiver_opens_its_breaker_and_is_then_not_attempted() {
        use crate::guard::GuardConfig;
        // Nothing listens on this port: every attempt fails at once.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", dead.local_addr().unwrap());
        drop(dead);
        let mut cfg = GuardConfig::default();
        cfg.webhooks.window = 2;
        cfg.webhooks.min_calls = 2;
        let guard = GuardShared::new(cfg, crate::vocab::bus::Bus::new());
        let hooks = Webhooks::new(
            &[WebhookConfig {
                max_attempts: 1,
                ..hook(&url)
            }],
            &guard,
        );
        let h = &hooks.hooks[0];
        deliver(h, json_request()).await;
        deliver(h, json_request()).await;
        assert_eq!(h.breaker.state(), "open");
        deliver(h, json_request()).await;
        let v = &hooks.views()[0];
        assert_eq!((v.failed, v.short_circuited, v.sent), (3, 1, 0));
        assert_eq!(v.breaker, "open");
        assert!(
            v.last_error
                .as_deref()
                .unwrap()
                .contains("circuit breaker open")
        );
        // The same URL after a reload finds the same breaker.
        let again = Webhooks::new(&[hook(&url)], &guard);
        assert_eq!(again.views()[0].breaker, "open");
    }

    #[test]
    fn urls_are_checked() {
        assert!(hook("http://relay.local:9000/hook").validate("w").is_ok());
        let e = hook("ws://x").validate("alerts.webhooks[0]").unwrap_err();
        assert!(e.to_string().contains("alerts.webhooks[0].url"), "{e}");
        assert!(hook("http:///x").validate("w").is_err());
        assert!(hook("https:///x").validate("w").is_err());
    }
}
