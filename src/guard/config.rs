//! `[guard]`: circuit breakers per use (database commits, sensor reads,
//! webhooks, MQTT brokers), rate limits (HTTP clients, expensive admin operations), the
//! memory guard and the systemd watchdog's deadline. Every key is
//! documented, with its default, in `config/vigil.toml`.
//!
//! The three breaker tables share one shape but not their defaults, so a
//! table that names some keys takes the rest from its own use's defaults
//! (`[guard.sensors] window = 20` keeps the sensors' other defaults, not the
//! database's).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::breaker::BreakerPolicy;
use super::client::Cidr;
use crate::vocab::check::{ConfigError, positive};

/// `[guard]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// How often the keyed rate limiters forget clients that are idle again.
    pub trim_interval_ms: u64,
    /// Per-client limit on the HTTP API.
    pub http: HttpLimitConfig,
    /// One limit, across all clients, on expensive admin operations.
    pub admin: AdminLimitConfig,
    pub memory: MemoryConfig,
    pub watchdog: WatchdogConfig,
    /// The breaker around the writer's commits.
    #[serde(
        default = "BreakerConfig::database",
        deserialize_with = "database_breaker"
    )]
    pub database: BreakerConfig,
    /// The breaker of each sensor's reads (one per sensor, same settings).
    #[serde(
        default = "BreakerConfig::sensors",
        deserialize_with = "sensors_breaker"
    )]
    pub sensors: BreakerConfig,
    /// The breaker of each webhook URL's deliveries.
    #[serde(
        default = "BreakerConfig::webhooks",
        deserialize_with = "webhooks_breaker"
    )]
    pub webhooks: BreakerConfig,
    /// The breaker of each MQTT broker's connection attempts.
    #[serde(
        default = "BreakerConfig::brokers",
        deserialize_with = "brokers_breaker"
    )]
    pub brokers: BreakerConfig,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            trim_interval_ms: 60_000,
            http: HttpLimitConfig::default(),
            admin: AdminLimitConfig::default(),
            memory: MemoryConfig::default(),
            watchdog: WatchdogConfig::default(),
            database: BreakerConfig::database(),
            sensors: BreakerConfig::sensors(),
            webhooks: BreakerConfig::webhooks(),
            brokers: BreakerConfig::brokers(),
        }
    }
}

impl GuardConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("guard.trim_interval_ms", self.trim_interval_ms)?;
        self.http.validate()?;
        positive(
            "guard.admin.ops_per_minute",
            u64::from(self.admin.ops_per_minute),
        )?;
        positive("guard.admin.burst", u64::from(self.admin.burst))?;
        positive(
            "guard.memory.check_interval_ms",
            self.memory.check_interval_ms,
        )?;
        positive(
            "guard.watchdog.writer_deadline_ms",
            self.watchdog.writer_deadline_ms,
        )?;
        self.database.validate("guard.database")?;
        self.sensors.validate("guard.sensors")?;
        self.webhooks.validate("guard.webhooks")?;
        self.brokers.validate("guard.brokers")
    }
}

/// `[guard.http]`: a token bucket per client address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per client ...
    pub requests_per_sec: u32,
    /// ... with bursts up to this many.
    pub burst: u32,
    /// Clients tracked at once; beyond it, new clients share one bucket
    /// until idle ones are forgotten.
    pub max_clients: usize,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is
    /// believed. Empty: the header is ignored.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpLimitConfig {
    fn default() -> Self {
        HttpLimitConfig {
            enabled: true,
            requests_per_sec: 20,
            burst: 100,
            max_clients: 10_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl HttpLimitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "guard.http.requests_per_sec",
            u64::from(self.requests_per_sec),
        )?;
        positive("guard.http.burst", u64::from(self.burst))?;
        positive("guard.http.max_clients", self.max_clients as u64)?;
        self.proxies().map(|_| ())
    }

    /// The trusted proxies, parsed.
    pub fn proxies(&self) -> Result<Vec<Cidr>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse().map_err(|e| {
                    ConfigError::invalid(format!("guard.http.trusted_proxies[{i}]"), e)
                })
            })
            .collect()
    }
}

/// `[guard.admin]`: reload, restart, optimize, backup and the like.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminLimitConfig {
    /// Sustained operations per minute, all clients together ...
    pub ops_per_minute: u32,
    /// ... with bursts up to this many.
    pub burst: u32,
}

impl Default for AdminLimitConfig {
    fn default() -> Self {
        AdminLimitConfig {
            ops_per_minute: 6,
            burst: 3,
        }
    }
}

/// `[guard.memory]`: the process's own resident memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Above this RSS (MiB) vigil sheds what it can; 0 turns the guard off.
    pub soft_limit_mib: u64,
    pub check_interval_ms: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            soft_limit_mib: 128,
            check_interval_ms: 5000,
        }
    }
}

