//! The registry over real HTTP, called the way Confluent clients call it.

use reqwest::StatusCode;
use serde_json::{json, Value};

const VND: &str = "application/vnd.schemaregistry.v1+json";

/// The product-catalog value schema as the repository ships it (6 fields).
const PRODUCT_V2: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../schemas/product_value.avsc"
));

/// The original prototype's 5-field value schema.
const PRODUCT_V1: &str = r#"{
  "namespace": "com.buyonline.product",
  "type": "record",
  "name": "Product",
  "fields": [
    {"name": "id", "type": "int"},
    {"name": "name", "type": "string"},
    {"name": "category", "type": ["null", "string"], "default": null},
    {"name": "price", "type": "double"},
    {"name": "last_updated", "type": "string"}
  ]
}"#;

/// The 5-field schema with one more field, required (no default): old data cannot be read.
const PRODUCT_WITH_REQUIRED_STOCK: &str = r#"{
  "namespace": "com.buyonline.product", "type": "record", "name": "Product",
  "fields": [
    {"name": "id", "type": "int"},
    {"name": "name", "type": "string"},
    {"name": "category", "type": ["null", "string"], "default": null},
    {"name": "price", "type": "double"},
    {"name": "last_updated", "type": "string"},
    {"name": "stock", "type": "int"}
  ]
}"#;

/// The 5-field schema with `price` as a string.
const PRODUCT_PRICE_AS_STRING: &str = r#"{
  "namespace": "com.buyonline.product", "type": "record", "name": "Product",
  "fields": [
    {"name": "id", "type": "int"},
    {"name": "name", "type": "string"},
    {"name": "category", "type": ["null", "string"], "default": null},
    {"name": "price", "type": "string"},
    {"name": "last_updated", "type": "string"}
  ]
}"#;

struct Registry {
    base: String,
    http: reqwest::Client,
}

async fn spawn(router: axum::Router) -> Registry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Registry {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    }
}

/// A response's status and JSON body; checks the registry content type on the way.
async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some(VND),
        "content type of a {status} answer"
    );
    let body = response.json().await.unwrap();
    (status, body)
}

