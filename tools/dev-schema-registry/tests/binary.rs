//! The `dev-schema-registry` binary: configuration errors, serving, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BINARY: &str = env!("CARGO_BIN_EXE_dev-schema-registry");

#[test]
fn bad_environment_fails_naming_the_variable() {
    for (name, value) in [("REGISTRY_ADDR", "localhost"), ("REGISTRY_DATA_FILE", "")] {
        let output = Command::new(BINARY)
            .env_remove("REGISTRY_ADDR")
            .env_remove("REGISTRY_DATA_FILE")
            .env(name, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}={value:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
}

#[test]
fn serves_until_sigterm_and_keeps_its_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_file = dir.path().join("registry.json");
    let mut child = Command::new(BINARY)
        .env("REGISTRY_ADDR", "127.0.0.1:0")
        .env("REGISTRY_DATA_FILE", &data_file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();

    // The start-up line carries the bound address: `... listening ... addr=127.0.0.1:PORT ...`.
    let addr = logs
        .by_ref()
        .map(|line| line.unwrap())
        .find_map(|line| {
            let rest = line.split("addr=").nth(1)?;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .expect("a log line with the listening address");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/subjects/bin-value/versions"))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(serde_json::json!({ "schema": "\"string\"" }).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(body, serde_json::json!({ "id": 1 }));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let rest: Vec<String> = logs.map(|line| line.unwrap()).collect();
    assert!(
        rest.iter().any(|line| line.contains("SIGTERM")),
        "shutdown not logged: {rest:?}"
    );

    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&data_file).unwrap()).unwrap();
    assert_eq!(
        saved["subjects"]["bin-value"]["versions"][0]["id"],
        serde_json::json!(1)
    );
}
