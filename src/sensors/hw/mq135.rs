//! MQ-135 air-quality maths: from the voltage an ADC measures to the
//! sensor's resistance, its ratio to the clean-air resistance R0, and an
//! estimated gas concentration in ppm, plus the heater's warm-up.
//!
//! The MQ-135 is a resistor whose value falls as gases rise. On the usual
//! module it sits in series with a load resistor RL across the supply Vc,
//! and the module outputs the voltage across RL:
//! `Vout = Vc · RL / (Rs + RL)`, so `Rs = RL · (Vc − Vout) / Vout`. The
//! datasheet's sensitivity curve is a straight line on log-log axes,
//! `ppm = a · (Rs/R0)^b`; `a` and `b` depend on the gas (CO2 by default) and
//! are configuration, as is R0, which each sensor needs calibrated (see
//! README). Until the heater is warm the resistance drifts, so during the
//! warm-up no ppm is produced at all.

use std::time::Duration;

use serde::Deserialize;

/// `[sensors.options.mq135]` of an `ads1115` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mq135Options {
    /// The module's supply voltage Vc (volts).
    pub supply_v: f64,
    /// The module's load resistor RL (ohms); measure it on your board.
    pub load_ohms: f64,
    /// The fraction of the module's output that reaches the ADC: 1.0 when
    /// wired directly, R2 / (R1 + R2) through a divider.
    pub divider_ratio: f64,
    /// The sensor's resistance in clean air, from calibration (ohms).
    pub r0_ohms: f64,
    /// Curve constant `a` of `ppm = a · (Rs/R0)^b`.
    pub curve_a: f64,
    /// Curve exponent `b` (negative: resistance falls as gas rises).
    pub curve_b: f64,
    /// The concentration clean air is assumed to have, for the `r0_clean_air`
    /// calibration value (ppm; outdoor CO2 is about 420).
    pub clean_air_ppm: f64,
    /// Seconds after start-up during which the heater is warming: no ppm.
    pub warmup_secs: u64,
}

impl Default for Mq135Options {
    fn default() -> Self {
        // The CO2 curve commonly fitted to the MQ-135 datasheet's figure.
        Mq135Options {
            supply_v: 5.0,
            load_ohms: 10_000.0,
            divider_ratio: 1.0,
            r0_ohms: 76_630.0,
            curve_a: 116.602_068_2,
            curve_b: -2.769_034_857,
            clean_air_ppm: 420.0,
            warmup_secs: 60,
        }
    }
}

impl Mq135Options {
    /// Checks every option; the message starts with `mq135.<option>`.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("supply_v", self.supply_v),
            ("load_ohms", self.load_ohms),
            ("r0_ohms", self.r0_ohms),
            ("curve_a", self.curve_a),
            ("clean_air_ppm", self.clean_air_ppm),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("mq135.{name}: {v} must be a positive number"));
            }
        }
        if !(self.divider_ratio.is_finite()
            && self.divider_ratio > 0.0
            && self.divider_ratio <= 1.0)
        {
            return Err(format!(
                "mq135.divider_ratio: {} is not within (0, 1]",
                self.divider_ratio
            ));
        }
        if !(self.curve_b.is_finite() && self.curve_b != 0.0) {
            return Err(format!(
                "mq135.curve_b: {} must be a non-zero number",
                self.curve_b
            ));
        }
        Ok(())
    }

    /// Whether the heater is still warming `elapsed` after start-up.
    pub fn warming(&self, elapsed: Duration) -> bool {
        elapsed < Duration::from_secs(self.warmup_secs)
    }

    /// Evaluates one ADC voltage. `ppm`, `ratio` and `r0_clean_air` are
    /// `None` while warming; everything derived is `None` when the voltage
    /// gives no finite resistance (no signal, or a short to the supply).
    pub fn evaluate(&self, adc_volts: f64, elapsed: Duration) -> Mq135Reading {
        let warming = self.warming(elapsed);
        let vout = module_volts(adc_volts, self.divider_ratio);
        let rs = sensor_resistance(vout, self.supply_v, self.load_ohms);
        let settled = rs.filter(|_| !warming);
        let ratio = settled.map(|rs| rs / self.r0_ohms);
        Mq135Reading {
            warming,
            resistance_ohms: rs,
            ratio,
            ppm: ratio
                .map(|r| ppm(r, self.curve_a, self.curve_b))
                .filter(|p| p.is_finite()),
            r0_clean_air: settled
                .map(|rs| r0_for(rs, self.clean_air_ppm, self.curve_a, self.curve_b))
                .filter(|r| r.is_finite()),
        }
    }
}

/// What one reading of the MQ-135 says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mq135Reading {
    pub warming: bool,
    pub resistance_ohms: Option<f64>,
    pub ratio: Option<f64>,
    pub ppm: Option<f64>,
    /// The R0 that would make this reading `clean_air_ppm`: in clean air,
    /// after warm-up, this is the value to configure as `r0_ohms`.
    pub r0_clean_air: Option<f64>,
}

