//! The Bosch BME280: temperature, humidity and pressure over I2C.
//!
//! Start-up checks the chip id (0x60; a BMP280 answers 0x56-0x58 and has no
//! humidity), resets the chip, reads its factory calibration and sets the
//! IIR filter. Each read triggers one measurement in forced mode (the chip
//! sleeps between reads, which suits polling), waits the datasheet's
//! maximum measurement time, and applies the datasheet's integer
//! compensation formulas. The compensation is plain functions, tested
//! against the datasheet's worked example.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use serde::Deserialize;

use super::{BusError, HostFacts, HwOptions, check_address, read_regs, write_reg8};
use crate::sensors::{Sensor, SensorError};
use crate::vocab::reading::Value;

/// The two addresses the chip can have (SDO to ground / to VDDIO).
pub const ADDRESSES: [u8; 2] = [0x76, 0x77];
/// What register `0xD0` holds on a BME280.
pub const CHIP_ID: u8 = 0x60;

const REG_CHIP_ID: u8 = 0xD0;
const REG_RESET: u8 = 0xE0;
const RESET_WORD: u8 = 0xB6;
const REG_CALIB_TP: u8 = 0x88;
const REG_CALIB_H: u8 = 0xE1;
const REG_CTRL_HUM: u8 = 0xF2;
const REG_STATUS: u8 = 0xF3;
const REG_CTRL_MEAS: u8 = 0xF4;
const REG_CONFIG: u8 = 0xF5;
const REG_DATA: u8 = 0xF7;
const STATUS_MEASURING: u8 = 1 << 3;
const STATUS_IM_UPDATE: u8 = 1 << 0;
const MODE_FORCED: u8 = 0b01;
/// Raw value of a measurement that was skipped (oversampling 0).
const SKIPPED_20BIT: i32 = 0x80000;
const SKIPPED_16BIT: i32 = 0x8000;
/// How often, 1 ms apart, the status is polled before giving up.
const STATUS_POLLS: u32 = 20;

/// `options` of a `kind = "bme280"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bme280Options {
    /// I2C bus number (`/dev/i2c-<bus>`).
    pub bus: u8,
    /// 0x76 (SDO to ground) or 0x77.
    pub address: u8,
    /// Oversampling: 1, 2, 4, 8 or 16 (temperature cannot be skipped: the
    /// other two are compensated with it).
    pub oversampling_temperature: u8,
    /// 0 (skip), 1, 2, 4, 8 or 16.
    pub oversampling_pressure: u8,
    /// 0 (skip), 1, 2, 4, 8 or 16.
    pub oversampling_humidity: u8,
    /// IIR filter coefficient for temperature and pressure: 0 (off), 2, 4, 8, 16.
    pub filter: u8,
}

impl Default for Bme280Options {
    fn default() -> Self {
        // The datasheet's "weather monitoring" settings.
        Bme280Options {
            bus: 1,
            address: 0x76,
            oversampling_temperature: 1,
            oversampling_pressure: 1,
            oversampling_humidity: 1,
            filter: 0,
        }
    }
}

/// Register code of an oversampling factor (0 = skipped).
fn oversampling_code(factor: u8) -> Option<u8> {
    match factor {
        0 => Some(0),
        1 => Some(1),
        2 => Some(2),
        4 => Some(3),
        8 => Some(4),
        16 => Some(5),
        _ => None,
    }
}

/// Register code of an IIR filter coefficient.
fn filter_code(coefficient: u8) -> Option<u8> {
    match coefficient {
        0 => Some(0),
        2 => Some(1),
        4 => Some(2),
        8 => Some(3),
        16 => Some(4),
        _ => None,
    }
}

