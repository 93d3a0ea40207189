//! Kyverno's string and regex JMESPath functions.

use jmespath::Runtime;
use jmespath::functions::ArgumentType as A;
use regex::Regex;
use serde_json::Value;

use super::{arg_f64, arg_str, arg_text, number, register_function};
use crate::wildcard;

pub(super) fn register(rt: &mut Runtime) {
    let text = || A::Union(vec![A::String, A::Number]);
    register_function(rt, "compare", vec![A::String, A::String], None, compare);
    register_function(
        rt,
        "equal_fold",
        vec![A::String, A::String],
        None,
        equal_fold,
    );
    register_function(
        rt,
        "replace",
        vec![A::String, A::String, A::String, A::Number],
        None,
        replace,
    );
    register_function(
        rt,
        "replace_all",
        vec![A::String, A::String, A::String],
        None,
        replace_all,
    );
    register_function(rt, "to_upper", vec![A::String], None, |a| {
        Ok(Value::from(arg_str(a, 0)?.to_uppercase()))
    });
    register_function(rt, "to_lower", vec![A::String], None, |a| {
        Ok(Value::from(arg_str(a, 0)?.to_lowercase()))
    });
    register_function(rt, "trim", vec![A::String, A::String], None, trim);
    register_function(
        rt,
        "trim_prefix",
        vec![A::String, A::String],
        None,
        trim_prefix,
    );
    register_function(rt, "split", vec![A::String, A::String], None, split);
    register_function(rt, "truncate", vec![A::String, A::Number], None, truncate);
    register_function(
        rt,
        "pattern_match",
        vec![A::String, text()],
        None,
        pattern_match,
    );
    register_function(
        rt,
        "regex_match",
        vec![A::String, text()],
        None,
        regex_match,
    );
    register_function(
        rt,
        "regex_replace_all",
        vec![A::String, text(), text()],
        None,
        regex_replace_all,
    );
    register_function(
        rt,
        "regex_replace_all_literal",
        vec![A::String, text(), text()],
        None,
        regex_replace_all_literal,
    );
}

fn compare(args: &[Value]) -> Result<Value, String> {
    let ordering = arg_str(args, 0)?.cmp(arg_str(args, 1)?);
    Ok(number(ordering as i32 as f64))
}

fn equal_fold(args: &[Value]) -> Result<Value, String> {
    let (a, b) = (arg_str(args, 0)?, arg_str(args, 1)?);
    Ok(Value::Bool(a.to_lowercase() == b.to_lowercase()))
}

fn replace(args: &[Value]) -> Result<Value, String> {
    let (source, old, new) = (arg_str(args, 0)?, arg_str(args, 1)?, arg_str(args, 2)?);
    let count = arg_f64(args, 3)?;
    // A negative count means "replace every occurrence", like Go's strings.Replace.
    let replaced = if count < 0.0 {
        source.replace(old, new)
    } else {
        source.replacen(old, new, count as usize)
    };
    Ok(Value::from(replaced))
}

fn replace_all(args: &[Value]) -> Result<Value, String> {
    let (source, old, new) = (arg_str(args, 0)?, arg_str(args, 1)?, arg_str(args, 2)?);
    Ok(Value::from(source.replace(old, new)))
}

fn trim(args: &[Value]) -> Result<Value, String> {
    let cutset: Vec<char> = arg_str(args, 1)?.chars().collect();
    Ok(Value::from(
        arg_str(args, 0)?.trim_matches(cutset.as_slice()),
    ))
}

fn trim_prefix(args: &[Value]) -> Result<Value, String> {
    let (source, prefix) = (arg_str(args, 0)?, arg_str(args, 1)?);
    Ok(Value::from(source.strip_prefix(prefix).unwrap_or(source)))
}

fn split(args: &[Value]) -> Result<Value, String> {
    let (source, separator) = (arg_str(args, 0)?, arg_str(args, 1)?);
    let parts: Vec<Value> = if separator.is_empty() {
        source.chars().map(|c| Value::from(c.to_string())).collect()
    } else {
        source.split(separator).map(Value::from).collect()
    };
    Ok(Value::Array(parts))
}

fn truncate(args: &[Value]) -> Result<Value, String> {
    let source = arg_str(args, 0)?;
    let length = arg_f64(args, 1)?.max(0.0) as usize;
    Ok(Value::from(source.chars().take(length).collect::<String>()))
}

fn pattern_match(args: &[Value]) -> Result<Value, String> {
    Ok(Value::Bool(wildcard::matches(
        arg_str(args, 0)?,
        &arg_text(args, 1)?,
    )))
}

fn compile(pattern: &str) -> Result<std::rc::Rc<Regex>, String> {
    crate::text_cache::compiled_regex(pattern)
        .map_err(|e| format!("invalid regular expression: {e}"))
}

fn regex_match(args: &[Value]) -> Result<Value, String> {
    Ok(Value::Bool(
        compile(arg_str(args, 0)?)?.is_match(&arg_text(args, 1)?),
    ))
}

fn regex_replace_all(args: &[Value]) -> Result<Value, String> {
    let regex = compile(arg_str(args, 0)?)?;
    let (source, replacement) = (arg_text(args, 1)?, arg_text(args, 2)?);
    Ok(Value::from(
        regex
            .replace_all(&source, replacement.as_str())
            .into_owned(),
    ))
}

fn regex_replace_all_literal(args: &[Value]) -> Result<Value, String> {
    let regex = compile(arg_str(args, 0)?)?;
    let (source, replacement) = (arg_text(args, 1)?, arg_text(args, 2)?);
    Ok(Value::from(
        regex
            .replace_all(&source, regex::NoExpand(&replacement))
            .into_owned(),
    ))
}
