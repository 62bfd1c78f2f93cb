//! The warehouse definitions file of a resource manager (`warehouse.config-file`,
//! [`flotilla_proto::warehouses`]): read at start (a broken file stops the start, see
//! [`crate::ResourceManagerConfig::validate`]), then re-read every second when it changed;
//! a broken new version is logged and the last good one kept. The definitions go into every
//! view this resource manager serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use flotilla_proto::warehouses::{parse_file, Definitions, MAX_FILE_SIZE};
use parking_lot::Mutex;

/// How often the file is checked for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Reads and parses the file.
pub fn read(path: &Path) -> Result<(Definitions, Option<SystemTime>), String> {
    let describe = |e: &dyn std::fmt::Display| format!("warehouse definitions {}: {e}", path.display());
    let metadata = std::fs::metadata(path).map_err(|e| describe(&e))?;
    if metadata.len() > MAX_FILE_SIZE {
        return Err(describe(&format!("larger than {MAX_FILE_SIZE} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| describe(&e))?;
    let definitions = parse_file(&text).map_err(|e| describe(&e))?;
    Ok((definitions, metadata.modified().ok()))
}

struct Loaded {
    definitions: Arc<Definitions>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The definitions, kept up to date with the file.
pub struct WarehouseFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for WarehouseFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarehouseFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl WarehouseFile {
    /// Starts from the file as it is (none, with a warning, when it cannot be used now).
    pub fn open(path: &Path) -> Self {
        let (definitions, modified) = read(path).unwrap_or_else(|error| {
            tracing::warn!(%error, "no warehouse definitions yet");
            (Definitions::default(), None)
        });
        let loaded = Loaded { definitions: Arc::new(definitions), modified, checked: Instant::now() };
        Self { path: path.to_path_buf(), loaded: Mutex::new(loaded) }
    }

    /// The current definitions (the file is re-read first when it changed).
    pub fn current(&self) -> Arc<Definitions> {
        let mut loaded = self.loaded.lock();
        if loaded.checked.elapsed() >= CHECK_EVERY {
            loaded.checked = Instant::now();
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if modified != loaded.modified {
                loaded.modified = modified;
                match read(&self.path) {
                    Ok((definitions, _)) => {
                        tracing::info!(path = %self.path.display(), warehouses = definitions.warehouses.len(), "warehouse definitions reloaded");
                        loaded.definitions = Arc::new(definitions);
                    }
                    Err(error) => tracing::warn!(%error, "keeping the previous warehouse definitions"),
                }
            }
        }
        loaded.definitions.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("flotilla-warehouses-{}", flotilla_proto::random_hex(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("warehouses.json");
        let write = |text: &str, later: u64| {
            std::fs::write(&path, text).unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(SystemTime::now() + Duration::from_secs(later)).unwrap();
        };
        write(r#"{"warehouses": [{"name": "a", "type": "read"}]}"#, 0);
        assert!(read(&path).is_ok());
        let file = WarehouseFile::open(&path);
        assert_eq!(file.current().warehouses[0].name, "a");
        write("{ broken", 5);
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert_eq!(file.current().warehouses[0].name, "a", "the last good definitions stay");
        write(r#"{"warehouses": [{"name": "b", "type": "write"}]}"#, 10);
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert_eq!(file.current().warehouses[0].name, "b");
        assert!(read(&dir.join("missing.json")).unwrap_err().contains("missing.json"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
