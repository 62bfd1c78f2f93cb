//! Trino functions that DataFusion lacks or names differently, registered in every session:
//! `version()` (Flotilla's version, which SQLAlchemy reads), and `nan()` / `infinity()`
//! (which the Python client sends for non-finite double parameters).

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// A function of no arguments with one constant value.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConstantFunction {
    name: &'static str,
    value: ConstantValue,
    signature: Signature,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum ConstantValue {
    Text(String),
    /// A double given by its bits, so the struct stays `Eq + Hash`.
    Double(u64),
}

impl ConstantValue {
    fn scalar(&self) -> ScalarValue {
        match self {
            ConstantValue::Text(text) => ScalarValue::Utf8(Some(text.clone())),
            ConstantValue::Double(bits) => ScalarValue::Float64(Some(f64::from_bits(*bits))),
        }
    }
}

impl ScalarUDFImpl for ConstantFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.value.scalar().data_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.scalar()))
    }
}

fn constant(name: &'static str, value: ConstantValue) -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(ConstantFunction {
        name,
        value,
        signature: Signature::nullary(Volatility::Immutable),
    }))
}

/// The functions added to DataFusion's built-ins.
pub fn trino_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        constant("version", ConstantValue::Text(flotilla_proto::FLOTILLA_VERSION.to_string())),
        constant("nan", ConstantValue::Double(f64::NAN.to_bits())),
        constant("infinity", ConstantValue::Double(f64::INFINITY.to_bits())),
    ]
}
