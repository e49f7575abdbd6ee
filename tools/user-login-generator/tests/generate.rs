//! The generator against the test broker (tansu on `TEST_KAFKA_BOOTSTRAP`, default
//! `127.0.0.1:9092`; start it with `scripts/testbed.sh up`): it creates its topic, produces
//! exactly `GENERATOR_MAX_EVENTS` well-formed events keyed by `user_id`, and on SIGTERM stops
//! after its deliveries in flight. Each test uses its own topic.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::config::TopicConfig;
use common::CancellationToken;
use rdkafka::Message;
use user_login_generator::event::{APP_VERSIONS, DEVICE_TYPES, LOCALES};
use user_login_generator::{Config, UserLogin};

const BIN: &str = env!("CARGO_BIN_EXE_user-login-generator");

/// Fails the test at once, with the fix, when nothing listens on the test broker's address.
fn require_broker() -> String {
    let servers = testkit::kafka().bootstrap_servers;
    let first = servers
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let reachable = first
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok());
    assert!(
        reachable,
        "test broker at {first} is unreachable: start it with `scripts/testbed.sh up` \
         (or point TEST_KAFKA_BOOTSTRAP at a broker)"
    );
    servers
}

fn unique_topic() -> TopicConfig {
    TopicConfig {
        name: testkit::unique_name("ps_user_login"),
        partitions: 3,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reads `expected` records back and checks each is a well-formed event keyed by its `user_id`.
async fn read_events(topic: &TopicConfig, expected: usize, since: u64) -> Vec<UserLogin> {
    let records = testkit::read_topic(topic, expected, Duration::from_secs(30)).await;
    assert_eq!(records.len(), expected, "records on {}", topic.name);
    let until = now_secs();
    let mut events = Vec::new();
    for record in &records {
        let payload = record.payload().expect("record has a value");
        let json: serde_json::Value = serde_json::from_slice(payload).expect("value is JSON");
        let object = json.as_object().expect("value is a JSON object");
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "user_id",
                "app_version",
                "device_type",
                "ip",
                "locale",
                "device_id",
                "timestamp"
            ]),
            "{json}"
        );
        assert!(object.values().all(serde_json::Value::is_string), "{json}");
        let event: UserLogin = serde_json::from_value(json.clone()).expect("a user-login event");
        assert_eq!(testkit::key_text(record), event.user_id, "key == user_id");
        assert_eq!(event.user_id.len(), 36, "{json}");
        assert_eq!(&event.user_id[14..15], "4", "uuid v4: {json}");
        let timestamp: u64 = event.timestamp.parse().expect("timestamp is digits");
        assert!((since..=until).contains(&timestamp), "{json}");
        assert!(LOCALES.contains(&event.locale.as_str()), "{json}");
        assert!(DEVICE_TYPES.contains(&event.device_type.as_str()), "{json}");
        assert!(APP_VERSIONS.contains(&event.app_version.as_str()), "{json}");
        assert!(event.ip.parse::<std::net::Ipv4Addr>().is_ok(), "{json}");
        events.push(event);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_max_events_to_a_new_topic_then_stops() {
    require_broker();
    let topic = unique_topic();
    let config = Config {
        kafka: testkit::kafka(),
        topic: topic.clone(),
        replication_factor: 1,
        events_per_second: 100,
        max_events: Some(50),
    };
    let since = now_secs();
    let started = Instant::now();
    let summary = tokio::time::timeout(
        Duration::from_secs(90),
        user_login_generator::run(&config, CancellationToken::new()),
    )
    .await
    .expect("the generator stops by itself after GENERATOR_MAX_EVENTS")
    .expect("the generator runs without error");
    let elapsed = started.elapsed();
    assert_eq!(summary.acknowledged, 50);
    assert!(!summary.interrupted);
    // 50 events at 100/s: event 49 is due at 0.49 s.
    assert!(elapsed >= Duration::from_millis(480), "paced: {elapsed:?}");

    assert_eq!(
        common::kafka::partition_count(&testkit::kafka(), &topic.name)
            .await
            .expect("metadata"),
        Some(3),
        "the generator created the topic with GENERATOR_TOPIC_PARTITIONS"
    );
    let events = read_events(&topic, 50, since).await;
    let ids: BTreeSet<&str> = events.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(ids.len(), 50, "user ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_stops_on_sigterm_after_its_deliveries() {
    let servers = require_broker();
    let topic = unique_topic();
    let since = now_secs();
    let mut child = Command::new(BIN)
        .env("KAFKA_BOOTSTRAP_SERVERS", &servers)
        .env("KAFKA_SECURITY_PROTOCOL", "plaintext")
        .env("GENERATOR_TOPIC", &topic.name)
        .env("GENERATOR_TOPIC_PARTITIONS", "3")
        .env("GENERATOR_TOPIC_REPLICATION_FACTOR", "1")
        .env("EVENTS_PER_SECOND", "200")
        .env("GENERATOR_MAX_EVENTS", "0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the generator binary");

    // Let it create the topic and produce for a while.
    testkit::wait_until(Duration::from_secs(30), "the generator's topic", || async {
        common::kafka::partition_count(&testkit::kafka(), &topic.name)
            .await
            .ok()
            .flatten()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the generator") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the generator did not stop within 60 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");

    let stopped = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "stopped")
        .unwrap_or_else(|| panic!("no \"stopped\" log line; stderr:\n{stderr}"));
    assert_eq!(stopped["interrupted"], true, "{stopped}");
    let acknowledged = stopped["acknowledged"]
        .as_u64()
        .expect("acknowledged count");
    assert!(acknowledged > 0, "{stopped}");

    // Every acknowledged event is on the topic, and nothing else.
    read_events(&topic, usize::try_from(acknowledged).unwrap(), since).await;
}

#[test]
fn binary_rejects_a_bad_setting_naming_the_variable() {
    let output = Command::new(BIN)
        .env("EVENTS_PER_SECOND", "0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run the generator binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("user-login-generator:") && stderr.contains("EVENTS_PER_SECOND=\"0\""),
        "{stderr}"
    );
}
