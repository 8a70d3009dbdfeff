//! Home Assistant MQTT discovery: the retained config messages that make
//! the appliance a device with one entity per sensor metric and one
//! binary sensor per alert rule. Pure: topics and payloads from names,
//! units and settings.

use serde_json::{Value, json};

use super::config::topic_level;

/// The appliance as Home Assistant shows it.
#[derive(Debug, Clone)]
pub struct Device {
    pub node_id: String,
    pub base_topic: String,
    pub prefix: String,
    pub model: String,
}

impl Device {
    fn object_id(&self, parts: &[&str]) -> String {
        let mut id = format!("vigil_{}", topic_level(&self.node_id));
        for p in parts {
            id.push('_');
            id.push_str(&topic_level(p));
        }
        id
    }

    fn device(&self) -> Value {
        json!({
            "identifiers": [format!("vigil_{}", self.node_id)],
            "name": format!("vigil {}", self.node_id),
            "manufacturer": "vigil",
            "model": self.model,
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn availability(&self) -> Value {
        json!([{
            "topic": format!("{}/status", self.base_topic),
            "payload_available": "online",
            "payload_not_available": "offline",
        }])
    }

    /// Where Home Assistant says it (re)started.
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// Every discovery config of this appliance (to see stale ones).
    pub fn config_filter(&self) -> String {
        format!("{}/+/{}/+/config", self.prefix, topic_level(&self.node_id))
    }

    /// The config topic of one metric's entity.
    pub fn sensor_topic(&self, sensor: &str, metric: &str) -> String {
        format!(
            "{}/sensor/{}/{}/config",
            self.prefix,
            topic_level(&self.node_id),
            self.object_id(&[sensor, metric])
        )
    }

    /// The config of one metric's entity.
    pub fn sensor_config(&self, sensor: &str, metric: &str, unit: &str) -> Value {
        let mut c = json!({
            "name": format!("{sensor} {metric}"),
            "unique_id": self.object_id(&[sensor, metric]),
            "state_topic": format!("{}/{}/{}", self.base_topic, topic_level(sensor), topic_level(metric)),
            "value_template": "{{ value_json.value }}",
            "json_attributes_topic": format!("{}/{}/{}", self.base_topic, topic_level(sensor), topic_level(metric)),
            "availability": self.availability(),
            "device": self.device(),
        });
        let (class, state_class) = classify(metric, unit);
        if !unit.is_empty() {
            c["unit_of_measurement"] = json!(ha_unit(unit));
        }
        if let Some(class) = class {
            c["device_class"] = json!(class);
        }
        if let Some(sc) = state_class {
            c["state_class"] = json!(sc);
        }
        c
    }

    /// The config topic of one alert rule's binary sensor.
    pub fn alert_topic(&self, rule: &str) -> String {
        format!(
            "{}/binary_sensor/{}/{}/config",
            self.prefix,
            topic_level(&self.node_id),
            self.object_id(&["alert", rule])
        )
    }

    /// The config of one alert rule's binary sensor: on while it fires.
    pub fn alert_config(&self, rule: &str) -> Value {
        json!({
            "name": format!("alert {rule}"),
            "unique_id": self.object_id(&["alert", rule]),
            "state_topic": format!("{}/alert/{}", self.base_topic, topic_level(rule)),
            "value_template": "{{ 'ON' if value_json.alert.state == 'firing' else 'OFF' }}",
            "device_class": "problem",
            "availability": self.availability(),
            "device": self.device(),
        })
    }

    /// What a retained config of this appliance is about, from its
    /// state topic: a sensor's metric or an alert rule.
    pub fn subject_of(&self, config: &[u8]) -> Option<Subject> {
        let v: Value = serde_json::from_slice(config).ok()?;
        let state = v["state_topic"].as_str()?;
        let rest = state.strip_prefix(&self.base_topic)?.strip_prefix('/')?;
        let (first, second) = rest.split_once('/')?;
        if first == "alert" {
            return Some(Subject::Alert(second.to_owned()));
        }
        Some(Subject::Metric(first.to_owned(), second.to_owned()))
    }
}

/// What a discovery config describes (topic levels, as in the topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Metric(String, String),
    Alert(String),
}

/// The unit as Home Assistant spells it.
fn ha_unit(unit: &str) -> &str {
    match unit {
        "C" | "degC" => "°C",
        "dBA" | "dB(A)" => "dBA",
        u => u,
    }
}

/// Home Assistant's device class and state class for a metric, where the
/// unit (and for percentages the name) says what it measures.
pub fn classify(metric: &str, unit: &str) -> (Option<&'static str>, Option<&'static str>) {
    let m = metric.to_ascii_lowercase();
    let class = match unit {
        "°C" | "°F" | "K" | "C" | "degC" => Some("temperature"),
        "%" if m.contains("humid") => Some("humidity"),
        "%" if m.contains("battery") => Some("battery"),
        "hPa" | "Pa" | "kPa" | "mbar" | "bar" | "psi" | "mmHg" | "inHg" => Some("pressure"),
        "V" | "mV" => Some("voltage"),
        "A" | "mA" => Some("current"),
        "W" | "kW" => Some("power"),
        "Wh" | "kWh" => Some("energy"),
        "dB" | "dBA" | "dB(A)" => Some("sound_pressure"),
        "lx" => Some("illuminance"),
        "Hz" | "kHz" | "MHz" | "GHz" => Some("frequency"),
        "B" | "kB" | "MB" | "GB" | "KiB" | "MiB" | "GiB" => Some("data_size"),
        "ppm" if m.contains("co2") => Some("carbon_dioxide"),
        "s" | "ms" | "min" | "h" => Some("duration"),
        _ => None,
    };
    let state_class = match class {
        Some("energy") => Some("total_increasing"),
        _ => Some("measurement"),
    };
    (class, state_class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device {
            node_id: "pi".into(),
            base_topic: "vigil/pi".into(),
            prefix: "homeassistant".into(),
            model: "Raspberry Pi 5".into(),
        }
    }

    #[test]
    fn a_metric_entity_carries_what_home_assistant_needs() {
        let d = dev();
        assert_eq!(
            d.sensor_topic("bme", "temperature"),
            "homeassistant/sensor/pi/vigil_pi_bme_temperature/config"
        );
        let c = d.sensor_config("bme", "temperature", "°C");
        assert_eq!(c["state_topic"], "vigil/pi/bme/temperature");
        assert_eq!(c["unit_of_measurement"], "°C");
        assert_eq!(c["device_class"], "temperature");
        assert_eq!(c["state_class"], "measurement");
        assert_eq!(c["value_template"], "{{ value_json.value }}");
        assert_eq!(c["unique_id"], "vigil_pi_bme_temperature");
        assert_eq!(c["availability"][0]["topic"], "vigil/pi/status");
        assert_eq!(c["device"]["identifiers"][0], "vigil_pi");
        assert_eq!(c["device"]["model"], "Raspberry Pi 5");
        let c = d.sensor_config("system", "cpu", "%");
        assert!(c.get("device_class").is_none(), "{c}");
        assert_eq!(c["unit_of_measurement"], "%");
        let c = d.sensor_config("door", "open", "");
        assert!(c.get("unit_of_measurement").is_none(), "{c}");
    }

    #[test]
    fn classes_follow_the_unit_and_for_percentages_the_name() {
        assert_eq!(classify("humidity", "%").0, Some("humidity"));
        assert_eq!(classify("memory", "%").0, None);
        assert_eq!(classify("pressure", "hPa").0, Some("pressure"));
        assert_eq!(classify("level", "dBA").0, Some("sound_pressure"));
        assert_eq!(classify("rss", "MiB").0, Some("data_size"));
        assert_eq!(classify("x", "kWh").1, Some("total_increasing"));
    }

    #[test]
    fn a_config_tells_its_subject() {
        let d = dev();
        let c = d.sensor_config("bme", "temperature", "°C").to_string();
        assert_eq!(
            d.subject_of(c.as_bytes()),
            Some(Subject::Metric("bme".into(), "temperature".into()))
        );
        let c = d.alert_config("too hot").to_string();
        assert_eq!(
            d.subject_of(c.as_bytes()),
            Some(Subject::Alert("too_hot".into()))
        );
        assert_eq!(d.subject_of(b""), None);
        assert_eq!(d.subject_of(br#"{"state_topic":"other/x/y"}"#), None);
    }
}
