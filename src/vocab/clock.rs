//! Wall-clock time as vigil stores and shows it: integer milliseconds since
//! the Unix epoch, rendered as RFC 3339 in UTC.
//!
//! Readings carry wall-clock time because people read them against a
//! calendar; scheduling uses monotonic `tokio::time::Instant` instead.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The times an RFC 3339 text can name (years 0000 to 9999), in epoch
/// milliseconds: what a stored reading's time must lie in, so that every
/// API can print it.
pub const RFC3339_RANGE_MS: std::ops::RangeInclusive<i64> =
    -62_167_219_200_000..=253_402_300_799_999;

/// A configured span in milliseconds as a signed one, saturating: a huge
/// value means "never" rather than wrapping to a negative span.
pub fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The epoch-milliseconds time `d` after `now`, saturating.
pub fn ms_after(now: i64, d: std::time::Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-11-23T10:00:00.123Z` for an epoch-milliseconds timestamp; a time
/// beyond the years 0000 to 9999 is written as the nearest of those ends,
/// so the text is always RFC 3339.
pub fn rfc3339(ms: i64) -> String {
    let ms = ms.clamp(*RFC3339_RANGE_MS.start(), *RFC3339_RANGE_MS.end());
    let mut buf = [0; RFC3339_LEN];
    if let Some(text) = format_rfc3339(ms, &mut buf) {
        return text.to_owned();
    }
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::from("invalid"),
    }
}

/// The appliance's own time zone, for views that show its local time: the
/// IANA name when the host says it (`TZ`, `/etc/timezone`, or the target of
/// `/etc/localtime`), and the current offset from UTC in minutes.
pub fn local_zone() -> (Option<String>, i32) {
    let offset = chrono::Local::now().offset().local_minus_utc() / 60;
    let named = |s: &str| {
        let s = s.trim().trim_start_matches(':');
        (!s.is_empty() && !s.starts_with('/') && !s.contains(' ')).then(|| s.to_owned())
    };
    let name = std::env::var("TZ")
        .ok()
        .and_then(|v| named(&v))
        .or_else(|| {
            std::fs::read_to_string("/etc/timezone")
                .ok()
                .and_then(|v| named(&v))
        })
        .or_else(|| {
            let target = std::fs::read_link("/etc/localtime").ok()?;
            let text = target.to_string_lossy().into_owned();
            let (_, zone) = text.split_once("zoneinfo/")?;
            named(zone)
        });
    (name, offset)
}

/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const RFC3339_LEN: usize = 24;

/// Writes [`rfc3339`]'s text into `buf` without allocating, for years 0
/// to 9999 (`None` outside them). Readings pages render a timestamp per
/// row, so this is on the hot path of `GET /api/readings`; the calendar
/// arithmetic is the proleptic Gregorian "days to civil" conversion.
pub fn format_rfc3339(ms: i64, buf: &mut [u8; RFC3339_LEN]) -> Option<&str> {
    const DAY_MS: i64 = 86_400_000;
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    // Days since 0000-03-01, in 400-year eras of 146,097 days.
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let fields = [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, in_day / 3_600_000),
        (14, 2, in_day / 60_000 % 60),
        (17, 2, in_day / 1_000 % 60),
        (20, 3, in_day % 1_000),
    ];
    *buf = *b"0000-00-00T00:00:00.000Z";
    for (at, width, value) in fields {
        let mut v = value;
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    std::str::from_utf8(buf).ok()
}

/// Parses either an RFC 3339 timestamp or an integer of epoch milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_rfc3339_are_written_as_its_ends() {
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(ms_i64(u64::MAX), i64::MAX);
        assert_eq!(ms_i64(5), 5);
        assert_eq!(ms_after(10, std::time::Duration::MAX), i64::MAX);
        assert_eq!(ms_after(10, std::time::Duration::from_millis(5)), 15);
    }

    /// The fast formatter against chrono, at the edges of days, months,
    /// leap years, centuries and the supported range, and at random.
    #[test]
    fn fast_rfc3339_matches_chrono() {
        let chrono_text = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        let first = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
        let last = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
        let mut cases = vec![first, last, 0, -1, 1, 951_782_400_000, 4_107_542_400_000];
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..200_000 {
            cases.push(rng.i64(first..=last));
        }
        for day in (first / 86_400_000 + 1..=last / 86_400_000).step_by(97) {
            cases.push(day * 86_400_000);
            cases.push(day * 86_400_000 - 1);
        }
        let mut buf = [0; RFC3339_LEN];
        for ms in cases {
            assert_eq!(
                format_rfc3339(ms, &mut buf),
                Some(&*chrono_text(ms)),
                "{ms}"
            );
        }
        assert_eq!(format_rfc3339(first - 1, &mut buf), None);
        assert_eq!(format_rfc3339(last + 1, &mut buf), None);
        assert_eq!(format_rfc3339(i64::MIN, &mut buf), None);
        assert_eq!(format_rfc3339(i64::MAX, &mut buf), None);
        assert_eq!(rfc3339(last + 1), chrono_text(last), "clamped to the range");
    }

    #[test]
    fn round_trips_rfc3339_and_epoch_ms() {
        let ms = 1_795_000_000_123;
        let text = rfc3339(ms);
        assert!(text.ends_with(".123Z"), "{text}");
        assert_eq!(parse_time(&text), Some(ms));
        assert_eq!(parse_time("1795000000123"), Some(ms));
        assert_eq!(
            parse_time("2026-11-23T10:00:00+01:00"),
            parse_time("2026-11-23T09:00:00Z")
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
