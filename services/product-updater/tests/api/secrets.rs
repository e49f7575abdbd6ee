//! No configured secret appears in any log line or HTTP answer of the real binary: the password
//! of `DATABASE_URL` (with an unencoded `@`) and a `password` query parameter, also when the
//! server refuses them and the start is retried, or when the value is refused at start.

use std::process::Command;
use std::time::Duration;

use testkit::{assert_no_secret, mysql_server_url, run_and_collect, unique_name};

use crate::helpers::repository_csv;

#[tokio::test]
async fn database_passwords_never_reach_logs_or_endpoints() {
    let server = mysql_server_url();
    let host = server.trim_start_matches("mysql://root@");
    let url = format!(
        "mysql://root:p@ss@Unencoded9@{host}/{}?password=Param9Secret",
        unique_name("ps_secret")
    );
    let port = testkit::free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_product-updater"));
    command
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("PRODUCTS_CSV", repository_csv())
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_RETRY_MAX_MS", "500")
        .env("RUST_LOG", "debug");
    let text = run_and_collect(
        command,
        port,
        &["/health", "/ready", "/metrics"],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        text.contains("database unreachable, retrying"),
        "the refused password is retried and logged:\n{text}"
    );
    assert_no_secret(&text, &["Unencoded9", "ss@Unencoded9", "Param9Secret"]);
}

#[test]
fn a_refused_database_url_does_not_show_its_password() {
    let output = Command::new(env!("CARGO_BIN_EXE_product-updater"))
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgres://u:Pg9Secret@h/db?password=Pg9Param",
        )
        .env("PRODUCTS_CSV", repository_csv())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert_no_secret(&text, &["Pg9Secret", "Pg9Param"]);
}
