//! Configuration: one TOML file, every key documented in `config/vigil.toml`.
//!
//! Raw values are deserialised with `deny_unknown_fields`, then validated into
//! settings the rest of the program can trust: an unknown key, a wrong type or
//! an impossible value becomes a [`ConfigError`] that names the key. A handful
//! of environment variables override the keys operators change most.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alerts::AlertsConfig;
use crate::guard::GuardConfig;
use crate::pacing::PacingConfig;
use crate::perf::PerformanceConfig;
use crate::sensors::SensorConfig;
use crate::storage::maintenance::MaintenanceConfig;
use crate::storage::retention::RetentionConfig;
use crate::web::live::LiveConfig;

/// The documented default configuration, embedded so that `vigil serve` with
/// no file runs exactly what `config/vigil.toml` describes.
pub const DEFAULT_TOML: &str = include_str!("../config/vigil.toml");

/// Environment variable naming the database file (`storage.path`).
pub const ENV_DB: &str = "VIGIL_DB";
/// Environment variable naming the HTTP listen address (`server.bind`).
pub const ENV_BIND: &str = "VIGIL_BIND";
/// Environment variable with the log filter (`log.filter`).
pub const ENV_LOG: &str = "VIGIL_LOG";
/// Environment variable with the admin bearer token (`server.admin_token`).
pub const ENV_ADMIN_TOKEN: &str = "VIGIL_ADMIN_TOKEN";

/// Why a configuration could not be used. Every variant names where the
/// problem is: a file, a key, or an environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {key}: {message}")]
    Parse {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// Names the document a value came from (a path, "embedded defaults")
    /// in an error about that value.
    pub fn in_origin(self, origin: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { key, message } => ConfigError::Parse {
                origin: origin.to_owned(),
                key,
                message,
            },
            other => other,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

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
            sensors: SensorConfig::default_set(),
            source: None,
        }
    }
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub bind: String,
    /// Requests slower than this are logged with method, path and duration.
    pub slow_request_ms: u64,
    /// HTTP worker threads.
    pub workers: usize,
    /// Bearer token for admin endpoints; empty means loopback-only.
    pub admin_token: String,
    /// Readings API: the largest `limit` a client may ask for.
    pub max_page_size: u32,
    /// Seconds to let in-flight requests finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// What connections may cost: limits and timeouts.
    pub connections: crate::web::connlimit::ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            slow_request_ms: 500,
            workers: 2,
            admin_token: String::new(),
            max_page_size: 1000,
            shutdown_grace_secs: 5,
            connections: crate::web::connlimit::ConnectionLimits::default(),
        }
    }
}

impl ServerConfig {
    /// The parsed listen address.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_bind(&self.bind)
    }
}

fn parse_bind(bind: &str) -> Result<SocketAddr, ConfigError> {
    bind.parse::<SocketAddr>().map_err(|e| {
        ConfigError::invalid(
            "server.bind",
            format!("`{bind}` is not an address:port with a port in 0-65535 ({e})"),
        )
    })
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

/// How hard SQLite syncs to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// Syncs at checkpoints only: a power cut may lose the last commits, never
    /// consistency. Process crashes lose nothing committed.
    Normal,
    /// Syncs the WAL on every commit: a power cut loses nothing committed.
    Full,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// What the ingest queue does when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Make room by dropping the oldest queued readings (fresh data wins).
    DropOldest,
    /// Refuse the incoming readings (history wins).
    DropNewest,
}

/// `[storage]`: the SQLite database and its single writer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Database file; relative paths are resolved from the working directory.
    pub path: PathBuf,
    /// `normal` or `full`.
    pub synchronous: Synchronous,
    /// The writer commits when this many readings are waiting.
    pub batch_size: usize,
    /// ... or when the oldest waiting reading is this old.
    pub flush_interval_ms: u64,
    /// Readings held in memory waiting for (or, on database faults, retrying) a commit.
    pub queue_capacity: usize,
    /// `drop_oldest` or `drop_newest`.
    pub overflow: OverflowPolicy,
    /// How long a connection waits for a lock before giving up.
    pub busy_timeout_ms: u64,
    /// Read-only connections for the API.
    pub read_pool_size: u32,
    /// Page cache per connection, in KiB.
    pub cache_kib: u32,
    /// Memory-mapped I/O per connection, in MiB (0 disables).
    pub mmap_mib: u32,
    /// Where the WAL index lives: `heap` (no `-shm` file; other processes
    /// are kept out while vigil runs) or `file` (`-shm`, shared with them).
    pub wal_index: crate::storage::walindex::WalIndex,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("vigil.db"),
            synchronous: Synchronous::Normal,
            batch_size: 1000,
            flush_interval_ms: 60_000,
            queue_capacity: 100_000,
            overflow: OverflowPolicy::DropOldest,
            busy_timeout_ms: 5000,
            read_pool_size: 4,
            cache_kib: 8192,
            mmap_mib: 64,
            wal_index: crate::storage::walindex::WalIndex::Heap,
        }
    }
}

