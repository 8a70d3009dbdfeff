//! Microphone level: the RMS level and the peak of the sound, in dBFS, over
//! consecutive windows of a configurable length.
//!
//! dBFS here is `20·log10(x)` with full scale = 1.0: a full-scale square
//! wave is 0 dBFS, a full-scale sine −3.01 dBFS. Values are kept between
//! the floor and 0 dBFS: silence (RMS below the floor, or exactly zero)
//! reads as the floor itself, and a sample at full scale counts as clipped.
//!
//! The audio callback ([`Capture::on_samples`]) runs on the sound system's
//! thread and must never block or allocate: it folds each sample into a
//! [`WindowAccumulator`] and, once per completed window, hands the window
//! to the reader through [`SharedWindows`] with `try_lock` (if the reader
//! happens to hold the lock, the window waits in a preallocated local
//! queue until the next callback). Every read drains the windows completed
//! since the previous read, each stamped with its end time, so nothing
//! between reads goes unmeasured. The cpal wiring is in `audio.rs`
//! (feature `audio`); everything here is plain and tested on synthetic
//! buffers.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::HwOptions;
use crate::sensors::{Sensor, SensorError};
use crate::vocab::reading::Value;

/// Completed windows kept for the reader; older ones are dropped (counted).
pub const WINDOWS_KEPT: usize = 256;
/// Completed windows the callback can hold while the reader has the lock.
const PENDING_WINDOWS: usize = 16;
/// A read waits at most one window plus this for a window to complete.
pub const WAIT_SLACK_MS: u64 = 500;
/// A sample at or above this magnitude is at full scale (clipped): the
/// largest positive 16-bit code, 32767/32768.
pub const CLIP_LEVEL: f32 = 32767.0 / 32768.0;

/// `options` of a `kind = "sound"` sensor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoundOptions {
    /// Input device: empty for the system default, else a part of its name.
    pub device: String,
    /// Samples per second to capture (the device must support it).
    pub sample_rate: u32,
    /// Length of each measured window, in milliseconds.
    pub window_ms: u64,
    /// Levels below this read as this (dBFS); silence is the floor.
    pub floor_dbfs: f64,
}

impl Default for SoundOptions {
    fn default() -> Self {
        SoundOptions {
            device: String::new(),
            sample_rate: 22_050,
            window_ms: 1000,
            floor_dbfs: -100.0,
        }
    }
}

impl HwOptions for SoundOptions {
    fn validate(&self) -> Result<(), String> {
        if !(8_000..=192_000).contains(&self.sample_rate) {
            return Err(format!(
                "sample_rate: {} is not within 8000..=192000",
                self.sample_rate
            ));
        }
        if !(10..=60_000).contains(&self.window_ms) {
            return Err(format!(
                "window_ms: {} is not within 10..=60000",
                self.window_ms
            ));
        }
        if !(self.floor_dbfs.is_finite() && (-200.0..=-20.0).contains(&self.floor_dbfs)) {
            return Err(format!(
                "floor_dbfs: {} is not within -200..=-20",
                self.floor_dbfs
            ));
        }
        Ok(())
    }
}

impl SoundOptions {
    /// A read can wait up to one window for audio (plus the stream's
    /// start-up at the first read): the sensor's `timeout_ms` must leave
    /// room for it.
    pub fn min_timeout_ms(&self) -> u64 {
        self.window_ms + WAIT_SLACK_MS
    }
}

/// `20·log10(amplitude)` kept within `[floor, 0]`; zero (or less) is the floor.
pub fn dbfs(amplitude: f64, floor: f64) -> f64 {
    if amplitude > 0.0 {
        (20.0 * amplitude.log10()).clamp(floor, 0.0)
    } else {
        floor
    }
}

#[cfg(test)]
/// Root mean square of a buffer (0 for an empty one).
pub fn rms(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// One completed window's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub sum_sq: f64,
    pub peak: f32,
    pub clipped: u32,
    pub samples: u32,
}

