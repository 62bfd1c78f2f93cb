//! Trino's type names in SQL (`CAST(x AS varbinary)`, `TIMESTAMP(3)`, `json`, `uuid`), planned
//! onto Arrow types where DataFusion's defaults differ from Trino's.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::Result;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::sql::sqlparser::ast::{DataType as SqlType, TimezoneInfo};

/// Plans the SQL types whose Trino meaning DataFusion lacks.
#[derive(Debug, Default)]
pub struct TrinoTypePlanner;

fn unit_for_precision(precision: Option<u64>) -> TimeUnit {
    match precision {
        // Trino's default precision is 3, but literals keep whatever digits they have, so
        // an unspecified precision keeps microseconds (Python's resolution) rather than
        // truncating them.
        None => TimeUnit::Microsecond,
        Some(0) => TimeUnit::Second,
        Some(1..=3) => TimeUnit::Millisecond,
        Some(4..=6) => TimeUnit::Microsecond,
        Some(_) => TimeUnit::Nanosecond,
    }
}

impl TypePlanner for TrinoTypePlanner {
    fn plan_type_field(&self, sql_type: &SqlType) -> Result<Option<FieldRef>> {
        let data_type = match sql_type {
            SqlType::Varbinary(_) => DataType::Binary,
            SqlType::JSON => DataType::Utf8,
            SqlType::Timestamp(precision, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                DataType::Timestamp(unit_for_precision(*precision), None)
            }
            SqlType::Timestamp(precision, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
                DataType::Timestamp(unit_for_precision(*precision), Some("UTC".into()))
            }
            SqlType::Time(precision, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                match unit_for_precision(*precision) {
                    TimeUnit::Nanosecond => DataType::Time64(TimeUnit::Nanosecond),
                    _ => DataType::Time64(TimeUnit::Microsecond),
                }
            }
            SqlType::Custom(name, modifiers) if modifiers.is_empty() => {
                match name.to_string().to_ascii_lowercase().as_str() {
                    "uuid" | "ipaddress" => DataType::Utf8,
                    "varbinary" => DataType::Binary,
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(Field::new("", data_type, true))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trino_types_plan_to_arrow() {
        let planner = TrinoTypePlanner;
        let plan = |t: SqlType| planner.plan_type_field(&t).unwrap().map(|f| f.data_type().clone());
        assert_eq!(plan(SqlType::Varbinary(None)), Some(DataType::Binary));
        assert_eq!(
            plan(SqlType::Timestamp(Some(3), TimezoneInfo::None)),
            Some(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(
            plan(SqlType::Timestamp(Some(2), TimezoneInfo::None)),
            Some(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(plan(SqlType::BigInt(None)), None);
    }
}