/// `[supervisor]`: restart policy for every supervised actor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// First restart delay; doubles on each consecutive failure.
    pub backoff_base_ms: u64,
    /// Restart delays never exceed this.
    pub backoff_max_ms: u64,
    /// Restart intensity: more than this many restarts ...
    pub max_restarts: u32,
    /// ... within this many seconds and the child is given up (`failed`).
    pub restart_window_secs: u64,
    /// Shutdown waits this long for the writer to flush before giving up.
    pub shutdown_timeout_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            max_restarts: 5,
            restart_window_secs: 60,
            shutdown_timeout_ms: 10_000,
        }
    }
}

impl Config {
    /// Parses a TOML document. `origin` names it in errors (a path or
    /// "embedded defaults").
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| parse_error(origin, "", &e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            parse_error(origin, &key, e.inner())
        })?;
        config.validate().map_err(|e| e.in_origin(origin))?;
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
        self.validate()
    }

    /// Checks every value that the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        parse_bind(&s.bind)?;
        positive("server.workers", s.workers as u64)?;
        positive("server.max_page_size", u64::from(s.max_page_size))?;
        s.connections.validate()?;
        if s.admin_token.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "server.admin_token",
                "must not contain whitespace",
            ));
        }

        let st = &self.storage;
        if st.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("storage.path", "must not be empty"));
        }
        positive("storage.batch_size", st.batch_size as u64)?;
        positive("storage.flush_interval_ms", st.flush_interval_ms)?;
        positive("storage.queue_capacity", st.queue_capacity as u64)?;
        if st.queue_capacity < st.batch_size {
            return Err(ConfigError::invalid(
                "storage.queue_capacity",
                format!(
                    "{} is smaller than storage.batch_size ({}); a batch could never fill",
                    st.queue_capacity, st.batch_size
                ),
            ));
        }
        positive("storage.read_pool_size", u64::from(st.read_pool_size))?;
        self.retention.validate()?;
        self.maintenance.validate()?;

        let sv = &self.supervisor;
        positive("supervisor.backoff_base_ms", sv.backoff_base_ms)?;
        if sv.backoff_max_ms < sv.backoff_base_ms {
            return Err(ConfigError::invalid(
                "supervisor.backoff_max_ms",
                format!(
                    "{} is below supervisor.backoff_base_ms ({})",
                    sv.backoff_max_ms, sv.backoff_base_ms
                ),
            ));
        }
        positive("supervisor.restart_window_secs", sv.restart_window_secs)?;
        positive("supervisor.shutdown_timeout_ms", sv.shutdown_timeout_ms)?;
        self.live.validate()?;
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

/// Rejects zero for keys where zero is meaningless.
pub(crate) fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
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
    fn impossible_values_name_their_key() {
        assert!(err("[storage]\nbatch_size = 0\n").contains("storage.batch_size"));
        assert!(err("[server]\nbind = \"127.0.0.1:70000\"\n").contains("server.bind"));
        assert!(
            err("[storage]\nbatch_size = 10\nqueue_capacity = 5\n")
                .contains("storage.queue_capacity")
        );
        let e = err("[[sensors]]\nname = \"a\"\nkind = \"simulated\"\ninterval_ms = 0\n");
        assert!(e.contains("interval_ms"), "{e}");
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
            _ => None,
        })
        .unwrap();
        assert_eq!(c.storage.path, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.server.bind, "0.0.0.0:9000");
        assert_eq!(c.server.admin_token, "s3cret");

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