impl Registry {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        answer(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, VND)
            .body(body.to_string());
        answer(request.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        answer(
            self.http
                .delete(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// `POST /subjects/{subject}/versions` as a Confluent serializer does it.
    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/subjects/{subject}/versions"),
            json!({ "schema": schema, "schemaType": "AVRO" }),
        )
        .await
    }

    async fn register_ok(&self, subject: &str, schema: &str) -> u64 {
        let (status, body) = self.register(subject, schema).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no id in {body}"))
    }
}

fn assert_error(answer: &(StatusCode, Value), status: StatusCode, error_code: u64) {
    let (actual_status, body) = answer;
    assert_eq!(*actual_status, status, "{body}");
    assert_eq!(body["error_code"], json!(error_code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
}

/// Whether two schema texts are the same Avro schema.
fn same_schema(a: &str, b: &str) -> bool {
    apache_avro::Schema::parse_str(a).unwrap() == apache_avro::Schema::parse_str(b).unwrap()
}

#[tokio::test]
async fn registers_reads_back_and_evolves_the_product_schema() {
    let registry = spawn(dev_schema_registry::router()).await;
    let subject = "product_updates-value";

    let v1_id = registry.register_ok(subject, PRODUCT_V1).await;
    assert_eq!(v1_id, 1);

    // Same schema, differently formatted: same id, no new version.
    let compact: Value = serde_json::from_str(PRODUCT_V1).unwrap();
    assert_eq!(
        registry.register_ok(subject, &compact.to_string()).await,
        v1_id
    );
    assert_eq!(
        registry.get(&format!("/subjects/{subject}/versions")).await,
        (StatusCode::OK, json!([1]))
    );

    // By id: the schema text as registered.
    let (status, body) = registry.get(&format!("/schemas/ids/{v1_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "schema": PRODUCT_V1 }));

    // Evolving to the repository's 6-field schema (new field has a default) is BACKWARD compatible.
    let (status, body) = registry
        .post(
            &format!("/compatibility/subjects/{subject}/versions/latest"),
            json!({ "schema": PRODUCT_V2 }),
        )
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "is_compatible": true }))
    );
    let v2_id = registry.register_ok(subject, PRODUCT_V2).await;
    assert_eq!(v2_id, 2);

    assert_eq!(
        registry.get(&format!("/subjects/{subject}/versions")).await,
        (StatusCode::OK, json!([1, 2]))
    );
    let (status, latest) = registry
        .get(&format!("/subjects/{subject}/versions/latest"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest["subject"], json!(subject));
    assert_eq!(latest["version"], json!(2));
    assert_eq!(latest["id"], json!(v2_id));
    assert!(same_schema(latest["schema"].as_str().unwrap(), PRODUCT_V2));
    let (_, first) = registry
        .get(&format!("/subjects/{subject}/versions/1"))
        .await;
    assert_eq!(
        first,
        json!({ "subject": subject, "version": 1, "id": v1_id, "schema": PRODUCT_V1 })
    );
    let (status, raw) = registry
        .get(&format!("/subjects/{subject}/versions/2/schema"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(raw, serde_json::from_str::<Value>(PRODUCT_V2).unwrap());

    // Lookup: registered under this subject?
    let (status, found) = registry
        .post(
            &format!("/subjects/{subject}"),
            json!({ "schema": PRODUCT_V1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({ "subject": subject, "version": 1, "id": v1_id, "schema": PRODUCT_V1 })
    );
    assert_error(
        &registry
            .post(
                &format!("/subjects/{subject}"),
                json!({ "schema": PRODUCT_PRICE_AS_STRING }),
            )
            .await,
        StatusCode::NOT_FOUND,
        40403,
    );

    // Same schema under another subject reuses the global id.
    assert_eq!(registry.register_ok("other-value", PRODUCT_V2).await, v2_id);
    assert_eq!(
        registry.get("/subjects/other-value/versions").await,
        (StatusCode::OK, json!([1]))
    );
    assert_eq!(
        registry.get("/subjects").await,
        (StatusCode::OK, json!(["other-value", subject]))
    );
    assert_eq!(
        registry
            .get(&format!("/schemas/ids/{v2_id}/versions"))
            .await,
        (
            StatusCode::OK,
            json!([{ "subject": "other-value", "version": 1 }, { "subject": subject, "version": 2 }])
        )
    );
    assert_eq!(
        registry
            .get(&format!("/schemas/ids/{v2_id}/subjects"))
            .await,
        (StatusCode::OK, json!(["other-value", subject]))
    );
}

#[tokio::test]
async fn incompatible_changes_are_refused_under_backward_until_the_check_is_off() {
    let registry = spawn(dev_schema_registry::router()).await;
    let subject = "strict-value";
    registry.register_ok(subject, PRODUCT_V1).await;
    assert_eq!(
        registry.get("/config").await,
        (
            StatusCode::OK,
            json!({ "compatibilityLevel": "BACKWARD", "compatibility": "BACKWARD" })
        )
    );

    for incompatible in [PRODUCT_WITH_REQUIRED_STOCK, PRODUCT_PRICE_AS_STRING] {
        let refused = registry.register(subject, incompatible).await;
        assert_error(&refused, StatusCode::CONFLICT, 409);
        let (status, body) = registry
            .post(
                &format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
                json!({ "schema": incompatible }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["is_compatible"], json!(false), "{body}");
        assert!(!body["messages"].as_array().unwrap().is_empty(), "{body}");
    }
    let (_, refused) = registry
        .register(subject, PRODUCT_WITH_REQUIRED_STOCK)
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("stock"),
        "{refused}"
    );
    let (_, refused) = registry.register(subject, PRODUCT_PRICE_AS_STRING).await;
    assert!(
        refused["message"].as_str().unwrap().contains("price"),
        "{refused}"
    );
    assert_eq!(
        registry.get(&format!("/subjects/{subject}/versions")).await,
        (StatusCode::OK, json!([1])),
        "refused schemas add no version"
    );

    // NONE for this subject only: the change is accepted; other subjects stay BACKWARD.
    assert_error(
        &registry.get(&format!("/config/{subject}")).await,
        StatusCode::NOT_FOUND,
        40408,
    );
    assert_eq!(
        registry
            .put(
                &format!("/config/{subject}"),
                json!({ "compatibility": "NONE" })
            )
            .await,
        (StatusCode::OK, json!({ "compatibility": "NONE" }))
    );
    assert_eq!(
        registry.get(&format!("/config/{subject}")).await.1["compatibilityLevel"],
        json!("NONE")
    );
    let id = registry.register_ok(subject, PRODUCT_PRICE_AS_STRING).await;
    assert_eq!(
        registry
            .get(&format!("/subjects/{subject}/versions/latest"))
            .await
            .1["id"],
        json!(id)
    );
    registry.register_ok("another-value", PRODUCT_V1).await;
    assert_error(
        &registry
            .register("another-value", PRODUCT_PRICE_AS_STRING)
            .await,
        StatusCode::CONFLICT,
        409,
    );

    // Back to the global level once the subject's own level is removed.
    assert_eq!(
        registry.delete(&format!("/config/{subject}")).await.1["compatibilityLevel"],
        json!("NONE")
    );
    assert_eq!(
        registry
            .get(&format!("/config/{subject}?defaultToGlobal=true"))
            .await
            .1["compatibilityLevel"],
        json!("BACKWARD")
    );
    assert_error(
        &registry.register(subject, PRODUCT_V2).await,
        StatusCode::CONFLICT,
        409,
    );
}

#[tokio::test]
async fn forward_and_full_levels_check_the_other_direction() {
    let registry = spawn(dev_schema_registry::router()).await;
    assert_eq!(
        registry
            .put("/config", json!({ "compatibility": "FULL" }))
            .await,
        (StatusCode::OK, json!({ "compatibility": "FULL" }))
    );
    registry.register_ok("full-value", PRODUCT_V1).await;
    // A new required field: old readers ignore it (forward ok) but it cannot read old data.
    assert_error(
        &registry
            .register("full-value", PRODUCT_WITH_REQUIRED_STOCK)
            .await,
        StatusCode::CONFLICT,
        409,
    );
    // An added field with a default is fine both ways.
    registry.register_ok("full-value", PRODUCT_V2).await;

    registry
        .put("/config", json!({ "compatibility": "FORWARD" }))
        .await;
    registry.register_ok("forward-value", PRODUCT_V1).await;
    registry
        .register_ok("forward-value", PRODUCT_WITH_REQUIRED_STOCK)
        .await;
    // Dropping the required field again: the previous version cannot read such data.
    assert_error(
        &registry.register("forward-value", PRODUCT_V2).await,
        StatusCode::CONFLICT,
        409,
    );

    assert_error(
        &registry
            .put("/config", json!({ "compatibility": "SOMETIMES" }))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42203,
    );
    assert_eq!(
        registry.get("/config").await.1["compatibilityLevel"],
        json!("FORWARD")
    );
}

#[tokio::test]
async fn unknown_things_and_bad_requests_get_confluent_error_codes() {
    let registry = spawn(dev_schema_registry::router()).await;
    registry.register_ok("known-value", PRODUCT_V1).await;

    assert_error(
        &registry.get("/subjects/nope/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        &registry.get("/subjects/nope/versions/latest").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        &registry.delete("/subjects/nope").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        &registry
            .post("/subjects/nope", json!({ "schema": PRODUCT_V1 }))
            .await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        &registry.get("/subjects/known-value/versions/7").await,
        StatusCode::NOT_FOUND,
        40402,
    );
    assert_error(
        &registry
            .post(
                "/compatibility/subjects/known-value/versions/7",
                json!({ "schema": PRODUCT_V2 }),
            )
            .await,
        StatusCode::NOT_FOUND,
        40402,
    );
    for bad_version in ["0", "abc", "-2"] {
        assert_error(
            &registry
                .get(&format!("/subjects/known-value/versions/{bad_version}"))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
        );
    }
    assert_error(
        &registry.get("/schemas/ids/99").await,
        StatusCode::NOT_FOUND,
        40403,
    );
    assert_error(
        &registry.get("/schemas/ids/x").await,
        StatusCode::NOT_FOUND,
        40403,
    );

    // Invalid schemas: not JSON, JSON but not Avro, another schema type.
    assert_error(
        &registry.register("known-value", "{not json").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    assert_error(
        &registry
            .register("known-value", r#"{"type": "record", "name": "P", "fields": [{"name": "a", "type": "nosuchtype"}]}"#)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );
    let protobuf = registry
        .post(
            "/subjects/known-value/versions",
            json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }),
        )
        .await;
    assert_error(&protobuf, StatusCode::UNPROCESSABLE_ENTITY, 42201);
    assert!(
        protobuf.1["message"].as_str().unwrap().contains("AVRO"),
        "{}",
        protobuf.1
    );
    assert_error(
        &registry
            .post("/subjects/known-value/versions", json!({}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        42201,
    );

    // Malformed bodies and content types.
    let malformed = registry
        .http
        .post(format!("{}/subjects/known-value/versions", registry.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{\"schema\":")
        .send()
        .await
        .unwrap();
    assert_error(&answer(malformed).await, StatusCode::BAD_REQUEST, 400);
    let wrong_type = registry
        .http
        .post(format!("{}/subjects/known-value/versions", registry.base))
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(json!({ "schema": PRODUCT_V1 }).to_string())
        .send()
        .await
        .unwrap();
    assert_error(
        &answer(wrong_type).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        415,
    );
    assert_error(
        &registry.get("/no/such/path").await,
        StatusCode::NOT_FOUND,
        404,
    );

    // Plain application/json (what many clients send) is accepted like the vnd type.
    let plain_json = registry
        .http
        .post(format!("{}/subjects/known-value/versions", registry.base))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(json!({ "schema": PRODUCT_V1 }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(plain_json).await,
        (StatusCode::OK, json!({ "id": 1 }))
    );
}

#[tokio::test]
async fn deleting_a_subject_hides_it_but_keeps_its_ids() {
    let registry = spawn(dev_schema_registry::router()).await;
    let v1 = registry.register_ok("gone-value", PRODUCT_V1).await;
    let v2 = registry.register_ok("gone-value", PRODUCT_V2).await;

    assert_eq!(
        registry.delete("/subjects/gone-value").await,
        (StatusCode::OK, json!([1, 2]))
    );
    assert_eq!(registry.get("/subjects").await, (StatusCode::OK, json!([])));
    assert_error(
        &registry.get("/subjects/gone-value/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_eq!(
        registry.get(&format!("/schemas/ids/{v1}")).await,
        (StatusCode::OK, json!({ "schema": PRODUCT_V1 }))
    );

    // Registering again: same global id, a version number never used before, no compatibility
    // check against the deleted versions.
    assert_eq!(registry.register_ok("gone-value", PRODUCT_V1).await, v1);
    assert_eq!(
        registry.get("/subjects/gone-value/versions").await,
        (StatusCode::OK, json!([3]))
    );
    assert_ne!(v1, v2);
}

#[tokio::test]
async fn readiness_endpoints_answer() {
    let registry = spawn(dev_schema_registry::router()).await;
    assert_eq!(registry.get("/").await, (StatusCode::OK, json!({})));
    assert_eq!(registry.get("/health").await.0, StatusCode::OK);
    assert_eq!(
        registry.get("/schemas/types").await,
        (StatusCode::OK, json!(["AVRO"]))
    );
    assert_eq!(registry.get("/subjects").await, (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn each_router_is_a_separate_registry() {
    let first = spawn(dev_schema_registry::router()).await;
    let second = spawn(dev_schema_registry::router()).await;
    assert_eq!(
        first.register_ok("a-value", PRODUCT_PRICE_AS_STRING).await,
        1
    );
    assert_eq!(first.register_ok("b-value", PRODUCT_V1).await, 2);
    assert_eq!(second.register_ok("b-value", PRODUCT_V1).await, 1);
    assert_error(
        &second.get("/subjects/a-value/versions").await,
        StatusCode::NOT_FOUND,
        40401,
    );
    assert_error(
        &second.get("/schemas/ids/2").await,
        StatusCode::NOT_FOUND,
        40403,
    );
}
