//! `[mqtt]`: the broker the appliance publishes its readings to. Raw keys
//! as the operator writes them, checked into [`MqttSettings`] the bridge
//! can trust (an error names the key).

use std::time::Duration;

use serde::Deserialize;

use crate::vocab::check::{ConfigError, positive};

/// Environment variable with the broker password (`mqtt.password`).
pub const ENV_MQTT_PASSWORD: &str = "VIGIL_MQTT_PASSWORD";

/// `[mqtt]`, as written in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Publish to the broker at all.
    pub enabled: bool,
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub url: String,
    /// The MQTT client id; empty: `vigil-<node_id>`.
    pub client_id: String,
    /// Empty: connect without credentials.
    pub username: String,
    /// Empty: `VIGIL_MQTT_PASSWORD` if set, else none.
    pub password: String,
    /// This appliance's name in topics and discovery; empty: the hostname.
    pub node_id: String,
    /// Topic prefix; empty: `vigil/<node_id>`.
    pub base_topic: String,
    /// 0 (at most once) or 1 (at least once, with store-and-forward).
    pub qos: u8,
    /// Keep-alive interval, seconds (at least 5).
    pub keep_alive_s: u64,
    /// Ask the broker for a clean session on every connect.
    pub clean_session: bool,
    /// Readings are published retained (the last value of every metric
    /// stays at the broker).
    pub retain_readings: bool,
    /// How long a connection attempt may take, ms.
    pub connect_timeout_ms: u64,
    /// First reconnect delay, ms; doubled after each failed attempt.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub reconnect_max_ms: u64,
    /// Readings published per replay page after an outage.
    pub replay_page: usize,
    /// A PEM file of extra CA certificates for `mqtts://` (besides the
    /// system's roots); empty: the system's roots only.
    pub ca_file: String,
    /// Publish Home Assistant discovery configs.
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: String::new(),
            username: String::new(),
            password: String::new(),
            node_id: String::new(),
            base_topic: String::new(),
            qos: 1,
            keep_alive_s: 30,
            clean_session: true,
            retain_readings: false,
            connect_timeout_ms: 5000,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            replay_page: 500,
            ca_file: String::new(),
            discovery: true,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl BrokerAddr {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub fn parse(url: &str) -> Result<BrokerAddr, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(format!(
                "{url:?}: only a host and a port are allowed (credentials go in username and password)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(url, p)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url:?}: expected :port after ]")),
            };
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(url, p)?),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        Ok(BrokerAddr { host, port, tls })
    }

    /// A name for this broker that is safe in a file name.
    pub fn file_key(&self) -> String {
        let raw = format!("{}_{}", self.host, self.port);
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

fn parse_port(url: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{url:?}: {p:?} is not a port")),
        Ok(n) => Ok(n),
    }
}

/// `[mqtt]` after validation, with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    pub broker: BrokerAddr,
    pub url: String,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub node_id: String,
    pub base_topic: String,
    pub qos: u8,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub retain_readings: bool,
    pub connect_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub replay_page: usize,
    pub ca_file: Option<std::path::PathBuf>,
    /// The discovery prefix, when discovery is on.
    pub discovery: Option<String>,
}

/// Is `s` usable as one level of a topic (no wildcards, no separator)?
fn topic_level_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

/// A sensor or metric name as one topic level: wildcards, separators and
/// spaces become `_`.
pub fn topic_level(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '/' | '+' | '#' | '\0' | ' ' => '_',
            c => c,
        })
        .collect()
}

/// The machine's hostname, for the default node id and client id.
pub fn hostname() -> String {
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    "vigil".to_owned()
}

