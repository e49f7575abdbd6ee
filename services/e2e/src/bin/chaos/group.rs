//! For diagnosis: the consumer group as the broker describes it (state, members, the partitions
//! it assigned to each), to compare with what the consumers report on `/assignments`.

use std::time::Duration;

use common::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// `state=Stable members: consumer_1-…=[0, 5] …` or why it could not be described.
pub async fn describe(bootstrap: &str, group: &str) -> String {
    let kafka = KafkaConfig::plaintext(bootstrap);
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = match kafka.client_config().create() {
            Ok(c) => c,
            Err(e) => return format!("cannot describe the group: {e}"),
        };
        // tansu answers only when every group is described (as the consumer found).
        let list = match client
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .or_else(|_| client.fetch_group_list(None, Duration::from_secs(10)))
        {
            Ok(list) => list,
            Err(e) => return format!("cannot describe the group: {e}"),
        };
        let Some(info) = list.groups().iter().find(|g| g.name() == group) else {
            return "the broker does not know the group".into();
        };
        let mut members: Vec<String> = info
            .members()
            .iter()
            .map(|m| {
                let assigned = m
                    .assignment()
                    .and_then(parse_assignment)
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "?".into());
                format!("{}={assigned}", m.id())
            })
            .collect();
        members.sort();
        format!(
            "broker's view: state={} protocol={} members: {}",
            info.state(),
            info.protocol(),
            members.join(" ")
        )
    })
    .await
    .unwrap_or_else(|e| format!("cannot describe the group: {e}"))
}

/// The partitions of a consumer-protocol assignment (version, [topic, [partition]], user data).
fn parse_assignment(bytes: &[u8]) -> Option<Vec<i32>> {
    let mut input = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = input.split_at_checked(n)?;
        input = rest;
        Some(head)
    };
    take(2)?;
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        take(len.max(0) as usize)?;
        let n = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..n.max(0) {
            partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
        }
    }
    partitions.sort_unstable();
    Some(partitions)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_consumer_protocol_assignment() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 3];
        bytes.extend_from_slice(b"top");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 0, 255, 255, 255, 255]);
        assert_eq!(super::parse_assignment(&bytes), Some(vec![0, 5]));
        assert_eq!(super::parse_assignment(&bytes[..9]), None);
    }
}
