//! Arrow values to the JSON values Trino clients parse: decimals as strings, non-finite
//! doubles as `"NaN"`/`"Infinity"`, varbinary as base64, dates and times as text with the
//! type's precision, intervals in Trino's text forms, arrays and rows as JSON arrays, maps as
//! objects with string keys.

use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
    DurationSecondType, Float64Type, Int64Type, IntervalDayTimeType, IntervalUnit, IntervalYearMonthType,
    Time64NanosecondType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Number, Value};

use crate::types::TrinoType;

/// A value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The Arrow array could not be converted to the form the encoder reads.
    #[error("failed to convert column: {0}")]
    Arrow(#[from] ArrowError),
    /// A column's Arrow type has no Trino encoding.
    #[error("unsupported column type {0}")]
    Unsupported(String),
}

/// Encodes a batch as rows of JSON values; `types` are the batch's columns' Trino types.
pub fn encode_batch(batch: &RecordBatch, types: &[TrinoType]) -> Result<Vec<Vec<Value>>, EncodeError> {
    let mut rows: Vec<Vec<Value>> = (0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())).collect();
    for (column, trino_type) in batch.columns().iter().zip(types) {
        for (row, value) in rows.iter_mut().zip(encode_array(column, trino_type)?) {
            row.push(value);
        }
    }
    Ok(rows)
}

