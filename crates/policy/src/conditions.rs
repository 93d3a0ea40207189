//! Condition operators for `preconditions` and `deny.conditions`
//! (Equals, AnyIn, GreaterThan, Duration*, ...), evaluated on values that
//! already had their `{{ }}` variables substituted.

use std::borrow::Cow;

use serde_json::Value;

use crate::duration::parse_duration;
use crate::gofmt;
use crate::pattern::operator::PatternOperator;
use crate::pattern::value::value_matches;
use crate::quantity::parse_quantity;
use crate::wildcard;

/// A condition operator, parsed case-insensitively from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionOperator {
    Equals,
    NotEquals,
    /// Deprecated: the key (or every key) is in the value list.
    In,
    /// Deprecated: negation of `In`.
    NotIn,
    AnyIn,
    AllIn,
    AnyNotIn,
    AllNotIn,
    GreaterThan,
    GreaterThanOrEquals,
    LessThan,
    LessThanOrEquals,
    DurationGreaterThan,
    DurationGreaterThanOrEquals,
    DurationLessThan,
    DurationLessThanOrEquals,
}

impl ConditionOperator {
    /// Parses an operator name; `None` for unknown operators.
    pub fn parse(name: &str) -> Option<ConditionOperator> {
        let op = match name.to_ascii_lowercase().as_str() {
            "equal" | "equals" => ConditionOperator::Equals,
            "notequal" | "notequals" => ConditionOperator::NotEquals,
            "in" => ConditionOperator::In,
            "notin" => ConditionOperator::NotIn,
            "anyin" => ConditionOperator::AnyIn,
            "allin" => ConditionOperator::AllIn,
            "anynotin" => ConditionOperator::AnyNotIn,
            "allnotin" => ConditionOperator::AllNotIn,
            "greaterthan" => ConditionOperator::GreaterThan,
            "greaterthanorequals" => ConditionOperator::GreaterThanOrEquals,
            "lessthan" => ConditionOperator::LessThan,
            "lessthanorequals" => ConditionOperator::LessThanOrEquals,
            "durationgreaterthan" => ConditionOperator::DurationGreaterThan,
            "durationgreaterthanorequals" => ConditionOperator::DurationGreaterThanOrEquals,
            "durationlessthan" => ConditionOperator::DurationLessThan,
            "durationlessthanorequals" => ConditionOperator::DurationLessThanOrEquals,
            _ => return None,
        };
        Some(op)
    }

    /// Evaluates `key <operator> value`.
    pub fn evaluate(self, key: &Value, value: &Value) -> bool {
        use ConditionOperator::*;
        match self {
            Equals => equals(key, value).unwrap_or(false),
            NotEquals => equals(key, value).is_some_and(|eq| !eq),
            In => membership(key, value, SetMode::All, false),
            NotIn => !membership(key, value, SetMode::All, false) && is_membership_key(key),
            AnyIn => membership(key, value, SetMode::Any, false),
            AllIn => membership(key, value, SetMode::All, false),
            AnyNotIn => membership(key, value, SetMode::Any, true),
            AllNotIn => membership(key, value, SetMode::All, true),
            GreaterThan | GreaterThanOrEquals | LessThan | LessThanOrEquals => {
                numeric(key, value).is_some_and(|ordering| self.accepts(ordering))
            }
            DurationGreaterThan
            | DurationGreaterThanOrEquals
            | DurationLessThan
            | DurationLessThanOrEquals => {
                duration_compare(key, value).is_some_and(|ordering| self.accepts(ordering))
            }
        }
    }

    fn accepts(self, ordering: std::cmp::Ordering) -> bool {
        use ConditionOperator::*;
        use std::cmp::Ordering::*;
        match self {
            GreaterThan | DurationGreaterThan => ordering == Greater,
            GreaterThanOrEquals | DurationGreaterThanOrEquals => ordering != Less,
            LessThan | DurationLessThan => ordering == Less,
            LessThanOrEquals | DurationLessThanOrEquals => ordering != Greater,
            _ => false,
        }
    }
}

