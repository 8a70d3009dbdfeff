//! The microphone's capture stream through cpal (feature `audio`).
//!
//! A cpal stream is not `Send` on every platform, so it lives on a thread
//! this driver owns: the thread opens the device, builds and starts the
//! stream, reports success or the reason for failure, then waits until the
//! sensor is dropped and drops the stream. The data callback feeds a
//! [`Capture`], which never blocks or allocates. Every failure to open
//! (no device, busy, no permission, unsupported rate) is `unavailable`
//! with the reason; a stream that breaks later fails the next read.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{ErrorKind, FromSample, SampleFormat, SizedSample};

use super::sound::{
    Capture, SharedWindows, SoundOptions, SoundSensor, WINDOWS_KEPT, samples_per_window,
};
use crate::sensors::SensorError;
use crate::vocab::clock::now_ms;

/// How long the device may take to open and start.
const START_TIMEOUT: Duration = Duration::from_millis(1500);

/// Sample formats in order of preference (native float first).
const FORMATS: [SampleFormat; 6] = [
    SampleFormat::F32,
    SampleFormat::I16,
    SampleFormat::I32,
    SampleFormat::U16,
    SampleFormat::I8,
    SampleFormat::U8,
];

/// What a failure to open or start the device means for the sensor: every
/// one is an absent (or unusable) microphone, shown with its reason.
pub fn open_error(what: &str, e: &cpal::Error) -> SensorError {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => " (the service user needs the `audio` group)",
        ErrorKind::DeviceBusy => " (another program is using it)",
        _ => "",
    };
    SensorError::Unavailable(format!("{what}: {e}{hint}"))
}

/// What an error reported by a running stream means: `None` for a glitch
/// the stream survives (an overrun), else the error the next read returns.
pub fn stream_error(e: &cpal::Error) -> Option<SensorError> {
    match e.kind() {
        ErrorKind::Xrun | ErrorKind::RealtimeDenied | ErrorKind::DeviceChanged => None,
        ErrorKind::DeviceNotAvailable
        | ErrorKind::HostUnavailable
        | ErrorKind::PermissionDenied => {
            Some(SensorError::Unavailable(format!("audio stream: {e}")))
        }
        _ => Some(SensorError::Permanent(format!("audio stream failed: {e}"))),
    }
}

/// Stops the stream's thread when dropped (without waiting for it).
struct StreamThread {
    _stop: mpsc::Sender<()>,
}

/// Opens the microphone and starts measuring.
pub fn open(options: &SoundOptions) -> Result<SoundSensor, SensorError> {
    let shared = SharedWindows::new(WINDOWS_KEPT);
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<String, SensorError>>(1);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread_options = options.clone();
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("vigil-audio".into())
        .spawn(move || match start(&thread_options, thread_shared) {
            Ok((stream, name)) => {
                if ready_tx.send(Ok(name)).is_ok() {
                    // Until the sensor is dropped (its sender with it).
                    let _ = stop_rx.recv();
                }
                drop(stream);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(|e| SensorError::Transient(format!("cannot start the audio thread: {e}")))?;
    match ready_rx.recv_timeout(START_TIMEOUT) {
        Ok(Ok(name)) => {
            log::info!(
                "sound: capturing from `{name}` at {} Hz, {} ms windows",
                options.sample_rate,
                options.window_ms
            );
            let guard = StreamThread { _stop: stop_tx };
            Ok(SoundSensor::new(shared, options, Some(Box::new(guard))))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SensorError::Unavailable(format!(
            "the audio device did not start within {} ms",
            START_TIMEOUT.as_millis()
        ))),
    }
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| device.to_string())
}

fn find_device(host: &cpal::Host, wanted: &str) -> Result<cpal::Device, SensorError> {
    if wanted.is_empty() {
        return host
            .default_input_device()
            .ok_or_else(|| SensorError::Unavailable("no audio input device".into()));
    }
    let devices: Vec<cpal::Device> = host
        .input_devices()
        .map_err(|e| open_error("cannot list audio input devices", &e))?
        .collect();
    let names: Vec<String> = devices.iter().map(device_name).collect();
    devices
        .into_iter()
        .zip(&names)
        .find(|(_, n)| n.contains(wanted))
        .map(|(d, _)| d)
        .ok_or_else(|| {
            SensorError::Unavailable(format!(
                "no audio input device named like `{wanted}` (found: {})",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ))
        })
}

/// Picks a supported configuration at `rate`: fewest channels, then the
/// preferred sample format.
fn choose_config(
    device: &cpal::Device,
    rate: u32,
) -> Result<(cpal::StreamConfig, SampleFormat), SensorError> {
    let ranges: Vec<cpal::SupportedStreamConfigRange> = device
        .supported_input_configs()
        .map_err(|e| open_error("cannot query the audio device", &e))?
        .collect();
    let best = ranges
        .iter()
        .filter(|r| r.min_sample_rate() <= rate && rate <= r.max_sample_rate())
        .filter_map(|r| {
            let rank = FORMATS.iter().position(|f| *f == r.sample_format())?;
            Some((r.channels(), rank, r))
        })
        .min_by_key(|(channels, rank, _)| (*channels, *rank));
    match best {
        Some((channels, _, r)) => Ok((
            cpal::StreamConfig {
                channels,
                sample_rate: rate,
                buffer_size: cpal::BufferSize::Default,
            },
            r.sample_format(),
        )),
        None => {
            let offered: Vec<String> = ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}-{} Hz {:?}",
                        r.min_sample_rate(),
                        r.max_sample_rate(),
                        r.sample_format()
                    )
                })
                .collect();
            Err(SensorError::Unavailable(format!(
                "the audio device cannot capture at {rate} Hz (it offers: {})",
                offered.join(", ")
            )))
        }
    }
}

