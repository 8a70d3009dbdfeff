//! The benchmarks behind `vigil-bench <what>` (feature `bench`), so that every
//! figure in `docs/BENCHMARKS.md` can be reproduced with one command on the
//! machine in question. Each benchmark builds its own data in a temporary
//! directory and reports medians over several runs.

pub mod appliance;
pub mod fanout;
pub mod flood;
pub mod footprint;
pub mod http;
pub mod ingest;
pub mod load;
pub mod mqtt;
pub mod query;
pub mod rawsqlite;
pub mod restart;
pub mod retention;
pub mod schema;
pub mod series;
pub mod startup;
pub mod wsclient;

use std::time::Duration;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("WebSocket: {0}")]
    Ws(#[from] wsclient::WsError),
    #[error("{0}")]
    Setup(String),
}

/// Seals every hour of every series in the database that ended by
/// `before`, as the writer's passes leave an appliance's history; the
/// number of chunks written.
pub fn seal_all(
    conn: &mut diesel::SqliteConnection,
    before: i64,
) -> Result<u64, crate::storage::StorageError> {
    use diesel::prelude::*;
    let ids: Vec<i64> = crate::storage::schema::series::table
        .select(crate::storage::schema::series::id)
        .load(conn)?;
    let mut chunks = 0;
    for id in ids {
        let mut from = i64::MIN;
        while let Some(s) = crate::storage::chunk::seal_oldest(conn, id, from, before)? {
            from = s.start_ts + crate::storage::chunk::PERIOD_MS;
            chunks += u64::from(s.damaged.is_none());
        }
    }
    Ok(chunks)
}

/// The median of some durations (sorts them).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// The `p`-th percentile (0-100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of plain numbers.
pub fn median_f64(samples: &mut [f64]) -> f64 {
    samples.sort_unstable_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let ms = Duration::from_millis;
        let mut v = vec![ms(5), ms(1), ms(3)];
        assert_eq!(median(&mut v), ms(3));
        let sorted: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), ms(50));
        assert_eq!(percentile(&sorted, 99.0), ms(99));
        assert_eq!(percentile(&sorted, 100.0), ms(100));
        assert_eq!(median_f64(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