fn float_value(value: f64) -> Value {
    if value.is_nan() {
        Value::String("NaN".into())
    } else if value.is_infinite() {
        Value::String(if value > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        // Finite, so from_f64 cannot fail.
        Value::Number(Number::from_f64(value).unwrap_or_else(|| Number::from(0)))
    }
}

/// Formats an unscaled decimal the way Trino does: `-12.30` for (-1230, scale 2).
fn format_decimal(unscaled: String, scale: i8) -> String {
    if scale <= 0 {
        let zeros = "0".repeat(scale.unsigned_abs() as usize);
        return if unscaled == "0" { unscaled } else { format!("{unscaled}{zeros}") };
    }
    let scale = scale as usize;
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", unscaled.as_str()),
    };
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

fn format_fraction(nanos: u32, precision: u8) -> String {
    if precision == 0 {
        return String::new();
    }
    let digits = format!("{nanos:09}");
    format!(".{}", &digits[..usize::from(precision.min(9))])
}

fn split_epoch(value: i64, unit: &TimeUnit) -> (i64, u32) {
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let seconds = value.div_euclid(per_second);
    let nanos = (value.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
    (seconds, nanos)
}

fn format_timestamp(local: NaiveDateTime, precision: u8) -> String {
    use chrono::Timelike;
    format!("{}{}", local.format("%Y-%m-%d %H:%M:%S"), format_fraction(local.nanosecond(), precision))
}

fn timestamp_value(value: i64, unit: &TimeUnit, zone: Option<&str>, precision: u8) -> Value {
    let (seconds, nanos) = split_epoch(value, unit);
    let Some(utc) = DateTime::<Utc>::from_timestamp(seconds, nanos) else {
        return Value::Null;
    };
    let text = match zone {
        None => format_timestamp(utc.naive_utc(), precision),
        Some(zone) if zone.eq_ignore_ascii_case("utc") || zone == "+00:00" || zone == "Z" => {
            format!("{} UTC", format_timestamp(utc.naive_utc(), precision))
        }
        Some(zone) => {
            if let Ok(named) = zone.parse::<chrono_tz::Tz>() {
                let local = named.from_utc_datetime(&utc.naive_utc());
                format!("{} {zone}", format_timestamp(local.naive_local(), precision))
            } else if let Ok(offset) = zone.parse::<chrono::FixedOffset>() {
                let local = offset.from_utc_datetime(&utc.naive_utc());
                format!("{} {}", format_timestamp(local.naive_local(), precision), offset)
            } else {
                format!("{} {zone}", format_timestamp(utc.naive_utc(), precision))
            }
        }
    };
    Value::String(text)
}

fn day_to_second(total_millis: i64) -> Value {
    let sign = if total_millis < 0 { "-" } else { "" };
    let millis = total_millis.unsigned_abs();
    let days = millis / 86_400_000;
    let rest = millis % 86_400_000;
    let (hours, minutes, seconds, ms) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    Value::String(format!("{sign}{days} {hours:02}:{minutes:02}:{seconds:02}.{ms:03}"))
}

fn collect<T>(array: &dyn Array, mut value: impl FnMut(usize) -> T) -> Vec<Value>
where
    T: Into<Value>,
{
    (0..array.len()).map(|i| if array.is_null(i) { Value::Null } else { value(i).into() }).collect()
}

fn encode_array(array: &ArrayRef, trino_type: &TrinoType) -> Result<Vec<Value>, EncodeError> {
    let data_type = array.data_type();
    let unpacked = match data_type {
        DataType::Dictionary(_, value_type) => Some(value_type.as_ref().clone()),
        DataType::RunEndEncoded(_, values) => Some(values.data_type().clone()),
        _ => None,
    };
    if let Some(target) = unpacked {
        return encode_array(&cast(array, &target)?, trino_type);
    }
    let values = match trino_type {
        TrinoType::Unknown => vec![Value::Null; array.len()],
        TrinoType::Boolean => {
            let booleans = array.as_boolean();
            collect(array, |i| booleans.value(i))
        }
        TrinoType::TinyInt | TrinoType::SmallInt | TrinoType::Integer | TrinoType::BigInt => {
            let widened = cast(array, &DataType::Int64)?;
            let ints = widened.as_primitive::<Int64Type>();
            collect(array, |i| ints.value(i))
        }
        TrinoType::Real => {
            let widened = cast(array, &DataType::Float32)?;
            let floats = widened.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
            // Through the shortest decimal text so 0.1f32 reads 0.1, not 0.10000000149.
            collect(array, |i| float_value(floats.value(i).to_string().parse::<f64>().unwrap_or(f64::NAN)))
        }
        TrinoType::Double => {
            let floats = array.as_primitive::<Float64Type>();
            collect(array, |i| float_value(floats.value(i)))
        }
        TrinoType::Decimal { scale, .. } => match data_type {
            DataType::Decimal256(_, _) => {
                let decimals = array.as_primitive::<datafusion::arrow::datatypes::Decimal256Type>();
                collect(array, |i| format_decimal(decimals.value(i).to_string(), *scale))
            }
            _ => {
                let widened = cast(array, &DataType::Decimal128(38, *scale))?;
                let decimals = widened.as_primitive::<Decimal128Type>();
                collect(array, |i| format_decimal(decimals.value(i).to_string(), *scale))
            }
        },
        TrinoType::Varchar => match data_type {
            DataType::Interval(IntervalUnit::MonthDayNano) => display_values(array)?,
            _ => {
                let strings = cast(array, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                collect(array, |i| strings.value(i).to_string())
            }
        },
        TrinoType::Varbinary => {
            let engine = base64::engine::general_purpose::STANDARD;
            match data_type {
                DataType::FixedSizeBinary(_) => {
                    let bytes = array.as_fixed_size_binary();
                    collect(array, |i| engine.encode(bytes.value(i)))
                }
                _ => {
                    let bytes = cast(array, &DataType::Binary)?;
                    let bytes = bytes.as_binary::<i32>();
                    collect(array, |i| engine.encode(bytes.value(i)))
                }
            }
        }
        TrinoType::Date => {
            let days = cast(array, &DataType::Date32)?;
            let days = days.as_primitive::<Date32Type>();
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
            collect(array, |i| {
                epoch
                    .checked_add_signed(chrono::Duration::days(i64::from(days.value(i))))
                    .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                    .unwrap_or(Value::Null)
            })
        }
        TrinoType::Time(precision) => {
            let nanos = cast(array, &DataType::Time64(TimeUnit::Nanosecond))?;
            let nanos = nanos.as_primitive::<Time64NanosecondType>();
            collect(array, |i| {
                let (seconds, fraction) = split_epoch(nanos.value(i), &TimeUnit::Nanosecond);
                let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
                format!("{h:02}:{m:02}:{s:02}{}", format_fraction(fraction, *precision))
            })
        }
        TrinoType::Timestamp(precision) | TrinoType::TimestampWithTimeZone(precision) => {
            let DataType::Timestamp(unit, zone) = data_type else {
                return Err(EncodeError::Unsupported(data_type.to_string()));
            };
            let zone = zone.as_deref();
            let raw = |i: usize| -> i64 {
                match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i),
                    TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(i),
                    TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                    TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i),
                }
            };
            collect(array, |i| timestamp_value(raw(i), unit, zone, *precision))
        }
        TrinoType::IntervalYearToMonth => {
            let months = array.as_primitive::<IntervalYearMonthType>();
            collect(array, |i| {
                let total = months.value(i);
                let sign = if total < 0 { "-" } else { "" };
                let abs = total.unsigned_abs();
                format!("{sign}{}-{}", abs / 12, abs % 12)
            })
        }
        TrinoType::IntervalDayToSecond => match data_type {
            DataType::Interval(IntervalUnit::DayTime) => {
                let intervals = array.as_primitive::<IntervalDayTimeType>();
                collect(array, |i| {
                    let v = intervals.value(i);
                    day_to_second(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
                })
            }
            DataType::Duration(unit) => {
                let millis = |i: usize| -> i64 {
                    match unit {
                        TimeUnit::Second => array.as_primitive::<DurationSecondType>().value(i) * 1000,
                        TimeUnit::Millisecond => array.as_primitive::<DurationMillisecondType>().value(i),
                        TimeUnit::Microsecond => array.as_primitive::<DurationMicrosecondType>().value(i) / 1000,
                        TimeUnit::Nanosecond => array.as_primitive::<DurationNanosecondType>().value(i) / 1_000_000,
                    }
                };
                collect(array, |i| day_to_second(millis(i)))
            }
            other => return Err(EncodeError::Unsupported(other.to_string())),
        },
        TrinoType::Array(element_type) => {
            let lists = match data_type {
                DataType::List(_) => array.clone(),
                DataType::LargeList(field)
                | DataType::ListView(field)
                | DataType::LargeListView(field)
                | DataType::FixedSizeList(field, _) => cast(array, &DataType::List(field.clone()))?,
                other => return Err(EncodeError::Unsupported(other.to_string())),
            };
            let lists = lists.as_list::<i32>();
            let mut out = Vec::with_capacity(array.len());
            for i in 0..array.len() {
                if array.is_null(i) {
                    out.push(Value::Null);
                } else {
                    out.push(Value::Array(encode_array(&lists.value(i), element_type)?));
                }
            }
            out
        }
        TrinoType::Row(fields) => {
            let structs = array.as_struct();
            let columns = structs
                .columns()
                .iter()
                .zip(fields)
                .map(|(column, (_, field_type))| encode_array(column, field_type))
                .collect::<Result<Vec<_>, _>>()?;
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Value::Null
                    } else {
                        Value::Array(columns.iter().map(|c| c[i].clone()).collect())
                    }
                })
                .collect()
        }
        TrinoType::Map(key_type, value_type) => {
            let maps = array.as_map();
            let keys = encode_array(maps.keys(), key_type)?;
            let values = encode_array(maps.values(), value_type)?;
            let offsets = maps.value_offsets();
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        return Value::Null;
                    }
                    let mut object = Map::new();
                    for entry in offsets[i] as usize..offsets[i + 1] as usize {
                        let key = match &keys[entry] {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        object.insert(key, values[entry].clone());
                    }
                    Value::Object(object)
                })
                .collect()
        }
    };
    Ok(values)
}

