use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, Env};
use product_updater::Config;

fn invalid_variable(error: &ConfigError) -> &str {
    match error {
        ConfigError::Invalid { name, .. } | ConfigError::Missing { name, .. } => name,
    }
}

#[test]
fn every_variable_has_a_default() {
    let config = Config::from_env(&Env::default()).unwrap();
    assert_eq!(config.database_url, common::config::DEFAULT_DATABASE_URL);
    assert_eq!(config.products_csv, PathBuf::from("data/products.csv"));
    assert_eq!(config.updates_per_second, 2.0);
    assert_eq!(config.http_addr.to_string(), "127.0.0.1:9101");
    assert_eq!(config.seed_batch_rows, 500);
    assert_eq!(config.database_max_connections, 4);
    assert_eq!(config.database_retry_max, Duration::from_secs(10));
}

#[test]
fn variables_override_the_defaults() {
    let env = Env::from_pairs([
        ("DATABASE_URL", "mysql://app:pw@db:3306/shop"),
        ("PRODUCTS_CSV", "/seed/products.csv"),
        ("UPDATES_PER_SECOND", "0.5"),
        ("HTTP_ADDR", "0.0.0.0:8080"),
        ("SEED_BATCH_ROWS", "1000"),
        ("DATABASE_MAX_CONNECTIONS", "8"),
        ("DATABASE_RETRY_MAX_MS", "2500"),
    ]);
    let config = Config::from_env(&env).unwrap();
    assert_eq!(config.database_url, "mysql://app:pw@db:3306/shop");
    assert_eq!(config.products_csv, PathBuf::from("/seed/products.csv"));
    assert_eq!(config.updates_per_second, 0.5);
    assert_eq!(config.http_addr.port(), 8080);
    assert_eq!(config.seed_batch_rows, 1000);
    assert_eq!(config.database_max_connections, 8);
    assert_eq!(config.database_retry_max, Duration::from_millis(2500));
}

#[test]
fn zero_updates_per_second_means_seed_only() {
    let config = Config::from_env(&Env::from_pairs([("UPDATES_PER_SECOND", "0")])).unwrap();
    assert_eq!(config.updates_per_second, 0.0);
}

#[test]
fn a_bad_update_rate_names_the_variable_and_what_is_expected() {
    for value in ["fast", "-1", "NaN", "inf", "2000000"] {
        let error =
            Config::from_env(&Env::from_pairs([("UPDATES_PER_SECOND", value)])).unwrap_err();
        assert_eq!(invalid_variable(&error), "UPDATES_PER_SECOND", "{value}");
        let message = error.to_string();
        assert!(message.contains("UPDATES_PER_SECOND"), "{message}");
        assert!(message.contains(&format!("{value:?}")), "{message}");
        assert!(message.contains("changes per second"), "{message}");
    }
}

#[test]
fn other_bad_values_name_their_variable() {
    for (name, value) in [
        ("HTTP_ADDR", "localhost"),
        ("SEED_BATCH_ROWS", "0"),
        ("SEED_BATCH_ROWS", "20000"),
        ("DATABASE_MAX_CONNECTIONS", "0"),
        ("DATABASE_RETRY_MAX_MS", "soon"),
        ("DATABASE_RETRY_MAX_MS", "0"),
    ] {
        let error = Config::from_env(&Env::from_pairs([(name, value)])).unwrap_err();
        assert_eq!(invalid_variable(&error), name, "{name}={value}: {error}");
    }
}

#[test]
fn postgres_is_rejected_with_a_clear_message() {
    let env = Env::from_pairs([("DATABASE_URL", "postgres://app:secret@db/shop")]);
    let error = Config::from_env(&env).unwrap_err();
    assert_eq!(invalid_variable(&error), "DATABASE_URL");
    let message = error.to_string();
    assert!(message.contains("MySQL/MariaDB only"), "{message}");
    assert!(
        !message.contains("secret"),
        "the password must not be shown: {message}"
    );
}

#[test]
fn the_url_must_name_a_database() {
    for url in [
        "mysql://root@127.0.0.1:3306",
        "mysql://root@127.0.0.1:3306/",
    ] {
        let error = Config::from_env(&Env::from_pairs([("DATABASE_URL", url)])).unwrap_err();
        assert_eq!(invalid_variable(&error), "DATABASE_URL", "{url}");
    }
}

#[test]
fn mariadb_urls_are_accepted_as_mysql() {
    let env = Env::from_pairs([("DATABASE_URL", "mariadb://root@db:3306/shop")]);
    assert_eq!(
        Config::from_env(&env).unwrap().database_url,
        "mysql://root@db:3306/shop"
    );
}

#[test]
fn debug_output_hides_the_database_password() {
    let env = Env::from_pairs([("DATABASE_URL", "mysql://app:hunter2@db/shop")]);
    let shown = format!("{:?}", Config::from_env(&env).unwrap());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("mysql://app:***@db/shop"), "{shown}");
}
