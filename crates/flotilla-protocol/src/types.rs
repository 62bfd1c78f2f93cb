//! Trino's type system as clients see it: the `type` string and the `typeSignature` object of
//! every result column, derived from the Arrow type DataFusion produced.

use std::fmt;

use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use serde_json::{json, Value};

/// Trino's unbounded varchar length, which clients see in `varchar`'s signature.
const UNBOUNDED_VARCHAR: i64 = 2_147_483_647;

/// A Trino type, as far as Flotilla produces values of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrinoType {
    Boolean,
    TinyInt,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Varchar,
    Varbinary,
    Date,
    /// `time(p)`, p = fractional digits.
    Time(u8),
    /// `timestamp(p)`.
    Timestamp(u8),
    /// `timestamp(p) with time zone`.
    TimestampWithTimeZone(u8),
    IntervalYearToMonth,
    IntervalDayToSecond,
    Array(Box<TrinoType>),
    Map(Box<TrinoType>, Box<TrinoType>),
    Row(Vec<(String, TrinoType)>),
    /// The type of a bare `NULL`.
    Unknown,
}

/// An Arrow type that has no Trino equivalent Flotilla can encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type {0} cannot be returned to Trino clients")]
pub struct TypeError(pub String);

fn precision_of(unit: &TimeUnit) -> u8 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

impl TrinoType {
    /// The Trino type a column of this Arrow type is reported as.
    pub fn from_arrow(data_type: &DataType) -> Result<TrinoType, TypeError> {
        Ok(match data_type {
            DataType::Null => TrinoType::Unknown,
            DataType::Boolean => TrinoType::Boolean,
            DataType::Int8 => TrinoType::TinyInt,
            DataType::Int16 | DataType::UInt8 => TrinoType::SmallInt,
            DataType::Int32 | DataType::UInt16 => TrinoType::Integer,
            DataType::Int64 | DataType::UInt32 => TrinoType::BigInt,
            DataType::UInt64 => TrinoType::Decimal { precision: 20, scale: 0 },
            DataType::Float16 | DataType::Float32 => TrinoType::Real,
            DataType::Float64 => TrinoType::Double,
            DataType::Decimal32(p, s)
            | DataType::Decimal64(p, s)
            | DataType::Decimal128(p, s)
            | DataType::Decimal256(p, s) => TrinoType::Decimal { precision: *p, scale: *s },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => TrinoType::Varchar,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                TrinoType::Varbinary
            }
            DataType::Date32 | DataType::Date64 => TrinoType::Date,
            DataType::Time32(unit) | DataType::Time64(unit) => TrinoType::Time(precision_of(unit)),
            DataType::Timestamp(unit, None) => TrinoType::Timestamp(precision_of(unit)),
            DataType::Timestamp(unit, Some(_)) => TrinoType::TimestampWithTimeZone(precision_of(unit)),
            DataType::Interval(IntervalUnit::YearMonth) => TrinoType::IntervalYearToMonth,
            DataType::Interval(IntervalUnit::DayTime) | DataType::Duration(_) => TrinoType::IntervalDayToSecond,
            // Month-day-nano intervals mix units Trino keeps in separate types; they are
            // rendered as text (e.g. `3 mons 2 days`) rather than guessed into one of them.
            DataType::Interval(IntervalUnit::MonthDayNano) => TrinoType::Varchar,
            DataType::List(field)
            | DataType::LargeList(field)
            | DataType::ListView(field)
            | DataType::LargeListView(field)
            | DataType::FixedSizeList(field, _) => {
                TrinoType::Array(Box::new(TrinoType::from_arrow(field.data_type())?))
            }
            DataType::Struct(fields) => TrinoType::Row(
                fields.iter().map(|f| Ok((f.name().clone(), TrinoType::from_arrow(f.data_type())?))).collect::<Result<
                    _,
                    TypeError,
                >>(
                )?,
            ),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => TrinoType::Map(
                    Box::new(TrinoType::from_arrow(kv[0].data_type())?),
                    Box::new(TrinoType::from_arrow(kv[1].data_type())?),
                ),
                other => return Err(TypeError(format!("map with entries {other}"))),
            },
            DataType::Dictionary(_, value) => TrinoType::from_arrow(value)?,
            DataType::RunEndEncoded(_, values) => TrinoType::from_arrow(values.data_type())?,
            other => return Err(TypeError(other.to_string())),
        })
    }

    fn raw_type(&self) -> &'static str {
        match self {
            TrinoType::Boolean => "boolean",
            TrinoType::TinyInt => "tinyint",
            TrinoType::SmallInt => "smallint",
            TrinoType::Integer => "integer",
            TrinoType::BigInt => "bigint",
            TrinoType::Real => "real",
            TrinoType::Double => "double",
            TrinoType::Decimal { .. } => "decimal",
            TrinoType::Varchar => "varchar",
            TrinoType::Varbinary => "varbinary",
            TrinoType::Date => "date",
            TrinoType::Time(_) => "time",
            TrinoType::Timestamp(_) => "timestamp",
            TrinoType::TimestampWithTimeZone(_) => "timestamp with time zone",
            TrinoType::IntervalYearToMonth => "interval year to month",
            TrinoType::IntervalDayToSecond => "interval day to second",
            TrinoType::Array(_) => "array",
            TrinoType::Map(_, _) => "map",
            TrinoType::Row(_) => "row",
            TrinoType::Unknown => "unknown",
        }
    }

    /// Trino's `typeSignature` object (`rawType` + `arguments`).
    pub fn signature(&self) -> Value {
        fn long(value: i64) -> Value {
            json!({"kind": "LONG", "value": value})
        }
        let arguments: Vec<Value> = match self {
            TrinoType::Decimal { precision, scale } => {
                vec![long(i64::from(*precision)), long(i64::from(*scale))]
            }
            TrinoType::Varchar => vec![long(UNBOUNDED_VARCHAR)],
            TrinoType::Time(p) | TrinoType::Timestamp(p) | TrinoType::TimestampWithTimeZone(p) => {
                vec![long(i64::from(*p))]
            }
            TrinoType::Array(element) => vec![json!({"kind": "TYPE", "value": element.signature()})],
            TrinoType::Map(key, value) => vec![
                json!({"kind": "TYPE", "value": key.signature()}),
                json!({"kind": "TYPE", "value": value.signature()}),
            ],
            TrinoType::Row(fields) => fields
                .iter()
                .map(|(name, field_type)| {
                    json!({"kind": "NAMED_TYPE", "value": {
                        "fieldName": {"name": name, "delimited": false},
                        "typeSignature": field_type.signature(),
                    }})
                })
                .collect(),
            _ => Vec::new(),
        };
        json!({"rawType": self.raw_type(), "arguments": arguments})
    }
}

