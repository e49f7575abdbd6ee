//! A registry kept in a data file: restarts keep ids, versions and settings; bad files are refused.

use std::path::Path;

use dev_schema_registry::{router_with_store, Error};
use reqwest::StatusCode;
use serde_json::{json, Value};

const VND: &str = "application/vnd.schemaregistry.v1+json";

const PRODUCT_V2: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../schemas/product_value.avsc"
));

const PRODUCT_V1: &str = r#"{"namespace": "com.buyonline.product", "type": "record", "name": "Product",
  "fields": [
    {"name": "id", "type": "int"},
    {"name": "name", "type": "string"},
    {"name": "category", "type": ["null", "string"], "default": null},
    {"name": "price", "type": "double"},
    {"name": "last_updated", "type": "string"}
  ]}"#;

const OTHER: &str =
    r#"{"type": "record", "name": "Other", "fields": [{"name": "a", "type": "long"}]}"#;

async fn spawn(path: &Path) -> String {
    let router = router_with_store(Some(path.to_owned())).expect("registry starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, VND)
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    call(reqwest::Method::GET, format!("{base}{path}"), None).await
}

async fn register(base: &str, subject: &str, schema: &str) -> (StatusCode, Value) {
    call(
        reqwest::Method::POST,
        format!("{base}/subjects/{subject}/versions"),
        Some(json!({ "schema": schema })),
    )
    .await
}

#[tokio::test]
async fn a_restarted_registry_keeps_ids_versions_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("registry.json");

    let first = spawn(&path).await;
    assert!(path.exists(), "the data file is created at start");
    assert_eq!(
        register(&first, "product_updates-value", PRODUCT_V1)
            .await
            .1,
        json!({ "id": 1 })
    );
    assert_eq!(
        register(&first, "product_updates-value", PRODUCT_V2)
            .await
            .1,
        json!({ "id": 2 })
    );
    assert_eq!(
        register(&first, "deleted-value", OTHER).await.1,
        json!({ "id": 3 })
    );
    let put = call(
        reqwest::Method::PUT,
        format!("{first}/config/loose-value"),
        Some(json!({ "compatibility": "NONE" })),
    )
    .await;
    assert_eq!(put, (StatusCode::OK, json!({ "compatibility": "NONE" })));
    let deleted = call(
        reqwest::Method::DELETE,
        format!("{first}/subjects/deleted-value"),
        None,
    )
    .await;
    assert_eq!(deleted, (StatusCode::OK, json!([1])));

    // The file is plain JSON and no temporary file is left behind.
    let saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["schemas"].as_array().unwrap().len(), 3, "{saved}");
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("registry.json")]);

    let second = spawn(&path).await;
    assert_eq!(
        get(&second, "/subjects").await,
        (StatusCode::OK, json!(["product_updates-value"]))
    );
    assert_eq!(
        get(&second, "/subjects/product_updates-value/versions").await,
        (StatusCode::OK, json!([1, 2]))
    );
    assert_eq!(
        get(&second, "/subjects/product_updates-value/versions/latest")
            .await
            .1["id"],
        json!(2)
    );
    assert_eq!(
        get(&second, "/schemas/ids/1").await,
        (StatusCode::OK, json!({ "schema": PRODUCT_V1 }))
    );
    assert_eq!(
        get(&second, "/schemas/ids/3").await,
        (StatusCode::OK, json!({ "schema": OTHER })),
        "ids of deleted subjects stay resolvable"
    );
    assert_eq!(
        get(&second, "/config/loose-value").await.1["compatibilityLevel"],
        json!("NONE")
    );
    // Known schema: same id, no new version. New schema: the next id, not a reused one.
    assert_eq!(
        register(&second, "product_updates-value", PRODUCT_V1)
            .await
            .1,
        json!({ "id": 1 })
    );
    assert_eq!(
        get(&second, "/subjects/product_updates-value/versions")
            .await
            .1,
        json!([1, 2])
    );
    let price_as_text = PRODUCT_V1.replace(
        r#""price", "type": "double""#,
        r#""price", "type": "string""#,
    );
    assert_eq!(
        register(&second, "loose-value", &price_as_text).await.1,
        json!({ "id": 4 })
    );

    let third = spawn(&path).await;
    assert_eq!(
        get(&third, "/subjects/loose-value/versions/1").await.1["id"],
        json!(4)
    );
}

#[tokio::test]
async fn a_change_that_cannot_be_saved_is_refused_and_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let path = data_dir.join("registry.json");
    let base = spawn(&path).await;
    assert_eq!(
        register(&base, "s-value", PRODUCT_V1).await.1,
        json!({ "id": 1 })
    );

    std::fs::remove_dir_all(&data_dir).unwrap();
    let (status, body) = register(&base, "s-value", PRODUCT_V2).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error_code"], json!(50001), "{body}");
    assert_eq!(get(&base, "/subjects/s-value/versions").await.1, json!([1]));
    assert_eq!(
        get(&base, "/schemas/ids/2").await.1["error_code"],
        json!(40403)
    );

    // Once the directory is back, the same registration works and gets the id it would have had.
    std::fs::create_dir(&data_dir).unwrap();
    assert_eq!(
        register(&base, "s-value", PRODUCT_V2).await.1,
        json!({ "id": 2 })
    );
}

#[test]
fn unusable_data_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{ not json").unwrap();
    let err = router_with_store(Some(corrupt.clone())).unwrap_err();
    assert!(
        matches!(&err, Error::CorruptDataFile { path, .. } if *path == corrupt),
        "{err}"
    );
    assert!(err.to_string().contains("corrupt.json"), "{err}");

    let wrong_format = dir.path().join("wrong.json");
    std::fs::write(
        &wrong_format,
        r#"{"format": "something-else", "compatibility": null, "schemas": [], "subjects": {}}"#,
    )
    .unwrap();
    let err = router_with_store(Some(wrong_format)).unwrap_err();
    assert!(matches!(err, Error::CorruptDataFile { .. }), "{err}");

    let a_directory = dir.path().to_owned();
    let err = router_with_store(Some(a_directory)).unwrap_err();
    assert!(matches!(err, Error::ReadDataFile { .. }), "{err}");

    let under_a_file = dir.path().join("plain-file");
    std::fs::write(&under_a_file, "").unwrap();
    let err = router_with_store(Some(under_a_file.join("registry.json"))).unwrap_err();
    assert!(matches!(err, Error::ReadDataFile { .. }), "{err}");

    // A missing file is created at start; here the temporary file's name is taken by a directory.
    let unwritable = dir.path().join("unwritable");
    std::fs::create_dir_all(unwritable.join(".registry.json.tmp")).unwrap();
    let err = router_with_store(Some(unwritable.join("registry.json"))).unwrap_err();
    assert!(matches!(err, Error::WriteDataFile { .. }), "{err}");
    assert!(err.to_string().contains("registry.json"), "{err}");

    assert!(router_with_store(None).is_ok());
}
