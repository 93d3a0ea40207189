//! Go-compatible text renderings of JSON values. Kyverno compares many
//! values after Go's `fmt.Sprint`/`strconv` formatting, so reproducing those
//! renderings keeps verdicts identical (e.g. `8080.0` prints as `8080`).

use std::borrow::Cow;

use serde_json::Value;

/// [`sprint`], borrowing a string instead of copying it: set membership
/// renders every item of a policy's list on every check.
pub fn sprint_borrowed(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(sprint(other)),
    }
}

/// Renders a value like Go's `fmt.Sprint` on decoded JSON.
pub fn sprint(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), format_float_v),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(sprint).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", sprint(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
    }
}

/// Go's `%v` for a float64: shortest representation, exponent form only for
/// very large or very small magnitudes.
pub fn format_float_v(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let exponent = value.abs().log10().floor() as i32;
    if !(-4..21).contains(&exponent) {
        return format_float_exponent(value, 'e');
    }
    let text = format!("{value}");
    text
}

/// Go's `strconv.FormatFloat(v, 'E', -1, 64)` (or `'e'`): shortest mantissa
/// followed by a signed, at-least-two-digit exponent, e.g. `8.08E+03`.
pub fn format_float_exponent(value: f64, marker: char) -> String {
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}{marker}{sign}{:02}", exponent.abs())
}

/// Go's `fmt.Sprintf("%f", v)`: six fixed decimals.
pub fn format_float_fixed(value: f64) -> String {
    format!("{value:.6}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sprint_matches_go() {
        assert_eq!(sprint(&json!(8080.0)), "8080");
        assert_eq!(sprint(&json!(8080)), "8080");
        assert_eq!(sprint(&json!(0.5)), "0.5");
        assert_eq!(sprint(&json!("x")), "x");
        assert_eq!(sprint(&json!(true)), "true");
        assert_eq!(sprint(&Value::Null), "<nil>");
        for value in [
            json!("x"),
            json!(8080),
            json!(true),
            Value::Null,
            json!([1, "a"]),
        ] {
            assert_eq!(sprint_borrowed(&value), sprint(&value));
        }
    }

    #[test]
    fn exponent_format_matches_go() {
        assert_eq!(format_float_exponent(8080.0, 'E'), "8.08E+03");
        assert_eq!(format_float_exponent(1.0, 'E'), "1E+00");
        assert_eq!(format_float_exponent(0.001, 'E'), "1E-03");
        assert_eq!(format_float_fixed(1000.0), "1000.000000");
    }
}
