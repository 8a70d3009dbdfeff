//! The pacing policy: a pure state machine that turns temperature and CPU
//! figures into a level (normal / warm / hot / critical) without flapping.
//!
//! Each input has its own level with hysteresis: it rises as soon as the
//! figure reaches a threshold and falls only once the figure is at or below
//! that threshold minus the hysteresis. Temperature can reach every level;
//! CPU usage reaches warm and hot only (a busy CPU is relieved by stretching;
//! pausing sensors is kept for heat, a hardware risk). The worse of the two
//! wins. The combined level rises at once, and drops only after every
//! observation for `min_dwell` supported a lower level, then to the highest
//! level any of them supported. The clock is injected: callers pass `now`.

use std::time::Duration;

use tokio::time::Instant;

use super::config::PacingConfig;
use crate::vocab::pacing::{Cause, Level, Why};

/// The figures the policy decides from; `None` when a source is absent or
/// its last figure is too old.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Inputs {
    pub temperature_c: Option<f64>,
    pub cpu_percent: Option<f64>,
}

/// A change of level decided by [`PacingPolicy::evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: Level,
    pub to: Level,
    pub why: Why,
}

/// A lower level waiting out the dwell time.
#[derive(Debug, Clone)]
struct Pending {
    since: Instant,
    /// The highest level any observation since `since` supported.
    target: Level,
    /// Why the latest observation supporting `target` supported it: the
    /// cause a drop names, even when later observations support less.
    why: Why,
}

