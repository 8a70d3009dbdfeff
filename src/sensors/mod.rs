//! Sensors: the [`Sensor`] trait drivers implement, their typed errors, and
//! the per-sensor configuration that builds a driver.
//!
//! A driver is plain blocking code. It never runs on an actor thread: the
//! [`SensorActor`](actor::SensorActor) calls it on the blocking pool, under
//! `catch_unwind` and a timeout, so a driver that panics or hangs costs only
//! its own sensor a restart.

pub mod actor;
pub mod cpu_temp;
pub mod hw;
pub mod mqtt;
pub mod registry;
pub mod simulated;
pub mod system;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pacing::AdaptiveConfig;
use crate::vocab::check::{ConfigError, positive};
use crate::vocab::reading::Value;

/// Why a read produced no values. The kind decides what happens next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SensorError {
    /// Worth retrying at the next tick (a bus glitch, a busy device). Too
    /// many in a row and the sensor is restarted.
    #[error("transient: {0}")]
    Transient(String),
    /// The driver is broken until re-created: the supervisor restarts it.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The hardware or data source is absent (no thermal zone, no I2C bus).
    /// Not a failure: the sensor is shown `unavailable` and probed again
    /// rarely, without restarts or log spam.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The source is there but has gone quiet (no message within its
    /// maximum age). Shown `unavailable` like an absent source, but the
    /// driver is kept (it is still listening) and read again at the usual
    /// interval, so the first new value makes the sensor available again.
    #[error("stale: {0}")]
    Stale(String),
}

/// Inputs a driver received and refused (a payload that is not a
/// number), since it was last asked: counted and shown, never an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub count: u64,
    /// Why the last one was refused.
    pub last: String,
}

/// A sensor driver. `read` may block (it runs on the blocking pool), must
/// return finite values, and may keep state between reads.
pub trait Sensor: Send + 'static {
    fn read(&mut self) -> Result<Vec<Value>, SensorError>;

    /// What the driver refused since the last call; asked after each read.
    fn take_rejected(&mut self) -> Option<Rejected> {
        None
    }
}

/// Essential sensors keep running under pressure; optional ones may be
/// paused and do not make the appliance unhealthy when they fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Essential,
    Optional,
}

/// Every `kind` a sensor entry may have.
pub const KINDS: &[&str] = &[
    "system",
    "cpu_temp",
    "simulated",
    "gpio",
    "bme280",
    "ads1115",
    "sound",
    "throttled",
    "mqtt",
];

/// What the driver of one sensor is, with its own options.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverConfig {
    System(system::SystemOptions),
    CpuTemp(cpu_temp::CpuTempOptions),
    Simulated(simulated::SimulatedOptions),
    Gpio(hw::gpio::GpioOptions),
    Bme280(hw::bme280::Bme280Options),
    Ads1115(hw::ads1115::Ads1115Options),
    Sound(hw::sound::SoundOptions),
    Throttled(hw::throttled::ThrottledOptions),
    Mqtt(mqtt::MqttSensorOptions),
}

impl DriverConfig {
    /// The `kind` string used in the config file.
    pub fn kind(&self) -> &'static str {
        match self {
            DriverConfig::System(_) => "system",
            DriverConfig::CpuTemp(_) => "cpu_temp",
            DriverConfig::Simulated(_) => "simulated",
            DriverConfig::Gpio(_) => "gpio",
            DriverConfig::Bme280(_) => "bme280",
            DriverConfig::Ads1115(_) => "ads1115",
            DriverConfig::Sound(_) => "sound",
            DriverConfig::Throttled(_) => "throttled",
            DriverConfig::Mqtt(_) => "mqtt",
        }
    }

    fn parse(kind: &str, options: toml::Table) -> Result<DriverConfig, String> {
        /// Deserialises options; an error names the option it is about.
        fn opts<T: serde::de::DeserializeOwned>(options: toml::Table) -> Result<T, String> {
            serde_path_to_error::deserialize(toml::Value::Table(options)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().message().trim().to_owned();
                if path.is_empty() || path == "." {
                    message
                } else {
                    format!("{path}: {message}")
                }
            })
        }
        Ok(match kind {
            "system" => DriverConfig::System(opts(options)?),
            "cpu_temp" => DriverConfig::CpuTemp(opts(options)?),
            "simulated" => {
                let o: simulated::SimulatedOptions = opts(options)?;
                o.validate()?;
                DriverConfig::Simulated(o)
            }
            "gpio" => DriverConfig::Gpio(hw::checked(opts(options)?)?),
            "bme280" => DriverConfig::Bme280(hw::checked(opts(options)?)?),
            "ads1115" => DriverConfig::Ads1115(hw::checked(opts(options)?)?),
            "sound" => DriverConfig::Sound(hw::checked(opts(options)?)?),
            "throttled" => DriverConfig::Throttled(hw::checked(opts(options)?)?),
            "mqtt" => {
                let o: mqtt::MqttSensorOptions = opts(options)?;
                o.validate()?;
                DriverConfig::Mqtt(o)
            }
            other => {
                return Err(format!(
                    "unknown sensor kind `{other}`, expected one of `{}`",
                    KINDS.join("`, `")
                ));
            }
        })
    }

    /// Creates a fresh driver. Called on the blocking pool at the first read
    /// of every actor generation, so a restart always starts from scratch.
    pub fn build(&self, env: &BuildEnv) -> Result<Box<dyn Sensor>, SensorError> {
        Ok(match self {
            DriverConfig::System(o) => Box::new(system::SystemSensor::new(o, env)?),
            DriverConfig::CpuTemp(o) => Box::new(cpu_temp::CpuTempSensor::new(o)),
            DriverConfig::Simulated(o) => Box::new(simulated::SimulatedSensor::new(o.clone())),
            DriverConfig::Gpio(o) => hw::build_gpio(o)?,
            DriverConfig::Bme280(o) => hw::bme280::build(o)?,
            DriverConfig::Ads1115(o) => hw::ads1115::build(o)?,
            DriverConfig::Sound(o) => hw::build_sound(o)?,
            DriverConfig::Throttled(o) => hw::throttled::build(o)?,
            DriverConfig::Mqtt(o) => match &env.mqtt {
                Some(conn) => Box::new(mqtt::MqttSensor::start(o, conn)?),
                None => {
                    return Err(SensorError::Unavailable(
                        "no [mqtt] broker connection was set up when vigil started: restart it"
                            .into(),
                    ));
                }
            },
        })
    }

    /// The shortest `timeout_ms` a read of this driver can live with, for
    /// drivers whose read waits on something configured (a sound window, a
    /// command's own timeout).
    pub fn min_timeout_ms(&self) -> Option<u64> {
        match self {
            DriverConfig::Sound(o) => Some(o.min_timeout_ms()),
            DriverConfig::Throttled(o) => Some(o.min_timeout_ms()),
            _ => None,
        }
    }
}

