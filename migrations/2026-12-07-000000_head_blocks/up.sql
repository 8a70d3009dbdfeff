-- Head blocks: what each commit of live readings stores. A commit writes,
-- per series and hour its readings fall in, one row holding them as one
-- compressed blob (the chunk codec, src/storage/chunk/codec.rs), instead
-- of a row per reading: the rows of one commit sit together at the end of
-- this table, so a commit rewrites a page or two rather than a leaf of
-- `readings` per series (src/storage/chunk/blocks.rs). Sealing moves an
-- ended hour's blocks into `chunks`, adds their readings to the rollup
-- tiers (which do not hold them before) and deletes them, in one
-- transaction.
-- A reading is in exactly one of `readings`, `head_blocks` and `chunks`.
-- A rowid table: blobs of a few hundred bytes stay in its leaf pages, and
-- it holds only the hours not sealed yet, so reads scan it without an
-- index (which would cost a page per commit).
CREATE TABLE head_blocks (
    id        INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    first_ts  INTEGER NOT NULL,
    last_ts   INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    data      BLOB NOT NULL
);