/// `Some(equal)` when the key type is comparable at all; `None` means the
/// comparison is unsupported (both Equals and NotEquals are then false).
fn equals(key: &Value, value: &Value) -> Option<bool> {
    match key {
        Value::Bool(k) => Some(value.as_bool() == Some(*k)),
        Value::Number(k) => {
            let k = k.as_f64()?;
            Some(match value {
                Value::Number(v) => v.as_f64() == Some(k),
                Value::String(s) => s.trim().parse::<f64>().ok() == Some(k),
                _ => false,
            })
        }
        Value::String(k) => {
            if let Some((kd, vd)) = durations(key, value) {
                return Some(kd == vd);
            }
            if let (Some(kq), Value::String(v)) = (parse_quantity(k), value) {
                return Some(parse_quantity(v) == Some(kq));
            }
            Some(match value {
                Value::String(v) => wildcard::matches(v, k),
                _ => false,
            })
        }
        Value::Object(_) | Value::Array(_) => Some(key == value),
        Value::Null => None,
    }
}

/// Both sides as durations in seconds, when at least one side is a
/// (non-zero) duration string and the other is a duration or a number of
/// seconds.
fn durations(key: &Value, value: &Value) -> Option<(f64, f64)> {
    let as_duration = |v: &Value| match v {
        Value::String(s) if s != "0" => parse_duration(s),
        _ => None,
    };
    let (kd, vd) = (as_duration(key), as_duration(value));
    if kd.is_none() && vd.is_none() {
        return None;
    }
    let seconds = |v: &Value| v.as_f64();
    Some((kd.or_else(|| seconds(key))?, vd.or_else(|| seconds(value))?))
}

fn numeric(key: &Value, value: &Value) -> Option<std::cmp::Ordering> {
    if let Some((kd, vd)) = durations(key, value) {
        return kd.partial_cmp(&vd);
    }
    let key_number = match key {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    if let Some(k) = key_number {
        let v = match value {
            Value::Number(n) => n.as_f64()?,
            Value::String(s) => s.trim().parse::<f64>().ok()?,
            _ => return None,
        };
        return k.partial_cmp(&v);
    }
    // Quantities compare only against quantity strings.
    let kq = parse_quantity(key.as_str()?)?;
    let vq = parse_quantity(value.as_str()?)?;
    kq.partial_cmp(&vq)
}

fn duration_compare(key: &Value, value: &Value) -> Option<std::cmp::Ordering> {
    let to_seconds = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_duration(s),
        _ => None,
    };
    to_seconds(key)?.partial_cmp(&to_seconds(value)?)
}

#[derive(Clone, Copy)]
enum SetMode {
    Any,
    All,
}

fn is_membership_key(key: &Value) -> bool {
    matches!(
        key,
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Array(_)
    )
}

/// The key as a set of strings (Go `fmt.Sprint` of each element).
fn key_strings(key: &Value) -> Option<Vec<Cow<'_, str>>> {
    match key {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            Some(vec![gofmt::sprint_borrowed(key)])
        }
        Value::Array(items) => Some(items.iter().map(gofmt::sprint_borrowed).collect()),
        _ => None,
    }
}

/// Shared core of the In-family operators.
///
/// * `Any` + in: some key is in the value set.
/// * `All` + in: every key is in the value set.
/// * `Any` + negate: some key is not in the value set.
/// * `All` + negate: no key is in the value set.
fn membership(key: &Value, value: &Value, mode: SetMode, negate: bool) -> bool {
    let Some(keys) = key_strings(key) else {
        return false;
    };
    let contained: Vec<bool> = match value {
        Value::Array(items) => {
            let candidates: Vec<Cow<'_, str>> = items.iter().map(gofmt::sprint_borrowed).collect();
            keys.iter()
                .map(|k| {
                    candidates
                        .iter()
                        .any(|c| wildcard::matches(k, c) || wildcard::matches(c, k))
                })
                .collect()
        }
        Value::String(text) => {
            if let Some(range) = range_pattern(text) {
                keys.iter()
                    .map(|k| value_matches(&Value::String(k.to_string()), &range))
                    .collect()
            } else {
                let candidates = string_value_set(text);
                keys.iter()
                    .map(|k| {
                        candidates
                            .iter()
                            .any(|c| wildcard::matches(k, c) || wildcard::matches(c, k))
                    })
                    .collect()
            }
        }
        _ => return false,
    };
    match (mode, negate) {
        (SetMode::Any, false) => contained.iter().any(|c| *c),
        (SetMode::All, false) => contained.iter().all(|c| *c),
        (SetMode::Any, true) => contained.iter().any(|c| !c),
        (SetMode::All, true) => !contained.is_empty() && contained.iter().all(|c| !c),
    }
}

/// A value string like `5000-6000` is a numeric range, not a literal.
fn range_pattern(text: &str) -> Option<Value> {
    match PatternOperator::parse(text).0 {
        PatternOperator::InRange(..) => Some(Value::String(text.to_string())),
        _ => None,
    }
}

