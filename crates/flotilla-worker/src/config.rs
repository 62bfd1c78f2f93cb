//! Worker settings, each declared once (the README's table lists [`SETTINGS`]).

use flotilla_proto::config::{ConfigError, Setting};
use flotilla_proto::parse_data_size;

pub const SETTINGS: &[Setting] = &[Setting {
    name: "memory.pool-size",
    default: "(half the machine's memory)",
    roles: "worker",
    doc: "Size of the worker's query memory pool, as a data size (`4GB`)",
}];

#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// `None`: half of the machine's memory.
    pub memory_pool_bytes: Option<u64>,
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
