//! The `user-login` event of prototype 004 and its random generator.
//!
//! A pure function of a random number generator and a timestamp ([`generate`]), so tests can
//! seed it. The JSON keeps the prototype's field order and types (the timestamp is a string of
//! epoch seconds):
//!
//! ```json
//! {"user_id":"424cdd21-063a-43a7-b91b-7ca1a833afae","app_version":"2.3.0","device_type":"android",
//!  "ip":"199.172.111.135","locale":"RU","device_id":"593-47-5928","timestamp":"1694479551"}
//! ```

use std::fmt::Write as _;

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Country codes used for `locale`.
pub const LOCALES: &[&str] = &["RU", "US", "DE", "IN", "FR", "GB", "BR", "JP", "CA", "ES"];

/// Values of `device_type`, spelled as in the prototype.
pub const DEVICE_TYPES: &[&str] = &["android", "iOS"];

/// Values of `app_version`; the prototype's sample has `2.3.0`.
pub const APP_VERSIONS: &[&str] = &["2.3.0", "2.2.1", "2.1.0", "2.0.4"];

/// One login event. Field order is the prototype's (serde serializes in declaration order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLogin {
    /// A random UUID v4, lowercase hex with hyphens.
    pub user_id: String,
    pub app_version: String,
    /// `android` or `iOS`.
    pub device_type: String,
    /// A dotted IPv4 address.
    pub ip: String,
    /// A two-letter country code from [`LOCALES`].
    pub locale: String,
    /// `NNN-NN-NNNN`.
    pub device_id: String,
    /// Epoch seconds as a string of digits.
    pub timestamp: String,
}

impl UserLogin {
    /// The record key: `user_id` as UTF-8.
    pub fn key(&self) -> &[u8] {
        self.user_id.as_bytes()
    }

    /// The record value: one JSON object.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of strings always serializes")
    }
}

/// A random login at `timestamp` (epoch seconds).
pub fn generate(rng: &mut impl Rng, timestamp: u64) -> UserLogin {
    UserLogin {
        user_id: uuid_v4(rng),
        app_version: pick(rng, APP_VERSIONS),
        device_type: pick(rng, DEVICE_TYPES),
        ip: format!(
            "{}.{}.{}.{}",
            rng.random_range(1..=223u8),
            rng.random::<u8>(),
            rng.random::<u8>(),
            rng.random_range(1..=254u8)
        ),
        locale: pick(rng, LOCALES),
        device_id: format!(
            "{:03}-{:02}-{:04}",
            rng.random_range(0..1000u16),
            rng.random_range(0..100u8),
            rng.random_range(0..10_000u16)
        ),
        timestamp: timestamp.to_string(),
    }
}

fn pick(rng: &mut impl Rng, values: &[&str]) -> String {
    (*values.choose(rng).expect("value lists are not empty")).to_owned()
}

/// A random (version 4, RFC 9562 variant) UUID as `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
pub fn uuid_v4(rng: &mut impl Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10xx
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        write!(text, "{byte:02x}").expect("writing to a String cannot fail");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn is_uuid_v4(text: &str) -> bool {
        let groups: Vec<&str> = text.split('-').collect();
        groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
            && groups
                .iter()
                .all(|g| g.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
            && groups[2].starts_with('4')
            && groups[3].starts_with(['8', '9', 'a', 'b'])
    }

    fn is_device_id(text: &str) -> bool {
        let groups: Vec<&str> = text.split('-').collect();
        groups.iter().map(|g| g.len()).eq([3, 2, 4])
            && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()))
    }

    #[test]
    fn every_field_is_present_with_the_prototypes_types() {
        let mut rng = StdRng::seed_from_u64(4);
        let event = generate(&mut rng, 1_694_479_551);
        let json: serde_json::Value = serde_json::from_slice(&event.to_json()).unwrap();
        let object = json.as_object().expect("a JSON object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let mut expected = vec![
            "user_id",
            "app_version",
            "device_type",
            "ip",
            "locale",
            "device_id",
            "timestamp",
        ];
        expected.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected);
        assert!(object.values().all(serde_json::Value::is_string), "{json}");
        assert_eq!(json["timestamp"], "1694479551");
        assert_eq!(event.key(), event.user_id.as_bytes());
    }

    #[test]
    fn json_keeps_the_prototypes_field_order() {
        let mut rng = StdRng::seed_from_u64(5);
        let text = String::from_utf8(generate(&mut rng, 0).to_json()).unwrap();
        let positions: Vec<usize> = [
            "\"user_id\"",
            "\"app_version\"",
            "\"device_type\"",
            "\"ip\"",
            "\"locale\"",
            "\"device_id\"",
            "\"timestamp\"",
        ]
        .iter()
        .map(|k| text.find(k).expect(k))
        .collect();
        assert!(positions.is_sorted(), "{text}");
    }

    #[test]
    fn many_events_have_valid_formats() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut locales = std::collections::BTreeSet::new();
        let mut devices = std::collections::BTreeSet::new();
        for i in 0..2000u64 {
            let event = generate(&mut rng, 1_700_000_000 + i);
            assert!(is_uuid_v4(&event.user_id), "{}", event.user_id);
            assert!(
                !event.timestamp.is_empty() && event.timestamp.bytes().all(|b| b.is_ascii_digit()),
                "{}",
                event.timestamp
            );
            assert_eq!(event.timestamp.parse::<u64>().unwrap(), 1_700_000_000 + i);
            assert!(LOCALES.contains(&event.locale.as_str()), "{}", event.locale);
            assert_eq!(event.locale.len(), 2);
            assert!(APP_VERSIONS.contains(&event.app_version.as_str()));
            assert!(DEVICE_TYPES.contains(&event.device_type.as_str()));
            assert!(
                event.ip.parse::<std::net::Ipv4Addr>().is_ok(),
                "{}",
                event.ip
            );
            assert!(is_device_id(&event.device_id), "{}", event.device_id);
            locales.insert(event.locale);
            devices.insert(event.device_type);
        }
        assert_eq!(locales.len(), LOCALES.len(), "every locale shows up");
        assert_eq!(devices.len(), DEVICE_TYPES.len());
    }

    #[test]
    fn user_ids_are_random_and_seeds_reproduce() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = generate(&mut rng, 1);
        let b = generate(&mut rng, 1);
        assert_ne!(a.user_id, b.user_id);
        assert_eq!(generate(&mut StdRng::seed_from_u64(7), 1), a);
    }

    #[test]
    fn uuid_sets_version_and_variant_bits() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let id = uuid_v4(&mut rng);
            assert_eq!(id.len(), 36);
            assert!(is_uuid_v4(&id), "{id}");
        }
    }
}
