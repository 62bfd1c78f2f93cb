//! What writing statements do to a `files` catalog (its DDL operations and new tables):
//! every change commits by creating one object that must not exist yet (see
//! `files_table`); the read side, which DataFusion plans against, is the parent module.

use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};

use flotilla_proto::{ErrorCode, FlotillaError};

use super::*;

/// A new table being written under its own id; [`PendingTable::publish`] creates its entry,
/// making it visible whole. Dropped unpublished, what was written for it is deleted.
#[derive(Debug)]
pub struct PendingTable {
    root: Arc<Root>,
    dir: Path,
    meta: TableMeta,
    name: crate::session::TableName,
    /// The marker of the schema (created by CREATE SCHEMA) when it had one: it must still
    /// be there once the table is published, else the schema was dropped meanwhile.
    schema_marker: Option<Path>,
    published: bool,
}

impl PendingTable {
    /// The new table, to write into.
    pub async fn table(&self) -> Result<FilesTable> {
        FilesTable::open(&self.root, self.dir.clone(), self.meta.clone(), false).await
    }

    /// Makes the table visible, whole; TABLE_ALREADY_EXISTS when another got there first,
    /// SCHEMA_NOT_FOUND when its schema was dropped while it was written (DROP SCHEMA takes
    /// the schema's marker away before it looks for tables one last time, so either it sees
    /// this table and keeps the schema, or this sees the marker gone and takes the table
    /// back).
    pub async fn publish(mut self) -> Result<(), FlotillaError> {
        let entry = Entry::Table(self.meta.clone());
        let store = self.root.store().clone();
        match files_table::write_entry(store.as_ref(), &self.dir, &entry, PutMode::Create).await {
            Ok(()) => {
                if let Some(marker) = &self.schema_marker {
                    if let Err(object_store::Error::NotFound { .. }) = store.head(marker).await {
                        let _ = store.delete(&files_table::entry_path(&self.dir)).await;
                        let crate::session::TableName { catalog, schema, table } = &self.name;
                        return Err(FlotillaError::new(
                            ErrorCode::SchemaNotFound,
                            format!("Schema '{catalog}.{schema}' was dropped while table '{table}' was created"),
                        ));
                    }
                }
                self.published = true;
                Ok(())
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                let crate::session::TableName { catalog, schema, table } = &self.name;
                Err(table_exists_error(catalog, schema, table))
            }
            Err(error) => Err(store_error(&format!("create table {}", self.name.table), error)),
        }
    }
}

impl Drop for PendingTable {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let (root, dir, id) = (self.root.clone(), self.dir.clone(), self.meta.id.clone());
        let marker = self.schema_marker.clone();
        files_store::sweep_later(move || {
            let (root, dir, id, marker) = (root.clone(), dir.clone(), id.clone(), marker.clone());
            async move {
                if let Ok(objects) = files_table::objects_of(root.store().as_ref(), &dir, &id).await {
                    let _ = files_store::delete_all(root.store(), objects).await;
                }
                root.prune(&dir);
                // The schema was dropped while this table was written: what this left of its
                // directory goes too (a directory is a schema on a local root).
                if let Some(marker) = &marker {
                    if let Err(object_store::Error::NotFound { .. }) = root.store().head(marker).await {
                        let schema_dir: Path = dir.parts().take(dir.parts().count().saturating_sub(1)).collect();
                        root.prune(&schema_dir);
                    }
                }
            }
        });
    }
}

