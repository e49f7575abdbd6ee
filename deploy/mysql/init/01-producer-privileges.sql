-- Run once by the mysql image when it initialises its data directory (after it created
-- MYSQL_USER). The producer reads information_schema.INNODB_TRX to hold its read horizon back to
-- the oldest open transaction; MySQL shows that table only with the PROCESS privilege. Without it
-- the producer falls back to the CAPTURE_DELAY_MS window alone (and logs a warning).
GRANT PROCESS ON *.* TO 'productstream'@'%';