impl HwOptions for Bme280Options {
    fn validate(&self) -> Result<(), String> {
        check_address("address", self.address, &ADDRESSES)?;
        if self.oversampling_temperature == 0 {
            return Err(
                "oversampling_temperature: must be 1, 2, 4, 8 or 16 (pressure and humidity need it)"
                    .into(),
            );
        }
        for (name, v) in [
            ("oversampling_temperature", self.oversampling_temperature),
            ("oversampling_pressure", self.oversampling_pressure),
            ("oversampling_humidity", self.oversampling_humidity),
        ] {
            if oversampling_code(v).is_none() {
                return Err(format!("{name}: {v} is not one of 0, 1, 2, 4, 8, 16"));
            }
        }
        if filter_code(self.filter).is_none() {
            return Err(format!(
                "filter: {} is not one of 0, 2, 4, 8, 16",
                self.filter
            ));
        }
        Ok(())
    }
}

/// The settings written to the chip, as register values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub osrs_t: u8,
    pub osrs_p: u8,
    pub osrs_h: u8,
    pub filter: u8,
    /// The datasheet's maximum measurement time for these settings.
    pub max_measurement_us: u32,
}

impl Settings {
    /// From validated options (an invalid factor is treated as 1).
    pub fn from_options(o: &Bme280Options) -> Settings {
        let code = |f| oversampling_code(f).unwrap_or(1);
        Settings {
            osrs_t: code(o.oversampling_temperature).max(1),
            osrs_p: code(o.oversampling_pressure),
            osrs_h: code(o.oversampling_humidity),
            filter: filter_code(o.filter).unwrap_or(0),
            max_measurement_us: max_measurement_us(
                o.oversampling_temperature.max(1),
                o.oversampling_pressure,
                o.oversampling_humidity,
            ),
        }
    }

    fn ctrl_meas(&self) -> u8 {
        (self.osrs_t << 5) | (self.osrs_p << 2) | MODE_FORCED
    }
}

/// The datasheet's maximum measurement time (appendix B), in µs:
/// `1.25 ms + 2.3 ms × osrs_t + (2.3 ms × osrs_p + 0.575 ms) +
/// (2.3 ms × osrs_h + 0.575 ms)`, a term dropped when its measurement is
/// skipped.
pub fn max_measurement_us(t: u8, p: u8, h: u8) -> u32 {
    let term = |os: u8, extra: u32| {
        if os == 0 {
            0
        } else {
            2300 * u32::from(os) + extra
        }
    };
    1250 + term(t, 0) + term(p, 575) + term(h, 575)
}

