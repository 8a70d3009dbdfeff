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

/// `2026-11-23T10:00:00.123Z` for an epoch-milliseconds timestamp.
pub fn rfc3339(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::from("invalid"),
    }
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
