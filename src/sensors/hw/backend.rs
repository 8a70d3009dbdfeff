//! The Raspberry Pi backend: the one file that knows rppal (feature `pi`).
//!
//! It hands the drivers an `embedded-hal` I2C bus and a digital input whose
//! interrupt feeds an [`EdgeQueue`]. rppal is retired upstream; replacing
//! it (with `linux-embedded-hal` and `gpio-cdev`, say) means rewriting this
//! file behind the same two functions, [`open_i2c`] and [`open_input`].

use std::time::Duration;

use rppal::gpio::{Gpio, InputPin, Trigger};
use rppal::i2c::I2c;

use super::gpio::{EdgeQueue, Pull, RawEdge};
use crate::sensors::SensorError;
use crate::vocab::clock::now_ms;

/// Opens I2C bus `bus` (`/dev/i2c-<bus>`).
pub fn open_i2c(bus: u8) -> Result<I2c, SensorError> {
    I2c::with_bus(bus).map_err(|e| {
        let hint = match &e {
            rppal::i2c::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                " (the service user needs the `i2c` group)"
            }
            _ => "",
        };
        SensorError::Unavailable(format!("cannot open /dev/i2c-{bus}: {e}{hint}"))
    })
}

/// Configures BCM GPIO `pin` as an input with the given resistor, and has
/// every rising and falling edge pushed into `edges` with its kernel
/// timestamp converted to epoch milliseconds. Dropping the returned pin
/// stops the interrupt thread and releases the pin.
pub fn open_input(pin: u8, pull: Pull, edges: EdgeQueue) -> Result<InputPin, SensorError> {
    let gpio = Gpio::new().map_err(gpio_error)?;
    let raw = gpio.get(pin).map_err(gpio_error)?;
    let mut input = match pull {
        Pull::Up => raw.into_input_pullup(),
        Pull::Down => raw.into_input_pulldown(),
        Pull::None => raw.into_input(),
    };
    input
        .set_async_interrupt(Trigger::Both, None, move |event| {
            edges.push(RawEdge {
                ts_ms: epoch_ms_of(event.timestamp),
                high: event.trigger == Trigger::RisingEdge,
            });
        })
        .map_err(gpio_error)?;
    Ok(input)
}

fn gpio_error(e: rppal::gpio::Error) -> SensorError {
    use rppal::gpio::Error;
    match e {
        Error::PermissionDenied(path) => SensorError::Unavailable(format!(
            "permission denied on {path} (the service user needs the `gpio` group)"
        )),
        Error::ThreadPanic => SensorError::Permanent("the GPIO interrupt thread panicked".into()),
        other => SensorError::Unavailable(format!("GPIO: {other}")),
    }
}

/// Epoch milliseconds of an event stamped on the kernel's monotonic clock.
fn epoch_ms_of(event: Duration) -> i64 {
    match monotonic_now() {
        Some(mono) => stamp(event, mono, now_ms()),
        None => now_ms(),
    }
}

/// Dates an event `mono_now - event` before `wall_now_ms`.
fn stamp(event: Duration, mono_now: Duration, wall_now_ms: i64) -> i64 {
    let age = mono_now.saturating_sub(event);
    wall_now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// `CLOCK_MONOTONIC`, the clock GPIO line events are stamped with.
fn monotonic_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given, which
    // lives for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_dated_by_their_age_on_the_monotonic_clock() {
        let mono = Duration::from_secs(1000);
        assert_eq!(stamp(Duration::from_millis(999_750), mono, 50_000), 49_750);
        // An event "from the future" (clock read before the event) is now.
        assert_eq!(stamp(Duration::from_secs(1001), mono, 50_000), 50_000);
    }

    #[test]
    fn the_monotonic_clock_reads_and_advances() {
        let a = monotonic_now().unwrap();
        let b = monotonic_now().unwrap();
        assert!(b >= a);
    }

    #[test]
    fn off_a_pi_opening_fails_as_unavailable_not_as_a_crash() {
        if crate::platform::raspberry_pi_model().is_some() {
            return;
        }
        assert!(matches!(open_i2c(1), Err(SensorError::Unavailable(_))));
        let r = open_input(17, Pull::Down, EdgeQueue::new(4));
        assert!(
            matches!(r, Err(SensorError::Unavailable(_))),
            "{:?}",
            r.err()
        );
    }
}
