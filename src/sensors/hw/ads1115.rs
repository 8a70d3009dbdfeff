//! The TI ADS1115 16-bit ADC over I2C, optionally reading an MQ-135.
//!
//! Each read is one single-shot conversion: write the config register with
//! the input multiplexer, gain (programmable full-scale range) and data
//! rate and the "start" bit, wait one conversion time, poll until the chip
//! says it is done, read the conversion register, and scale the signed
//! 16-bit result to volts (`raw × FSR / 32768`). With `[mq135]` options the
//! voltage is also turned into the gas sensor's resistance and, once warm,
//! a ppm estimate ([`super::mq135`]).

use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use serde::Deserialize;

use super::mq135::Mq135Options;
use super::{BusError, HostFacts, HwOptions, check_address, read_regs, write_reg16};
use crate::sensors::{Sensor, SensorError};
use crate::vocab::reading::Value;

/// ADDR pin to GND, VDD, SDA, SCL.
pub const ADDRESSES: [u8; 4] = [0x48, 0x49, 0x4A, 0x4B];

const REG_CONVERSION: u8 = 0x00;
const REG_CONFIG: u8 = 0x01;
const CONFIG_OS: u16 = 1 << 15;
const CONFIG_MODE_SINGLE: u16 = 1 << 8;
/// Comparator off (COMP_QUE = 11), the power-on default.
const CONFIG_COMPARATOR_OFF: u16 = 0b11;
/// Polls of the config register, each a tenth of a conversion apart, after
/// the nominal conversion time (the data rate may be 10 % slow).
const READY_POLLS: u32 = 20;

/// The input multiplexer: one input against ground, or a differential pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Channel {
    #[serde(rename = "a0")]
    A0,
    #[serde(rename = "a1")]
    A1,
    #[serde(rename = "a2")]
    A2,
    #[serde(rename = "a3")]
    A3,
    #[serde(rename = "a0-a1")]
    A0A1,
    #[serde(rename = "a0-a3")]
    A0A3,
    #[serde(rename = "a1-a3")]
    A1A3,
    #[serde(rename = "a2-a3")]
    A2A3,
}

impl Channel {
    /// The `MUX[2:0]` bits of the config register.
    pub fn mux(self) -> u16 {
        match self {
            Channel::A0A1 => 0b000,
            Channel::A0A3 => 0b001,
            Channel::A1A3 => 0b010,
            Channel::A2A3 => 0b011,
            Channel::A0 => 0b100,
            Channel::A1 => 0b101,
            Channel::A2 => 0b110,
            Channel::A3 => 0b111,
        }
    }
}

/// The programmable gain amplifier, named by its full-scale range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gain {
    Fsr6_144,
    Fsr4_096,
    Fsr2_048,
    Fsr1_024,
    Fsr0_512,
    Fsr0_256,
}

impl Gain {
    pub const ALL: [Gain; 6] = [
        Gain::Fsr6_144,
        Gain::Fsr4_096,
        Gain::Fsr2_048,
        Gain::Fsr1_024,
        Gain::Fsr0_512,
        Gain::Fsr0_256,
    ];

    /// Full-scale range in volts: a raw value of ±32768 means ±this.
    pub fn full_scale_v(self) -> f64 {
        match self {
            Gain::Fsr6_144 => 6.144,
            Gain::Fsr4_096 => 4.096,
            Gain::Fsr2_048 => 2.048,
            Gain::Fsr1_024 => 1.024,
            Gain::Fsr0_512 => 0.512,
            Gain::Fsr0_256 => 0.256,
        }
    }

    /// The `PGA[2:0]` bits of the config register.
    pub fn pga(self) -> u16 {
        match self {
            Gain::Fsr6_144 => 0b000,
            Gain::Fsr4_096 => 0b001,
            Gain::Fsr2_048 => 0b010,
            Gain::Fsr1_024 => 0b011,
            Gain::Fsr0_512 => 0b100,
            Gain::Fsr0_256 => 0b101,
        }
    }