/// `[guard.watchdog]`: what keeps systemd's watchdog fed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// The writer must answer within this long, or it counts as wedged and
    /// the watchdog is no longer fed.
    pub writer_deadline_ms: u64,
    /// While the writer runs a long job on purpose (an optimize, a full
    /// VACUUM), it may stay silent this long before it counts as wedged.
    pub maintenance_grace_ms: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            writer_deadline_ms: 60_000,
            maintenance_grace_ms: 3_600_000,
        }
    }
}

/// One use's circuit breaker settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// Failed calls, in percent of the window, that open the breaker.
    pub failure_rate_percent: f64,
    /// Slow calls, in percent of the window, that open the breaker.
    pub slow_call_rate_percent: f64,
    /// A call slower than this is slow. 0: three quarters of the guarded
    /// call's own timeout (the sensor's `timeout_ms`, the webhook's
    /// `timeout_ms`, `storage.busy_timeout_ms`).
    pub slow_call_ms: u64,
    /// Calls in the sliding window.
    pub window: u32,
    /// Calls the window must hold before it is judged.
    pub min_calls: u32,
    /// First wait in open; doubles with every trip in a row ...
    pub open_wait_ms: u64,
    /// ... up to this.
    pub open_wait_max_ms: u64,
    /// Trial calls in half-open.
    pub half_open_calls: u32,
}

impl BreakerConfig {
    /// Commits: two failed flushes in a row open it; retried after 10 s,
    /// then ever more rarely, up to every 5 minutes.
    pub fn database() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_rate_percent: 50.0,
            slow_call_rate_percent: 100.0,
            slow_call_ms: 0,
            window: 4,
            min_calls: 2,
            open_wait_ms: 10_000,
            open_wait_max_ms: 300_000,
            half_open_calls: 1,
        }
    }

    /// Sensor reads: only a sensor failing (or slow) most of the time is
    /// held back, since holding it back loses readings.
    pub fn sensors() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_rate_percent: 80.0,
            slow_call_rate_percent: 100.0,
            slow_call_ms: 0,
            window: 10,
            min_calls: 5,
            open_wait_ms: 5000,
            open_wait_max_ms: 300_000,
            half_open_calls: 1,
        }
    }

    /// Webhook deliveries, per URL.
    pub fn webhooks() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_rate_percent: 50.0,
            slow_call_rate_percent: 100.0,
            slow_call_ms: 0,
            window: 10,
            min_calls: 4,
            open_wait_ms: 30_000,
            open_wait_max_ms: 600_000,
            half_open_calls: 1,
        }
    }

    /// Connection attempts to an MQTT broker: a broker refusing most
    /// attempts is left alone for a growing while.
    pub fn brokers() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_rate_percent: 50.0,
            slow_call_rate_percent: 100.0,
            slow_call_ms: 0,
            window: 10,
            min_calls: 4,
            open_wait_ms: 5000,
            open_wait_max_ms: 300_000,
            half_open_calls: 1,
        }
    }

    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        for (k, v) in [
            ("failure_rate_percent", self.failure_rate_percent),
            ("slow_call_rate_percent", self.slow_call_rate_percent),
        ] {
            if !(v > 0.0 && v <= 100.0) {
                return Err(ConfigError::invalid(
                    key(k),
                    format!("{v} is not a percentage above 0 and at most 100"),
                ));
            }
        }
        if !(1..=10_000).contains(&self.window) {
            return Err(ConfigError::invalid(
                key("window"),
                format!("{} is not from 1 to 10000", self.window),
            ));
        }
        if !(1..=self.window).contains(&self.min_calls) {
            return Err(ConfigError::invalid(
                key("min_calls"),
                format!(
                    "{} is not from 1 to window ({})",
                    self.min_calls, self.window
                ),
            ));
        }
        positive(&key("open_wait_ms"), self.open_wait_ms)?;
        if self.open_wait_max_ms < self.open_wait_ms {
            return Err(ConfigError::invalid(
                key("open_wait_max_ms"),
                format!(
                    "{} is below {} ({})",
                    self.open_wait_max_ms,
                    key("open_wait_ms"),
                    self.open_wait_ms
                ),
            ));
        }
        if !(1..=1000).contains(&self.half_open_calls) {
            return Err(ConfigError::invalid(
                key("half_open_calls"),
                format!("{} is not from 1 to 1000", self.half_open_calls),
            ));
        }
        Ok(())
    }

    /// The policy for a call whose own timeout is `timeout` (which sets the
    /// slow-call duration when `slow_call_ms` is 0).
    pub fn policy(&self, timeout: Duration) -> BreakerPolicy {
        let slow_call = match self.slow_call_ms {
            0 => timeout.mul_f64(0.75),
            ms => Duration::from_millis(ms),
        };
        BreakerPolicy {
            failure_rate: self.failure_rate_percent,
            slow_rate: self.slow_call_rate_percent,
            slow_call,
            window: self.window as usize,
            min_calls: self.min_calls as usize,
            open_wait: Duration::from_millis(self.open_wait_ms),
            open_wait_max: Duration::from_millis(self.open_wait_max_ms),
            half_open_calls: self.half_open_calls,
        }
    }
}

