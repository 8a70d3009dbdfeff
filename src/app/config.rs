//! Configuration: one TOML file, every key documented in `config/vigil.toml`.
//!
//! Raw values are deserialised with `deny_unknown_fields`, then validated into
//! settings the rest of the program can trust: an unknown key, a wrong type or
//! an impossible value becomes a [`ConfigError`] that names the key. A handful
//! of environment variables override the keys operators change most.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alerts::AlertsConfig;
use crate::guard::GuardConfig;
use crate::mqtt::MqttConfig;
use crate::pacing::PacingConfig;
use crate::perf::PerformanceConfig;
use crate::sensors::{DriverConfig, SensorConfig};
use crate::storage::config::StorageConfig;
use crate::storage::maintenance::MaintenanceConfig;
use crate::storage::retention::RetentionConfig;
use crate::supervisor::config::SupervisorConfig;
use crate::vocab::check::ConfigError;
use crate::web::config::{ServerConfig, parse_bind};
use crate::web::live::LiveConfig;

/// The documented default configuration, embedded so that `vigil serve` with
/// no file runs exactly what `config/vigil.toml` describes.
pub const DEFAULT_TOML: &str = include_str!("../../config/vigil.toml");

/// Environment variable naming the database file (`storage.path`).
pub const ENV_DB: &str = "VIGIL_DB";
/// Environment variable naming the HTTP listen address (`server.bind`).
pub const ENV_BIND: &str = "VIGIL_BIND";
/// Environment variable with the log filter (`log.filter`).
pub const ENV_LOG: &str = "VIGIL_LOG";
/// Environment variable with the admin bearer token (`server.admin_token`).
pub const ENV_ADMIN_TOKEN: &str = "VIGIL_ADMIN_TOKEN";
/// Environment variable with the viewer token (`server.viewer_token`).
pub const ENV_VIEWER_TOKEN: &str = "VIGIL_VIEWER_TOKEN";

/// The whole configuration after validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub storage: StorageConfig,
    /// How long each storage tier is kept, and the size cap.
    pub retention: RetentionConfig,
    /// Scheduled optimize and backups.
    pub maintenance: MaintenanceConfig,
    pub supervisor: SupervisorConfig,
    pub live: LiveConfig,
    pub alerts: AlertsConfig,
    pub performance: PerformanceConfig,
    /// Backing off under heat and load.
    pub pacing: PacingConfig,
    /// Circuit breakers, rate limits, the memory guard, the watchdog.
    pub guard: GuardConfig,
    /// The MQTT broker readings are published to (off by default).
    pub mqtt: MqttConfig,
    /// The sensors to run. Absent: the default set (system, cpu_temp,
    /// simulated). `sensors = []` runs none.
    pub sensors: Vec<SensorConfig>,
    /// The file this configuration was read from, if any (for reloads).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            retention: RetentionConfig::default(),
            maintenance: MaintenanceConfig::default(),
            supervisor: SupervisorConfig::default(),
            live: LiveConfig::default(),
            alerts: AlertsConfig::default(),
            performance: PerformanceConfig::default(),
            pacing: PacingConfig::default(),
            guard: GuardConfig::default(),
            mqtt: MqttConfig::default(),
            sensors: SensorConfig::default_set(),
            source: None,
        }
    }
}

/// `[log]`: diagnostics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// An `env_logger` filter, e.g. `info` or `vigil=debug,actix_web=warn`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
        }
    }
}

