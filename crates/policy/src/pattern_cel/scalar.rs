//! Scalar pattern values (`"!*:latest"`, `"0 | 5000-6000"`, `false`, `0`)
//! as CEL tests of one value, mirroring `pattern::value` branch by branch
//! for each type the value can have at run time.
//!
//! The engine compares by kind of operand: a duration or quantity operand
//! compares numerically when the value parses too, anything else compares
//! the value's text with a wildcard. For numbers, bools and null every
//! outcome is decided here (a number never parses as a duration, and its
//! text is Go's `%E` rendering); for strings a numeric operand would need a
//! quantity parser the API server does not share, so it is translated only
//! where the Kubernetes schema makes the field an integer.

use serde_json::Value;

use super::term::{Term, literal, wildcard_test};
use crate::duration::parse_duration;
use crate::pattern::operator::PatternOperator;
use crate::pattern::value::value_matches;
use crate::quantity::parse_quantity;

/// What the schema says about the field a scalar pattern is matched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Unknown: the value may have any JSON type.
    Any,
    /// An integer field of a built-in kind: the API server hands admission
    /// an int or nothing, never a string or a double.
    Integer,
}

/// The run-time type guards, as the API server's CEL and this crate's see
/// JSON: integers are `int` there and `uint` here when not negative.
const IS_STRING: &str = "type({}) == string";
const IS_INTEGER: &str = "(type({}) == int || type({}) == uint)";
const IS_DOUBLE: &str = "type({}) == double";
const IS_BOOL: &str = "type({}) == bool";
const IS_NULL: &str = "type({}) == null_type";
pub const IS_LIST: &str = "type({}) == list";
pub const IS_MAP: &str = "type({}) == map";

/// `guard` with `{}` standing for `value`.
pub fn is(guard: &str, value: &str) -> Term {
    Term::test(guard.replace("{}", value))
}

/// `validate_element` for a scalar pattern: a list value passes when every
/// item matches.
pub fn scalar_term(
    value: &str,
    pattern: &Value,
    field: FieldType,
    depth: usize,
) -> Result<Term, String> {
    let item = format!("x{depth}");
    let each = value_term(&item, pattern, field)?.for_all(value, &item);
    let direct = value_term(value, pattern, field)?;
    // `direct` is false for a list: every branch of it is type-guarded.
    Ok(is(IS_LIST, value).and(each).or(direct))
}

/// `value_matches(value, pattern)`.
pub fn value_term(value: &str, pattern: &Value, field: FieldType) -> Result<Term, String> {
    let bools = bool_term(value, pattern);
    let null = is(IS_NULL, value).and(Term::Const(value_matches(&Value::Null, pattern)));
    let typed = match pattern {
        Value::String(text) => string_pattern(value, text, field)?,
        Value::Number(number) => number_pattern(value, number, field)?,
        // Bools and null are decided by the branches above; a map or a list
        // is not a scalar pattern and matches no scalar.
        _ => Term::Const(false),
    };
    Ok(typed.or(bools).or(null))
}

/// The bool branch, decided by the engine itself on both bools.
fn bool_term(value: &str, pattern: &Value) -> Term {
    let (on_true, on_false) = (
        value_matches(&Value::Bool(true), pattern),
        value_matches(&Value::Bool(false), pattern),
    );
    let test = match (on_true, on_false) {
        (true, true) => Term::Const(true),
        (true, false) => Term::test(format!("{value} == true")),
        (false, true) => Term::test(format!("{value} == false")),
        (false, false) => Term::Const(false),
    };
    is(IS_BOOL, value).and(test)
}

fn number_pattern(
    value: &str,
    number: &serde_json::Number,
    field: FieldType,
) -> Result<Term, String> {
    let expected = number
        .as_f64()
        .ok_or_else(|| format!("the number {number}"))?;
    let integer =
        exact_integer(expected).ok_or_else(|| format!("the number {number} is not an integer"))?;
    let strings = numeric_on_string(field, &number.to_string())?;
    Ok(is(IS_INTEGER, value)
        .and(Term::test(format!("{value} == {integer}")))
        .or(is(IS_DOUBLE, value).and(Term::test(format!("{value} == {integer}.0"))))
        .or(is(IS_STRING, value).and(strings)))
}

