//! `[pacing]`: thresholds, hysteresis, dwell and multipliers of the pacing
//! policy, and where the thermal watchdog and load monitor look. Every key
//! is documented, with its default, in `config/vigil.toml`.

use serde::Deserialize;

use crate::platform::thermal::DEFAULT_THERMAL_ROOT;
use crate::vocab::check::{ConfigError, positive};

/// The shortest load poll: sysinfo's CPU usage is a difference between two
/// refreshes, which must be at least this far apart.
pub const MIN_LOAD_INTERVAL_MS: u64 = 200;
/// The largest interval multiplier accepted, so that stretched intervals
/// stay meaningful.
pub const MAX_MULTIPLIER: f64 = 100.0;

/// `[pacing]` after validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacingConfig {
    /// Runs the thermal watchdog and load monitor and paces sensors. Off:
    /// every sensor runs at its configured interval.
    pub enabled: bool,
    /// Temperatures (°C) at which the level rises to warm, hot, critical.
    pub temp_warm_c: f64,
    pub temp_hot_c: f64,
    pub temp_critical_c: f64,
    /// A level reached by temperature is left only at or below its
    /// threshold minus this.
    pub temp_hysteresis_c: f64,
    /// CPU usage (%) at which the level rises to warm and hot. Load alone
    /// never makes the level critical.
    pub cpu_warm_percent: f64,
    pub cpu_hot_percent: f64,
    /// A level reached by CPU usage is left only at or below its threshold
    /// minus this.
    pub cpu_hysteresis_percent: f64,
    /// The level drops only after every observation for this long supported
    /// the lower level. Rises are immediate.
    pub min_dwell_ms: u64,
    /// Interval multipliers per level.
    pub multiplier_normal: f64,
    pub multiplier_warm: f64,
    pub multiplier_hot: f64,
    pub multiplier_critical: f64,
    /// How often the thermal watchdog reads the temperature and throttling.
    pub watchdog_interval_ms: u64,
    /// How often the load monitor samples CPU, load and memory.
    pub load_interval_ms: u64,
    /// Runs the load monitor; off, only heat paces.
    pub use_load: bool,
    /// Directory holding `thermal_zone*/{type,temp}`.
    pub thermal_root: String,
    /// Use the zone of exactly this type; empty picks the CPU/SoC zone.
    pub zone_type: String,
    /// Fall back to hwmon components (through sysinfo) without a zone.
    pub use_hwmon: bool,
    /// The `vcgencmd` program (throttling flags, and the temperature when
    /// nothing else has it). Empty: not used.
    pub vcgencmd: String,
}

impl PacingConfig {
    /// Whether `new` differs from this section in policy keys only
    /// (thresholds, hysteresis, dwell, multipliers), which a reload applies
    /// live; the other keys shape the monitors and need a restart. Every
    /// field is named here, so a new key must be placed on one side.
    pub fn policy_differs_only(&self, new: &PacingConfig) -> bool {
        let PacingConfig {
            enabled,
            temp_warm_c: _,
            temp_hot_c: _,
            temp_critical_c: _,
            temp_hysteresis_c: _,
            cpu_warm_percent: _,
            cpu_hot_percent: _,
            cpu_hysteresis_percent: _,
            min_dwell_ms: _,
            multiplier_normal: _,
            multiplier_warm: _,
            multiplier_hot: _,
            multiplier_critical: _,
            watchdog_interval_ms,
            load_interval_ms,
            use_load,
            thermal_root,
            zone_type,
            use_hwmon,
            vcgencmd,
        } = self;
        *enabled == new.enabled
            && *watchdog_interval_ms == new.watchdog_interval_ms
            && *load_interval_ms == new.load_interval_ms
            && *use_load == new.use_load
            && *thermal_root == new.thermal_root
            && *zone_type == new.zone_type
            && *use_hwmon == new.use_hwmon
            && *vcgencmd == new.vcgencmd
    }
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            temp_warm_c: 65.0,
            temp_hot_c: 75.0,
            temp_critical_c: 80.0,
            temp_hysteresis_c: 5.0,
            cpu_warm_percent: 50.0,
            cpu_hot_percent: 80.0,
            cpu_hysteresis_percent: 10.0,
            min_dwell_ms: 30_000,
            multiplier_normal: 1.0,
            multiplier_warm: 1.5,
            multiplier_hot: 2.0,
            multiplier_critical: 4.0,
            watchdog_interval_ms: 5000,
            load_interval_ms: 5000,
            use_load: true,
            thermal_root: DEFAULT_THERMAL_ROOT.into(),
            zone_type: String::new(),
            use_hwmon: true,
            vcgencmd: "vcgencmd".into(),
        }
    }
}

impl PacingConfig {
    /// The multiplier of each level, normal first.
    pub fn multipliers(&self) -> [f64; 4] {
        [
            self.multiplier_normal,
            self.multiplier_warm,
            self.multiplier_hot,
            self.multiplier_critical,
        ]
    }