/// Facts about the running appliance that drivers may need when built.
#[derive(Debug, Clone, Default)]
pub struct BuildEnv {
    /// The database file, whose filesystem the system sensor watches.
    pub database_path: PathBuf,
    /// The broker of `[mqtt]`, for `kind = "mqtt"` sensors.
    pub mqtt: Option<mqtt::BrokerConnection>,
}

/// One `[[sensors]]` entry after validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSensorConfig")]
pub struct SensorConfig {
    pub name: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub priority: Priority,
    pub enabled: bool,
    pub max_consecutive_errors: u32,
    pub unavailable_retry_ms: u64,
    /// Variance-adaptive polling; `None` (the default) keeps it off.
    pub adaptive: Option<AdaptiveConfig>,
    pub driver: DriverConfig,
}

/// Default polling interval.
pub const DEFAULT_INTERVAL_MS: u64 = 5000;
/// Default per-read timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
/// Transient errors in a row before the sensor is restarted.
pub const DEFAULT_MAX_CONSECUTIVE_ERRORS: u32 = 5;
/// How often an unavailable sensor is probed again.
pub const DEFAULT_UNAVAILABLE_RETRY_MS: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensorConfig {
    name: String,
    kind: String,
    #[serde(default = "default_interval")]
    interval_ms: u64,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_priority")]
    priority: Priority,
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_max_errors")]
    max_consecutive_errors: u32,
    #[serde(default = "default_unavailable_retry")]
    unavailable_retry_ms: u64,
    #[serde(default)]
    options: toml::Table,
    #[serde(default)]
    adaptive: Option<AdaptiveConfig>,
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL_MS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_priority() -> Priority {
    Priority::Essential
}
fn default_true() -> bool {
    true
}
fn default_max_errors() -> u32 {
    DEFAULT_MAX_CONSECUTIVE_ERRORS
}
fn default_unavailable_retry() -> u64 {
    DEFAULT_UNAVAILABLE_RETRY_MS
}

/// Sensor names appear in URLs and metric labels: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

impl TryFrom<RawSensorConfig> for SensorConfig {
    type Error = ConfigError;

    fn try_from(raw: RawSensorConfig) -> Result<Self, ConfigError> {
        let key = |field: &str| format!("sensors[{}].{field}", raw.name);
        if !valid_name(&raw.name) {
            return Err(ConfigError::invalid(
                key("name"),
                "must be 1-64 characters of A-Z, a-z, 0-9, `_`, `-` or `.`",
            ));
        }
        positive(&key("interval_ms"), raw.interval_ms)?;
        positive(&key("timeout_ms"), raw.timeout_ms)?;
        positive(&key("unavailable_retry_ms"), raw.unavailable_retry_ms)?;
        if let Some(a) = &raw.adaptive {
            a.validate()
                .map_err(|(field, m)| ConfigError::invalid(key(&format!("adaptive.{field}")), m))?;
        }
        let mut driver = DriverConfig::parse(&raw.kind, raw.options).map_err(|message| {
            let field = if message.starts_with("unknown sensor kind") {
                "kind"
            } else {
                "options"
            };
            ConfigError::invalid(key(field), message)
        })?;
        if let DriverConfig::Mqtt(o) = &mut driver {
            o.sensor = raw.name.clone();
        }
        if let Some(min) = driver.min_timeout_ms().filter(|m| raw.timeout_ms <= *m) {
            return Err(ConfigError::invalid(
                key("timeout_ms"),
                format!(
                    "{} is too short for this sensor's options: it must exceed {min}",
                    raw.timeout_ms
                ),
            ));
        }
        Ok(SensorConfig {
            name: raw.name,
            interval_ms: raw.interval_ms,
            timeout_ms: raw.timeout_ms,
            priority: raw.priority,
            enabled: raw.enabled,
            max_consecutive_errors: raw.max_consecutive_errors,
            unavailable_retry_ms: raw.unavailable_retry_ms,
            adaptive: raw.adaptive,
            driver,
        })
    }
}

impl SensorConfig {
    /// A sensor with the given driver and default settings.
    pub fn new(name: &str, driver: DriverConfig) -> SensorConfig {
        SensorConfig {
            name: name.to_owned(),
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            priority: Priority::Essential,
            enabled: true,
            max_consecutive_errors: DEFAULT_MAX_CONSECUTIVE_ERRORS,
            unavailable_retry_ms: DEFAULT_UNAVAILABLE_RETRY_MS,
            adaptive: None,
            driver,
        }
    }

    /// The sensors an appliance runs when its config names none: the host's
    /// own health, its CPU temperature, and a simulated signal so the
    /// dashboard always has something moving.
    pub fn default_set() -> Vec<SensorConfig> {
        let mut simulated = SensorConfig::new(
            "simulated",
            DriverConfig::Simulated(simulated::SimulatedOptions::default()),
        );
        simulated.interval_ms = 1000;
        simulated.priority = Priority::Optional;
        vec![
            SensorConfig::new(
                "system",
                DriverConfig::System(system::SystemOptions::default()),
            ),
            SensorConfig::new(
                "cpu_temp",
                DriverConfig::CpuTemp(cpu_temp::CpuTempOptions::default()),
            ),
            simulated,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kind_is_known() {
        for kind in KINDS {
            if let Err(e) = DriverConfig::parse(kind, toml::Table::new()) {
                assert!(!e.starts_with("unknown sensor kind"), "{kind}: {e}");
            }
        }
        let e = DriverConfig::parse("nope", toml::Table::new()).unwrap_err();
        assert!(e.contains("`throttled`"), "{e}");
    }
    use crate::app::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn options_are_checked_per_kind() {
        let e = parse(
            "[[sensors]]\nname = \"s\"\nkind = \"simulated\"\n[sensors.options]\nwavefrom = \"sine\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("sensors[s].options") && e.contains("wavefrom"),
            "{e}"
        );
    }

    #[test]
    fn unknown_kind_is_named() {
        let e = parse("[[sensors]]\nname = \"s\"\nkind = \"thermometer\"\n").unwrap_err();
        assert!(
            e.contains("sensors[s].kind") && e.contains("thermometer"),
            "{e}"
        );
    }

    #[test]
    fn names_are_restricted() {
        let e = parse("[[sensors]]\nname = \"a b\"\nkind = \"system\"\n").unwrap_err();
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn adaptive_polling_is_opt_in_and_validated() {
        let c = parse("[[sensors]]\nname = \"s\"\nkind = \"system\"\n").unwrap();
        assert_eq!(c.sensors[0].adaptive, None);
        let c = parse(
            "[[sensors]]\nname = \"s\"\nkind = \"system\"\n[sensors.adaptive]\ntolerance = 0.5\n",
        )
        .unwrap();
        let a = c.sensors[0].adaptive.as_ref().unwrap();
        assert_eq!(a.tolerance, 0.5);
        assert_eq!(a.window, AdaptiveConfig::default().window);
        let e =
            parse("[[sensors]]\nname = \"s\"\nkind = \"system\"\n[sensors.adaptive]\nstep = 0.5\n")
                .unwrap_err();
        assert!(e.contains("sensors[s].adaptive.step"), "{e}");
        let e =
            parse("[[sensors]]\nname = \"s\"\nkind = \"system\"\n[sensors.adaptive]\nwindwo = 3\n")
                .unwrap_err();
        assert!(e.contains("windwo"), "{e}");
    }

    #[test]
    fn a_full_entry_parses() {
        let c = parse(
            "[[sensors]]\nname = \"flaky\"\nkind = \"simulated\"\ninterval_ms = 250\npriority = \"optional\"\n\
             [sensors.options]\nwaveform = \"step\"\npanic_every = 3\n",
        )
        .unwrap();
        let s = &c.sensors[0];
        assert_eq!(s.interval_ms, 250);
        assert_eq!(s.priority, Priority::Optional);
        match &s.driver {
            DriverConfig::Simulated(o) => assert_eq!(o.panic_every, 3),
            other => panic!("unexpected driver {other:?}"),
        }
    }
}