/// Runs on the stream's thread: opens the device and starts the stream.
fn start(
    options: &SoundOptions,
    shared: Arc<SharedWindows>,
) -> Result<(cpal::Stream, String), SensorError> {
    let host = cpal::default_host();
    let device = find_device(&host, &options.device)?;
    let name = device_name(&device);
    let (config, format) = choose_config(&device, options.sample_rate)?;
    let capture = Capture::new(
        samples_per_window(options.sample_rate, config.channels, options.window_ms),
        shared.clone(),
    );
    let stream = match format {
        SampleFormat::F32 => build::<f32>(&device, config, capture, shared),
        SampleFormat::I16 => build::<i16>(&device, config, capture, shared),
        SampleFormat::I32 => build::<i32>(&device, config, capture, shared),
        SampleFormat::U16 => build::<u16>(&device, config, capture, shared),
        SampleFormat::I8 => build::<i8>(&device, config, capture, shared),
        SampleFormat::U8 => build::<u8>(&device, config, capture, shared),
        other => {
            return Err(SensorError::Unavailable(format!(
                "unsupported sample format {other:?}"
            )));
        }
    }
    .map_err(|e| open_error(&format!("cannot open `{name}`"), &e))?;
    stream
        .play()
        .map_err(|e| open_error(&format!("cannot start `{name}`"), &e))?;
    Ok((stream, name))
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut capture: Capture,
    shared: Arc<SharedWindows>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _: &cpal::InputCallbackInfo| {
            capture.on_samples(data.iter().map(|s| f32::from_sample_(*s)), now_ms());
        },
        move |e: cpal::Error| match stream_error(&e) {
            Some(fatal) => shared.fail(fatal),
            None => shared.overrun(),
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_to_open_is_unavailable_with_its_reason() {
        for kind in [
            ErrorKind::DeviceNotAvailable,
            ErrorKind::DeviceBusy,
            ErrorKind::PermissionDenied,
            ErrorKind::HostUnavailable,
            ErrorKind::UnsupportedConfig,
            ErrorKind::BackendError,
        ] {
            let e = open_error("cannot open `mic`", &cpal::Error::new(kind));
            match e {
                SensorError::Unavailable(r) => assert!(r.starts_with("cannot open `mic`"), "{r}"),
                other => panic!("{kind:?} gave {other:?}"),
            }
        }
        let e = open_error("x", &cpal::Error::new(ErrorKind::PermissionDenied));
        assert!(e.to_string().contains("`audio` group"), "{e}");
        let e = open_error("x", &cpal::Error::new(ErrorKind::DeviceBusy));
        assert!(e.to_string().contains("another program"), "{e}");
    }

    #[test]
    fn stream_errors_split_into_glitches_absence_and_breakage() {
        let kind = |k| stream_error(&cpal::Error::new(k));
        assert_eq!(kind(ErrorKind::Xrun), None);
        assert!(matches!(
            kind(ErrorKind::DeviceNotAvailable),
            Some(SensorError::Unavailable(_))
        ));
        assert!(matches!(
            kind(ErrorKind::StreamInvalidated),
            Some(SensorError::Permanent(_))
        ));
    }

    #[test]
    fn opening_a_missing_device_is_unavailable() {
        let options = SoundOptions {
            device: "no such microphone, vigil test".into(),
            ..SoundOptions::default()
        };
        match open(&options) {
            Err(SensorError::Unavailable(reason)) => {
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("expected unavailable, got {other:?}"),
            Ok(_) => panic!("a device named like that exists?"),
        }
    }
}
