//! Worker settings, each declared once (the README's table lists [`SETTINGS`]).

use std::time::Duration;

use flotilla_proto::config::{parse_duration_value, ConfigError, Setting};
use flotilla_proto::parse_data_size;

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "memory.pool-size",
        default: "(half the machine's memory)",
        roles: "worker",
        doc: "Size of the node's query memory pool, as a data size (`4GB`)",
    },
    Setting {
        name: "query.max-memory-per-node",
        default: "(the pool size)",
        roles: "worker",
        doc: "Most memory one query may reserve on one node; a task past it fails with EXCEEDED_LOCAL_MEMORY_LIMIT unless its operator can spill",
    },
    Setting {
        name: "memory.blocked-timeout",
        default: "5m",
        roles: "worker",
        doc: "How long a reservation that finds the node's pool full waits for other queries to free memory before its query fails with EXCEEDED_LOCAL_MEMORY_LIMIT (the cluster's low-memory killer normally frees memory long before)",
    },
    Setting {
        name: "spill-enabled",
        default: "true",
        roles: "worker",
        doc: "Operators that can (sort, aggregation, sort-merge join) spill to disk when the query's memory runs out, instead of failing",
    },
    Setting {
        name: "spiller-spill-path",
        default: "(the system's temp directory)",
        roles: "worker",
        doc: "Directories for spill files, comma-separated (created if missing; files are removed when the query ends)",
    },
    Setting {
        name: "worker.data-port",
        default: "0 (a free port)",
        roles: "worker",
        doc: "Port of the worker service (tasks and their Arrow Flight data), announced to the cluster",
    },
];

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `None`: half of the machine's memory.
    pub memory_pool_bytes: Option<u64>,
    /// 0: any free port.
    pub data_port: u16,
    /// `query.max-memory-per-node`; `None`: the pool size.
    pub max_query_memory_per_node: Option<u64>,
    /// `spill-enabled=false`.
    pub spill_disabled: bool,
    /// `spiller-spill-path`; empty: the system's temp directory.
    pub spill_paths: Vec<std::path::PathBuf>,
    /// `memory.blocked-timeout`.
    pub memory_blocked_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            memory_pool_bytes: None,
            data_port: 0,
            max_query_memory_per_node: None,
            spill_disabled: false,
            spill_paths: Vec::new(),
            memory_blocked_timeout: Duration::from_secs(300),
        }
    }
}

impl WorkerConfig {
    /// Applies one property; `Ok(false)` when the key is not a worker setting.
    pub fn apply(&mut self, file: &str, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "memory.pool-size" => {
                let bytes = parse_data_size(value).map_err(|m| ConfigError::invalid(file, key, value, m))?;
                if bytes == 0 {
                    return Err(ConfigError::invalid(file, key, value, "must be positive"));
                }
                self.memory_pool_bytes = Some(bytes);
            }
            "query.max-memory-per-node" => {
                let bytes = parse_data_size(value).map_err(|m| ConfigError::invalid(file, key, value, m))?;
                if bytes == 0 {
                    return Err(ConfigError::invalid(file, key, value, "must be positive"));
                }
                self.max_query_memory_per_node = Some(bytes);
            }
            "memory.blocked-timeout" => self.memory_blocked_timeout = parse_duration_value(file, key, value)?,
            "spill-enabled" => {
                let enabled: bool =
                    value.parse().map_err(|_| ConfigError::invalid(file, key, value, "expected true or false"))?;
                self.spill_disabled = !enabled;
            }
            "spiller-spill-path" => {
                self.spill_paths =
                    value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(std::path::PathBuf::from).collect();
                if self.spill_paths.is_empty() {
                    return Err(ConfigError::invalid(file, key, value, "expected one or more directories"));
                }
            }
            "worker.data-port" => {
                self.data_port =
                    value.parse().map_err(|_| ConfigError::invalid(file, key, value, "expected a port number"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Most memory one query may reserve on this node.
    pub fn max_query_memory_per_node(&self) -> u64 {
        self.max_query_memory_per_node.unwrap_or_else(|| self.memory_pool_bytes())
    }

    /// Where spill files go (`Disabled`: spilling operators fail instead).
    pub fn disk_manager(&self) -> datafusion::execution::disk_manager::DiskManagerMode {
        use datafusion::execution::disk_manager::DiskManagerMode;
        match (self.spill_disabled, self.spill_paths.is_empty()) {
            (true, _) => DiskManagerMode::Disabled,
            (false, true) => DiskManagerMode::OsTmpDirectory,
            (false, false) => DiskManagerMode::Directories(self.spill_paths.clone()),
        }
    }

    /// The pool size to use on this machine.
    pub fn memory_pool_bytes(&self) -> u64 {
        self.memory_pool_bytes.unwrap_or_else(|| {
            let mut system = sysinfo::System::new();
            system.refresh_memory();
            (system.total_memory() / 2).max(1 << 30)
        })
    }
}
