//! The Pi firmware's throttling flags as a sensor: under-voltage, frequency
//! capping, throttling and the soft temperature limit, now and since boot,
//! each a 0/1 value from `vcgencmd get_throttled`.
//!
//! The decoding is shared with pacing ([`crate::platform::Throttled`]); a
//! weak power supply shows here as `under_voltage` long before it corrupts
//! an SD card. Off a Pi, or without `vcgencmd`, the sensor is unavailable.

use std::time::Duration;

use serde::Deserialize;

use super::HwOptions;
use crate::platform::{VcgencmdError, raspberry_pi_model, vcgencmd_throttled};
use crate::sensors::{Sensor, SensorError};
use crate::vocab::reading::Value;

/// `options` of a `kind = "throttled"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottledOptions {
    /// The `vcgencmd` program (a name on PATH or a path).
    pub vcgencmd: String,
    /// `vcgencmd` is killed if it takes longer (milliseconds).
    pub command_timeout_ms: u64,
}

impl Default for ThrottledOptions {
    fn default() -> Self {
        ThrottledOptions {
            vcgencmd: "vcgencmd".into(),
            command_timeout_ms: 1000,
        }
    }
}

impl HwOptions for ThrottledOptions {
    fn validate(&self) -> Result<(), String> {
        if self.vcgencmd.trim().is_empty() {
            return Err("vcgencmd: must not be empty".into());
        }
        if !(1..=60_000).contains(&self.command_timeout_ms) {
            return Err(format!(
                "command_timeout_ms: {} is not within 1..=60000",
                self.command_timeout_ms
            ));
        }
        Ok(())
    }
}

impl ThrottledOptions {
    /// The command runs within the read: the sensor's timeout must exceed it.
    pub fn min_timeout_ms(&self) -> u64 {
        self.command_timeout_ms
    }
}

/// Reads the flags through `vcgencmd`.
#[derive(Debug)]
pub struct ThrottledSensor {
    options: ThrottledOptions,
}

impl ThrottledSensor {
    /// Refuses to run unless `pi_model` says this is a Raspberry Pi.
    pub fn new(
        options: ThrottledOptions,
        pi_model: Option<String>,
    ) -> Result<ThrottledSensor, SensorError> {
        if pi_model.is_none() {
            return Err(SensorError::Unavailable(
                "not a Raspberry Pi (no Raspberry Pi model in the device tree)".into(),
            ));
        }
        Ok(ThrottledSensor { options })
    }
}

/// What a `vcgencmd` failure means for the sensor.
pub fn vcgencmd_error(e: VcgencmdError) -> SensorError {
    match &e {
        VcgencmdError::NotFound(_) => SensorError::Unavailable(format!(
            "{e} (install the Raspberry Pi utilities: raspi-utils or libraspberrypi-bin)"
        )),
        VcgencmdError::Failed { message, .. }
            if message.contains("vchiq") || message.contains("ermission denied") =>
        {
            SensorError::Unavailable(format!("{e} (the service user needs the `video` group)"))
        }
        _ => SensorError::Transient(e.to_string()),
    }
}

impl Sensor for ThrottledSensor {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        let timeout = Duration::from_millis(self.options.command_timeout_ms);
        let word = vcgencmd_throttled(&self.options.vcgencmd, timeout).map_err(vcgencmd_error)?;
        Ok(word
            .as_metrics()
            .into_iter()
            .map(|(metric, v)| Value::new(metric, v, ""))
            .collect())
    }
}

/// Builds the sensor on this host.
pub fn build(options: &ThrottledOptions) -> Result<Box<dyn Sensor>, SensorError> {
    Ok(Box::new(ThrottledSensor::new(
        options.clone(),
        raspberry_pi_model(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_vcgencmd(dir: &std::path::Path, script: &str) -> String {
        let path = dir.join("vcgencmd");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A process forked elsewhere in the test binary while the file was
        // open for writing keeps it "busy" until it execs: wait for that.
        for _ in 0..500 {
            match std::process::Command::new(&path).output() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
        path.display().to_string()
    }

    fn pi() -> Option<String> {
        Some("Raspberry Pi 5 Model B Rev 1.0".into())
    }

    #[test]
    fn reports_every_flag_from_vcgencmd() {
        let dir = tempfile::tempdir().unwrap();
        let options = ThrottledOptions {
            vcgencmd: fake_vcgencmd(dir.path(), "echo throttled=0x50005"),
            // Generous: a loaded test machine can be slow to fork.
            command_timeout_ms: 10_000,
        };
        let mut s = ThrottledSensor::new(options, pi()).unwrap();
        let v = s.read().unwrap();
        assert_eq!(v.len(), 8);
        let get = |m: &str| v.iter().find(|x| x.metric == m).unwrap().value;
        assert_eq!(get("under_voltage"), 1.0);
        assert_eq!(get("throttled"), 1.0);
        assert_eq!(get("under_voltage_since_boot"), 1.0);
        assert_eq!(get("soft_temp_limit"), 0.0);
        assert_eq!(get("arm_freq_capped_since_boot"), 0.0);
    }

    #[test]
    fn off_a_pi_or_without_vcgencmd_it_is_unavailable() {
        let e = ThrottledSensor::new(ThrottledOptions::default(), None).unwrap_err();
        assert!(matches!(&e, SensorError::Unavailable(r) if r.contains("not a Raspberry Pi")));

        let options = ThrottledOptions {
            vcgencmd: "/nonexistent/vcgencmd".into(),
            ..ThrottledOptions::default()
        };
        let e = ThrottledSensor::new(options, pi())
            .unwrap()
            .read()
            .unwrap_err();
        assert!(
            matches!(&e, SensorError::Unavailable(r) if r.contains("not found")),
            "{e:?}"
        );
    }

    #[test]
    fn failures_of_the_command_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let run = |script: &str| {
            let options = ThrottledOptions {
                vcgencmd: fake_vcgencmd(dir.path(), script),
                command_timeout_ms: 10_000,
            };
            ThrottledSensor::new(options, pi())
                .unwrap()
                .read()
                .unwrap_err()
        };
        // No access to the firmware interface: a permissions problem.
        let e = run("echo 'Failed to open vchiq instance' >&2; exit 255");
        assert!(
            matches!(&e, SensorError::Unavailable(r) if r.contains("video")),
            "{e:?}"
        );
        // Garbage or a passing failure: try again next time.
        assert!(matches!(run("echo nonsense"), SensorError::Transient(_)));
        assert!(matches!(run("exit 1"), SensorError::Transient(_)));
    }

    #[test]
    fn options_are_validated_by_name() {
        let d = ThrottledOptions::default();
        let e = ThrottledOptions {
            vcgencmd: " ".into(),
            ..d.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("vcgencmd:"), "{e}");
        let e = ThrottledOptions {
            command_timeout_ms: 0,
            ..d.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("command_timeout_ms:"), "{e}");
        assert!(d.validate().is_ok());
    }
}