impl Window {
    pub fn rms(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            (self.sum_sq / f64::from(self.samples)).sqrt()
        }
    }

    pub fn level_dbfs(&self, floor: f64) -> f64 {
        dbfs(self.rms(), floor)
    }

    pub fn peak_dbfs(&self, floor: f64) -> f64 {
        dbfs(f64::from(self.peak), floor)
    }
}

/// Folds samples into windows of a fixed number of samples. No allocation.
#[derive(Debug, Clone)]
pub struct WindowAccumulator {
    target: u32,
    current: Window,
}

impl WindowAccumulator {
    pub fn new(samples_per_window: u32) -> WindowAccumulator {
        WindowAccumulator {
            target: samples_per_window.max(1),
            current: Window {
                sum_sq: 0.0,
                peak: 0.0,
                clipped: 0,
                samples: 0,
            },
        }
    }

    /// Adds one sample (full scale = ±1.0); returns the window it completes.
    #[inline]
    pub fn push(&mut self, x: f32) -> Option<Window> {
        let a = if x.is_finite() { x.abs() } else { 1.0 };
        let w = &mut self.current;
        w.sum_sq += f64::from(a) * f64::from(a);
        if a > w.peak {
            w.peak = a;
        }
        if a >= CLIP_LEVEL {
            w.clipped += 1;
        }
        w.samples += 1;
        if w.samples >= self.target {
            let done = *w;
            *w = Window {
                sum_sq: 0.0,
                peak: 0.0,
                clipped: 0,
                samples: 0,
            };
            Some(done)
        } else {
            None
        }
    }
}

/// Samples (over all channels) in one window.
pub fn samples_per_window(sample_rate: u32, channels: u16, window_ms: u64) -> u32 {
    let n = u64::from(sample_rate) * u64::from(channels.max(1)) * window_ms / 1000;
    u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

/// A completed window and when it ended (epoch ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped {
    pub end_ms: i64,
    pub window: Window,
}

/// A bounded queue of windows that never grows past its preallocated
/// capacity: when full, the oldest window is dropped and counted.
#[derive(Debug)]
struct Bounded {
    items: VecDeque<Stamped>,
    capacity: usize,
    dropped: u64,
}

impl Bounded {
    fn new(capacity: usize) -> Bounded {
        Bounded {
            items: VecDeque::with_capacity(capacity),
            capacity,
            dropped: 0,
        }
    }

    fn push(&mut self, w: Stamped) {
        if self.items.len() >= self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(w);
    }
}

/// Where the audio side leaves completed windows and stream errors for the
/// reader.
#[derive(Debug)]
pub struct SharedWindows {
    state: Mutex<SharedState>,
    arrived: Condvar,
}

#[derive(Debug)]
struct SharedState {
    windows: Bounded,
    error: Option<SensorError>,
    xruns: u64,
}

