//! For diagnosis only (the verdict never uses it): what the topic holds, to tell a version that
//! was never produced (capture) from one produced but not logged (consumers), and a version
//! produced twice (producer) from one logged twice (consumers).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::kafka::KafkaConfig;
use common::registry::{RegistryClient, RegistryConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Every `(id, last_updated_micros)` version in the topic, with the `(partition, offset)` of each
/// copy; plus how many records could not be decoded.
#[derive(Debug, Default)]
pub struct TopicContents {
    pub versions: HashMap<(i64, i64), Vec<(i32, i64)>>,
    pub records: usize,
    pub undecodable: usize,
}

impl TopicContents {
    pub fn describe(&self, id: i64, micros: i64) -> String {
        match self.versions.get(&(id, micros)) {
            None => "not in the topic (never produced)".into(),
            Some(copies) => format!(
                "in the topic at {}",
                copies
                    .iter()
                    .map(|(p, o)| format!("partition {p} offset {o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

pub async fn read(
    bootstrap: &str,
    registry_url: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<TopicContents> {
    let kafka = KafkaConfig::plaintext(bootstrap);
    let topic = topic.to_owned();
    let messages =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64, Vec<u8>)>> {
            let consumer: BaseConsumer = kafka
                .client_config()
                .set("group.id", "chaos_diagnosis_reader")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .create()?;
            let mut assignment = TopicPartitionList::new();
            for p in 0..partitions {
                assignment.add_partition_offset(&topic, p, Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut quiet_since = Instant::now();
            let mut out = Vec::new();
            while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(5) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    out.push((
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                    quiet_since = Instant::now();
                }
            }
            Ok(out)
        })
        .await??;
    let registry = RegistryClient::new(RegistryConfig::new(registry_url));
    let mut contents = TopicContents {
        records: messages.len(),
        ..TopicContents::default()
    };
    for (partition, offset, payload) in messages {
        let decoded = async {
            let (schema_id, datum) = common::avro::unframe(&payload).ok()?;
            let schema = registry.schema(schema_id).await.ok()?;
            common::avro::decode_product(&schema, datum).ok()
        }
        .await;
        match decoded.and_then(|p| Some((i64::from(p.id.as_int()?), p.last_updated_micros?))) {
            Some(key) => contents
                .versions
                .entry(key)
                .or_default()
                .push((partition, offset)),
            None => contents.undecodable += 1,
        }
    }
    Ok(contents)
}