impl fmt::Display for TrinoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrinoType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            TrinoType::Time(p) => write!(f, "time({p})"),
            TrinoType::Timestamp(p) => write!(f, "timestamp({p})"),
            TrinoType::TimestampWithTimeZone(p) => write!(f, "timestamp({p}) with time zone"),
            TrinoType::Array(element) => write!(f, "array({element})"),
            TrinoType::Map(key, value) => write!(f, "map({key}, {value})"),
            TrinoType::Row(fields) => {
                f.write_str("row(")?;
                for (i, (name, field_type)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name} {field_type}")?;
                }
                f.write_str(")")
            }
            other => f.write_str(other.raw_type()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Fields};
    use std::sync::Arc;

    #[test]
    fn scalar_types_map_to_trino_names() {
        let cases = [
            (DataType::Utf8, "varchar"),
            (DataType::Int64, "bigint"),
            (DataType::Int32, "integer"),
            (DataType::Float64, "double"),
            (DataType::Decimal128(15, 2), "decimal(15,2)"),
            (DataType::Date32, "date"),
            (DataType::Timestamp(TimeUnit::Millisecond, None), "timestamp(3)"),
            (DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), "timestamp(6) with time zone"),
            (DataType::Binary, "varbinary"),
            (DataType::Interval(IntervalUnit::YearMonth), "interval year to month"),
            (DataType::Null, "unknown"),
        ];
        for (arrow, trino) in cases {
            assert_eq!(TrinoType::from_arrow(&arrow).unwrap().to_string(), trino, "{arrow}");
        }
    }

    #[test]
    fn nested_types_have_nested_signatures() {
        let row = DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]));
        let trino = TrinoType::from_arrow(&row).unwrap();
        assert_eq!(trino.to_string(), "row(a bigint, b array(varchar))");
        let signature = trino.signature();
        assert_eq!(signature["rawType"], "row");
        assert_eq!(signature["arguments"][0]["kind"], "NAMED_TYPE");
        assert_eq!(signature["arguments"][0]["value"]["fieldName"]["name"], "a");
        assert_eq!(signature["arguments"][1]["value"]["typeSignature"]["rawType"], "array");
        assert_eq!(signature["arguments"][1]["value"]["typeSignature"]["arguments"][0]["value"]["rawType"], "varchar");
    }

    #[test]
    fn decimal_signature_carries_precision_and_scale() {
        let signature = TrinoType::Decimal { precision: 12, scale: 3 }.signature();
        assert_eq!(signature["arguments"][0]["value"], 12);
        assert_eq!(signature["arguments"][1]["value"], 3);
    }
}