/// A value string is either a JSON array of strings or a single literal.
fn string_value_set(text: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items.iter().map(gofmt::sprint).collect(),
        _ => vec![text.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::ConditionOperator as Op;
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_names_case_insensitively() {
        assert_eq!(Op::parse("anynotin"), Some(Op::AnyNotIn));
        assert_eq!(Op::parse("Equal"), Some(Op::Equals));
        assert_eq!(Op::parse("Bogus"), None);
    }

    #[test]
    fn equals_and_not_equals() {
        assert!(Op::Equals.evaluate(&json!("CREATE"), &json!("CREATE")));
        assert!(Op::Equals.evaluate(&json!("nginx:1"), &json!("nginx:*")));
        assert!(Op::NotEquals.evaluate(&json!("CREATE"), &json!("DELETE")));
        assert!(Op::Equals.evaluate(&json!(3), &json!(3.0)));
        assert!(Op::Equals.evaluate(&json!("1Gi"), &json!("1024Mi")));
        assert!(Op::Equals.evaluate(&json!("1h"), &json!("60m")));
        assert!(Op::Equals.evaluate(&json!({"a": 1}), &json!({"a": 1})));
        assert!(!Op::Equals.evaluate(&Value::Null, &json!("x")));
        assert!(!Op::NotEquals.evaluate(&Value::Null, &json!("x")));
    }

    #[test]
    fn any_in_and_all_in() {
        assert!(Op::AnyIn.evaluate(&json!(["a", "z"]), &json!(["a", "b"])));
        assert!(!Op::AnyIn.evaluate(&json!(["y", "z"]), &json!(["a", "b"])));
        assert!(Op::AllIn.evaluate(&json!(["a", "b"]), &json!(["a", "b", "c"])));
        assert!(!Op::AllIn.evaluate(&json!(["a", "z"]), &json!(["a", "b"])));
        assert!(Op::AnyIn.evaluate(&json!("batch/v1beta1"), &json!(["batch/v1beta1"])));
        assert!(Op::AnyIn.evaluate(&json!("prod-1"), &json!(["prod-*"])));
    }

    #[test]
    fn not_in_operators() {
        assert!(Op::AnyNotIn.evaluate(&json!(["SYS_ADMIN"]), &json!(["CHOWN", "KILL"])));
        assert!(!Op::AnyNotIn.evaluate(&json!(["CHOWN"]), &json!(["CHOWN", "KILL"])));
        assert!(!Op::AnyNotIn.evaluate(&json!([]), &json!(["CHOWN"])));
        assert!(Op::AnyNotIn.evaluate(&json!("ALL"), &json!([])));
        assert!(Op::AllNotIn.evaluate(&json!("livenessProbe"), &json!(["name", "image"])));
        assert!(!Op::AllNotIn.evaluate(&json!(["a", "z"]), &json!(["a"])));
        assert!(Op::NotIn.evaluate(&json!("x"), &json!(["a"])));
        assert!(Op::In.evaluate(&json!("a"), &json!(["a"])));
    }

    #[test]
    fn ranges_in_value_strings() {
        assert!(!Op::AnyNotIn.evaluate(&json!([5500]), &json!("5000-6000")));
        assert!(Op::AnyNotIn.evaluate(&json!([80, 5500]), &json!("5000-6000")));
        assert!(Op::AnyIn.evaluate(&json!([5500]), &json!("5000-6000")));
    }

    #[test]
    fn numeric_operators() {
        assert!(Op::GreaterThan.evaluate(&json!(5), &json!(3)));
        assert!(Op::GreaterThanOrEquals.evaluate(&json!("3"), &json!(3)));
        assert!(Op::LessThan.evaluate(&json!("1Gi"), &json!("2Gi")));
        assert!(Op::LessThanOrEquals.evaluate(&json!("500m"), &json!("1")));
        assert!(Op::GreaterThan.evaluate(&json!("2h"), &json!("90m")));
        assert!(!Op::GreaterThan.evaluate(&json!("abc"), &json!(1)));
    }

    #[test]
    fn duration_operators() {
        assert!(Op::DurationGreaterThan.evaluate(&json!("2h"), &json!("1h")));
        assert!(Op::DurationLessThanOrEquals.evaluate(&json!("1h"), &json!(3600)));
        assert!(Op::DurationGreaterThanOrEquals.evaluate(&json!(7200), &json!("2h")));
        assert!(Op::DurationLessThan.evaluate(&json!("30s"), &json!("1m")));
        assert!(!Op::DurationLessThan.evaluate(&json!("x"), &json!("1m")));
    }
}
