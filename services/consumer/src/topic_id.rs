//! The topic id (KIP-516) of the consumed topic: a UUID the broker gives a topic when it is
//! created, so a topic deleted and created again under the same name (or a broker started afresh,
//! as `docker compose down && up` does) has a new one. The sink stores it with its positions, so
//! that positions written for another topic of the same name are not used (see
//! [`crate::sink::json_log`]).
//!
//! rdkafka 0.39 does not expose topic ids (librdkafka 2.12 keeps them internally; its
//! `rd_kafka_TopicDescription_topic_id` is reachable only through `rdkafka-sys`, i.e. unsafe
//! code), so this module asks a bootstrap broker itself with one Metadata request (version 10,
//! the first with topic ids: Kafka 2.8 and later; tansu 0.6 answers it). Plaintext connections
//! only: with TLS or SASL the id is not looked up (the consumer says so at start).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use common::kafka::KafkaConfig;

/// A topic id, as Kafka's tools print it is base64; here the UUID's usual text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicId([u8; 16]);

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopicIdError {
    #[error("not looked up with KAFKA_SECURITY_PROTOCOL={0} (plaintext only)")]
    Unsupported(String),
    #[error("no bootstrap broker answered: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected Metadata response: {0}")]
    Protocol(&'static str),
    #[error("the broker reports topic {topic}: error code {code}")]
    Topic { topic: String, code: i16 },
    #[error("the broker reports no id for topic {0} (a broker older than Kafka 2.8?)")]
    NoId(String),
}

const TIMEOUT: Duration = Duration::from_secs(10);
const METADATA: i16 = 3;
const VERSION: i16 = 10;

/// The id of `topic`, asked of the first bootstrap broker that answers. Blocking.
pub fn fetch(kafka: &KafkaConfig, topic: &str) -> Result<TopicId, TopicIdError> {
    if kafka.security_protocol != "plaintext" {
        return Err(TopicIdError::Unsupported(kafka.security_protocol.clone()));
    }
    let mut last_error = None;
    for server in kafka.bootstrap_servers.split(',').map(str::trim) {
        match ask(server, topic) {
            Ok(response) => return topic_id_in(&response, topic),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| std::io::Error::other("KAFKA_BOOTSTRAP_SERVERS is empty"))
        .into())
}

/// Sends a Metadata request for `topic` to `server`; returns the response body.
fn ask(server: &str, topic: &str) -> std::io::Result<Vec<u8>> {
    let address = server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{server}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let correlation_id = 1;
    stream.write_all(&metadata_request(topic, correlation_id))?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = usize::try_from(i32::from_be_bytes(size))
        .map_err(|_| std::io::Error::other("negative response size"))?;
    let mut response = vec![0u8; size];
    stream.read_exact(&mut response)?;
    let mut reader = Reader(&response);
    let header = (|| {
        let id = reader.i32()?;
        reader.skip_tags()?;
        Some(id)
    })();
    if header != Some(correlation_id) {
        return Err(std::io::Error::other("response to another request"));
    }
    Ok(reader.0.to_vec())
}

/// A Metadata v10 request for one topic, size-prefixed (request header v2, flexible body).
fn metadata_request(topic: &str, correlation_id: i32) -> Vec<u8> {
    let client_id = b"productstream-consumer";
    let mut body = Vec::with_capacity(64 + topic.len());
    body.extend_from_slice(&METADATA.to_be_bytes());
    body.extend_from_slice(&VERSION.to_be_bytes());
    body.extend_from_slice(&correlation_id.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    body.push(0); // header tagged fields
    body.push(2); // topics: compact array of 1
    body.extend_from_slice(&[0; 16]); // topic_id: asked by name
    push_uvarint(&mut body, topic.len() as u64 + 1);
    body.extend_from_slice(topic.as_bytes());
    body.push(0); // topic tagged fields
    body.push(0); // allow_auto_topic_creation
    body.push(0); // include_cluster_authorized_operations
    body.push(0); // include_topic_authorized_operations
    body.push(0); // tagged fields
    let mut request = Vec::with_capacity(body.len() + 4);
    request.extend_from_slice(&(body.len() as i32).to_be_bytes());
    request.extend_from_slice(&body);
    request
}

fn push_uvarint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// The id of `topic` in a Metadata v10 response body.
fn topic_id_in(body: &[u8], topic: &str) -> Result<TopicId, TopicIdError> {
    let malformed = TopicIdError::Protocol;
    let mut r = Reader(body);
    r.i32().ok_or(malformed("throttle time"))?;
    for _ in 0..r.compact_len().ok_or(malformed("brokers"))? {
        (|| {
            r.i32()?; // node id
            r.compact_string()?; // host
            r.i32()?; // port
            r.compact_string()?; // rack
            r.skip_tags()
        })()
        .ok_or(malformed("broker"))?;
    }
    r.compact_string().ok_or(malformed("cluster id"))?;
    r.i32().ok_or(malformed("controller id"))?;
    for _ in 0..r.compact_len().ok_or(malformed("topics"))? {
        let error_code = r.i16().ok_or(malformed("topic error code"))?;
        let name = r.compact_string().ok_or(malformed("topic name"))?;
        let id: [u8; 16] = r
            .bytes(16)
            .and_then(|b| b.try_into().ok())
            .ok_or(malformed("topic id"))?;
        if name == Some(topic.as_bytes()) {
            if error_code != 0 {
                return Err(TopicIdError::Topic {
                    topic: topic.to_owned(),
                    code: error_code,
                });
            }
            if id == [0; 16] {
                return Err(TopicIdError::NoId(topic.to_owned()));
            }
            return Ok(TopicId(id));
        }
        (|| {
            r.bytes(1)?; // is_internal
            for _ in 0..r.compact_len()? {
                r.bytes(2 + 4 + 4 + 4)?; // error code, index, leader, leader epoch
                for _ in 0..3 {
                    let nodes = r.compact_len()?; // replicas, isr, offline replicas
                    r.bytes(nodes * 4)?;
                }
                r.skip_tags()?;
            }
            r.i32()?; // topic authorized operations
            r.skip_tags()
        })()
        .ok_or(malformed("topic"))?;
    }
    Err(TopicIdError::Topic {
        topic: topic.to_owned(),
        code: 3, // UNKNOWN_TOPIC_OR_PARTITION
    })
}

/// Reads Kafka protocol primitives; `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.bytes(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.bytes(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A compact array's length (0 for null).
    fn compact_len(&mut self) -> Option<usize> {
        usize::try_from(self.uvarint()?.saturating_sub(1)).ok()
    }

    /// A compact (nullable) string.
    fn compact_string(&mut self) -> Option<Option<&'a [u8]>> {
        match self.uvarint()? {
            0 => Some(None),
            n => Some(Some(self.bytes(usize::try_from(n - 1).ok()?)?)),
        }
    }

    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?; // tag
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.bytes(size)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_metadata_v10_request_for_the_topic() {
        let request = metadata_request("t1", 7);
        let size = i32::from_be_bytes(request[..4].try_into().unwrap());
        assert_eq!(size as usize, request.len() - 4);
        let mut r = Reader(&request[4..]);
        assert_eq!(r.i16(), Some(3));
        assert_eq!(r.i16(), Some(10));
        assert_eq!(r.i32(), Some(7));
        let client_id_len = r.i16().unwrap() as usize;
        assert_eq!(r.bytes(client_id_len), Some(&b"productstream-consumer"[..]));
        assert_eq!(r.skip_tags(), Some(()));
        assert_eq!(r.compact_len(), Some(1));
        assert_eq!(r.bytes(16), Some(&[0u8; 16][..]));
        assert_eq!(r.compact_string(), Some(Some(&b"t1"[..])));
        assert_eq!(r.skip_tags(), Some(()));
        assert_eq!(r.bytes(3), Some(&[0u8, 0, 0][..]));
        assert_eq!(r.skip_tags(), Some(()));
        assert!(r.0.is_empty());
    }

    /// A Metadata v10 response body with one broker and the given topics.
    fn response(topics: &[(&str, i16, [u8; 16], usize)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0i32.to_be_bytes()); // throttle
        b.push(2); // one broker
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(10);
        b.extend_from_slice(b"127.0.0.1");
        b.extend_from_slice(&9092i32.to_be_bytes());
        b.push(0); // rack null
        b.push(1); // broker tags: one tagged field
        b.extend_from_slice(&[5, 2, 0xaa, 0xbb]);
        b.push(4);
        b.extend_from_slice(b"abc"); // cluster id
        b.extend_from_slice(&1i32.to_be_bytes()); // controller
        b.push(topics.len() as u8 + 1);
        for (name, error, id, partitions) in topics {
            b.extend_from_slice(&error.to_be_bytes());
            b.push(name.len() as u8 + 1);
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(id);
            b.push(0); // internal
            b.push(*partitions as u8 + 1);
            for p in 0..*partitions {
                b.extend_from_slice(&0i16.to_be_bytes());
                b.extend_from_slice(&(p as i32).to_be_bytes());
                b.extend_from_slice(&1i32.to_be_bytes());
                b.extend_from_slice(&0i32.to_be_bytes());
                for nodes in [1, 1, 0] {
                    b.push(nodes + 1);
                    for _ in 0..nodes {
                        b.extend_from_slice(&1i32.to_be_bytes());
                    }
                }
                b.push(0);
            }
            b.extend_from_slice(&(-2_147_483_648i32).to_be_bytes());
            b.push(0);
        }
        b.extend_from_slice(&0i32.to_be_bytes()); // cluster authorized operations
        b.push(0);
        b
    }

    #[test]
    fn the_id_is_read_from_the_topic_of_that_name() {
        let a = [1u8; 16];
        let mut b = [0u8; 16];
        b[0] = 0xde;
        b[15] = 0x42;
        let body = response(&[("a", 0, a, 3), ("b", 0, b, 2)]);
        assert_eq!(topic_id_in(&body, "b").unwrap(), TopicId(b));
        assert_eq!(topic_id_in(&body, "a").unwrap(), TopicId(a));
        assert_eq!(
            TopicId(b).to_string(),
            "de000000-0000-0000-0000-000000000042"
        );
        assert!(matches!(
            topic_id_in(&body, "c"),
            Err(TopicIdError::Topic { code: 3, .. })
        ));
        let unknown = response(&[("c", 3, [0; 16], 0)]);
        assert!(matches!(
            topic_id_in(&unknown, "c"),
            Err(TopicIdError::Topic { code: 3, .. })
        ));
        let old_broker = response(&[("c", 0, [0; 16], 1)]);
        assert!(matches!(
            topic_id_in(&old_broker, "c"),
            Err(TopicIdError::NoId(_))
        ));
        assert!(matches!(
            topic_id_in(&body[..body.len() / 2], "b"),
            Err(TopicIdError::Protocol(_))
        ));
    }
}
