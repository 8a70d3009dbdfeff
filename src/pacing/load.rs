//! What the load monitor samples: CPU usage, load average per core, memory
//! available and the process's own RSS, behind the [`LoadSource`] trait so
//! that tests (and demos) can drive pacing with figures of their choosing
//! ([`ManualLoad`]). [`SysinfoLoad`] is the real source.
//!
//! Blocking: CPU usage is the difference between two refreshes at least
//! [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] apart, so the first sample of a
//! fresh source sleeps that long (on the blocking pool, never an actor).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Why a load sample could not be taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// This host does not expose the figures (an unsupported platform).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Reading them failed this time.
    #[error("failed: {0}")]
    Failed(String),
}

/// One sample of the host's load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct LoadSample {
    /// CPU usage over all cores since the previous sample, 0-100 %.
    pub cpu_percent: f64,
    /// Logical CPUs.
    pub cores: usize,
    pub load1: Option<f64>,
    pub load5: Option<f64>,
    pub load15: Option<f64>,
    /// `load1 / cores`: above 1 means runnable work is waiting.
    pub load1_per_core: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// Resident memory of the vigil process itself.
    pub process_rss_bytes: Option<u64>,
}

/// A source of load samples. `sample` may block; it runs on the blocking pool.
pub trait LoadSource: Send + 'static {
    fn sample(&mut self) -> Result<LoadSample, LoadError>;
}

/// Makes a fresh source for every generation of the load monitor.
pub type LoadSourceFactory = Arc<dyn Fn() -> Box<dyn LoadSource> + Send + Sync>;

/// The host's real figures, through sysinfo.
#[derive(Default)]
pub struct SysinfoLoad {
    system: Option<System>,
    pid: Option<Pid>,
    last_cpu_refresh: Option<std::time::Instant>,
}

impl SysinfoLoad {
    pub fn new() -> SysinfoLoad {
        SysinfoLoad::default()
    }

    /// A factory of real sources, for the appliance.
    pub fn factory() -> LoadSourceFactory {
        Arc::new(|| Box::new(SysinfoLoad::new()) as Box<dyn LoadSource>)
    }
}

impl LoadSource for SysinfoLoad {
    fn sample(&mut self) -> Result<LoadSample, LoadError> {
        if self.system.is_none() {
            let mut system = System::new()
                .map_err(|e| LoadError::Unavailable(format!("sysinfo unsupported here: {e}")))?;
            system.refresh_cpu_usage();
            self.last_cpu_refresh = Some(std::time::Instant::now());
            self.pid = sysinfo::get_current_pid().ok();
            self.system = Some(system);
        }
        let Some(system) = self.system.as_mut() else {
            return Err(LoadError::Failed("no system handle".into()));
        };
        if let Some(last) = self.last_cpu_refresh {
            let since = last.elapsed();
            if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
                std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
            }
        }
        system.refresh_cpu_usage();
        self.last_cpu_refresh = Some(std::time::Instant::now());
        system.refresh_memory();

        let cpu = f64::from(system.global_cpu_usage());
        if !cpu.is_finite() {
            return Err(LoadError::Failed(format!("CPU usage came out as {cpu}")));
        }
        let cores = match system.cpus().len() {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let load = System::load_average().ok();
        let total = system.total_memory();
        let process_rss_bytes = self.pid.and_then(|pid| {
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_memory(),
            );
            system.process(pid).map(|p| p.memory())
        });
        Ok(LoadSample {
            cpu_percent: cpu.clamp(0.0, 100.0),
            cores,
            load1: load.as_ref().map(|l| l.one),
            load5: load.as_ref().map(|l| l.five),
            load15: load.as_ref().map(|l| l.fifteen),
            load1_per_core: load.as_ref().map(|l| l.one / cores as f64),
            memory_total_bytes: (total > 0).then_some(total),
            memory_available_bytes: (total > 0).then(|| system.available_memory()),
            process_rss_bytes,
        })
    }
}

/// A load source whose figures are set by hand: every clone shares them.
/// For tests and demonstrations of pacing.
#[derive(Clone)]
pub struct ManualLoad(Arc<Mutex<Result<LoadSample, LoadError>>>);

impl ManualLoad {
    /// A source reporting `cpu_percent` on 1 core, nothing else.
    pub fn new(cpu_percent: f64) -> ManualLoad {
        let m = ManualLoad(Arc::new(Mutex::new(Err(LoadError::Failed(String::new())))));
        m.set_cpu(cpu_percent);
        m
    }

    pub fn set(&self, sample: Result<LoadSample, LoadError>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = sample;
    }

    pub fn set_cpu(&self, cpu_percent: f64) {
        self.set(Ok(LoadSample {
            cpu_percent,
            cores: 1,
            ..LoadSample::default()
        }));
    }

    /// A factory handing out clones of this source.
    pub fn factory(&self) -> LoadSourceFactory {
        let me = self.clone();
        Arc::new(move || Box::new(me.clone()) as Box<dyn LoadSource>)
    }
}

impl LoadSource for ManualLoad {
    fn sample(&mut self) -> Result<LoadSample, LoadError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_host() {
        let mut source = SysinfoLoad::new();
        for _ in 0..2 {
            let s = source.sample().unwrap();
            assert!((0.0..=100.0).contains(&s.cpu_percent), "{s:?}");
            assert!(s.cores >= 1);
            assert!(s.memory_total_bytes.unwrap() >= s.memory_available_bytes.unwrap());
            assert!(s.process_rss_bytes.unwrap() > 0, "{s:?}");
            let per_core = s.load1_per_core.unwrap();
            assert!(per_core.is_finite() && per_core >= 0.0);
        }
    }

    #[test]
    fn a_manual_source_reports_what_it_is_given() {
        let m = ManualLoad::new(42.0);
        let mut from_factory = (m.factory())();
        assert_eq!(from_factory.sample().unwrap().cpu_percent, 42.0);
        m.set(Err(LoadError::Unavailable("no /proc".into())));
        assert!(matches!(
            from_factory.sample(),
            Err(LoadError::Unavailable(_))
        ));
    }
}
