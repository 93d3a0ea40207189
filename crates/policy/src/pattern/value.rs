//! Matching one scalar resource value against one scalar pattern: wildcards,
//! `|` alternatives, `&` conjunctions, comparison operators, ranges, and
//! numeric comparison of quantities and durations.

use std::borrow::Cow;

use serde_json::Value;

use super::operator::PatternOperator;
use crate::duration::parse_duration;
use crate::gofmt;
use crate::quantity::parse_quantity;
use crate::wildcard;

/// Returns true when `value` satisfies the scalar `pattern`.
pub fn value_matches(value: &Value, pattern: &Value) -> bool {
    match pattern {
        Value::Bool(expected) => value.as_bool() == Some(*expected),
        Value::Number(expected) => expected
            .as_f64()
            .is_some_and(|expected| number_pattern_matches(value, expected)),
        Value::Null => null_pattern_matches(value),
        Value::Object(_) => value.is_object(),
        Value::String(expected) => string_pattern_matches(value, expected),
        // Arrays are not valid scalar patterns.
        Value::Array(_) => false,
    }
}

fn number_pattern_matches(value: &Value, expected: f64) -> bool {
    match value {
        Value::Number(actual) => actual.as_f64() == Some(expected),
        Value::String(text) => text.trim().parse::<f64>().ok() == Some(expected),
        _ => false,
    }
}

/// A `null` pattern accepts the zero value of any scalar type.
fn null_pattern_matches(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn string_pattern_matches(value: &Value, pattern: &str) -> bool {
    if value.as_str() == Some(pattern) {
        return true;
    }
    // Most patterns are one condition: no splitting for them.
    if !pattern.as_bytes().iter().any(|b| matches!(b, b'|' | b'&')) {
        return single_condition_matches(value, pattern.trim_matches(' '));
    }
    pattern.split('|').any(|alternative| {
        alternative
            .trim_matches(' ')
            .split('&')
            .all(|condition| single_condition_matches(value, condition.trim_matches(' ')))
    })
}

fn single_condition_matches(value: &Value, condition: &str) -> bool {
    let (operator, operand) = PatternOperator::parse(condition);
    match operator {
        PatternOperator::InRange(low, high) => {
            single_condition_matches(value, &format!(">= {low}"))
                && single_condition_matches(value, &format!("<= {high}"))
        }
        PatternOperator::NotInRange(low, high) => {
            single_condition_matches(value, &format!("< {low}"))
                || single_condition_matches(value, &format!("> {high}"))
        }
        op => compare_scalar(value, operand, &op),
    }
}

/// Durations win over quantities, which win over plain strings: the first
/// interpretation that parses on both sides decides.
fn compare_scalar(value: &Value, operand: &str, op: &PatternOperator) -> bool {
    if let Some(result) = compare_numeric(value, operand, op, parse_duration) {
        return result;
    }
    if let Some(result) = compare_numeric(value, operand, op, parse_quantity) {
        return result;
    }
    compare_as_string(value, operand, op)
}

fn compare_numeric(
    value: &Value,
    operand: &str,
    op: &PatternOperator,
    parse: fn(&str) -> Option<f64>,
) -> Option<bool> {
    let expected = parse(operand)?;
    let actual = parse(numeric_text(value)?.as_ref())?;
    let result = match op {
        PatternOperator::Equal => actual == expected,
        PatternOperator::NotEqual => actual != expected,
        PatternOperator::More => actual > expected,
        PatternOperator::Less => actual < expected,
        PatternOperator::MoreEqual => actual >= expected,
        PatternOperator::LessEqual => actual <= expected,
        PatternOperator::InRange(..) | PatternOperator::NotInRange(..) => return None,
    };
    Some(result)
}

/// The text Kyverno feeds to quantity/duration parsers: a missing value
/// counts as `"0"`, numbers use Go's `%f` rendering.
fn numeric_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => Some(Cow::Borrowed("0")),
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => n.as_f64().map(|f| Cow::Owned(gofmt::format_float_fixed(f))),
        _ => None,
    }
}

fn compare_as_string(value: &Value, operand: &str, op: &PatternOperator) -> bool {
    let text: Cow<'_, str> = match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Number(n) => match n.as_f64() {
            Some(f) => Cow::Owned(gofmt::format_float_exponent(f, 'E')),
            None => return false,
        },
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        _ => return false,
    };
    match op {
        PatternOperator::Equal => wildcard::matches(operand, &text),
        PatternOperator::NotEqual => !wildcard::matches(operand, &text),
        // Ordering operators do not apply to plain strings.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards_and_negation() {
        assert!(value_matches(&json!("nginx:1.2"), &json!("*:*")));
        assert!(!value_matches(&json!("nginx"), &json!("*:*")));
        assert!(value_matches(&json!("foo"), &json!("!default")));
        assert!(!value_matches(&json!("default"), &json!("!default")));
        assert!(!value_matches(&Value::Null, &json!("!default")));
        assert!(value_matches(&json!("a"), &json!("?*")));
        assert!(!value_matches(&Value::Null, &json!("?*")));
    }

    #[test]
    fn alternation_and_conjunction() {
        let pattern = json!("RuntimeDefault | Localhost");
        assert!(value_matches(&json!("Localhost"), &pattern));
        assert!(!value_matches(&json!("Unconfined"), &pattern));
        assert!(value_matches(&json!(5), &json!(">1 & <10")));
        assert!(!value_matches(&json!(50), &json!(">1 & <10")));
    }

    #[test]
    fn comparison_operators() {
        assert!(value_matches(&json!(1000), &json!(">0")));
        assert!(!value_matches(&json!(0), &json!(">0")));
        assert!(value_matches(&json!(0), &json!(">=0")));
        assert!(value_matches(&json!(3), &json!("<5")));
        assert!(value_matches(&json!(5), &json!("<=5")));
        assert!(!value_matches(&json!("abc"), &json!(">1")));
    }

    #[test]
    fn ranges() {
        assert!(value_matches(&json!(5500), &json!("5000-6000")));
        assert!(!value_matches(&json!(7000), &json!("5000-6000")));
        assert!(value_matches(&json!(7000), &json!("5000!-6000")));
        assert!(!value_matches(&json!(5000), &json!("5000!-6000")));
    }

    #[test]
    fn quantities_and_durations_compare_numerically() {
        assert!(value_matches(&json!("2Gi"), &json!(">1Gi")));
        assert!(value_matches(&json!("1024Mi"), &json!("1Gi")));
        assert!(value_matches(&json!("500m"), &json!("<1")));
        assert!(value_matches(&json!("90m"), &json!(">1h")));
        assert!(!value_matches(&json!("30m"), &json!(">1h")));
    }

    #[test]
    fn typed_patterns() {
        assert!(value_matches(&json!(true), &json!(true)));
        assert!(!value_matches(&json!("true"), &json!(true)));
        assert!(value_matches(&json!(false), &json!("false")));
        assert!(!value_matches(&json!(true), &json!("false")));
        assert!(value_matches(&json!(0), &json!(0)));
        assert!(value_matches(&json!("8080"), &json!(8080)));
        assert!(value_matches(&Value::Null, &Value::Null));
        assert!(value_matches(&json!(""), &Value::Null));
        assert!(!value_matches(&json!("x"), &Value::Null));
    }
}
