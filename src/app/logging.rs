//! The process's logger: `env_logger` formatting behind a filter that a
//! reload can replace (`log.filter`), so turning on `vigil=debug` on a
//! running appliance needs no restart.
//!
//! `log` allows one logger per process, installed once; it forwards every
//! record to the `env_logger::Logger` currently in the slot, which
//! [`set_filter`] swaps for one built from the new filter.

use std::sync::{OnceLock, RwLock};

use log::{Log, Metadata, Record};

/// The installed logger, if [`init`] ran in this process.
static LOGGER: OnceLock<Reloadable> = OnceLock::new();

struct Reloadable {
    inner: RwLock<env_logger::Logger>,
}

fn build(filter: &str) -> env_logger::Logger {
    env_logger::Builder::new()
        .parse_filters(filter)
        .format_timestamp_millis()
        .build()
}

impl Log for Reloadable {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .log(record)
    }

    fn flush(&self) {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// Installs the logger with `filter` (an `env_logger` filter such as
/// `info` or `vigil=debug,actix_web=warn`). A second call only changes the
/// filter.
pub fn init(filter: &str) {
    let mut installed_now = false;
    let logger = LOGGER.get_or_init(|| {
        installed_now = true;
        Reloadable {
            inner: RwLock::new(build(filter)),
        }
    });
    if installed_now {
        if log::set_logger(logger).is_ok() {
            log::set_max_level(logger.max_level());
        }
    } else {
        set_filter(filter);
    }
}

impl Reloadable {
    fn max_level(&self) -> log::LevelFilter {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .filter()
    }
}

/// Replaces the filter of the installed logger. Without [`init`] (a test
/// harness, an embedding program with its own logger) there is nothing to
/// change and this returns false.
pub fn set_filter(filter: &str) -> bool {
    let Some(logger) = LOGGER.get() else {
        return false;
    };
    *logger.inner.write().unwrap_or_else(|p| p.into_inner()) = build(filter);
    log::set_max_level(logger.max_level());
    true
}
