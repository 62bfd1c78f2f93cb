//! Catalogs as Trino configures them: one `etc/catalog/NAME.properties` file per catalog with
//! `connector.name=...` (`tpch`, or `files` for Parquet/CSV/JSON files under a directory),
//! plus the built-in `system` catalog, and Trino's per-catalog `information_schema` added to
//! every one of them.
//!
//! ```text
//!  etc/catalog/*.properties ──▶ Catalogs::load ──▶ { tpch: TpchCatalog, ... }
//!                                                      │ provider_list(runtime)
//!                                                      ▼
//!        DataFusion CatalogProviderList: each catalog + information_schema, and `system`
//! ```

pub mod blackhole;
pub mod files;
pub mod files_store;
pub mod files_table;
pub mod files_write;
mod information_schema;
pub mod listing;
mod properties;
pub mod system;
pub mod tpch;
pub mod tpch_scan;
pub mod view_expansion;
mod virtual_table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProviderList};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};

pub use information_schema::{trino_type_name as information_schema_type_name, WithInformationSchema};
pub use properties::{environment_substituted, parse_properties, Properties};
pub use system::{NodeRow, QueryRow, RuntimeSource, WorkerPlace, SYSTEM_CATALOG};

/// Catalog configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The catalog directory or a file in it could not be read.
    #[error("failed to read {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A line of a properties file is not `key=value`.
    #[error("{path}:{line}: expected key=value, got '{text}'")]
    Syntax { path: PathBuf, line: usize, text: String },
    /// A `${ENV:NAME}` reference that cannot be resolved.
    #[error("{path}:{line}: {message}")]
    Environment { path: PathBuf, line: usize, message: String },
    /// `connector.name` is absent.
    #[error("{path}: connector.name is required")]
    MissingConnector { path: PathBuf },
    /// `connector.name` names a connector Flotilla does not have.
    #[error("{path}: unknown connector '{connector}' (available: tpch, files, blackhole)")]
    UnknownConnector { path: PathBuf, connector: String },
    /// A property the connector does not know.
    #[error("{path}: unknown property '{key}' for connector {connector}")]
    UnknownProperty { path: PathBuf, connector: String, key: String },
    /// A property value the connector cannot use.
    #[error("invalid value for {key}: {message}")]
    InvalidProperty { key: String, message: String },
    /// The catalog name is reserved or not a valid identifier.
    #[error("invalid catalog name '{0}': use lowercase letters, digits and '_', and not 'system'")]
    InvalidName(String),
}

/// One configured catalog.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub name: String,
    pub connector: String,
    pub provider: Arc<dyn CatalogProvider>,
    /// The same catalog when statements can write to it (`files`).
    pub writable: Option<Arc<files::FilesCatalog>>,
    /// The same catalog when it is a `blackhole` one.
    pub blackhole: Option<Arc<blackhole::BlackholeCatalog>>,
}

/// The configured catalogs (not counting `system`).
#[derive(Debug, Clone, Default)]
pub struct Catalogs {
    entries: BTreeMap<String, CatalogEntry>,
}

impl Catalogs {
    /// The built-in defaults: a `tpch` catalog with Trino's default column naming.
    pub fn defaults() -> Self {
        let mut catalogs = Catalogs::default();
        catalogs.insert(CatalogEntry {
            name: "tpch".into(),
            connector: "tpch".into(),
            provider: Arc::new(tpch::TpchCatalog::new(tpch::ColumnNaming::Simplified)),
            writable: None,
            blackhole: None,
        });
        catalogs
    }

