//! Hardware sensors for a Raspberry Pi: GPIO digital inputs, a BME280 and an
//! ADS1115 (with an MQ-135) over I2C, a microphone's level, and the
//! firmware's throttling flags.
//!
//! The drivers are written against the `embedded-hal` 1.0 traits (`I2c`,
//! digital `InputPin`, `DelayNs`), generic over the bus, so their register
//! traffic is tested with `embedded-hal-mock` on any machine. The only code
//! that knows the Pi's actual peripherals is `backend.rs` (rppal, feature
//! `pi`); the microphone goes through cpal (feature `audio`). Built without
//! a feature, or run off a Pi, a configured hardware sensor is
//! `unavailable` with the reason, and the rest of the appliance runs on.
//!
//! This module holds what the drivers share: the host checks that produce
//! those reasons, I2C register helpers with a typed [`BusError`], and a
//! blocking delay.

// The drivers are built on every host so that their bus-mock tests run
// everywhere; only the `pi` and `audio` backends construct them.
#![cfg_attr(not(all(feature = "pi", feature = "audio")), allow(dead_code))]

pub mod ads1115;
#[cfg(feature = "audio")]
pub mod audio;
#[cfg(feature = "pi")]
pub mod backend;
pub mod bme280;
pub mod debounce;
pub mod gpio;
pub mod mq135;
pub mod sound;
pub mod throttled;

use std::path::{Path, PathBuf};
use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, I2c};

use super::SensorError;

/// Options of a hardware sensor kind, checked after deserialisation. The
/// message starts with the option's name.
pub trait HwOptions {
    fn validate(&self) -> Result<(), String>;
}

/// Deserialised options, validated.
pub(crate) fn checked<T: HwOptions>(options: T) -> Result<T, String> {
    options.validate()?;
    Ok(options)
}

/// The reason a sensor needing a cargo feature gives in a build without it.
pub fn without_feature(feature: &str) -> SensorError {
    SensorError::Unavailable(format!(
        "vigil was built without the `{feature}` feature (rebuild with `--features {feature}`)"
    ))
}

/// Device nodes the GPIO backend can use: `/dev/gpiomem` up to the Pi 4,
/// `/dev/gpiomem0` on the Pi 5.
const GPIOMEM_NODES: &[&str] = &["gpiomem", "gpiomem0"];

/// What the hardware sensors need to know about the host before they touch
/// it. [`HostFacts::current`] looks at this machine; tests build their own.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Whether this binary has the `pi` feature (rppal).
    pub pi_feature: bool,
    /// The board's model if it is a Raspberry Pi.
    pub pi_model: Option<String>,
    /// Where device nodes live (`/dev`).
    pub dev: PathBuf,
}

impl HostFacts {
    pub fn current() -> HostFacts {
        HostFacts {
            pi_feature: cfg!(feature = "pi"),
            pi_model: crate::platform::raspberry_pi_model(),
            dev: PathBuf::from("/dev"),
        }
    }

    fn require_pi(&self) -> Result<(), SensorError> {
        if !self.pi_feature {
            return Err(without_feature("pi"));
        }
        if self.pi_model.is_none() {
            return Err(SensorError::Unavailable(
                "not a Raspberry Pi (no Raspberry Pi model in the device tree)".into(),
            ));
        }
        Ok(())
    }

    /// GPIO needs the `pi` feature, a Pi, and its GPIO memory device.
    pub fn check_gpio(&self) -> Result<(), SensorError> {
        self.require_pi()?;
        if GPIOMEM_NODES.iter().any(|n| self.dev.join(n).exists()) {
            Ok(())
        } else {
            Err(SensorError::Unavailable(format!(
                "no {} (GPIO is not available to this system)",
                self.dev.join(GPIOMEM_NODES[0]).display()
            )))
        }
    }

