-- Open rollup buckets: the writer merges every committed batch into this
-- one small table, keyed so that the current period of every series and
-- tier sits together in one page, and moves finished periods into
-- rollup_minute / rollup_hour / rollup_day only now and then (see
-- src/storage/rollup.rs). A commit then rewrites one rollup page instead of
-- a leaf of each tier table per series: less SD-card wear per reading.
-- A period's aggregate is the merge of its row in the tier table and its
-- row here, whichever exist. tier: 1 minute, 2 hour, 3 day.
CREATE TABLE rollup_open (
    tier       INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    series_id  INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    min_value  REAL NOT NULL,
    max_value  REAL NOT NULL,
    sum_value  REAL NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_value REAL NOT NULL,
    PRIMARY KEY (tier, bucket, series_id)
) WITHOUT ROWID;