/// The level one input supports. `thresholds[i]` is where level `i + 1`
/// starts (ascending); `held` is the level this input supported before.
pub fn input_level(value: f64, thresholds: &[f64], hysteresis: f64, held: Level) -> Level {
    let raw = thresholds.iter().take_while(|t| value >= **t).count();
    let mut level = held.index().min(thresholds.len());
    if raw >= level {
        return Level::from_index(raw);
    }
    while level > raw && value <= thresholds[level - 1] - hysteresis {
        level -= 1;
    }
    Level::from_index(level)
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct PacingPolicy {
    temp_thresholds: [f64; 3],
    temp_hysteresis: f64,
    cpu_thresholds: [f64; 2],
    cpu_hysteresis: f64,
    min_dwell: Duration,
    multipliers: [f64; 4],
    level: Level,
    since: Instant,
    why: Why,
    temp_level: Level,
    cpu_level: Level,
    pending: Option<Pending>,
}

impl PacingPolicy {
    /// A policy at `normal` from `now`. `config` must be validated.
    pub fn new(config: &PacingConfig, now: Instant) -> PacingPolicy {
        PacingPolicy {
            temp_thresholds: [
                config.temp_warm_c,
                config.temp_hot_c,
                config.temp_critical_c,
            ],
            temp_hysteresis: config.temp_hysteresis_c,
            cpu_thresholds: [config.cpu_warm_percent, config.cpu_hot_percent],
            cpu_hysteresis: config.cpu_hysteresis_percent,
            min_dwell: Duration::from_millis(config.min_dwell_ms),
            multipliers: config.multipliers(),
            level: Level::Normal,
            since: now,
            why: Why {
                cause: Cause::Calm,
                temperature_c: None,
                cpu_percent: None,
                summary: "the starting level; no change yet".into(),
            },
            temp_level: Level::Normal,
            cpu_level: Level::Normal,
            pending: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    pub fn why(&self) -> &Why {
        &self.why
    }

    /// Takes new thresholds, hysteresis, dwell and multipliers (a reload),
    /// keeping the level, its cause and any pending drop: the next
    /// observation is judged by the new figures.
    pub fn retune(&mut self, config: &PacingConfig) {
        let fresh = PacingPolicy::new(config, self.since);
        self.temp_thresholds = fresh.temp_thresholds;
        self.temp_hysteresis = fresh.temp_hysteresis;
        self.cpu_thresholds = fresh.cpu_thresholds;
        self.cpu_hysteresis = fresh.cpu_hysteresis;
        self.min_dwell = fresh.min_dwell;
        self.multipliers = fresh.multipliers;
    }

    pub fn multiplier(&self) -> f64 {
        self.multiplier_of(self.level)
    }

    pub fn multiplier_of(&self, level: Level) -> f64 {
        self.multipliers[level.index()]
    }

    /// The level each input supports right now (temperature, CPU).
    pub fn input_levels(&self) -> (Level, Level) {
        (self.temp_level, self.cpu_level)
    }

    /// Takes in the latest figures; returns the change of level, if any.
    pub fn evaluate(&mut self, now: Instant, inputs: Inputs) -> Option<Transition> {
        let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
        let inputs = Inputs {
            temperature_c: finite(inputs.temperature_c),
            cpu_percent: finite(inputs.cpu_percent),
        };
        self.temp_level = match inputs.temperature_c {
            Some(t) => input_level(
                t,
                &self.temp_thresholds,
                self.temp_hysteresis,
                self.temp_level,
            ),
            None => Level::Normal,
        };
        self.cpu_level = match inputs.cpu_percent {
            Some(c) => input_level(c, &self.cpu_thresholds, self.cpu_hysteresis, self.cpu_level),
            None => Level::Normal,
        };
        let candidate = self.temp_level.max(self.cpu_level);
        let candidate_why = self.explain(candidate, inputs);

        let (to, why) = if candidate > self.level {
            (candidate, candidate_why)
        } else if candidate == self.level {
            self.pending = None;
            return None;
        } else {
            let pending = self.pending.get_or_insert_with(|| Pending {
                since: now,
                target: candidate,
                why: candidate_why.clone(),
            });
            if candidate >= pending.target {
                pending.target = candidate;
                pending.why = candidate_why;
            }
            if now.saturating_duration_since(pending.since) < self.min_dwell {
                return None;
            }
            (pending.target, pending.why.clone())
        };
        self.pending = None;
        let from = self.level;
        self.level = to;
        self.since = now;
        self.why = why;
        Some(Transition {
            from,
            to,
            why: self.why.clone(),
        })
    }

    /// Why `level` is supported by this observation's input levels: the
    /// input at that level (the temperature when both are), or calm at
    /// normal.
    fn explain(&self, level: Level, inputs: Inputs) -> Why {
        let (cause, summary) = if level == Level::Normal {
            let t = inputs
                .temperature_c
                .map_or("unknown".to_owned(), |t| format!("{t:.1} °C"));
            let c = inputs
                .cpu_percent
                .map_or("unknown".to_owned(), |c| format!("{c:.1} %"));
            (
                Cause::Calm,
                format!("temperature {t} and CPU {c} are below every threshold"),
            )
        } else if self.temp_level >= level {
            let t = inputs.temperature_c.unwrap_or(f64::NAN);
            let threshold = self.temp_thresholds[level.index() - 1];
            (
                Cause::Temperature,
                format!("temperature {t:.1} °C, {level} from {threshold:.1} °C"),
            )
        } else {
            let c = inputs.cpu_percent.unwrap_or(f64::NAN);
            let threshold = self.cpu_thresholds[(level.index() - 1).min(1)];
            (
                Cause::Cpu,
                format!("CPU {c:.1} %, {level} from {threshold:.1} %"),
            )
        };
        Why {
            cause,
            temperature_c: inputs.temperature_c,
            cpu_percent: inputs.cpu_percent,
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dwell_ms: u64) -> PacingConfig {
        PacingConfig {
            min_dwell_ms: dwell_ms,
            ..PacingConfig::default()
        }
    }

    fn heat(t: f64) -> Inputs {
        Inputs {
            temperature_c: Some(t),
            cpu_percent: None,
        }
    }

    fn both(t: f64, c: f64) -> Inputs {
        Inputs {
            temperature_c: Some(t),
            cpu_percent: Some(c),
        }
    }

    /// Feeds `inputs` one per second; returns each change as (step, level, multiplier).
    fn run(policy: &mut PacingPolicy, t0: Instant, inputs: &[Inputs]) -> Vec<(usize, Level, f64)> {
        let mut changes = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            if let Some(tr) = policy.evaluate(now, *input) {
                assert_ne!(tr.from, tr.to);
                changes.push((i, tr.to, policy.multiplier()));
            }
        }
        changes
    }

    fn ramp() -> Vec<Inputs> {
        let up = (60..=85).map(f64::from);
        let down = (60..85).rev().map(f64::from);
        up.chain(down).map(heat).collect()
    }

    #[test]
    fn a_ramp_up_and_down_walks_the_levels_with_hysteresis() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(0), t0);
        let changes = run(&mut p, t0, &ramp());
        let seen: Vec<(f64, Level, f64)> = changes
            .iter()
            .map(|(i, l, m)| (ramp()[*i].temperature_c.unwrap(), *l, *m))
            .collect();
        assert_eq!(
            seen,
            vec![
                (65.0, Level::Warm, 1.5),
                (75.0, Level::Hot, 2.0),
                (80.0, Level::Critical, 4.0),
                // Down: each level is left at its threshold minus 5 °C.
                (75.0, Level::Hot, 2.0),
                (70.0, Level::Warm, 1.5),
                (60.0, Level::Normal, 1.0),
            ]
        );
        assert_eq!(p.why().cause, Cause::Calm);
    }

    #[test]
    fn with_a_dwell_the_ramp_down_waits_but_the_ramp_up_does_not() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(10_000), t0);
        let inputs = ramp();
        let changes = run(&mut p, t0, &inputs);
        let levels: Vec<Level> = changes.iter().map(|c| c.1).collect();
        assert_eq!(
            levels,
            [Level::Warm, Level::Hot, Level::Critical, Level::Hot]
        );
        // Rises happen on the step that crosses the threshold.
        assert_eq!(inputs[changes[0].0].temperature_c, Some(65.0));
        assert_eq!(inputs[changes[2].0].temperature_c, Some(80.0));
        // 75 °C (step 35) is the first observation that supports hot; the
        // drop comes 10 s later, at 65 °C.
        assert_eq!(changes[3].0, 35 + 10);
        // The ramp ended at 60 °C (step 50); staying there, each remaining
        // level waits out its own dwell: warm has been supported since 64 °C
        // (step 46), normal since the drop to warm.
        let t = |s: u64| t0 + Duration::from_secs(s);
        let rest: Vec<(u64, Level)> = (51..100)
            .filter_map(|s| p.evaluate(t(s), heat(60.0)).map(|tr| (s, tr.to)))
            .collect();
        assert_eq!(rest, [(56, Level::Warm), (67, Level::Normal)]);
        assert_eq!(p.multiplier(), 1.0);
    }

    #[test]
    fn one_degree_of_noise_around_a_threshold_does_not_flap() {
        for dwell in [0, 10_000] {
            let t0 = Instant::now();
            let mut p = PacingPolicy::new(&config(dwell), t0);
            // Around the warm threshold: rises once and stays.
            let noise: Vec<Inputs> = (0..200)
                .map(|i| heat(if i % 2 == 0 { 64.0 } else { 66.0 }))
                .collect();
            let changes = run(&mut p, t0, &noise);
            assert_eq!(changes.len(), 1, "dwell {dwell}: {changes:?}");
            assert_eq!(changes[0].1, Level::Warm);
            // Around the point where warm is left (60 °C): 59 °C leaves warm
            // (after the dwell) and 61 °C is far from warm's 65 °C: one
            // change, which sticks.
            let noise: Vec<Inputs> = (0..200)
                .map(|i| heat(if i % 2 == 0 { 59.0 } else { 61.0 }))
                .collect();
            let changes = run(&mut p, t0 + Duration::from_secs(200), &noise);
            let at = (dwell / 1000) as usize;
            assert_eq!(changes, [(at, Level::Normal, 1.0)], "dwell {dwell}");
        }
    }

    #[test]
    fn noise_wider_than_the_hysteresis_is_held_by_the_dwell() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(10_000), t0);
        // 58 / 71: crosses the whole warm band every second.
        let noise: Vec<Inputs> = (0..300)
            .map(|i| heat(if i % 2 == 0 { 71.0 } else { 58.0 }))
            .collect();
        let changes = run(&mut p, t0, &noise);
        assert_eq!(changes, vec![(0, Level::Warm, 1.5)]);
    }

    #[test]
    fn load_and_heat_combine_and_the_worse_wins() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(0), t0);
        // Warm by heat, hot by CPU: hot, because of the CPU.
        let tr = p.evaluate(t0, both(70.0, 85.0)).unwrap();
        assert_eq!(tr.to, Level::Hot);
        assert_eq!(tr.why.cause, Cause::Cpu);
        assert_eq!(tr.why.cpu_percent, Some(85.0));
        assert!(tr.why.summary.contains("CPU 85.0 %"), "{}", tr.why.summary);
        // Critical heat beats a calm CPU.
        let tr = p.evaluate(t0, both(81.0, 5.0)).unwrap();
        assert_eq!((tr.to, tr.why.cause), (Level::Critical, Cause::Temperature));
        // CPU alone tops out at hot, whatever the figure.
        let mut p = PacingPolicy::new(&config(0), t0);
        assert_eq!(p.evaluate(t0, both(40.0, 100.0)).unwrap().to, Level::Hot);
        // Equal levels: the temperature is named.
        let mut p = PacingPolicy::new(&config(0), t0);
        let tr = p.evaluate(t0, both(66.0, 55.0)).unwrap();
        assert_eq!((tr.to, tr.why.cause), (Level::Warm, Cause::Temperature));
        // Without a temperature source, load alone paces.
        let mut p = PacingPolicy::new(&config(0), t0);
        let only_cpu = Inputs {
            temperature_c: None,
            cpu_percent: Some(60.0),
        };
        assert_eq!(p.evaluate(t0, only_cpu).unwrap().to, Level::Warm);
        // CPU hysteresis: 10 %. Warm is left at 40 % or below.
        let cpu = |c| Inputs {
            temperature_c: None,
            cpu_percent: Some(c),
        };
        assert_eq!(p.evaluate(t0, cpu(45.0)), None);
        assert_eq!(p.evaluate(t0, cpu(40.0)).unwrap().to, Level::Normal);
    }

    /// Every combination of the two inputs' levels, reached by a rise from
    /// normal and by a drop from every higher level (set by either input):
    /// the cause is the input that supports the new level (the temperature
    /// when both do), whatever later observations in the dwell said.
    #[test]
    fn the_cause_is_the_input_that_set_the_level_for_every_combination() {
        // Figures that give each level from any held level (hysteresis).
        let temp = |l: Level| [40.0, 66.0, 75.0, 85.0][l.index()];
        let cpu = |l: Level| [10.0, 60.0, 90.0][l.index()];
        let cpu_levels = [Level::Normal, Level::Warm, Level::Hot];
        let expect = |tl: Level, cl: Level| {
            let level = tl.max(cl);
            let cause = if level == Level::Normal {
                Cause::Calm
            } else if tl >= level {
                Cause::Temperature
            } else {
                Cause::Cpu
            };
            (level, cause)
        };
        let check = |why: &Why, cause: Cause, case: &str| {
            assert_eq!(why.cause, cause, "{case}: {}", why.summary);
            let prefix = match cause {
                Cause::Temperature => "temperature ",
                Cause::Cpu => "CPU ",
                Cause::Calm => "temperature ",
            };
            assert!(why.summary.starts_with(prefix), "{case}: {}", why.summary);
        };
        let s = |t0: Instant, n: u64| t0 + Duration::from_secs(n);
        let mut cases = 0;
        for tl in Level::ALL {
            for cl in cpu_levels {
                let (level, cause) = expect(tl, cl);
                let obs = both(temp(tl), cpu(cl));
                // A rise from normal.
                let t0 = Instant::now();
                let mut p = PacingPolicy::new(&config(10_000), t0);
                let tr = p.evaluate(t0, obs);
                if level == Level::Normal {
                    assert_eq!(tr, None);
                } else {
                    let tr = tr.unwrap();
                    assert_eq!(tr.to, level, "rise to {tl}/{cl}");
                    check(&tr.why, cause, &format!("rise to {tl}/{cl}"));
                }
                cases += 1;
                // A drop from every higher level, set by heat or by the CPU;
                // the dwell ends on this observation or on a calm one.
                for from in Level::ALL.into_iter().filter(|f| *f > level) {
                    let setters = [
                        Some(both(temp(from), cpu(Level::Normal))),
                        (from <= Level::Hot).then(|| both(temp(Level::Normal), cpu(from))),
                    ];
                    for setter in setters.into_iter().flatten() {
                        for last in [obs, both(temp(Level::Normal), cpu(Level::Normal))] {
                            let case =
                                format!("{from} by {setter:?} to {tl}/{cl}, ending {last:?}");
                            let mut p = PacingPolicy::new(&config(10_000), t0);
                            assert_eq!(p.evaluate(t0, setter).unwrap().to, from, "{case}");
                            assert_eq!(p.evaluate(s(t0, 1), obs), None, "{case}");
                            let tr = p.evaluate(s(t0, 11), last).expect(&case);
                            assert_eq!((tr.from, tr.to), (from, level), "{case}");
                            check(&tr.why, cause, &case);
                            assert_eq!(p.why().cause, cause, "{case}");
                            cases += 1;
                        }
                    }
                }
            }
        }
        // 12 rises; 38 drops (each higher level, by each input that reaches it, two endings).
        assert_eq!(cases, 12 + 38);
    }

    #[test]
    fn a_drop_after_a_cpu_driven_hot_spell_names_the_cpu() {
        // The case from the field: hot by CPU, then the CPU settles at warm
        // and goes quiet while the temperature stays low.
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(10_000), t0);
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert_eq!(
            p.evaluate(t0, both(45.0, 95.0)).unwrap().why.cause,
            Cause::Cpu
        );
        assert_eq!(p.evaluate(s(1), both(45.0, 60.0)), None);
        assert_eq!(p.evaluate(s(5), both(45.0, 20.0)), None);
        let tr = p.evaluate(s(11), both(45.0, 20.0)).unwrap();
        assert_eq!((tr.to, tr.why.cause), (Level::Warm, Cause::Cpu));
        assert_eq!(tr.why.summary, "CPU 60.0 %, warm from 50.0 %");
    }

    #[test]
    fn a_drop_goes_only_as_far_as_every_observation_in_the_dwell_allowed() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(10_000), t0);
        p.evaluate(t0, heat(85.0)).unwrap();
        let s = |n: u64| t0 + Duration::from_secs(n);
        // Mostly cool, but one reading in the dwell still supported hot.
        assert_eq!(p.evaluate(s(1), heat(50.0)), None);
        assert_eq!(p.evaluate(s(5), heat(77.0)), None);
        assert_eq!(p.evaluate(s(9), heat(50.0)), None);
        let tr = p.evaluate(s(11), heat(50.0)).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Critical, Level::Hot));
        // Then a fresh dwell for the rest of the way.
        assert_eq!(p.evaluate(s(12), heat(50.0)), None);
        assert_eq!(p.evaluate(s(21), heat(50.0)), None);
        assert_eq!(p.evaluate(s(22), heat(50.0)).unwrap().to, Level::Normal);
    }

    #[test]
    fn a_return_to_the_current_level_resets_the_dwell() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(10_000), t0);
        p.evaluate(t0, heat(76.0)).unwrap();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert_eq!(p.evaluate(s(1), heat(60.0)), None);
        assert_eq!(p.evaluate(s(8), heat(76.0)), None);
        assert_eq!(p.evaluate(s(9), heat(60.0)), None);
        assert_eq!(
            p.evaluate(s(15), heat(60.0)),
            None,
            "dwell restarted at 9 s"
        );
        assert_eq!(p.evaluate(s(19), heat(60.0)).unwrap().to, Level::Normal);
    }

    #[test]
    fn missing_or_absurd_figures_count_as_absent() {
        let t0 = Instant::now();
        let mut p = PacingPolicy::new(&config(0), t0);
        assert_eq!(p.evaluate(t0, Inputs::default()), None);
        assert_eq!(p.evaluate(t0, heat(f64::NAN)), None);
        assert_eq!(p.level(), Level::Normal);
        p.evaluate(t0, heat(90.0)).unwrap();
        // The source vanished: no evidence of heat any more.
        assert_eq!(p.evaluate(t0, Inputs::default()).unwrap().to, Level::Normal);
    }

    #[test]
    fn input_levels_follow_thresholds_and_hysteresis() {
        let th = [65.0, 75.0, 80.0];
        assert_eq!(input_level(64.9, &th, 5.0, Level::Normal), Level::Normal);
        assert_eq!(input_level(79.0, &th, 5.0, Level::Normal), Level::Hot);
        assert_eq!(
            input_level(75.1, &th, 5.0, Level::Critical),
            Level::Critical
        );
        assert_eq!(input_level(75.0, &th, 5.0, Level::Critical), Level::Hot);
        assert_eq!(input_level(50.0, &th, 5.0, Level::Critical), Level::Normal);
        assert_eq!(input_level(65.0, &th, 0.0, Level::Warm), Level::Warm);
        // Two thresholds: never beyond hot.
        assert_eq!(
            input_level(99.0, &[50.0, 80.0], 10.0, Level::Critical),
            Level::Hot
        );
    }
}
