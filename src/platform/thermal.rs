//! The SoC's temperature as Linux exposes it: thermal zones under
//! `/sys/class/thermal`, and hwmon components through sysinfo. Shared by the
//! `cpu_temp` sensor and the thermal watchdog, which read the same places.

use std::fs;
use std::path::{Path, PathBuf};

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
///
/// The error says what went wrong and names the file.
pub fn read_zone_celsius(path: &Path) -> Result<f64, String> {
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let milli: f64 = text.trim().parse().map_err(|_| {
        format!(
            "{} holds `{}`, not a temperature",
            path.display(),
            text.trim()
        )
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