impl Config {
    /// Parses a TOML document. `origin` names it in errors (a path or
    /// "embedded defaults").
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| parse_error(origin, "", &e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = entry_key(text, &e.path().to_string());
            match parse_error(origin, &key, e.inner()) {
                ConfigError::Parse {
                    origin,
                    key,
                    message,
                } => {
                    let (key, message) = inner_key(key, message);
                    ConfigError::Parse {
                        origin,
                        key,
                        message,
                    }
                }
                other => other,
            }
        })?;
        config.validate().map_err(|e| e.in_origin(origin))?;
        // A sensor of kind mqtt subscribes through `[mqtt]`: the section
        // must say which broker, not leave it to a default.
        if let Some(s) = config
            .sensors
            .iter()
            .find(|s| matches!(s.driver, DriverConfig::Mqtt(_)))
        {
            let written = toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("mqtt"));
            if !written {
                return Err(ConfigError::invalid(
                    "mqtt",
                    format!(
                        "sensors[{}] is of kind \"mqtt\": the [mqtt] section must name its broker (mqtt.url)",
                        s.name
                    ),
                )
                .in_origin(origin));
            }
        }
        Ok(config)
    }

    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml(&text, &path.display().to_string())?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Loads `path` if given, else the embedded defaults; then applies the
    /// environment overrides and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    /// Applies `VIGIL_*` overrides, read through `get` so tests need not touch
    /// the process environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(db) = get(ENV_DB).filter(|v| !v.is_empty()) {
            self.storage.path = PathBuf::from(db);
        }
        if let Some(bind) = get(ENV_BIND).filter(|v| !v.is_empty()) {
            parse_bind(&bind).map_err(|e| ConfigError::invalid(ENV_BIND, e))?;
            self.server.bind = bind;
        }
        if let Some(filter) = get(ENV_LOG).filter(|v| !v.is_empty()) {
            self.log.filter = filter;
        }
        if let Some(token) = get(ENV_ADMIN_TOKEN) {
            self.server.admin_token = token;
        }
        if let Some(token) = get(ENV_VIEWER_TOKEN) {
            self.server.viewer_token = token;
        }
        self.validate()
    }

    /// Checks every value that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;

        self.storage.validate()?;
        self.retention.validate()?;
        self.maintenance.validate()?;

        self.supervisor.validate()?;
        self.live.validate()?;
        // Every live session holds a connection.
        if self.server.connections.max_connections <= self.live.max_sessions {
            return Err(ConfigError::invalid(
                "server.connections.max_connections",
                format!(
                    "{} leaves no room beside live.max_sessions ({}): every live session holds a connection",
                    self.server.connections.max_connections, self.live.max_sessions
                ),
            ));
        }
        self.performance.validate()?;
        self.pacing.validate()?;
        self.guard.validate()?;
        self.mqtt.validate()?;

        let names: Vec<&str> = self.sensors.iter().map(|s| s.name.as_str()).collect();
        self.alerts.validate(&names)?;
        let mut seen = std::collections::HashSet::new();
        for sensor in &self.sensors {
            if !seen.insert(sensor.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("sensors[{}].name", sensor.name),
                    "is used by more than one sensor",
                ));
            }
        }
        Ok(())
    }
}

/// The arrays whose entries have a `name`, by which errors name them.
const NAMED_ARRAYS: [&str; 2] = ["sensors", "alerts.rules"];

/// `key` (a path like `sensors[3].interval_ms`) with the entry's index
/// replaced by its `name` in `text` (`sensors[tank].interval_ms`), as the
/// entries' own checks name them: an index means nothing to someone
/// editing one entry through the API. Unchanged when the entry has no
/// readable name.
fn entry_key(text: &str, key: &str) -> String {
    for array in NAMED_ARRAYS {
        let Some(rest) = key.strip_prefix(array).and_then(|r| r.strip_prefix('[')) else {
            continue;
        };
        let Some((index, tail)) = rest.split_once(']') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let Ok(doc) = toml::from_str::<toml::Table>(text) else {
            continue;
        };
        let mut node = Some(&doc);
        let mut path = array.split('.').peekable();
        let mut entries = None;
        while let Some(part) = path.next() {
            let value = node.and_then(|t| t.get(part));
            if path.peek().is_none() {
                entries = value.and_then(|v| v.as_array());
            } else {
                node = value.and_then(|v| v.as_table());
            }
        }
        let name = entries
            .and_then(|a| a.get(index))
            .and_then(|e| e.get("name"))
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty() && !n.contains([']', '[']));
        if let Some(name) = name {
            return format!("{array}[{name}]{tail}");
        }
    }
    key.to_owned()
}

