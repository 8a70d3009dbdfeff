//! The pacing vocabulary: the [`Level`] the appliance backs off to, which
//! input set it ([`Cause`], [`Why`]), and the [`PacingChange`] announced when
//! it moves.

use std::fmt;

use serde::Serialize;

/// A change of level, as logged, published and listed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PacingChange {
    pub at: String,
    pub at_ms: i64,
    pub from: Level,
    pub to: Level,
    /// The interval multiplier from now on.
    pub multiplier: f64,
    /// Optional sensors are paused from now on.
    pub optional_paused: bool,
    pub why: Why,
}

/// How hard the appliance should back off.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Normal,
    Warm,
    Hot,
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Normal, Level::Warm, Level::Hot, Level::Critical];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Level {
        Level::ALL[i.min(Level::ALL.len() - 1)]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Warm => "warm",
            Level::Hot => "hot",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which input set the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The temperature (it wins ties with CPU usage).
    Temperature,
    /// CPU usage.
    Cpu,
    /// Neither input supports more than normal.
    Calm,
}

/// Why the policy is at its level: the input that supports it and the
/// figures of the observation that supported it (for a drop, the latest one
/// in the dwell that supported the new level).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Why {
    pub cause: Cause,
    pub temperature_c: Option<f64>,
    pub cpu_percent: Option<f64>,
    /// One line for people, e.g. `temperature 81.0 °C ≥ 80.0 °C (critical)`.
    pub summary: String,
}
