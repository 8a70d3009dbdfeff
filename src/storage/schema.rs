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

diesel::allow_tables_to_appear_in_same_query!(series, readings);
