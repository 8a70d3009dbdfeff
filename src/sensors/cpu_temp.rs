//! The CPU temperature sensor: the SoC's thermal zone under
//! `/sys/class/thermal`, falling back to sysinfo's hwmon components.
//!
//! Containers and many VMs have neither; that is reported as `unavailable`
//! with the places searched, not as an error to retry and log every tick.

use std::path::Path;

use serde::Deserialize;

use super::{Sensor, SensorError};
use crate::platform::thermal::{
    DEFAULT_THERMAL_ROOT, hwmon_celsius, list_zones, pick_zone, read_zone_celsius,
};
use crate::vocab::reading::Value;

/// `options` of a `kind = "cpu_temp"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuTempOptions {
    /// Directory holding `thermal_zone*/{type,temp}`.
    pub thermal_root: String,
    /// Use the zone whose `type` is exactly this; empty picks the CPU zone.
    pub zone_type: String,
    /// Fall back to sysinfo's hwmon components when no zone is found.
    pub use_hwmon: bool,
}

impl Default for CpuTempOptions {
    fn default() -> Self {
        CpuTempOptions {
            thermal_root: DEFAULT_THERMAL_ROOT.into(),
            zone_type: String::new(),
            use_hwmon: true,
        }
    }
}

/// Reads the CPU temperature on every call, re-discovering the zone, so a
/// zone that appears later (a module loaded after boot) is picked up.
pub struct CpuTempSensor {
    options: CpuTempOptions,
}

impl CpuTempSensor {
    pub fn new(options: &CpuTempOptions) -> CpuTempSensor {
        CpuTempSensor {
            options: options.clone(),
        }
    }
}

impl Sensor for CpuTempSensor {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        let root = Path::new(&self.options.thermal_root);
        let zones = list_zones(root);
        let celsius = match pick_zone(&zones, &self.options.zone_type) {
            Some(zone) => read_zone_celsius(&zone.temp_path).map_err(SensorError::Transient)?,
            None => match self.options.use_hwmon.then(hwmon_celsius).flatten() {
                Some(t) => t,
                None => {
                    let what = if self.options.zone_type.is_empty() {
                        "no thermal zone".to_owned()
                    } else {
                        format!("no thermal zone of type `{}`", self.options.zone_type)
                    };
                    return Err(SensorError::Unavailable(format!(
                        "{what} under {}{}",
                        root.display(),
                        if self.options.use_hwmon {
                            " and no CPU temperature in hwmon"
                        } else {
                            ""
                        }
                    )));
                }
            },
        };
        Ok(vec![Value::new("temperature", celsius, "°C")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn zone(root: &Path, n: u32, kind: &str, temp: &str) {
        let dir = root.join(format!("thermal_zone{n}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        fs::write(dir.join("temp"), format!("{temp}\n")).unwrap();
    }

    fn sensor(root: &Path, zone_type: &str) -> CpuTempSensor {
        CpuTempSensor::new(&CpuTempOptions {
            thermal_root: root.display().to_string(),
            zone_type: zone_type.into(),
            use_hwmon: false,
        })
    }

    #[test]
    fn prefers_the_cpu_zone() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 0, "acpitz", "30000");
        zone(dir.path(), 1, "cpu-thermal", "51234");
        let v = sensor(dir.path(), "").read().unwrap();
        assert_eq!(v[0].value, 51.234);
        assert_eq!(v[0].unit, "°C");
    }

    #[test]
    fn a_named_zone_type_is_used_or_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 0, "acpitz", "30000");
        assert_eq!(sensor(dir.path(), "acpitz").read().unwrap()[0].value, 30.0);
        let e = sensor(dir.path(), "gpu").read().unwrap_err();
        assert!(
            matches!(e, SensorError::Unavailable(ref m) if m.contains("`gpu`")),
            "{e}"
        );
    }

    #[test]
    fn no_zones_is_unavailable_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = sensor(&dir.path().join("absent"), "").read().unwrap_err();
        assert!(matches!(e, SensorError::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn garbage_in_the_file_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), 0, "cpu-thermal", "hot");
        let e = sensor(dir.path(), "").read().unwrap_err();
        assert!(matches!(e, SensorError::Transient(_)), "{e:?}");
    }
}
