-- Back to rows only. SQL cannot decode a chunk, so this refuses (with the
-- CHECK constraint's name as the message) while any chunk holds readings,
-- rather than drop them.
CREATE TEMP TABLE refuse_down (chunks_hold_readings INTEGER CHECK (chunks_hold_readings = 0));
INSERT INTO refuse_down SELECT count(*) FROM chunks;
DROP TABLE refuse_down;
DROP TABLE chunks;