    /// Loads every `*.properties` file of `dir`; the file name (without extension) is the
    /// catalog name.
    pub fn load_dir(dir: &Path) -> Result<Self, CatalogError> {
        let io = |e: std::io::Error| CatalogError::Io { path: dir.to_path_buf(), message: e.to_string() };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "properties"))
            .collect();
        files.sort();
        let mut catalogs = Catalogs::default();
        for path in files {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CatalogError::Io { path: path.clone(), message: e.to_string() })?;
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let properties = parse_properties(&path, &text)?;
            catalogs.insert(Self::build(&path, &name, properties)?);
        }
        // Every node finds a bucket's objects through one store: catalogs sharing a bucket
        // must configure it alike.
        let mut buckets: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (name, catalog) in catalogs.writable() {
            let (url, _, settings) = catalog.root().object_store();
            if let Some((other, other_settings)) = buckets.get(url.as_str()) {
                if *other_settings != *settings {
                    return Err(CatalogError::InvalidProperty {
                        key: "files.root".into(),
                        message: format!(
                            "catalogs {other} and {name} both use {} with different S3 settings: give them the same ones",
                            url.as_str()
                        ),
                    });
                }
            }
            buckets.insert(url.as_str().to_string(), (name, settings.clone()));
        }
        Ok(catalogs)
    }

    /// The object stores DataFusion reads and writes the catalogs' files through (local
    /// files, and each S3 bucket a catalog uses), for every node's runtime.
    pub fn object_stores(&self) -> Arc<dyn ObjectStoreRegistry> {
        let registry = DefaultObjectStoreRegistry::new();
        for catalog in self.writable().values() {
            let (url, store, _) = catalog.root().object_store();
            registry.register_store(url.as_ref(), store.clone());
        }
        Arc::new(registry)
    }

    /// Builds one catalog from its properties.
    pub fn build(path: &Path, name: &str, mut properties: Properties) -> Result<CatalogEntry, CatalogError> {
        let valid_name = !name.is_empty()
            && name != SYSTEM_CATALOG
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_name {
            return Err(CatalogError::InvalidName(name.to_string()));
        }
        let connector = properties
            .remove("connector.name")
            .ok_or_else(|| CatalogError::MissingConnector { path: path.to_path_buf() })?;
        let mut writable = None;
        let mut blackhole = None;
        let provider: Arc<dyn CatalogProvider> = match connector.as_str() {
            "tpch" => {
                let naming = match properties.remove("tpch.column-naming") {
                    Some(value) => tpch::ColumnNaming::parse(&value)?,
                    None => tpch::ColumnNaming::Simplified,
                };
                Arc::new(tpch::TpchCatalog::new(naming))
            }
            "files" => {
                let root = properties.remove("files.root").ok_or_else(|| CatalogError::InvalidProperty {
                    key: "files.root".into(),
                    message: "required: the directory holding the catalog's schemas".into(),
                })?;
                let catalog = Arc::new(files::FilesCatalog::new(name, &root, &mut properties)?);
                writable = Some(catalog.clone());
                catalog
            }
            "blackhole" => {
                let catalog = Arc::new(blackhole::BlackholeCatalog::default());
                blackhole = Some(catalog.clone());
                catalog
            }
            other => {
                return Err(CatalogError::UnknownConnector { path: path.to_path_buf(), connector: other.to_string() })
            }
        };
        if let Some(key) = properties.keys().next() {
            return Err(CatalogError::UnknownProperty { path: path.to_path_buf(), connector, key: key.clone() });
        }
        Ok(CatalogEntry { name: name.to_string(), connector, provider, writable, blackhole })
    }

    /// The `blackhole` catalogs, by name.
    pub fn blackholes(&self) -> BTreeMap<String, Arc<blackhole::BlackholeCatalog>> {
        self.entries.values().filter_map(|e| Some((e.name.clone(), e.blackhole.clone()?))).collect()
    }

    /// The catalogs statements can write to, by name.
    pub fn writable(&self) -> BTreeMap<String, Arc<files::FilesCatalog>> {
        self.entries.values().filter_map(|e| Some((e.name.clone(), e.writable.clone()?))).collect()
    }

    pub fn insert(&mut self, entry: CatalogEntry) {
        self.entries.insert(entry.name.clone(), entry);
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// The catalogs DataFusion resolves names against: each configured catalog and `system`,
    /// all with an `information_schema`, and each behind the access control layer
    /// ([`crate::access::SecuredCatalog`]: listings filtered, reads recorded).
    pub fn provider_list(&self, runtime: Arc<dyn RuntimeSource>) -> Arc<dyn CatalogProviderList> {
        let secured = |name: &str, provider: Arc<dyn CatalogProvider>| -> Arc<dyn CatalogProvider> {
            Arc::new(crate::access::SecuredCatalog::new(name.to_string(), provider))
        };
        let list = MemoryCatalogProviderList::new();
        // The system tables list the configured catalogs (sorted by name, as `entries` is);
        // they add `system` itself where Trino lists it.
        let configured: Vec<(String, String, Arc<dyn CatalogProvider>)> = self
            .entries
            .values()
            .map(|e| (e.name.clone(), e.connector.clone(), secured(&e.name, e.provider.clone())))
            .collect();
        let system: Arc<dyn CatalogProvider> =
            Arc::new(system::SystemCatalog::new(Arc::new(configured.clone()), runtime));
        let providers = configured.into_iter().map(|(name, _, provider)| (name, provider));
        for (name, provider) in providers.chain([(SYSTEM_CATALOG.to_string(), secured(SYSTEM_CATALOG, system))]) {
            list.register_catalog(name.clone(), Arc::new(WithInformationSchema::new(name, provider)));
        }
        Arc::new(crate::access::SecuredCatalogList::new(Arc::new(list)))
    }
}

