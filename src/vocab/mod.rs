//! The ground floor: the vocabulary every layer speaks, importing nothing
//! of vigil above it.
//!
//! - [`reading`]: a driver's [`Value`](reading::Value), a stored
//!   [`Reading`](reading::Reading) and its [`SeriesKey`](reading::SeriesKey).
//! - [`bus`]: the internal event bus and the [`Event`](bus::Event) it carries.
//! - [`supervision`], [`guard`], [`pacing`], [`alert`]: the payloads of those
//!   events, so that publishing one needs nothing from the subsystem that
//!   announces it.
//! - [`check`]: the [`ConfigError`](check::ConfigError) that names a key, and
//!   the checks every config section uses.
//! - [`clock`]: wall-clock timestamps as stored and shown.

pub mod alert;
pub mod bus;
pub mod check;
pub mod clock;
pub mod guard;
pub mod pacing;
pub mod reading;
pub mod supervision;
