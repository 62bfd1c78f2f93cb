//! The result tables of `SHOW ...` and `DESCRIBE ...`, with Trino's column names.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{CatalogProviderList, TableProvider};
use datafusion::execution::session_state::SessionState;
use flotilla_proto::FlotillaError;

use crate::catalog::information_schema_type_name;
use crate::engine::{catalog_not_found, schema_not_found};
use crate::session::{SqlSession, SESSION_PROPERTIES};

/// SQL `LIKE` with `%` and `_`, in time proportional to pattern × text at worst and without
/// recursion (patterns are user input): the classic wildcard match, backing up only to the
/// last `%` seen.
pub fn like_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `%` was, and the text position it has been stretched to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('%') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some('_') => {
                p += 1;
                t += 1;
            }
            Some(c) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, stretched)) => {
                    p = star + 1;
                    t = stretched + 1;
                    backtrack = Some((star, stretched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

fn text_columns(names: &[&str], rows: Vec<Vec<Option<String>>>) -> Result<RecordBatch, FlotillaError> {
    let schema = Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>()));
    let columns: Vec<ArrayRef> = (0..names.len())
        .map(|i| Arc::new(StringArray::from(rows.iter().map(|r| r[i].clone()).collect::<Vec<_>>())) as ArrayRef)
        .collect();
    RecordBatch::try_new(schema, columns).map_err(|e| FlotillaError::internal(e.to_string()))
}

fn single_column(name: &str, mut values: Vec<String>, like: Option<&str>) -> Result<RecordBatch, FlotillaError> {
    values.retain(|v| like.is_none_or(|p| like_matches(p, v)));
    values.sort();
    text_columns(&[name], values.into_iter().map(|v| vec![Some(v)]).collect())
}

pub fn catalogs(list: &Arc<dyn CatalogProviderList>, like: Option<&str>) -> Result<RecordBatch, FlotillaError> {
    single_column("Catalog", list.catalog_names(), like)
}

pub async fn schemas(
    list: &Arc<dyn CatalogProviderList>,
    session: &SqlSession,
    catalog: Option<&str>,
    like: Option<&str>,
) -> Result<RecordBatch, FlotillaError> {
    let catalog = match catalog {
        Some(catalog) => catalog.to_string(),
        None => session.catalog_or_error()?,
    };
    let provider = list.catalog(&catalog).ok_or_else(|| catalog_not_found(&catalog))?;
    single_column("Schema", crate::catalog::listing::schema_names(provider.as_ref()).await, like)
}

pub async fn tables(
    list: &Arc<dyn CatalogProviderList>,
    session: &SqlSession,
    schema: &[String],
    like: Option<&str>,
) -> Result<RecordBatch, FlotillaError> {
    let (catalog, schema) = match schema {
        [] => (session.catalog_or_error()?, session.schema.clone().ok_or_else(crate::session::missing_schema)?),
        name => session.qualify_schema(name)?,
    };
    let provider = list.catalog(&catalog).ok_or_else(|| catalog_not_found(&catalog))?;
    let schema_provider = crate::catalog::listing::schema(provider.as_ref(), &schema)
        .await
        .ok_or_else(|| schema_not_found(&catalog, &schema))?;
    single_column("Table", crate::catalog::listing::table_names(schema_provider.as_ref()).await, like)
}

pub fn columns(table: &dyn TableProvider) -> RecordBatch {
    let rows = table
        .schema()
        .fields()
        .iter()
        .map(|f| {
            vec![
                Some(f.name().clone()),
                Some(information_schema_type_name(f.data_type())),
                Some(String::new()),
                Some(String::new()),
            ]
        })
        .collect();
    // Four text columns of equal length cannot fail to form a batch.
    text_columns(&["Column", "Type", "Extra", "Comment"], rows).expect("valid batch")
}

pub fn functions(state: &SessionState, like: Option<&str>) -> Result<RecordBatch, FlotillaError> {
    let mut entries: BTreeMap<String, (&str, Option<String>)> = BTreeMap::new();
    for (name, udf) in state.scalar_functions() {
        entries.insert(name.clone(), ("scalar", udf.documentation().map(|d| d.description.clone())));
    }
    for (name, udf) in state.aggregate_functions() {
        entries.insert(name.clone(), ("aggregate", udf.documentation().map(|d| d.description.clone())));
    }
    for (name, udf) in state.window_functions() {
        entries.insert(name.clone(), ("window", udf.documentation().map(|d| d.description.clone())));
    }
    let rows = entries
        .into_iter()
        .filter(|(name, _)| like.is_none_or(|p| like_matches(p, name)))
        .map(|(name, (kind, description))| vec![Some(name), Some(kind.to_string()), description])
        .collect();
    text_columns(&["Function", "Function Type", "Description"], rows)
}

pub fn session(session: &SqlSession, like: Option<&str>) -> Result<RecordBatch, FlotillaError> {
    let rows = SESSION_PROPERTIES
        .iter()
        .filter(|p| like.is_none_or(|pattern| like_matches(pattern, p.name)))
        .map(|p| {
            let default = (p.default)();
            let value = session.properties.get(p.name).cloned().unwrap_or_else(|| default.clone());
            [p.name.to_string(), value, default, p.type_name.to_string(), p.description.to_string()]
                .into_iter()
                .map(Some)
                .collect()
        })
        .collect();
    text_columns(&["Name", "Value", "Default", "Type", "Description"], rows)
}

pub fn describe_output(schema: &Schema) -> RecordBatch {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let types: Vec<String> = schema.fields().iter().map(|f| information_schema_type_name(f.data_type())).collect();
    let count = names.len();
    let empty = || Arc::new(StringArray::from(vec![String::new(); count])) as ArrayRef;
    let out_schema = Arc::new(Schema::new(vec![
        Field::new("Column Name", DataType::Utf8, false),
        Field::new("Catalog", DataType::Utf8, false),
        Field::new("Schema", DataType::Utf8, false),
        Field::new("Table", DataType::Utf8, false),
        Field::new("Type", DataType::Utf8, false),
        Field::new("Type Size", DataType::Int64, true),
        Field::new("Aliased", DataType::Boolean, false),
    ]));
    RecordBatch::try_new(
        out_schema,
        vec![
            Arc::new(StringArray::from(names)),
            empty(),
            empty(),
            empty(),
            Arc::new(StringArray::from(types)),
            Arc::new(datafusion::arrow::array::Int64Array::from(vec![None::<i64>; count])),
            Arc::new(BooleanArray::from(vec![false; count])),
        ],
    )
    .expect("columns match the schema")
}

pub fn describe_input(types: &BTreeMap<String, Option<DataType>>) -> RecordBatch {
    // `$1`, `$2`, ... sorted by number, not text.
    let mut parameters: Vec<(i64, String)> = types
        .iter()
        .filter_map(|(name, data_type)| {
            let position: i64 = name.trim_start_matches('$').parse().ok()?;
            let type_name = data_type.as_ref().map(information_schema_type_name).unwrap_or_else(|| "unknown".into());
            Some((position - 1, type_name))
        })
        .collect();
    parameters.sort();
    let schema = Arc::new(Schema::new(vec![
        Field::new("Position", DataType::Int64, false),
        Field::new("Type", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(datafusion::arrow::array::Int64Array::from(
                parameters.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(parameters.into_iter().map(|(_, t)| t).collect::<Vec<_>>())),
        ],
    )
    .expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_like_patterns_finish_at_once() {
        // Exponential for a backtracking matcher, and 200 000 frames deep for a recursive one.
        let text = "a".repeat(64);
        assert!(!like_matches(&format!("{}#", "%".repeat(64)), &text));
        assert!(!like_matches(&format!("{}b", "%a".repeat(30)), &text));
        assert!(like_matches(&"%".repeat(200_000), "catalog"));
        assert!(!like_matches(&"_".repeat(200_000), "catalog"));
    }

    #[test]
    fn like_patterns() {
        assert!(like_matches("t%", "tiny"));
        assert!(like_matches("%f1", "sf1"));
        assert!(like_matches("s_1", "sf1"));
        assert!(!like_matches("s_1", "sf10"));
        assert!(like_matches("%", ""));
        assert!(!like_matches("a", ""));
        assert!(like_matches("%a%b%", "xxaxxbxx"));
        assert!(!like_matches("%a%b", "xxaxxbxx"));
        assert!(like_matches("a%%_", "ab"));
        assert!(!like_matches("a%%_", "a"));
        assert!(like_matches("%ab", "aab"));
    }
}
