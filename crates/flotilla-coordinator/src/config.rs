//! Coordinator settings, each declared once with its Trino name, default and meaning; the
//! README's configuration table lists the same [`SETTINGS`].

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_proto::parse_duration;

/// One setting of `config.properties` / `node.properties`.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every setting the coordinator reads.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "coordinator",
        default: "true",
        doc: "Whether this node runs the coordinator role (must be true for `flotilla coordinator`)",
    },
    Setting { name: "http-server.http.port", default: "8080", doc: "Port of the client REST API" },
    Setting { name: "node.environment", default: "flotilla", doc: "Environment name reported in /v1/info" },
    Setting { name: "node.id", default: "(random)", doc: "Node id reported in /v1/info and system.runtime.nodes" },
    Setting {
        name: "query.max-length",
        default: "1000000",
        doc: "Longest SQL text accepted, in characters (QUERY_TEXT_TOO_LARGE past it)",
    },
    Setting {
        name: "query.client.timeout",
        default: "5m",
        doc: "A query whose client stops polling for this long is abandoned (ABANDONED_QUERY)",
    },
    Setting {
        name: "query.max-history",
        default: "100",
        doc: "Finished queries kept for /v1/query and system.runtime.queries",
    },
    Setting { name: "query.min-expire-age", default: "15m", doc: "How long a finished query is kept at least" },
];

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key no role knows.
    #[error("{file}: unknown property '{key}'")]
    UnknownKey { file: String, key: String },
    /// A value of the wrong form.
    #[error("{file}: invalid value '{value}' for {key}: {message}")]
    InvalidValue { file: String, key: String, value: String, message: String },
}

/// The coordinator's configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub http_port: u16,
    pub environment: String,
    pub node_id: Option<String>,
    pub max_query_length: usize,
    pub client_timeout: Duration,
    pub max_history: usize,
    pub min_expire_age: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            http_port: 8080,
            environment: "flotilla".into(),
            node_id: None,
            max_query_length: 1_000_000,
            client_timeout: Duration::from_secs(300),
            max_history: 100,
            min_expire_age: Duration::from_secs(900),
        }
    }
}

impl CoordinatorConfig {
    /// Applies properties read from `file`, rejecting keys not in [`SETTINGS`].
    pub fn apply(&mut self, file: &str, properties: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        for (key, value) in properties {
            let invalid = |message: String| ConfigError::InvalidValue {
                file: file.to_string(),
                key: key.clone(),
                value: value.clone(),
                message,
            };
            match key.as_str() {
                "coordinator" => {
                    if value != "true" {
                        return Err(invalid("the coordinator role needs coordinator=true".into()));
                    }
                }
                "http-server.http.port" => self.http_port = value.parse().map_err(|e| invalid(format!("{e}")))?,
                "node.environment" => {
                    let valid = !value.is_empty()
                        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !valid {
                        return Err(invalid("use lowercase letters, digits and '_'".into()));
                    }
                    self.environment = value.clone();
                }
                "node.id" => self.node_id = Some(value.clone()),
                "query.max-length" => self.max_query_length = value.parse().map_err(|e| invalid(format!("{e}")))?,
                "query.client.timeout" => self.client_timeout = parse_duration(value).map_err(invalid)?,
                "query.max-history" => self.max_history = value.parse().map_err(|e| invalid(format!("{e}")))?,
                "query.min-expire-age" => self.min_expire_age = parse_duration(value).map_err(invalid)?,
                _ => return Err(ConfigError::UnknownKey { file: file.to_string(), key: key.clone() }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_declared_setting_is_accepted() {
        let mut config = CoordinatorConfig::default();
        for setting in SETTINGS {
            let value = match setting.name {
                "node.id" => "n1",
                "node.environment" => "test",
                "query.client.timeout" | "query.min-expire-age" => "10s",
                other => SETTINGS.iter().find(|s| s.name == other).unwrap().default,
            };
            config.apply("config.properties", &props(&[(setting.name, value)])).unwrap();
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_key() {
        let mut config = CoordinatorConfig::default();
        let error = config.apply("etc/config.properties", &props(&[("query.bogus", "1")])).unwrap_err();
        assert_eq!(error.to_string(), "etc/config.properties: unknown property 'query.bogus'");
        let error = config.apply("etc/config.properties", &props(&[("http-server.http.port", "http")])).unwrap_err();
        assert!(error.to_string().contains("http-server.http.port"));
        assert!(config.apply("c", &props(&[("query.client.timeout", "5")])).is_err());
    }
}
