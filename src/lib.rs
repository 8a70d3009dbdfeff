//! vigil: a supervised sensor runtime for long-running Raspberry Pi appliances.
//!
//! # Layout
//!
//! - [`app`]: assembly. [`run`] is the entry point: it takes a validated
//!   [`Config`], an already bound listener and a shutdown future, so the
//!   binary and the integration tests start the very same appliance.
//! - [`config`]: the TOML configuration, its validation and environment
//!   overrides. Every key is documented in `config/vigil.toml`.
//! - [`supervisor`]: the supervision tree: lifecycle events, restart policy
//!   (backoff, intensity), and the `Supervisor` actor.
//! - [`sensors`]: the `Sensor` trait, the built-in drivers, and the
//!   `SensorActor` that polls a driver off the actor thread.
//! - [`storage`]: SQLite through diesel: migrations, the bounded ingest
//!   queue, the single `DbWriter`, the series catalog and read queries;
//!   rollups, tiered retention and the size cap, chart series, export,
//!   optimize and backup, and the scheduler that runs them.
//! - [`web`]: the only module that knows HTTP and JSON: routes, handlers,
//!   errors, middleware.
//! - [`events`]: the internal event bus (readings as produced, and events
//!   such as supervision and writer health) that the live feed and alerts
//!   subscribe to.
//! - [`clock`]: wall-clock timestamps as stored and shown.
//! - [`platform`]: host facts: is this a Raspberry Pi, `vcgencmd` and
//!   the firmware's throttling flags.
//! - [`bench`]: the benchmarks behind `vigil bench`.
//!
//! `ARCHITECTURE.md` draws the tree and states the invariants.

pub mod app;
pub mod bench;
pub mod clock;
pub mod config;
pub mod events;
pub mod platform;
pub mod sensors;
pub mod storage;
pub mod supervisor;
pub mod web;

pub use app::{RunError, RunReport, run};
pub use config::Config;
