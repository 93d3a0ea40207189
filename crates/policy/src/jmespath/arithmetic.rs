//! Kyverno's arithmetic JMESPath functions. Operands may be plain numbers,
//! Kubernetes quantities (`'1Gi'`) or Go durations (`'1h'`); results keep the
//! operand kind, e.g. `add('1Gi', '512Mi')` is `'1536Mi'`.

use jmespath::Runtime;
use jmespath::functions::ArgumentType as A;
use serde_json::Value;

use super::{arg_f64, number, register_function};
use crate::duration::{format_duration, parse_duration};
use crate::quantity::parse_quantity;

pub(super) fn register(rt: &mut Runtime) {
    let operand = || A::Union(vec![A::Number, A::String]);
    register_function(rt, "add", vec![operand(), operand()], None, add);
    register_function(rt, "subtract", vec![operand(), operand()], None, subtract);
    register_function(rt, "multiply", vec![operand(), operand()], None, multiply);
    register_function(rt, "divide", vec![operand(), operand()], None, divide);
    register_function(rt, "modulo", vec![operand(), operand()], None, modulo);
    register_function(rt, "round", vec![A::Number, A::Number], None, round);
    register_function(rt, "sum", vec![A::Array], None, sum);
}

/// One operand, classified by what it parses as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Operand {
    Number(f64),
    /// Value plus whether it was written with a binary (`Ki`, `Mi`...) suffix.
    Quantity(f64, bool),
    /// Seconds.
    Duration(f64),
}

fn classify(value: &Value, other: Option<&Value>) -> Result<Operand, String> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .map(Operand::Number)
            .ok_or("invalid number".into()),
        Value::String(text) => {
            let other_is_quantity = other
                .and_then(Value::as_str)
                .is_none_or(|o| parse_quantity(o).is_some());
            // "30m" is both a quantity and a duration: prefer the reading
            // that matches the other operand.
            if let Some(q) = parse_quantity(text).filter(|_| other_is_quantity) {
                return Ok(Operand::Quantity(q, is_binary(text)));
            }
            if let Some(d) = parse_duration(text) {
                return Ok(Operand::Duration(d));
            }
            if let Some(q) = parse_quantity(text) {
                return Ok(Operand::Quantity(q, is_binary(text)));
            }
            Err(format!(
                "{text:?} is neither a number, a quantity nor a duration"
            ))
        }
        _ => Err("operands must be numbers, quantities or durations".to_string()),
    }
}

fn is_binary(text: &str) -> bool {
    text.ends_with('i')
}

fn operands(args: &[Value]) -> Result<(Operand, Operand), String> {
    let (a, b) = (args.first(), args.get(1));
    let (Some(a), Some(b)) = (a, b) else {
        return Err("expects two operands".to_string());
    };
    Ok((classify(a, Some(b))?, classify(b, Some(a))?))
}

fn add(args: &[Value]) -> Result<Value, String> {
    combine_same_kind(args, |a, b| a + b, "add")
}

fn subtract(args: &[Value]) -> Result<Value, String> {
    combine_same_kind(args, |a, b| a - b, "subtract")
}

fn combine_same_kind(args: &[Value], op: fn(f64, f64) -> f64, name: &str) -> Result<Value, String> {
    match operands(args)? {
        (Operand::Number(a), Operand::Number(b)) => Ok(number(op(a, b))),
        (Operand::Quantity(a, bin), Operand::Quantity(b, _)) => Ok(format_quantity(op(a, b), bin)),
        (Operand::Duration(a), Operand::Duration(b)) => Ok(Value::from(format_duration(op(a, b)))),
        _ => Err(format!("cannot {name} operands of different kinds")),
    }
}

fn multiply(args: &[Value]) -> Result<Value, String> {
    match operands(args)? {
        (Operand::Number(a), Operand::Number(b)) => Ok(number(a * b)),
        (Operand::Quantity(q, bin), Operand::Number(n))
        | (Operand::Number(n), Operand::Quantity(q, bin)) => Ok(format_quantity(q * n, bin)),
        (Operand::Duration(d), Operand::Number(n)) | (Operand::Number(n), Operand::Duration(d)) => {
            Ok(Value::from(format_duration(d * n)))
        }
        _ => Err("multiply needs at least one plain number".to_string()),
    }
}

