//! Coordinator settings, each declared once with its Trino name, default and meaning; the
//! README's configuration table lists the same [`SETTINGS`].

use std::time::Duration;

use flotilla_proto::config::{parse_duration_value, parse_value, ConfigError, Setting};
use flotilla_proto::NodeConfig;
use flotilla_resource_manager::ResourceManagerConfig;

/// Every setting only the coordinator reads (node-level ones are in
/// [`flotilla_proto::NODE_SETTINGS`]).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "query.max-length",
        default: "1000000",
        roles: "coordinator",
        doc: "Longest SQL text accepted, in characters (QUERY_TEXT_TOO_LARGE past it)",
    },
    Setting {
        name: "query.client.timeout",
        default: "5m",
        roles: "coordinator",
        doc: "A query whose client stops polling for this long is abandoned (ABANDONED_QUERY)",
    },
    Setting {
        name: "query.max-history",
        default: "100",
        roles: "coordinator",
        doc: "Finished queries kept for /v1/query and system.runtime.queries",
    },
    Setting {
        name: "query.min-expire-age",
        default: "15m",
        roles: "coordinator",
        doc: "How long a finished query is kept at least",
    },
    Setting {
        name: "query.max-memory",
        default: "20GB",
        roles: "coordinator",
        doc: "Most memory a query may reserve across the cluster; its coordinator fails it with EXCEEDED_GLOBAL_MEMORY_LIMIT past it (checked twice a second)",
    },
    Setting {
        name: "retry-policy",
        default: "QUERY",
        roles: "coordinator",
        doc: "QUERY: a query that loses a worker before it has returned a row runs again on the live workers (session property retry_policy overrides); NONE: it fails with REMOTE_HOST_GONE. User errors, limits, kills and cancels are never retried",
    },
    Setting {
        name: "query-retry-attempts",
        default: "4",
        roles: "coordinator",
        doc: "Most times a query is run again after losing a worker",
    },
    Setting {
        name: "retry-initial-delay",
        default: "1s",
        roles: "coordinator",
        doc: "Wait before the first retry (the lost worker's heartbeats stop meanwhile); each next wait is retry-delay-scale-factor times longer",
    },
    Setting {
        name: "retry-max-delay",
        default: "1m",
        roles: "coordinator",
        doc: "Longest wait between two attempts",
    },
    Setting {
        name: "retry-delay-scale-factor",
        default: "2.0",
        roles: "coordinator",
        doc: "How much longer each wait between attempts is than the one before",
    },
    Setting {
        name: "resource-groups.configuration-manager",
        default: "(none)",
        roles: "coordinator",
        doc: "`file` for Trino's file-based resource groups (limits hold for the whole cluster); without it every query runs at once in `global`",
    },
    Setting {
        name: "resource-groups.config-file",
        default: "(none)",
        roles: "coordinator",
        doc: "The resource group configuration (Trino's JSON format), reloaded when it changes",
    },
    Setting {
        name: "web-ui.shared-secret",
        default: "(derived from internal-communication.shared-secret)",
        roles: "coordinator",
        doc: "Secret the web UI's session cookies are signed with; the same on every coordinator, so a login on one is valid on all",
    },
    Setting {
        name: "node-scheduler.include-coordinator",
        default: "true",
        roles: "coordinator",
        doc: "The coordinator also runs tasks, as a worker of its warehouse and worker group (set false when dedicated workers exist)",
    },
    Setting {
        name: "event-listener.name",
        default: "(none)",
        roles: "coordinator",
        doc: "Query completion event listeners, comma-separated: `file` (JSON lines) and `http` (Trino's http-event-listener); also read from etc/event-listener.properties",
    },
    Setting {
        name: "event-listener.file.path",
        default: "(none)",
        roles: "coordinator",
        doc: "With the `file` listener: the file each completed query's event is appended to, one JSON object a line",
    },
    Setting {
        name: "http-event-listener.connect-ingest-uri",
        default: "(none)",
        roles: "coordinator",
        doc: "With the `http` listener: where each completed query's event is POSTed as JSON (http:// only)",
    },
    Setting {
        name: "http-event-listener.connect-http-headers",
        default: "(none)",
        roles: "coordinator",
        doc: "Headers sent with each event, `Name:value` pairs, comma-separated (an ${ENV:...} secret, say)",
    },
    Setting {
        name: "http-event-listener.connect-retry-count",
        default: "3",
        roles: "coordinator",
        doc: "Times a failed POST is tried again before its event is dropped (logged)",
    },
    Setting {
        name: "http-event-listener.connect-retry-delay",
        default: "1s",
        roles: "coordinator",
        doc: "Wait before the first retry, doubling for each next one",
    },
];