fn display_values(array: &ArrayRef) -> Result<Vec<Value>, EncodeError> {
    let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
    Ok(collect(array.as_ref(), |i| formatter.value(i).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, Date32Array, Decimal128Array, Float64Array, Int32Array, IntervalYearMonthArray, ListArray,
        StringArray, StructArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type};
    use serde_json::json;
    use std::sync::Arc;

    fn encode(array: ArrayRef) -> Vec<Value> {
        let trino = TrinoType::from_arrow(array.data_type()).unwrap();
        encode_array(&array, &trino).unwrap()
    }

    #[test]
    fn decimals_are_strings_with_their_scale() {
        let array =
            Decimal128Array::from(vec![Some(12345), Some(-5), Some(0), None]).with_precision_and_scale(10, 2).unwrap();
        assert_eq!(encode(Arc::new(array)), vec![json!("123.45"), json!("-0.05"), json!("0.00"), Value::Null]);
    }

    #[test]
    fn non_finite_doubles_are_strings() {
        let array = Float64Array::from(vec![1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!(encode(Arc::new(array)), vec![json!(1.5), json!("NaN"), json!("Infinity"), json!("-Infinity")]);
    }

    #[test]
    fn dates_timestamps_and_binary_use_trino_text() {
        assert_eq!(encode(Arc::new(Date32Array::from(vec![11_556]))), vec![json!("2001-08-22")]);
        let millis = 998_449_445_321_i64; // 2001-08-22 03:04:05.321 UTC
        assert_eq!(
            encode(Arc::new(TimestampMillisecondArray::from(vec![millis]))),
            vec![json!("2001-08-22 03:04:05.321")]
        );
        assert_eq!(
            encode(Arc::new(TimestampMillisecondArray::from(vec![millis]).with_timezone("UTC"))),
            vec![json!("2001-08-22 03:04:05.321 UTC")]
        );
        assert_eq!(
            encode(Arc::new(TimestampMillisecondArray::from(vec![millis]).with_timezone("America/New_York"))),
            vec![json!("2001-08-21 23:04:05.321 America/New_York")]
        );
        assert_eq!(encode(Arc::new(TimestampMillisecondArray::from(vec![-1]))), vec![json!("1969-12-31 23:59:59.999")]);
        assert_eq!(encode(Arc::new(BinaryArray::from(vec![&b"hi"[..]]))), vec![json!("aGk=")]);
    }

    #[test]
    fn intervals_use_trino_text() {
        assert_eq!(encode(Arc::new(IntervalYearMonthArray::from(vec![14, -3]))), vec![json!("1-2"), json!("-0-3")]);
        assert_eq!(day_to_second(93_784_005), json!("1 02:03:04.005"));
        assert_eq!(day_to_second(-1500), json!("-0 00:00:01.500"));
    }

    #[test]
    fn arrays_and_rows_are_json_arrays() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), None]), None]);
        assert_eq!(encode(Arc::new(list)), vec![json!([1, null]), Value::Null]);
        let row = StructArray::from(vec![
            (Arc::new(Field::new("a", DataType::Int32, true)), Arc::new(Int32Array::from(vec![7])) as ArrayRef),
            (Arc::new(Field::new("b", DataType::Utf8, true)), Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ]);
        assert_eq!(encode(Arc::new(row)), vec![json!([7, "x"])]);
    }

    #[test]
    fn decimal_formatting_edge_cases() {
        assert_eq!(format_decimal("5".into(), 3), "0.005");
        assert_eq!(format_decimal("-123456".into(), 2), "-1234.56");
        assert_eq!(format_decimal("12".into(), 0), "12");
    }
}
