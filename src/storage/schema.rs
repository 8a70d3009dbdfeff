//! The diesel view of the tables created by `migrations/`.

diesel::table! {
    series (id) {
        id -> BigInt,
        sensor -> Text,
        metric -> Text,
        unit -> Text,
    }
}

diesel::table! {
    readings (series_id, ts) {
        series_id -> BigInt,
        ts -> BigInt,
        value -> Double,
    }
}

diesel::table! {
    /// Sealed hours of readings, one compressed blob each; see
    /// `storage::chunk`.
    chunks (series_id, start_ts) {
        series_id -> BigInt,
        start_ts -> BigInt,
        first_ts -> BigInt,
        last_ts -> BigInt,
        count -> BigInt,
        data -> Binary,
    }
}

diesel::table! {
    /// Readings of the hours not sealed yet, one compressed blob per
    /// series, hour and commit; see `storage::chunk::blocks`.
    head_blocks (id) {
        id -> BigInt,
        series_id -> BigInt,
        start_ts -> BigInt,
        first_ts -> BigInt,
        last_ts -> BigInt,
        count -> BigInt,
        data -> Binary,
    }
}

diesel::allow_tables_to_appear_in_same_query!(series, readings);

diesel::table! {
    rollup_minute (series_id, bucket) {
        series_id -> BigInt,
        bucket -> BigInt,
        count -> BigInt,
        min_value -> Double,
        max_value -> Double,
        sum_value -> Double,
        last_ts -> BigInt,
        last_value -> Double,
    }
}

diesel::table! {
    rollup_hour (series_id, bucket) {
        series_id -> BigInt,
        bucket -> BigInt,
        count -> BigInt,
        min_value -> Double,
        max_value -> Double,
        sum_value -> Double,
        last_ts -> BigInt,
        last_value -> Double,
    }
}

diesel::table! {
    rollup_day (series_id, bucket) {
        series_id -> BigInt,
        bucket -> BigInt,
        count -> BigInt,
        min_value -> Double,
        max_value -> Double,
        sum_value -> Double,
        last_ts -> BigInt,
        last_value -> Double,
    }
}

diesel::table! {
    /// Periods still open, of every tier (1 minute, 2 hour, 3 day); see
    /// `storage::rollup`.
    rollup_open (tier, bucket, series_id) {
        tier -> BigInt,
        bucket -> BigInt,
        series_id -> BigInt,
        count -> BigInt,
        min_value -> Double,
        max_value -> Double,
        sum_value -> Double,
        last_ts -> BigInt,
        last_value -> Double,
    }
}
