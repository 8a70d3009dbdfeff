DROP TABLE readings;
DROP TABLE series;