    pub fn from_full_scale(volts: f64) -> Option<Gain> {
        Gain::ALL
            .into_iter()
            .find(|g| (g.full_scale_v() - volts).abs() < 1e-9)
    }

    /// Volts of a raw conversion result.
    pub fn volts(self, raw: i16) -> f64 {
        f64::from(raw) * self.full_scale_v() / 32768.0
    }
}

/// Samples per second the chip can convert at.
pub const DATA_RATES: [u16; 8] = [8, 16, 32, 64, 128, 250, 475, 860];

/// The `DR[2:0]` bits of the config register for a data rate.
pub fn data_rate_code(sps: u16) -> Option<u16> {
    DATA_RATES
        .iter()
        .position(|r| *r == sps)
        .and_then(|i| u16::try_from(i).ok())
}

/// The config register value that starts one single-shot conversion.
pub fn single_shot_config(channel: Channel, gain: Gain, rate_code: u16) -> u16 {
    CONFIG_OS
        | (channel.mux() << 12)
        | (gain.pga() << 9)
        | CONFIG_MODE_SINGLE
        | (rate_code << 5)
        | CONFIG_COMPARATOR_OFF
}

/// `options` of a `kind = "ads1115"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ads1115Options {
    /// I2C bus number (`/dev/i2c-<bus>`).
    pub bus: u8,
    /// 0x48 (ADDR to GND), 0x49, 0x4a or 0x4b.
    pub address: u8,
    /// `a0`..`a3` against ground, or `a0-a1`, `a0-a3`, `a1-a3`, `a2-a3`.
    pub channel: Channel,
    /// Full-scale range in volts (the gain): 6.144, 4.096, 2.048, 1.024,
    /// 0.512 or 0.256. No input may exceed the chip's supply + 0.3 V.
    pub full_scale_v: f64,
    /// Samples per second: 8, 16, 32, 64, 128, 250, 475 or 860.
    pub data_rate: u16,
    /// An MQ-135 on this input; absent: the sensor reports volts only.
    pub mq135: Option<Mq135Options>,
}

impl Default for Ads1115Options {
    fn default() -> Self {
        Ads1115Options {
            bus: 1,
            address: 0x48,
            channel: Channel::A0,
            full_scale_v: 4.096,
            data_rate: 128,
            mq135: None,
        }
    }
}

impl HwOptions for Ads1115Options {
    fn validate(&self) -> Result<(), String> {
        check_address("address", self.address, &ADDRESSES)?;
        if Gain::from_full_scale(self.full_scale_v).is_none() {
            return Err(format!(
                "full_scale_v: {} is not one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256",
                self.full_scale_v
            ));
        }
        if data_rate_code(self.data_rate).is_none() {
            return Err(format!(
                "data_rate: {} is not one of 8, 16, 32, 64, 128, 250, 475, 860",
                self.data_rate
            ));
        }
        if let Some(m) = &self.mq135 {
            m.validate()?;
        }
        Ok(())
    }
}

/// What went wrong talking to an ADS1115.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Ads1115Error {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the ADS1115 at {address:#04x} did not finish a conversion in time")]
    NotReady { address: u8 },
}

impl Ads1115Error {
    /// A chip that does not answer at start-up is absent: unavailable.
    pub fn at_start(self) -> SensorError {
        SensorError::Unavailable(self.to_string())
    }

    pub fn at_read(self) -> SensorError {
        SensorError::Transient(self.to_string())
    }
}

/// An ADS1115 on any `embedded-hal` I2C bus, set up for one input.
pub struct Ads1115<I, D> {
    i2c: I,
    delay: D,
    address: u8,
    gain: Gain,
    config: u16,
    conversion_us: u32,
}

impl<I: I2c, D: DelayNs> Ads1115<I, D> {
    /// Checks that the chip answers (reads its config register).
    pub fn new(
        mut i2c: I,
        delay: D,
        address: u8,
        channel: Channel,
        gain: Gain,
        data_rate: u16,
    ) -> Result<Self, Ads1115Error> {
        let rate_code = data_rate_code(data_rate).unwrap_or(4);
        let mut config = [0u8; 2];
        read_regs(&mut i2c, address, REG_CONFIG, &mut config)?;
        Ok(Ads1115 {
            i2c,
            delay,
            address,
            gain,
            config: single_shot_config(channel, gain, rate_code),
            conversion_us: 1_000_000 / u32::from(DATA_RATES[usize::from(rate_code)]),
        })
    }