/// The coordinator's configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub node: NodeConfig,
    /// Settings of the embedded resource manager (used without `discovery.uri`).
    pub resource_manager: ResourceManagerConfig,
    pub max_query_length: usize,
    pub client_timeout: Duration,
    pub max_history: usize,
    pub min_expire_age: Duration,
    /// `query.max-memory`.
    pub max_memory: u64,
    /// `node-scheduler.include-coordinator`.
    pub include_coordinator: bool,
    /// The worker settings of this node's own data plane (with `include_coordinator`).
    pub worker: flotilla_worker::WorkerConfig,
    /// `resource-groups.configuration-manager` (only `file` exists).
    pub resource_groups_manager: Option<String>,
    /// `resource-groups.config-file`.
    pub resource_groups_file: Option<std::path::PathBuf>,
    /// `web-ui.shared-secret`.
    pub web_ui_secret: Option<String>,
    /// `retry-policy` and its delays.
    pub retry: RetryConfig,
    /// `event-listener.*` and `http-event-listener.*`.
    pub events: crate::events::EventListenerConfig,
}

/// When and how often a query that lost a worker runs again (Trino's names).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// `retry-policy=QUERY` (else `NONE`).
    pub enabled: bool,
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub scale_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            attempts: 4,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            scale_factor: 2.0,
        }
    }
}

impl RetryConfig {
    /// The wait before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = self.scale_factor.powi(retry.saturating_sub(1).min(64) as i32);
        self.initial_delay.mul_f64(factor.min(1e6)).min(self.max_delay)
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            node: NodeConfig::default(),
            resource_manager: ResourceManagerConfig::default(),
            max_query_length: 1_000_000,
            client_timeout: Duration::from_secs(300),
            max_history: 100,
            min_expire_age: Duration::from_secs(900),
            max_memory: 20 << 30,
            include_coordinator: true,
            worker: flotilla_worker::WorkerConfig::default(),
            resource_groups_manager: None,
            resource_groups_file: None,
            web_ui_secret: None,
            retry: RetryConfig::default(),
            events: crate::events::EventListenerConfig::default(),
        }
    }
}

