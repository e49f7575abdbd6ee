//! Unit tests of the pure logic: CSV validation, configuration parsing, change planning.

mod changes;
mod config;
mod csv_validation;
