//! Metadata tables (information_schema, system) computed when a query plans: rows of scalar
//! values turned into an in-memory table.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::MemTable;

/// Builds a one-batch in-memory table from rows; each row has one value per schema field.
pub fn rows_to_table(schema: SchemaRef, rows: Vec<Vec<ScalarValue>>) -> Result<Arc<dyn TableProvider>> {
    let columns: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|index| {
            let field_type = schema.field(index).data_type();
            if rows.is_empty() {
                return Ok(datafusion::arrow::array::new_empty_array(field_type));
            }
            ScalarValue::iter_to_array(rows.iter().map(|row| row[index].clone()))
        })
        .collect::<Result<_>>()?;
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

pub fn text(value: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(value.into()))
}

pub fn optional_text(value: Option<impl Into<String>>) -> ScalarValue {
    ScalarValue::Utf8(value.map(Into::into))
}