/// Every table of a catalog as (schema, table, provider), sorted by schema then table; the
/// one walk behind the metadata tables of `information_schema` and `system`.
/// A view that cannot be planned is listed all the same ([`view_expansion::listing`]).
pub(crate) async fn catalog_tables(
    catalog: &dyn CatalogProvider,
) -> datafusion::common::Result<Vec<(String, String, Arc<dyn datafusion::catalog::TableProvider>)>> {
    view_expansion::listing(list_catalog_tables(catalog)).await
}

async fn list_catalog_tables(
    catalog: &dyn CatalogProvider,
) -> datafusion::common::Result<Vec<(String, String, Arc<dyn datafusion::catalog::TableProvider>)>> {
    let mut tables = Vec::new();
    for schema_name in listing::schema_names(catalog).await {
        let Some(schema) = catalog.schema(&schema_name) else { continue };
        for table_name in listing::table_names(schema.as_ref()).await {
            // A table renamed or dropped while it is read fails that read: its manifest goes
            // between the listing and the read (dbt's second run renames `t` to `t__dbt_backup`
            // while its other thread reads information_schema). Read it once more, and leave
            // it out if it is gone by then, as Trino's listings do.
            let table = match schema.table(&table_name).await {
                Ok(table) => table,
                Err(first) => match schema.table(&table_name).await {
                    Ok(table) => table,
                    Err(_) => return Err(first),
                },
            };
            if let Some(table) = table {
                tables.push((schema_name.clone(), table_name, table));
            }
        }
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tpch_catalog_builds_with_column_naming() {
        let entry = Catalogs::build(
            Path::new("etc/catalog/tpch.properties"),
            "tpch",
            props(&[("connector.name", "tpch"), ("tpch.column-naming", "STANDARD")]),
        )
        .unwrap();
        assert_eq!(entry.connector, "tpch");
    }

    #[test]
    fn bad_catalog_files_are_rejected_with_the_reason() {
        let path = Path::new("x.properties");
        assert!(matches!(Catalogs::build(path, "x", props(&[])), Err(CatalogError::MissingConnector { .. })));
        assert!(matches!(
            Catalogs::build(path, "x", props(&[("connector.name", "hive")])),
            Err(CatalogError::UnknownConnector { .. })
        ));
        assert!(matches!(
            Catalogs::build(path, "x", props(&[("connector.name", "tpch"), ("tpch.bogus", "1")])),
            Err(CatalogError::UnknownProperty { .. })
        ));
        assert!(matches!(
            Catalogs::build(path, "system", props(&[("connector.name", "tpch")])),
            Err(CatalogError::InvalidName(_))
        ));
        assert!(matches!(
            Catalogs::build(path, "x", props(&[("connector.name", "tpch"), ("tpch.column-naming", "odd")])),
            Err(CatalogError::InvalidProperty { .. })
        ));
    }
}
