-- One row per (sensor, metric): what a value is and its unit. Readings refer
-- to it by a small integer so that each stored reading stays a few bytes.
CREATE TABLE series (
    id     INTEGER PRIMARY KEY,
    sensor TEXT NOT NULL,
    metric TEXT NOT NULL,
    unit   TEXT NOT NULL DEFAULT '',
    UNIQUE (sensor, metric)
);

-- Raw readings, clustered on (series_id, ts): a series' readings sit
-- together in time order, so "latest N" and range scans read consecutive
-- pages and no separate index is kept. ts is epoch milliseconds.
CREATE TABLE readings (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
