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
//! - [`alerts`]: alert rules, the `AlertManager` actor, persistence and
//!   webhooks.
//! - [`perf`]: the performance monitor (latency histograms of every
//!   operation, slow queries) and evidence-based recommendations.
//! - [`events`]: the internal event bus (readings as produced, and events
//!   such as supervision and writer health) that the live feed and alerts
//!   subscribe to.
//! - [`pacing`]: the thermal watchdog and load monitor, the pacing policy
//!   that stretches sensor intervals under heat and load, and
//!   variance-adaptive polling.
//! - [`guard`]: circuit breakers (database commits, sensor drivers,
//!   webhooks), rate limits (HTTP clients, admin operations) and the memory
//!   guard, with the `Guard` actor that trims and watches them.
//! - [`systemd`]: readiness, status and the watchdog for `Type=notify`.
//! - [`clock`]: wall-clock timestamps as stored and shown.
//! - [`platform`]: host facts: is this a Raspberry Pi, `vcgencmd` and
//!   the firmware's throttling flags.
//! - `bench` (feature `bench`): the benchmarks behind the `vigil-bench`
//!   tool, kept out of the appliance binary.
//!
//! `ARCHITECTURE.md` draws the tree and states the invariants.

pub mod alerts;
pub mod app;
#[cfg(feature = "bench")]
pub mod bench;
pub mod vocab;

pub mod guard;
pub mod pacing;
pub mod perf;
pub mod platform;
pub mod sensors;
pub mod shed;
pub mod storage;
pub mod supervisor;
pub mod systemd;
pub mod web;

pub use app::Config;
pub use app::{RunError, RunReport, run};
