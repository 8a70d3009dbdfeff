//! The CPU temperature sensor: the SoC's thermal zone under
//! `/sys/class/thermal`, falling back to sysinfo's hwmon components.
//!
//! Containers and many VMs have neither; that is reported as `unavailable`
//! with the places searched, not as an error to retry and log every tick.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Sensor, SensorError, Value};

/// Where Linux exposes thermal zones.
pub const DEFAULT_THERMAL_ROOT: &str = "/sys/class/thermal";

/// Zone types that are the CPU / SoC, in order of preference.
const PREFERRED_ZONE_TYPES: &[&str] = &[
    "cpu-thermal",
    "cpu_thermal",
    "soc_thermal",
    "x86_pkg_temp",
    "cpu",
    "soc",
];

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

/// A thermal zone found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub kind: String,
    pub temp_path: PathBuf,
}

/// Lists `thermal_zone*` under `root` with their types, sorted by name.
pub fn list_zones(root: &Path) -> Vec<Zone> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut zones: Vec<(String, Zone)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("thermal_zone") {
                return None;
            }
            let dir = e.path();
            let kind = fs::read_to_string(dir.join("type"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            Some((
                name,
                Zone {
                    kind,
                    temp_path: dir.join("temp"),
                },
            ))
        })
        .collect();
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    zones.into_iter().map(|(_, z)| z).collect()
}

/// Picks the CPU zone: the requested type, else the first preferred type,
/// else the first zone.
pub fn pick_zone<'a>(zones: &'a [Zone], wanted: &str) -> Option<&'a Zone> {
    if !wanted.is_empty() {
        return zones.iter().find(|z| z.kind == wanted);
    }
    PREFERRED_ZONE_TYPES
        .iter()
        .find_map(|t| zones.iter().find(|z| z.kind == *t))
        .or_else(|| zones.first())
}

/// Reads a zone's `temp` file (millidegrees Celsius) as degrees.
pub fn read_zone_celsius(path: &Path) -> Result<f64, SensorError> {
    let text = fs::read_to_string(path)
        .map_err(|e| SensorError::Transient(format!("cannot read {}: {e}", path.display())))?;
    let milli: f64 = text.trim().parse().map_err(|_| {
        SensorError::Transient(format!(
            "{} holds `{}`, not a temperature",
            path.display(),
            text.trim()
        ))
    })?;
    Ok(milli / 1000.0)
}

/// The hottest hwmon component that looks like the CPU, through sysinfo.
pub fn hwmon_celsius() -> Option<f64> {
    let components = sysinfo::Components::new_with_refreshed_list().ok()?;
    let cpu_like = |label: &str| {
        let l = label.to_ascii_lowercase();
        ["cpu", "core", "package", "soc", "tctl", "k10temp"]
            .iter()
            .any(|k| l.contains(k))
    };
    components
        .iter()
        .filter(|c| cpu_like(c.label()))
        .filter_map(|c| c.temperature())
        .map(f64::from)
        .filter(|t| t.is_finite())
        .reduce(f64::max)
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
            Some(zone) => read_zone_celsius(&zone.temp_path)?,
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
