//! Pacing: vigil backs off when the SoC is hot or the CPU is busy, and
//! recovers when it cools, without flapping.
//!
//! - [`thermal`]: the watchdog's sources (thermal zones, hwmon, `vcgencmd`
//!   temperature and throttling flags).
//! - [`load`]: the load monitor's [`LoadSource`](load::LoadSource) (CPU,
//!   load per core, memory, own RSS), real or set by hand.
//! - [`monitor`]: the `ThermalWatchdog` and `LoadMonitor` actors, supervised
//!   children of the root.
//! - [`policy`]: the pure state machine turning figures into a level, with
//!   hysteresis and a minimum dwell.
//! - [`shared`]: [`PacingShared`], the state both monitors feed; it announces
//!   each change of level (log, event bus, watch channel) once.
//! - [`cadence`]: the [`Pace`] sensors watch and the wait for a sensor's next
//!   read that follows it (stretching, pausing optional sensors).
//! - [`adaptive`]: per-sensor variance-adaptive stretching of the interval.
//! - [`config`]: the `[pacing]` section.

pub mod adaptive;
pub mod cadence;
pub mod config;
pub mod load;
pub mod monitor;
pub mod policy;
pub mod shared;
pub mod thermal;

pub use adaptive::{AdaptiveConfig, AdaptiveTracker};
pub use cadence::{Pace, scale, wait_turn};
pub use config::PacingConfig;
pub use monitor::{load_monitor_child, thermal_watchdog_child};
pub use shared::{PacingShared, PacingStatus};
