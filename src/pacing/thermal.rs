//! What the thermal watchdog reads: the SoC temperature from a thermal zone,
//! else hwmon through sysinfo, else `vcgencmd measure_temp`; and the Pi
//! firmware's throttling flags from `vcgencmd get_throttled`.
//!
//! Blocking (files, child processes): the watchdog runs [`ThermalProbe::read`]
//! on the blocking pool. An absent source is part of the reading (with the
//! places tried), never an error; a `vcgencmd` that is not installed is
//! asked again only every [`VCGENCMD_RETRY`], not at every poll.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::config::PacingConfig;
use crate::platform::thermal::{hwmon_celsius, list_zones, pick_zone, read_zone_celsius};
use crate::platform::{Throttled, VcgencmdError, vcgencmd_temperature, vcgencmd_throttled};

/// How long one `vcgencmd` query may take.
pub const VCGENCMD_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a `vcgencmd` that was not found is looked for again.
pub const VCGENCMD_RETRY: Duration = Duration::from_secs(60);

/// One look at the SoC's temperature and throttling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThermalReading {
    pub temperature_c: Option<f64>,
    /// Where the temperature came from.
    pub source: Option<String>,
    /// Without a temperature: every place tried and what it said.
    pub unavailable_reason: Option<String>,
    pub throttled: Option<Throttled>,
    /// Without throttling flags: why.
    pub throttled_unavailable_reason: Option<String>,
}

/// The watchdog's sources, with the memory of a missing `vcgencmd`.
pub struct ThermalProbe {
    root: PathBuf,
    zone_type: String,
    use_hwmon: bool,
    vcgencmd: String,
    /// `vcgencmd` was not found: skip it until then, with this reason.
    vcgencmd_absent: Option<(Instant, String)>,
}

impl ThermalProbe {
    pub fn new(config: &PacingConfig) -> ThermalProbe {
        ThermalProbe {
            root: PathBuf::from(&config.thermal_root),
            zone_type: config.zone_type.clone(),
            use_hwmon: config.use_hwmon,
            vcgencmd: config.vcgencmd.clone(),
            vcgencmd_absent: None,
        }
    }

    /// The `vcgencmd` program to ask now, or why not.
    fn vcgencmd(&mut self, now: Instant) -> Result<String, String> {
        if self.vcgencmd.is_empty() {
            return Err("vcgencmd not configured (pacing.vcgencmd is empty)".into());
        }
        match &self.vcgencmd_absent {
            Some((until, reason)) if now < *until => Err(reason.clone()),
            _ => {
                self.vcgencmd_absent = None;
                Ok(self.vcgencmd.clone())
            }
        }
    }

    /// Remembers a `vcgencmd` that is not installed; other failures are
    /// retried at the next poll.
    fn vcgencmd_failed(&mut self, e: &VcgencmdError, now: Instant) -> String {
        let reason = match e {
            VcgencmdError::NotFound(_) => format!(
                "{e} (looked for again every {} s)",
                VCGENCMD_RETRY.as_secs()
            ),
            _ => e.to_string(),
        };
        if matches!(e, VcgencmdError::NotFound(_)) {
            self.vcgencmd_absent = Some((now + VCGENCMD_RETRY, reason.clone()));
        }
        reason
    }

