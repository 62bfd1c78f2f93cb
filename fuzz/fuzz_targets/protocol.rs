//! The Trino protocol's edges: request headers into a session, the URL encoding of header
//! values, the URIs handed back to clients, the relay's path check (what it lets through
//! must mean the same to every URL parser), query ids, and the JSON encoding of values.
#![no_main]

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use flotilla_protocol::headers::{url_decode, url_encode};
use flotilla_protocol::{ClientSession, TrinoType};
use libfuzzer_sys::fuzz_target;

fn headers(text: &str) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(name.trim().as_bytes()), http::HeaderValue::from_str(value.trim()))
        else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// Columns of several types, their values taken from `data`.
fn batch(data: &[u8]) -> Option<RecordBatch> {
    let rows = (data.len() / 16).min(64);
    let word = |i: usize| {
        let start = (i * 8) % data.len().max(1);
        let bytes: Vec<u8> = data.iter().cycle().skip(start).take(8).copied().collect();
        i64::from_le_bytes(bytes.try_into().unwrap_or_default())
    };
    let precision = (data.first().copied().unwrap_or(1) % 38).max(1);
    let scale = (data.get(1).copied().unwrap_or(0) % (precision + 1)) as i8;
    let text = String::from_utf8_lossy(data);
    let columns: Vec<(Field, ArrayRef)> = vec![
        (Field::new("i", DataType::Int64, true), Arc::new(Int64Array::from_iter((0..rows).map(|i| Some(word(i)))))),
        (
            Field::new("f", DataType::Float64, true),
            Arc::new(Float64Array::from_iter((0..rows).map(|i| Some(f64::from_bits(word(i) as u64))))),
        ),
        (
            Field::new("d", DataType::Decimal128(precision, scale), true),
            Arc::new(
                Decimal128Array::from_iter((0..rows).map(|i| Some(word(i) as i128 * word(i + 1) as i128)))
                    .with_precision_and_scale(precision, scale)
                    .ok()?,
            ),
        ),
        (
            Field::new("s", DataType::Utf8, true),
            Arc::new(StringArray::from_iter((0..rows).map(|i| text.get(i..).map(str::to_string)))),
        ),
        (Field::new("b", DataType::Binary, true), Arc::new(BinaryArray::from_iter((0..rows).map(|i| data.get(i..))))),
        (
            Field::new("t", DataType::Boolean, true),
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(word(i) % 2 == 0)))),
        ),
        (
            Field::new("day", DataType::Date32, true),
            Arc::new(Date32Array::from_iter((0..rows).map(|i| Some(word(i) as i32)))),
        ),
        (
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Arc::new(TimestampMicrosecondArray::from_iter((0..rows).map(|i| Some(word(i)))).with_timezone("UTC")),
        ),
    ];
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = columns.into_iter().unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    match mode % 5 {
        0 => {
            let map = headers(&text);
            let _ = ClientSession::from_headers(map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
        }
        1 => {
            // Encoding then decoding gives the text back.
            assert_eq!(url_decode(&url_encode(&text)), text);
            let _ = url_decode(&text);
        }
        2 => {
            // A path the relay accepts means the same to the URL parser the relay sends it
            // with: no segment resolved away, none split (a backslash read as a slash).
            let path = text.split(['?', '#']).next().unwrap_or_default();
            if flotilla_node::relay::check_path(path).is_ok() && path.parse::<http::uri::PathAndQuery>().is_ok() {
                if let Ok(url) = url::Url::parse(&format!("http://coordinator:8080{path}")) {
                    let decoded = |p: &str| -> Vec<Vec<u8>> {
                        p.split('/').map(|s| percent_encoding::percent_decode_str(s).collect()).collect()
                    };
                    assert_eq!(decoded(url.path()), decoded(path), "{path:?} changed meaning: {}", url.path());
                }
            }
            let _ = flotilla_node::follow_up_query(path);
            let map = headers(&text);
            for trusted in [false, true] {
                if let Ok(uris) = flotilla_protocol::uris::QueryUris::from_headers(&map, "127.0.0.1:8080", trusted) {
                    // What goes back to a client is a scheme and an authority, nothing injected.
                    let base = uris.base();
                    let authority = base.split_once("://").map(|(_, rest)| rest).unwrap_or(base);
                    assert!(!authority.contains(['/', '?', '#', ' ', '\r', '\n', '@', '\\']), "{base:?}");
                }
            }
        }
        3 => {
            if let Ok(id) = text.parse::<flotilla_proto::QueryId>() {
                assert_eq!(id.to_string().parse::<flotilla_proto::QueryId>().ok(), Some(id));
            }
        }
        _ => {
            if let Some(batch) = batch(rest) {
                let types: Vec<TrinoType> =
                    batch.schema().fields().iter().filter_map(|f| TrinoType::from_arrow(f.data_type()).ok()).collect();
                if types.len() == batch.num_columns() {
                    let _ = flotilla_protocol::encode_batch(&batch, &types);
                }
            }
        }
    }
});
