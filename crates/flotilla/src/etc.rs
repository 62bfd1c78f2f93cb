//! Reads a Trino-style `etc/` directory: `config.properties` and `node.properties` for the
//! settings of every role (and, as Trino, `access-control.properties` and
//! `password-authenticator.properties` for security, `event-listener.properties` for query
//! events), `catalog/*.properties` for catalogs.
//! Without a directory (or without `catalog/`), the built-in defaults apply: the `tpch`
//! catalog (and `system`).
//!
//! One `etc/` may serve every role (as `flotilla up` does): a key is accepted when any role
//! declares it, and each role reads the keys it knows.

use std::collections::BTreeMap;
use std::path::Path;

use flotilla_coordinator::CoordinatorConfig;
use flotilla_gateway::GatewayConfig;
use flotilla_proto::config::{ConfigError, Setting};
use flotilla_proto::NodeConfig;
use flotilla_resource_manager::ResourceManagerConfig;
use flotilla_sql::catalog::{parse_properties, Catalogs};
use flotilla_worker::WorkerConfig;

/// Everything a process needs from `etc/`.
pub struct Setup {
    pub node: NodeConfig,
    pub coordinator: CoordinatorConfig,
    pub resource_manager: ResourceManagerConfig,
    pub worker: WorkerConfig,
    pub gateway: GatewayConfig,
    pub catalogs: Catalogs,
}

/// Every declared setting of every role, in the order the README lists them.
pub fn all_settings() -> Vec<&'static Setting> {
    flotilla_proto::NODE_SETTINGS
        .iter()
        .chain(flotilla_coordinator::SETTINGS)
        .chain(flotilla_resource_manager::SETTINGS)
        .chain(flotilla_worker::SETTINGS)
        .chain(flotilla_gateway::SETTINGS)
        .collect()
}

impl Setup {
    /// Applies properties from `source` (a file, or `--set` flags) to whichever roles
    /// declare them; a key no role declares is an error.
    pub fn apply_all(&mut self, source: &str, properties: &BTreeMap<String, String>) -> Result<(), String> {
        let Setup { node, coordinator, resource_manager, worker, gateway, .. } = self;
        node.apply_all(source, properties, |key, value| -> Result<bool, ConfigError> {
            Ok(coordinator.apply(source, key, value)?
                || resource_manager.apply(source, key, value)?
                || worker.apply(source, key, value)?
                || gateway.apply(source, key, value)?)
        })
        .map_err(|e| e.to_string())
    }
}

pub fn load(etc_dir: Option<&Path>) -> Result<Setup, String> {
    let mut setup = Setup {
        node: NodeConfig::default(),
        coordinator: CoordinatorConfig::default(),
        resource_manager: ResourceManagerConfig::default(),
        worker: WorkerConfig::default(),
        gateway: GatewayConfig::default(),
        catalogs: Catalogs::defaults(),
    };
    let Some(dir) = etc_dir else {
        return Ok(setup);
    };
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    for name in [
        "config.properties",
        "node.properties",
        "resource-groups.properties",
        "access-control.properties",
        "password-authenticator.properties",
        "event-listener.properties",
    ] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        let properties = parse_properties(&path, &text).map_err(|e| e.to_string())?;
        let file = path.display().to_string();
        setup.apply_all(&file, &properties)?;
    }
    let catalog_dir = dir.join("catalog");
    if catalog_dir.is_dir() {
        setup.catalogs = Catalogs::load_dir(&catalog_dir).map_err(|e| e.to_string())?;
    }
    let warehouses = dir.join("warehouses.json");
    if setup.resource_manager.warehouses_file.is_none() && warehouses.is_file() {
        setup.resource_manager.warehouses_file = Some(warehouses);
    }
    setup.node.security.validate().map_err(|e| e.to_string())?;
    Ok(setup)
}
