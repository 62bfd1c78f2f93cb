//! Resource manager settings, each declared once (the README's table lists [`SETTINGS`]).

use std::time::Duration;

use flotilla_proto::config::{parse_duration_value, parse_value, ConfigError, Setting};

use crate::memory_killer::KillerConfig;
use crate::state::StateConfig;

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "resource-manager.node-status-timeout",
        default: "5s",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "A node with no heartbeat for this long is marked dead",
    },
    Setting {
        name: "resource-manager.node-expiration-timeout",
        default: "10m",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "A dead node's record is dropped after this long without a heartbeat",
    },
    Setting {
        name: "resource-manager.query-history",
        default: "1000",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "Finished queries of the whole cluster kept in the view",
    },
    Setting {
        name: "resource-manager.peer-sync-interval",
        default: "500ms",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "How often a resource manager pushes what changed to each peer",
    },
    Setting {
        name: "query.low-memory-killer.policy",
        default: "total-reservation-on-blocked-nodes",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "Which query the cluster's low-memory killer kills when workers stay blocked on full memory pools: `total-reservation` (largest anywhere), `total-reservation-on-blocked-nodes` (largest on the blocked workers) or `none`; only the admission leader decides",
    },
    Setting {
        name: "query.low-memory-killer.delay",
        default: "5m",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "How long a worker's reservations wait on its full pool before the low-memory killer kills one query (CLUSTER_OUT_OF_MEMORY)",
    },
    Setting {
        name: "warehouse.config-file",
        default: "(etc/warehouses.json when present)",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "Warehouse definitions (types; physical and shared worker groups) and routing rules, re-read every second when it changes and served to every coordinator in the cluster view",
    },
    Setting {
        name: "warehouse.lending-enabled",
        default: "false",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "The admission leader lends idle physical worker groups to busy read warehouses (as shared groups `lent.W.G` in the view) and takes them back",
    },
    Setting {
        name: "warehouse.lending-busy-tasks-per-worker",
        default: "4",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "A warehouse is busy with queries queued, or at least this many running tasks per worker of its groups",
    },
    Setting {
        name: "warehouse.lending-busy-time",
        default: "5s",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "How long a read warehouse stays busy before it borrows, and calm before a loan to it ends",
    },
    Setting {
        name: "warehouse.lending-idle-time",
        default: "10s",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "How long a physical group stays idle (no running task, nothing queued in its warehouse) before it is lent",
    },
    Setting {
        name: "warehouse.lending-min-time",
        default: "30s",
        roles: "resource-manager (and a coordinator's embedded one)",
        doc: "How long a loan lasts at least before it ends (its owner busy, or the borrower calm)",
    },
];

#[derive(Debug, Clone)]
pub struct ResourceManagerConfig {
    pub state: StateConfig,
    pub peer_sync_interval: Duration,
    pub low_memory_killer: KillerConfig,
    /// `warehouse.config-file`.
    pub warehouses_file: Option<std::path::PathBuf>,
    /// `warehouse.lending-*`.
    pub lending: crate::lending::LendingConfig,
}

impl Default for ResourceManagerConfig {
    fn default() -> Self {
        Self {
            state: StateConfig::default(),
            peer_sync_interval: Duration::from_millis(500),
            low_memory_killer: KillerConfig::default(),
            warehouses_file: None,
            lending: crate::lending::LendingConfig::default(),
        }
    }
}

impl ResourceManagerConfig {
    /// Applies one property; `Ok(false)` when the key is not a resource manager setting.
    pub fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "resource-manager.node-status-timeout" => self.state.node_timeout = parse_duration_value(file, key, value)?,
            "resource-manager.node-expiration-timeout" => {
                self.state.node_expiry = parse_duration_value(file, key, value)?
            }
            "resource-manager.query-history" => self.state.query_history = parse_value(file, key, value)?,
            "resource-manager.peer-sync-interval" => self.peer_sync_interval = parse_duration_value(file, key, value)?,
            "query.low-memory-killer.policy" => {
                self.low_memory_killer.policy =
                    value.parse().map_err(|m: String| ConfigError::invalid(file, key, value, m))?
            }
            "query.low-memory-killer.delay" => self.low_memory_killer.delay = parse_duration_value(file, key, value)?,
            "warehouse.config-file" => match value.trim() {
                "" => return Err(ConfigError::invalid(file, key, value, "give the file's path")),
                path => self.warehouses_file = Some(path.into()),
            },
            "warehouse.lending-enabled" => self.lending.enabled = parse_value(file, key, value)?,
            "warehouse.lending-busy-tasks-per-worker" => {
                let tasks: f64 = parse_value(file, key, value)?;
                if !(tasks.is_finite() && tasks > 0.0) {
                    return Err(ConfigError::invalid(file, key, value, "a number of tasks above 0"));
                }
                self.lending.busy_tasks_per_worker = tasks;
            }
            "warehouse.lending-busy-time" => self.lending.busy_time = parse_duration_value(file, key, value)?,
            "warehouse.lending-idle-time" => self.lending.idle_time = parse_duration_value(file, key, value)?,
            "warehouse.lending-min-time" => self.lending.min_time = parse_duration_value(file, key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the settings against each other and the heartbeat interval.
    pub fn validate(&self, heartbeat_interval: Duration) -> Result<(), ConfigError> {
        if self.state.node_timeout < heartbeat_interval * 2 {
            return Err(ConfigError::Inconsistent(format!(
                "resource-manager.node-status-timeout ({:?}) must be at least twice discovery.heartbeat-interval ({:?})",
                self.state.node_timeout, heartbeat_interval
            )));
        }
        if self.state.node_expiry < self.state.node_timeout {
            return Err(ConfigError::Inconsistent(
                "resource-manager.node-expiration-timeout must not be shorter than resource-manager.node-status-timeout"
                    .into(),
            ));
        }
        if let Some(path) = &self.warehouses_file {
            crate::warehouses::read(path).map_err(ConfigError::Inconsistent)?;
        }
        if self.peer_sync_interval.is_zero() {
            return Err(ConfigError::Inconsistent("resource-manager.peer-sync-interval must be positive".into()));
        }
        Ok(())
    }
}