fn divide(args: &[Value]) -> Result<Value, String> {
    let (a, b) = operands(args)?;
    let divisor = match b {
        Operand::Number(v) | Operand::Quantity(v, _) | Operand::Duration(v) => v,
    };
    if divisor == 0.0 {
        return Err("division by zero".to_string());
    }
    match (a, b) {
        (Operand::Number(a), Operand::Number(b)) => Ok(number(a / b)),
        (Operand::Quantity(a, _), Operand::Quantity(b, _)) => Ok(number(a / b)),
        (Operand::Duration(a), Operand::Duration(b)) => Ok(number(a / b)),
        (Operand::Quantity(a, bin), Operand::Number(b)) => Ok(format_quantity(a / b, bin)),
        (Operand::Duration(a), Operand::Number(b)) => Ok(Value::from(format_duration(a / b))),
        _ => Err("cannot divide operands of these kinds".to_string()),
    }
}

fn modulo(args: &[Value]) -> Result<Value, String> {
    let (a, b) = operands(args)?;
    let remainder = |x: f64, y: f64| -> Result<f64, String> {
        if y == 0.0 {
            return Err("modulo by zero".to_string());
        }
        Ok(x % y)
    };
    match (a, b) {
        (Operand::Number(x), Operand::Number(y)) => {
            if x.fract() != 0.0 || y.fract() != 0.0 {
                return Err("modulo needs integers".to_string());
            }
            Ok(number(remainder(x, y)?))
        }
        (Operand::Quantity(x, bin), Operand::Quantity(y, _)) => {
            Ok(format_quantity(remainder(x, y)?, bin))
        }
        (Operand::Duration(x), Operand::Duration(y)) => {
            Ok(Value::from(format_duration(remainder(x, y)?)))
        }
        _ => Err("cannot take modulo of operands of different kinds".to_string()),
    }
}

fn round(args: &[Value]) -> Result<Value, String> {
    let value = arg_f64(args, 0)?;
    let digits = arg_f64(args, 1)?;
    if digits < 0.0 || digits.fract() != 0.0 {
        return Err("digits must be a non-negative integer".to_string());
    }
    let scale = 10f64.powi(digits as i32);
    Ok(number((value * scale).round() / scale))
}

fn sum(args: &[Value]) -> Result<Value, String> {
    let Some(Value::Array(items)) = args.first() else {
        return Err("expects an array".to_string());
    };
    let Some(first) = items.first() else {
        return Err("cannot sum an empty array".to_string());
    };
    let mut total = first.clone();
    for item in &items[1..] {
        total = add(&[total, item.clone()])?;
    }
    Ok(total)
}

/// Renders a quantity in canonical Kubernetes form: the largest suffix that
/// keeps the number whole, binary suffixes when the input used them.
fn format_quantity(value: f64, binary: bool) -> Value {
    let is_whole = |x: f64| (x - x.round()).abs() < 1e-9 * x.abs().max(1.0);
    if binary {
        for (suffix, power) in [
            ("Ei", 6),
            ("Pi", 5),
            ("Ti", 4),
            ("Gi", 3),
            ("Mi", 2),
            ("Ki", 1),
        ] {
            let scaled = value / 1024f64.powi(power);
            if scaled.abs() >= 1.0 && is_whole(scaled) {
                return Value::from(format!("{}{suffix}", scaled.round() as i64));
            }
        }
    }
    for (suffix, exponent) in [
        ("E", 18),
        ("P", 15),
        ("T", 12),
        ("G", 9),
        ("M", 6),
        ("k", 3),
        ("", 0),
        ("m", -3),
        ("u", -6),
        ("n", -9),
    ] {
        let scaled = value / 10f64.powi(exponent);
        if (scaled.abs() >= 1.0 || exponent == -9) && is_whole(scaled) {
            return Value::from(format!("{}{suffix}", scaled.round() as i64));
        }
    }
    if value == 0.0 {
        return Value::from("0");
    }
    Value::from(format!("{value}"))
}
