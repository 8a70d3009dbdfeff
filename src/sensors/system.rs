//! The system sensor: the host's own health through sysinfo: CPU and memory
//! use, load averages, and how full the database's filesystem is.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use sysinfo::{Disks, System};

use super::{BuildEnv, Sensor, SensorError};
use crate::vocab::reading::Value;

/// `options` of a `kind = "system"` sensor.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemOptions {
    /// Report how full the filesystem holding this path is; empty means the
    /// filesystem of the database.
    pub disk_path: String,
}

/// Reads CPU, memory, load and disk figures. CPU usage is a difference
/// between two samples, so the first read waits until the minimum interval
/// sysinfo needs has passed since the driver was built.
pub struct SystemSensor {
    system: System,
    disks: Disks,
    disk_path: PathBuf,
    last_cpu_refresh: Instant,
}

impl SystemSensor {
    pub fn new(options: &SystemOptions, env: &BuildEnv) -> Result<SystemSensor, SensorError> {
        let mut system = System::new()
            .map_err(|e| SensorError::Unavailable(format!("sysinfo unsupported here: {e}")))?;
        system.refresh_cpu_usage();
        let disks = Disks::new_with_refreshed_list()
            .map_err(|e| SensorError::Transient(format!("cannot list disks: {e}")))?;
        let disk_path = if options.disk_path.is_empty() {
            env.database_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        } else {
            PathBuf::from(&options.disk_path)
        };
        let disk_path = disk_path.canonicalize().unwrap_or(disk_path);
        Ok(SystemSensor {
            system,
            disks,
            disk_path,
            last_cpu_refresh: Instant::now(),
        })
    }

    /// Used percentage of the mounted filesystem that holds `disk_path`: the
    /// disk whose mount point is the longest prefix of the path.
    fn disk_used_percent(&mut self) -> Option<f64> {
        let disk = self
            .disks
            .iter_mut()
            .filter(|d| self.disk_path.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len())?;
        disk.refresh();
        let total = disk.total_space();
        (total > 0).then(|| percent(total - disk.available_space().min(total), total))
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl Sensor for SystemSensor {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        let since = self.last_cpu_refresh.elapsed();
        if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
        }
        self.system.refresh_cpu_usage();
        self.last_cpu_refresh = Instant::now();
        self.system.refresh_memory();

        let mut values = Vec::with_capacity(6);
        values.push(Value::new(
            "cpu",
            f64::from(self.system.global_cpu_usage()),
            "%",
        ));
        let total = self.system.total_memory();
        if total > 0 {
            let used = total - self.system.available_memory().min(total);
            values.push(Value::new("memory", percent(used, total), "%"));
        }
        if let Ok(load) = System::load_average() {
            values.push(Value::new("load1", load.one, ""));
            values.push(Value::new("load5", load.five, ""));
            values.push(Value::new("load15", load.fifteen, ""));
        }
        if let Some(disk) = self.disk_used_percent() {
            values.push(Value::new("disk", disk, "%"));
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_memory_and_load_on_this_host() {
        let env = BuildEnv {
            database_path: std::env::temp_dir().join("vigil-test.db"),
            mqtt: None,
        };
        let mut s = SystemSensor::new(&SystemOptions::default(), &env).unwrap();
        let values = s.read().unwrap();
        let names: Vec<_> = values.iter().map(|v| v.metric.as_ref()).collect();
        assert!(
            names.contains(&"cpu") && names.contains(&"memory"),
            "{names:?}"
        );
        for v in &values {
            assert!(v.value.is_finite() && v.value >= 0.0, "{v:?}");
            if v.unit == "%" {
                assert!(v.value <= 100.0, "{v:?}");
            }
        }
    }

    #[test]
    fn percent_handles_zero() {
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
    }
}
