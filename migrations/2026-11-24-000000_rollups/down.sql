DROP TABLE rollup_day;
DROP TABLE rollup_hour;
DROP TABLE rollup_minute;
