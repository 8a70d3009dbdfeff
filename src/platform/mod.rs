//! Facts about the host that several parts of vigil need: whether this is a
//! Raspberry Pi, and what the Pi's firmware says through `vcgencmd`
//! (SoC temperature, throttling flags). Off a Pi every function here
//! answers "absent" rather than failing. And the TLS client configuration
//! every outbound connection uses (`tls.rs`).

pub mod proc;
pub mod thermal;
pub mod throttled;
pub mod tls;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use throttled::Throttled;

/// Where the device tree names the board.
const MODEL_PATHS: &[&str] = &[
    "/proc/device-tree/model",
    "/sys/firmware/devicetree/base/model",
];

/// The board's model string if this is a Raspberry Pi ("Raspberry Pi 5
/// Model B Rev 1.0"), else `None`.
pub fn raspberry_pi_model() -> Option<String> {
    MODEL_PATHS.iter().find_map(|p| pi_model_at(Path::new(p)))
}

/// The model named in a device-tree `model` file, if it is a Raspberry Pi.
pub fn pi_model_at(path: &Path) -> Option<String> {
    let raw = std::fs::read(path).ok()?;
    let model = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .trim()
        .to_owned();
    model.starts_with("Raspberry Pi").then_some(model)
}

/// Raises this process's open-file limit to its hard limit: an appliance
/// serving many WebSocket clients, or a load generator, needs more than the
/// usual soft limit of 1024.
pub fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        log::warn!("cannot raise the open-file limit: {e}");
    }
}

/// Why a `vcgencmd` query gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VcgencmdError {
    /// The command is not installed (not a Pi, or a minimal image).
    #[error("{0} not found")]
    NotFound(String),
    #[error("{command} failed: {message}")]
    Failed { command: String, message: String },
    #[error("{command} did not answer within {timeout_ms} ms")]
    TimedOut { command: String, timeout_ms: u64 },
    #[error("unexpected output from {command}: `{output}`")]
    Unparsable { command: String, output: String },
}

/// Runs `program args...`, returning stdout; kills it after `timeout`.
/// Blocking: call from the blocking pool.
pub fn run_with_timeout(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, VcgencmdError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VcgencmdError::NotFound(program.to_owned()),
            _ => VcgencmdError::Failed {
                command: command.clone(),
                message: e.to_string(),
            },
        })?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VcgencmdError::TimedOut {
                    command,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                return Err(VcgencmdError::Failed {
                    command,
                    message: e.to_string(),
                });
            }
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        return Err(VcgencmdError::Failed {
            command,
            message: format!("{status}: {}", err.trim()),
        });
    }
    Ok(out)
}

/// Parses `vcgencmd measure_temp` output (`temp=48.3'C`) into °C.
pub fn parse_measure_temp(output: &str) -> Option<f64> {
    let v = output.trim().strip_prefix("temp=")?;
    let v = v.trim_end_matches("'C").trim_end_matches("°C");
    v.parse::<f64>().ok().filter(|t| t.is_finite())
}

/// The SoC temperature from `vcgencmd measure_temp`.
pub fn vcgencmd_temperature(program: &str, timeout: Duration) -> Result<f64, VcgencmdError> {
    let out = run_with_timeout(program, &["measure_temp"], timeout)?;
    parse_measure_temp(&out).ok_or_else(|| VcgencmdError::Unparsable {
        command: format!("{program} measure_temp"),
        output: out.trim().to_owned(),
    })
}

/// The throttling flags from `vcgencmd get_throttled`.
pub fn vcgencmd_throttled(program: &str, timeout: Duration) -> Result<Throttled, VcgencmdError> {
    let out = run_with_timeout(program, &["get_throttled"], timeout)?;
    Throttled::parse(&out).ok_or_else(|| VcgencmdError::Unparsable {
        command: format!("{program} get_throttled"),
        output: out.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_pi_from_its_device_tree_model() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model");
        std::fs::write(&p, b"Raspberry Pi 4 Model B Rev 1.4\0").unwrap();
        assert_eq!(
            pi_model_at(&p).as_deref(),
            Some("Raspberry Pi 4 Model B Rev 1.4")
        );
        std::fs::write(&p, b"Generic x86 board\0").unwrap();
        assert_eq!(pi_model_at(&p), None);
        assert_eq!(pi_model_at(&dir.path().join("absent")), None);
    }

    #[test]
    fn parses_measure_temp() {
        assert_eq!(parse_measure_temp("temp=48.3'C\n"), Some(48.3));
        assert_eq!(parse_measure_temp("temp=-5.0'C"), Some(-5.0));
        assert_eq!(parse_measure_temp("error"), None);
    }

    #[test]
    fn a_missing_program_is_not_found_and_a_slow_one_times_out() {
        let e = vcgencmd_throttled("/nonexistent/vcgencmd", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, VcgencmdError::NotFound(_)), "{e:?}");
        let e = run_with_timeout("sleep", &["5"], Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, VcgencmdError::TimedOut { .. }), "{e:?}");
        let e = run_with_timeout("false", &[], Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, VcgencmdError::Failed { .. }), "{e:?}");
    }
}