/// An entry's own check names the key itself at the start of its message
/// (`sensors[a].interval_ms: must be greater than 0`), inside an error the
/// parser places at the entry: that key is the one to report, once.
fn inner_key(key: String, message: String) -> (String, String) {
    let own = NAMED_ARRAYS
        .iter()
        .any(|a| message.starts_with(&format!("{a}[")) && key.starts_with(&format!("{a}[")));
    if own
        && let Some(close) = message.find(']')
        && let Some(i) = message[close..].find(": ")
    {
        let i = close + i;
        return (message[..i].to_owned(), message[i + 2..].to_owned());
    }
    (key, message)
}

fn parse_error(origin: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let key = if key.is_empty() || key == "." {
        "(document)".to_owned()
    } else {
        key.to_owned()
    };
    // toml's Display repeats the source line; the bare message plus the key
    // path reads better in a one-line log or a systemd status.
    ConfigError::Parse {
        origin: origin.to_owned(),
        key,
        message: e.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn documented_file_equals_built_in_defaults() {
        let from_file = Config::from_toml(DEFAULT_TOML, "config/vigil.toml").unwrap();
        assert_eq!(from_file, Config::default());
    }

    #[test]
    fn empty_document_is_the_defaults() {
        assert_eq!(Config::from_toml("", "x").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[storage]\nbatch_sise = 5\n");
        assert!(e.contains("batch_sise"), "{e}");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let e = err("[storage]\nbatch_size = \"many\"\n");
        assert!(e.contains("storage.batch_size"), "{e}");
    }

    #[test]
    fn entries_are_named_by_name_in_errors_and_their_key_said_once() {
        let sensors = "[[sensors]]\nname = \"a\"\nkind = \"system\"\n\
                       [[sensors]]\nname = \"tank\"\nkind = \"simulated\"\n";
        let e = err(&format!("{sensors}interval_ms = \"fast\"\n"));
        assert!(e.contains("test.toml: sensors[tank].interval_ms: "), "{e}");
        let e = err(&format!("{sensors}interval_ms = 0\n"));
        assert_eq!(
            e, "test.toml: sensors[tank].interval_ms: must be greater than 0",
            "the key is said once"
        );
        // A name with a dot is a name like any other.
        let e = err("[[sensors]]\nname = \"cpu.temp\"\nkind = \"system\"\ninterval_ms = \"x\"\n");
        assert!(e.contains("sensors[cpu.temp].interval_ms"), "{e}");
        let e = err("[alerts]\n[[alerts.rules]]\nname = \"hot\"\nthreshold = \"x\"\n");
        assert!(e.contains("alerts.rules[hot]"), "{e}");
        // Without a name the index stays.
        let e = err("[[sensors]]\nkind = \"system\"\ninterval_ms = \"x\"\n");
        assert!(e.contains("sensors[0]"), "{e}");
    }

    #[test]
    fn impossible_values_name_their_key() {
        assert!(err("[storage]\nbatch_size = 0\n").contains("storage.batch_size"));
        assert!(err("[server]\nbind = \"127.0.0.1:70000\"\n").contains("server.bind"));
        assert!(
            err("[storage]\nbatch_size = 10\nqueue_capacity = 5\n")
                .contains("storage.queue_capacity")
        );
        let e = err("[[sensors]]\nname = \"a\"\nkind = \"simulated\"\ninterval_ms = 0\n");
        assert!(e.contains("interval_ms"), "{e}");
        // A session longer than a year (it would overflow the clock at
        // login with u64::MAX).
        let e = err("[server]\nworkers = 513\n");
        assert!(e.contains("server.workers: must be at most 512"), "{e}");
        let e = err("[storage]\nread_pool_size = 4294967295\n");
        assert!(
            e.contains("storage.read_pool_size: must be at most 64"),
            "{e}"
        );
        let e = err("[server]\nsession_ttl_secs = 18446744073709551615\n");
        assert!(
            e.contains("server.session_ttl_secs: must be at most"),
            "{e}"
        );
        assert!(Config::from_toml("[server]\nsession_ttl_secs = 31622400\n", "x").is_ok());
    }

    #[test]
    fn mqtt_keys_are_checked_by_name() {
        let e = err("[mqtt]\nurl = \"http://broker\"\n");
        assert!(e.contains("test.toml: mqtt.url"), "{e}");
        let e = err("[mqtt]\nqos = 2\n");
        assert!(e.contains("mqtt.qos"), "{e}");
        let e = err("[mqtt]\nbrokr = \"x\"\n");
        assert!(e.contains("brokr"), "{e}");
        assert!(!Config::default().mqtt.enabled, "off by default");
    }

    #[test]
    fn an_mqtt_sensor_needs_the_mqtt_section() {
        let sensor = "[[sensors]]\nname = \"kitchen\"\nkind = \"mqtt\"\n[sensors.options]\n";
        let e = err(&format!("{sensor}topic = \"t\"\n"));
        assert!(
            e.contains("test.toml: mqtt") && e.contains("sensors[kitchen]"),
            "{e}"
        );
        let ok = format!("[mqtt]\nurl = \"mqtt://broker:1883\"\n{sensor}topic = \"t\"\n");
        let c = Config::from_toml(&ok, "test.toml").unwrap();
        assert!(!c.mqtt.enabled, "subscribing does not need publishing");
        let e = err(&format!("[mqtt]\n{sensor}json_path = \"a\"\n"));
        assert!(
            e.contains("sensors[kitchen].options") && e.contains("topic"),
            "{e}"
        );
        let e = err(&format!("[mqtt]\n{sensor}topic = \"t\"\nmax_age_ms = 0\n"));
        assert!(e.contains("sensors[kitchen].options: max_age_ms"), "{e}");
    }

    #[test]
    fn duplicate_sensor_names_are_refused() {
        let e = err(
            "[[sensors]]\nname = \"a\"\nkind = \"system\"\n[[sensors]]\nname = \"a\"\nkind = \"system\"\n",
        );
        assert!(e.contains("test.toml: sensors[a].name"), "{e}");
    }

    #[test]
    fn missing_file_is_a_read_error_naming_the_path() {
        let e = Config::from_file(Path::new("/nonexistent/vigil.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/vigil.toml"));
    }

    #[test]
    fn environment_overrides_apply_and_are_validated() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            ENV_DB => Some("/tmp/x.db".into()),
            ENV_BIND => Some("0.0.0.0:9000".into()),
            ENV_ADMIN_TOKEN => Some("s3cret".into()),
            ENV_VIEWER_TOKEN => Some("l00k".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.storage.path, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.server.bind, "0.0.0.0:9000");
        assert_eq!(c.server.admin_token, "s3cret");
        assert_eq!(c.server.viewer_token, "l00k");

        let e = c
            .apply_env(|k| (k == ENV_VIEWER_TOKEN).then(|| "s3cret".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("server.viewer_token"), "{e}");

        let e = c
            .apply_env(|k| (k == ENV_BIND).then(|| "nonsense".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains(ENV_BIND), "{e}");
    }

    #[test]
    fn absent_sensors_mean_defaults_and_empty_means_none() {
        let c = Config::from_toml("sensors = []\n", "x").unwrap();
        assert!(c.sensors.is_empty());
        let c = Config::from_toml("[server]\n", "x").unwrap();
        let names: Vec<_> = c.sensors.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["system", "cpu_temp", "simulated"]);
    }
}
