//! Integration tests: a real product-updater against a fresh MariaDB database per test, over real
//! HTTP. Needs the test bed (`scripts/testbed.sh up`, or just MariaDB on 127.0.0.1:3306).

mod changes;
mod health;
mod helpers;
mod secrets;
mod seeding;