    /// Reads every source once. Blocking.
    pub fn read(&mut self, now: Instant) -> ThermalReading {
        let mut tried: Vec<String> = Vec::new();
        let mut found: Option<(f64, String)> = None;

        let zones = list_zones(&self.root);
        match pick_zone(&zones, &self.zone_type) {
            Some(zone) => match read_zone_celsius(&zone.temp_path) {
                Ok(t) if t.is_finite() => {
                    found = Some((
                        t,
                        format!("thermal zone {} ({})", zone.kind, zone.temp_path.display()),
                    ))
                }
                Ok(t) => tried.push(format!("{} holds {t}", zone.temp_path.display())),
                Err(m) => tried.push(m),
            },
            None if self.zone_type.is_empty() => {
                tried.push(format!("no thermal zone under {}", self.root.display()))
            }
            None => tried.push(format!(
                "no thermal zone of type `{}` under {}",
                self.zone_type,
                self.root.display()
            )),
        }
        if found.is_none() && self.use_hwmon {
            match hwmon_celsius() {
                Some(t) => found = Some((t, "hwmon (sysinfo components)".into())),
                None => tried.push("no CPU temperature in hwmon".into()),
            }
        }
        if found.is_none() {
            match self.vcgencmd(now) {
                Ok(program) => match vcgencmd_temperature(&program, VCGENCMD_TIMEOUT) {
                    Ok(t) => found = Some((t, format!("{program} measure_temp"))),
                    Err(e) => tried.push(self.vcgencmd_failed(&e, now)),
                },
                Err(reason) => tried.push(reason),
            }
        }

        let (throttled, throttled_unavailable_reason) = match self.vcgencmd(now) {
            Ok(program) => match vcgencmd_throttled(&program, VCGENCMD_TIMEOUT) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(self.vcgencmd_failed(&e, now))),
            },
            Err(reason) => (None, Some(reason)),
        };

        let (temperature_c, source) = match found {
            Some((t, s)) => (Some(t), Some(s)),
            None => (None, None),
        };
        ThermalReading {
            temperature_c,
            source,
            unavailable_reason: temperature_c.is_none().then(|| tried.join("; ")),
            throttled,
            throttled_unavailable_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn zone(root: &Path, kind: &str, millis: &str) {
        let dir = root.join("thermal_zone0");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        fs::write(dir.join("temp"), format!("{millis}\n")).unwrap();
    }

    fn probe(root: &Path, vcgencmd: &str) -> ThermalProbe {
        ThermalProbe::new(&PacingConfig {
            thermal_root: root.display().to_string(),
            use_hwmon: false,
            vcgencmd: vcgencmd.into(),
            ..PacingConfig::default()
        })
    }

    /// A stand-in `vcgencmd` answering like a Pi's firmware.
    fn fake_vcgencmd(dir: &Path, throttled: &str) -> String {
        let path = dir.join("vcgencmd");
        fs::write(
            &path,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n  measure_temp) echo \"temp=71.5'C\" ;;\n  get_throttled) echo \"throttled={throttled}\" ;;\n  *) exit 1 ;;\nesac\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    /// Runs a fake script, retrying the rare "text file busy" of a script
    /// executed right after another thread forked while it was being written.
    fn read_settled(p: &mut ThermalProbe, now: Instant) -> ThermalReading {
        for _ in 0..50 {
            let r = p.read(now);
            let busy = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains("busy"));
            if !busy(&r.unavailable_reason) && !busy(&r.throttled_unavailable_reason) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the fake vcgencmd stayed busy");
    }

    #[test]
    fn reads_the_zone_and_reports_a_missing_vcgencmd_as_a_state() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), "cpu-thermal", "52500");
        let mut p = probe(dir.path(), "/nonexistent/vcgencmd");
        let now = Instant::now();
        let r = p.read(now);
        assert_eq!(r.temperature_c, Some(52.5));
        assert!(r.source.unwrap().contains("cpu-thermal"));
        assert_eq!(r.unavailable_reason, None);
        assert_eq!(r.throttled, None);
        let why = r.throttled_unavailable_reason.unwrap();
        assert!(why.contains("not found"), "{why}");
        // Not looked for again until the retry interval has passed.
        assert!(p.vcgencmd(now + Duration::from_secs(1)).is_err());
        assert!(p.vcgencmd(now + VCGENCMD_RETRY).is_ok());
    }

    #[test]
    fn without_any_source_the_reading_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = probe(&dir.path().join("absent"), "");
        let r = p.read(Instant::now());
        assert_eq!(r.temperature_c, None);
        let why = r.unavailable_reason.unwrap();
        assert!(why.contains("no thermal zone under"), "{why}");
        assert!(why.contains("pacing.vcgencmd is empty"), "{why}");
        assert!(r.throttled_unavailable_reason.is_some());
    }

    #[test]
    fn a_broken_zone_falls_back_to_vcgencmd_which_also_reports_throttling() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), "cpu-thermal", "garbage");
        let vc = fake_vcgencmd(dir.path(), "0x50005");
        let mut p = probe(dir.path(), &vc);
        let r = read_settled(&mut p, Instant::now());
        assert_eq!(r.temperature_c, Some(71.5), "{r:?}");
        assert!(r.source.unwrap().contains("measure_temp"));
        let flags = r.throttled.unwrap().flags();
        assert!(flags.under_voltage && flags.throttled && flags.under_voltage_since_boot);
        assert!(!flags.soft_temp_limit);
    }

    #[test]
    fn a_named_zone_type_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        zone(dir.path(), "acpitz", "40000");
        let mut p = probe(dir.path(), "");
        p.zone_type = "gpu".into();
        let r = p.read(Instant::now());
        assert_eq!(r.temperature_c, None);
        assert!(r.unavailable_reason.unwrap().contains("`gpu`"));
    }
}