    /// Checks what the types cannot, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let finite = |key: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    format!("pacing.{key}"),
                    "must be a finite number",
                ))
            }
        };
        let ascending = |keys: &[(&str, f64)]| {
            for (k, v) in keys {
                finite(k, *v)?;
            }
            for w in keys.windows(2) {
                let ((lo_key, lo), (hi_key, hi)) = (w[0], w[1]);
                if hi <= lo {
                    return Err(ConfigError::invalid(
                        format!("pacing.{hi_key}"),
                        format!(
                            "{hi} must be above pacing.{lo_key} ({lo}); thresholds are out of order"
                        ),
                    ));
                }
            }
            Ok(())
        };
        ascending(&[
            ("temp_warm_c", self.temp_warm_c),
            ("temp_hot_c", self.temp_hot_c),
            ("temp_critical_c", self.temp_critical_c),
        ])?;
        ascending(&[
            ("cpu_warm_percent", self.cpu_warm_percent),
            ("cpu_hot_percent", self.cpu_hot_percent),
        ])?;
        if self.cpu_warm_percent <= 0.0 || self.cpu_hot_percent > 100.0 {
            return Err(ConfigError::invalid(
                if self.cpu_warm_percent <= 0.0 {
                    "pacing.cpu_warm_percent"
                } else {
                    "pacing.cpu_hot_percent"
                },
                "CPU thresholds must lie above 0 and at most 100",
            ));
        }
        for (key, v) in [
            ("temp_hysteresis_c", self.temp_hysteresis_c),
            ("cpu_hysteresis_percent", self.cpu_hysteresis_percent),
        ] {
            finite(key, v)?;
            if v < 0.0 {
                return Err(ConfigError::invalid(
                    format!("pacing.{key}"),
                    "must not be negative",
                ));
            }
        }
        let names = [
            "multiplier_normal",
            "multiplier_warm",
            "multiplier_hot",
            "multiplier_critical",
        ];
        let mults = self.multipliers();
        for (key, m) in names.iter().zip(mults) {
            finite(key, m)?;
            if !(1.0..=MAX_MULTIPLIER).contains(&m) {
                return Err(ConfigError::invalid(
                    format!("pacing.{key}"),
                    format!("{m} must be from 1 to {MAX_MULTIPLIER}"),
                ));
            }
        }
        for i in 1..mults.len() {
            if mults[i] < mults[i - 1] {
                return Err(ConfigError::invalid(
                    format!("pacing.{}", names[i]),
                    format!(
                        "{} is below pacing.{} ({}); a worse level must not poll faster",
                        mults[i],
                        names[i - 1],
                        mults[i - 1]
                    ),
                ));
            }
        }
        positive("pacing.watchdog_interval_ms", self.watchdog_interval_ms)?;
        if self.load_interval_ms < MIN_LOAD_INTERVAL_MS {
            return Err(ConfigError::invalid(
                "pacing.load_interval_ms",
                format!(
                    "{} is below {MIN_LOAD_INTERVAL_MS}; CPU usage needs samples at least that far apart",
                    self.load_interval_ms
                ),
            ));
        }
        if self.thermal_root.is_empty() {
            return Err(ConfigError::invalid(
                "pacing.thermal_root",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::config::Config;

    fn err(text: &str) -> String {
        Config::from_toml(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        PacingConfig::default().validate().unwrap();
    }

    #[test]
    fn thresholds_out_of_order_name_the_key() {
        let e = err("[pacing]\ntemp_hot_c = 85.0\n");
        assert!(
            e.contains("pacing.temp_critical_c") && e.contains("out of order"),
            "{e}"
        );
        let e = err("[pacing]\ncpu_warm_percent = 90.0\n");
        assert!(e.contains("pacing.cpu_hot_percent"), "{e}");
        let e = err("[pacing]\ncpu_hot_percent = 120.0\n");
        assert!(e.contains("pacing.cpu_hot_percent"), "{e}");
    }

    #[test]
    fn multipliers_must_grow_with_the_level() {
        let e = err("[pacing]\nmultiplier_hot = 1.2\n");
        assert!(e.contains("pacing.multiplier_hot"), "{e}");
        let e = err("[pacing]\nmultiplier_normal = 0.5\n");
        assert!(e.contains("pacing.multiplier_normal"), "{e}");
        let e = err("[pacing]\nmultiplier_critical = 1000.0\n");
        assert!(e.contains("pacing.multiplier_critical"), "{e}");
    }

    #[test]
    fn other_impossible_values_name_their_key() {
        assert!(err("[pacing]\ntemp_hysteresis_c = -1.0\n").contains("pacing.temp_hysteresis_c"));
        assert!(err("[pacing]\nload_interval_ms = 50\n").contains("pacing.load_interval_ms"));
        assert!(
            err("[pacing]\nwatchdog_interval_ms = 0\n").contains("pacing.watchdog_interval_ms")
        );
        assert!(err("[pacing]\nthermal_root = \"\"\n").contains("pacing.thermal_root"));
        assert!(err("[pacing]\nmin_dwel_ms = 5\n").contains("min_dwel_ms"));
        assert!(err("[pacing]\ntemp_warm_c = nan\n").contains("pacing.temp_warm_c"));
    }
}