/// The string pattern: the value equal to the whole text, or any `|`
/// alternative whose `&` conditions all hold.
fn string_pattern(value: &str, pattern: &str, field: FieldType) -> Result<Term, String> {
    let mut on_string = Term::test(format!("{value} == {}", literal(pattern)));
    let mut on_integer = Term::Const(false);
    let mut on_double = Term::Const(false);
    for alternative in pattern.split('|') {
        let (mut string_all, mut integer_all, mut double_all) =
            (Term::Const(true), Term::Const(true), Term::Const(true));
        for condition in alternative.trim_matches(' ').split('&') {
            let condition = condition.trim_matches(' ');
            string_all = string_all.and(condition_on_string(value, condition, field)?);
            integer_all = integer_all.and(condition_on_number(value, condition, true, field)?);
            double_all = double_all.and(condition_on_number(value, condition, false, field)?);
        }
        on_string = on_string.or(string_all);
        on_integer = on_integer.or(integer_all);
        on_double = on_double.or(double_all);
    }
    Ok(is(IS_STRING, value)
        .and(on_string)
        .or(is(IS_INTEGER, value).and(on_integer))
        .or(is(IS_DOUBLE, value).and(on_double)))
}

/// Whether the engine would compare `operand` numerically when the value
/// parses as a number too.
fn is_numeric(operand: &str) -> bool {
    parse_duration(operand).is_some() || parse_quantity(operand).is_some()
}

fn condition_on_string(value: &str, condition: &str, field: FieldType) -> Result<Term, String> {
    let (operator, operand) = PatternOperator::parse(condition);
    match operator {
        PatternOperator::InRange(..) | PatternOperator::NotInRange(..) => {
            numeric_on_string(field, condition)
        }
        _ if is_numeric(operand) => numeric_on_string(field, condition),
        PatternOperator::Equal => Ok(wildcard_test(operand, value)),
        PatternOperator::NotEqual => Ok(wildcard_test(operand, value).not()),
        // Ordering a text that is not a number never holds.
        _ => Ok(Term::Const(false)),
    }
}

/// A numeric comparison on a string value: unreachable on an integer
/// field, not translated elsewhere.
fn numeric_on_string(field: FieldType, condition: &str) -> Result<Term, String> {
    match field {
        FieldType::Integer => Ok(Term::Const(false)),
        FieldType::Any => Err(format!(
            "the numeric pattern {condition:?} on a field that may hold a string"
        )),
    }
}

/// A condition on a number: as a quantity when the operand is one (a
/// number is never a duration), else Go's `%E` text against a wildcard.
fn condition_on_number(
    value: &str,
    condition: &str,
    integer: bool,
    field: FieldType,
) -> Result<Term, String> {
    let (operator, operand) = PatternOperator::parse(condition);
    let symbol = match &operator {
        PatternOperator::InRange(low, high) => {
            let low = condition_on_number(value, &format!(">= {low}"), integer, field)?;
            let high = condition_on_number(value, &format!("<= {high}"), integer, field)?;
            return Ok(low.and(high));
        }
        PatternOperator::NotInRange(low, high) => {
            let low = condition_on_number(value, &format!("< {low}"), integer, field)?;
            let high = condition_on_number(value, &format!("> {high}"), integer, field)?;
            return Ok(low.or(high));
        }
        PatternOperator::Equal => "==",
        PatternOperator::NotEqual => "!=",
        PatternOperator::More => ">",
        PatternOperator::MoreEqual => ">=",
        PatternOperator::Less => "<",
        PatternOperator::LessEqual => "<=",
    };
    if let Some(expected) = parse_quantity(operand) {
        if !integer {
            // The engine rounds a double to six decimals first; only an
            // integer field, where no double reaches admission, is exact.
            return match field {
                FieldType::Integer => Ok(Term::Const(false)),
                FieldType::Any => Err(format!(
                    "the numeric pattern {condition:?} on a field that may hold a fraction"
                )),
            };
        }
        let bound = exact_integer(expected)
            .ok_or_else(|| format!("the operand {operand:?} is not an integer"))?;
        return Ok(Term::test(format!("{value} {symbol} {bound}")));
    }
    let matches = number_text_matches(operand)
        .ok_or_else(|| format!("the wildcard {operand:?} against a number's text"))?;
    Ok(Term::Const(match operator {
        PatternOperator::Equal => matches,
        PatternOperator::NotEqual => !matches,
        _ => false,
    }))
}

