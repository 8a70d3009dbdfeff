//! The process's logger: `env_logger` formatting behind a filter that a
//! reload can replace (`log.filter`), so turning on `vigil=debug` on a
//! running appliance needs no restart.
//!
//! `log` allows one logger per process, installed once; it forwards every
//! record to the `env_logger::Logger` currently in the slot, which
//! [`set_filter`] swaps for one built from the new filter.
//!
//! Errors the HTTP layer reports about what a client sent (a malformed
//! header, a connection cut mid-request: records of `actix_http`'s
//! dispatchers) are a client's to cause at will, before any rate limit
//! applies; they are logged at most once per [`PROTOCOL_LOG_INTERVAL`], as
//! warnings (the fault is the client's), saying how many were left out, so
//! a client cannot fill the log.

use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use log::{Log, Metadata, Record};

/// The installed logger, if [`init`] ran in this process.
static LOGGER: OnceLock<Reloadable> = OnceLock::new();

struct Reloadable {
    inner: RwLock<env_logger::Logger>,
    protocol: ProtocolErrors,
}

/// Client protocol errors are logged at most once per this interval.
pub const PROTOCOL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Is this record an HTTP protocol error a client caused?
fn is_protocol_error(metadata: &Metadata<'_>) -> bool {
    let t = metadata.target();
    metadata.level() <= log::Level::Warn
        && (t.starts_with("actix_http::h1::dispatcher")
            || t.starts_with("actix_http::h2::dispatcher"))
}

/// Thins out client protocol errors: one record per interval passes, with
/// the count of those left out before it.
struct ProtocolErrors {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl ProtocolErrors {
    fn new(interval: Duration) -> ProtocolErrors {
        ProtocolErrors {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether a record arriving at `now` is logged, and if so how many
    /// were left out since the last one logged.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, left_out) = &mut *st;
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            *left_out += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(left_out))
    }
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
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if !is_protocol_error(record.metadata()) || !inner.enabled(record.metadata()) {
            return inner.log(record);
        }
        let Some(left_out) = self.protocol.admit(Instant::now()) else {
            return;
        };
        inner.log(
            &Record::builder()
                .level(log::Level::Warn)
                .target(record.target())
                .args(format_args!(
                    "client protocol error: {} ({left_out} more left out before this one; \
                     at most one such line per {} s)",
                    record.args(),
                    self.protocol.interval.as_secs()
                ))
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
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
            protocol: ProtocolErrors::new(PROTOCOL_LOG_INTERVAL),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_pass_once_per_interval_with_a_count() {
        let p = ProtocolErrors::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(p.admit(t0), Some(0));
        for i in 1..500 {
            assert_eq!(p.admit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(p.admit(t0 + Duration::from_secs(60)), Some(499));
        assert_eq!(p.admit(t0 + Duration::from_secs(61)), None);
        assert_eq!(p.admit(t0 + Duration::from_secs(121)), Some(1));
    }

    #[test]
    fn only_the_dispatchers_warnings_and_errors_are_thinned() {
        let meta =
            |target: &'static str, level| Metadata::builder().target(target).level(level).build();
        assert!(is_protocol_error(&meta(
            "actix_http::h1::dispatcher",
            log::Level::Error
        )));
        assert!(is_protocol_error(&meta(
            "actix_http::h2::dispatcher",
            log::Level::Warn
        )));
        assert!(!is_protocol_error(&meta(
            "actix_http::h1::dispatcher",
            log::Level::Info
        )));
        assert!(!is_protocol_error(&meta("vigil::web", log::Level::Error)));
        assert!(!is_protocol_error(&meta(
            "actix_server::worker",
            log::Level::Error
        )));
    }
}
