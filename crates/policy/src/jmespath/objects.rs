//! Kyverno's object and misc JMESPath functions: `items`,
//! `object_from_lists`, `lookup`, `label_match`, `path_canonicalize`,
//! `semver_compare`.

use jmespath::Runtime;
use jmespath::functions::ArgumentType as A;
use serde_json::{Map, Value};

use super::{arg_str, register_function};

pub(super) fn register(rt: &mut Runtime) {
    register_function(
        rt,
        "items",
        vec![A::Union(vec![A::Object, A::Array]), A::String, A::String],
        None,
        items,
    );
    register_function(
        rt,
        "object_from_lists",
        vec![A::Array, A::Array],
        None,
        object_from_lists,
    );
    register_function(
        rt,
        "lookup",
        vec![
            A::Union(vec![A::Object, A::Array]),
            A::Union(vec![A::String, A::Number]),
        ],
        None,
        lookup,
    );
    register_function(
        rt,
        "label_match",
        vec![A::Object, A::Object],
        None,
        label_match,
    );
    register_function(rt, "path_canonicalize", vec![A::String], None, |a| {
        Ok(Value::from(canonical_path(arg_str(a, 0)?)))
    });
    register_function(
        rt,
        "semver_compare",
        vec![A::String, A::String],
        None,
        semver_compare,
    );
}

fn items(args: &[Value]) -> Result<Value, String> {
    let (key_name, value_name) = (arg_str(args, 1)?, arg_str(args, 2)?);
    let pair = |key: Value, value: &Value| {
        let mut entry = Map::new();
        entry.insert(key_name.to_string(), key);
        entry.insert(value_name.to_string(), value.clone());
        Value::Object(entry)
    };
    let entries = match args.first() {
        Some(Value::Object(map)) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            keys.into_iter()
                .map(|k| pair(Value::from(k.clone()), &map[k]))
                .collect()
        }
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| pair(Value::from(i), v))
            .collect(),
        _ => return Err("argument 0 must be an object or array".to_string()),
    };
    Ok(Value::Array(entries))
}

fn object_from_lists(args: &[Value]) -> Result<Value, String> {
    let (Some(Value::Array(keys)), Some(Value::Array(values))) = (args.first(), args.get(1)) else {
        return Err("arguments must be arrays".to_string());
    };
    let mut object = Map::new();
    for (index, key) in keys.iter().enumerate() {
        let key = key.as_str().ok_or("keys must be strings")?;
        object.insert(
            key.to_string(),
            values.get(index).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(object))
}

fn lookup(args: &[Value]) -> Result<Value, String> {
    match (args.first(), args.get(1)) {
        (Some(Value::Object(map)), Some(Value::String(key))) => {
            Ok(map.get(key).cloned().unwrap_or(Value::Null))
        }
        (Some(Value::Array(list)), Some(Value::Number(index))) => {
            let index = index.as_f64().ok_or("index must be a number")?;
            if index < 0.0 || index.fract() != 0.0 {
                return Ok(Value::Null);
            }
            Ok(list.get(index as usize).cloned().unwrap_or(Value::Null))
        }
        _ => Err("expects (object, string) or (array, number)".to_string()),
    }
}

fn label_match(args: &[Value]) -> Result<Value, String> {
    let (Some(Value::Object(selector)), Some(Value::Object(labels))) = (args.first(), args.get(1))
    else {
        return Err("arguments must be objects".to_string());
    };
    Ok(Value::Bool(
        selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value)),
    ))
}

/// Lexically cleans a slash path like Go's `path.Clean`.
fn canonical_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Ranges use the blang/semver syntax Kyverno documents: comparators
/// separated by spaces are ANDed, `||` separates alternatives.
fn semver_compare(args: &[Value]) -> Result<Value, String> {
    let version = parse_version(arg_str(args, 0)?)?;
    let range = arg_str(args, 1)?;
    for alternative in range.split("||") {
        let mut all_hold = true;
        for comparator in alternative.split_whitespace() {
            if !comparator_holds(&version, comparator)? {
                all_hold = false;
                break;
            }
        }
        if all_hold && !alternative.trim().is_empty() {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

fn parse_version(text: &str) -> Result<semver::Version, String> {
    semver::Version::parse(text.trim().trim_start_matches('v'))
        .map_err(|e| format!("invalid semantic version {text:?}: {e}"))
}

fn comparator_holds(version: &semver::Version, comparator: &str) -> Result<bool, String> {
    let split_at = comparator
        .find(|c: char| c.is_ascii_digit() || c == 'v')
        .ok_or_else(|| format!("invalid range comparator {comparator:?}"))?;
    let (op, target) = comparator.split_at(split_at);
    let target = parse_version(target)?;
    Ok(match op {
        "" | "=" | "==" => *version == target,
        "!=" | "!" => *version != target,
        ">" => *version > target,
        ">=" => *version >= target,
        "<" => *version < target,
        "<=" => *version <= target,
        other => return Err(format!("unknown range operator {other:?}")),
    })
}
