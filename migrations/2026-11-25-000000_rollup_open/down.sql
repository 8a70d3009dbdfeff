-- Fold the open periods into the tier tables before dropping them.
INSERT INTO rollup_minute (series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value)
SELECT series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value
FROM rollup_open WHERE tier = 1
ON CONFLICT (series_id, bucket) DO UPDATE SET
    count = count + excluded.count,
    min_value = min(min_value, excluded.min_value),
    max_value = max(max_value, excluded.max_value),
    sum_value = sum_value + excluded.sum_value,
    last_value = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last_value ELSE last_value END,
    last_ts = max(last_ts, excluded.last_ts);
INSERT INTO rollup_hour (series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value)
SELECT series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value
FROM rollup_open WHERE tier = 2
ON CONFLICT (series_id, bucket) DO UPDATE SET
    count = count + excluded.count,
    min_value = min(min_value, excluded.min_value),
    max_value = max(max_value, excluded.max_value),
    sum_value = sum_value + excluded.sum_value,
    last_value = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last_value ELSE last_value END,
    last_ts = max(last_ts, excluded.last_ts);
INSERT INTO rollup_day (series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value)
SELECT series_id, bucket, count, min_value, max_value, sum_value, last_ts, last_value
FROM rollup_open WHERE tier = 3
ON CONFLICT (series_id, bucket) DO UPDATE SET
    count = count + excluded.count,
    min_value = min(min_value, excluded.min_value),
    max_value = max(max_value, excluded.max_value),
    sum_value = sum_value + excluded.sum_value,
    last_value = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last_value ELSE last_value END,
    last_ts = max(last_ts, excluded.last_ts);
DROP TABLE rollup_open;
