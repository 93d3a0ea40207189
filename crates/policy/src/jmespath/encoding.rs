//! Kyverno's encoding and parsing JMESPath functions: base64, JSON and
//! YAML documents embedded in strings.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jmespath::Runtime;
use jmespath::functions::ArgumentType as A;
use serde_json::Value;

use super::{arg_str, register_function};

pub(super) fn register(rt: &mut Runtime) {
    register_function(rt, "base64_encode", vec![A::String], None, |a| {
        Ok(Value::from(STANDARD.encode(arg_str(a, 0)?)))
    });
    register_function(rt, "base64_decode", vec![A::String], None, base64_decode);
    register_function(rt, "parse_json", vec![A::String], None, |a| {
        serde_json::from_str(arg_str(a, 0)?).map_err(|e| format!("invalid JSON: {e}"))
    });
    register_function(rt, "parse_yaml", vec![A::String], None, |a| {
        serde_yaml::from_str::<Value>(arg_str(a, 0)?).map_err(|e| format!("invalid YAML: {e}"))
    });
    register_function(rt, "x509_decode", vec![A::String], None, |_| {
        Err("x509_decode is not supported by this engine".to_string())
    });
}

fn base64_decode(args: &[Value]) -> Result<Value, String> {
    let bytes = STANDARD
        .decode(arg_str(args, 0)?)
        .map_err(|e| format!("invalid base64: {e}"))?;
    String::from_utf8(bytes)
        .map(Value::from)
        .map_err(|e| format!("decoded bytes are not UTF-8: {e}"))
}
