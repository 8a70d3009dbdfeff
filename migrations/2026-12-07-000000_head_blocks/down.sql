-- Back to rows and chunks only. SQL cannot decode a block, so this refuses
-- (with the CHECK constraint's name as the message) while any block holds
-- readings, rather than drop them; a sealing pass empties the table of
-- every ended hour.
CREATE TEMP TABLE refuse_down (head_blocks_hold_readings INTEGER CHECK (head_blocks_hold_readings = 0));
INSERT INTO refuse_down SELECT count(*) FROM head_blocks;
DROP TABLE refuse_down;
DROP TABLE head_blocks;
