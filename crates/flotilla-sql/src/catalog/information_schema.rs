//! Trino's per-catalog `information_schema` (`schemata`, `tables`, `columns`, `views`), with
//! Trino's column names and Trino type names in `data_type`, which SQLAlchemy and dbt parse.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::TableType;
use flotilla_protocol::TrinoType;

use super::virtual_table::{optional_text, rows_to_table, text};

pub const INFORMATION_SCHEMA: &str = "information_schema";
const TABLES: &[&str] = &["columns", "schemata", "tables", "views"];

/// A catalog with Trino's `information_schema` added to its schemas.
#[derive(Debug)]
pub struct WithInformationSchema {
    name: String,
    inner: Arc<dyn CatalogProvider>,
}

impl WithInformationSchema {
    pub fn new(name: String, inner: Arc<dyn CatalogProvider>) -> Self {
        Self { name, inner }
    }

    /// The catalog itself, without its `information_schema`.
    pub fn inner(&self) -> &Arc<dyn CatalogProvider> {
        &self.inner
    }
}

impl CatalogProvider for WithInformationSchema {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.inner.schema_names();
        names.push(INFORMATION_SCHEMA.to_string());
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == INFORMATION_SCHEMA {
            return Some(Arc::new(InformationSchema { catalog_name: self.name.clone(), catalog: self.inner.clone() }));
        }
        self.inner.schema(name)
    }
}

#[derive(Debug)]
struct InformationSchema {
    catalog_name: String,
    catalog: Arc<dyn CatalogProvider>,
}

fn varchar(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

/// The type name a column is listed with, e.g. `decimal(15,2)`.
pub fn trino_type_name(data_type: &DataType) -> String {
    TrinoType::from_arrow(data_type).map(|t| t.to_string()).unwrap_or_else(|_| data_type.to_string())
}

impl InformationSchema {
    /// Every (schema, table name, provider) of the catalog, information_schema included.
    async fn all_tables(&self) -> Result<Vec<(String, String, Arc<dyn TableProvider>)>> {
        let mut tables = super::catalog_tables(self.catalog.as_ref()).await?;
        // The information_schema's own tables are listed by shape only, which needs no
        // rows (and so no recursion into this listing).
        for table_name in TABLES {
            if let Some(schema) = own_schema(table_name) {
                tables.push((INFORMATION_SCHEMA.to_string(), table_name.to_string(), rows_to_table(schema, vec![])?));
            }
        }
        Ok(tables)
    }

    /// One of the information_schema tables, with its rows.
    async fn own_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(schema) = own_schema(name) else { return Ok(None) };
        let catalog = || text(self.catalog_name.clone());
        let none = || optional_text(None::<String>);
        let mut rows: Vec<Vec<ScalarValue>> = Vec::new();
        match name {
            "schemata" => {
                let mut names = super::listing::schema_names(self.catalog.as_ref()).await;
                names.push(INFORMATION_SCHEMA.to_string());
                names.sort();
                rows.extend(names.into_iter().map(|s| vec![catalog(), text(s)]));
            }
            "tables" => {
                for (schema_name, table_name, table) in self.all_tables().await? {
                    let kind = if table.table_type() == TableType::View { "VIEW" } else { "BASE TABLE" };
                    let comment = super::files_table::comments(table.as_ref()).and_then(|(table, _)| table);
                    rows.push(vec![catalog(), text(schema_name), text(table_name), text(kind), optional_text(comment)]);
                }
            }
            "columns" => {
                for (schema_name, table_name, table) in self.all_tables().await? {
                    let comments =
                        super::files_table::comments(table.as_ref()).map(|(_, columns)| columns).unwrap_or_default();
                    for (index, field) in table.schema().fields().iter().enumerate() {
                        rows.push(vec![
                            catalog(),
                            text(schema_name.clone()),
                            text(table_name.clone()),
                            text(field.name().clone()),
                            ScalarValue::Int64(Some(index as i64 + 1)),
                            none(),
                            text(if field.is_nullable() { "YES" } else { "NO" }),
                            text(trino_type_name(field.data_type())),
                            optional_text(comments.get(index).cloned().flatten()),
                            none(),
                        ]);
                    }
                }
            }
            "views" => {
                for (schema_name, table_name, table) in self.all_tables().await? {
                    if table.table_type() == TableType::View {
                        let definition = optional_text(table.get_table_definition().map(str::to_string));
                        rows.push(vec![catalog(), text(schema_name), text(table_name), definition]);
                    }
                }
            }
            _ => return Ok(None),
        }
        rows_to_table(schema, rows).map(Some)
    }
}

/// The shape of each information_schema table, with Trino's column names.
fn own_schema(name: &str) -> Option<SchemaRef> {
    let fields = match name {
        "schemata" => vec![varchar("catalog_name"), varchar("schema_name")],
        "tables" => vec![
            varchar("table_catalog"),
            varchar("table_schema"),
            varchar("table_name"),
            varchar("table_type"),
            varchar("table_comment"),
        ],
        "columns" => vec![
            varchar("table_catalog"),
            varchar("table_schema"),
            varchar("table_name"),
            varchar("column_name"),
            Field::new("ordinal_position", DataType::Int64, true),
            varchar("column_default"),
            varchar("is_nullable"),
            varchar("data_type"),
            varchar("comment"),
            varchar("extra_info"),
        ],
        "views" => {
            vec![varchar("table_catalog"), varchar("table_schema"), varchar("table_name"), varchar("view_definition")]
        }
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        self.own_table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