/// A breaker table as written: absent keys come from the use's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    enabled: Option<bool>,
    failure_rate_percent: Option<f64>,
    slow_call_rate_percent: Option<f64>,
    slow_call_ms: Option<u64>,
    window: Option<u32>,
    min_calls: Option<u32>,
    open_wait_ms: Option<u64>,
    open_wait_max_ms: Option<u64>,
    half_open_calls: Option<u32>,
}

impl RawBreaker {
    fn over(self, d: BreakerConfig) -> BreakerConfig {
        BreakerConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            failure_rate_percent: self.failure_rate_percent.unwrap_or(d.failure_rate_percent),
            slow_call_rate_percent: self
                .slow_call_rate_percent
                .unwrap_or(d.slow_call_rate_percent),
            slow_call_ms: self.slow_call_ms.unwrap_or(d.slow_call_ms),
            window: self.window.unwrap_or(d.window),
            min_calls: self.min_calls.unwrap_or(d.min_calls),
            open_wait_ms: self.open_wait_ms.unwrap_or(d.open_wait_ms),
            open_wait_max_ms: self.open_wait_max_ms.unwrap_or(d.open_wait_max_ms),
            half_open_calls: self.half_open_calls.unwrap_or(d.half_open_calls),
        }
    }
}

fn database_breaker<'de, D: Deserializer<'de>>(d: D) -> Result<BreakerConfig, D::Error> {
    RawBreaker::deserialize(d).map(|r| r.over(BreakerConfig::database()))
}

fn sensors_breaker<'de, D: Deserializer<'de>>(d: D) -> Result<BreakerConfig, D::Error> {
    RawBreaker::deserialize(d).map(|r| r.over(BreakerConfig::sensors()))
}

fn brokers_breaker<'de, D: Deserializer<'de>>(d: D) -> Result<BreakerConfig, D::Error> {
    RawBreaker::deserialize(d).map(|r| r.over(BreakerConfig::brokers()))
}

fn webhooks_breaker<'de, D: Deserializer<'de>>(d: D) -> Result<BreakerConfig, D::Error> {
    RawBreaker::deserialize(d).map(|r| r.over(BreakerConfig::webhooks()))
}

#[cfg(test)]
mod tests {
    use crate::app::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn a_partial_breaker_table_keeps_its_own_uses_defaults() {
        let c = parse("[guard.sensors]\nwindow = 20\n").unwrap();
        assert_eq!(c.guard.sensors.window, 20);
        assert_eq!(c.guard.sensors.min_calls, 5, "the sensors' default");
        assert_eq!(c.guard.sensors.failure_rate_percent, 80.0);
        assert_eq!(c.guard.database, super::BreakerConfig::database());
    }

    #[test]
    fn bad_values_name_their_keys() {
        for (text, key) in [
            (
                "[guard.database]\nfailure_rate_percent = 0\n",
                "guard.database.failure_rate_percent",
            ),
            (
                "[guard.webhooks]\nslow_call_rate_percent = 120\n",
                "guard.webhooks.slow_call_rate_percent",
            ),
            (
                "[guard.sensors]\nwindow = 4\nmin_calls = 5\n",
                "guard.sensors.min_calls",
            ),
            (
                "[guard.database]\nopen_wait_ms = 10\nopen_wait_max_ms = 5\n",
                "guard.database.open_wait_max_ms",
            ),
            (
                "[guard.database]\nhalf_open_calls = 0\n",
                "guard.database.half_open_calls",
            ),
            ("[guard.database]\nwindwo = 3\n", "windwo"),
            ("[guard.http]\nburst = 0\n", "guard.http.burst"),
            (
                "[guard.http]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
                "guard.http.trusted_proxies[0]",
            ),
            (
                "[guard.http]\ntrusted_proxies = [\"proxy\"]\n",
                "guard.http.trusted_proxies[0]",
            ),
            (
                "[guard.admin]\nops_per_minute = 0\n",
                "guard.admin.ops_per_minute",
            ),
            ("[guard]\ntrim_interval_ms = 0\n", "guard.trim_interval_ms"),
            (
                "[guard.watchdog]\nwriter_deadline_ms = 0\n",
                "guard.watchdog.writer_deadline_ms",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn slow_calls_default_to_three_quarters_of_the_timeout() {
        let p = super::BreakerConfig::sensors().policy(std::time::Duration::from_millis(2000));
        assert_eq!(p.slow_call.as_millis(), 1500);
        let c = super::BreakerConfig {
            slow_call_ms: 40,
            ..super::BreakerConfig::sensors()
        };
        assert_eq!(
            c.policy(std::time::Duration::from_secs(9))
                .slow_call
                .as_millis(),
            40
        );
    }
}