/// Whether the wildcard `operand` matches Go's `%E` text of every number
/// (`Some(true)`), of none (`Some(false)`), or depends on it (`None`).
/// That text (`-1.500000E+03`) holds only digits, `.`, `E`, `+` and `-`
/// and has at least twelve characters.
fn number_text_matches(operand: &str) -> Option<bool> {
    let literal_chars = |c: char| c != '*' && c != '?';
    if operand
        .chars()
        .filter(|c| literal_chars(*c))
        .any(|c| !(c.is_ascii_digit() || matches!(c, '.' | 'E' | '+' | '-')))
    {
        return Some(false);
    }
    let any_chars = operand.chars().filter(|c| *c == '?').count();
    if !operand.chars().any(literal_chars) && operand.contains('*') && any_chars <= 12 {
        return Some(true);
    }
    None
}

/// `value` as an integer when it is one the engine's `f64` holds exactly.
fn exact_integer(value: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (value.fract() == 0.0 && value.abs() < EXACT).then_some(value as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(pattern: Value, field: FieldType) -> String {
        value_term("v", &pattern, field).unwrap().text()
    }

    #[test]
    fn negated_wildcards_test_strings_and_pass_every_number_and_bool() {
        assert_eq!(
            text(json!("!*:latest"), FieldType::Any),
            "(type(v) == string && (v == \"!*:latest\" || !(v.endsWith(\":latest\")))) \
             || (type(v) == int || type(v) == uint) || type(v) == double || type(v) == bool"
        );
    }

    #[test]
    fn alternatives_of_names_are_equalities() {
        assert_eq!(
            text(json!("RuntimeDefault | Localhost"), FieldType::Any),
            r#"type(v) == string && (v == "RuntimeDefault | Localhost" || v == "RuntimeDefault" || v == "Localhost")"#
        );
    }

    #[test]
    fn bools_written_as_text_match_the_bool_and_its_text() {
        assert_eq!(
            text(json!("false"), FieldType::Any),
            r#"(type(v) == string && v == "false") || (type(v) == bool && v == false)"#
        );
        assert_eq!(
            text(json!(true), FieldType::Any),
            "type(v) == bool && v == true"
        );
    }

    #[test]
    fn ranges_and_comparisons_on_integer_fields_compare_numbers() {
        assert_eq!(
            text(json!("0 | 5000-6000"), FieldType::Integer),
            "(type(v) == string && v == \"0 | 5000-6000\") \
             || ((type(v) == int || type(v) == uint) && (v == 0 || (v >= 5000 && v <= 6000))) \
             || type(v) == null_type"
        );
        assert_eq!(
            text(json!(">0"), FieldType::Integer),
            "(type(v) == string && v == \">0\") || ((type(v) == int || type(v) == uint) && v > 0)"
        );
        assert!(value_term("v", &json!(">0"), FieldType::Any).is_err());
        assert!(value_term("v", &json!(0), FieldType::Any).is_err());
    }

    #[test]
    fn a_list_passes_when_every_item_matches() {
        let term = scalar_term("v", &json!("a*"), FieldType::Any, 0).unwrap();
        assert_eq!(
            term.text(),
            r#"(type(v) == list && v.all(x0, type(x0) == string && (x0 == "a*" || x0.startsWith("a")))) || (type(v) == string && (v == "a*" || v.startsWith("a")))"#
        );
        // Whether `1*` matches a number's `%E` text depends on the number.
        assert!(scalar_term("v", &json!("1*"), FieldType::Any, 0).is_err());
    }

    #[test]
    fn number_texts_are_decided_by_their_alphabet() {
        assert_eq!(number_text_matches("Default"), Some(false));
        assert_eq!(number_text_matches("?*"), Some(true));
        assert_eq!(number_text_matches("1*"), None);
    }
}