/// The module's output voltage from the ADC's, undoing a divider.
pub fn module_volts(adc_volts: f64, divider_ratio: f64) -> f64 {
    adc_volts / divider_ratio
}

/// `Rs = RL · (Vc − Vout) / Vout`; `None` unless `0 < Vout < Vc`.
pub fn sensor_resistance(vout: f64, supply_v: f64, load_ohms: f64) -> Option<f64> {
    (vout > 0.0 && vout < supply_v).then(|| load_ohms * (supply_v - vout) / vout)
}

/// `ppm = a · ratio^b`.
pub fn ppm(ratio: f64, a: f64, b: f64) -> f64 {
    a * ratio.powf(b)
}

/// The R0 for which resistance `rs` means `ppm`: `R0 = Rs / (ppm/a)^(1/b)`.
pub fn r0_for(rs: f64, ppm: f64, a: f64, b: f64) -> f64 {
    rs / (ppm / a).powf(1.0 / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-12)
    }

    #[test]
    fn resistance_from_the_load_divider() {
        // Vout at half the supply: Rs equals RL.
        assert_eq!(sensor_resistance(2.5, 5.0, 10_000.0), Some(10_000.0));
        // 1 V of 5 V across a 1 kΩ load: Rs = 1k · 4 / 1 = 4 kΩ.
        assert_eq!(sensor_resistance(1.0, 5.0, 1_000.0), Some(4_000.0));
        // No signal, or the supply itself: no finite resistance.
        assert_eq!(sensor_resistance(0.0, 5.0, 1_000.0), None);
        assert_eq!(sensor_resistance(-0.1, 5.0, 1_000.0), None);
        assert_eq!(sensor_resistance(5.0, 5.0, 1_000.0), None);
        // A 2:3 divider in front of the ADC: 2 V measured is 3 V out.
        assert!(close(module_volts(2.0, 2.0 / 3.0), 3.0, 1e-12));
    }

    #[test]
    fn the_curve_and_its_inverse_agree() {
        let (a, b) = (116.602_068_2, -2.769_034_857);
        // At ratio 1 (Rs = R0), ppm is a.
        assert!(close(ppm(1.0, a, b), a, 1e-12));
        // Lower resistance, more gas.
        assert!(ppm(0.5, a, b) > ppm(1.0, a, b));
        // r0_for inverts the curve.
        let rs = 50_000.0;
        let r0 = r0_for(rs, 420.0, a, b);
        assert!(close(ppm(rs / r0, a, b), 420.0, 1e-9));
    }

    #[test]
    fn warm_up_withholds_the_ppm_but_not_the_resistance() {
        let o = Mq135Options::default();
        let warming = o.evaluate(1.0, Duration::from_secs(59));
        assert!(warming.warming);
        assert_eq!(warming.resistance_ohms, Some(40_000.0));
        assert_eq!(warming.ppm, None);
        assert_eq!(warming.ratio, None);
        assert_eq!(warming.r0_clean_air, None);

        let warm = o.evaluate(1.0, Duration::from_secs(60));
        assert!(!warm.warming);
        assert_eq!(warm.resistance_ohms, Some(40_000.0));
        let ratio = 40_000.0 / 76_630.0;
        assert!(close(warm.ratio.unwrap(), ratio, 1e-12));
        assert!(close(
            warm.ppm.unwrap(),
            o.curve_a * ratio.powf(o.curve_b),
            1e-12
        ));
        assert!(close(
            ppm(40_000.0 / warm.r0_clean_air.unwrap(), o.curve_a, o.curve_b),
            420.0,
            1e-9
        ));

        // No warm-up configured: ppm from the first read.
        let o = Mq135Options {
            warmup_secs: 0,
            ..Mq135Options::default()
        };
        assert!(o.evaluate(1.0, Duration::ZERO).ppm.is_some());
    }

    #[test]
    fn a_dead_signal_gives_no_derived_values() {
        let r = Mq135Options::default().evaluate(0.0, Duration::from_secs(3600));
        assert!(!r.warming);
        assert_eq!((r.resistance_ohms, r.ratio, r.ppm), (None, None, None));
    }

    #[test]
    fn options_are_validated_by_name() {
        let bad = |o: Mq135Options| o.validate().unwrap_err();
        let d = Mq135Options::default();
        assert!(
            bad(Mq135Options {
                load_ohms: 0.0,
                ..d.clone()
            })
            .starts_with("mq135.load_ohms:")
        );
        assert!(
            bad(Mq135Options {
                divider_ratio: 1.5,
                ..d.clone()
            })
            .starts_with("mq135.divider_ratio:")
        );
        assert!(
            bad(Mq135Options {
                curve_b: 0.0,
                ..d.clone()
            })
            .starts_with("mq135.curve_b:")
        );
        assert!(
            bad(Mq135Options {
                r0_ohms: f64::NAN,
                ..d.clone()
            })
            .starts_with("mq135.r0_ohms:")
        );
        assert!(d.validate().is_ok());
    }
}
