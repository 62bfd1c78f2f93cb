//! Worker settings, each declared once (the README's table lists [`SETTINGS`]).

use flotilla_proto::config::{ConfigError, Setting};
use flotilla_proto::parse_data_size;

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "memory.pool-size",
        default: "(half the machine's memory)",
        roles: "worker",
        doc: "Size of the node's query memory pool, as a data size (`4GB`)",
    },
    Setting {
        name: "worker.data-port",
        default: "0 (a free port)",
        roles: "worker",
        doc: "Port of the worker service (tasks and their Arrow Flight data), announced to the cluster",
    },
];

#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// `None`: half of the machine's memory.
    pub memory_pool_bytes: Option<u64>,
    /// 0: any free port.
    pub data_port: u16,
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
            "worker.data-port" => {
                self.data_port =
                    value.parse().map_err(|_| ConfigError::invalid(file, key, value, "expected a port number"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
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
