//! Reads a Trino-style `etc/` directory: `config.properties` and `node.properties` for the
//! role's settings, `catalog/*.properties` for catalogs. Without a directory (or without
//! `catalog/`), the built-in defaults apply: the `tpch` catalog (and `system`).

use std::path::Path;

use flotilla_coordinator::CoordinatorConfig;
use flotilla_sql::catalog::{parse_properties, Catalogs};

/// Everything a process needs from `etc/`.
pub struct Setup {
    pub coordinator: CoordinatorConfig,
    pub catalogs: Catalogs,
}

pub fn load(etc_dir: Option<&Path>) -> Result<Setup, String> {
    let mut coordinator = CoordinatorConfig::default();
    let Some(dir) = etc_dir else {
        return Ok(Setup { coordinator, catalogs: Catalogs::defaults() });
    };
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    for name in ["config.properties", "node.properties"] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
        let properties = parse_properties(&path, &text).map_err(|e| e.to_string())?;
        coordinator.apply(&path.display().to_string(), &properties).map_err(|e| e.to_string())?;
    }
    let catalog_dir = dir.join("catalog");
    let catalogs = if catalog_dir.is_dir() {
        Catalogs::load_dir(&catalog_dir).map_err(|e| e.to_string())?
    } else {
        Catalogs::defaults()
    };
    Ok(Setup { coordinator, catalogs })
}
