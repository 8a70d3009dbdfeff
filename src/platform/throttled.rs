//! The Raspberry Pi firmware's throttling word, as `vcgencmd get_throttled`
//! prints it (`throttled=0x50005`): the low bits say what is happening now,
//! the same bits shifted by 16 say what has happened since boot.

use serde::Serialize;

/// Bit positions in the throttling word.
pub mod bits {
    pub const UNDER_VOLTAGE: u32 = 1 << 0;
    pub const ARM_FREQ_CAPPED: u32 = 1 << 1;
    pub const THROTTLED: u32 = 1 << 2;
    pub const SOFT_TEMP_LIMIT: u32 = 1 << 3;
    /// Each "now" bit shifted by this gives its "since boot" bit.
    pub const OCCURRED_SHIFT: u32 = 16;
}

/// A decoded throttling word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Throttled(pub u32);

/// The flags of a [`Throttled`] word, named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
pub struct ThrottledFlags {
    pub under_voltage: bool,
    pub arm_freq_capped: bool,
    pub throttled: bool,
    pub soft_temp_limit: bool,
    pub under_voltage_since_boot: bool,
    pub arm_freq_capped_since_boot: bool,
    pub throttled_since_boot: bool,
    pub soft_temp_limit_since_boot: bool,
}

impl Throttled {
    /// Parses `throttled=0x50005` (or a bare hex or decimal number).
    pub fn parse(output: &str) -> Option<Throttled> {
        let v = output.trim();
        let v = v.strip_prefix("throttled=").unwrap_or(v);
        let word = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => v.parse().ok()?,
        };
        Some(Throttled(word))
    }

    fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    fn occurred(self, bit: u32) -> bool {
        self.has(bit << bits::OCCURRED_SHIFT)
    }

    pub fn flags(self) -> ThrottledFlags {
        use bits::*;
        ThrottledFlags {
            under_voltage: self.has(UNDER_VOLTAGE),
            arm_freq_capped: self.has(ARM_FREQ_CAPPED),
            throttled: self.has(THROTTLED),
            soft_temp_limit: self.has(SOFT_TEMP_LIMIT),
            under_voltage_since_boot: self.occurred(UNDER_VOLTAGE),
            arm_freq_capped_since_boot: self.occurred(ARM_FREQ_CAPPED),
            throttled_since_boot: self.occurred(THROTTLED),
            soft_temp_limit_since_boot: self.occurred(SOFT_TEMP_LIMIT),
        }
    }

    /// Something is limiting the SoC right now.
    pub fn any_now(self) -> bool {
        self.0 & 0xF != 0
    }

    /// The flags as (metric, 0/1) pairs, e.g. for a sensor's values.
    pub fn as_metrics(self) -> [(&'static str, f64); 8] {
        let f = self.flags();
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        [
            ("under_voltage", b(f.under_voltage)),
            ("arm_freq_capped", b(f.arm_freq_capped)),
            ("throttled", b(f.throttled)),
            ("soft_temp_limit", b(f.soft_temp_limit)),
            ("under_voltage_since_boot", b(f.under_voltage_since_boot)),
            (
                "arm_freq_capped_since_boot",
                b(f.arm_freq_capped_since_boot),
            ),
            ("throttled_since_boot", b(f.throttled_since_boot)),
            (
                "soft_temp_limit_since_boot",
                b(f.soft_temp_limit_since_boot),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_words() {
        // A healthy Pi.
        let t = Throttled::parse("throttled=0x0\n").unwrap();
        assert_eq!(t.flags(), ThrottledFlags::default());
        assert!(!t.any_now());

        // Under-voltage now and since boot, throttled now and since boot:
        // the classic weak power supply.
        let f = Throttled::parse("throttled=0x50005").unwrap().flags();
        assert!(f.under_voltage && f.throttled);
        assert!(f.under_voltage_since_boot && f.throttled_since_boot);
        assert!(!f.arm_freq_capped && !f.soft_temp_limit);
        assert!(!f.arm_freq_capped_since_boot && !f.soft_temp_limit_since_boot);

        // Only history: under-voltage happened since boot, nothing now.
        let t = Throttled::parse("throttled=0x50000").unwrap();
        assert!(!t.any_now());
        assert!(t.flags().under_voltage_since_boot && t.flags().throttled_since_boot);

        // Soft temperature limit and frequency capping (a hot Pi).
        let f = Throttled::parse("throttled=0x8000a").unwrap().flags();
        assert!(f.arm_freq_capped && f.soft_temp_limit && f.soft_temp_limit_since_boot);
        assert!(!f.under_voltage && !f.throttled);

        // Everything.
        let f = Throttled::parse("0xF000F").unwrap().flags();
        assert!(f.under_voltage && f.arm_freq_capped && f.throttled && f.soft_temp_limit);
        assert!(f.under_voltage_since_boot && f.soft_temp_limit_since_boot);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(Throttled::parse("throttled=zz"), None);
        assert_eq!(Throttled::parse(""), None);
        assert_eq!(Throttled::parse("5"), Some(Throttled(5)));
    }

    #[test]
    fn metrics_name_every_flag() {
        let m = Throttled(0x1).as_metrics();
        assert_eq!(m[0], ("under_voltage", 1.0));
        assert!(m[1..].iter().all(|(_, v)| *v == 0.0));
    }
}
