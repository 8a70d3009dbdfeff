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
#[derive(Debug, Clone, Serialize)]
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
        let body = json!({ "event": event, "alert": alert }).to_string();
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
            let (hook, body, in_flight) = (hook.clone(), body.clone(), self.in_flight.clone());
            actix_rt::spawn(async move {
                deliver(&hook, body).await;
                in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        }
    }
}

async fn deliver(hook: &Hook, body: String) {
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
                let result = client
                    .post(&c.url)
                    .insert_header(("Content-Type", "application/json"))
                    .send_body(body.clone())
                    .await;
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

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ca_file: String::new(),
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
        deliver(h, "{}".into()).await;
        deliver(h, "{}".into()).await;
        assert_eq!(h.breaker.state(), "open");
        deliver(h, "{}".into()).await;
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
