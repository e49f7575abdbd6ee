//! The binary's settings, from environment variables:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `REGISTRY_ADDR` | `IP:port` to listen on | `127.0.0.1:8081` |
//! | `REGISTRY_DATA_FILE` | JSON file that keeps the registry across restarts | unset: memory only |
//! | `RUST_LOG` | log filter (`tracing_subscriber::EnvFilter` syntax) | `info` |

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const ADDR_VAR: &str = "REGISTRY_ADDR";
pub const DATA_FILE_VAR: &str = "REGISTRY_DATA_FILE";
pub const DEFAULT_ADDR: &str = "127.0.0.1:8081";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub addr: SocketAddr,
    pub data_file: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} is {value:?}, expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let addr = match lookup(ADDR_VAR) {
            None => DEFAULT_ADDR.parse().expect("the default address is valid"),
            Some(value) => value
                .to_str()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| ConfigError {
                    name: ADDR_VAR,
                    value: value.to_string_lossy().into_owned(),
                    expected: "an IP address and port such as 127.0.0.1:8081 or 0.0.0.0:8081",
                })?,
        };
        let data_file = match lookup(DATA_FILE_VAR) {
            None => None,
            Some(value) if value.is_empty() => {
                return Err(ConfigError {
                    name: DATA_FILE_VAR,
                    value: String::new(),
                    expected:
                        "a file path (leave the variable unset to keep schemas in memory only)",
                })
            }
            Some(value) => Some(PathBuf::from(value)),
        };
        Ok(Self { addr, data_file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    #[test]
    fn defaults_listen_locally_in_memory() {
        let config = config(&[]).unwrap();
        assert_eq!(config.addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(config.data_file, None);
    }

    #[test]
    fn values_are_taken_from_the_variables() {
        let config =
            config(&[(ADDR_VAR, "0.0.0.0:18081"), (DATA_FILE_VAR, "/tmp/r.json")]).unwrap();
        assert_eq!(config.addr, "0.0.0.0:18081".parse().unwrap());
        assert_eq!(config.data_file, Some(PathBuf::from("/tmp/r.json")));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for bad in ["localhost", "127.0.0.1", "127.0.0.1:99999", ""] {
            let err = config(&[(ADDR_VAR, bad)]).unwrap_err();
            assert_eq!(err.name, ADDR_VAR);
            assert!(err.to_string().starts_with("REGISTRY_ADDR is"), "{err}");
        }
        let err = config(&[(DATA_FILE_VAR, "")]).unwrap_err();
        assert!(err.to_string().contains("REGISTRY_DATA_FILE"), "{err}");
    }
}