    /// One single-shot conversion, as the raw signed result.
    pub fn convert(&mut self) -> Result<i16, Ads1115Error> {
        write_reg16(&mut self.i2c, self.address, REG_CONFIG, self.config)?;
        self.delay.delay_us(self.conversion_us);
        let poll_us = (self.conversion_us / 10).max(100);
        let mut reg = [0u8; 2];
        let mut ready = false;
        for attempt in 0..=READY_POLLS {
            read_regs(&mut self.i2c, self.address, REG_CONFIG, &mut reg)?;
            if u16::from_be_bytes(reg) & CONFIG_OS != 0 {
                ready = true;
                break;
            }
            if attempt < READY_POLLS {
                self.delay.delay_us(poll_us);
            }
        }
        if !ready {
            return Err(Ads1115Error::NotReady {
                address: self.address,
            });
        }
        read_regs(&mut self.i2c, self.address, REG_CONVERSION, &mut reg)?;
        Ok(i16::from_be_bytes(reg))
    }

    /// One conversion, in volts at the input.
    pub fn read_volts(&mut self) -> Result<f64, Ads1115Error> {
        Ok(self.gain.volts(self.convert()?))
    }
}

/// The `ads1115` sensor: the ADC, and the MQ-135 maths if configured.
pub struct Ads1115Sensor<I, D> {
    adc: Ads1115<I, D>,
    mq135: Option<Mq135Options>,
    started: Instant,
}

impl<I: I2c, D: DelayNs> Ads1115Sensor<I, D> {
    /// The warm-up of an MQ-135 counts from here.
    pub fn new(adc: Ads1115<I, D>, mq135: Option<Mq135Options>) -> Self {
        Ads1115Sensor {
            adc,
            mq135,
            started: Instant::now(),
        }
    }

    /// A read, `elapsed` after start-up.
    pub fn read_after(&mut self, elapsed: Duration) -> Result<Vec<Value>, SensorError> {
        let volts = self.adc.read_volts().map_err(Ads1115Error::at_read)?;
        let mut values = vec![Value::new("voltage", volts, "V")];
        if let Some(mq) = &self.mq135 {
            values.extend(mq135_values(&mq.evaluate(volts, elapsed)));
        }
        Ok(values)
    }
}

/// The values of an MQ-135 reading: `warming` always; while it is 1, only
/// the resistance besides; once 0, also the ratio, the ppm estimate and the
/// clean-air R0 that calibration needs.
pub fn mq135_values(r: &super::mq135::Mq135Reading) -> Vec<Value> {
    let mut v = vec![Value::new("warming", if r.warming { 1.0 } else { 0.0 }, "")];
    if let Some(rs) = r.resistance_ohms {
        v.push(Value::new("resistance", rs, "Ω"));
    }
    if let Some(ratio) = r.ratio {
        v.push(Value::new("ratio", ratio, ""));
    }
    if let Some(ppm) = r.ppm {
        v.push(Value::new("ppm", ppm, "ppm"));
    }
    if let Some(r0) = r.r0_clean_air {
        v.push(Value::new("r0_clean_air", r0, "Ω"));
    }
    v
}

impl<I, D> Sensor for Ads1115Sensor<I, D>
where
    I: I2c + Send + 'static,
    D: DelayNs + Send + 'static,
{
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        let elapsed = self.started.elapsed();
        self.read_after(elapsed)
    }
}

/// Opens the configured ADS1115 on this host.
pub fn build(options: &Ads1115Options) -> Result<Box<dyn Sensor>, SensorError> {
    HostFacts::current().check_i2c(options.bus)?;
    open(options)
}