impl SharedWindows {
    pub fn new(capacity: usize) -> Arc<SharedWindows> {
        Arc::new(SharedWindows {
            state: Mutex::new(SharedState {
                windows: Bounded::new(capacity),
                error: None,
                xruns: 0,
            }),
            arrived: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a stream error that ends the measurement (reported by the
    /// next read). Called from the stream's error callback, not per sample.
    pub fn fail(&self, error: SensorError) {
        let mut s = self.lock();
        s.error.get_or_insert(error);
        self.arrived.notify_all();
    }

    /// Counts a buffer overrun: audio was lost, the stream goes on.
    pub fn overrun(&self) {
        self.lock().xruns += 1;
    }
}

/// The audio callback's state: the running window and windows waiting to
/// be handed over. Owned by the callback; nothing here allocates after
/// construction.
pub struct Capture {
    accumulator: WindowAccumulator,
    pending: Bounded,
    shared: Arc<SharedWindows>,
    last_end_ms: i64,
}

impl Capture {
    pub fn new(samples_per_window: u32, shared: Arc<SharedWindows>) -> Capture {
        Capture {
            accumulator: WindowAccumulator::new(samples_per_window),
            pending: Bounded::new(PENDING_WINDOWS),
            shared,
            last_end_ms: i64::MIN,
        }
    }

    /// One callback's samples, full scale ±1.0, arriving at `now_ms`.
    /// Never blocks: the hand-over uses `try_lock`.
    #[inline]
    pub fn on_samples(&mut self, samples: impl Iterator<Item = f32>, now_ms: i64) {
        for x in samples {
            if let Some(window) = self.accumulator.push(x) {
                // Windows completed in one callback get distinct instants.
                let end_ms = now_ms.max(self.last_end_ms.saturating_add(1));
                self.last_end_ms = end_ms;
                self.pending.push(Stamped { end_ms, window });
            }
        }
        if self.pending.items.is_empty() {
            return;
        }
        if let Ok(mut s) = self.shared.state.try_lock() {
            while let Some(w) = self.pending.items.pop_front() {
                s.windows.push(w);
            }
            s.windows.dropped += std::mem::take(&mut self.pending.dropped);
            drop(s);
            self.arrived_notify();
        }
    }

    fn arrived_notify(&self) {
        self.shared.arrived.notify_one();
    }
}

/// The `sound` sensor: reads the windows a capture stream produced.
pub struct SoundSensor {
    shared: Arc<SharedWindows>,
    floor: f64,
    wait: Duration,
    drained: Vec<Stamped>,
    /// Keeps the capture stream alive; dropping it stops the stream.
    _stream: Option<Box<dyn Send>>,
}

impl SoundSensor {
    pub fn new(
        shared: Arc<SharedWindows>,
        options: &SoundOptions,
        stream: Option<Box<dyn Send>>,
    ) -> SoundSensor {
        SoundSensor {
            shared,
            floor: options.floor_dbfs,
            wait: Duration::from_millis(options.window_ms + WAIT_SLACK_MS),
            drained: Vec::with_capacity(WINDOWS_KEPT),
            _stream: stream,
        }
    }

    /// Takes the windows completed since the last read, waiting up to one
    /// window (plus slack) if there are none yet.
    fn drain(&mut self) -> Result<(), SensorError> {
        let deadline = Instant::now() + self.wait;
        let mut s = self.shared.lock();
        loop {
            if let Some(e) = &s.error {
                return Err(e.clone());
            }
            if !s.windows.items.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SensorError::Transient(format!(
                    "no audio arrived for {} ms",
                    self.wait.as_millis()
                )));
            }
            s = self
                .shared
                .arrived
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        self.drained.clear();
        self.drained.extend(s.windows.items.drain(..));
        let dropped = std::mem::take(&mut s.windows.dropped);
        let xruns = std::mem::take(&mut s.xruns);
        drop(s);
        if dropped > 0 || xruns > 0 {
            log::warn!("sound: {dropped} windows dropped between reads, {xruns} buffer overruns");
        }
        Ok(())
    }
}

impl Sensor for SoundSensor {
    fn read(&mut self) -> Result<Vec<Value>, SensorError> {
        self.drain()?;
        let mut values = Vec::with_capacity(self.drained.len() * 3);
        for w in &self.drained {
            let at = w.end_ms;
            values.push(Value::new("level", w.window.level_dbfs(self.floor), "dBFS").at(at));
            values.push(Value::new("peak", w.window.peak_dbfs(self.floor), "dBFS").at(at));
            values.push(Value::new("clipped", f64::from(w.window.clipped), "").at(at));
        }
        Ok(values)
    }
}

/// ALSA's device nodes; without them there is no sound card at all.
pub fn check_sound_devices(dev: &Path) -> Result<(), SensorError> {
    let snd = dev.join("snd");
    if snd.is_dir() {
        Ok(())
    } else {
        Err(SensorError::Unavailable(format!(
            "no sound devices ({} is missing): no microphone is connected",
            snd.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::TAU;

    const FLOOR: f64 = -100.0;

    fn sine(amplitude: f32, n: usize) -> Vec<f32> {
        // 441 Hz at 44.1 kHz: exactly 100 samples per period.
        (0..n)
            .map(|i| amplitude * (TAU * i as f32 / 100.0).sin())
            .collect()
    }

    fn window_of(samples: &[f32]) -> Window {
        let mut acc = WindowAccumulator::new(samples.len() as u32);
        let mut done = None;
        for s in samples {
            done = acc.push(*s);
        }
        done.expect("the buffer fills exactly one window")
    }

    #[test]
    fn dbfs_of_known_signals() {
        // Full-scale square: 0 dBFS. Full-scale sine: -3.01 dBFS.
        let square: Vec<f32> = (0..1000)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(dbfs(rms(&square), FLOOR), 0.0);
        let full = sine(1.0, 44_100);
        assert!((dbfs(rms(&full), FLOOR) + 3.0103).abs() < 1e-3);
        // Half the amplitude is 6.02 dB less.
        let half = sine(0.5, 44_100);
        assert!((dbfs(rms(&half), FLOOR) + 3.0103 + 6.0206).abs() < 1e-3);
        // The accumulator agrees with the direct computation.
        let w = window_of(&half);
        assert!((w.level_dbfs(FLOOR) - dbfs(rms(&half), FLOOR)).abs() < 1e-6);
        assert!((w.peak_dbfs(FLOOR) + 6.0206).abs() < 1e-3);
        assert_eq!(w.clipped, 0);
    }

    #[test]
    fn silence_reads_as_the_floor() {
        let w = window_of(&[0.0; 512]);
        assert_eq!(w.level_dbfs(FLOOR), FLOOR);
        assert_eq!(w.peak_dbfs(FLOOR), FLOOR);
        // Quieter than the floor is the floor too; louder is itself.
        let hiss = sine(1e-6, 1000); // about -123 dBFS
        assert_eq!(window_of(&hiss).level_dbfs(FLOOR), FLOOR);
        assert!(window_of(&hiss).level_dbfs(-150.0) > -150.0);
        assert_eq!(rms(&[]), 0.0);
    }

    #[test]
    fn full_scale_samples_count_as_clipped_and_cap_at_zero_dbfs() {
        let mut buf = sine(0.5, 1000);
        buf[10] = 1.0;
        buf[20] = -1.0;
        buf[30] = 32767.0 / 32768.0; // the largest positive 16-bit sample
        buf[40] = 1.5; // an over from a float device
        let w = window_of(&buf);
        assert_eq!(w.clipped, 4);
        assert_eq!(w.peak_dbfs(FLOOR), 0.0);
        // A fully clipped window is 0 dBFS, never above.
        assert_eq!(window_of(&[1.5; 100]).level_dbfs(FLOOR), 0.0);
        // NaN from a broken device counts as full scale, not as poison.
        let w = window_of(&[f32::NAN, 0.0]);
        assert!(w.level_dbfs(FLOOR).is_finite());
        assert_eq!(w.clipped, 1);
    }

    #[test]
    fn window_sizes() {
        assert_eq!(samples_per_window(22_050, 1, 1000), 22_050);
        assert_eq!(samples_per_window(48_000, 2, 500), 48_000);
        assert_eq!(samples_per_window(8_000, 1, 0), 1);
    }

    #[test]
    fn capture_hands_over_stamped_windows_and_the_sensor_reads_them() {
        let shared = SharedWindows::new(WINDOWS_KEPT);
        let mut cap = Capture::new(100, shared.clone());
        let options = SoundOptions {
            window_ms: 10,
            ..SoundOptions::default()
        };
        let mut sensor = SoundSensor::new(shared.clone(), &options, None);

        // One callback completes two windows (loud, then silent) and starts a third.
        let mut buf = sine(1.0, 100);
        buf.extend([0.0; 150]);
        cap.on_samples(buf.into_iter(), 5000);
        let v = sensor.read().unwrap();
        assert_eq!(v.len(), 6);
        let level: Vec<_> = v.iter().filter(|v| v.metric == "level").collect();
        assert!((level[0].value + 3.01).abs() < 0.01, "{level:?}");
        assert_eq!(level[1].value, FLOOR);
        // Distinct instants, in order.
        assert_eq!(level[0].ts_ms, Some(5000));
        assert_eq!(level[1].ts_ms, Some(5001));
        assert!(v.iter().all(|v| v.unit == "dBFS" || v.metric == "clipped"));

        // The half-filled window completes at the next callback.
        cap.on_samples([0.0f32; 50].into_iter(), 6000);
        let v = sensor.read().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].ts_ms, Some(6000));
    }

    #[test]
    fn the_callback_never_waits_for_a_reader_holding_the_lock() {
        let shared = SharedWindows::new(WINDOWS_KEPT);
        let mut cap = Capture::new(10, shared.clone());
        {
            let _held = shared.lock();
            cap.on_samples([0.1f32; 30].into_iter(), 100);
            // Nothing handed over, nothing lost: three windows wait locally.
            assert_eq!(cap.pending.items.len(), 3);
        }
        cap.on_samples(std::iter::empty(), 200);
        assert_eq!(cap.pending.items.len(), 0);
        assert_eq!(shared.lock().windows.items.len(), 3);
    }

    #[test]
    fn queues_stay_bounded_and_count_what_they_drop() {
        let shared = SharedWindows::new(4);
        let mut cap = Capture::new(1, shared.clone());
        cap.on_samples([0.0f32; 10].into_iter(), 0);
        let s = shared.lock();
        assert_eq!(s.windows.items.len(), 4);
        assert_eq!(s.windows.dropped, 6);
        assert_eq!(s.windows.items.capacity(), 4);
    }

    #[test]
    fn a_stream_error_or_a_silent_stream_fails_the_read() {
        let shared = SharedWindows::new(8);
        let options = SoundOptions {
            window_ms: 10,
            ..SoundOptions::default()
        };
        let mut sensor = SoundSensor::new(shared.clone(), &options, None);
        // Nothing arrives within a window plus slack: transient.
        assert!(matches!(sensor.read(), Err(SensorError::Transient(_))));
        // The device went away: unavailable, at once.
        shared.fail(SensorError::Unavailable("audio device disconnected".into()));
        assert_eq!(
            sensor.read().unwrap_err(),
            SensorError::Unavailable("audio device disconnected".into())
        );
    }

    #[test]
    fn a_reader_waiting_is_woken_by_the_next_window() {
        let shared = SharedWindows::new(8);
        let options = SoundOptions {
            window_ms: 60_000,
            ..SoundOptions::default()
        };
        let mut sensor = SoundSensor::new(shared.clone(), &options, None);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = std::thread::spawn({
            let (shared, done) = (shared.clone(), done.clone());
            move || {
                let mut cap = Capture::new(4, shared);
                cap.on_samples([0.5f32; 4].into_iter(), 42);
                // The hand-over only tries the lock; as a real stream does,
                // later callbacks (here without samples) deliver a window a
                // busy reader kept from the first.
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    cap.on_samples(std::iter::empty(), 43);
                    std::thread::yield_now();
                }
            }
        });
        let v = sensor.read().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(v[0].ts_ms, Some(42));
        producer.join().unwrap();
    }

    #[test]
    fn without_sound_devices_the_sensor_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_sound_devices(dir.path()).unwrap_err();
        assert!(
            matches!(&e, SensorError::Unavailable(r) if r.contains("snd")),
            "{e:?}"
        );
        std::fs::create_dir(dir.path().join("snd")).unwrap();
        assert!(check_sound_devices(dir.path()).is_ok());
    }

    #[test]
    fn options_are_validated_by_name() {
        let bad = |o: SoundOptions| o.validate().unwrap_err();
        let d = SoundOptions::default();
        assert!(
            bad(SoundOptions {
                sample_rate: 100,
                ..d.clone()
            })
            .starts_with("sample_rate:")
        );
        assert!(
            bad(SoundOptions {
                window_ms: 0,
                ..d.clone()
            })
            .starts_with("window_ms:")
        );
        assert!(
            bad(SoundOptions {
                floor_dbfs: 3.0,
                ..d.clone()
            })
            .starts_with("floor_dbfs:")
        );
        assert!(d.validate().is_ok());
        assert_eq!(d.min_timeout_ms(), 1500);
    }
}
