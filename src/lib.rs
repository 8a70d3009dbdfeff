//! vigil: a supervised sensor runtime for long-running Raspberry Pi appliances.
//!
//! # Layout
//!
//! The modules stand on floors; a module imports only from its own floor or
//! the ones below (`tests/integration/architecture.rs` checks it, and
//! ARCHITECTURE.md draws it):
//!
//! - **ground**: `vocab`, the shared vocabulary: readings and series keys,
//!   the event bus and its payloads, the config error and checks, the clock.
//! - **building blocks**: `platform` (host facts: a Pi?, `vcgencmd`,
//!   throttling, thermal zones), `perf` (latency histograms, slow queries,
//!   recommendations), `supervisor` (lifecycle events, restart policy, the
//!   `Supervisor` actor), `guard` (circuit breakers, rate limits, the
//!   memory probe, who the client is), `storage` (SQLite through diesel: the
//!   ingest queue, the single `DbWriter`, rollups, retention, series,
//!   export, optimize, backup), `pacing` (thermal watchdog, load monitor,
//!   pacing policy, adaptive polling), `sensors` (the `Sensor` trait, the
//!   drivers, the `SensorActor`), `systemd` (readiness and the watchdog).
//! - **coordinators**: `alerts` (rules, the `AlertManager`, webhooks),
//!   `mqtt` (the broker bridge: publishing, store-and-forward),
//!   `web` (the only module that speaks HTTP: routes, handlers, the live
//!   feed), `shed` (the `Guard` actor that trims limiters and sheds memory
//!   across storage and the live feed).
//! - **assembly**: `app`: the aggregate [`Config`], reload, logging, and
//!   [`run`], which takes a validated config, a bound listener and a
//!   shutdown future, so the binary and the tests start the same appliance.
//! - **tools**: `bench` (feature `bench`), the benchmarks behind the
//!   `vigil-bench` binary, kept out of the appliance.
//!
//! Every module is private; what the binary, the benchmarks, the tests and
//! programs embedding vigil may use is re-exported below, by purpose.

mod alerts;
mod app;
#[cfg(feature = "bench")]
pub mod bench;
mod guard;
mod mqtt;
mod pacing;
mod perf;
mod platform;
mod sensors;
mod shed;
mod storage;
mod supervisor;
mod systemd;
mod vocab;
mod web;

// Running the appliance.
pub use app::config::DEFAULT_TOML;
pub use app::{Config, RunError, RunReport, import, logging, run};
pub use web::config::ServerConfig;

// The shared vocabulary.
pub use vocab::bus::{Bus, Event, SensorReading};
pub use vocab::check::ConfigError;
pub use vocab::clock;
pub use vocab::pacing::Level;
pub use vocab::reading::{Reading, SeriesKey, Value};

// Writing a sensor, and running sensors outside the appliance.
pub use sensors::actor::{SensorDeps, SensorShared, SensorStatus, sensor_child};
pub use sensors::cpu_temp::CpuTempOptions;
pub use sensors::simulated::{SimulatedOptions, Waveform};
pub use sensors::{BuildEnv, DriverConfig, Priority, Sensor, SensorConfig, SensorError};

// Supervision.
pub use supervisor::{
    ChildSpec, EventLog, GetTree, RestartPolicy, Stop, Supervisor, install_panic_hook,
};

// Storage: the command line's migrate, optimize and backup, and tests that
// prepare databases.
pub use storage::config::{OverflowPolicy, StorageConfig, Synchronous};
pub use storage::queue::IngestQueue;
pub use storage::read::Order;
pub use storage::{
    MIGRATIONS, StorageError, chunk, inspect, maintenance, open_writer, prepare, walindex,
};

// Pacing, guards and performance.
pub use guard::config::HttpLimitConfig;
pub use guard::{BreakerConfig, GuardConfig, GuardShared};
pub use pacing::{
    AdaptiveConfig, PacingConfig, PacingShared, load, load_monitor_child, thermal_watchdog_child,
};
pub use perf::{Perf, PerformanceConfig, advice};

// Host facts.
pub use platform::{raise_fd_limit, raspberry_pi_model};

// The route table, for clients and the OpenAPI checks; the admin API as
// the command line calls it next to a running server.
pub use web::{remote, routes};