/// Moves `objects` (under `from`) to the same places under `to`: copies them, then `commit`
/// (which makes the copy the real one, or refuses), then deletes the originals.
async fn copy_under(
    store: &Arc<dyn ObjectStore>,
    objects: &[Path],
    from: &Path,
    to: &Path,
) -> object_store::Result<Vec<Path>> {
    let targets: Vec<(Path, Path)> = objects
        .iter()
        .map(|object| {
            let target = match object.prefix_match(from) {
                Some(parts) => parts.fold(to.clone(), |path, part| path.join(part)),
                None => to.clone(),
            };
            (object.clone(), target)
        })
        .collect();
    let store = store.clone();
    futures::stream::iter(targets.clone())
        .map(move |(object, target)| {
            let store = store.clone();
            async move { store.copy(&object, &target).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<object_store::Result<Vec<()>>>()?;
    Ok(targets.into_iter().map(|(_, target)| target).collect())
}

/// What writing statements do to a `files` catalog.
impl FilesCatalog {
    async fn schema_dir(&self, catalog: &str, schema: &str) -> Result<Path, FlotillaError> {
        let names = schema_names(&self.root).await.map_err(|e| store_error("list schemas", e))?;
        if valid_name(schema) && names.iter().any(|name| name == schema) {
            Ok(Path::from(schema))
        } else {
            Err(FlotillaError::new(ErrorCode::SchemaNotFound, format!("Schema '{catalog}.{schema}' does not exist")))
        }
    }

    async fn locate(&self, schema_dir: &Path, name: &str) -> Result<Option<Found>, FlotillaError> {
        locate(&self.root, schema_dir, name).await.map_err(|e| store_error(&format!("look up {name}"), e))
    }

    /// `CREATE SCHEMA`: a new directory. `Ok(false)`: it existed (with IF NOT EXISTS).
    pub async fn create_schema(&self, catalog: &str, schema: &str, if_not_exists: bool) -> Result<bool, FlotillaError> {
        if !valid_name(schema) {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Invalid schema name '{schema}': use lowercase letters, digits and '_'"),
            ));
        }
        let exists = || match if_not_exists {
            true => Ok(false),
            false => Err(FlotillaError::new(
                ErrorCode::SchemaAlreadyExists,
                format!("Schema '{catalog}.{schema}' already exists"),
            )),
        };
        if self.schema_dir(catalog, schema).await.is_ok() {
            return exists();
        }
        let marker = schema_marker(&Path::from(schema));
        let store = self.root.store();
        match files_store::write_json(store, &marker, &serde_json::Map::new(), PutMode::Create).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => exists(),
            Err(error) => Err(store_error(&format!("create schema {schema}"), error)),
        }
    }

    /// `DROP SCHEMA`: only an empty one (no tables). `Ok(false)`: absent (with IF EXISTS).
    pub async fn drop_schema(&self, catalog: &str, schema: &str, if_exists: bool) -> Result<bool, FlotillaError> {
        let dir = match self.schema_dir(catalog, schema).await {
            Ok(dir) => dir,
            Err(_) if if_exists => return Ok(false),
            Err(error) => return Err(error),
        };
        let not_empty =
            || FlotillaError::new(ErrorCode::SchemaNotEmpty, format!("Cannot drop non-empty schema '{schema}'"));
        let listed = || async { table_names(&self.root, &dir, false).await.map_err(|e| store_error("list tables", e)) };
        if !listed().await?.is_empty() {
            return Err(not_empty());
        }
        // The marker goes first, then the tables are looked for once more: a CREATE TABLE
        // AS publishing meanwhile either is seen here (the schema stays) or finds the marker
        // gone (and takes its table back).
        let store = self.root.store();
        let marker = schema_marker(&dir);
        let had_marker = match store.delete(&marker).await {
            Ok(()) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(error) => return Err(store_error(&format!("drop schema {schema}"), error)),
        };
        if !listed().await?.is_empty() {
            if had_marker {
                let restored = files_store::write_json(store, &marker, &serde_json::Map::new(), PutMode::Create).await;
                if let Err(error) = restored.or_else(|e| match e {
                    object_store::Error::AlreadyExists { .. } => Ok(()),
                    other => Err(other),
                }) {
                    tracing::warn!(%error, schema, "could not restore the marker of a schema that stays");
                }
            }
            return Err(not_empty());
        }
        // What is left: remains of failed writes.
        let objects = files_store::list_all(store, &dir).await.map_err(|e| store_error("list", e))?;
        let paths = objects.into_iter().map(|o| o.location).collect();
        files_store::delete_all(store, paths).await.map_err(|e| store_error(&format!("drop schema {schema}"), e))?;
        self.root.remove_remains(&dir);
        Ok(true)
    }

    /// The entry of a table created through Flotilla (`None`: no such table, a view, or
    /// plain files).
    pub async fn table_meta(&self, schema: &str, table: &str) -> Result<Option<TableMeta>, FlotillaError> {
        if !valid_name(schema) {
            return Ok(None);
        }
        match self.locate(&Path::from(schema), table).await? {
            Some(Found::Entry { entry: Entry::Table(meta), .. }) => Ok(Some(meta)),
            _ => Ok(None),
        }
    }

    /// A table created through Flotilla, at its latest version (`None`: no such table, a
    /// view, or plain files).
    pub async fn open_table(&self, schema: &str, table: &str) -> Result<Option<FilesTable>, FlotillaError> {
        if !valid_name(schema) {
            return Ok(None);
        }
        match self.locate(&Path::from(schema), table).await? {
            Some(Found::Entry { dir, entry: Entry::Table(meta) }) => {
                let opened = FilesTable::open(&self.root, dir, meta, true).await;
                opened.map(Some).map_err(|e| crate::error::from_datafusion(&e))
            }
            _ => Ok(None),
        }
    }

    /// Every table created through Flotilla, as (schema, table); names that cannot be read
    /// are left out.
    pub async fn tables(&self) -> Result<Vec<(String, String)>, FlotillaError> {
        let mut tables = Vec::new();
        for schema in schema_names(&self.root).await.map_err(|e| store_error("list schemas", e))? {
            let names = table_names(&self.root, &Path::from(schema.as_str()), true)
                .await
                .map_err(|e| store_error(&format!("list the tables of {schema}"), e))?;
            for table in names {
                if let Ok(Some(Found::Entry { entry: Entry::Table(_), .. })) =
                    locate(&self.root, &Path::from(schema.as_str()), &table).await
                {
                    tables.push((schema.clone(), table));
                }
            }
        }
        Ok(tables)
    }

    /// Whether the table exists (a schema that does not is an error).
    pub async fn table_exists(&self, catalog: &str, schema: &str, table: &str) -> Result<bool, FlotillaError> {
        let dir = self.schema_dir(catalog, schema).await?;
        Ok(self.locate(&dir, table).await?.is_some())
    }

    /// Starts a new table, to be written into and published.
    pub async fn new_table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        meta: TableMeta,
    ) -> Result<PendingTable, FlotillaError> {
        if !valid_name(table) {
            return Err(FlotillaError::new(
                ErrorCode::NotSupported,
                format!("Invalid table name '{table}': use lowercase letters, digits and '_'"),
            ));
        }
        let schema_dir = self.schema_dir(catalog, schema).await?;
        let marker = schema_marker(&schema_dir);
        let schema_marker = match self.root.store().head(&marker).await {
            Ok(_) => Some(marker),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => return Err(store_error(&format!("create table {table}"), error)),
        };
        let dir = schema_dir.join(table);
        let name = crate::session::TableName { catalog: catalog.into(), schema: schema.into(), table: table.into() };
        Ok(PendingTable { root: self.root.clone(), dir, meta, name, schema_marker, published: false })
    }

    /// `DROP TABLE`: the entry goes first (the table disappears at once), then its files.
    /// `Ok(false)`: absent (with IF EXISTS).
    pub async fn drop_table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        let store = self.root.store();
        let dropped = |e| store_error(&format!("drop table {table}"), e);
        let objects = match self.locate(&schema_dir, table).await? {
            None if if_exists => return Ok(false),
            None => return Err(table_not_found(catalog, schema, table)),
            Some(Found::Entry { entry: Entry::View(_), .. }) => {
                return Err(FlotillaError::not_supported(format!(
                    "'{catalog}.{schema}.{table}' is a view: use DROP VIEW"
                )))
            }
            Some(Found::Entry { dir, entry: Entry::Table(meta) }) => {
                store.delete(&files_table::entry_path(&dir)).await.map_err(dropped)?;
                files_table::objects_of(store, &dir, &meta.id).await.map_err(dropped)?
            }
            Some(Found::Files { path, folder: true, .. }) => {
                files_store::list_all(store, &path).await.map_err(dropped)?.into_iter().map(|o| o.location).collect()
            }
            Some(Found::Files { path, .. }) => vec![path],
        };
        files_store::delete_all(store, objects).await.map_err(dropped)?;
        self.root.prune(&schema_dir.clone().join(table));
        Ok(true)
    }

    /// `ALTER TABLE ... RENAME TO`: the table's files are copied to the new name (hard links
    /// locally, server-side copies on S3), the new name's entry is created (the commit:
    /// TABLE_ALREADY_EXISTS when taken), then the old name goes.
    pub async fn rename_table(
        &self,
        catalog: &str,
        from: (&str, &str),
        to: (&str, &str),
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let from_dir = self.schema_dir(catalog, from.0).await?;
        let to_dir = self.schema_dir(catalog, to.0).await?;
        // (A view is not a table to rename.)
        let found = match self.locate(&from_dir, from.1).await? {
            Some(Found::Entry { entry: Entry::View(_), .. }) | None if if_exists => return Ok(false),
            Some(Found::Entry { entry: Entry::View(_), .. }) | None => {
                return Err(table_not_found(catalog, from.0, from.1))
            }
            Some(found) => found,
        };
        if !valid_name(to.1) {
            return Err(FlotillaError::not_supported(format!("Invalid table name '{}'", to.1)));
        }
        if self.locate(&to_dir, to.1).await?.is_some() {
            return Err(table_exists_error(catalog, to.0, to.1));
        }
        let store = self.root.store();
        let failed = |e| store_error(&format!("rename table {}", from.1), e);
        match found {
            Found::Entry { entry: Entry::View(_), .. } => return Err(table_not_found(catalog, from.0, from.1)),
            Found::Entry { dir, entry: Entry::Table(meta) } => {
                let target = to_dir.join(to.1);
                let objects = files_table::objects_of(store, &dir, &meta.id).await.map_err(failed)?;
                let copies = copy_under(store, &objects, &dir, &target).await.map_err(failed)?;
                let entry = Entry::Table(meta);
                match files_table::write_entry(store, &target, &entry, PutMode::Create).await {
                    Ok(()) => {}
                    Err(error) => {
                        let _ = files_store::delete_all(store, copies).await;
                        return Err(match error {
                            object_store::Error::AlreadyExists { .. } => table_exists_error(catalog, to.0, to.1),
                            error => failed(error),
                        });
                    }
                }
                store.delete(&files_table::entry_path(&dir)).await.map_err(failed)?;
                files_store::delete_all(store, objects).await.map_err(failed)?;
                self.root.prune(&dir);
            }
            Found::Files { path, extension, folder } => {
                let (objects, target) = match folder {
                    true => {
                        let objects = files_store::list_all(store, &path).await.map_err(failed)?;
                        (objects.into_iter().map(|o| o.location).collect::<Vec<_>>(), to_dir.join(to.1))
                    }
                    false => (vec![path.clone()], to_dir.join(format!("{}.{extension}", to.1))),
                };
                copy_under(store, &objects, &path, &target).await.map_err(failed)?;
                files_store::delete_all(store, objects).await.map_err(failed)?;
                self.root.prune(&path);
            }
        }
        Ok(true)
    }

    /// `CREATE [OR REPLACE] VIEW`: the definition as the name's entry (a new entry, or the
    /// next revision of the view's); TABLE_ALREADY_EXISTS when a table (or, without OR
    /// REPLACE, a view) has the name.
    pub async fn create_view(
        &self,
        catalog: &str,
        schema: &str,
        view: &str,
        definition: &ViewDefinition,
        or_replace: bool,
    ) -> Result<(), FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        if !valid_name(view) {
            return Err(FlotillaError::not_supported(format!("Invalid view name '{view}'")));
        }
        let dir = schema_dir.clone().join(view);
        let store = self.root.store().as_ref();
        let failed = |error| store_error(&format!("create view {view}"), error);
        match self.locate(&schema_dir, view).await? {
            Some(Found::Entry { entry: Entry::View(existing), .. }) if or_replace => {
                let replacement = Entry::View(ViewDefinition { id: existing.id.clone(), ..definition.clone() });
                let replace = |entry: &mut Entry| {
                    *entry = replacement.clone();
                    Ok(())
                };
                match files_table::revise_entry(store, &dir, &existing.id, replace).await {
                    Ok(()) => return Ok(()),
                    // Dropped meanwhile: create it anew, below.
                    Err(RevisionError::Gone) => {}
                    Err(RevisionError::Refused(error)) => return Err(error),
                    Err(RevisionError::Store(error)) => return Err(failed(error)),
                }
            }
            Some(_) => return Err(table_exists_error(catalog, schema, view)),
            None => {}
        }
        match files_table::write_entry(store, &dir, &Entry::View(definition.clone()), PutMode::Create).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => Err(table_exists_error(catalog, schema, view)),
            Err(error) => Err(failed(error)),
        }
    }

    /// `DROP VIEW`. `Ok(false)`: absent (with IF EXISTS).
    pub async fn drop_view(
        &self,
        catalog: &str,
        schema: &str,
        view: &str,
        if_exists: bool,
    ) -> Result<bool, FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        match self.locate(&schema_dir, view).await? {
            Some(Found::Entry { dir, entry: Entry::View(definition) }) => {
                let store = self.root.store();
                let failed = |e| store_error(&format!("drop view {view}"), e);
                store.delete(&files_table::entry_path(&dir)).await.map_err(failed)?;
                // Its revisions.
                let objects = files_table::objects_of(store.as_ref(), &dir, &definition.id).await.map_err(failed)?;
                files_store::delete_all(store, objects).await.map_err(failed)?;
                self.root.prune(&dir);
                Ok(true)
            }
            _ if if_exists => Ok(false),
            _ => Err(FlotillaError::new(
                ErrorCode::TableNotFound,
                format!("View '{catalog}.{schema}.{view}' does not exist"),
            )),
        }
    }

    /// `COMMENT ON TABLE` (`column`: None) or `COMMENT ON COLUMN`; `comment` None removes it.
    pub async fn set_comment(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
        column: Option<&str>,
        comment: Option<String>,
    ) -> Result<(), FlotillaError> {
        let schema_dir = self.schema_dir(catalog, schema).await?;
        let (dir, id) = match self.locate(&schema_dir, table).await? {
            Some(Found::Entry { dir, entry: Entry::Table(meta) }) => (dir, meta.id),
            None => return Err(table_not_found(catalog, schema, table)),
            Some(_) => {
                return Err(FlotillaError::not_supported(format!(
                "Comments are kept only for tables created through Flotilla; '{catalog}.{schema}.{table}' is not one"
            )))
            }
        };
        let set = |entry: &mut Entry| {
            let Entry::Table(meta) = entry else { return Err(table_not_found(catalog, schema, table)) };
            match column {
                None => meta.comment = comment.clone(),
                Some(name) => {
                    let column = meta.columns.iter_mut().find(|c| c.name == name).ok_or_else(|| {
                        FlotillaError::new(ErrorCode::ColumnNotFound, format!("Column '{name}' does not exist"))
                    })?;
                    column.comment = comment.clone();
                }
            }
            Ok(())
        };
        match files_table::revise_entry(self.root.store().as_ref(), &dir, &id, set).await {
            Ok(()) => Ok(()),
            Err(RevisionError::Gone) => Err(table_not_found(catalog, schema, table)),
            Err(RevisionError::Refused(error)) => Err(error),
            Err(RevisionError::Store(error)) => Err(store_error(&format!("comment on {table}"), error)),
        }
    }
}