#[cfg(feature = "pi")]
fn open(o: &Ads1115Options) -> Result<Box<dyn Sensor>, SensorError> {
    let i2c = super::backend::open_i2c(o.bus)?;
    let gain = Gain::from_full_scale(o.full_scale_v).unwrap_or(Gain::Fsr4_096);
    let adc = Ads1115::new(
        i2c,
        super::StdDelay,
        o.address,
        o.channel,
        gain,
        o.data_rate,
    )
    .map_err(Ads1115Error::at_start)?;
    Ok(Box::new(Ads1115Sensor::new(adc, o.mq135.clone())))
}

#[cfg(not(feature = "pi"))]
fn open(_: &Ads1115Options) -> Result<Box<dyn Sensor>, SensorError> {
    Err(super::without_feature("pi"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    const ADDR: u8 = 0x48;

    fn probe() -> T {
        // The power-on default config.
        T::write_read(ADDR, vec![0x01], vec![0x85, 0x83])
    }

    /// One conversion on the bus: start, a busy poll, a done poll, result.
    fn conversion(config: u16, raw: i16) -> Vec<T> {
        let [hi, lo] = config.to_be_bytes();
        let busy = (config & !CONFIG_OS).to_be_bytes();
        vec![
            T::write(ADDR, vec![0x01, hi, lo]),
            T::write_read(ADDR, vec![0x01], busy.to_vec()),
            T::write_read(ADDR, vec![0x01], vec![hi, lo]),
            T::write_read(ADDR, vec![0x00], raw.to_be_bytes().to_vec()),
        ]
    }

    #[test]
    fn config_words_follow_the_datasheet() {
        // AIN0 vs GND, ±4.096 V, 128 SPS, single shot, start, comparator off.
        assert_eq!(single_shot_config(Channel::A0, Gain::Fsr4_096, 4), 0xC383);
        // AIN0 - AIN1, ±2.048 V, 128 SPS: the power-on default with OS set.
        assert_eq!(single_shot_config(Channel::A0A1, Gain::Fsr2_048, 4), 0x8583);
        // AIN3 vs GND, ±0.256 V, 860 SPS.
        assert_eq!(single_shot_config(Channel::A3, Gain::Fsr0_256, 7), 0xFBE3);
        assert_eq!(data_rate_code(8), Some(0));
        assert_eq!(data_rate_code(860), Some(7));
        assert_eq!(data_rate_code(100), None);
    }

    #[test]
    fn each_gain_converts_on_the_bus_to_its_full_scale() {
        for gain in Gain::ALL {
            let config = single_shot_config(Channel::A1, gain, 4);
            let mut tx = vec![probe()];
            for raw in [i16::MAX, 16384, 0, -1, i16::MIN] {
                tx.extend(conversion(config, raw));
            }
            let mut i2c = Mock::new(&tx);
            let mut adc =
                Ads1115::new(i2c.clone(), NoopDelay::new(), ADDR, Channel::A1, gain, 128).unwrap();
            let fsr = gain.full_scale_v();
            let lsb = fsr / 32768.0;
            let got: Vec<f64> = (0..5).map(|_| adc.read_volts().unwrap()).collect();
            assert!((got[0] - (fsr - lsb)).abs() < 1e-12, "{gain:?}: {got:?}");
            assert!((got[1] - fsr / 2.0).abs() < 1e-12, "{gain:?}: {got:?}");
            assert_eq!(got[2], 0.0);
            assert!((got[3] + lsb).abs() < 1e-12, "{gain:?}: {got:?}");
            assert!((got[4] + fsr).abs() < 1e-12, "{gain:?}: {got:?}");
            i2c.done();
        }
    }

    #[test]
    fn a_conversion_that_never_completes_is_not_ready() {
        let config = single_shot_config(Channel::A0, Gain::Fsr4_096, 4);
        let [hi, lo] = config.to_be_bytes();
        let busy = (config & !CONFIG_OS).to_be_bytes().to_vec();
        let mut tx = vec![probe(), T::write(ADDR, vec![0x01, hi, lo])];
        for _ in 0..=READY_POLLS {
            tx.push(T::write_read(ADDR, vec![0x01], busy.clone()));
        }
        let mut i2c = Mock::new(&tx);
        let mut adc = Ads1115::new(
            i2c.clone(),
            NoopDelay::new(),
            ADDR,
            Channel::A0,
            Gain::Fsr4_096,
            128,
        )
        .unwrap();
        assert_eq!(
            adc.convert().unwrap_err(),
            Ads1115Error::NotReady { address: ADDR }
        );
        i2c.done();
    }

    #[test]
    fn no_chip_is_unavailable_and_a_failed_read_is_transient() {
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let mut i2c = Mock::new(&[T::write_read(ADDR, vec![0x01], vec![0, 0]).with_error(nack)]);
        let e = Ads1115::new(
            i2c.clone(),
            NoopDelay::new(),
            ADDR,
            Channel::A0,
            Gain::Fsr4_096,
            128,
        )
        .err()
        .unwrap();
        assert!(
            matches!(e.clone().at_start(), SensorError::Unavailable(_)),
            "{e}"
        );
        i2c.done();

        let config = single_shot_config(Channel::A0, Gain::Fsr4_096, 4);
        let [hi, lo] = config.to_be_bytes();
        let mut i2c = Mock::new(&[
            probe(),
            T::write(ADDR, vec![0x01, hi, lo]).with_error(ErrorKind::ArbitrationLoss),
        ]);
        let adc = Ads1115::new(
            i2c.clone(),
            NoopDelay::new(),
            ADDR,
            Channel::A0,
            Gain::Fsr4_096,
            128,
        )
        .unwrap();
        let mut s = Ads1115Sensor::new(adc, None);
        assert!(matches!(s.read(), Err(SensorError::Transient(_))));
        i2c.done();
    }

    #[test]
    fn with_an_mq135_the_ppm_appears_only_after_warm_up() {
        let config = single_shot_config(Channel::A0, Gain::Fsr4_096, 4);
        // 1.0 V: 8000 counts at 4.096 V full scale.
        let mut tx = vec![probe()];
        tx.extend(conversion(config, 8000));
        tx.extend(conversion(config, 8000));
        let mut i2c = Mock::new(&tx);
        let adc = Ads1115::new(
            i2c.clone(),
            NoopDelay::new(),
            ADDR,
            Channel::A0,
            Gain::Fsr4_096,
            128,
        )
        .unwrap();
        let mut s = Ads1115Sensor::new(adc, Some(Mq135Options::default()));
        let names = |v: &[Value]| v.iter().map(|v| v.metric.to_string()).collect::<Vec<_>>();

        let v = s.read_after(Duration::from_secs(10)).unwrap();
        assert_eq!(names(&v), ["voltage", "warming", "resistance"]);
        assert_eq!(v[0].value, 1.0);
        assert_eq!(v[1].value, 1.0);
        assert_eq!(v[2].value, 40_000.0);

        let v = s.read_after(Duration::from_secs(61)).unwrap();
        assert_eq!(
            names(&v),
            [
                "voltage",
                "warming",
                "resistance",
                "ratio",
                "ppm",
                "r0_clean_air"
            ]
        );
        assert_eq!(v[1].value, 0.0);
        assert!(v.iter().all(|v| v.value.is_finite()));
        i2c.done();
    }

    #[test]
    fn options_are_validated_by_name() {
        let bad = |o: Ads1115Options| o.validate().unwrap_err();
        let d = Ads1115Options::default();
        assert!(
            bad(Ads1115Options {
                address: 0x76,
                ..d.clone()
            })
            .starts_with("address:")
        );
        assert!(
            bad(Ads1115Options {
                full_scale_v: 5.0,
                ..d.clone()
            })
            .starts_with("full_scale_v:")
        );
        assert!(
            bad(Ads1115Options {
                data_rate: 100,
                ..d.clone()
            })
            .starts_with("data_rate:")
        );
        let mq = Mq135Options {
            warmup_secs: 5,
            load_ohms: -1.0,
            ..Mq135Options::default()
        };
        assert!(
            bad(Ads1115Options {
                mq135: Some(mq),
                ..d.clone()
            })
            .starts_with("mq135.load_ohms:")
        );
        assert!(d.validate().is_ok());
    }
}
