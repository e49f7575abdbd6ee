-- Run once by the mysql image when it initialises its data directory (after it created
-- MYSQL_USER). The producer lists InnoDB's open transactions (SHOW ENGINE INNODB STATUS) to hold
-- its read horizon back to the oldest one; MySQL allows that only with the PROCESS privilege. Without it
-- the producer falls back to the CAPTURE_DELAY_MS window alone (and logs a warning).
GRANT PROCESS ON *.* TO 'productstream'@'%';