impl CoordinatorConfig {
    /// The resource group configuration file to use, if any; an error when the two
    /// settings do not go together.
    pub fn resource_groups(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        match (&self.resource_groups_manager, &self.resource_groups_file) {
            (Some(_), Some(path)) => Ok(Some(path.clone())),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::Inconsistent(
                "resource-groups.configuration-manager=file needs resource-groups.config-file".into(),
            )),
            (None, Some(_)) => Err(ConfigError::Inconsistent(
                "resource-groups.config-file needs resource-groups.configuration-manager=file".into(),
            )),
        }
    }

    /// Applies one property; `Ok(false)` when the key is not a coordinator setting.
    pub fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "query.max-length" => self.max_query_length = parse_value(file, key, value)?,
            "query.client.timeout" => self.client_timeout = parse_duration_value(file, key, value)?,
            "query.max-history" => self.max_history = parse_value(file, key, value)?,
            "query.min-expire-age" => self.min_expire_age = parse_duration_value(file, key, value)?,
            "query.max-memory" => {
                self.max_memory = flotilla_proto::parse_data_size(value)
                    .map_err(|m| ConfigError::invalid(file, key, value, m))?
                    .max(1)
            }
            "node-scheduler.include-coordinator" => self.include_coordinator = parse_value(file, key, value)?,
            "resource-groups.configuration-manager" => {
                if value != "file" {
                    return Err(ConfigError::invalid(file, key, value, "only the file-based manager (`file`) exists"));
                }
                self.resource_groups_manager = Some(value.to_string());
            }
            "resource-groups.config-file" => self.resource_groups_file = Some(value.into()),
            "retry-policy" => {
                self.retry.enabled = match value.to_ascii_uppercase().as_str() {
                    "QUERY" => true,
                    "NONE" => false,
                    "TASK" => {
                        return Err(ConfigError::invalid(file, key, value, "TASK is not supported: use QUERY or NONE"))
                    }
                    _ => return Err(ConfigError::invalid(file, key, value, "expected QUERY or NONE")),
                }
            }
            "query-retry-attempts" => {
                self.retry.attempts = parse_value(file, key, value)?;
                if self.retry.attempts > 100 {
                    return Err(ConfigError::invalid(file, key, value, "at most 100"));
                }
            }
            "retry-initial-delay" => self.retry.initial_delay = parse_duration_value(file, key, value)?,
            "retry-max-delay" => self.retry.max_delay = parse_duration_value(file, key, value)?,
            "retry-delay-scale-factor" => {
                let factor: f64 = parse_value(file, key, value)?;
                if !(1.0..=100.0).contains(&factor) {
                    return Err(ConfigError::invalid(file, key, value, "expected a number from 1 to 100"));
                }
                self.retry.scale_factor = factor;
            }
            "web-ui.shared-secret" => {
                if value.len() < flotilla_proto::internal_auth::MIN_SECRET_LENGTH {
                    return Err(ConfigError::invalid(file, key, value, "must be at least 16 characters"));
                }
                self.web_ui_secret = Some(value.to_string());
            }
            key if key.starts_with("event-listener.") || key.starts_with("http-event-listener.") => {
                if !self.events.apply(file, key, value)? {
                    return Ok(false);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_setting_is_accepted() {
        let mut config = CoordinatorConfig::default();
        for setting in SETTINGS {
            let value = match setting.name {
                "query.client.timeout" | "query.min-expire-age" | "retry-initial-delay" | "retry-max-delay" => "10s",
                "resource-groups.configuration-manager" => "file",
                "resource-groups.config-file" => "etc/resource-groups.json",
                "web-ui.shared-secret" => "a-long-enough-web-ui-secret",
                "event-listener.name" => "file,http",
                "event-listener.file.path" => "/var/log/flotilla/queries.jsonl",
                "http-event-listener.connect-ingest-uri" => "http://collector:8080/events",
                "http-event-listener.connect-http-headers" => "X-Source:flotilla",
                _ => setting.default,
            };
            assert!(config.apply("config.properties", setting.name, value).unwrap(), "{}", setting.name);
        }
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let mut config = CoordinatorConfig::default();
        assert!(!config.apply("etc/config.properties", "query.bogus", "1").unwrap());
        let error = config.apply("etc/config.properties", "query.max-history", "many").unwrap_err();
        assert!(error.to_string().contains("etc/config.properties"), "{error}");
        assert!(error.to_string().contains("query.max-history"), "{error}");
        assert!(config.apply("c", "query.client.timeout", "5").is_err());
        for (key, bad) in [
            ("retry-policy", "TASK"),
            ("retry-policy", "sometimes"),
            ("query-retry-attempts", "-1"),
            ("query-retry-attempts", "1000"),
            ("retry-delay-scale-factor", "0.5"),
            ("retry-delay-scale-factor", "NaN"),
            ("retry-initial-delay", "soon"),
        ] {
            assert!(config.apply("c", key, bad).is_err(), "{key}={bad}");
        }
    }

    #[test]
    fn retry_waits_grow_to_their_bound() {
        let retry = RetryConfig::default();
        let waits: Vec<Duration> = [1, 2, 3, 10, u32::MAX].map(|n| retry.delay(n)).to_vec();
        assert_eq!(waits[..3], [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
        assert_eq!(waits[3..], [Duration::from_secs(60), Duration::from_secs(60)], "bounded by retry-max-delay");
    }
}