/// The chip's factory trimming parameters (`dig_*` in the datasheet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Decodes registers 0x88..=0xA1 (`tp`) and 0xE1..=0xE7 (`h`).
    pub fn parse(tp: &[u8; 26], h: &[u8; 7]) -> Calibration {
        let u = |i: usize| u16::from_le_bytes([tp[i], tp[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([tp[i], tp[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            h1: tp[25],
            h2: i16::from_le_bytes([h[0], h[1]]),
            h3: h[2],
            // dig_H4: 0xE4 [11:4] and 0xE5 [3:0]; dig_H5: 0xE6 [11:4] and
            // 0xE5 [7:4]. Both are signed 12-bit values.
            h4: (i16::from(h[3] as i8) << 4) | i16::from(h[4] & 0x0F),
            h5: (i16::from(h[5] as i8) << 4) | i16::from(h[4] >> 4),
            h6: h[6] as i8,
        }
    }

    /// A bus returning all zeros or all ones gives calibration no chip has.
    pub fn is_plausible(&self) -> bool {
        self.t1 != 0 && self.p1 != 0 && self.t1 != 0xFFFF && self.p1 != 0xFFFF
    }
}

/// Temperature in hundredths of a degree Celsius, and `t_fine`, which the
/// pressure and humidity formulas take. Datasheet 4.2.3,
/// `BME280_compensate_T_int32` (evaluated in 64 bits, so a garbage raw value
/// cannot overflow; results are the same for every real one).
pub fn compensate_temperature(adc_t: i32, c: &Calibration) -> (i32, i32) {
    let adc = i64::from(adc_t);
    let t1 = i64::from(c.t1);
    let var1 = (((adc >> 3) - (t1 << 1)) * i64::from(c.t2)) >> 11;
    let var2 = (((((adc >> 4) - t1) * ((adc >> 4) - t1)) >> 12) * i64::from(c.t3)) >> 14;
    let t_fine = clamp_i32(var1 + var2);
    let t = (i64::from(t_fine) * 5 + 128) >> 8;
    (clamp_i32(t), t_fine)
}

/// Pressure in pascals as Q24.8 (divide by 256), or `None` when the
/// calibration would divide by zero. Datasheet 4.2.3,
/// `BME280_compensate_P_int64`, evaluated in 128 bits so that no input can
/// overflow; for every real input the result is the 64-bit formula's.
pub fn compensate_pressure(adc_p: i32, t_fine: i32, c: &Calibration) -> Option<u32> {
    let w = |v: i16| i128::from(v);
    let mut var1 = i128::from(t_fine) - 128_000;
    let mut var2 = var1 * var1 * w(c.p6);
    var2 += (var1 * w(c.p5)) << 17;
    var2 += w(c.p4) << 35;
    var1 = ((var1 * var1 * w(c.p3)) >> 8) + ((var1 * w(c.p2)) << 12);
    var1 = (((1i128 << 47) + var1) * i128::from(c.p1)) >> 33;
    if var1 == 0 {
        return None;
    }
    let p = 1_048_576 - i128::from(adc_p);
    let p = (((p << 31) - var2) * 3125) / var1;
    let var1 = (w(c.p9) * (p >> 13) * (p >> 13)) >> 25;
    let var2 = (w(c.p8) * p) >> 19;
    let p = ((p + var1 + var2) >> 8) + (w(c.p7) << 4);
    u32::try_from(p).ok()
}

/// Relative humidity as Q22.10 (divide by 1024), 0 to 100 %. Datasheet
/// 4.2.3, `bme280_compensate_H_int32`, evaluated in 128 bits.
pub fn compensate_humidity(adc_h: i32, t_fine: i32, c: &Calibration) -> u32 {
    let adc = i128::from(adc_h);
    let mut v = i128::from(t_fine) - 76_800;
    let scaled = (((adc << 14) - (i128::from(c.h4) << 20) - (i128::from(c.h5) * v)) + 16_384) >> 15;
    let factor = (((((v * i128::from(c.h6)) >> 10) * (((v * i128::from(c.h3)) >> 11) + 32_768))
        >> 10)
        + 2_097_152)
        * i128::from(c.h2)
        + 8192;
    v = scaled * (factor >> 14);
    v -= ((((v >> 15) * (v >> 15)) >> 7) * i128::from(c.h1)) >> 4;
    let v = v.clamp(0, 419_430_400);
    // 419430400 >> 12 = 102400 (100 %), well within u32.
    (v >> 12) as u32
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The raw ADC words of one measurement (registers 0xF7..=0xFE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawData {
    pub pressure: i32,
    pub temperature: i32,
    pub humidity: i32,
}

impl RawData {
    pub fn parse(d: &[u8; 8]) -> RawData {
        let w20 = |i: usize| {
            (i32::from(d[i]) << 12) | (i32::from(d[i + 1]) << 4) | (i32::from(d[i + 2]) >> 4)
        };
        RawData {
            pressure: w20(0),
            temperature: w20(3),
            humidity: (i32::from(d[6]) << 8) | i32::from(d[7]),
        }
    }
}

/// One compensated measurement. Pressure and humidity are absent when
/// their oversampling is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    pub temperature_c: f64,
    pub pressure_hpa: Option<f64>,
    pub humidity_pct: Option<f64>,
}

/// Compensates a raw measurement.
pub fn compensate(raw: &RawData, c: &Calibration) -> Result<Measurement, &'static str> {
    if raw.temperature == SKIPPED_20BIT {
        return Err("temperature");
    }
    let (t, t_fine) = compensate_temperature(raw.temperature, c);
    let pressure_hpa = if raw.pressure == SKIPPED_20BIT {
        None
    } else {
        let p = compensate_pressure(raw.pressure, t_fine, c).ok_or("pressure")?;
        Some(f64::from(p) / 256.0 / 100.0)
    };
    let humidity_pct = (raw.humidity != SKIPPED_16BIT)
        .then(|| f64::from(compensate_humidity(raw.humidity, t_fine, c)) / 1024.0);
    Ok(Measurement {
        temperature_c: f64::from(t) / 100.0,
        pressure_hpa,
        humidity_pct,
    })
}

/// What went wrong talking to a BME280.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Bme280Error {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the chip at {address:#04x} has id {found:#04x}, not a BME280 ({CHIP_ID:#04x}){}", chip_hint(*found))]
    WrongChip { address: u8, found: u8 },
    #[error(
        "the BME280 at {address:#04x} was still {what} after {STATUS_POLLS} ms beyond its maximum time"
    )]
    NotReady { address: u8, what: &'static str },
    #[error("implausible calibration data from {address:#04x} (a bus fault?)")]
    BadCalibration { address: u8 },
    #[error("the BME280 at {address:#04x} gave no valid {what} value")]
    NoData { address: u8, what: &'static str },
}

fn chip_hint(found: u8) -> &'static str {
    match found {
        0x56..=0x58 => ": a BMP280, which has no humidity sensor",
        0x61 => ": a BME680",
        _ => "",
    }
}

impl Bme280Error {
    /// At start-up, a chip that does not answer, or is not a BME280, is an
    /// absent sensor: shown unavailable and probed again later.
    pub fn at_start(self) -> SensorError {
        match self {
            Bme280Error::NotReady { .. } => SensorError::Transient(self.to_string()),
            _ => SensorError::Unavailable(self.to_string()),
        }
    }

    /// During reads, failures are retried; too many in a row restart the
    /// driver, whose start-up then says whether the chip is still there.
    pub fn at_read(self) -> SensorError {
        SensorError::Transient(self.to_string())
    }
}

/// A BME280 on any `embedded-hal` I2C bus.
pub struct Bme280<I, D> {
    i2c: I,
    delay: D,
    address: u8,
    calibration: Calibration,
    settings: Settings,
}

impl<I: I2c, D: DelayNs> Bme280<I, D> {
    /// Checks the chip, resets it, reads its calibration and configures
    /// the filter. The chip is left asleep.
    pub fn new(i2c: I, delay: D, address: u8, settings: Settings) -> Result<Self, Bme280Error> {
        let mut dev = Bme280 {
            i2c,
            delay,
            address,
            calibration: Calibration::default(),
            settings,
        };
        let mut id = [0u8];
        read_regs(&mut dev.i2c, address, REG_CHIP_ID, &mut id)?;
        if id[0] != CHIP_ID {
            return Err(Bme280Error::WrongChip {
                address,
                found: id[0],
            });
        }
        write_reg8(&mut dev.i2c, address, REG_RESET, RESET_WORD)?;
        // Start-up time after a reset is 2 ms; then the NVM copy must finish.
        dev.delay.delay_ms(2);
        dev.wait_status(STATUS_IM_UPDATE, "copying its calibration")?;
        let mut tp = [0u8; 26];
        let mut h = [0u8; 7];
        read_regs(&mut dev.i2c, address, REG_CALIB_TP, &mut tp)?;
        read_regs(&mut dev.i2c, address, REG_CALIB_H, &mut h)?;
        dev.calibration = Calibration::parse(&tp, &h);
        if !dev.calibration.is_plausible() {
            return Err(Bme280Error::BadCalibration { address });
        }
        write_reg8(&mut dev.i2c, address, REG_CONFIG, settings.filter << 2)?;
        Ok(dev)
    }

    #[cfg(test)]
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Polls the status register until `bit` clears.
    fn wait_status(&mut self, bit: u8, what: &'static str) -> Result<(), Bme280Error> {
        let mut status = [0u8];
        for attempt in 0..=STATUS_POLLS {
            read_regs(&mut self.i2c, self.address, REG_STATUS, &mut status)?;
            if status[0] & bit == 0 {
                return Ok(());
            }
            if attempt < STATUS_POLLS {
                self.delay.delay_ms(1);
            }
        }
        Err(Bme280Error::NotReady {
            address: self.address,
            what,
        })
    }

    /// One forced-mode measurement.
    pub fn measure(&mut self) -> Result<Measurement, Bme280Error> {
        let s = self.settings;
        // ctrl_hum takes effect only with the following ctrl_meas write.
        write_reg8(&mut self.i2c, self.address, REG_CTRL_HUM, s.osrs_h)?;
        write_reg8(&mut self.i2c, self.address, REG_CTRL_MEAS, s.ctrl_meas())?;
        self.delay.delay_us(s.max_measurement_us);
        self.wait_status(STATUS_MEASURING, "measuring")?;
        let mut data = [0u8; 8];
        read_regs(&mut self.i2c, self.address, REG_DATA, &mut data)?;
        let mut m = compensate(&RawData::parse(&data), &self.calibration).map_err(|what| {
            Bme280Error::NoData {
                address: self.address,
                what,
            }
        })?;
        if s.osrs_p == 0 {
            m.pressure_hpa = None;
        } else if m.pressure_hpa.is_none() {
            return Err(Bme280Error::NoData {
                address: self.address,
                what: "pressure",
            });
        }
        if s.osrs_h == 0 {
            m.humidity_pct = None;
        } else if m.humidity_pct.is_none() {
            return Err(Bme280Error::NoData {
                address: self.address,
                what: "humidity",
            });
        }
        Ok(m)
    }
}

impl<I, D> Sensor for Bme280<I, D>
where
    I: I2c + Send + 'static,
    D: DelayNs + Send + 'static,
{
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        let m = self.measure().map_err(Bme280Error::at_read)?;
        let mut values = vec![Value::new("temperature", m.temperature_c, "°C")];
        if let Some(h) = m.humidity_pct {
            values.push(Value::new("humidity", h, "%RH"));
        }
        if let Some(p) = m.pressure_hpa {
            values.push(Value::new("pressure", p, "hPa"));
        }
        Ok(values)
    }
}

/// Opens the configured BME280 on this host.
pub fn build(options: &Bme280Options) -> Result<Box<dyn Sensor>, SensorError> {
    HostFacts::current().check_i2c(options.bus)?;
    open(options)
}

#[cfg(feature = "pi")]
fn open(o: &Bme280Options) -> Result<Box<dyn Sensor>, SensorError> {
    let i2c = super::backend::open_i2c(o.bus)?;
    let dev = Bme280::new(i2c, super::StdDelay, o.address, Settings::from_options(o))
        .map_err(Bme280Error::at_start)?;
    Ok(Box::new(dev))
}

#[cfg(not(feature = "pi"))]
fn open(_: &Bme280Options) -> Result<Box<dyn Sensor>, SensorError> {
    Err(super::without_feature("pi"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

    /// The worked example of the Bosch BMP280 datasheet (section 3.12,
    /// table 16), whose temperature and pressure formulas and trimming
    /// registers the BME280 shares, with humidity trimming typical of real
    /// BME280 parts.
    fn example() -> Calibration {
        Calibration {
            t1: 27504,
            t2: 26435,
            t3: -1000,
            p1: 36477,
            p2: -10685,
            p3: 3024,
            p4: 2855,
            p5: 140,
            p6: -7,
            p7: 15500,
            p8: -14600,
            p9: 6000,
            h1: 75,
            h2: 362,
            h3: 0,
            h4: 313,
            h5: 50,
            h6: 30,
        }
    }
    const ADC_T: i32 = 519_888;
    const ADC_P: i32 = 415_148;
    const ADC_H: i32 = 30_000;

    /// The calibration registers that encode [`example`].
    fn example_registers() -> ([u8; 26], [u8; 7]) {
        let c = example();
        let mut tp = [0u8; 26];
        let words: [u16; 12] = [
            c.t1,
            c.t2 as u16,
            c.t3 as u16,
            c.p1,
            c.p2 as u16,
            c.p3 as u16,
            c.p4 as u16,
            c.p5 as u16,
            c.p6 as u16,
            c.p7 as u16,
            c.p8 as u16,
            c.p9 as u16,
        ];
        for (i, w) in words.iter().enumerate() {
            tp[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
        tp[25] = c.h1;
        let [h2l, h2h] = c.h2.to_le_bytes();
        let h4 = c.h4 as u16;
        let h5 = c.h5 as u16;
        let h = [
            h2l,
            h2h,
            c.h3,
            (h4 >> 4) as u8,
            ((h4 & 0x0F) as u8) | (((h5 & 0x0F) as u8) << 4),
            (h5 >> 4) as u8,
            c.h6 as u8,
        ];
        (tp, h)
    }

    /// Registers 0xF7..=0xFE holding the given raw words.
    fn data_registers(p: i32, t: i32, h: i32) -> Vec<u8> {
        let w20 = |v: i32| [(v >> 12) as u8, (v >> 4) as u8, ((v & 0xF) << 4) as u8];
        let mut d = Vec::new();
        d.extend(w20(p));
        d.extend(w20(t));
        d.extend([(h >> 8) as u8, h as u8]);
        d
    }

    /// The datasheet's double-precision humidity formula (section 8.1), an
    /// independent check on the integer one.
    fn humidity_reference(adc_h: f64, t_fine: f64, c: &Calibration) -> f64 {
        let v = t_fine - 76800.0;
        let v = (adc_h - (f64::from(c.h4) * 64.0 + f64::from(c.h5) / 16384.0 * v))
            * (f64::from(c.h2) / 65536.0
                * (1.0
                    + f64::from(c.h6) / 67108864.0 * v * (1.0 + f64::from(c.h3) / 67108864.0 * v)));
        let v = v * (1.0 - f64::from(c.h1) * v / 524288.0);
        v.clamp(0.0, 100.0)
    }

    #[test]
    fn temperature_and_pressure_match_the_datasheet_example() {
        let c = example();
        let (t, t_fine) = compensate_temperature(ADC_T, &c);
        assert_eq!(t_fine, 128_422);
        assert_eq!(t, 2508); // 25.08 °C
        let p = compensate_pressure(ADC_P, t_fine, &c).unwrap();
        let pa = f64::from(p) / 256.0;
        // The datasheet gives 100653.27 Pa (floating point); the 64-bit
        // integer formula agrees to within its 1/256 Pa resolution.
        assert!((pa - 100_653.27).abs() < 0.02, "{pa}");
    }

    #[test]
    fn humidity_matches_the_datasheets_floating_point_formula() {
        let c = example();
        let (_, t_fine) = compensate_temperature(ADC_T, &c);
        for adc_h in [20_000, 26_000, 30_000, 34_000, 40_000] {
            let h = f64::from(compensate_humidity(adc_h, t_fine, &c)) / 1024.0;
            let reference = humidity_reference(f64::from(adc_h), f64::from(t_fine), &c);
            assert!(
                (h - reference).abs() < 0.05,
                "adc {adc_h}: {h} vs {reference}"
            );
        }
        // Out-of-range raw values clamp to 0 and 100 %.
        assert_eq!(compensate_humidity(0, t_fine, &c), 0);
        assert_eq!(compensate_humidity(0xFFFF, t_fine, &c), 100 << 10);
    }

    #[test]
    fn calibration_registers_decode_including_the_packed_humidity_words() {
        let (tp, h) = example_registers();
        assert_eq!(Calibration::parse(&tp, &h), example());
        // Negative 12-bit values survive the nibble packing.
        let mut c = example();
        c.h4 = -300;
        c.h5 = -7;
        let mut regs = example_registers();
        let h4 = c.h4 as u16;
        let h5 = c.h5 as u16;
        regs.1[3] = (h4 >> 4) as u8;
        regs.1[4] = ((h4 & 0x0F) as u8) | (((h5 & 0x0F) as u8) << 4);
        regs.1[5] = (h5 >> 4) as u8;
        let parsed = Calibration::parse(&regs.0, &regs.1);
        assert_eq!((parsed.h4, parsed.h5), (-300, -7));
    }

    #[test]
    fn pressure_with_a_zero_divisor_is_none_not_a_panic() {
        let c = Calibration { p1: 0, ..example() };
        assert_eq!(compensate_pressure(ADC_P, 128_422, &c), None);
        // Extreme raw values neither panic nor overflow.
        let c = example();
        let _ = compensate_pressure(0, i32::MAX, &c);
        let _ = compensate_pressure(0xFFFFF, i32::MIN, &c);
        let _ = compensate_temperature(i32::MAX, &c);
        let _ = compensate_humidity(i32::MAX, i32::MIN, &c);
    }

    #[test]
    fn measurement_time_follows_the_datasheet() {
        // 1×/1×/1×: 1.25 + 2.3 + 2.875 + 2.875 = 9.3 ms.
        assert_eq!(max_measurement_us(1, 1, 1), 9300);
        // Skipped pressure and humidity cost nothing.
        assert_eq!(max_measurement_us(1, 0, 0), 3550);
        // 16× everything: 1.25 + 36.8 + 37.375 + 37.375.
        assert_eq!(max_measurement_us(16, 16, 16), 112_800);
    }

    fn start_transactions(addr: u8, filter_code: u8) -> Vec<T> {
        let (tp, h) = example_registers();
        vec![
            T::write_read(addr, vec![0xD0], vec![0x60]),
            T::write(addr, vec![0xE0, 0xB6]),
            T::write_read(addr, vec![0xF3], vec![0x01]), // NVM copy still running
            T::write_read(addr, vec![0xF3], vec![0x00]),
            T::write_read(addr, vec![0x88], tp.to_vec()),
            T::write_read(addr, vec![0xE1], h.to_vec()),
            T::write(addr, vec![0xF5, filter_code << 2]),
        ]
    }

    #[test]
    fn start_up_and_a_forced_measurement_on_the_bus() {
        let options = Bme280Options {
            address: 0x77,
            oversampling_pressure: 4,
            oversampling_humidity: 2,
            filter: 4,
            ..Bme280Options::default()
        };
        let settings = Settings::from_options(&options);
        let mut tx = start_transactions(0x77, 2);
        tx.extend([
            T::write(0x77, vec![0xF2, 0b010]),
            // osrs_t 1× (001), osrs_p 4× (011), forced (01).
            T::write(0x77, vec![0xF4, (0b001 << 5) | (0b011 << 2) | 0b01]),
            T::write_read(0x77, vec![0xF3], vec![0x08]), // still measuring
            T::write_read(0x77, vec![0xF3], vec![0x00]),
            T::write_read(0x77, vec![0xF7], data_registers(ADC_P, ADC_T, ADC_H)),
        ]);
        let mut i2c = Mock::new(&tx);
        let mut dev = Bme280::new(i2c.clone(), NoopDelay::new(), 0x77, settings).unwrap();
        assert_eq!(dev.calibration(), &example());
        let values = dev.read().unwrap();
        let get = |m: &str| values.iter().find(|v| v.metric == m).unwrap();
        assert_eq!(get("temperature").value, 25.08);
        assert_eq!(get("temperature").unit, "°C");
        assert!((get("pressure").value - 1006.5327).abs() < 0.001);
        assert_eq!(get("pressure").unit, "hPa");
        let h = get("humidity");
        assert_eq!(h.unit, "%RH");
        assert!(h.value > 0.0 && h.value < 100.0, "{h:?}");
        i2c.done();
    }

    #[test]
    fn skipped_measurements_are_left_out() {
        let options = Bme280Options {
            oversampling_pressure: 0,
            oversampling_humidity: 0,
            ..Bme280Options::default()
        };
        let mut tx = start_transactions(0x76, 0);
        tx.extend([
            T::write(0x76, vec![0xF2, 0]),
            T::write(0x76, vec![0xF4, (0b001 << 5) | 0b01]),
            T::write_read(0x76, vec![0xF3], vec![0x00]),
            T::write_read(0x76, vec![0xF7], data_registers(0x80000, ADC_T, 0x8000)),
        ]);
        let mut i2c = Mock::new(&tx);
        let mut dev = Bme280::new(
            i2c.clone(),
            NoopDelay::new(),
            0x76,
            Settings::from_options(&options),
        )
        .unwrap();
        let values = dev.read().unwrap();
        let names: Vec<_> = values.iter().map(|v| v.metric.as_ref()).collect();
        assert_eq!(names, ["temperature"]);
        i2c.done();
    }

    #[test]
    fn a_different_chip_is_a_typed_error_naming_it() {
        let mut i2c = Mock::new(&[T::write_read(0x76, vec![0xD0], vec![0x58])]);
        let e = Bme280::new(
            i2c.clone(),
            NoopDelay::new(),
            0x76,
            Settings::from_options(&Bme280Options::default()),
        )
        .err()
        .unwrap();
        assert_eq!(
            e,
            Bme280Error::WrongChip {
                address: 0x76,
                found: 0x58
            }
        );
        assert!(e.to_string().contains("BMP280"), "{e}");
        assert!(matches!(e.at_start(), SensorError::Unavailable(_)));
        i2c.done();
    }

    #[test]
    fn no_answer_at_start_is_unavailable_and_bus_errors_while_reading_are_transient() {
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let mut i2c = Mock::new(&[T::write_read(0x76, vec![0xD0], vec![0]).with_error(nack)]);
        let e = Bme280::new(
            i2c.clone(),
            NoopDelay::new(),
            0x76,
            Settings::from_options(&Bme280Options::default()),
        )
        .err()
        .unwrap();
        assert!(matches!(&e, Bme280Error::Bus(b) if b.kind == nack), "{e:?}");
        assert!(matches!(e.at_start(), SensorError::Unavailable(_)));
        i2c.done();

        let mut tx = start_transactions(0x76, 0);
        tx.extend([
            T::write(0x76, vec![0xF2, 1]),
            T::write(0x76, vec![0xF4, (0b001 << 5) | (0b001 << 2) | 0b01])
                .with_error(ErrorKind::Bus),
        ]);
        let mut i2c = Mock::new(&tx);
        let mut dev = Bme280::new(
            i2c.clone(),
            NoopDelay::new(),
            0x76,
            Settings::from_options(&Bme280Options::default()),
        )
        .unwrap();
        let e = dev.read().unwrap_err();
        assert!(matches!(e, SensorError::Transient(_)), "{e:?}");
        i2c.done();
    }

    #[test]
    fn a_chip_that_never_finishes_is_not_ready_and_garbage_calibration_is_refused() {
        let mut tx = vec![
            T::write_read(0x76, vec![0xD0], vec![0x60]),
            T::write(0x76, vec![0xE0, 0xB6]),
        ];
        for _ in 0..=STATUS_POLLS {
            tx.push(T::write_read(0x76, vec![0xF3], vec![0x01]));
        }
        let mut i2c = Mock::new(&tx);
        let settings = Settings::from_options(&Bme280Options::default());
        let e = Bme280::new(i2c.clone(), NoopDelay::new(), 0x76, settings)
            .err()
            .unwrap();
        assert!(matches!(e, Bme280Error::NotReady { .. }), "{e:?}");
        i2c.done();

        let mut i2c = Mock::new(&[
            T::write_read(0x76, vec![0xD0], vec![0x60]),
            T::write(0x76, vec![0xE0, 0xB6]),
            T::write_read(0x76, vec![0xF3], vec![0x00]),
            T::write_read(0x76, vec![0x88], vec![0xFF; 26]),
            T::write_read(0x76, vec![0xE1], vec![0xFF; 7]),
        ]);
        let e = Bme280::new(i2c.clone(), NoopDelay::new(), 0x76, settings)
            .err()
            .unwrap();
        assert_eq!(e, Bme280Error::BadCalibration { address: 0x76 });
        i2c.done();
    }

    #[test]
    fn options_are_validated_by_name() {
        let bad = |o: Bme280Options| o.validate().unwrap_err();
        let d = Bme280Options::default();
        assert!(
            bad(Bme280Options {
                address: 0x48,
                ..d.clone()
            })
            .starts_with("address:")
        );
        assert!(
            bad(Bme280Options {
                oversampling_temperature: 0,
                ..d.clone()
            })
            .starts_with("oversampling_temperature:")
        );
        assert!(
            bad(Bme280Options {
                oversampling_humidity: 3,
                ..d.clone()
            })
            .starts_with("oversampling_humidity:")
        );
        assert!(
            bad(Bme280Options {
                filter: 5,
                ..d.clone()
            })
            .starts_with("filter:")
        );
        assert!(d.validate().is_ok());
    }
}