impl MqttConfig {
    /// Checks every key the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings(|_| None, "vigil").map(|_| ())
    }

    /// The settings the bridge runs with: defaults resolved from `host`
    /// (the hostname), the password from `get(VIGIL_MQTT_PASSWORD)` when the
    /// file has none.
    pub fn settings(
        &self,
        get: impl Fn(&str) -> Option<String>,
        host: &str,
    ) -> Result<MqttSettings, ConfigError> {
        let broker =
            BrokerAddr::parse(&self.url).map_err(|e| ConfigError::invalid("mqtt.url", e))?;
        if self.qos > 1 {
            return Err(ConfigError::invalid(
                "mqtt.qos",
                format!("{} is not supported: use 0 or 1", self.qos),
            ));
        }
        if self.keep_alive_s < 5 || self.keep_alive_s > 65535 {
            return Err(ConfigError::invalid(
                "mqtt.keep_alive_s",
                format!("{} must be between 5 and 65535", self.keep_alive_s),
            ));
        }
        positive("mqtt.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("mqtt.reconnect_min_ms", self.reconnect_min_ms)?;
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(ConfigError::invalid(
                "mqtt.reconnect_max_ms",
                format!(
                    "{} is below mqtt.reconnect_min_ms ({})",
                    self.reconnect_max_ms, self.reconnect_min_ms
                ),
            ));
        }
        if self.replay_page == 0 || self.replay_page > 10_000 {
            return Err(ConfigError::invalid(
                "mqtt.replay_page",
                format!("{} must be between 1 and 10000", self.replay_page),
            ));
        }
        let node_id = if self.node_id.is_empty() {
            topic_level(host)
        } else if topic_level_ok(&self.node_id) && !self.node_id.contains(' ') {
            self.node_id.clone()
        } else {
            return Err(ConfigError::invalid(
                "mqtt.node_id",
                format!(
                    "{:?} must be one topic level: no '/', '+', '#' or spaces",
                    self.node_id
                ),
            ));
        };
        let base_topic = if self.base_topic.is_empty() {
            format!("vigil/{node_id}")
        } else {
            let t = &self.base_topic;
            if t.starts_with('/')
                || t.ends_with('/')
                || t.contains("//")
                || t.contains(['+', '#', '\0'])
            {
                return Err(ConfigError::invalid(
                    "mqtt.base_topic",
                    format!(
                        "{t:?} must be a topic without wildcards and without leading, trailing or doubled '/'"
                    ),
                ));
            }
            t.clone()
        };
        let client_id = if self.client_id.is_empty() {
            format!("vigil-{node_id}")
        } else if self.client_id.len() > 65535 {
            return Err(ConfigError::invalid("mqtt.client_id", "is too long"));
        } else {
            self.client_id.clone()
        };
        let password = if self.password.is_empty() {
            get(ENV_MQTT_PASSWORD).unwrap_or_default()
        } else {
            self.password.clone()
        };
        let credentials = if self.username.is_empty() {
            if !self.password.is_empty() {
                return Err(ConfigError::invalid(
                    "mqtt.password",
                    "is set without mqtt.username",
                ));
            }
            None
        } else {
            Some((self.username.clone(), password))
        };
        let ca_file = (!self.ca_file.is_empty()).then(|| std::path::PathBuf::from(&self.ca_file));
        if ca_file.is_some() && !broker.tls {
            return Err(ConfigError::invalid(
                "mqtt.ca_file",
                "is only used with an mqtts:// url",
            ));
        }
        let prefix = &self.discovery_prefix;
        if self.discovery
            && (prefix.is_empty()
                || prefix.starts_with('/')
                || prefix.ends_with('/')
                || prefix.contains(['+', '#', '\0']))
        {
            return Err(ConfigError::invalid(
                "mqtt.discovery_prefix",
                format!(
                    "{prefix:?} must be a topic without wildcards and without leading or trailing '/'"
                ),
            ));
        }
        Ok(MqttSettings {
            broker,
            url: self.url.clone(),
            client_id,
            credentials,
            node_id,
            base_topic,
            qos: self.qos,
            keep_alive: Duration::from_secs(self.keep_alive_s),
            clean_session: self.clean_session,
            retain_readings: self.retain_readings,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            replay_page: self.replay_page,
            ca_file,
            discovery: self.discovery.then(|| prefix.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        let a = BrokerAddr::parse("mqtt://broker.local").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("broker.local", 1883, false)
        );
        let a = BrokerAddr::parse("mqtts://10.0.0.2:9883/").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.tls), ("10.0.0.2", 9883, true));
        let a = BrokerAddr::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 1884));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/t",
        ] {
            assert!(BrokerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_come_from_the_hostname() {
        let s = MqttConfig::default()
            .settings(|_| None, "pi kitchen")
            .unwrap();
        assert_eq!(s.node_id, "pi_kitchen");
        assert_eq!(s.base_topic, "vigil/pi_kitchen");
        assert_eq!(s.client_id, "vigil-pi_kitchen");
        assert_eq!(s.qos, 1);
        assert!(s.credentials.is_none());
    }

    #[test]
    fn password_comes_from_the_environment_when_the_file_has_none() {
        let c = MqttConfig {
            username: "u".into(),
            ..MqttConfig::default()
        };
        let s = c
            .settings(|k| (k == ENV_MQTT_PASSWORD).then(|| "pw".to_owned()), "h")
            .unwrap();
        assert_eq!(s.credentials, Some(("u".into(), "pw".into())));
    }

    #[test]
    fn bad_values_name_their_key() {
        let key_of = |c: MqttConfig| match c.validate().unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other}"),
        };
        let d = MqttConfig::default;
        assert_eq!(
            key_of(MqttConfig {
                url: "tcp://h".into(),
                ..d()
            }),
            "mqtt.url"
        );
        assert_eq!(key_of(MqttConfig { qos: 2, ..d() }), "mqtt.qos");
        assert_eq!(
            key_of(MqttConfig {
                keep_alive_s: 1,
                ..d()
            }),
            "mqtt.keep_alive_s"
        );
        assert_eq!(
            key_of(MqttConfig {
                base_topic: "a/#".into(),
                ..d()
            }),
            "mqtt.base_topic"
        );
        assert_eq!(
            key_of(MqttConfig {
                base_topic: "/a".into(),
                ..d()
            }),
            "mqtt.base_topic"
        );
        assert_eq!(
            key_of(MqttConfig {
                node_id: "a/b".into(),
                ..d()
            }),
            "mqtt.node_id"
        );
        assert_eq!(
            key_of(MqttConfig {
                password: "p".into(),
                ..d()
            }),
            "mqtt.password"
        );
        assert_eq!(
            key_of(MqttConfig {
                reconnect_max_ms: 1,
                ..d()
            }),
            "mqtt.reconnect_max_ms"
        );
        assert_eq!(
            key_of(MqttConfig {
                replay_page: 0,
                ..d()
            }),
            "mqtt.replay_page"
        );
        assert_eq!(
            key_of(MqttConfig {
                ca_file: "/x".into(),
                ..d()
            }),
            "mqtt.ca_file"
        );
        assert_eq!(
            key_of(MqttConfig {
                discovery_prefix: "ha/#".into(),
                ..d()
            }),
            "mqtt.discovery_prefix"
        );
    }

    #[test]
    fn topic_levels_lose_wildcards() {
        assert_eq!(topic_level("a/b+c#d e"), "a_b_c_d_e");
    }
}
