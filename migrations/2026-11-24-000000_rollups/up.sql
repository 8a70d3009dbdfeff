-- Rollups: per series and period, the count, minimum, maximum and sum of the
-- readings, and the latest reading with its timestamp. Periods are UTC
-- minutes, hours and days; `bucket` is the period's start in epoch
-- milliseconds. The writer merges each committed batch into these tables in
-- the same transaction (see src/storage/rollup.rs), so they never need to be
-- recomputed from raw readings, which retention deletes long before.
CREATE TABLE rollup_minute (
    series_id  INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    min_value  REAL NOT NULL,
    max_value  REAL NOT NULL,
    sum_value  REAL NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_value REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;

CREATE TABLE rollup_hour (
    series_id  INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    min_value  REAL NOT NULL,
    max_value  REAL NOT NULL,
    sum_value  REAL NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_value REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;

CREATE TABLE rollup_day (
    series_id  INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    min_value  REAL NOT NULL,
    max_value  REAL NOT NULL,
    sum_value  REAL NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_value REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;

-- Readings stored before this migration get their rollups once, here.
-- The floor of ts to a period is written so that it also holds for
-- timestamps before 1970.
INSERT INTO rollup_minute
SELECT series_id, ts - ((ts % 60000) + 60000) % 60000 AS b,
       count(*), min(value), max(value), sum(value), max(ts), 0
FROM readings GROUP BY series_id, b;

INSERT INTO rollup_hour
SELECT series_id, bucket - ((bucket % 3600000) + 3600000) % 3600000 AS b,
       sum(count), min(min_value), max(max_value), sum(sum_value), max(last_ts), 0
FROM rollup_minute GROUP BY series_id, b;

INSERT INTO rollup_day
SELECT series_id, bucket - ((bucket % 86400000) + 86400000) % 86400000 AS b,
       sum(count), min(min_value), max(max_value), sum(sum_value), max(last_ts), 0
FROM rollup_hour GROUP BY series_id, b;

UPDATE rollup_minute SET last_value = (SELECT value FROM readings r
    WHERE r.series_id = rollup_minute.series_id AND r.ts = rollup_minute.last_ts);
UPDATE rollup_hour SET last_value = (SELECT value FROM readings r
    WHERE r.series_id = rollup_hour.series_id AND r.ts = rollup_hour.last_ts);
UPDATE rollup_day SET last_value = (SELECT value FROM readings r
    WHERE r.series_id = rollup_day.series_id AND r.ts = rollup_day.last_ts);
