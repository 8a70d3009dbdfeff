-- Sealed chunks: a series' readings of one UTC hour, compressed into one
-- BLOB (src/storage/chunk/codec.rs: pco columns and a checksum). Once an
-- hour has ended (and a grace period for late readings has passed), the
-- writer moves its rows from `readings` into one row here, in one
-- transaction; `readings` keeps only the hours not sealed yet. A reading
-- is in exactly one of the two tables. first_ts, last_ts and count
-- describe the blob so that counts and bounds need not decode it.
CREATE TABLE chunks (
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    first_ts  INTEGER NOT NULL,
    last_ts   INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (series_id, start_ts)
) WITHOUT ROWID;