    /// I2C needs the `pi` feature, a Pi, and the bus's device node, which
    /// exists once I2C is enabled (`raspi-config`, or `dtparam=i2c_arm=on`).
    pub fn check_i2c(&self, bus: u8) -> Result<PathBuf, SensorError> {
        self.require_pi()?;
        let node = i2c_node(&self.dev, bus);
        if node.exists() {
            Ok(node)
        } else {
            Err(SensorError::Unavailable(format!(
                "no {} (enable I2C: raspi-config, Interface Options, I2C)",
                node.display()
            )))
        }
    }
}

/// The device node of an I2C bus.
pub fn i2c_node(dev: &Path, bus: u8) -> PathBuf {
    dev.join(format!("i2c-{bus}"))
}

/// An I2C transfer that failed, with what was being done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("I2C {operation} at address {address:#04x} failed: {message}")]
pub struct BusError {
    pub address: u8,
    pub operation: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl BusError {
    fn new<E: embedded_hal::i2c::Error>(address: u8, operation: String, e: &E) -> BusError {
        BusError {
            address,
            operation,
            kind: e.kind(),
            message: format!("{e:?}"),
        }
    }
}

/// Reads `buf.len()` bytes starting at register `reg`.
pub fn read_regs<I: I2c>(
    i2c: &mut I,
    address: u8,
    reg: u8,
    buf: &mut [u8],
) -> Result<(), BusError> {
    i2c.write_read(address, &[reg], buf)
        .map_err(|e| BusError::new(address, format!("read of register {reg:#04x}"), &e))
}

/// Writes one byte to register `reg`.
pub fn write_reg8<I: I2c>(i2c: &mut I, address: u8, reg: u8, value: u8) -> Result<(), BusError> {
    write_frame(i2c, address, reg, &[reg, value])
}

/// Writes a 16-bit register, most significant byte first.
pub fn write_reg16<I: I2c>(i2c: &mut I, address: u8, reg: u8, value: u16) -> Result<(), BusError> {
    let [hi, lo] = value.to_be_bytes();
    write_frame(i2c, address, reg, &[reg, hi, lo])
}

fn write_frame<I: I2c>(i2c: &mut I, address: u8, reg: u8, frame: &[u8]) -> Result<(), BusError> {
    i2c.write(address, frame)
        .map_err(|e| BusError::new(address, format!("write of register {reg:#04x}"), &e))
}

/// A delay that sleeps the calling thread (drivers run on the blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct StdDelay;

impl DelayNs for StdDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// Parses an I2C address written as an integer (`0x76` in TOML is an
/// integer) and checks it is a 7-bit address a device may use.
pub(crate) fn check_address(option: &str, address: u8, allowed: &[u8]) -> Result<(), String> {
    if allowed.contains(&address) {
        Ok(())
    } else {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:#04x}")).collect();
        Err(format!(
            "{option}: {address:#04x} is not one of {}",
            list.join(", ")
        ))
    }
}

/// Opens a configured GPIO input on this host, through the `pi` backend.
pub fn build_gpio(options: &gpio::GpioOptions) -> Result<Box<dyn super::Sensor>, SensorError> {
    HostFacts::current().check_gpio()?;
    #[cfg(feature = "pi")]
    {
        let edges = gpio::EdgeQueue::new(options.edge_buffer);
        let pin = backend::open_input(options.pin, options.pull, edges.clone())?;
        Ok(Box::new(gpio::GpioSensor::new(
            pin,
            edges,
            options.clone(),
            crate::vocab::clock::now_ms(),
        )?))
    }
    #[cfg(not(feature = "pi"))]
    {
        let _ = options;
        Err(without_feature("pi"))
    }
}

/// Opens the configured microphone on this host, through cpal.
pub fn build_sound(options: &sound::SoundOptions) -> Result<Box<dyn super::Sensor>, SensorError> {
    if !cfg!(feature = "audio") {
        return Err(without_feature("audio"));
    }
    sound::check_sound_devices(Path::new("/dev"))?;
    #[cfg(feature = "audio")]
    {
        Ok(Box::new(audio::open(options)?))
    }
    #[cfg(not(feature = "audio"))]
    {
        let _ = options;
        Err(without_feature("audio"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    fn host(dev: &Path, feature: bool, model: Option<&str>) -> HostFacts {
        HostFacts {
            pi_feature: feature,
            pi_model: model.map(str::to_owned),
            dev: dev.to_owned(),
        }
    }

    fn reason(r: Result<impl std::fmt::Debug, SensorError>) -> String {
        match r {
            Err(SensorError::Unavailable(reason)) => reason,
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    #[test]
    fn each_missing_piece_is_a_distinct_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pi = Some("Raspberry Pi 4 Model B Rev 1.4");

        let r = reason(host(d, false, pi).check_gpio());
        assert!(r.contains("without the `pi` feature"), "{r}");
        let r = reason(host(d, true, None).check_i2c(1));
        assert!(r.contains("not a Raspberry Pi"), "{r}");
        let r = reason(host(d, true, pi).check_gpio());
        assert!(r.contains("gpiomem"), "{r}");
        let r = reason(host(d, true, pi).check_i2c(1));
        assert!(r.contains("i2c-1") && r.contains("enable I2C"), "{r}");

        std::fs::write(d.join("gpiomem0"), b"").unwrap();
        std::fs::write(d.join("i2c-1"), b"").unwrap();
        assert!(host(d, true, pi).check_gpio().is_ok());
        assert_eq!(host(d, true, pi).check_i2c(1).unwrap(), d.join("i2c-1"));
        assert!(host(d, true, pi).check_i2c(3).is_err());
    }

    #[test]
    fn register_helpers_frame_and_name_failures() {
        let expectations = [
            Transaction::write_read(0x76, vec![0xD0], vec![0x60]),
            Transaction::write(0x76, vec![0xF4, 0x25]),
            Transaction::write(0x48, vec![0x01, 0x85, 0x83]),
            Transaction::write_read(0x76, vec![0xF7], vec![0]).with_error(
                ErrorKind::NoAcknowledge(embedded_hal::i2c::NoAcknowledgeSource::Address),
            ),
        ];
        let mut i2c = Mock::new(&expectations);
        let mut id = [0u8];
        read_regs(&mut i2c, 0x76, 0xD0, &mut id).unwrap();
        assert_eq!(id, [0x60]);
        write_reg8(&mut i2c, 0x76, 0xF4, 0x25).unwrap();
        write_reg16(&mut i2c, 0x48, 0x01, 0x8583).unwrap();
        let e = read_regs(&mut i2c, 0x76, 0xF7, &mut id).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::NoAcknowledge(_)), "{e:?}");
        assert!(
            e.to_string().contains("0x76") && e.to_string().contains("0xf7"),
            "{e}"
        );
        i2c.done();
    }

    fn parse(text: &str) -> Result<crate::app::config::Config, String> {
        crate::app::config::Config::from_toml(text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn every_hardware_kind_parses_with_defaults_and_names_bad_options() {
        use crate::sensors::DriverConfig;
        let c = parse(
            "[[sensors]]\nname = \"door\"\nkind = \"gpio\"\n\
             [[sensors]]\nname = \"climate\"\nkind = \"bme280\"\n\
             [[sensors]]\nname = \"air\"\nkind = \"ads1115\"\n\
             [sensors.options]\nchannel = \"a1\"\n[sensors.options.mq135]\nr0_ohms = 41000.0\n\
             [[sensors]]\nname = \"noise\"\nkind = \"sound\"\n\
             [[sensors]]\nname = \"power\"\nkind = \"throttled\"\n",
        )
        .unwrap();
        let kinds: Vec<_> = c.sensors.iter().map(|s| s.driver.kind()).collect();
        assert_eq!(kinds, ["gpio", "bme280", "ads1115", "sound", "throttled"]);
        match &c.sensors[2].driver {
            DriverConfig::Ads1115(o) => {
                assert_eq!(o.channel, ads1115::Channel::A1);
                let mq = o.mq135.as_ref().unwrap();
                assert_eq!(mq.r0_ohms, 41000.0);
                assert_eq!(mq.warmup_secs, 60);
            }
            other => panic!("{other:?}"),
        }

        for (kind, options, named) in [
            ("gpio", "pull = \"sideways\"", "pull"),
            ("gpio", "pin = 99", "pin"),
            ("bme280", "address = 0x40", "address"),
            ("bme280", "adress = 0x76", "adress"),
            ("ads1115", "full_scale_v = 3.3", "full_scale_v"),
            ("ads1115", "[sensors.options.mq135]\nwarmup = 5", "warmup"),
            ("sound", "sample_rate = 1", "sample_rate"),
            ("throttled", "command_timeout_ms = 0", "command_timeout_ms"),
        ] {
            let text = format!(
                "[[sensors]]\nname = \"s\"\nkind = \"{kind}\"\n[sensors.options]\n{options}\n"
            );
            let e = parse(&text).unwrap_err();
            assert!(
                e.contains("sensors[s].options") && e.contains(named),
                "{kind}: {e}"
            );
        }
    }

    /// The hardware examples commented out in `config/vigil.toml`, as TOML.
    fn documented_examples() -> String {
        let doc = crate::app::config::DEFAULT_TOML;
        let start = doc.find("# Hardware sensors.").expect("hardware section");
        doc[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    })
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_documented_examples_parse_and_show_the_defaults() {
        use crate::sensors::DriverConfig;
        let c = parse(&documented_examples()).unwrap();
        assert_eq!(c.sensors.len(), 5);
        for s in &c.sensors {
            match &s.driver {
                DriverConfig::Gpio(o) => assert_eq!(o, &gpio::GpioOptions::default()),
                DriverConfig::Bme280(o) => assert_eq!(o, &bme280::Bme280Options::default()),
                DriverConfig::Ads1115(o) => {
                    let expected = ads1115::Ads1115Options {
                        mq135: Some(mq135::Mq135Options::default()),
                        ..ads1115::Ads1115Options::default()
                    };
                    assert_eq!(o, &expected);
                }
                DriverConfig::Sound(o) => assert_eq!(o, &sound::SoundOptions::default()),
                DriverConfig::Throttled(o) => {
                    assert_eq!(o, &throttled::ThrottledOptions::default())
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn the_readme_example_configuration_is_valid() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("### Example configuration").expect("section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").expect("its end")];
        let c = parse(block).unwrap();
        let kinds: Vec<_> = c.sensors.iter().map(|s| s.driver.kind()).collect();
        assert_eq!(
            kinds,
            ["gpio", "gpio", "bme280", "ads1115", "sound", "throttled"]
        );
    }

    #[test]
    fn a_timeout_shorter_than_the_read_can_take_is_refused() {
        let e = parse(
            "[[sensors]]\nname = \"mic\"\nkind = \"sound\"\ntimeout_ms = 1000\n\
             [sensors.options]\nwindow_ms = 1000\n",
        )
        .unwrap_err();
        assert!(e.contains("sensors[mic].timeout_ms"), "{e}");
        assert!(
            parse(
                "[[sensors]]\nname = \"mic\"\nkind = \"sound\"\ntimeout_ms = 1000\n\
                 [sensors.options]\nwindow_ms = 250\n",
            )
            .is_ok()
        );
    }

    #[test]
    fn addresses_are_checked_against_the_chip() {
        assert!(check_address("address", 0x76, &[0x76, 0x77]).is_ok());
        let e = check_address("address", 0x48, &[0x76, 0x77]).unwrap_err();
        assert!(e.starts_with("address: 0x48"), "{e}");
    }
}
